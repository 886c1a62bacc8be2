//! A node's files: the names users may give them and the on-disk layout.
//!
//! ```text
//! <data>/store/                  granted to plugins as `/store`:
//!         files/<name>           complete files
//!         meta/<name>            size, mtime and BLAKE3 of a file, as plugins
//!                                of contract 0.5.0 recorded them (still read)
//!         outboard/<name>        BLAKE3 chaining values of its 256 KiB blocks
//!         tmp/                   uploads in progress; emptied at start
//! <data>/node/                   the host's own state, never granted:
//!         deleted/<name>         when the file was deleted (tombstones)
//!         alive                  when the node last finished a repair pass
//!         quarantine/<v>/<name>  copies kept through a long absence that
//!                                no holder confirmed (`files::tombstones`)
//!         tmp/                   tombstones being written; emptied at start
//!         outbox.redb            messages waiting for the broker (`crate::mom`)
//!         journal/segment-N      small uploads made durable before their
//!                                commit is synced (`journal`)
//!         records                size, mtime and BLAKE3 of each file (`records`)
//! ```
//! Only plugins read and write files; the host creates
//! the folders and keeps its state where no plugin reaches it, so that an
//! upload plugin, which writes its store, cannot touch the tombstones or
//! the outbox. A data folder in the layout of earlier versions (all of it
//! at the top) is moved into this one at start.

pub mod digest;
pub mod journal;
mod name;
pub mod records;
pub mod space;
pub mod sync;

use std::io;
use std::path::{Path, PathBuf};

pub use name::{FileName, MAX_NAME_BYTES, NameError, url_segment};

/// What plugins see, under `<data>/store/`.
const STORE_FOLDERS: [&str; 4] = ["files", "meta", "outboard", "tmp"];
/// The host's state, under `<data>/node/`.
const NODE_ENTRIES: [&str; 2] = ["deleted", "outbox.redb"];

/// The folders of a node's data folder, created and ready.
#[derive(Debug, Clone)]
pub struct StoreDir {
    store: PathBuf,
    state: PathBuf,
}

impl StoreDir {
    /// Creates the layout under `data` if missing (moving an earlier
    /// version's layout into it) and removes leftovers of uploads and
    /// tombstones that were being written when the node last stopped.
    pub fn prepare(data: &Path) -> io::Result<Self> {
        let (store, state) = (data.join("store"), data.join("node"));
        upgrade(data, &store, &state)?;
        for sub in STORE_FOLDERS {
            std::fs::create_dir_all(store.join(sub))?;
        }
        std::fs::create_dir_all(state.join("tmp"))?;
        for tmp in [store.join("tmp"), state.join("tmp")] {
            for leftover in std::fs::read_dir(tmp)? {
                let path = leftover?.path();
                if path.is_file() {
                    std::fs::remove_file(&path)?;
                    tracing::info!(path = %path.display(), "removed an unfinished write");
                }
            }
        }
        Ok(Self { store, state })
    }

    /// The folder granted to plugins as `/store`.
    pub fn root(&self) -> &Path {
        &self.store
    }

    /// The host's own folder: tombstones and the outbox.
    pub fn state(&self) -> &Path {
        &self.state
    }
}

