//! A node's files: the names users may give them and the on-disk layout the
//! plugins are granted.
//!
//! ```text
//! <data>/files/<name>   complete files
//! <data>/meta/<name>    recorded size, mtime and BLAKE3 of each file
//! <data>/outboard/<name> BLAKE3 chaining values of each file's 256 KiB blocks
//! <data>/tmp/           uploads in progress; emptied at start
//! <data>/deleted/<name> when the file was deleted (tombstones, host-written)
//! <data>/outbox.redb    messages waiting for the broker (`crate::mom`, host-written)
//! ```
//! Only plugins read and write files and their records; the host creates
//! the folders and keeps the tombstones (`crate::files::Tombstones`).

mod name;

use std::io;
use std::path::{Path, PathBuf};

pub use name::{FileName, MAX_NAME_BYTES, NameError};

/// The folders of a node's store, created and ready.
#[derive(Debug, Clone)]
pub struct StoreDir {
    root: PathBuf,
}

impl StoreDir {
    /// Creates the layout under `root` if missing and removes leftovers of
    /// uploads that were in progress when the node last stopped.
    pub fn prepare(root: &Path) -> io::Result<Self> {
        for sub in ["files", "meta", "outboard", "tmp"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        for leftover in std::fs::read_dir(root.join("tmp"))? {
            let path = leftover?.path();
            if path.is_file() {
                std::fs::remove_file(&path)?;
                tracing::info!(path = %path.display(), "removed an unfinished upload");
            }
        }
        Ok(Self { root: root.to_path_buf() })
    }

    /// The folder granted to plugins as `/store`.
    pub fn root(&self) -> &Path {
        &self.root
    }
}
