//! The host's own index of its store: every complete file's entry (name,
//! size, hash, modification time), in memory, so that looking a name up is
//! one hash-map probe and a listing is a copy of memory, whatever the number
//! of files. Nothing is listed per request.
//!
//! - It is filled from the index plugin's listing once: when the node starts
//!   (or on first use) and when another index plugin takes over.
//! - Every write and removal made through the plugins updates it as it
//!   completes (the upload plugin's `finish` answers the entry).
//! - Changes made behind the plugins' back (a file copied in, replaced or
//!   removed by hand) are seen by a watch on the store's `files/` folder
//!   (inotify, through `notify`): a name whose file no longer matches its
//!   entry (size, modification time) becomes *unsure*, and only the unsure
//!   names are read again (through the download plugin), not the store.
//!   The watch also sees the plugins' own writes; those match their entries
//!   once recorded and cost nothing more.
//! - Without the watch (the system refused it), changes by hand go unseen,
//!   so every listing asks the plugin again, as a store without an index would.
//!
//! A listing taken to fill the index races with writes that complete while
//! it runs: what changed meanwhile is recorded and wins over the listing.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use notify::{RecursiveMode, Watcher};

use super::{FileEntry, PluginError};
use crate::integrity::Digest;
use crate::store::digest::{self, KeyRange, LeafSet, Leaves, Plan, Sum};

/// More unsure names than this are settled by one listing of the store
/// instead of reading each again.
pub const SETTLE_BY_NAME_AT_MOST: usize = 256;

/// A listing of the store: every entry the index holds, and the index's
/// generation when it was taken (a listing of the same generation is the
/// same listing).
#[derive(Clone)]
pub struct Listing {
    /// The index's generation when the listing was taken.
    pub generation: u64,
    /// The entries, in no particular order.
    pub entries: Arc<Vec<FileEntry>>,
}

/// A listing of the store on its way into the index, page by page: kept
/// as the index keeps it, so that no copy of the whole listing is made.
#[derive(Default)]
pub struct Filling {
    files: HashMap<String, Meta>,
}

impl Filling {
    /// One listed entry; a name listed twice keeps its newer entry.
    pub fn add(&mut self, entry: FileEntry) {
        let meta = Meta::of(&entry);
        match self.files.get(&entry.name) {
            Some(held) if held.modified_ns > meta.modified_ns => {}
            _ => {
                self.files.insert(entry.name, meta);
            }
        }
    }

    /// Entries listed so far.
    pub fn len(&self) -> usize {
        self.files.len()
    }
}

impl FromIterator<FileEntry> for Filling {
    fn from_iter<I: IntoIterator<Item = FileEntry>>(entries: I) -> Self {
        let mut filling = Filling::default();
        entries.into_iter().for_each(|e| filling.add(e));
        filling
    }
}

/// What the index says of one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The store's entry for it, or none.
    Known(Option<FileEntry>),
    /// The index cannot say: not filled yet, or the file changed behind the
    /// plugins' back since it was last read.
    Unsure,
}

/// One file's entry without its name (the index's key), and the name's
/// key in the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    size: u64,
    blake3: Option<Digest>,
    modified_ns: u64,
    key: u64,
}

impl Meta {
    fn of(entry: &FileEntry) -> Self {
        let key = crate::chord::Id::hash(&entry.name).0;
        Self { size: entry.size, blake3: entry.blake3, modified_ns: entry.modified_ns, key }
    }

    /// This version's item in the store's digests.
    fn item(&self, name: &str) -> u128 {
        digest::file_item(name, self.blake3.as_ref().map(|d| &d.0))
    }

    fn entry(self, name: &str) -> FileEntry {
        FileEntry { name: name.to_owned(), size: self.size, blake3: self.blake3, modified_ns: self.modified_ns }
    }
}

#[derive(Default)]
struct State {
    /// Every file's entry; none until the first listing filled it.
    files: Option<HashMap<String, Meta>>,
    /// While a listing is taken to fill the index: the names changed since
    /// it began, with what they became (it may or may not show them).
    since_fill: Option<HashMap<String, Option<Meta>>>,
    /// Names changed behind the plugins' back, to read again.
    unsure: BTreeSet<String>,
    /// The whole store must be listed again (the watch lost events).
    stale: bool,
    /// Bumped on every change.
    generation: u64,
    /// The listing of the current generation, once asked for.
    snapshot: Option<Listing>,
    /// The digests of `files` by leaves of the key space.
    leaves: Leaves,
}

