//! Hostile test plugin (index world): its listing's first page never
//! comes. The host's epoch deadline, armed for every page, must stop it.

wit_bindgen::generate!({ path: "../../../wit", world: "index-plugin" });

use exports::ringshare::plugin::index::{Guest, GuestListing, Listing};
use ringshare::plugin::types::{Error, FileEntry};

struct Plugin;

impl Guest for Plugin {
    type Listing = Spin;

    fn list() -> Result<Listing, Error> {
        Ok(Listing::new(Spin))
    }
}

struct Spin;

impl GuestListing for Spin {
    fn next(&self, _max: u32) -> Result<Vec<FileEntry>, Error> {
        let mut n = 0u64;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

export!(Plugin);
