//! The default download plugin: opens a complete file of the node's store and
//! serves it by offset. It is granted `/store` read-only.

wit_bindgen::generate!({ path: "../../wit", world: "download-plugin" });

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use exports::ringshare::plugin::download::{Guest, GuestReader, Reader};
use ringshare::plugin::types::{Error, FileEntry};

/// The most one `read` call hands back, whatever the host asks for.
const MAX_READ: u32 = 4 * 1024 * 1024;

struct Plugin;

struct OpenFile {
    file: File,
    entry: FileEntry,
}

impl Guest for Plugin {
    type Reader = OpenFile;

    fn open(name: String) -> Result<Reader, Error> {
        guest_store::check_name(&name).map_err(Error::InvalidName)?;
        let file = File::open(guest_store::file_path(&name)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NotFound(name.clone()),
            _ => Error::Io(e.to_string()),
        })?;
        let e = guest_store::entry_of(&name, &file).map_err(|e| Error::Io(e.to_string()))?;
        let entry = FileEntry { name: e.name, size: e.size, sha256: e.sha256, modified_ns: e.modified_ns };
        Ok(Reader::new(OpenFile { file, entry }))
    }
}

impl GuestReader for OpenFile {
    fn entry(&self) -> FileEntry {
        self.entry.clone()
    }

    fn read(&self, offset: u64, len: u32) -> Result<Vec<u8>, Error> {
        if offset > self.entry.size {
            return Err(Error::OutOfRange(format!("offset {offset} is past the end ({} bytes)", self.entry.size)));
        }
        let len = len.min(MAX_READ) as u64;
        let mut file = &self.file;
        file.seek(SeekFrom::Start(offset)).map_err(|e| Error::Io(e.to_string()))?;
        let mut buf = Vec::with_capacity(len as usize);
        file.take(len).read_to_end(&mut buf).map_err(|e| Error::Io(e.to_string()))?;
        Ok(buf)
    }
}

export!(Plugin);