impl State {
    fn changed(&mut self) {
        self.generation += 1;
        self.snapshot = None;
    }

    /// What the index holds for `name` now, a fill in progress included.
    fn current(&self, name: &str) -> Option<Option<Meta>> {
        if let Some(changed) = self.since_fill.as_ref().and_then(|m| m.get(name)) {
            return Some(*changed);
        }
        self.files.as_ref().map(|files| files.get(name).copied())
    }

    fn set(&mut self, name: &str, meta: Option<Meta>) {
        if let Some(changed) = &mut self.since_fill {
            changed.insert(name.to_owned(), meta);
        }
        if let Some(files) = &mut self.files {
            let old = match meta {
                Some(meta) => files.insert(name.to_owned(), meta),
                None => files.remove(name),
            };
            if let Some(old) = old {
                self.leaves.remove(old.key, old.item(name));
            }
            if let Some(meta) = meta {
                self.leaves.add(meta.key, meta.item(name));
            }
        }
        self.changed();
    }

    /// Marks `name` unsure unless the file on disk matches what is held.
    fn check(&mut self, name: &str, on_disk: Option<(u64, u64)>) {
        let held = match self.current(name) {
            Some(held) => held,
            // The first listing is on its way, and may have passed the
            // name: it is read again once the listing is in.
            None if self.since_fill.is_some() => {
                if self.unsure.insert(name.to_owned()) {
                    self.changed();
                }
                return;
            }
            None => return,
        };
        let matches = match (held, on_disk) {
            (Some(meta), Some((size, modified_ns))) => meta.size == size && meta.modified_ns == modified_ns,
            (None, None) => true,
            _ => false,
        };
        if matches {
            self.unsure.remove(name);
        } else if self.unsure.insert(name.to_owned()) {
            self.changed();
        }
    }
}

/// The host's index of one store.
pub struct StoreIndex {
    files_dir: PathBuf,
    state: Arc<Mutex<State>>,
    /// Held while the index is filled or unsure names are read again, so
    /// that requests that need it together wait for one answer.
    settling: tokio::sync::Mutex<()>,
    /// Fills that ended, and the last one that failed: the requests that
    /// waited for a fill share its failure too.
    fills: AtomicU64,
    failed: Mutex<Option<(u64, PluginError)>>,
    watcher: Option<notify::RecommendedWatcher>,
}

