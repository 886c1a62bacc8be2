//! The network listing kept live: every file in the network with its newest
//! version and holders, updated as changes are announced (a file stored or
//! deleted anywhere, a node gone) and rebuilt from a walk of the ring at
//! start and periodically, so that a missed announcement heals. Answers
//! `GET /files?scope=network` and `GET /search` at the speed of a local
//! listing once the first walk is in.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::integrity::Digest;

/// One file in the network listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkEntry {
    /// The name.
    pub name: String,
    /// Size of the newest version.
    pub size: u64,
    /// BLAKE3 of the newest version.
    pub blake3: Digest,
    /// Modification time of the newest version.
    pub modified_ns: u64,
    /// Nodes holding the newest version.
    pub holders: Vec<String>,
}

/// Every node's files, merged by name, and the nodes whose files are not
/// in it because they did not answer.
#[derive(Debug, Clone, Default)]
pub struct NetworkListing {
    /// The files.
    pub entries: Vec<NetworkEntry>,
    /// Nodes left out: their listing failed or did not come in time.
    pub missing: Vec<String>,
}

/// A change of the network's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileChange {
    /// A version was stored on these holders.
    Stored(NetworkEntry),
    /// The file was deleted at this time (ns since the Unix epoch).
    Deleted {
        /// The file's name.
        name: String,
        /// When.
        at: u64,
    },
    /// The node at this address left or stopped answering.
    NodeGone(String),
}

/// Where this node's own changes go: straight into its index (a node
/// lists what was just written through it), and to whoever listens (the
/// bridge announces them to the other nodes).
#[derive(Clone)]
pub struct Announcer {
    index: Arc<NetworkIndex>,
    listeners: broadcast::Sender<FileChange>,
}

impl Announcer {
    /// Announces into `index`.
    pub fn new(index: Arc<NetworkIndex>) -> Self {
        Self { index, listeners: broadcast::channel(1024).0 }
    }

    /// Applies `change` here and passes it on.
    pub fn announce(&self, change: FileChange) {
        self.index.apply(change.clone());
        // Nobody listening (no bridge) is fine.
        let _ = self.listeners.send(change);
    }

    /// The changes announced from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<FileChange> {
        self.listeners.subscribe()
    }
}

#[derive(Default)]
struct State {
    files: BTreeMap<String, NetworkEntry>,
    /// Newest deletion heard of each name: an older version announced
    /// late is not listed again.
    deleted: HashMap<String, u64>,
    /// Whether a walk of the ring has filled it.
    ready: bool,
    /// Counts changes, so that a rendering of the listing can be reused
    /// while it stays the same.
    generation: u64,
    /// Changes applied while a walk is under way, replayed over its result.
    during_walk: Option<Vec<FileChange>>,
}

/// The live network listing.
#[derive(Default)]
pub struct NetworkIndex {
    state: RwLock<State>,
}

impl NetworkIndex {
    /// An empty index, not ready until its first walk.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a walk of the ring has filled it.
    pub fn is_ready(&self) -> bool {
        self.state.read().unwrap_or_else(|p| p.into_inner()).ready
    }

    /// Applies `change`.
    pub fn apply(&self, change: FileChange) {
        let mut state = self.state();
        if let Some(log) = &mut state.during_walk {
            log.push(change.clone());
        }
        apply(&mut state, change);
        state.generation += 1;
    }

    /// A walk of the ring starts: changes from now on are replayed over its
    /// result.
    pub fn walk_started(&self) {
        self.state().during_walk = Some(Vec::new());
    }

    /// A walk of the ring found `entries`: they replace the index, with the
    /// changes applied since the walk started replayed over them.
    pub fn walked(&self, entries: Vec<NetworkEntry>) {
        let mut state = self.state();
        let since = state.during_walk.take().unwrap_or_default();
        state.files = entries.into_iter().map(|e| (e.name.clone(), e)).collect();
        for change in since {
            apply(&mut state, change);
        }
        state.ready = true;
        state.generation += 1;
    }

    /// The generation of what [`NetworkIndex::list`] answers (it changes
    /// with every change), or none before the first walk.
    pub fn generation(&self) -> Option<u64> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state.ready.then_some(state.generation)
    }

    /// Every file, by name.
    pub fn list(&self) -> Vec<NetworkEntry> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).files.values().cloned().collect()
    }

    /// The files whose name starts with `prefix`, by name.
    pub fn search(&self, prefix: &str) -> Vec<NetworkEntry> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state
            .files
            .range(prefix.to_owned()..)
            .take_while(|(name, _)| name.starts_with(prefix))
            .map(|(_, e)| e.clone())
            .collect()
    }
}

