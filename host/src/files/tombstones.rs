//! Tombstones: when each deleted file was deleted, so that a copy on a node
//! that was away during the delete is removed when it comes back instead of
//! being copied out again. One small file per name under `<data>/deleted/`,
//! written atomically (temp file + rename), on disk (the store's group
//! commit) before a deletion counts as recorded, and loaded at start.
//!
//! A version of a file is deleted when its modification time is not after
//! the tombstone's; a later upload of the same name is a new file.
//!
//! **Tombstones end** (Cassandra's `gc_grace_seconds`): a tombstone older
//! than the grace period is dropped once every holder of its name has it
//! or has no copy (see `repair`). What keeps a deleted file from coming
//! back afterwards is the same grace: a node keeps, in `<root>/alive`, when
//! it last finished a repair pass, and a node that starts more than the
//! grace after that was **away too long**: a tombstone it missed may be
//! gone everywhere. It says so (log, `/metrics`), and every copy it had
//! from before waits, unserved and unannounced, until a holder confirms
//! that version; a copy no holder has is moved out of the store to
//! `<root>/quarantine/`, not brought back and not lost.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::store::FileName;
use crate::store::digest::{self, KeyRange, Leaves, Plan, Sum};
use crate::store::sync::GroupSync;

/// This node's tombstones.
#[derive(Clone)]
pub struct Tombstones {
    root: PathBuf,
    dir: PathBuf,
    tmp: PathBuf,
    deleted: Arc<Mutex<Deleted>>,
    synced: Arc<GroupSync>,
    grace: Duration,
    returned: Arc<Mutex<Returned>>,
    /// A whole repair pass settled since this start: the node met its
    /// holders, so a graceful stop may keep its time (see `mark_left`).
    met_holders: Arc<std::sync::atomic::AtomicBool>,
}

/// The tombstones in memory: when each name was deleted, with its key in
/// the ring, and their digests by leaves of the key space.
#[derive(Default)]
struct Deleted {
    at: HashMap<String, (u64, u64)>,
    leaves: Leaves,
}

impl Deleted {
    /// Records `name` as deleted at `at` (replacing what was recorded).
    fn set(&mut self, name: &str, at: u64) {
        let key = crate::chord::Id::hash(name).0;
        if let Some((old, _)) = self.at.insert(name.to_owned(), (at, key)) {
            self.leaves.remove(key, digest::deletion_item(name, old));
        }
        self.leaves.add(key, digest::deletion_item(name, at));
    }

    /// Forgets the deletion of `name`.
    fn remove(&mut self, name: &str) {
        if let Some((at, key)) = self.at.remove(name) {
            self.leaves.remove(key, digest::deletion_item(name, at));
        }
    }
}

/// After an absence longer than the grace: which old copies are confirmed.
#[derive(Default)]
struct Returned {
    /// When the node was last known to run (ns), if it was away too long.
    away_from: Option<u64>,
    /// The newest version a copy kept through the absence can have: this
    /// start's time, plus the most a peer's clock may run ahead (versions
    /// are hybrid times). Not the time last known alive, since copies
    /// written after the last stamp (a crash, a stop between passes) are
    /// as old to the ring as those before it; whatever is written here
    /// from the start on is confirmed as it is stored.
    kept_until: u64,
    /// Names whose copy here a holder has confirmed since.
    confirmed: HashSet<String>,
}

/// Where a node keeps when it last finished a repair pass.
const ALIVE: &str = "alive";

