//! Hostile test plugin (index world): `list` allocates without bound. The
//! host's memory cap must stop it.

wit_bindgen::generate!({ path: "../../../wit", world: "index-plugin" });

use exports::ringshare::plugin::index::Guest;
use ringshare::plugin::types::{Error, FileEntry};

struct Plugin;

impl Guest for Plugin {
    fn list() -> Result<Vec<FileEntry>, Error> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(std::hint::black_box(vec![7u8; 1 << 20]));
        }
    }
}

export!(Plugin);
