//! [`Writer`]: uploads and deletions across the ring.
//!
//! A new upload goes to the responsible node, which writes it and streams
//! it, as it arrives, to the other holders (a fan-out: every holder writes
//! the bytes while they stream, nobody reads a stored copy back). It is
//! acknowledged only once the copies are durable: each holder hashed what it
//! received, found it equal to the hash the responsible node computed, and
//! synced it. A holder that does not answer, or fails mid-stream, is
//! replaced by the next live successor, which gets a copy of the durable
//! local file (the repair loop later moves it to the holder when it is
//! back). With `--write-quorum W` below k, the answer comes once W copies
//! are durable and the others finish in the background.
//!
//! A deletion goes to the responsible node, which records it and passes it
//! to its successors, answering once a majority recorded it.

use std::sync::{Arc, OnceLock, Weak};

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, Stream, StreamExt};
use tokio_util::task::TaskTracker;

use super::error::{ErrorKind, FileError};
use super::gather::{Batch, Gather};
use super::handoff::{Change, HandOff, Hints, INLINE_MAX};
use super::index::{Announcer, FileChange, NetworkEntry};
use super::known::Known;
use super::lease::Leases;
use super::local::{Expected, Local, LocalWrite, whole};
use super::network::{BodyStream, CopySink, Deleted, Peers, StoreOrder};
use super::placement::{Placement, write_quorum};
use crate::chord::{Id, NodeRef};
use crate::plugins::{FileEntry, UploadHandle};
use crate::store::FileName;

/// A stored file and the nodes holding it when the upload was acknowledged.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The file's entry.
    pub entry: FileEntry,
    /// Addresses of the nodes holding a durable copy, the responsible node
    /// first.
    pub holders: Vec<String>,
    /// Copies the responsible node meant to make: k, or fewer when the ring
    /// has fewer live nodes.
    pub copies_wanted: usize,
}

/// What a store on this node is.
pub enum StoreHow {
    /// A new upload, to be streamed on to `replicas` successors.
    New {
        /// Whether an existing version is replaced.
        overwrite: bool,
        /// Copies to make besides this node's.
        replicas: usize,
    },
    /// A copy of a version: its time, and the hash its bytes must have.
    Copy {
        /// The version's modification time.
        version_ns: u64,
        /// Its hash, known now or sent after the content.
        expected: Expected,
    },
}

/// Uploads up to this size are held whole while they are forwarded, so
/// that they can be tried again on another node.
const RETRY_MAX: usize = 256 << 10;
/// Tries of a held upload, or of a deletion, whose responsible node is lost
/// meanwhile.
const WRITE_ATTEMPTS: usize = 3;

/// Whether a write that failed with `e` on try `attempt` is tried again: a
/// node was lost while it was placed (cut off, or found dead by the failure
/// detector), or the ring could not answer its lookup.
fn try_again(attempt: usize, e: &FileError) -> bool {
    attempt < WRITE_ATTEMPTS && matches!(e.kind(), ErrorKind::PeerUnavailable | ErrorKind::RingUnavailable)
}

/// The pause before try `attempt` (the second and later) of a write:
/// 50 ms, then doubling, so the ring has a moment to route around what was
/// lost before it is asked again.
async fn pause_before(attempt: usize) {
    const FIRST_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);
    tokio::time::sleep(FIRST_PAUSE * (1 << attempt.saturating_sub(2).min(4))).await;
}
/// How long a write waits for a node that has just joined to judge its
/// clock (its first measurement runs as it joins, one call per neighbour).
const FIRST_JUDGEMENT_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Writes and deletions of files across the ring.
pub struct Writer {
    placement: Arc<Placement>,
    local: Arc<Local>,
    peers: Arc<dyn Peers>,
    write_quorum: usize,
    max_upload_bytes: u64,
    chunk_bytes: usize,
    tasks: TaskTracker,
    announcer: Announcer,
    /// Weak: what keeps hints (the bridge) holds the file service.
    hints: OnceLock<Weak<dyn Hints>>,
    /// Where holders skipped for a full disk are counted.
    metrics: OnceLock<Arc<crate::metrics::Metrics>>,
    /// This node's clock against its peers': out of step, it makes no
    /// new versions or tombstones.
    clock: Arc<crate::clock::Offsets>,
    /// Read leases, when they are on: a write is coordinated only by the
    /// node standing for its key, and acknowledged only once every
    /// holder's lease on it is honoured.
    leases: OnceLock<Arc<Leases>>,
}

