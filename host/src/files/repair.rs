//! Keeping k copies of every file where the ring says they belong, as nodes
//! join, leave and crash, and picking up files copied into a store by hand.
//!
//! Every node periodically walks its own files. For each it asks the
//! placement holders which version they have. Of the holders that have this
//! node's version, only the first in placement order pushes copies to the
//! holders that lack it; a node outside the placement pushes only when no
//! holder has the file at all. So each missing copy is made once, not by
//! every holder at the same moment, and one pass copies one file at a time
//! (bounded bandwidth). Versions are ordered by modification time, then
//! sha256: a holder with a newer version is left alone.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Files, placement};
use crate::chord::NodeRef;
use crate::plugins::FileEntry;
use crate::store::FileName;

/// Whether version `a` is newer than `b`: later modification, then larger sha256.
pub fn newer(a: &FileEntry, b: &FileEntry) -> bool {
    (a.modified_ns, &a.sha256) > (b.modified_ns, &b.sha256)
}

/// Runs a repair pass every `every` (with jitter) until `shutdown`.
pub fn spawn_repair(files: Arc<Files>, every: Duration, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            // Up to 25 % jitter, so that nodes started together do not pass in step.
            let jitter = every.mul_f64(rand::random::<f64>() * 0.25);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(every + jitter) => {}
            }
            let copies = files.repair_pass(&shutdown).await;
            if copies > 0 {
                tracing::info!(copies, "repair pass copied files to their holders");
            }
        }
    })
}

impl Files {
    /// One repair pass over this node's files; returns the copies made.
    pub async fn repair_pass(self: &Arc<Self>, shutdown: &CancellationToken) -> usize {
        let Ok(entries) = self.plugins().list().await else { return 0 };
        let mut copies = 0;
        for entry in entries {
            if shutdown.is_cancelled() {
                break;
            }
            let Ok(name) = FileName::parse(&entry.name) else { continue };
            let Ok(holders) = self.holders(&name).await else { continue };
            copies += self.push_where_missing(&name, &entry, &holders, true).await;
        }
        copies
    }

    /// Before this node leaves: copies each of its files to the holders it
    /// will have once this node is gone.
    pub async fn hand_over(self: &Arc<Self>) -> usize {
        let Ok(entries) = self.plugins().list().await else { return 0 };
        let me = self.ring().me();
        let mut copies = 0;
        for entry in entries {
            let Ok(name) = FileName::parse(&entry.name) else { continue };
            let Ok(holders) = self.holders_after_leaving(&name, &me).await else { continue };
            copies += self.push_where_missing(&name, &entry, &holders, false).await;
        }
        copies
    }

    /// The placement of `name` once `leaver` is gone: k holders besides it.
    async fn holders_after_leaving(&self, name: &FileName, leaver: &NodeRef) -> Result<Vec<NodeRef>, super::FileError> {
        let holders = self.holders(name).await?;
        let responsible = &holders[0];
        let successors = if responsible.id == leaver.id {
            self.ring().snapshot().successors().to_vec()
        } else {
            holders[1..].to_vec()
        };
        let mut after: Vec<NodeRef> = placement::holders(responsible, &successors, self.replicas + 1)
            .into_iter()
            .filter(|h| h.id != leaver.id)
            .collect();
        after.truncate(self.replicas);
        Ok(after)
    }

    /// Pushes this node's version of `name` to the `holders` that lack it.
    /// With `one_pusher`, only the first holder having this version pushes
    /// (and a non-holder only when no holder has it).
    async fn push_where_missing(
        self: &Arc<Self>,
        name: &FileName,
        mine: &FileEntry,
        holders: &[NodeRef],
        one_pusher: bool,
    ) -> usize {
        let me = self.ring().me();
        let mut lacking = Vec::new();
        let mut first_having: Option<&NodeRef> = None;
        for holder in holders {
            let theirs = if holder.id == me.id {
                Some(mine.clone())
            } else {
                match self.peers.stat(&holder.addr, name.as_str()).await {
                    Ok(theirs) => theirs,
                    Err(_) => continue, // unreachable: repaired once the ring has moved on
                }
            };
            match theirs {
                Some(t) if t.sha256 == mine.sha256 => {
                    first_having.get_or_insert(holder);
                }
                Some(t) if newer(&t, mine) => return 0, // a newer version exists: not ours to spread
                _ => lacking.push(holder.clone()),
            }
        }
        if one_pusher {
            let pusher = first_having.map_or(me.id, |h| h.id);
            if pusher != me.id {
                return 0;
            }
        }
        let mut copies = 0;
        for target in lacking.into_iter().filter(|t| t.id != me.id) {
            match self.clone().replicate(target.clone(), name.clone()).await {
                Ok(_) => copies += 1,
                Err(e) => tracing::warn!(file = %name, node = %target.addr, "repair copy failed: {e}"),
            }
        }
        copies
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(modified_ns: u64, sha256: &str) -> FileEntry {
        FileEntry { name: "f".into(), size: 1, sha256: sha256.into(), modified_ns }
    }

    #[test]
    fn later_versions_win_then_larger_hashes() {
        assert!(newer(&version(2, "aa"), &version(1, "bb")));
        assert!(!newer(&version(1, "bb"), &version(2, "aa")));
        assert!(newer(&version(1, "bb"), &version(1, "aa")));
        assert!(!newer(&version(1, "aa"), &version(1, "aa")));
    }
}
