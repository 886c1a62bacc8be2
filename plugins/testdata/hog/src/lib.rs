//! Hostile test plugin (index world): its listing's first page allocates
//! without bound. The host's memory cap must stop it.

wit_bindgen::generate!({ path: "../../../wit", world: "index-plugin" });

use exports::ringshare::plugin::index::{Guest, GuestListing, Listing};
use ringshare::plugin::types::{Error, FileEntry};

struct Plugin;

impl Guest for Plugin {
    type Listing = Hoard;

    fn list() -> Result<Listing, Error> {
        Ok(Listing::new(Hoard))
    }
}

struct Hoard;

impl GuestListing for Hoard {
    fn next(&self, _max: u32) -> Result<Vec<FileEntry>, Error> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(std::hint::black_box(vec![7u8; 1 << 20]));
        }
    }
}

export!(Plugin);
