//! The default upload plugin: opens a temp file for the content, and one
//! for its outboard when the host asks for it (a file of one block has
//! none), hands the host the first (the host writes it natively) and a
//! stream into the second, and on `finish` commits them: the outboard
//! first, then the content with one rename (or a no-clobber hard link),
//! so a half-written file is never visible. The host records the file's
//! hash itself (contract 0.6.0), so an upload makes one new file in the
//! store. The host has synced the temp files before `finish` and syncs the
//! commit after it (group commit), so the plugin does not sync. A writer
//! dropped before `finish` removes its temp files.
//! `remove` deletes a file, its outboard and any record a plugin of
//! contract 0.5.0 left beside it. It is granted `/store` read-write.

wit_bindgen::generate!({ path: "../../wit", world: "upload-plugin", generate_all });

use std::cell::RefCell;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use exports::ringshare::plugin::upload::{Guest, GuestWriter, Writer};
use ringshare::plugin::log::{Level, log};
use ringshare::plugin::types::{Error, FileEntry};
use wasi::filesystem::types::{Descriptor, DescriptorFlags, OpenFlags, PathFlags};
use wasi::io::streams::OutputStream;

struct Plugin;

struct Upload {
    state: RefCell<Option<InFlight>>,
}

struct InFlight {
    name: String,
    overwrite: bool,
    modified: Option<u64>,
    content: (File, PathBuf),
    /// Made when the host asks for it.
    outboard: RefCell<Option<PathBuf>>,
}

fn io_error(e: io::Error) -> Error {
    Error::Io(e.to_string())
}

/// The store's preopened directory, for opening streams.
fn store_dir() -> Result<Descriptor, Error> {
    wasi::filesystem::preopens::get_directories()
        .into_iter()
        .find(|(_, path)| path == guest_store::STORE)
        .map(|(dir, _)| dir)
        .ok_or_else(|| Error::Io("the store is not granted".into()))
}

/// `path` (inside the store), opened for writing.
fn open_for_writing(path: &Path) -> Result<Descriptor, Error> {
    store_dir()?
        .open_at(PathFlags::empty(), &guest_store::in_store(path), OpenFlags::empty(), DescriptorFlags::WRITE)
        .map_err(|e| Error::Io(format!("opening {}: {e:?}", path.display())))
}

/// A stream writing `path` (inside the store) from its start.
fn write_stream(path: &Path) -> Result<OutputStream, Error> {
    open_for_writing(path)?
        .write_via_stream(0)
        .map_err(|e| Error::Io(format!("streaming into {}: {e:?}", path.display())))
}

impl Guest for Plugin {
    type Writer = Upload;

    fn create(name: String, overwrite: bool, modified: Option<u64>) -> Result<Writer, Error> {
        guest_store::check_name(&name).map_err(Error::InvalidName)?;
        if !overwrite && guest_store::file_path(&name).exists() {
            return Err(Error::AlreadyExists(name));
        }
        let content = guest_store::create_temp("upload").map_err(io_error)?;
        let state = InFlight { name, overwrite, modified, content, outboard: RefCell::new(None) };
        Ok(Writer::new(Upload { state: RefCell::new(Some(state)) }))
    }

    fn remove(name: String) -> Result<bool, Error> {
        guest_store::check_name(&name).map_err(Error::InvalidName)?;
        let removed = match fs::remove_file(guest_store::file_path(&name)) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(io_error(e)),
        };
        // A record without its file is ignored by readers; remove it anyway.
        let _ = guest_store::forget(&name);
        Ok(removed)
    }
}

impl Upload {
    fn with<T>(&self, f: impl FnOnce(&InFlight) -> Result<T, Error>) -> Result<T, Error> {
        match &*self.state.borrow() {
            Some(upload) => f(upload),
            None => Err(Error::Other("upload already finished".into())),
        }
    }
}

impl InFlight {
    fn remove_temps(&self) {
        let _ = fs::remove_file(&self.content.1);
        if let Some(outboard) = &*self.outboard.borrow() {
            let _ = fs::remove_file(outboard);
        }
    }
}

impl GuestWriter for Upload {
    fn content(&self) -> Result<Descriptor, Error> {
        self.with(|upload| open_for_writing(&upload.content.1))
    }

    fn outboard(&self) -> Result<OutputStream, Error> {
        self.with(|upload| {
            let mut outboard = upload.outboard.borrow_mut();
            if outboard.is_some() {
                return Err(Error::Other("the outboard was already asked for".into()));
            }
            let (_, path) = guest_store::create_temp("outboard").map_err(io_error)?;
            let stream = write_stream(&path);
            *outboard = Some(path);
            stream
        })
    }

    fn finish(&self, size: u64, blake3: String) -> Result<FileEntry, Error> {
        let upload = self.state.borrow_mut().take().ok_or_else(|| Error::Other("upload already finished".into()))?;
        let result = commit(&upload, size, &blake3);
        // After a rename the temp paths are gone; after a link or a failure
        // they must go.
        upload.remove_temps();
        result
    }
}

fn commit(upload: &InFlight, size: u64, blake3: &str) -> Result<FileEntry, Error> {
    if !guest_store::is_digest(blake3) {
        return Err(Error::Other(format!("{blake3:?} is not a BLAKE3 digest")));
    }
    let (file, temp) = &upload.content;
    let written = file.metadata().map_err(io_error)?.len();
    if written != size {
        return Err(Error::Io(format!("the host reports {size} bytes but {written} were written")));
    }
    if let Some(ns) = upload.modified {
        file.set_modified(UNIX_EPOCH + Duration::from_nanos(ns)).map_err(io_error)?;
    }
    let modified_ns = guest_store::modified_ns(&file.metadata().map_err(io_error)?);
    let target = guest_store::file_path(&upload.name);
    // A file of more than one block brings its outboard. Replacing, the
    // outboard goes first, so that the content is never read without it;
    // adding, the content's link must win first, so that a name taken
    // meanwhile keeps its own outboard.
    let place_outboard = || match &*upload.outboard.borrow() {
        Some(outboard) => fs::rename(outboard, guest_store::outboard_path(&upload.name)).map_err(io_error),
        None => Ok(()),
    };
    if upload.overwrite {
        // Until the content is replaced too, the old content would be read
        // with the new outboard: without its record, the old content is
        // hashed again (and given its outboard back) if a crash falls
        // between the two.
        if upload.outboard.borrow().is_some() {
            guest_store::unrecord(&upload.name).map_err(io_error)?;
        }
        place_outboard()?;
        fs::rename(temp, &target).map_err(io_error)?;
    } else {
        fs::hard_link(temp, &target).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => Error::AlreadyExists(upload.name.clone()),
            _ => io_error(e),
        })?;
        place_outboard()?;
    }
    // A file of one block has no outboard: one left by an earlier version
    // of the name goes, once the content it belonged to is replaced.
    if upload.outboard.borrow().is_none()
        && let Err(e) = fs::remove_file(guest_store::outboard_path(&upload.name))
        && e.kind() != io::ErrorKind::NotFound
    {
        log(Level::Warn, &format!("could not remove the old outboard of {:?}: {e}", upload.name));
    }
    Ok(FileEntry { name: upload.name.clone(), size, blake3: Some(blake3.to_owned()), modified_ns })
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(upload) = self.state.get_mut().take() {
            upload.remove_temps();
            log(Level::Info, &format!("upload of {:?} aborted", upload.name));
        }
    }
}

export!(Plugin);
