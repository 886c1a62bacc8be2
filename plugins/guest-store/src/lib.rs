//! The store as the default plugins see it, under the preopened `/store`:
//!
//! - `/store/files/<name>`: complete files, the only ones ever listed or read;
//! - `/store/meta/<name>`: `size mtime_ns blake3` of the file as plugins of
//!   contract 0.5.0 committed it (the host hashes; plugins never do);
//!   ignored when the file's size or mtime no longer match (a file copied
//!   in by hand). Since 0.6.0 the host keeps these records itself: they are
//!   read, removed with their file, and no longer written;
//! - `/store/outboard/<name>`: the BLAKE3 chaining values of the file's
//!   blocks, written by the host through the upload plugin's stream;
//! - `/store/tmp/`: uploads in progress, renamed into place when complete.
//!
//! The host creates the folders and empties `tmp/` when it starts.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::path::PathBuf;
use std::time::UNIX_EPOCH;

/// Where the host grants the store.
pub const STORE: &str = "/store";
const FILES: &str = "/store/files";
const META: &str = "/store/meta";
const OUTBOARD: &str = "/store/outboard";
const TMP: &str = "/store/tmp";

/// A file's entry as plugins report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub size: u64,
    /// None when the store has no valid record of the file.
    pub blake3: Option<String>,
    pub modified_ns: u64,
}

/// Refuses anything that is not one plain path segment. The host validates
/// names fully before calling; this is the plugin's own line of defence.
pub fn check_name(name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.len() > 255
        || name.chars().any(|c| c == '/' || c == '\\' || c.is_control());
    if bad { Err(format!("{name:?} is not a single file name")) } else { Ok(()) }
}

/// Where the complete file `name` lives.
pub fn file_path(name: &str) -> PathBuf {
    PathBuf::from(FILES).join(name)
}

/// The names in `files/`, regular files only, read from the directory as
/// they are asked for (a store of any size is listed in bounded memory).
pub fn file_names() -> io::Result<FileNames> {
    Ok(FileNames(fs::read_dir(FILES)?))
}

/// The names of `files/` still to be read (see [`file_names`]).
pub struct FileNames(fs::ReadDir);

impl Iterator for FileNames {
    type Item = io::Result<String>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let dirent = match self.0.next()? {
                Ok(dirent) => dirent,
                Err(e) => return Some(Err(e)),
            };
            match dirent.file_type() {
                Ok(kind) if kind.is_file() => {}
                Ok(_) => continue,
                Err(e) => return Some(Err(e)),
            }
            if let Ok(name) = dirent.file_name().into_string()
                && check_name(&name).is_ok()
            {
                return Some(Ok(name));
            }
        }
    }
}

/// Modification time in nanoseconds since the Unix epoch (0 when unknown).
pub fn modified_ns(metadata: &Metadata) -> u64 {
    metadata.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos() as u64)
}

/// Where the outboard of `name` lives.
pub fn outboard_path(name: &str) -> PathBuf {
    PathBuf::from(OUTBOARD).join(name)
}

/// `path` relative to the store, for opening through the preopened
/// descriptor (`files/<name>`, `tmp/<file>`, ...).
pub fn in_store(path: &std::path::Path) -> String {
    path.strip_prefix(STORE).map_or_else(|_| path.display().to_string(), |p| p.display().to_string())
}

/// Whether `text` is a BLAKE3 digest as the host writes it.
pub fn is_digest(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The entry of a file of `size` bytes modified at `modified_ns`: with its
/// recorded hash when the record still matches the file.
pub fn entry_of(name: &str, size: u64, modified_ns: u64) -> Entry {
    let blake3 = recorded_blake3(name, size, modified_ns);
    Entry { name: name.to_owned(), size, blake3, modified_ns }
}

/// Whether `meta/` holds any record: a store written by plugins of contract
/// 0.6.0 has none (the host keeps them), and its listing need not look.
pub fn has_records() -> bool {
    fs::read_dir(META).is_ok_and(|mut records| records.next().is_some())
}

fn recorded_blake3(name: &str, size: u64, modified_ns: u64) -> Option<String> {
    let text = fs::read_to_string(PathBuf::from(META).join(name)).ok()?;
    let mut fields = text.split_whitespace();
    let recorded_size: u64 = fields.next()?.parse().ok()?;
    let recorded_mtime: u64 = fields.next()?.parse().ok()?;
    let blake3 = fields.next()?;
    let valid = recorded_size == size && recorded_mtime == modified_ns && is_digest(blake3);
    valid.then(|| blake3.to_owned())
}

/// Removes the record of `name`, if any: the file is then hashed again by
/// the host before it is served.
pub fn unrecord(name: &str) -> io::Result<()> {
    match fs::remove_file(PathBuf::from(META).join(name)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes the record and the outboard of `name`.
pub fn forget(name: &str) -> io::Result<()> {
    let _ = fs::remove_file(outboard_path(name));
    fs::remove_file(PathBuf::from(META).join(name))
}

/// A new, empty file in `tmp/` that no other writer can be using.
pub fn create_temp(prefix: &str) -> io::Result<(File, PathBuf)> {
    let stamp = std::time::SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut last_error = None;
    for attempt in 0..64u32 {
        let path = PathBuf::from(TMP).join(format!("{prefix}.{stamp}.{attempt}"));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((file, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no free temp name")))
}