fn apply(state: &mut State, change: FileChange) {
    match change {
        FileChange::Stored(entry) => {
            if state.deleted.get(&entry.name).is_some_and(|&at| at >= entry.modified_ns) {
                return;
            }
            match state.files.get_mut(&entry.name) {
                Some(known) if known.modified_ns > entry.modified_ns => {}
                Some(known) if known.modified_ns == entry.modified_ns && known.blake3 == entry.blake3 => {
                    for holder in entry.holders {
                        if !known.holders.contains(&holder) {
                            known.holders.push(holder);
                        }
                    }
                }
                _ => {
                    state.files.insert(entry.name.clone(), entry);
                }
            }
        }
        FileChange::Deleted { name, at } => {
            let newest = state.deleted.entry(name.clone()).or_insert(at);
            *newest = (*newest).max(at);
            if state.files.get(&name).is_some_and(|e| e.modified_ns <= at) {
                state.files.remove(&name);
            }
        }
        FileChange::NodeGone(addr) => {
            // Its copies are listed on the other holders; a file left with
            // none is listed again when a repaired copy is walked.
            state.files.retain(|_, e| {
                e.holders.retain(|h| *h != addr);
                !e.holders.is_empty()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::Digest;

    fn entry(name: &str, modified_ns: u64, holders: &[&str]) -> NetworkEntry {
        NetworkEntry {
            name: name.into(),
            size: 1,
            blake3: Digest([modified_ns as u8; 32]),
            modified_ns,
            holders: holders.iter().map(|h| h.to_string()).collect(),
        }
    }

    fn names(index: &NetworkIndex) -> Vec<(String, u64, Vec<String>)> {
        index.list().into_iter().map(|e| (e.name, e.modified_ns, e.holders)).collect()
    }

    #[test]
    fn the_newest_version_wins_and_deletions_are_not_undone_by_late_news() {
        let index = NetworkIndex::new();
        assert!(!index.is_ready());
        assert_eq!(index.generation(), None);
        index.walk_started();
        index.walked(vec![entry("a", 5, &["n1"])]);
        assert!(index.is_ready());
        let first = index.generation().unwrap();
        index.apply(FileChange::Stored(entry("a", 5, &["n2"])));
        index.apply(FileChange::Stored(entry("a", 3, &["n3"])));
        assert_eq!(names(&index), [("a".into(), 5, vec!["n1".into(), "n2".into()])]);
        assert!(index.generation().unwrap() > first);
        index.apply(FileChange::Stored(entry("a", 9, &["n3"])));
        assert_eq!(names(&index), [("a".into(), 9, vec!["n3".into()])]);
        index.apply(FileChange::Deleted { name: "a".into(), at: 10 });
        index.apply(FileChange::Stored(entry("a", 9, &["n1"])));
        assert!(index.list().is_empty());
        index.apply(FileChange::Stored(entry("a", 11, &["n1"])));
        assert_eq!(names(&index).len(), 1, "a newer upload after the delete is listed");
    }

    #[test]
    fn changes_during_a_walk_are_replayed_over_its_result() {
        let index = NetworkIndex::new();
        index.walk_started();
        index.apply(FileChange::Stored(entry("new", 7, &["n1"])));
        index.apply(FileChange::Deleted { name: "old".into(), at: 8 });
        // The walk began before both changes: it saw "old" and not "new".
        index.walked(vec![entry("old", 2, &["n2"])]);
        assert_eq!(names(&index), [("new".into(), 7, vec!["n1".into()])]);
    }

    #[test]
    fn a_node_gone_leaves_the_holders_lists_and_search_finds_prefixes() {
        let index = NetworkIndex::new();
        index.walked(vec![entry("ab", 1, &["n1", "n2"]), entry("abc", 1, &["n1"]), entry("b", 1, &["n2"])]);
        index.apply(FileChange::NodeGone("n1".into()));
        assert_eq!(names(&index), [("ab".into(), 1, vec!["n2".into()]), ("b".into(), 1, vec!["n2".into()])]);
        assert_eq!(index.search("a").len(), 1);
        assert_eq!(index.search("").len(), 2);
        assert!(index.search("c").is_empty());
    }
}