impl Tombstones {
    /// Loads the tombstones under `<root>/deleted/`, creating the folder;
    /// temp files go to `<root>/tmp/`. Unreadable entries are skipped with a
    /// warning. A tombstone is made durable through `synced`. A tombstone
    /// may end `grace` after its deletion, and a node away longer than
    /// `grace` has its old copies confirmed before it serves them.
    pub fn open(root: &Path, synced: Arc<GroupSync>, grace: Duration) -> io::Result<Self> {
        let dir = root.join("deleted");
        std::fs::create_dir_all(&dir)?;
        std::fs::create_dir_all(root.join("tmp"))?;
        let mut deleted = Deleted::default();
        for dirent in std::fs::read_dir(&dir)? {
            let path = dirent?.path();
            let name = path.file_name().and_then(|n| n.to_str()).and_then(|n| FileName::parse(n).ok());
            let at = std::fs::read_to_string(&path).ok().and_then(|t| t.trim().parse::<u64>().ok());
            match (name, at) {
                (Some(name), Some(at)) => deleted.set(name.as_str(), at),
                _ => tracing::warn!(path = %path.display(), "ignoring an unreadable tombstone"),
            }
        }
        let mut returned = Returned::default();
        let alive = std::fs::read_to_string(root.join(ALIVE)).ok().and_then(|t| t.trim().parse::<u64>().ok());
        if let Some(alive) = alive {
            let away = Duration::from_nanos(crate::clock::wall_ns().saturating_sub(alive));
            if away > grace {
                tracing::warn!(
                    away = %humantime::format_duration(Duration::from_secs(away.as_secs())),
                    grace = %humantime::format_duration(grace),
                    "this node was away longer than the tombstone grace: deletions made meanwhile may be \
                     forgotten elsewhere, so each copy kept here is served again only once a holder \
                     confirms it, and one nobody has is moved to quarantine/"
                );
                returned.away_from = Some(alive);
                returned.kept_until =
                    crate::clock::wall_ns().saturating_add(crate::clock::max_offset().as_nanos() as u64);
            }
        }
        let stones = Self {
            root: root.to_owned(),
            dir,
            tmp: root.join("tmp"),
            deleted: Arc::new(Mutex::new(deleted)),
            synced,
            grace,
            returned: Arc::new(Mutex::new(returned)),
            met_holders: Arc::default(),
        };
        if alive.is_none() {
            stones.mark_alive()?;
        }
        Ok(stones)
    }

    fn returned(&self) -> std::sync::MutexGuard<'_, Returned> {
        self.returned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a tombstone of time `at` is past the grace period.
    pub fn past_grace(&self, at: u64) -> bool {
        Duration::from_nanos(crate::clock::wall_ns().saturating_sub(at)) > self.grace
    }

    /// When this node was last known to run, if it came back after longer
    /// than the grace and not every old copy is settled yet.
    pub fn away_from(&self) -> Option<u64> {
        self.returned().away_from
    }

    /// Whether this node's copy of `name`, modified at `modified_ns`, is
    /// from before an absence longer than the grace and not confirmed by a
    /// holder yet: such a copy is neither served nor announced.
    pub fn unconfirmed(&self, name: &str, modified_ns: u64) -> bool {
        let returned = self.returned();
        returned.away_from.is_some() && modified_ns <= returned.kept_until && !returned.confirmed.contains(name)
    }

    /// A holder has this node's version of `name` (or it was just written
    /// here): the copy is served again.
    pub fn confirm(&self, name: &str) {
        let mut returned = self.returned();
        if returned.away_from.is_some() {
            returned.confirmed.insert(name.to_owned());
        }
    }

