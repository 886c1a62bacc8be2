//! Hostile test plugin (index world): lists entries no store can hold —
//! names that escape the store or carry NUL and line breaks, and hashes
//! that are not digests — beside one honest entry, listed twice. The host
//! must leave the bad ones out of every listing. Once the store holds a
//! file named `overflow`, the listing's second page is one entry longer
//! than asked: the host must refuse the listing.

wit_bindgen::generate!({ path: "../../../wit", world: "index-plugin" });

use std::cell::Cell;

use exports::ringshare::plugin::index::{Guest, GuestListing, Listing};
use ringshare::plugin::types::{Error, FileEntry};

struct Plugin;

const DIGEST: &str = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";

fn entry(name: &str, blake3: Option<&str>) -> FileEntry {
    FileEntry { name: name.into(), size: 3, blake3: blake3.map(Into::into), modified_ns: 1 }
}

impl Guest for Plugin {
    type Listing = Lies;

    fn list() -> Result<Listing, Error> {
        Ok(Listing::new(Lies(Cell::new(0))))
    }
}

/// The listing, by pages answered so far.
struct Lies(Cell<u32>);

impl GuestListing for Lies {
    fn next(&self, max: u32) -> Result<Vec<FileEntry>, Error> {
        let page = self.0.replace(self.0.get() + 1);
        Ok(match page {
            0 => vec![
                entry("../../etc/passwd", None),
                entry("a/b", None),
                entry("nul\0name", None),
                entry("line\nbreak", None),
                entry("bad-hash", Some("abc\r\nX-Injected: yes")),
                entry("upper-hash", Some(&DIGEST.to_uppercase())),
                entry("honest", Some(DIGEST)),
            ],
            1 if std::fs::exists("/store/files/overflow").unwrap_or(false) => {
                (0..=max).map(|i| entry(&format!("extra-{i}"), Some(DIGEST))).collect()
            }
            1 => vec![entry("honest", Some(DIGEST))],
            _ => Vec::new(),
        })
    }
}

export!(Plugin);
