//! Keeping k copies of every file where the ring says they belong, as nodes
//! join, leave and crash; spreading deletions the same way; and picking up
//! files copied into a store by hand.
//!
//! **Anti-entropy by digests** (Dynamo's and Cassandra's Merkle trees of key
//! ranges; `store::digest`). Every node periodically compares its own range
//! of keys (after its predecessor) with each of its k-1 successors, the
//! other holders of every name in it: first the digests of the range cut
//! into 256 parts, then, in the parts that differ, their parts again, down
//! to parts of few files; then the entries of those parts only. What this
//! node has newer goes to the successor, what the successor has newer comes
//! here (a copy pulled like a hand-off, a deletion applied). A pass over a
//! store where nothing changed sends a few KiB per successor, whatever the
//! number of files, and a node that missed writes gets just those.
//!
//! **Name by name** go only what ranges do not cover: what this node keeps
//! outside the keys it holds (after its k-th predecessor), files copied in
//! by hand (hashed first), tombstones past the grace, and copies kept
//! through a long absence. For each, it asks the placement holders what they
//! know of the name (see `known`). Of the holders that have this node's
//! state, only the first in placement order passes it to the holders that
//! lack it; a node outside the placement passes it on only when no holder
//! has it at all, and drops its own copy once every holder does. A holder
//! with a newer state is left alone; a copy older than a holder's deletion
//! is removed, so a node that was away during a delete does not bring the
//! file back.
//!
//! Each pass also **scrubs** this node's copies, as HDFS's block scanner
//! does: it reads up to a byte budget of them through the download plugin,
//! every block checked against its outboard, continuing next pass where it
//! stopped; a damaged copy is dropped when another holder has the version,
//! so the next pass of a holder copies a good one back. Bit rot is found
//! even in files nobody reads.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::error::FileError;
use super::handoff::{Change, HandOff};
use super::known::Known;
use super::local::Local;
use super::local::whole;
use super::network::NodeListing;
use super::network::Peers;
use super::placement::{Held, Placement};
use super::read::Reader;
use super::receive::Receiver;
use super::write::Writer;
use crate::chord::NodeRef;
use crate::plugins::{FileEntry, PluginError};
use crate::store::FileName;
use crate::store::digest::KeyRange;
use futures_util::StreamExt;

/// Keeps this node's files and tombstones where the ring says.
pub struct Repairer {
    placement: Arc<Placement>,
    local: Arc<Local>,
    peers: Arc<dyn Peers>,
    writer: Arc<Writer>,
    reader: Arc<Reader>,
    receiver: Arc<Receiver>,
    /// Bytes of copies checked per pass.
    scrub_budget: u64,
    /// The name the last scrub stopped after.
    scrubbed_to: std::sync::Mutex<Option<String>>,
    /// A node is gone: pass now rather than at the next period.
    woken: tokio::sync::Notify,
    /// Whether [`Repairer::wake`] does anything (else: periodic passes only).
    wakeable: bool,
    /// Where passes are counted, once a node's metrics are set up.
    metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
}

/// Parts a range is cut into per comparison of digests.
const PARTS: u32 = 256;
/// Ranges and parts a `Digests` call may ask about (the server's limits).
const MAX_RANGES: usize = 4096;
const MAX_PARTS: usize = 65_536;
/// Differing parts with at most this many entries in all are listed
/// rather than cut again.
const LIST_AT_MOST: u64 = 4096;
/// Levels of cutting at most (256 parts each: leaves after two).
const MAX_LEVELS: usize = 4;

/// Each name's state in a listing of files and tombstones.
fn states_by_name((files, deleted): NodeListing) -> std::collections::HashMap<String, Known> {
    let mut deleted: std::collections::HashMap<String, u64> = deleted.into_iter().collect();
    let mut states: std::collections::HashMap<String, Known> = files
        .into_iter()
        .map(|entry| {
            let at = deleted.remove(&entry.name);
            (entry.name.clone(), Known::from_parts(Some(entry), at))
        })
        .collect();
    states.extend(deleted.into_iter().map(|(name, at)| (name, Known::Deleted(at))));
    states
}

