//! The index plugin's last answer, kept until the store changes: a listing
//! costs one plugin call per change, not one per request. Every write and
//! removal through the plugins marks it stale at once, and a watch on the
//! store's `files/` folder (inotify, through `notify`) does the same for
//! changes made by hand. Without the watch (the system refused it), every
//! request asks the plugin.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use notify::{RecursiveMode, Watcher};

use super::FileEntry;

/// A cached listing and what it takes to know when it is stale.
pub struct ListingCache {
    /// Bumped on every change to the store; a listing is fresh while the
    /// generation it was taken at is the current one.
    generation: Arc<AtomicU64>,
    last: Mutex<Option<Listing>>,
    listing: tokio::sync::Mutex<()>,
    /// Listings for the cache that ended, and the last one that failed: the
    /// requests that waited for a listing share its failure too.
    attempts: AtomicU64,
    failed: Mutex<Option<(u64, super::PluginError)>>,
    _watcher: Option<notify::RecommendedWatcher>,
}

/// One answer of the index plugin, and the store generation it describes.
#[derive(Clone)]
pub struct Listing {
    /// The store's generation when the listing was taken.
    pub generation: u64,
    /// The entries.
    pub entries: Arc<Vec<FileEntry>>,
    /// Where each name is in `entries`: a stat is one lookup, not a scan.
    by_name: Arc<HashMap<String, usize>>,
}

impl Listing {
    /// A listing of `entries` taken at `generation`.
    pub fn new(generation: u64, entries: Vec<FileEntry>) -> Self {
        let by_name = entries.iter().enumerate().map(|(i, e)| (e.name.clone(), i)).collect();
        Self { generation, entries: Arc::new(entries), by_name: Arc::new(by_name) }
    }

    /// The entry named `name`, if listed.
    pub fn get(&self, name: &str) -> Option<&FileEntry> {
        self.by_name.get(name).map(|&i| &self.entries[i])
    }
}

impl ListingCache {
    /// A cache watching `files_dir` for changes made behind the plugins' back.
    pub fn watching(files_dir: &Path) -> Self {
        let generation = Arc::new(AtomicU64::new(1));
        let bump = generation.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| !e.kind.is_access()) {
                bump.fetch_add(1, Ordering::SeqCst);
            }
        })
        .and_then(|mut w| w.watch(files_dir, RecursiveMode::NonRecursive).map(|()| w));
        let watcher = match watcher {
            Ok(watcher) => Some(watcher),
            Err(e) => {
                tracing::warn!(folder = %files_dir.display(), "cannot watch the store, listings will not be cached: {e}");
                None
            }
        };
        Self {
            generation,
            last: Mutex::new(None),
            listing: tokio::sync::Mutex::new(()),
            attempts: AtomicU64::new(0),
            failed: Mutex::new(None),
            _watcher: watcher,
        }
    }

    /// The generation a listing about to be taken will describe. Without
    /// the watch, changes by hand go unseen, so every listing is its own.
    pub fn begin(&self) -> u64 {
        if self._watcher.is_none() {
            self.changed();
        }
        self.generation()
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Held while a listing is taken for the cache; none without the
    /// watch (then no listing is kept, and listings run side by side).
    pub async fn one_at_a_time(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self._watcher {
            Some(_) => Some(self.listing.lock().await),
            None => None,
        }
    }

    /// How many listings for the cache have ended so far.
    pub fn ended(&self) -> u64 {
        self.attempts.load(Ordering::SeqCst)
    }

    /// A listing for the cache ended, with `error` if it failed.
    pub fn end(&self, error: Option<&super::PluginError>) {
        let number = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(error) = error {
            *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some((number, error.clone()));
        }
    }

    /// The failure of the last listing, if it failed and ended after the
    /// `seen`-th: a request that waited for it shares it.
    pub fn failure_since(&self, seen: u64) -> Option<super::PluginError> {
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed.as_ref().filter(|(n, _)| *n > seen && *n == self.ended()).map(|(_, e)| e.clone())
    }

    /// The cached listing, if it still describes the store.
    pub fn fresh(&self) -> Option<Listing> {
        self._watcher.as_ref()?;
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.as_ref().filter(|l| l.generation == self.generation()).cloned()
    }

    /// Keeps `listing` (taken at its generation) unless a newer one is kept.
    pub fn keep(&self, listing: &Listing) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_ref().is_none_or(|l| l.generation <= listing.generation) {
            *last = Some(listing.clone());
        }
    }

    /// Replaces the cached listing with `entries`, listed at `generation`,
    /// if the store has not changed since; else drops it.
    pub fn replace_if_unchanged(&self, generation: u64, entries: Vec<FileEntry>) {
        match self.generation.compare_exchange(generation, generation + 1, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => self.keep(&Listing::new(generation + 1, entries)),
            Err(_) => self.changed(),
        }
    }

    /// The store changed: whatever is cached is stale.
    pub fn changed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}
