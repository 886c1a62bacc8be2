//! The default upload plugin: streams an upload into a temp file, hashing as
//! it goes, and commits it with one rename (or a no-clobber hard link) so a
//! half-written file is never visible. A writer dropped before `finish`
//! removes its temp file. `remove` deletes a file and its record. It is
//! granted `/store` read-write.

wit_bindgen::generate!({ path: "../../wit", world: "upload-plugin" });

use std::cell::RefCell;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use exports::ringshare::plugin::upload::{Guest, GuestWriter, Writer};
use guest_store::{Digest, Sha256};
use ringshare::plugin::log::{Level, log};
use ringshare::plugin::types::{Error, FileEntry};

struct Plugin;

struct Upload {
    state: RefCell<Option<InFlight>>,
}

struct InFlight {
    name: String,
    overwrite: bool,
    modified: Option<u64>,
    file: File,
    temp: PathBuf,
    hasher: Sha256,
    size: u64,
}

fn io_error(e: io::Error) -> Error {
    Error::Io(e.to_string())
}

impl Guest for Plugin {
    type Writer = Upload;

    fn create(name: String, overwrite: bool, modified: Option<u64>) -> Result<Writer, Error> {
        guest_store::check_name(&name).map_err(Error::InvalidName)?;
        if !overwrite && guest_store::file_path(&name).exists() {
            return Err(Error::AlreadyExists(name));
        }
        let (file, temp) = guest_store::create_temp("upload").map_err(io_error)?;
        let state = InFlight { name, overwrite, modified, file, temp, hasher: Sha256::new(), size: 0 };
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

impl GuestWriter for Upload {
    fn write(&self, chunk: Vec<u8>) -> Result<(), Error> {
        let mut state = self.state.borrow_mut();
        let upload = state.as_mut().ok_or_else(|| Error::Other("upload already finished".into()))?;
        upload.file.write_all(&chunk).map_err(io_error)?;
        upload.hasher.update(&chunk);
        upload.size += chunk.len() as u64;
        Ok(())
    }

    fn finish(&self) -> Result<FileEntry, Error> {
        let upload = self.state.borrow_mut().take().ok_or_else(|| Error::Other("upload already finished".into()))?;
        let result = commit(&upload);
        // After a rename the temp path is gone; after a link or a failure it
        // must go.
        let _ = fs::remove_file(&upload.temp);
        result
    }
}

fn commit(upload: &InFlight) -> Result<FileEntry, Error> {
    if let Some(ns) = upload.modified {
        upload.file.set_modified(UNIX_EPOCH + Duration::from_nanos(ns)).map_err(io_error)?;
    }
    upload.file.sync_all().map_err(io_error)?;
    let modified_ns = guest_store::modified_ns(&upload.file.metadata().map_err(io_error)?);
    let target = guest_store::file_path(&upload.name);
    if upload.overwrite {
        fs::rename(&upload.temp, &target).map_err(io_error)?;
    } else {
        fs::hard_link(&upload.temp, &target).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => Error::AlreadyExists(upload.name.clone()),
            _ => io_error(e),
        })?;
    }
    let entry = guest_store::Entry {
        name: upload.name.clone(),
        size: upload.size,
        sha256: guest_store::hex(&upload.hasher.clone().finalize()),
        modified_ns,
    };
    // The file is committed; without its record it is only hashed again
    // when listed, so a failure here is logged, not returned.
    if let Err(e) = guest_store::record(&entry) {
        log(Level::Warn, &format!("could not record metadata of {:?}: {e}", entry.name));
    }
    Ok(FileEntry { name: entry.name, size: entry.size, sha256: entry.sha256, modified_ns: entry.modified_ns })
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(upload) = self.state.get_mut().take() {
            let _ = fs::remove_file(&upload.temp);
            log(Level::Info, &format!("upload of {:?} aborted after {} bytes", upload.name, upload.size));
        }
    }
}

export!(Plugin);
