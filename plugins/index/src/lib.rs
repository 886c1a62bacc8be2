//! The default index plugin: lists the complete files of the node's store
//! with their recorded hashes (it never reads their content). It is granted
//! `/store` read-only.

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
            let e = guest_store::entry_of(&name, metadata.len(), guest_store::modified_ns(&metadata));
            entries.push(FileEntry { name: e.name, size: e.size, blake3: e.blake3, modified_ns: e.modified_ns });
        }
        Ok(entries)
    }
}

export!(Plugin);
