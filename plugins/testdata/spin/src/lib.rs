//! Hostile test plugin (index world): `list` never returns. The host's epoch
//! deadline must stop it.

wit_bindgen::generate!({ path: "../../../wit", world: "index-plugin" });

use exports::ringshare::plugin::index::Guest;
use ringshare::plugin::types::{Error, FileEntry};

struct Plugin;

impl Guest for Plugin {
    fn list() -> Result<Vec<FileEntry>, Error> {
        let mut n = 0u64;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

export!(Plugin);