impl Writer {
    /// A writer keeping the placement's k copies, answering uploads once
    /// `write_quorum` copies are durable; background work goes to `tasks`.
    pub fn new(
        placement: Arc<Placement>,
        local: Arc<Local>,
        peers: Arc<dyn Peers>,
        (write_quorum, max_upload_bytes, chunk_bytes): (usize, u64, usize),
        (tasks, announcer): (TaskTracker, Announcer),
    ) -> Self {
        let (hints, metrics, clock, leases) = (OnceLock::new(), OnceLock::new(), Arc::default(), OnceLock::new());
        Self {
            placement,
            local,
            peers,
            write_quorum,
            max_upload_bytes,
            chunk_bytes,
            tasks,
            announcer,
            hints,
            metrics,
            clock,
            leases,
        }
    }

    /// Honours `leases` in every write and deletion this node coordinates.
    pub fn use_leases(&self, leases: Arc<Leases>) {
        let _ = self.leases.set(leases);
    }

    /// This node's clock against its peers' (fed by the node's clock check).
    pub fn clock(&self) -> Arc<crate::clock::Offsets> {
        self.clock.clone()
    }

    /// A new version or tombstone's time, unless this node's clock is off
    /// its peers'.
    async fn stamp(&self) -> Result<u64, FileError> {
        // A node that has just joined measures its clock at once: a write
        // that comes first waits for the verdict.
        if !self.clock.judged_within(FIRST_JUDGEMENT_WITHIN).await {
            return Err(FileError::ClockOffset(
                "this node has just joined and could not measure its clock against its peers' yet: it takes \
                 writes once it has"
                    .to_owned(),
            ));
        }
        if !self.clock.trusted() {
            let off = self.clock.verdict().map_or(0.0, |v| v.median_offset_ms);
            return Err(FileError::ClockOffset(format!(
                "this node's clock is {:.0} ms off its peers' (at most {} ms is trusted): it takes no writes until \
                 its clock is corrected",
                -off,
                crate::clock::max_offset().as_millis()
            )));
        }
        Ok(crate::clock::now_ns())
    }

    /// Counts holders skipped for a full disk, and uploads routed by the
    /// ring table, in `metrics`.
    pub fn count_in(&self, metrics: Arc<crate::metrics::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// A copy meant for `target` failed with `e`: a full disk is counted
    /// (the next live successor stands in).
    fn copy_failed(&self, name: &FileName, target: &str, e: &FileError) {
        if e.kind() == ErrorKind::InsufficientStorage {
            tracing::warn!(file = %name, node = %target, "a holder's disk is full; the next live successor stands in: {e}");
            if let Some(m) = self.metrics.get() {
                m.full_holders_skipped.inc();
            }
        } else {
            tracing::warn!(file = %name, node = %target, "a copy streamed with the upload failed: {e}");
        }
    }

    /// Largest upload accepted, in bytes.
    pub fn max_upload_bytes(&self) -> u64 {
        self.max_upload_bytes
    }

    /// Stores `body` as `name` on the responsible node, which streams it to
    /// the other holders; returns once the copies are durable.
    pub async fn put<S, E>(self: &Arc<Self>, name: &FileName, overwrite: bool, body: S) -> Result<Stored, FileError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let mut body = body.map(|item| item.map_err(|e| e.to_string())).boxed();
        // A small upload is held whole, so that a responsible node lost
        // while it is being sent (cut off by the network, found dead by the
        // failure detector) costs a second try on the next live node rather
        // than the upload.
        let mut held: Vec<Bytes> = Vec::new();
        let mut size = 0;
        let whole = loop {
            match body.next().await {
                Some(Ok(chunk)) => {
                    size += chunk.len();
                    held.push(chunk);
                    if size > RETRY_MAX {
                        break false;
                    }
                }
                Some(Err(e)) => return Err(FileError::Body(e)),
                None => break true,
            }
        };
        // Streamed past the held part, an upload is tried once.
        let mut rest = (!whole).then_some(body);
        let mut attempt = 1;
        loop {
            let held_again = futures_util::stream::iter(held.clone().into_iter().map(Ok::<_, String>));
            let body: BodyStream = match rest.take() {
                Some(rest) => held_again.chain(rest).boxed(),
                None => held_again.boxed(),
            };
            let tried = async {
                // A held upload's first try goes where this node's table
                // says, without the lookup's calls; should that node be
                // lost, the next try looks it up.
                let by_table = (whole && attempt == 1).then(|| self.placement.responsible_by_table(name)).flatten();
                let responsible = &match by_table {
                    Some(node) => {
                        if let Some(m) = self.metrics.get() {
                            m.uploads_routed_by_table.inc();
                        }
                        node
                    }
                    None => self.placement.responsible(name).await?,
                };
                let replicas = self.placement.replicas() - 1;
                if self.placement.is_me(responsible) {
                    return self.store_here(name, StoreHow::New { overwrite, replicas }, body).await;
                }
                let order = StoreOrder { name: name.clone(), new: Some((overwrite, replicas)), copy_of: None };
                let reply = self.peers.store(&responsible.addr, order, body, self.max_upload_bytes).await?;
                Ok(Stored { entry: reply.entry, holders: reply.holders, copies_wanted: reply.copies_wanted })
            };
            match tried.await {
                // An earlier try stored it after all (only its answer was
                // lost): the same bytes under that name are this upload.
                Err(e) if attempt > 1 && e.kind() == ErrorKind::AlreadyExists => {
                    let mut hasher = blake3::Hasher::new();
                    for chunk in &held {
                        hasher.update(chunk);
                    }
                    let ours = crate::integrity::Digest(*hasher.finalize().as_bytes());
                    return match self.stored_as(name, ours).await {
                        Some(stored) => Ok(stored),
                        None => Err(e),
                    };
                }
                Err(e) if whole && try_again(attempt, &e) => {
                    tracing::warn!(file = %name, "a node was lost while the upload was placed, trying again: {e}");
                    attempt += 1;
                    pause_before(attempt).await;
                }
                answer => return answer,
            }
        }
    }

