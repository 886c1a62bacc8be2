//! Hostile test plugin (index world): lists entries no store can hold —
//! names that escape the store or carry NUL and line breaks, and hashes
//! that are not digests — beside one honest entry. The host must leave the
//! bad ones out of every listing.

wit_bindgen::generate!({ path: "../../../wit", world: "index-plugin" });

use exports::ringshare::plugin::index::Guest;
use ringshare::plugin::types::{Error, FileEntry};

struct Plugin;

fn entry(name: &str, blake3: Option<&str>) -> FileEntry {
    FileEntry { name: name.into(), size: 3, blake3: blake3.map(Into::into), modified_ns: 1 }
}

impl Guest for Plugin {
    fn list() -> Result<Vec<FileEntry>, Error> {
        let digest = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";
        Ok(vec![
            entry("../../etc/passwd", None),
            entry("a/b", None),
            entry("nul\0name", None),
            entry("line\nbreak", None),
            entry("bad-hash", Some("abc\r\nX-Injected: yes")),
            entry("upper-hash", Some(&digest.to_uppercase())),
            entry("honest", Some(digest)),
        ])
    }
}

export!(Plugin);
