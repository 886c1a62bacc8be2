//! Template: a download plugin (world `download-plugin` of wit/plugin.wit).
//! It is granted the node's store read-only at `/store`. For each download
//! the host calls, on one instance:
//!
//! 1. `open(name)`: open the file, or say `not-found`;
//! 2. `reader.entry()`: its name, size, recorded hash and mtime;
//! 3. when the entry has a hash, `reader.outboard()`: a stream of the
//!    outboard recorded with the file, which the host checks against the
//!    hash;
//! 4. `reader.content(offset)`: a stream of the content from `offset`. The
//!    host reads it natively (the bytes never pass through the plugin), no
//!    further than the entry's size, and checks every block against the
//!    outboard before it sends a byte of it.
//!
//! The layout is the default plugins' (see plugins/guest-store), so this
//! plugin reads what the default upload plugin or the upload template wrote:
//! `/store/files/<name>`, `/store/outboard/<name>`, and `/store/meta/<name>`
//! (`SIZE MTIME_NS BLAKE3\n`, trusted while size and mtime match the file).

// Bindings of the world, generated at compile time from the contract;
// `generate_all` also generates the wasi:filesystem and wasi:io bindings the
// world uses. The path is relative to this crate's Cargo.toml: a copy
// elsewhere must copy the repository's wit/ folder along and point this at it.
wit_bindgen::generate!({ path: "../../../wit", world: "download-plugin", generate_all });

use exports::ringshare::plugin::download::{Guest, GuestReader, Reader};
use ringshare::plugin::types::{Error, FileEntry};
use wasi::filesystem::types::{Descriptor, DescriptorFlags, DescriptorType, ErrorCode, OpenFlags, PathFlags};
use wasi::io::streams::InputStream;

const STORE: &str = "/store";

struct Plugin;

/// An open file and its entry: the file stays open, so what is read is
/// what the entry describes even if the name is overwritten meanwhile.
struct OpenFile {
    file: Descriptor,
    entry: FileEntry,
}

impl Guest for Plugin {
    type Reader = OpenFile;

    fn open(name: String) -> Result<Reader, Error> {
        // The host validates names before calling; checking again costs little.
        if !plain_name(&name) {
            return Err(Error::InvalidName(format!("{name:?} is not a plain file name")));
        }
        // An upload commits the file, then its record: a reader can fall in
        // between and see no valid record. Look again a few times before
        // reporting the file as unrecorded (which has the host hash it and
        // write it again).
        let mut attempt = 0;
        loop {
            attempt += 1;
            let file = open_read(&format!("files/{name}"), &name)?;
            let stat = file.stat().map_err(|e| Error::Io(format!("{e:?}")))?;
            if stat.type_ != DescriptorType::RegularFile {
                return Err(Error::NotFound(name));
            }
            let modified_ns =
                stat.data_modification_timestamp.map_or(0, |t| t.seconds * 1_000_000_000 + u64::from(t.nanoseconds));
            let blake3 = recorded_blake3(&name, stat.size, modified_ns);
            if blake3.is_some() || attempt == 5 {
                let entry = FileEntry { name, size: stat.size, blake3, modified_ns };
                return Ok(Reader::new(OpenFile { file, entry }));
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
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
        let outboard = open_read(&format!("outboard/{}", self.entry.name), &self.entry.name)?;
        outboard.read_via_stream(0).map_err(|e| Error::Io(format!("{e:?}")))
    }
}

/// `path` (relative to the store) opened for reading through the preopened
/// `/store` directory; `not-found` (naming `name`) when it does not exist.
fn open_read(path: &str, name: &str) -> Result<Descriptor, Error> {
    let (store, _) = wasi::filesystem::preopens::get_directories()
        .into_iter()
        .find(|(_, dir)| dir == STORE)
        .ok_or_else(|| Error::Io("the store is not granted to this plugin".into()))?;
    store.open_at(PathFlags::empty(), path, OpenFlags::empty(), DescriptorFlags::READ).map_err(|e| match e {
        ErrorCode::NoEntry => Error::NotFound(name.to_owned()),
        e => Error::Io(format!("opening {path}: {e:?}")),
    })
}

/// The BLAKE3 recorded in `meta/<name>`, if the record still matches the
/// file's size and modification time.
fn recorded_blake3(name: &str, size: u64, modified_ns: u64) -> Option<String> {
    let record = std::fs::read_to_string(format!("{STORE}/meta/{name}")).ok()?;
    let mut fields = record.split_whitespace();
    let recorded_size: u64 = fields.next()?.parse().ok()?;
    let recorded_mtime: u64 = fields.next()?.parse().ok()?;
    let blake3 = fields.next()?;
    let is_digest = blake3.len() == 64 && blake3.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (recorded_size == size && recorded_mtime == modified_ns && is_digest).then(|| blake3.to_owned())
}

/// One path segment, as the host's own rule for file names.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 255
        && !name.chars().any(|c| c == '/' || c == '\\' || c.is_control())
}

export!(Plugin);
