//! Template: an upload plugin (world `upload-plugin` of wit/plugin.wit). It
//! is granted the node's store read-write at `/store`. For each upload the
//! host calls, on one instance:
//!
//! 1. `create(name, overwrite, modified-ns)`: accept or refuse the file,
//!    and prepare where it goes. Here: two new temp files in `/store/tmp/`.
//! 2. `writer.content()`: the file the host writes the content into, opened
//!    for writing (the host refuses anything else). The bytes never pass
//!    through the plugin: the host writes them natively and hashes them.
//! 3. `writer.outboard()`: a stream the host writes the file's outboard into
//!    (the BLAKE3 chaining value of each 256 KiB block, 32 bytes each).
//! 4. `writer.finish(size, blake3)`: make the file visible, atomically and
//!    durably, and return its entry, which must carry exactly that name,
//!    size and hash. Or, instead, the writer is dropped (client gone, hash
//!    mismatch): nothing may be left behind.
//!
//! `remove(name)` deletes a file. The layout is the default plugins' (see
//! plugins/guest-store), so the index and download plugins beside this one,
//! default or template, find what it writes:
//!
//! - `/store/files/<name>`: the complete file;
//! - `/store/outboard/<name>`: its outboard;
//! - `/store/meta/<name>`: `SIZE MTIME_NS BLAKE3\n`, the record readers
//!   trust while the file's size and mtime still match it;
//! - `/store/tmp/`: uploads in progress (the host empties it at start).
//!
//! Names starting with '.' are refused, as the index template hides them.

// Bindings of the world, generated at compile time from the contract;
// `generate_all` also generates the wasi:filesystem and wasi:io bindings the
// world uses. The path is relative to this crate's Cargo.toml: a copy
// elsewhere must copy the repository's wit/ folder along and point this at it.
wit_bindgen::generate!({ path: "../../../wit", world: "upload-plugin", generate_all });

use std::cell::RefCell;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use exports::ringshare::plugin::upload::{Guest, GuestWriter, Writer};
use ringshare::plugin::log::{Level, log};
use ringshare::plugin::types::{Error, FileEntry};
use wasi::filesystem::types::{Descriptor, DescriptorFlags, OpenFlags, PathFlags};
use wasi::io::streams::OutputStream;

const STORE: &str = "/store";

struct Plugin;

/// One upload; `None` once finished.
struct Upload(RefCell<Option<Pending>>);

struct Pending {
    name: String,
    overwrite: bool,
    modified_ns: Option<u64>,
    /// The temp files (open, to sync them) and their paths relative to the store.
    content: (File, String),
    outboard: (File, String),
}

fn io_error(e: io::Error) -> Error {
    Error::Io(e.to_string())
}

impl Guest for Plugin {
    type Writer = Upload;

    fn create(name: String, overwrite: bool, modified_ns: Option<u64>) -> Result<Writer, Error> {
        // The host validates names before calling; checking again costs little.
        if !plain_name(&name) {
            return Err(Error::InvalidName(format!("{name:?} is not a plain file name")));
        }
        if name.starts_with('.') {
            return Err(Error::InvalidName(format!("{name:?}: names starting with '.' are hidden, not stored")));
        }
        // An early answer; `finish` makes sure again without a race.
        if !overwrite && fs::exists(format!("{STORE}/files/{name}")).map_err(io_error)? {
            return Err(Error::AlreadyExists(name));
        }
        let content = create_temp("upload").map_err(io_error)?;
        let outboard = create_temp("outboard")
            .inspect_err(|_| {
                let _ = fs::remove_file(at(&content.1));
            })
            .map_err(io_error)?;
        Ok(Writer::new(Upload(RefCell::new(Some(Pending { name, overwrite, modified_ns, content, outboard })))))
    }

    fn remove(name: String) -> Result<bool, Error> {
        if !plain_name(&name) {
            return Err(Error::InvalidName(format!("{name:?} is not a plain file name")));
        }
        let existed = match fs::remove_file(format!("{STORE}/files/{name}")) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(io_error(e)),
        };
        let _ = fs::remove_file(format!("{STORE}/outboard/{name}"));
        let _ = fs::remove_file(format!("{STORE}/meta/{name}"));
        Ok(existed)
    }
}

impl GuestWriter for Upload {
    fn content(&self) -> Result<Descriptor, Error> {
        // Hand over a wasi:filesystem descriptor (std's File cannot cross the
        // component boundary), opened through the preopened store.
        self.pending(|p| open_for_writing(&p.content.1))
    }

    fn outboard(&self) -> Result<OutputStream, Error> {
        self.pending(|p| open_for_writing(&p.outboard.1)?.write_via_stream(0).map_err(|e| Error::Io(format!("{e:?}"))))
    }