/// A listing of files and tombstones as states to pass on, none of them
/// waiting to be confirmed (listings leave those out).
fn states_in(listing: NodeListing) -> Vec<(FileName, Known, bool)> {
    let states = states_by_name(listing).into_iter();
    states.filter_map(|(name, known)| Some((FileName::parse(&name).ok()?, known, false))).collect()
}

/// After a wake-up, the ring is given this long to settle (its successor
/// lists to drop the node) before the pass; a second pass follows later,
/// for what the ring had not settled on the first time.
const SETTLE_AFTER_WAKE: Duration = Duration::from_millis(500);
const AGAIN_AFTER_WAKE: Duration = Duration::from_secs(3);

/// Runs a repair pass every `every` (with jitter) until `shutdown`.
pub fn spawn_repair(repairer: Arc<Repairer>, every: Duration, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        // A second pass due after a wake-up.
        let mut again: Option<tokio::time::Instant> = None;
        loop {
            // Up to 25 % jitter, so that nodes started together do not pass in step.
            let jitter = every.mul_f64(rand::random::<f64>() * 0.25);
            let next = tokio::time::Instant::now() + every + jitter;
            let next = again.map_or(next, |at| at.min(next));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(next) => again = None,
                _ = repairer.woken.notified() => {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(SETTLE_AFTER_WAKE) => {}
                    }
                    again = Some(tokio::time::Instant::now() + AGAIN_AFTER_WAKE);
                }
            }
            let copies = repairer.repair_pass(&shutdown).await;
            if copies > 0 {
                tracing::info!(copies, "repair pass copied files to their holders");
            }
        }
    })
}

impl Repairer {
    /// A repairer of this node's files, copying through `writer`, reporting
    /// damage through `reader`, scrubbing `scrub_budget` bytes a pass.
    pub fn new(
        placement: Arc<Placement>,
        local: Arc<Local>,
        peers: Arc<dyn Peers>,
        (writer, reader, receiver): (Arc<Writer>, Arc<Reader>, Arc<Receiver>),
        (scrub_budget, wakeable): (u64, bool),
    ) -> Self {
        let (scrubbed_to, woken) = Default::default();
        Self {
            placement,
            local,
            peers,
            writer,
            reader,
            receiver,
            scrub_budget,
            scrubbed_to,
            woken,
            wakeable,
            metrics: Default::default(),
        }
    }

    /// A node left or stopped answering: run a pass soon instead of at the
    /// next period (several wake-ups before it starts make one pass).
    pub fn wake(&self) {
        if self.wakeable {
            self.woken.notify_one();
        }
    }

    /// What this node holds: each of its files (as deleted, if a tombstone
    /// is newer) and each tombstone without a file, and whether each file
    /// waits to be confirmed (kept through a long absence). `None` if the
    /// index plugin cannot list.
    async fn states(&self) -> Option<Vec<(FileName, Known, bool)>> {
        let listing = self.local.list_all().await.ok()?;
        let mut states: Vec<(FileName, Known, bool)> = Vec::with_capacity(listing.entries.len());
        for entry in listing.entries.iter() {
            let Ok(name) = FileName::parse(&entry.name) else { continue };
            let Some(entry) = self.hashed(&name, entry).await else { continue };
            let deleted = self.local.tombstones().get(&name);
            let unconfirmed = self.local.unconfirmed(&entry);
            states.push((name, Known::from_parts(Some(entry), deleted), unconfirmed));
        }
        let with_files: HashSet<String> = states.iter().map(|(n, ..)| n.as_str().to_owned()).collect();
        for (name, at) in self.local.tombstones().all() {
            if !with_files.contains(&name)
                && let Ok(name) = FileName::parse(&name)
            {
                states.push((name, Known::Deleted(at), false));
            }
        }
        Some(states)
    }