/// Moves the entries of the earlier layout (everything directly under
/// `data`) to their places. An old entry that is an empty folder, or the old
/// `tmp/` (emptied at start anyway), is removed when its new place exists
/// (an older version run again recreates them empty). Any other entry found
/// in both places is left for a person to sort out: nothing is overwritten.
/// A symbolic link is moved as a link.
fn upgrade(data: &Path, store: &Path, state: &Path) -> io::Result<()> {
    let moves = STORE_FOLDERS.iter().map(|e| (e, store)).chain(NODE_ENTRIES.iter().map(|e| (e, state)));
    for (entry, to) in moves {
        let (old, new) = (data.join(entry), to.join(entry));
        let Ok(found) = std::fs::symlink_metadata(&old) else { continue };
        if std::fs::symlink_metadata(&new).is_ok() {
            if *entry == "tmp" && found.is_dir() {
                std::fs::remove_dir_all(&old)?;
                continue;
            }
            if found.is_dir() && std::fs::remove_dir(&old).is_ok() {
                continue; // it was empty
            }
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("both {} and {} exist: keep one of them", old.display(), new.display()),
            ));
        }
        std::fs::create_dir_all(to)?;
        std::fs::rename(&old, &new)?;
        tracing::info!(from = %old.display(), to = %new.display(), "moved into this version's layout");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_folder_gets_the_layout_and_leftover_writes_are_removed() {
        let data = tempfile::tempdir().unwrap();
        let dir = StoreDir::prepare(data.path()).unwrap();
        assert_eq!(dir.root(), data.path().join("store"));
        assert_eq!(dir.state(), data.path().join("node"));
        std::fs::write(dir.root().join("tmp/upload-1"), b"half").unwrap();
        std::fs::write(dir.state().join("tmp/tombstone-1"), b"12").unwrap();
        std::fs::write(dir.root().join("files/kept"), b"whole").unwrap();
        let dir = StoreDir::prepare(data.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.root().join("tmp")).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(dir.state().join("tmp")).unwrap().count(), 0);
        assert_eq!(std::fs::read(dir.root().join("files/kept")).unwrap(), b"whole");
    }

    #[test]
    fn an_earlier_layout_is_moved_with_nothing_lost_and_a_clash_is_refused() {
        let data = tempfile::tempdir().unwrap();
        for sub in ["files", "meta", "outboard", "tmp", "deleted"] {
            std::fs::create_dir(data.path().join(sub)).unwrap();
        }
        std::fs::write(data.path().join("files/a.txt"), b"a").unwrap();
        std::fs::write(data.path().join("meta/a.txt"), b"record").unwrap();
        std::fs::write(data.path().join("deleted/b.txt"), b"17").unwrap();
        std::fs::write(data.path().join("outbox.redb"), b"queued").unwrap();
        let dir = StoreDir::prepare(data.path()).unwrap();
        assert_eq!(std::fs::read(dir.root().join("files/a.txt")).unwrap(), b"a");
        assert_eq!(std::fs::read(dir.root().join("meta/a.txt")).unwrap(), b"record");
        assert_eq!(std::fs::read(dir.state().join("deleted/b.txt")).unwrap(), b"17");
        assert_eq!(std::fs::read(dir.state().join("outbox.redb")).unwrap(), b"queued");
        let mut left: Vec<_> = std::fs::read_dir(data.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        left.sort();
        assert_eq!(left, ["node", "store"]);

        // An older version run again recreates its folders empty: they go.
        for sub in ["files", "meta", "outboard", "tmp", "deleted"] {
            std::fs::create_dir(data.path().join(sub)).unwrap();
        }
        std::fs::write(data.path().join("tmp/upload-1"), b"half").unwrap();
        StoreDir::prepare(data.path()).unwrap();
        let mut left: Vec<_> = std::fs::read_dir(data.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        left.sort();
        assert_eq!(left, ["node", "store"]);

        // What it wrote meanwhile is not thrown away or overwritten.
        std::fs::create_dir(data.path().join("files")).unwrap();
        std::fs::write(data.path().join("files/b.txt"), b"b").unwrap();
        let clash = StoreDir::prepare(data.path()).unwrap_err();
        assert!(clash.to_string().contains("keep one of them"), "{clash}");
        assert!(data.path().join("files/b.txt").exists() && dir.root().join("files/a.txt").exists());
    }

    #[test]
    fn an_upgrade_cut_short_finishes_at_the_next_start() {
        let data = tempfile::tempdir().unwrap();
        // files/ was moved, meta/ and deleted/ were not yet.
        std::fs::create_dir_all(data.path().join("store/files")).unwrap();
        std::fs::write(data.path().join("store/files/a.txt"), b"a").unwrap();
        std::fs::create_dir(data.path().join("meta")).unwrap();
        std::fs::write(data.path().join("meta/a.txt"), b"record").unwrap();
        std::fs::create_dir(data.path().join("deleted")).unwrap();
        std::fs::write(data.path().join("deleted/b.txt"), b"17").unwrap();
        let dir = StoreDir::prepare(data.path()).unwrap();
        assert_eq!(std::fs::read(dir.root().join("files/a.txt")).unwrap(), b"a");
        assert_eq!(std::fs::read(dir.root().join("meta/a.txt")).unwrap(), b"record");
        assert_eq!(std::fs::read(dir.state().join("deleted/b.txt")).unwrap(), b"17");
    }
}
