//! Hostile test plugin (index world): `list` sleeps, an hour at a time,
//! forever. While it sleeps it runs no code, so epoch interruption alone
//! cannot stop it: the host must cut its sleeps to the call's deadline.

wit_bindgen::generate!({ path: "../../../wit", world: "index-plugin" });

use exports::ringshare::plugin::index::{Guest, GuestListing, Listing};
use ringshare::plugin::types::{Error, FileEntry};

struct Plugin;

impl Guest for Plugin {
    type Listing = Never;

    fn list() -> Result<Listing, Error> {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

/// The listing it never answers.
struct Never;

impl GuestListing for Never {
    fn next(&self, _max: u32) -> Result<Vec<FileEntry>, Error> {
        Ok(Vec::new())
    }
}

export!(Plugin);
