//! Tombstones: when each deleted file was deleted, so that a copy on a node
//! that was away during the delete is removed when it comes back instead of
//! being copied out again. One small file per name under `<data>/deleted/`,
//! written atomically (temp file + rename), on disk (the store's group
//! commit) before a deletion counts as recorded, and loaded at start.
//!
//! A version of a file is deleted when its modification time is not after
//! the tombstone's; a later upload of the same name is a new file.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::store::FileName;
use crate::store::sync::GroupSync;

/// This node's tombstones.
#[derive(Clone)]
pub struct Tombstones {
    dir: PathBuf,
    tmp: PathBuf,
    deleted: Arc<Mutex<HashMap<String, u64>>>,
    synced: Arc<GroupSync>,
}

impl Tombstones {
    /// Loads the tombstones under `<root>/deleted/`, creating the folder;
    /// temp files go to `<root>/tmp/`. Unreadable entries are skipped with a
    /// warning. A tombstone is made durable through `synced`.
    pub fn open(root: &Path, synced: Arc<GroupSync>) -> io::Result<Self> {
        let dir = root.join("deleted");
        std::fs::create_dir_all(&dir)?;
        let mut deleted = HashMap::new();
        for dirent in std::fs::read_dir(&dir)? {
            let path = dirent?.path();
            let name = path.file_name().and_then(|n| n.to_str()).and_then(|n| FileName::parse(n).ok());
            let at = std::fs::read_to_string(&path).ok().and_then(|t| t.trim().parse::<u64>().ok());
            match (name, at) {
                (Some(name), Some(at)) => {
                    deleted.insert(name.as_str().to_owned(), at);
                }
                _ => tracing::warn!(path = %path.display(), "ignoring an unreadable tombstone"),
            }
        }
        Ok(Self { dir, tmp: root.join("tmp"), deleted: Arc::new(Mutex::new(deleted)), synced })
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.deleted.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When `name` was deleted, if it was.
    pub fn get(&self, name: &FileName) -> Option<u64> {
        self.map().get(name.as_str()).copied()
    }

    /// Every tombstone, as (name, deleted at).
    pub fn all(&self) -> Vec<(String, u64)> {
        self.map().iter().map(|(n, at)| (n.clone(), *at)).collect()
    }

    /// Records that `name` was deleted at `at` (ns since the Unix epoch),
    /// unless a later deletion is already recorded.
    pub async fn record(&self, name: &FileName, at: u64) -> io::Result<()> {
        if self.get(name).is_some_and(|known| known >= at) {
            return Ok(());
        }
        let temp = self.tmp.join(format!("tombstone-{:016x}", rand::random::<u64>()));
        // A write cut short (a full disk) leaves no temp file behind, and the
        // tombstone in place, if any, stays whole.
        let written = match tokio::fs::write(&temp, format!("{at}\n")).await {
            Ok(()) => tokio::fs::rename(&temp, self.dir.join(name.as_str())).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(e);
        }
        let synced = self.synced.clone();
        tokio::task::spawn_blocking(move || synced.sync()).await.map_err(io::Error::other)??;
        let mut map = self.map();
        let slot = map.entry(name.as_str().to_owned()).or_insert(at);
        *slot = (*slot).max(at);
        Ok(())
    }

    /// Forgets the tombstone of `name` when a version modified at
    /// `modified_ns`, after the deletion, has been stored.
    pub async fn clear_before(&self, name: &FileName, modified_ns: u64) -> io::Result<()> {
        if self.get(name).is_none_or(|at| at >= modified_ns) {
            return Ok(());
        }
        match tokio::fs::remove_file(self.dir.join(name.as_str())).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut map = self.map();
        if map.get(name.as_str()).is_some_and(|at| *at < modified_ns) {
            map.remove(name.as_str());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> FileName {
        FileName::parse(s).unwrap()
    }

    fn open(root: &Path) -> Tombstones {
        Tombstones::open(root, Arc::new(GroupSync::open(&[root]).unwrap())).unwrap()
    }

    /// An empty store root (with its `tmp/`) and its tombstones.
    fn fresh() -> (tempfile::TempDir, Tombstones) {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("tmp")).unwrap();
        let stones = open(root.path());
        (root, stones)
    }

    #[tokio::test]
    async fn tombstones_survive_a_restart_and_keep_the_latest_deletion() {
        let (root, stones) = fresh();
        stones.record(&name("a"), 10).await.unwrap();
        stones.record(&name("a"), 5).await.unwrap();
        stones.record(&name("b"), 7).await.unwrap();
        let reopened = open(root.path());
        assert_eq!(reopened.get(&name("a")), Some(10));
        assert_eq!(reopened.get(&name("b")), Some(7));
        assert_eq!(reopened.get(&name("c")), None);
    }

    #[tokio::test]
    async fn only_a_later_version_clears_a_tombstone() {
        let (root, stones) = fresh();
        stones.record(&name("a"), 10).await.unwrap();
        stones.clear_before(&name("a"), 10).await.unwrap();
        assert_eq!(stones.get(&name("a")), Some(10), "a version from the deletion's instant stays deleted");
        stones.clear_before(&name("a"), 11).await.unwrap();
        assert_eq!(stones.get(&name("a")), None);
        assert_eq!(open(root.path()).get(&name("a")), None);
    }

    #[test]
    fn unreadable_tombstones_are_skipped() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("deleted")).unwrap();
        std::fs::write(root.path().join("deleted/x"), "not a number").unwrap();
        std::fs::write(root.path().join("deleted/y"), "42\n").unwrap();
        let stones = open(root.path());
        assert_eq!(stones.all(), vec![("y".to_owned(), 42)]);
    }
}