impl StoreIndex {
    /// An empty index of the store whose complete files are in `files_dir`,
    /// watching that folder for changes made behind the plugins' back.
    pub fn watching(files_dir: &Path) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let (seen, dir) = (state.clone(), files_dir.to_path_buf());
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if event.kind.is_access() => {}
            Ok(event) if !event.need_rescan() && !event.paths.is_empty() => {
                for path in &event.paths {
                    if path.parent() == Some(dir.as_path())
                        && let Some(name) = path.file_name().and_then(|n| n.to_str())
                    {
                        // Read under the lock, so that a write recorded
                        // meanwhile is compared with the disk after it.
                        let mut state = lock(&seen);
                        state.check(name, on_disk(path));
                    }
                }
            }
            // Lost or unnamed events: nothing can be trusted but a listing.
            _ => {
                let mut state = lock(&seen);
                state.stale = true;
                state.changed();
            }
        })
        .and_then(|mut w| w.watch(files_dir, RecursiveMode::NonRecursive).map(|()| w));
        let watcher = match watcher {
            Ok(watcher) => Some(watcher),
            Err(e) => {
                tracing::warn!(folder = %files_dir.display(), "cannot watch the store, every listing will ask the index plugin: {e}");
                None
            }
        };
        Self {
            files_dir: files_dir.to_path_buf(),
            state,
            settling: tokio::sync::Mutex::new(()),
            fills: AtomicU64::new(0),
            failed: Mutex::new(None),
            watcher,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// What the index says of `name`.
    pub fn lookup(&self, name: &str) -> Lookup {
        let state = self.state();
        if state.stale || self.watcher.is_none() || state.unsure.contains(name) {
            return Lookup::Unsure;
        }
        match state.current(name) {
            Some(meta) => Lookup::Known(meta.map(|m| m.entry(name))),
            None => Lookup::Unsure,
        }
    }

    /// What the index holds for `name`, sure or not (none before it is filled).
    pub fn held(&self, name: &str) -> Option<FileEntry> {
        self.state().current(name).flatten().map(|m| m.entry(name))
    }

    /// Whether the store has been listed once (the index holds every file).
    pub fn filled(&self) -> bool {
        self.len().is_some()
    }

    /// Whether the whole store must be listed before the index can answer.
    pub fn needs_fill(&self) -> bool {
        let state = self.state();
        state.files.is_none() || state.stale || self.watcher.is_none()
    }

    /// The names changed behind the plugins' back, to read again.
    pub fn unsure(&self) -> Vec<String> {
        self.state().unsure.iter().cloned().collect()
    }

    /// The listing of every entry held, whatever is unsure (none before the
    /// index is filled); built once per generation.
    pub fn listing(&self) -> Option<Listing> {
        let mut state = self.state();
        if let Some(listing) = &state.snapshot {
            return Some(listing.clone());
        }
        let files = state.files.as_ref()?;
        let entries: Vec<FileEntry> = files.iter().map(|(name, meta)| meta.entry(name)).collect();
        let listing = Listing { generation: state.generation, entries: Arc::new(entries) };
        state.snapshot = Some(listing.clone());
        Some(listing)
    }

    /// Held while filling or settling (see [`StoreIndex::fill`]).
    pub async fn one_at_a_time(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.settling.lock().await
    }

    /// How many fills have ended so far.
    pub fn fills_ended(&self) -> u64 {
        self.fills.load(Ordering::SeqCst)
    }

    /// The failure of the last fill, if it failed and ended after the
    /// `seen`-th: a request that waited for it shares it.
    pub fn failure_since(&self, seen: u64) -> Option<PluginError> {
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed.as_ref().filter(|(n, _)| *n > seen && *n == self.fills_ended()).map(|(_, e)| e.clone())
    }

    /// A listing of the whole store is about to be taken: changes from now
    /// on are kept to be applied over it.
    pub fn begin_fill(&self) {
        let mut state = self.state();
        state.since_fill = Some(HashMap::new());
    }

    /// The listing begun with [`StoreIndex::begin_fill`] ended: on success,
    /// the index holds what it listed, with the changes made since it
    /// began over it. A failure to share with the requests that waited for
    /// it comes with its error; one abandoned has none.
    pub fn end_fill(&self, listed: Result<Filling, Option<&PluginError>>) {
        let number = self.fills.fetch_add(1, Ordering::SeqCst) + 1;
        let mut state = self.state();
        let changed = state.since_fill.take().unwrap_or_default();
        let mut files = match listed {
            Ok(filling) => filling.files,
            Err(e) => {
                drop(state);
                if let Some(e) = e {
                    *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some((number, e.clone()));
                }
                return;
            }
        };
        for (name, meta) in changed {
            match meta {
                Some(meta) => files.insert(name, meta),
                None => files.remove(&name),
            };
        }
        let mut leaves = Leaves::default();
        for (name, meta) in &files {
            leaves.add(meta.key, meta.item(name));
        }
        state.files = Some(files);
        state.leaves = leaves;
        state.stale = false;
        state.changed();
    }

    /// The sums of the files held over the ranges of `plan` (none before
    /// the index is filled).
    pub fn sums(&self, plan: &Plan) -> Option<Vec<Sum>> {
        let state = self.state();
        let files = state.files.as_ref()?;
        Some(plan.sums(
            |leaf| state.leaves.leaf(leaf),
            |scanned, found| {
                for (name, meta) in files {
                    if scanned.contains(digest::leaf_of(meta.key)) {
                        found(meta.key, meta.item(name));
                    }
                }
            },
        ))
    }

    /// The entries held whose names' keys fall in one of `ranges` (none
    /// before the index is filled).
    pub fn entries_in(&self, ranges: &[KeyRange]) -> Option<Vec<FileEntry>> {
        let mut leaves = LeafSet::default();
        for range in ranges {
            range.run().leaves().for_each(|leaf| leaves.insert(leaf));
        }
        let state = self.state();
        let files = state.files.as_ref()?;
        let within = |key: u64| leaves.contains(digest::leaf_of(key)) && ranges.iter().any(|r| r.contains(key));
        Some(files.iter().filter(|(_, meta)| within(meta.key)).map(|(name, meta)| meta.entry(name)).collect())
    }

    /// `entry` was stored through the upload plugin.
    pub fn stored(&self, entry: &FileEntry) {
        self.recorded(&entry.name, Some(Meta::of(entry)));
    }

    /// `name` was removed through the upload plugin.
    pub fn removed(&self, name: &str) {
        self.recorded(name, None);
    }

    /// A write or removal through the plugins made `name` what `meta` says.
    /// The watch saw the change on disk before or after this: if before, it
    /// marked the name unsure, and the disk is compared again now (one
    /// stat); if after, the watch compares it with what is recorded here.
    fn recorded(&self, name: &str, meta: Option<Meta>) {
        let mut state = self.state();
        state.set(name, meta);
        if state.unsure.contains(name) {
            state.check(name, on_disk(&self.files_dir.join(name)));
        }
    }

    /// `name`, unsure, was read again: this is its entry.
    pub fn settled(&self, name: &str, entry: Option<&FileEntry>) {
        let mut state = self.state();
        if state.current(name) != Some(entry.map(Meta::of)) {
            state.set(name, entry.map(Meta::of));
        }
        if state.unsure.remove(name) {
            state.changed();
        }
    }

    /// Everything held may be wrong (another index plugin took over without
    /// a listing of its own): the next use lists the store again.
    pub fn forget_all(&self) {
        let mut state = self.state();
        state.stale = true;
        state.changed();
    }

    /// How many files the index holds (none before it is filled).
    pub fn len(&self) -> Option<usize> {
        self.state().files.as_ref().map(HashMap::len)
    }
}

