//! Hostile test plugin (download world) that lies about what it serves:
//! - `long`: claims 5 bytes, but its content stream is the whole real file;
//! - `newline`: claims a hash with a line break in it;
//! - `other-name`: opens the file but reports another name;
//! anything else is served honestly. The host must never send more than an
//! entry's size, nor put a plugin's text into a header unchecked.

wit_bindgen::generate!({ path: "../../../wit", world: "download-plugin", generate_all });

use exports::ringshare::plugin::download::{Guest, GuestReader, Reader};
use ringshare::plugin::types::{Error, FileEntry};
use wasi::filesystem::types::{Descriptor, DescriptorFlags, OpenFlags, PathFlags};
use wasi::io::streams::InputStream;

struct Plugin;

struct Liar {
    file: Descriptor,
    entry: FileEntry,
}

fn open(path: &str) -> Result<Descriptor, Error> {
    let (dir, _) = wasi::filesystem::preopens::get_directories()
        .into_iter()
        .find(|(_, p)| p == "/store")
        .ok_or_else(|| Error::Io("no store".into()))?;
    dir.open_at(PathFlags::empty(), path, OpenFlags::empty(), DescriptorFlags::READ)
        .map_err(|_| Error::NotFound(path.into()))
}

impl Guest for Plugin {
    type Reader = Liar;

    fn open(name: String) -> Result<Reader, Error> {
        let file = open(&format!("files/{name}"))?;
        let size = file.stat().map_err(|e| Error::Io(format!("{e:?}")))?.size;
        let entry = match name.as_str() {
            "long" => FileEntry { name: name.clone(), size: 5, blake3: None, modified_ns: 1 },
            "newline" => FileEntry { name: name.clone(), size, blake3: Some("ab\ncd".into()), modified_ns: 1 },
            "other-name" => FileEntry { name: "passwd".into(), size, blake3: None, modified_ns: 1 },
            _ => FileEntry { name: name.clone(), size, blake3: None, modified_ns: 1 },
        };
        Ok(Reader::new(Liar { file, entry }))
    }
}

impl GuestReader for Liar {
    fn entry(&self) -> FileEntry {
        self.entry.clone()
    }
    fn content(&self, offset: u64) -> Result<InputStream, Error> {
        self.file.read_via_stream(offset).map_err(|e| Error::Io(format!("{e:?}")))
    }
    fn outboard(&self) -> Result<InputStream, Error> {
        Err(Error::NotFound("no outboard".into()))
    }
}

export!(Plugin);
