//! The default index plugin: lists the complete files of the node's store
//! (it never reads their content), with the hashes plugins of contract
//! 0.5.0 recorded beside them, if any (the host fills in its own), a page
//! at a time: the listing keeps the open directory between pages, so its memory
//! does not grow with the store. It is granted `/store` read-only.

wit_bindgen::generate!({ path: "../../wit", world: "index-plugin" });

use std::cell::RefCell;

use exports::ringshare::plugin::index::{Guest, GuestListing, Listing};
use guest_store::FileNames;
use ringshare::plugin::log::{Level, log};
use ringshare::plugin::types::{Error, FileEntry};

struct Plugin;

impl Guest for Plugin {
    type Listing = Files;

    fn list() -> Result<Listing, Error> {
        let names = guest_store::file_names().map_err(|e| Error::Io(e.to_string()))?;
        Ok(Listing::new(Files { names: RefCell::new(names), recorded: guest_store::has_records() }))
    }
}

/// A listing in progress: the names of the store not yet listed, and
/// whether records of 0.5.0 plugins are to be looked for.
struct Files {
    names: RefCell<FileNames>,
    recorded: bool,
}

impl GuestListing for Files {
    fn next(&self, max: u32) -> Result<Vec<FileEntry>, Error> {
        let mut names = self.names.borrow_mut();
        let mut entries = Vec::with_capacity(max.min(4096) as usize);
        while entries.len() < max as usize {
            let Some(name) = names.next() else { break };
            let name = name.map_err(|e| Error::Io(e.to_string()))?;
            // A file can vanish between the listing and the stat (overwrite,
            // delete): skip it rather than fail the whole listing.
            let metadata = match std::fs::metadata(guest_store::file_path(&name)) {
                Ok(metadata) => metadata,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    log(Level::Warn, &format!("skipping {name:?}: {e}"));
                    continue;
                }
            };
            let (size, modified_ns) = (metadata.len(), guest_store::modified_ns(&metadata));
            let blake3 = if self.recorded { guest_store::entry_of(&name, size, modified_ns).blake3 } else { None };
            entries.push(FileEntry { name, size, blake3, modified_ns });
        }
        Ok(entries)
    }
}

export!(Plugin);
