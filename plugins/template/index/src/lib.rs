//! Template: an index plugin (world `index-plugin` of wit/plugin.wit). The
//! host calls `list` to learn which files the node holds, and reads the
//! listing it answers in pages (`next(max)`, until an empty page); it
//! caches the answer until the store changes. Keep only what one page
//! needs in memory (here: the open directory), so that a store of any size
//! lists within the plugin's memory cap. The plugin is granted the node's
//! store read-only at `/store` and reads it with plain `std::fs`.
//!
//! The store layout is the one the default plugins use (plugins/guest-store),
//! so that this plugin can be paired with them and with the other templates:
//!
//! - `/store/files/<name>`: the complete files, the only ones listed;
//! - `/store/meta/<name>`: `SIZE MTIME_NS BLAKE3\n`, written by the upload
//!   plugin when the file was committed. The recorded BLAKE3 is reported
//!   only while SIZE and MTIME_NS still match the file; otherwise (a file
//!   copied in by hand, or changed since) the entry has no hash and the host
//!   hashes the file and writes it again through the upload plugin.
//!
//! Names starting with '.' are left out (hidden files). The upload template
//! refuses such names so that the two agree; the default upload plugin
//! accepts them, so pair this template with it only if you list them too: a
//! file the index does not list is, for the node, a file it does not have.

// Bindings of the world, generated at compile time from the contract. The
// path is relative to this crate's Cargo.toml: a copy elsewhere must copy
// the repository's wit/ folder along and point this at it.
wit_bindgen::generate!({ path: "../../../wit", world: "index-plugin" });

use std::cell::RefCell;
use std::fs;
use std::time::UNIX_EPOCH;

use exports::ringshare::plugin::index::{Guest, GuestListing, Listing};
use ringshare::plugin::types::{Error, FileEntry};

struct Plugin;

impl Guest for Plugin {
    /// The type behind the `listing` resource.
    type Listing = Files;

    fn list() -> Result<Listing, Error> {
        let dir = fs::read_dir("/store/files").map_err(io)?;
        Ok(Listing::new(Files(RefCell::new(dir))))
    }
}

/// A listing in progress: the directory, read as far as listed.
struct Files(RefCell<fs::ReadDir>);

impl GuestListing for Files {
    fn next(&self, max: u32) -> Result<Vec<FileEntry>, Error> {
        let mut dir = self.0.borrow_mut();
        let mut entries = Vec::new();
        while entries.len() < max as usize {
            let Some(dirent) = dir.next() else { break };
            let dirent = dirent.map_err(io)?;
            // Names that are not UTF-8 or not one plain segment cannot be
            // reported (the host would leave them out, with a warning).
            let Ok(name) = dirent.file_name().into_string() else { continue };
            if name.starts_with('.') || !plain_name(&name) {
                continue;
            }
            // Regular files only (not directories, not symlinks), and a file
            // removed since the directory was read is skipped, not an error.
            if !dirent.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let Ok(metadata) = fs::metadata(dirent.path()) else { continue };
            let modified_ns = metadata
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as u64);
            let size = metadata.len();
            let blake3 = recorded_blake3(&name, size, modified_ns);
            entries.push(FileEntry { name, size, blake3, modified_ns });
        }
        Ok(entries)
    }
}

fn io(e: std::io::Error) -> Error {
    Error::Io(e.to_string())
}

/// One path segment, as the host's own rule for file names.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 255
        && !name.chars().any(|c| c == '/' || c == '\\' || c.is_control())
}

/// The BLAKE3 recorded in `meta/<name>`, if the record still matches the
/// file's size and modification time.
fn recorded_blake3(name: &str, size: u64, modified_ns: u64) -> Option<String> {
    let record = fs::read_to_string(format!("/store/meta/{name}")).ok()?;
    let mut fields = record.split_whitespace();
    let recorded_size: u64 = fields.next()?.parse().ok()?;
    let recorded_mtime: u64 = fields.next()?.parse().ok()?;
    let blake3 = fields.next()?;
    let is_digest = blake3.len() == 64 && blake3.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (recorded_size == size && recorded_mtime == modified_ns && is_digest).then(|| blake3.to_owned())
}

export!(Plugin);
