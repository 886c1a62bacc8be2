//! The default download plugin: opens a complete file of the node's store
//! with its own capability and hands the host streams of its content and of
//! its outboard, which the host reads natively and checks. It reports the
//! hash recorded beside a file by plugins of contract 0.5.0, if any; the
//! host keeps the others. It is granted `/store` read-only.

wit_bindgen::generate!({ path: "../../wit", world: "download-plugin", generate_all });

use std::path::Path;

use exports::ringshare::plugin::download::{Guest, GuestReader, Reader};
use ringshare::plugin::types::{Error, FileEntry};
use wasi::filesystem::types::{Descriptor, DescriptorFlags, ErrorCode, OpenFlags, PathFlags};
use wasi::io::streams::InputStream;

struct Plugin;

struct OpenFile {
    file: Descriptor,
    entry: FileEntry,
}

/// The store's preopened directory.
fn store_dir() -> Result<Descriptor, Error> {
    wasi::filesystem::preopens::get_directories()
        .into_iter()
        .find(|(_, path)| path == guest_store::STORE)
        .map(|(dir, _)| dir)
        .ok_or_else(|| Error::Io("the store is not granted".into()))
}

fn open_read(name: &str, path: &Path) -> Result<Descriptor, Error> {
    store_dir()?
        .open_at(PathFlags::empty(), &guest_store::in_store(path), OpenFlags::empty(), DescriptorFlags::READ)
        .map_err(|e| match e {
            ErrorCode::NoEntry => Error::NotFound(name.to_owned()),
            e => Error::Io(format!("opening {}: {e:?}", path.display())),
        })
}

fn entry_of(name: &str, file: &Descriptor) -> Result<FileEntry, Error> {
    let stat = file.stat().map_err(|e| Error::Io(format!("{e:?}")))?;
    let modified_ns =
        stat.data_modification_timestamp.map_or(0, |t| t.seconds * 1_000_000_000 + u64::from(t.nanoseconds));
    let e = guest_store::entry_of(name, stat.size, modified_ns);
    Ok(FileEntry { name: e.name, size: e.size, blake3: e.blake3, modified_ns: e.modified_ns })
}

impl Guest for Plugin {
    type Reader = OpenFile;

    fn open(name: String) -> Result<Reader, Error> {
        guest_store::check_name(&name).map_err(Error::InvalidName)?;
        let file = open_read(&name, &guest_store::file_path(&name))?;
        // With no record of a 0.5.0 plugin beside it, the hash is the one
        // the host recorded when the file was written.
        let entry = entry_of(&name, &file)?;
        Ok(Reader::new(OpenFile { file, entry }))
    }
}

impl GuestReader for OpenFile {
    fn entry(&self) -> FileEntry {
        self.entry.clone()
    }

    fn content(&self, offset: u64) -> Result<InputStream, Error> {
        if offset > self.entry.size {
            return Err(Error::OutOfRange(format!("offset {offset} is past the end ({} bytes)", self.entry.size)));
        }
        self.file.read_via_stream(offset).map_err(|e| Error::Io(format!("{e:?}")))
    }

    fn outboard(&self) -> Result<InputStream, Error> {
        let path = guest_store::outboard_path(&self.entry.name);
        let outboard = open_read(&self.entry.name, &path)?;
        outboard.read_via_stream(0).map_err(|e| Error::Io(format!("{e:?}")))
    }
}

export!(Plugin);
