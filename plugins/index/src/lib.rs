//! The default index plugin: lists the complete files of the node's store.
//! It is granted `/store` read-only.

wit_bindgen::generate!({ path: "../../wit", world: "index-plugin" });

use exports::ringshare::plugin::index::Guest;
use ringshare::plugin::log::{Level, log};
use ringshare::plugin::types::{Error, FileEntry};

struct Plugin;

impl Guest for Plugin {
    fn list() -> Result<Vec<FileEntry>, Error> {
        let names = guest_store::file_names().map_err(|e| Error::Io(e.to_string()))?;
        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            // A file can vanish between the listing and the open (overwrite,
            // delete): skip it rather than fail the whole listing.
            let Ok(file) = std::fs::File::open(guest_store::file_path(&name)) else {
                continue;
            };
            match guest_store::entry_of(&name, &file) {
                Ok(e) => {
                    entries.push(FileEntry { name: e.name, size: e.size, sha256: e.sha256, modified_ns: e.modified_ns })
                }
                Err(err) => log(Level::Warn, &format!("skipping {name:?}: {err}")),
            }
        }
        Ok(entries)
    }
}

export!(Plugin);