    fn finish(&self, size: u64, blake3: String) -> Result<FileEntry, Error> {
        let pending = self.0.borrow_mut().take().ok_or_else(|| Error::Other("already finished".into()))?;
        let result = commit(&pending, size, &blake3);
        // Renamed away on success; after a hard link or a failure they must go.
        let _ = fs::remove_file(at(&pending.content.1));
        let _ = fs::remove_file(at(&pending.outboard.1));
        result
    }
}

impl Upload {
    fn pending<T>(&self, f: impl FnOnce(&Pending) -> Result<T, Error>) -> Result<T, Error> {
        self.0.borrow().as_ref().map_or_else(|| Err(Error::Other("already finished".into())), f)
    }
}

/// A writer dropped before `finish`: the upload is abandoned.
impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(p) = self.0.get_mut().take() {
            let _ = fs::remove_file(at(&p.content.1));
            let _ = fs::remove_file(at(&p.outboard.1));
            log(Level::Info, &format!("upload of {:?} abandoned", p.name));
        }
    }
}

/// Durable first, then visible: sync both temp files, move the outboard and
/// the content into place, then write the record.
fn commit(p: &Pending, size: u64, blake3: &str) -> Result<FileEntry, Error> {
    let (file, temp) = &p.content;
    let written = file.metadata().map_err(io_error)?.len();
    if written != size {
        return Err(Error::Io(format!("the host reports {size} bytes, the file has {written}")));
    }
    if let Some(ns) = p.modified_ns {
        file.set_modified(UNIX_EPOCH + Duration::from_nanos(ns)).map_err(io_error)?;
    }
    file.sync_all().map_err(io_error)?;
    p.outboard.0.sync_all().map_err(io_error)?;
    // What readers compare the record with (a rename keeps it).
    let modified = file.metadata().and_then(|m| m.modified()).map_err(io_error)?;
    let modified_ns = modified.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let target = format!("{STORE}/files/{}", p.name);
    let outboard = format!("{STORE}/outboard/{}", p.name);
    if p.overwrite {
        fs::rename(at(&p.outboard.1), &outboard).map_err(io_error)?;
        fs::rename(at(temp), &target).map_err(io_error)?;
    } else {
        // A hard link fails if the name exists, even one committed by another
        // upload since `create`: never clobbers. The temp name goes in `finish`.
        fs::hard_link(at(temp), &target).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => Error::AlreadyExists(p.name.clone()),
            _ => io_error(e),
        })?;
        fs::rename(at(&p.outboard.1), &outboard).map_err(io_error)?;
    }
    // The file is in place. Without its record it is only hashed again by
    // the host when next read, so a failure here is logged, not returned.
    if let Err(e) = record(&p.name, &format!("{size} {modified_ns} {blake3}\n")) {
        log(Level::Warn, &format!("no record for {:?}: {e}", p.name));
    }
    Ok(FileEntry { name: p.name.clone(), size, blake3: Some(blake3.to_owned()), modified_ns })
}

/// Writes `meta/<name>` atomically: a temp file renamed over the old record.
fn record(name: &str, line: &str) -> io::Result<()> {
    let (mut file, temp) = create_temp("meta")?;
    let written = file.write_all(line.as_bytes()).and_then(|()| fs::rename(at(&temp), format!("{STORE}/meta/{name}")));
    if written.is_err() {
        let _ = fs::remove_file(at(&temp));
    }
    written
}

/// A new empty file in `tmp/` that no other upload uses (instances run
/// concurrently, one per upload): its path relative to the store.
fn create_temp(prefix: &str) -> io::Result<(File, String)> {
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    for attempt in 0..64 {
        let path = format!("tmp/{prefix}.{stamp}.{attempt}");
        match OpenOptions::new().write(true).create_new(true).open(at(&path)) {
            Ok(file) => return Ok((file, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("no free temp file name"))
}

/// `path` (relative to the store) opened for writing through the preopened
/// `/store` directory, as a wasi:filesystem descriptor.
fn open_for_writing(path: &str) -> Result<Descriptor, Error> {
    let (store, _) = wasi::filesystem::preopens::get_directories()
        .into_iter()
        .find(|(_, dir)| dir == STORE)
        .ok_or_else(|| Error::Io("the store is not granted to this plugin".into()))?;
    store
        .open_at(PathFlags::empty(), path, OpenFlags::empty(), DescriptorFlags::WRITE)
        .map_err(|e| Error::Io(format!("opening {path}: {e:?}")))
}

/// The absolute path of `path` (relative to the store).
fn at(path: &str) -> String {
    format!("{STORE}/{path}")
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