/// The size and modification time (ns) of the regular file at `path`, if any.
fn on_disk(path: &Path) -> Option<(u64, u64)> {
    let metadata = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
    let modified_ns = metadata
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64);
    Some((metadata.len(), modified_ns))
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, size: u64, modified_ns: u64) -> FileEntry {
        FileEntry {
            name: name.into(),
            size,
            blake3: Some(Digest(*blake3::hash(name.as_bytes()).as_bytes())),
            modified_ns,
        }
    }

    /// Polls `done` for up to 10 s (the watch answers within milliseconds).
    fn until(mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "the watch never saw the change");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    fn filled(dir: &Path, entries: Vec<FileEntry>) -> StoreIndex {
        let index = StoreIndex::watching(dir);
        index.begin_fill();
        index.end_fill(Ok(entries.into_iter().collect()));
        index
    }

    #[test]
    fn unfilled_it_is_unsure_of_everything() {
        let dir = tempfile::tempdir().unwrap();
        let index = StoreIndex::watching(dir.path());
        assert!(index.needs_fill());
        assert_eq!(index.lookup("a"), Lookup::Unsure);
        assert!(index.listing().is_none());
    }

    #[test]
    fn writes_and_removals_are_answered_without_listing() {
        let dir = tempfile::tempdir().unwrap();
        let index = filled(dir.path(), vec![entry("a", 1, 10)]);
        assert!(!index.needs_fill());
        let first = index.listing().unwrap();
        assert_eq!(first.entries.len(), 1);
        assert_eq!(index.lookup("a"), Lookup::Known(Some(entry("a", 1, 10))));
        assert_eq!(index.lookup("b"), Lookup::Known(None));
        // Stored as the upload plugin would: the file is on disk first.
        std::fs::write(dir.path().join("b"), b"bb").unwrap();
        let on = on_disk(&dir.path().join("b")).unwrap();
        index.stored(&entry("b", on.0, on.1));
        assert_eq!(index.lookup("b"), Lookup::Known(Some(entry("b", 2, on.1))));
        let second = index.listing().unwrap();
        assert!(second.generation > first.generation);
        assert_eq!(second.entries.len(), 2);
        std::fs::remove_file(dir.path().join("b")).unwrap();
        index.removed("b");
        assert_eq!(index.lookup("b"), Lookup::Known(None));
        assert_eq!(index.len(), Some(1));
    }

    #[test]
    fn a_change_by_hand_makes_only_that_name_unsure_until_settled() {
        let dir = tempfile::tempdir().unwrap();
        let index = filled(dir.path(), vec![entry("a", 1, 10)]);
        std::fs::write(dir.path().join("by-hand"), b"xyz").unwrap();
        until(|| index.lookup("by-hand") == Lookup::Unsure);
        assert_eq!(index.unsure(), vec!["by-hand".to_owned()]);
        assert_eq!(index.lookup("a"), Lookup::Known(Some(entry("a", 1, 10))));
        let read = entry("by-hand", 3, 7);
        index.settled("by-hand", Some(&read));
        assert_eq!(index.lookup("by-hand"), Lookup::Known(Some(read)));
        assert!(index.unsure().is_empty());
    }

    #[test]
    fn a_change_by_hand_during_the_first_fill_is_read_again_after_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("gone"), b"x").unwrap();
        let index = StoreIndex::watching(dir.path());
        index.begin_fill();
        assert!(!index.filled());
        // The listing saw `gone`, which is then removed by hand.
        std::fs::remove_file(dir.path().join("gone")).unwrap();
        until(|| index.unsure() == ["gone"]);
        index.end_fill(Ok([entry("gone", 1, 10)].into_iter().collect()));
        assert!(index.filled());
        assert_eq!(index.lookup("gone"), Lookup::Unsure, "not taken from the listing");
        index.settled("gone", None);
        assert_eq!(index.lookup("gone"), Lookup::Known(None));
    }

    #[test]
    fn changes_during_a_fill_win_over_what_it_listed() {
        let dir = tempfile::tempdir().unwrap();
        let index = StoreIndex::watching(dir.path());
        index.begin_fill();
        // Stored and removed while the listing ran, which saw neither change.
        index.stored(&entry("new", 5, 20));
        index.removed("old");
        index.end_fill(Ok([entry("old", 1, 10), entry("kept", 2, 10)].into_iter().collect()));
        let mut names: Vec<String> = index.listing().unwrap().entries.iter().map(|e| e.name.clone()).collect();
        names.sort();
        assert_eq!(names, ["kept", "new"]);
    }

    #[test]
    fn a_name_listed_twice_keeps_its_newer_entry_and_a_failed_fill_is_shared() {
        let dir = tempfile::tempdir().unwrap();
        let index = filled(dir.path(), vec![entry("a", 1, 30), entry("a", 2, 10)]);
        assert_eq!(index.held("a"), Some(entry("a", 1, 30)));
        let seen = index.fills_ended();
        index.begin_fill();
        index.end_fill(Err(Some(&PluginError::Cancelled)));
        assert!(index.failure_since(seen).is_some());
        assert!(index.failure_since(seen + 1).is_none());
        // A failed fill keeps what was held.
        assert_eq!(index.held("a"), Some(entry("a", 1, 30)));
    }

    #[test]
    fn digests_follow_every_write_as_a_fresh_fill_would_have_them() {
        let dir = tempfile::tempdir().unwrap();
        let index = filled(dir.path(), vec![entry("a", 1, 10), entry("b", 2, 10)]);
        let ring = KeyRange { from: 7, to: 7 };
        let whole = Plan::new(vec![ring]);
        let before = index.sums(&whole).unwrap()[0];
        index.stored(&entry("c", 3, 20));
        index.removed("a");
        index.stored(&entry("b", 5, 30));
        let after = index.sums(&whole).unwrap()[0];
        assert_ne!(after, before);
        assert_eq!(after.count, 2);
        let entries = index.listing().unwrap().entries.to_vec();
        let fresh = filled(dir.path(), entries);
        assert_eq!(fresh.sums(&whole).unwrap()[0], after);
        let halves = Plan::new(ring.split(2));
        assert_eq!(index.sums(&halves), fresh.sums(&halves));
        let mut names: Vec<String> = index.entries_in(&[ring]).unwrap().into_iter().map(|e| e.name).collect();
        names.sort();
        assert_eq!(names, ["b", "c"]);
    }

    #[test]
    fn forgetting_all_asks_for_a_new_listing() {
        let dir = tempfile::tempdir().unwrap();
        let index = filled(dir.path(), vec![entry("a", 1, 10)]);
        index.forget_all();
        assert!(index.needs_fill());
        assert_eq!(index.lookup("a"), Lookup::Unsure);
        index.begin_fill();
        index.end_fill(Ok(Filling::default()));
        assert_eq!(index.lookup("a"), Lookup::Known(None));
    }
}