    /// `entry` with its hash: a file copied in by hand is hashed and
    /// recorded first (none if it is gone, or cannot be read).
    async fn hashed(&self, name: &FileName, entry: &FileEntry) -> Option<FileEntry> {
        if entry.blake3.is_some() {
            return Some(entry.clone());
        }
        match self.local.entry(name).await {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(file = %name, "cannot hash a file copied in by hand: {e}");
                None
            }
        }
    }

    /// Counts passes in `metrics` from now on.
    pub fn count_passes(&self, metrics: Arc<crate::metrics::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// What a pass looks at name by name (see the module's doc): each
    /// with this node's state and whether it waits to be confirmed.
    async fn singles(&self, held: Held) -> Option<Vec<(FileName, Known, bool)>> {
        let listing = self.local.list_all().await.ok()?;
        let stones = self.local.tombstones();
        let away = stones.away_from().is_some();
        let mut singles: Vec<(FileName, Known, bool)> = Vec::new();
        for entry in listing.entries.iter() {
            let unconfirmed = away && self.local.unconfirmed(entry);
            if entry.blake3.is_some() && !unconfirmed {
                continue;
            }
            let Ok(name) = FileName::parse(&entry.name) else { continue };
            let Some(entry) = self.hashed(&name, entry).await else { continue };
            let known = Known::from_parts(Some(entry), stones.get(&name));
            singles.push((name, known, unconfirmed));
        }
        if held.all.from != held.all.to {
            let beyond = KeyRange { from: held.all.to, to: held.all.from };
            let (files, deleted) = self.local.entries_in(&[beyond]).await.ok()?;
            let deleted_at = |name: &FileName| stones.get(name);
            for entry in files {
                let Ok(name) = FileName::parse(&entry.name) else { continue };
                let known = Known::from_parts(Some(entry), deleted_at(&name));
                singles.push((name, known, false));
            }
            for (name, at) in deleted {
                singles.extend(FileName::parse(&name).ok().map(|name| (name, Known::Deleted(at), false)));
            }
        }
        for (name, at) in stones.all() {
            if stones.past_grace(at) {
                singles.extend(FileName::parse(&name).ok().map(|name| (name, Known::Deleted(at), false)));
            }
        }
        let mut seen = HashSet::new();
        singles.retain(|(name, ..)| seen.insert(name.as_str().to_owned()));
        Some(singles)
    }

    /// One repair pass: this node's own range compared with each successor
    /// by digests, then what goes name by name; returns the copies and
    /// deletions passed on.
    pub async fn repair_pass(self: &Arc<Self>, shutdown: &CancellationToken) -> usize {
        let Some(held) = self.placement.held().await else { return 0 };
        let Some(states) = self.singles(held).await else { return 0 };
        let metrics = self.metrics.get();
        if let Some(m) = metrics {
            m.repair_backlog.set(states.len() as i64);
        }
        let (mut passed, mut unsettled) = (0, 0);
        for (name, mine, unconfirmed) in states {
            if shutdown.is_cancelled() {
                break;
            }
            if let Some(m) = metrics {
                m.repair_backlog.dec();
            }
            let Ok(holders) = self.placement.holders(&name).await else {
                unsettled += usize::from(unconfirmed);
                continue;
            };
            if unconfirmed {
                unsettled += usize::from(self.settle(&name, &mine, &holders).await);
                continue;
            }
            let now = self.pass_on(&name, &mine, &holders, true).await;
            if let Some(m) = metrics {
                m.repair_passed_on.inc_by(now as u64);
            }
            passed += now;
        }
        for peer in self.placement.successors(self.placement.replicas().saturating_sub(1)) {
            if shutdown.is_cancelled() {
                break;
            }
            match self.reconcile(held.own, &peer, true).await {
                Ok(moved) => passed += moved,
                Err(e) => tracing::debug!(node = %peer.addr, "could not compare ranges with it: {e}"),
            }
        }
        if let Some(m) = metrics {
            m.repair_backlog.set(0);
            m.copies_unconfirmed.set(unsettled as i64);
            m.repair_passes.inc();
        }
        if !shutdown.is_cancelled() {
            // A whole pass: this node has met its holders, so a later start
            // counts its absence from now; back from a long one, only once
            // every old copy is settled.
            let kept = if unsettled == 0 { self.local.tombstones().settled() } else { Ok(()) };
            if let Err(e) = kept {
                tracing::warn!("cannot keep the time of this repair pass: {e}");
            }
            self.scrub().await;
        }
        passed
    }

    /// Compares `range` with `peer`, a holder of every name in it, by
    /// digests, walking down only the parts that differ, then exchanges the
    /// entries of the parts that still differ: what this node has newer
    /// goes to `peer`, and with `both_ways`, what `peer` has newer comes
    /// here. Answers the copies and deletions moved.
    async fn reconcile(self: &Arc<Self>, range: KeyRange, peer: &NodeRef, both_ways: bool) -> Result<usize, FileError> {
        let differing = self.differing(range, peer).await?;
        if differing.is_empty() {
            return Ok(0);
        }
        let mut theirs = (Vec::new(), Vec::new());
        for ranges in differing.chunks(MAX_RANGES) {
            let (files, deleted) = self.peers.entries(&peer.addr, ranges).await?;
            theirs.0.extend(files);
            theirs.1.extend(deleted);
        }
        let mine = self.local.entries_in(&differing).await?;
        let (mine, theirs) = (states_by_name(mine), states_by_name(theirs));
        let names: std::collections::BTreeSet<&String> = mine.keys().chain(theirs.keys()).collect();
        let stones = self.local.tombstones();
        let mut moved = 0;
        for name in names {
            let Ok(file) = FileName::parse(name) else { continue };
            let (mine, theirs) =
                (mine.get(name).unwrap_or(&Known::Nothing), theirs.get(name).unwrap_or(&Known::Nothing));
            let expired = |k: &Known| matches!(k, Known::Deleted(at) if stones.past_grace(*at));
            if mine.same(theirs)
                || (expired(mine) && *theirs == Known::Nothing)
                || (expired(theirs) && *mine == Known::Nothing)
            {
                continue;
            }
            if !both_ways && !mine.newer_than(theirs) {
                continue;
            }
            let done = if mine.newer_than(theirs) {
                match mine {
                    Known::File(_) => self.writer.replicate(peer, &file).await.map(drop),
                    Known::Deleted(at) => self.peers.delete(&peer.addr, &file, Some(*at), 0).await.map(drop),
                    Known::Nothing => Ok(()),
                }
            } else {
                let change = match theirs {
                    Known::File(e) => match e.blake3 {
                        Some(blake3) => {
                            Change::Stored { blake3, size: e.size, sources: vec![peer.addr.clone()], inline: None }
                        }
                        None => continue,
                    },
                    Known::Deleted(_) => Change::Deleted,
                    Known::Nothing => continue,
                };
                let version_ns = match theirs {
                    Known::File(e) => e.modified_ns,
                    Known::Deleted(at) => *at,
                    Known::Nothing => continue,
                };
                let hint = HandOff { name: name.clone(), version_ns, change };
                self.receiver.take(&file, &hint).await.map(drop)
            };
            match done {
                Ok(()) => moved += 1,
                Err(e) => tracing::warn!(file = %name, node = %peer.addr, "repair could not bring it in step: {e}"),
            }
        }
        Ok(moved)
    }

    /// The parts of `range` where this node's digests and `peer`'s differ,
    /// cut down until they hold few entries (or are single leaves).
    async fn differing(&self, range: KeyRange, peer: &NodeRef) -> Result<Vec<KeyRange>, FileError> {
        let (mut asked, mut parts) = (vec![range], PARTS);
        for _ in 0..MAX_LEVELS {
            let mut differing = Vec::new();
            let mut entries = 0;
            let per_call = (MAX_PARTS / parts as usize).min(MAX_RANGES);
            for ranges in asked.chunks(per_call) {
                let theirs = self.peers.digests(&peer.addr, ranges, parts).await?;
                let mine = self.local.sums(theirs.iter().map(|(r, _)| *r).collect()).await?;
                for ((part, theirs), mine) in theirs.iter().zip(mine) {
                    if *theirs != mine {
                        differing.push(*part);
                        entries += theirs.count.max(mine.count);
                    }
                }
            }
            let leaves = differing.iter().all(|r| r.run().count <= 1);
            if differing.is_empty() || entries <= LIST_AT_MOST || leaves {
                return Ok(differing);
            }
            parts = (MAX_PARTS / differing.len()).clamp(2, PARTS as usize) as u32;
            asked = differing;
        }
        Ok(asked)
    }

    /// A copy this node kept through an absence longer than the grace (see
    /// `tombstones`): confirmed when another holder has the same version,
    /// removed when a holder has a deletion or (this node not holding it) a
    /// newer version, and moved to quarantine when every other holder
    /// answered and none has it, since its deletion may have been
    /// forgotten. Answers whether it still waits (a holder did not answer).
    async fn settle(&self, name: &FileName, mine: &Known, holders: &[NodeRef]) -> bool {
        let me = self.placement.me();
        let stones = self.local.tombstones();
        let others: Vec<&NodeRef> = holders.iter().filter(|h| h.id != me.id).collect();
        let mut all_answered = true;
        for holder in &others {
            let theirs = match self.peers.stat(&holder.addr, name).await {
                Ok(theirs) => theirs,
                Err(_) => {
                    all_answered = false;
                    continue;
                }
            };
            if theirs.same(mine) {
                stones.confirm(name.as_str());
                return false;
            }
            if theirs.newer_than(mine) {
                match theirs {
                    Known::Deleted(at) => self.apply_deletion(name, at).await,
                    // Superseded: a holder gets the newer version pushed.
                    _ if holders.iter().any(|h| h.id == me.id) => stones.confirm(name.as_str()),
                    _ => self.drop_extra(name, mine).await,
                }
                return false;
            }
        }
        if !all_answered {
            return true;
        }
        if others.is_empty() {
            // No other holder to ask (a ring of one): nothing was deleted
            // behind this node's back.
            stones.confirm(name.as_str());
            return false;
        }
        match self.local.quarantine(name).await {
            Ok(Some(to)) => {
                tracing::warn!(file = %name, to = %to.display(), "no holder has this copy kept through a long absence: \
                    it may have been deleted meanwhile, so it is moved to quarantine rather than brought back");
                if let Some(m) = self.metrics.get() {
                    m.copies_quarantined.inc();
                }
                false
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(file = %name, "cannot move a copy to quarantine: {e}");
                true
            }
        }
    }

    /// Checks up to the scrub budget of this node's copies, in name order
    /// from where the last scrub stopped; returns the damaged copies found.
    pub async fn scrub(&self) -> usize {
        let Ok(listing) = self.local.list().await else { return 0 };
        let mut names: Vec<&str> = listing.entries.iter().map(|e| e.name.as_str()).collect();
        names.sort_unstable();
        let after = self.scrubbed_to.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let from = after.as_deref().map_or(0, |a| names.partition_point(|n| *n <= a));
        let (mut budget, mut damaged, mut last) = (self.scrub_budget, 0, None);
        for name in names[from..].iter().chain(&names[..from]) {
            if budget == 0 {
                break;
            }
            let Ok(name) = FileName::parse(name) else { continue };
            match self.check(&name).await {
                Ok(read) => budget = budget.saturating_sub(read.max(1)),
                Err(FileError::Plugin(PluginError::Corrupt(why))) => {
                    tracing::warn!(file = %name, "scrub found a damaged copy: {why}");
                    if let Ok(Some(entry)) = self.local.entry(&name).await {
                        self.reader.damaged(&name, entry);
                    }
                    damaged += 1;
                }
                Err(e) => tracing::debug!(file = %name, "scrub skipped it: {e}"),
            }
            last = Some(name.as_str().to_owned());
        }
        *self.scrubbed_to.lock().unwrap_or_else(|p| p.into_inner()) = last;
        damaged
    }

    /// Reads this node's copy of `name` through, every block checked;
    /// answers the bytes read.
    async fn check(&self, name: &FileName) -> Result<u64, FileError> {
        let Some(handle) = self.local.open(name).await? else { return Ok(0) };
        let mut stream = whole(handle);
        let mut read = 0;
        while let Some(chunk) = stream.next().await {
            read += chunk?.len() as u64;
        }
        Ok(read)
    }

    /// Before this node leaves: passes its files and tombstones to the
    /// holders it will have once this node is gone. Each part of the keys it
    /// holds is compared by digests with the node that gains it (see
    /// [`Placement::heirs`]), and only what that node lacks or has older
    /// goes, so a leave costs what moves, not what the store holds; what
    /// ranges do not cover goes name by name. Without a view of its
    /// neighbours, every file goes name by name.
    pub async fn hand_over(self: &Arc<Self>) -> usize {
        let me = self.placement.me();
        let (Some(held), Some(heirs)) = (self.placement.held().await, self.placement.heirs().await) else {
            let Some(states) = self.states().await else { return 0 };
            return self.pass_each_on(states, &me).await;
        };
        // A ring of k nodes or fewer: every other node holds every key, and
        // may lack what repair has not copied to it yet.
        let heirs = if heirs.is_empty() {
            self.placement.successors(self.placement.replicas()).into_iter().map(|n| (held.all, n)).collect()
        } else {
            heirs
        };
        let mut passed = 0;
        for (range, heir) in heirs {
            match self.reconcile(range, &heir, false).await {
                Ok(moved) => passed += moved,
                Err(e) => {
                    // Name by name instead, each to the holders it will have.
                    tracing::warn!(node = %heir.addr, "could not compare its keys with it, passing them one by one: {e}");
                    if let Ok(states) = self.local.entries_in(&[range]).await {
                        passed += self.pass_each_on(states_in(states), &me).await;
                    }
                }
            }
        }
        match self.singles(held).await {
            Some(singles) => passed + self.pass_each_on(singles, &me).await,
            None => passed,
        }
    }

    /// Passes each of `states` to the holders it will have once `me` is
    /// gone; a copy not confirmed since a long absence is not handed on.
    async fn pass_each_on(self: &Arc<Self>, states: Vec<(FileName, Known, bool)>, me: &NodeRef) -> usize {
        let mut passed = 0;
        for (name, mine, _) in states.into_iter().filter(|(.., unconfirmed)| !unconfirmed) {
            let Ok(holders) = self.placement.holders_without(&name, me).await else { continue };
            passed += self.pass_on(&name, &mine, &holders, false).await;
        }
        passed
    }

    /// Passes this node's state of `name` (`mine`: a version or a deletion)
    /// to the `holders` that lack it. With `one_pusher` (the repair loop),
    /// only the first holder having it does (and a non-holder only when no
    /// holder has it), and a non-holder drops its own copy or tombstone once
    /// every holder has it, and its copy as soon as a holder has something
    /// newer. A holder with a deletion newer than this node's copy gets that
    /// copy removed here.
    async fn pass_on(self: &Arc<Self>, name: &FileName, mine: &Known, holders: &[NodeRef], one_pusher: bool) -> usize {
        let me = self.placement.me();
        let holding = holders.iter().any(|h| h.id == me.id);
        let mut lacking = Vec::new();
        let mut first_having: Option<&NodeRef> = None;
        let mut all_answered = true;
        // A deletion past the grace needs no tombstone where there is no
        // copy to delete.
        let expired = matches!(mine, Known::Deleted(at) if self.local.tombstones().past_grace(*at));
        for holder in holders {
            let theirs = if holder.id == me.id {
                mine.clone()
            } else {
                match self.peers.stat(&holder.addr, name).await {
                    Ok(theirs) => theirs,
                    Err(_) => {
                        all_answered = false; // unreachable: repaired once the ring has moved on
                        continue;
                    }
                }
            };
            if theirs.same(mine) {
                first_having.get_or_insert(holder);
            } else if theirs.newer_than(mine) {
                // A newer state exists: not ours to spread. A copy it
                // deletes goes; a non-holder's superseded copy goes too.
                if let (Known::File(_), Known::Deleted(at)) = (mine, &theirs) {
                    self.apply_deletion(name, *at).await;
                } else if one_pusher && !holding && matches!(mine, Known::File(_)) {
                    self.drop_extra(name, mine).await;
                }
                return 0;
            } else if !(expired && theirs == Known::Nothing) {
                lacking.push(holder.clone());
            }
        }
        if let Known::Deleted(at) = mine
            && expired
            && one_pusher
            && all_answered
            && lacking.is_empty()
            && !holders.is_empty()
        {
            self.expire(name, *at).await;
            return 0;
        }
        if one_pusher && !holding && lacking.is_empty() && all_answered && !holders.is_empty() {
            self.drop_extra(name, mine).await;
            return 0;
        }
        if one_pusher && first_having.map_or(me.id, |h| h.id) != me.id {
            return 0;
        }
        let mut passed = 0;
        for target in lacking.into_iter().filter(|t| t.id != me.id) {
            let sent = match mine {
                Known::File(_) => self.writer.replicate(&target, name).await.map(drop),
                Known::Deleted(at) => self.peers.delete(&target.addr, name, Some(*at), 0).await.map(drop),
                Known::Nothing => Ok(()),
            };
            match sent {
                Ok(()) => passed += 1,
                Err(e) => tracing::warn!(file = %name, node = %target.addr, "repair could not pass it on: {e}"),
            }
        }
        passed
    }

    /// Drops this node's tombstone of `name` (deleted at `at`): past the
    /// grace, and every holder has it or has no copy.
    async fn expire(&self, name: &FileName, at: u64) {
        match self.local.tombstones().clear_before(name, at.saturating_add(1)).await {
            Ok(()) => {
                tracing::debug!(file = %name, "tombstone past the grace dropped; every holder has it");
                if let Some(m) = self.metrics.get() {
                    m.tombstones_expired.inc();
                }
            }
            Err(e) => tracing::warn!(file = %name, "could not drop a tombstone past the grace: {e}"),
        }
    }

    /// Removes this node's copy of `name`, deleted at `at` elsewhere.
    async fn apply_deletion(&self, name: &FileName, at: u64) {
        match self.local.forget(name, at).await {
            Ok(true) => tracing::info!(file = %name, "removed a copy deleted elsewhere while this node was away"),
            Ok(false) => {}
            Err(e) => tracing::warn!(file = %name, "could not remove a deleted copy: {e}"),
        }
    }

    /// Drops what this node, not a holder of `name`, still keeps of it now
    /// that every holder has it, or something newer.
    async fn drop_extra(&self, name: &FileName, mine: &Known) {
        let dropped = match mine {
            Known::File(_) => self.local.remove(name).await.map(drop).map_err(|e| e.to_string()),
            Known::Deleted(_) => self.local.tombstones().clear_before(name, u64::MAX).await.map_err(|e| e.to_string()),
            Known::Nothing => Ok(()),
        };
        match dropped {
            Ok(()) => tracing::debug!(file = %name, "dropped an extra copy; its holders have it"),
            Err(e) => tracing::warn!(file = %name, "could not drop an extra copy: {e}"),
        }
    }
}
