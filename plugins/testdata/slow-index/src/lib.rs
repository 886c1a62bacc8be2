//! Test plugin (index world): a listing that takes as long as the test
//! wants. While the store holds a file named `hold`, each page waits 100 ms
//! and lists that file again; once it is gone, the last page lists the
//! store's other files (without hashes: the host reads them again) and the
//! listing ends. A node must serve names while its first listing of a
//! large store runs, and keep what changes meanwhile.

wit_bindgen::generate!({ path: "../../../wit", world: "index-plugin" });

use std::cell::Cell;

use exports::ringshare::plugin::index::{Guest, GuestListing, Listing};
use ringshare::plugin::types::{Error, FileEntry};

struct Plugin;

impl Guest for Plugin {
    type Listing = Held;

    fn list() -> Result<Listing, Error> {
        Ok(Listing::new(Held(Cell::new(false))))
    }
}

/// The listing, going on while `hold` is in the store; whether it ended.
struct Held(Cell<bool>);

fn entry(name: String, metadata: &std::fs::Metadata) -> FileEntry {
    let modified = metadata.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    FileEntry { name, size: metadata.len(), blake3: None, modified_ns: modified.map_or(0, |d| d.as_nanos() as u64) }
}

impl GuestListing for Held {
    fn next(&self, max: u32) -> Result<Vec<FileEntry>, Error> {
        if self.0.get() {
            return Ok(Vec::new());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        if let Ok(held) = std::fs::metadata("/store/files/hold") {
            return Ok(vec![entry("hold".into(), &held)]);
        }
        self.0.set(true);
        let io = |e: std::io::Error| Error::Io(e.to_string());
        let mut page = Vec::new();
        for dirent in std::fs::read_dir("/store/files").map_err(io)?.take(max as usize) {
            let dirent = dirent.map_err(io)?;
            let name = dirent.file_name().into_string().map_err(|_| Error::Other("a name not UTF-8".into()))?;
            page.push(entry(name, &dirent.metadata().map_err(io)?));
        }
        Ok(page)
    }
}

export!(Plugin);