    /// `name` as a holder has it, if its bytes hash to `digest`.
    async fn stored_as(&self, name: &FileName, digest: crate::integrity::Digest) -> Option<Stored> {
        for holder in self.placement.holders(name).await.ok()? {
            let known = if self.placement.is_me(&holder) {
                self.local.known(name).await
            } else {
                self.peers.stat(&holder.addr, name).await
            };
            if let Ok(Known::File(entry)) = known
                && entry.blake3 == Some(digest)
            {
                return Some(Stored { entry, holders: vec![holder.addr], copies_wanted: 1 });
            }
        }
        None
    }

    /// Stores `body` here as `how` says: a new upload is written here and
    /// streamed to `replicas` successors as it arrives; a copy of a known
    /// version is checked against what this node knows (a copy of a version
    /// deleted or replaced here since is refused) and discarded if its bytes
    /// do not hash to the version's hash.
    pub async fn store_here<S, E>(
        self: &Arc<Self>,
        name: &FileName,
        how: StoreHow,
        body: S,
    ) -> Result<Stored, FileError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let (version_ns, expected) = match how {
            StoreHow::New { overwrite, replicas } => return self.store_new(name, overwrite, body, replicas).await,
            StoreHow::Copy { version_ns, expected } => (version_ns, expected),
        };
        // Versions made here after seeing this one are larger; one from a
        // clock too far ahead is refused.
        crate::clock::observe(version_ns)?;
        match self.local.known(name).await? {
            Known::Deleted(at) if version_ns <= at => {
                return Err(FileError::Deleted { name: name.to_string(), at });
            }
            Known::File(mine) if mine.modified_ns > version_ns => {
                return Err(FileError::Superseded { name: name.to_string(), at: mine.modified_ns });
            }
            _ => {}
        }
        let write =
            LocalWrite { name, overwrite: true, modified_ns: Some(version_ns), expected, limit: self.max_upload_bytes };
        let entry = self.local.write(write, body).await?;
        Ok(Stored { entry, holders: vec![self.placement.me().addr], copies_wanted: 1 })
    }

    /// Stores a new upload here and on `replicas` successors at once;
    /// answers when the copies are durable (see the module's notes).
    async fn store_new<S, E>(
        self: &Arc<Self>,
        name: &FileName,
        overwrite: bool,
        body: S,
        replicas: usize,
    ) -> Result<Stored, FileError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let leases = self.leases.get();
        let key = Id::hash(name.as_str());
        if let Some(leases) = leases {
            leases.stand_for(key).await?;
        }
        let version_ns = self.stamp().await?;
        // Refused here (exists, no plugin), nothing is sent anywhere.
        let mut local = self.local.plugins().upload(name, overwrite, Some(version_ns)).await?;
        let candidates = self.placement.successors(usize::MAX);
        let (first, spare) = candidates.split_at(replicas.min(candidates.len()));
        let mut copies: Vec<Box<dyn CopySink>> =
            first.iter().map(|target| self.peers.open_copy(&target.addr, name, version_ns)).collect();

        let body = std::pin::pin!(body);
        let mut body = Gather::new(body, self.chunk_bytes, self.max_upload_bytes);
        while let Some(batch) = body.next().await {
            match batch {
                Ok(batch) => fan_out(&mut local, &mut copies, batch).await?,
                Err(e) => return Err(abandon(local, e).await),
            }
        }
        // Dropped unfinished, the copies end without their commit and every
        // holder discards what it got.
        let finished = local.finish(None).await?;
        self.local.stored(name, &finished).await;
        let entry = finished.entry;
        let root = entry.blake3.expect("the host hashed what it wrote");

        let copies_wanted = 1 + replicas.min(candidates.len());
        // (Read leases are on only with a write quorum of k: every holder is
        // waited for, and a lease honoured before the answer.)
        let quorum = self.write_quorum.min(copies_wanted);
        let me = self.placement.me().addr;
        let mut holders = vec![me.clone()];
        let mut missed = Vec::new();
        let mut commits: FuturesUnordered<_> = copies
            .into_iter()
            .zip(first)
            .map(|(copy, target)| {
                let target = target.addr.clone();
                copy.commit(root).map(move |outcome| (target, outcome))
            })
            .collect();
        while holders.len() < quorum {
            match commits.next().await {
                Some((_, Ok(addr))) => holders.push(addr),
                Some((target, Err(e))) => {
                    self.copy_failed(name, &target, &e);
                    missed.push(target);
                }
                None => break,
            }
        }
        let stored = Change::Stored { blake3: root, size: entry.size, sources: vec![me], inline: None };
        let hint = HandOff { name: name.to_string(), version_ns: entry.modified_ns, change: stored };
        if !commits.is_empty() {
            // The answer does not wait for these (write quorum below k).
            let (name, writer, hint) = (name.clone(), self.clone(), hint.clone());
            self.tasks.spawn(crate::trace::carried(async move {
                while let Some((target, outcome)) = commits.next().await {
                    if let Err(e) = outcome {
                        // No stand-in is made after the answer: the hint and
                        // the repair loop bring the copy.
                        tracing::warn!(file = %name, node = %target, "a copy streamed with the upload failed: {e}");
                        writer.hint(target, hint.clone());
                    }
                }
            }));
        }
        for target in missed {
            self.hint(target, hint.clone());
        }
        // Holders that failed are replaced by the next live successors,
        // copied from the durable local file.
        for target in spare {
            if holders.len() >= quorum {
                break;
            }
            match self.replicate(target, name).await {
                Ok(addr) => holders.push(addr),
                Err(e) => self.copy_failed(name, &target.addr, &e),
            }
        }
        if holders.len() < quorum {
            tracing::warn!(file = %name, copies = holders.len(), quorum, "fewer live nodes than copies wanted");
        }
        if let Some(leases) = leases {
            leases.settle(key, &holders).await;
            leases.still_stands(key)?;
        }
        self.announcer.announce(FileChange::Stored(NetworkEntry {
            name: name.to_string(),
            size: entry.size,
            blake3: root,
            modified_ns: entry.modified_ns,
            holders: holders.clone(),
        }));
        Ok(Stored { entry, holders, copies_wanted })
    }

    /// Has `hint` kept for `holder`, which missed a write, if hand-offs are
    /// kept at all (see [`Writer::keep_hints`]), in the background.
    fn hint(self: &Arc<Self>, holder: String, hint: HandOff) {
        let writer = self.clone();
        self.tasks.spawn(crate::trace::carried(async move {
            if let Err(e) = writer.hint_now(&holder, hint.clone()).await {
                tracing::warn!(file = %hint.name, node = %holder, "could not keep a hand-off: {e}");
            }
        }));
    }

    /// Keeps `hint` for `holder`; answers whether hand-offs are kept at all.
    /// A small file's content goes along if this node has that version.
    pub async fn hint_now(&self, holder: &str, mut hint: HandOff) -> Result<bool, FileError> {
        let Some(hints) = self.hints.get().and_then(Weak::upgrade) else {
            return Ok(false);
        };
        if let Change::Stored { size, inline: inline @ None, .. } = &mut hint.change
            && *size <= INLINE_MAX
            && let Ok(name) = FileName::parse(&hint.name)
        {
            *inline = self.small_content(&name, hint.version_ns).await;
        }
        hints.hand_off(holder, hint).await.map(|()| true)
    }

    /// This node's copy of version `version_ns` of `name`, whole (for small
    /// files only), if it has that version.
    async fn small_content(&self, name: &FileName, version_ns: u64) -> Option<Vec<u8>> {
        // Kept in memory since it was written, most likely.
        if let Ok(Some(entry)) = self.local.entry(name).await
            && entry.modified_ns == version_ns
            && let Some(kept) = entry.blake3.and_then(|digest| self.local.cache().peek(&digest))
        {
            return Some(kept.to_vec());
        }
        let handle = self.local.open(name).await.ok()??;
        if handle.entry().modified_ns != version_ns || handle.entry().size > INLINE_MAX {
            return None;
        }
        let mut content = Vec::new();
        let mut stream = whole(handle);
        while let Some(chunk) = stream.next().await {
            content.extend_from_slice(&chunk.ok()?);
        }
        Some(content)
    }

    /// Keeps hand-offs for holders that miss a write through `hints`.
    pub fn keep_hints(&self, hints: &Arc<dyn Hints>) {
        let _ = self.hints.set(Arc::downgrade(hints));
    }

    /// Copies this node's `name` to `target`; answers `target`'s address.
    pub async fn replicate(&self, target: &NodeRef, name: &FileName) -> Result<String, FileError> {
        let handle = self.local.open(name).await?.ok_or_else(|| FileError::NotFound(name.to_string()))?;
        let entry = handle.entry().clone();
        let blake3 = entry.blake3.ok_or_else(|| FileError::Store(format!("{name} has no hash")))?;
        let order = StoreOrder { name: name.clone(), new: None, copy_of: Some((entry.modified_ns, blake3)) };
        let body = whole(handle).map(|item| item.map_err(|e| e.to_string())).boxed();
        self.peers.store(&target.addr, order, body, u64::MAX).await?;
        Ok(target.addr.clone())
    }

    /// Deletes `name` on every holder: the responsible node records the
    /// deletion and passes it to its successors; answers once a write quorum
    /// recorded it.
    pub async fn delete(self: &Arc<Self>, name: &FileName) -> Result<Deleted, FileError> {
        // A responsible node lost while it is asked (cut off, found dead by
        // the failure detector) costs a second try on the next live node,
        // as an upload's does: a deletion is recorded again harmlessly.
        let (mut attempt, mut asked_and_lost) = (1, None::<(NodeRef, FileError)>);
        let deleted = loop {
            let responsible = match self.placement.responsible(name).await {
                Ok(node) => node,
                Err(e) if try_again(attempt, &e) => {
                    attempt += 1;
                    pause_before(attempt).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let replicas = self.placement.replicas() - 1;
            if self.placement.is_me(&responsible) {
                break self.delete_here(name, None, replicas).await?;
            }
            match self.peers.delete(&responsible.addr, name, None, replicas).await {
                Err(e) if try_again(attempt, &e) => {
                    tracing::warn!(file = %name, "a node was lost while the deletion was placed, trying again: {e}");
                    attempt += 1;
                    pause_before(attempt).await;
                    if e.kind() == ErrorKind::PeerUnavailable {
                        asked_and_lost = Some((responsible, e));
                    }
                }
                answer => break answer?,
            }
        };
        if deleted.existed {
            return Ok(deleted);
        }
        // "Not found" would be a guess while a node that would hold it does
        // not answer: a member cut off, or the one asked before and lost.
        let holders = self.placement.holders(name).await?;
        let lost_asked = asked_and_lost.filter(|(node, _)| {
            !deleted.holders.contains(&node.addr) && self.placement.would_hold_placed(name, &holders, node)
        });
        let (lost, why) = match (self.placement.lost_holder(name, &holders), lost_asked) {
            (Some(lost), _) => (lost.addr.clone(), format!("{} may hold it but does not answer", lost.addr)),
            (None, Some((node, e))) => {
                (node.addr, format!("the node asked first was lost before it answered ({e}) and may have had it"))
            }
            (None, None) => return Ok(deleted),
        };
        Err(FileError::remote(
            &lost,
            ErrorKind::PeerUnavailable,
            format!(
                "no node that answers had {name}, and {why}: the deletion is recorded and applies to its copy when it is back"
            ),
        ))
    }

    /// Records the deletion of `name` at `at` (none: now) here, removes this
    /// node's copy if it is not newer, then does the same on `replicas`
    /// successors, answering once a write quorum recorded it (the others go
    /// on in the background).
    pub async fn delete_here(
        self: &Arc<Self>,
        name: &FileName,
        at: Option<u64>,
        replicas: usize,
    ) -> Result<Deleted, FileError> {
        let leases = self.leases.get().filter(|_| replicas > 0);
        let key = Id::hash(name.as_str());
        if let Some(leases) = leases {
            leases.stand_for(key).await?;
        }
        let at = match at {
            Some(at) => {
                crate::clock::observe(at)?;
                at
            }
            None => self.stamp().await?,
        };
        let existed_here = self.local.forget(name, at).await?;
        let targets = self.placement.successors(replicas);
        let wanted = write_quorum(targets.len() + 1);
        let mut deletes: FuturesUnordered<_> = targets
            .into_iter()
            .map(|target| {
                let (peers, name) = (self.peers.clone(), name.clone());
                // Spawned: a deletion under way finishes even if the client
                // goes away.
                self.tasks.spawn(crate::trace::carried(async move {
                    match peers.delete(&target.addr, &name, Some(at), 0).await {
                        Ok(reply) => Ok((target.addr, reply.existed)),
                        Err(e) => Err((target.addr, e)),
                    }
                }))
            })
            .collect();
        let mut holders = vec![self.placement.me().addr];
        let mut existed = existed_here;
        // Under read leases the other holders are then given a lease's
        // length to record it; those that do not are waited out by `settle`.
        let mut rest_until = None;
        loop {
            if holders.len() >= wanted {
                match leases {
                    None => break,
                    Some(leases) => {
                        rest_until.get_or_insert_with(|| tokio::time::Instant::now() + leases.duration());
                    }
                }
            }
            let next = match rest_until {
                Some(until) => match tokio::time::timeout_at(until, deletes.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
                None => deletes.next().await,
            };
            match next {
                Some(Ok(Ok((addr, had)))) => {
                    holders.push(addr);
                    existed |= had;
                }
                Some(Ok(Err((target, e)))) => {
                    tracing::warn!(file = %name, node = %target, "a deletion was not recorded: {e}");
                    self.hint(target, HandOff { name: name.to_string(), version_ns: at, change: Change::Deleted });
                }
                Some(Err(e)) => tracing::warn!(file = %name, "a deletion's task failed: {e}"),
                None => break,
            }
        }
        if let Some(leases) = leases {
            leases.settle(key, &holders).await;
            leases.still_stands(key)?;
        }
        if holders.len() < wanted {
            return Err(FileError::NoQuorum { name: name.to_string(), stored: holders.len(), wanted });
        }
        if replicas > 0 {
            // The responsible node announces it (the others only follow).
            self.announcer.announce(FileChange::Deleted { name: name.to_string(), at });
        }
        Ok(Deleted { name: name.to_string(), existed, deleted_ns: at, holders })
    }
}

/// Writes `batch` here and sends it to every copy still streaming.
async fn fan_out(local: &mut UploadHandle, copies: &mut [Box<dyn CopySink>], batch: Batch) -> Result<(), FileError> {
    if !copies.is_empty() {
        let chunk = batch.to_bytes();
        for copy in copies.iter_mut() {
            copy.send(chunk.clone()).await;
        }
    }
    local.write(batch.into_pieces()).await?;
    Ok(())
}

/// Gives up on an upload: nothing is kept here, and the copies, dropped
/// without their commit, are discarded by their holders.
async fn abandon(local: UploadHandle, error: FileError) -> FileError {
    local.abort().await;
    error
}