    /// A repair pass found no unconfirmed copy left: this node is no
    /// longer back from an absence, and its time alive is kept again.
    pub fn settled(&self) -> io::Result<()> {
        let was = std::mem::take(&mut *self.returned());
        if was.away_from.is_some() {
            tracing::info!(confirmed = was.confirmed.len(), "every copy kept through the absence is settled");
        }
        self.mark_alive()?;
        self.met_holders.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// The node stops gracefully, its keys handed over: it heard every
    /// deletion until now, so its absence counts from now, provided a whole
    /// repair pass settled since it started (a node that never joined, or
    /// came back and stops before meeting its holders, keeps the stamp of
    /// its last pass).
    pub fn mark_left(&self) -> io::Result<()> {
        if self.met_holders.load(std::sync::atomic::Ordering::Relaxed) { self.mark_alive() } else { Ok(()) }
    }

    /// Keeps now as the last time this node was known to run (unless it
    /// came back from a long absence and is not settled yet). Not synced:
    /// a stamp lost in a crash only makes the next start more careful.
    pub fn mark_alive(&self) -> io::Result<()> {
        if self.away_from().is_some() {
            return Ok(());
        }
        let temp = self.tmp.join(format!("alive-{:016x}", rand::random::<u64>()));
        let written = std::fs::write(&temp, format!("{}\n", crate::clock::wall_ns()))
            .and_then(|()| std::fs::rename(&temp, self.root.join(ALIVE)));
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written
    }

    /// Where copies no holder confirmed are moved.
    pub fn quarantine(&self) -> PathBuf {
        self.root.join("quarantine")
    }

    fn map(&self) -> std::sync::MutexGuard<'_, Deleted> {
        self.deleted.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When `name` was deleted, if it was.
    pub fn get(&self, name: &FileName) -> Option<u64> {
        self.map().at.get(name.as_str()).map(|(at, _)| *at)
    }

    /// Every tombstone, as (name, deleted at).
    pub fn all(&self) -> Vec<(String, u64)> {
        self.map().at.iter().map(|(n, (at, _))| (n.clone(), *at)).collect()
    }

    /// The sums of the tombstones over the ranges of `plan` (see
    /// `store::digest`).
    pub fn sums(&self, plan: &Plan) -> Vec<Sum> {
        let map = self.map();
        plan.sums(
            |leaf| map.leaves.leaf(leaf),
            |scanned, found| {
                for (name, (at, key)) in &map.at {
                    if scanned.contains(digest::leaf_of(*key)) {
                        found(*key, digest::deletion_item(name, *at));
                    }
                }
            },
        )
    }

    /// The tombstones whose names' keys fall in one of `ranges`, as (name,
    /// deleted at).
    pub fn in_ranges(&self, ranges: &[KeyRange]) -> Vec<(String, u64)> {
        let map = self.map();
        let within = |key: u64| ranges.iter().any(|r| r.contains(key));
        map.at.iter().filter(|(_, (_, key))| within(*key)).map(|(n, (at, _))| (n.clone(), *at)).collect()
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
        self.sync().await?;
        let mut map = self.map();
        if map.at.get(name.as_str()).is_none_or(|(known, _)| *known < at) {
            map.set(name.as_str(), at);
        }
        Ok(())
    }

    /// Makes what was written to the node's folders durable (group commit).
    pub async fn sync(&self) -> io::Result<()> {
        let synced = self.synced.clone();
        tokio::task::spawn_blocking(move || synced.sync()).await.map_err(io::Error::other)?
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
        if map.at.get(name.as_str()).is_some_and(|(at, _)| *at < modified_ns) {
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

    const GRACE: Duration = Duration::from_secs(3600);

    fn open(root: &Path) -> Tombstones {
        Tombstones::open(root, Arc::new(GroupSync::open(&[root]).unwrap()), GRACE).unwrap()
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
    fn a_tombstone_is_past_grace_only_after_it() {
        let (_root, stones) = fresh();
        let now = crate::clock::wall_ns();
        assert!(!stones.past_grace(now));
        assert!(!stones.past_grace(now - (GRACE.as_nanos() as u64) / 2));
        assert!(stones.past_grace(now - 2 * GRACE.as_nanos() as u64));
    }

    #[test]
    fn a_node_back_after_the_grace_waits_for_its_old_copies_to_be_confirmed() {
        let (root, stones) = fresh();
        assert_eq!(stones.away_from(), None, "a first start is not a return");
        assert!(!stones.unconfirmed("a", 1));
        // Last alive two graces ago.
        let alive = crate::clock::wall_ns() - 2 * GRACE.as_nanos() as u64;
        std::fs::write(root.path().join(ALIVE), format!("{alive}\n")).unwrap();
        let back = open(root.path());
        assert_eq!(back.away_from(), Some(alive));
        assert!(back.unconfirmed("a", alive), "a copy from before the absence");
        let stopped = alive + GRACE.as_nanos() as u64;
        assert!(back.unconfirmed("a", stopped), "a copy written after the last stamp, before a stop");
        let offset = crate::clock::max_offset().as_nanos() as u64;
        assert!(!back.unconfirmed("a", crate::clock::wall_ns() + 2 * offset), "a version written since the start");
        back.confirm("a");
        assert!(!back.unconfirmed("a", alive));
        assert!(back.unconfirmed("b", alive));
        back.mark_alive().unwrap();
        assert_eq!(open(root.path()).away_from(), Some(alive), "unsettled, the absence is kept across a restart");
        let stamp = || std::fs::read_to_string(root.path().join(ALIVE)).unwrap();
        let before = stamp();
        back.mark_left().unwrap();
        assert_eq!(stamp(), before, "a stop before any settled pass keeps the last pass's time");
        back.settled().unwrap();
        assert_eq!(back.away_from(), None);
        let settled = stamp();
        std::thread::sleep(Duration::from_millis(2));
        back.mark_left().unwrap();
        assert_ne!(stamp(), settled, "a stop after a settled pass keeps its own time");
        assert!(!back.unconfirmed("b", alive));
        assert_eq!(open(root.path()).away_from(), None, "settled, the stamp is fresh");
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
