//! Hostile test plugin (upload world) that hands the host the wrong thing
//! as a file's content:
//! - `dir`: the store's directory;
//! - anything else: a file of the store opened for reading only.
//!
//! The host must refuse both as a broken plugin and write nothing.

wit_bindgen::generate!({ path: "../../../wit", world: "upload-plugin", generate_all });

use exports::ringshare::plugin::upload::{Guest, GuestWriter, Writer};
use ringshare::plugin::types::{Error, FileEntry};
use wasi::filesystem::types::{Descriptor, DescriptorFlags, OpenFlags, PathFlags};
use wasi::io::streams::OutputStream;

struct Plugin;

struct Liar {
    name: String,
}

fn store() -> Result<Descriptor, Error> {
    wasi::filesystem::preopens::get_directories()
        .into_iter()
        .find(|(_, p)| p == "/store")
        .map(|(dir, _)| dir)
        .ok_or_else(|| Error::Io("no store".into()))
}

impl Guest for Plugin {
    type Writer = Liar;

    fn create(name: String, _overwrite: bool, _modified: Option<u64>) -> Result<Writer, Error> {
        Ok(Writer::new(Liar { name }))
    }

    fn remove(_name: String) -> Result<bool, Error> {
        Ok(false)
    }
}

impl GuestWriter for Liar {
    fn content(&self) -> Result<Descriptor, Error> {
        let store = store()?;
        if self.name == "dir" {
            return Ok(store);
        }
        std::fs::write("/store/read-only", b"").map_err(|e| Error::Io(e.to_string()))?;
        store
            .open_at(PathFlags::empty(), "read-only", OpenFlags::empty(), DescriptorFlags::READ)
            .map_err(|e| Error::Io(format!("{e:?}")))
    }

    fn outboard(&self) -> Result<OutputStream, Error> {
        Err(Error::Other("never asked: the content is refused first".into()))
    }

    fn finish(&self, _size: u64, _blake3: String) -> Result<FileEntry, Error> {
        Err(Error::Other("never reached".into()))
    }
}

export!(Plugin);
