//! The store as the default plugins see it, under the preopened `/store`:
//!
//! - `/store/files/<name>`: complete files, the only ones ever listed or read;
//! - `/store/meta/<name>`: `size mtime_ns sha256` of the file as it was
//!   committed, so listings need not hash every file each time; ignored when
//!   the file's size or mtime no longer match (a file copied in by hand);
//! - `/store/tmp/`: uploads in progress, renamed into `files/` when complete.
//!
//! The host creates the three folders and empties `tmp/` when it starts.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::UNIX_EPOCH;

pub use sha2::{Digest, Sha256};

const FILES: &str = "/store/files";
const META: &str = "/store/meta";
const TMP: &str = "/store/tmp";

/// A file's entry as plugins report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub size: u64,
    pub sha256: String,
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

/// The names in `files/`, regular files only.
pub fn file_names() -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for dirent in fs::read_dir(FILES)? {
        let dirent = dirent?;
        if !dirent.file_type()?.is_file() {
            continue;
        }
        if let Ok(name) = dirent.file_name().into_string() {
            if check_name(&name).is_ok() {
                names.push(name);
            }
        }
    }
    Ok(names)
}

/// Modification time in nanoseconds since the Unix epoch (0 when unknown).
pub fn modified_ns(metadata: &Metadata) -> u64 {
    metadata.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos() as u64)
}

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The entry of an open file: its recorded metadata when that still matches
/// the file, else computed by hashing the file from the start.
pub fn entry_of(name: &str, mut file: &File) -> io::Result<Entry> {
    let metadata = file.metadata()?;
    let size = metadata.len();
    let modified_ns = modified_ns(&metadata);
    if let Some(sha256) = recorded_sha256(name, size, modified_ns) {
        return Ok(Entry { name: name.to_owned(), size, sha256, modified_ns });
    }
    file.seek(SeekFrom::Start(0))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(Entry { name: name.to_owned(), size, sha256: hex(&hasher.finalize()), modified_ns })
}

fn recorded_sha256(name: &str, size: u64, modified_ns: u64) -> Option<String> {
    let text = fs::read_to_string(PathBuf::from(META).join(name)).ok()?;
    let mut fields = text.split_whitespace();
    let recorded_size: u64 = fields.next()?.parse().ok()?;
    let recorded_mtime: u64 = fields.next()?.parse().ok()?;
    let sha256 = fields.next()?;
    let valid = recorded_size == size
        && recorded_mtime == modified_ns
        && sha256.len() == 64
        && sha256.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then(|| sha256.to_owned())
}

/// Records `entry` in `meta/`, atomically (temp file + rename).
pub fn record(entry: &Entry) -> io::Result<()> {
    let (mut file, path) = create_temp("meta")?;
    let written = writeln!(file, "{} {} {}", entry.size, entry.modified_ns, entry.sha256)
        .and_then(|()| fs::rename(&path, PathBuf::from(META).join(&entry.name)));
    if written.is_err() {
        let _ = fs::remove_file(&path);
    }
    written
}

/// Removes the record of `name` from `meta/`.
pub fn forget(name: &str) -> io::Result<()> {
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
