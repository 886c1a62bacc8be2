//! [`Files`]: the node's file service, what the REST API and the RPC
//! server call. It owns its parts, each with its own state: where files
//! belong ([`Placement`]), this node's store ([`Local`]), writes and
//! deletions ([`Writer`]), reads ([`Reader`]) and repair ([`Repairer`]), and
//! the tasks they spawn, which shutdown waits for.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio_util::task::TaskTracker;

use super::cache::ReadCache;
use super::error::FileError;
use super::handoff::{Change, HandOff, Hints, Taken};
use super::index::{Announcer, FileChange, NetworkEntry, NetworkIndex, NetworkListing};
use super::known::Known;
use super::lease::{LeaseCounters, Leases, spawn_renewal};
use super::local::Local;
use super::network::{Deleted, LeaseAnswer, NodeListing};
use super::network::{Peers, Ring};
use super::placement::Placement;
use super::read::{Reader, Source};
use super::receive::Receiver;
use super::repair::Repairer;
use super::tombstones::Tombstones;
use super::write::{StoreHow, Stored, Writer};
use crate::chord::NodeRef;
use crate::plugins::{DownloadHandle, FileEntry, Listing, PluginHost};
use crate::store::FileName;
use crate::store::digest::{KeyRange, Sum};

/// The node's file service.
pub struct Files {
    placement: Arc<Placement>,
    local: Arc<Local>,
    peers: Arc<dyn Peers>,
    writer: Arc<Writer>,
    reader: Arc<Reader>,
    repairer: Arc<Repairer>,
    receiver: Arc<Receiver>,
    index: Arc<NetworkIndex>,
    announcer: Announcer,
    tasks: TaskTracker,
    /// Read leases, when they are on.
    leases: Option<Arc<Leases>>,
}

/// How a node keeps files (from [`crate::NodeConfig`]).
#[derive(Debug, Clone, Copy)]
pub struct FilesSettings {
    /// Copies kept of each file (k, at least 1).
    pub replicas: usize,
    /// Durable copies a new upload waits for before it is acknowledged
    /// (1 to k).
    pub write_quorum: usize,
    /// Largest upload accepted, in bytes.
    pub max_upload_bytes: u64,
    /// Bytes gathered before they go to a plugin's stream or the wire.
    pub chunk_bytes: usize,
    /// Bytes of this node's copies read back and checked per repair pass.
    pub scrub_bytes: u64,
    /// Whether a node gone starts a repair pass at once.
    pub repair_on_departure: bool,
    /// Holders a large download reads from at once.
    pub download_sources: usize,
    /// Bytes of small files' content kept in memory.
    pub read_cache_bytes: u64,
    /// Length of a read lease (see `files::lease`); none: holders are
    /// asked on every read.
    pub read_lease: Option<Duration>,
}

/// What became of a file meant for a node that did not answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The node answers: it has its copy if it is a holder.
    Stored,
    /// It does not answer, and a hand-off is kept for it.
    Queued,
    /// It does not answer, and would not hold the file anyway.
    NotAHolder,
    /// It does not answer, and this node keeps no hand-offs (no broker).
    NoBroker,
}

impl Files {
    /// The file service of a node, with its plugins, its place in the ring,
    /// clients of the other nodes, its tombstones and its settings.
    pub fn new(
        plugins: Arc<PluginHost>,
        ring: Arc<dyn Ring>,
        peers: Arc<dyn Peers>,
        tombstones: Tombstones,
        settings: FilesSettings,
    ) -> Self {
        let FilesSettings {
            replicas,
            write_quorum,
            max_upload_bytes,
            chunk_bytes,
            scrub_bytes,
            repair_on_departure,
            download_sources,
            read_cache_bytes,
            read_lease,
        } = settings;
        // A lease needs every holder's copy before an answer: none with a
        // write quorum below k, nor with one copy.
        let leases = read_lease
            .filter(|_| replicas > 1 && write_quorum >= replicas)
            .map(|d| Arc::new(Leases::new(ring.clone(), replicas, d)));
        let tasks = TaskTracker::new();
        let index = Arc::new(NetworkIndex::new());
        let announcer = Announcer::new(index.clone());
        let placement = Arc::new(Placement::new(ring, replicas));
        let local = Arc::new(Local::new(plugins, tombstones, chunk_bytes, ReadCache::new(read_cache_bytes)));
        let writer = Arc::new(Writer::new(
            placement.clone(),
            local.clone(),
            peers.clone(),
            (write_quorum, max_upload_bytes, chunk_bytes),
            (tasks.clone(), announcer.clone()),
        ));
        let reader =
            Arc::new(Reader::new(placement.clone(), local.clone(), peers.clone(), tasks.clone(), download_sources));
        if let Some(leases) = &leases {
            writer.use_leases(leases.clone());
            reader.use_leases(leases.clone());
        }
        let receiver = Arc::new(Receiver::new(local.clone(), writer.clone(), peers.clone()));
        let parts = (writer.clone(), reader.clone(), receiver.clone());
        let repair = (scrub_bytes, repair_on_departure);
        let repairer = Arc::new(Repairer::new(placement.clone(), local.clone(), peers.clone(), parts, repair));
        Self { placement, local, peers, writer, reader, repairer, receiver, index, announcer, tasks, leases }
    }

    /// Answers `requester`'s request for a read lease on this node's range
    /// (`epoch`: the lease it still trusts); refused when leases are off.
    pub async fn grant_lease(&self, requester: &NodeRef, epoch: u64) -> Result<LeaseAnswer, FileError> {
        let Some(leases) = &self.leases else {
            return Ok(LeaseAnswer::Refused("this node grants no read leases (--read-lease-ms 0)".into()));
        };
        leases.grant(requester, epoch, &self.local).await
    }

    /// Renews this node's read leases until `shutdown`, when they are on.
    pub fn spawn_lease_renewal(
        &self,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let leases = self.leases.clone()?;
        Some(spawn_renewal(leases, self.peers.clone(), self.local.clone(), shutdown))
    }

    /// Largest upload accepted, in bytes.
    pub fn max_upload_bytes(&self) -> u64 {
        self.writer.max_upload_bytes()
    }

    /// This node's plugins.
    pub fn plugins(&self) -> &Arc<PluginHost> {
        self.local.plugins()
    }

    /// This node's record of deletions.
    pub fn tombstones(&self) -> &Tombstones {
        self.local.tombstones()
    }

    /// The sums of this node's files and tombstones over `ranges`.
    pub async fn sums(&self, ranges: Vec<KeyRange>) -> Result<Vec<Sum>, FileError> {
        self.local.sums(ranges).await
    }

    /// This node's files and tombstones in `ranges`.
    pub async fn entries_in(&self, ranges: &[KeyRange]) -> Result<NodeListing, FileError> {
        self.local.entries_in(ranges).await
    }

    /// This node's own files, as it serves them (without copies kept
    /// through a long absence that no holder has confirmed yet).
    pub async fn list_here(&self) -> Result<Listing, FileError> {
        self.local.list().await
    }

    /// Counts repair passes, holders skipped for a full disk, and reads and
    /// uploads placed by the ring table in `metrics`.
    pub fn count_in(&self, metrics: Arc<crate::metrics::Metrics>) {
        self.writer.count_in(metrics.clone());
        self.reader.count_placed_by_table(metrics.reads_placed_by_table.clone());
        self.local.cache().count_in(metrics.read_cache_hits.clone(), metrics.read_cache_misses.clone());
        if let Some(leases) = &self.leases {
            let (reads, waits) = (metrics.reads_under_lease.clone(), metrics.lease_waits.clone());
            leases.count_in(LeaseCounters { reads, waits });
        }
        self.repairer.count_passes(metrics);
    }

    /// The repair loop's part, to run it (see [`super::spawn_repair`]).
    pub fn repairer(&self) -> &Arc<Repairer> {
        &self.repairer
    }

    /// Writes again the journaled writes a crash left (see
    /// `Local::replay`); answers how many were.
    pub async fn replay(&self, writes: Vec<crate::store::journal::Journaled>) -> Result<usize, FileError> {
        self.local.replay(writes).await
    }

    /// Keeps hand-offs for holders that miss a write through `hints`.
    pub fn keep_hints(&self, hints: &Arc<dyn Hints>) {
        self.writer.keep_hints(hints);
    }

    /// After `stored` was stored on the ring for a client that meant it for
    /// the node at `node` (the legacy `POST /upload/` with `node_address`):
    /// whether that node has it or will get it.
    pub async fn meant_for(&self, node: &str, stored: &Stored) -> Result<Delivery, FileError> {
        let target = NodeRef::new(node.to_owned());
        if self.placement.answers(&target).await {
            return Ok(Delivery::Stored);
        }
        let name = FileName::parse(&stored.entry.name).map_err(|e| FileError::Store(e.to_string()))?;
        if !self.placement.would_hold(&name, &target).await? {
            return Ok(Delivery::NotAHolder);
        }
        let blake3 = stored.entry.blake3.ok_or_else(|| FileError::Store(format!("{name} has no hash")))?;
        let sources = stored.holders.clone();
        let change = Change::Stored { blake3, size: stored.entry.size, sources, inline: None };
        let hint = HandOff { name: name.to_string(), version_ns: stored.entry.modified_ns, change };
        Ok(if self.writer.hint_now(node, hint).await? { Delivery::Queued } else { Delivery::NoBroker })
    }

    /// Applies a hand-off addressed to this node (see [`Receiver::take`]).
    pub async fn take_hand_off(&self, name: &FileName, hint: &HandOff) -> Result<Taken, FileError> {
        self.receiver.take(name, hint).await
    }

    /// Where `name` belongs: the responsible node first, then its successors.
    pub async fn holders(&self, name: &FileName) -> Result<Vec<NodeRef>, FileError> {
        self.placement.holders(name).await
    }

    /// Stores `body` as `name` across the ring (see [`Writer::put`]).
    pub async fn put<S, E>(&self, name: &FileName, overwrite: bool, body: S) -> Result<Stored, FileError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        self.writer.put(name, overwrite, body).await
    }

    /// Stores `body` on this node as `how` says (see [`Writer::store_here`]).
    pub async fn store_here<S, E>(&self, name: &FileName, how: StoreHow, body: S) -> Result<Stored, FileError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        self.writer.store_here(name, how, body).await
    }

    /// Deletes `name` on every holder (see [`Writer::delete`]).
    pub async fn delete(&self, name: &FileName) -> Result<Deleted, FileError> {
        self.writer.delete(name).await
    }

    /// Records the deletion of `name` here and on `replicas` successors
    /// (see [`Writer::delete_here`]).
    pub async fn delete_here(&self, name: &FileName, at: Option<u64>, replicas: usize) -> Result<Deleted, FileError> {
        self.writer.delete_here(name, at, replicas).await
    }

    /// This node's clock against its peers' (see [`crate::clock::Offsets`]):
    /// the node's clock check feeds it, and writes are refused while it is
    /// out of step.
    pub fn clock(&self) -> Arc<crate::clock::Offsets> {
        self.writer.clock()
    }

    /// Opens the newest version of `name` wherever it is (see [`Reader::open`]).
    pub async fn open(&self, name: &FileName) -> Result<Source, FileError> {
        self.reader.open(name).await
    }

    /// A node serving the newest version of `name` (see [`Reader::locate`]).
    pub async fn locate(&self, name: &FileName) -> Result<(String, FileEntry), FileError> {
        self.reader.locate(name).await
    }

    /// This node's copy of `name`, recorded (see [`Local::open`]).
    pub async fn open_here(&self, name: &FileName) -> Result<Option<DownloadHandle>, FileError> {
        self.local.open(name).await
    }

    /// What this node knows of `name`: its version and its tombstone.
    pub async fn known_here(&self, name: &FileName) -> Result<Known, FileError> {
        self.local.known(name).await
    }

    /// This node's copy of `name` failed its check (see [`Reader::damaged`]).
    pub fn damaged(&self, name: &FileName, version: FileEntry) {
        self.reader.damaged(name, version);
    }

    /// Before this node leaves: hands its files to their next holders.
    pub async fn hand_over(&self) -> usize {
        self.repairer.hand_over().await
    }

    /// Waits, up to `limit`, for the work this service spawned (copies
    /// finishing in the background, streams being served) to end; new work
    /// is refused from then on.
    pub async fn shut_down(&self, limit: Duration) {
        self.tasks.close();
        if tokio::time::timeout(limit, self.tasks.wait()).await.is_err() {
            tracing::warn!(left = self.tasks.len(), "stopped waiting for file tasks");
        }
    }

    /// Every node's files, merged by name (the newest version wins), with
    /// their holders: from the live index once it is kept (see
    /// [`spawn_index_refresh`]), else by asking every node.
    pub async fn network_list(&self) -> NetworkListing {
        if self.index.is_ready() {
            return NetworkListing { entries: self.index.list(), missing: Vec::new() };
        }
        self.walk_network().await
    }

    /// The files in the network whose name starts with `prefix`.
    pub async fn search(&self, prefix: &str) -> Vec<NetworkEntry> {
        if self.index.is_ready() {
            return self.index.search(prefix);
        }
        self.walk_network().await.entries.into_iter().filter(|e| e.name.starts_with(prefix)).collect()
    }

    /// The live network index, which changes heard from other nodes update.
    pub fn index(&self) -> &Arc<NetworkIndex> {
        &self.index
    }

    /// The changes this node makes to the network's files, from now on.
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<FileChange> {
        self.announcer.subscribe()
    }

    /// Fills the live index from a walk of the ring.
    pub async fn refresh_index(&self) {
        self.index.walk_started();
        let walked = self.walk_network().await;
        self.index.walked(walked.entries);
    }

    /// Asks every live node for its files and tombstones and merges them;
    /// says which nodes did not answer.
    pub async fn walk_network(&self) -> NetworkListing {
        let me = self.placement.me();
        let nodes = self.placement.live_nodes().await;
        let listings = futures_util::future::join_all(nodes.iter().map(|node| async {
            let listing = if node.id == me.id {
                let listing = self.local.list().await;
                listing.map(|l| (l.entries.to_vec(), self.local.tombstones().all()))
            } else {
                self.peers.list(&node.addr).await
            };
            (node.addr.clone(), listing)
        }))
        .await;
        let mut merged: BTreeMap<String, NetworkEntry> = BTreeMap::new();
        let mut deleted: BTreeMap<String, u64> = BTreeMap::new();
        let mut missing = Vec::new();
        for (addr, listing) in listings {
            let (entries, tombstones) = match listing {
                Ok(listing) => listing,
                Err(e) => {
                    tracing::warn!(node = %addr, "listing failed: {e}");
                    missing.push(addr);
                    continue;
                }
            };
            for (name, at) in tombstones {
                let slot = deleted.entry(name).or_insert(at);
                *slot = (*slot).max(at);
            }
            // A file not hashed yet is listed once its node has recorded it.
            for (e, blake3) in entries.into_iter().filter_map(|e| e.blake3.map(|d| (e, d))) {
                let slot = merged.entry(e.name.clone()).or_insert_with(|| NetworkEntry {
                    name: e.name.clone(),
                    size: e.size,
                    blake3,
                    modified_ns: e.modified_ns,
                    holders: Vec::new(),
                });
                if blake3 != slot.blake3 && e.modified_ns > slot.modified_ns {
                    // A newer version: its holders replace the older one's.
                    slot.size = e.size;
                    slot.blake3 = blake3;
                    slot.modified_ns = e.modified_ns;
                    slot.holders.clear();
                }
                if blake3 == slot.blake3 {
                    slot.holders.push(addr.clone());
                }
            }
        }
        // Copies not yet removed of a file deleted since are not listed.
        merged.retain(|name, e| deleted.get(name).is_none_or(|at| e.modified_ns > *at));
        NetworkListing { entries: merged.into_values().collect(), missing }
    }
}

/// Keeps `files`' live network index: fills it from a walk of the ring now,
/// then again every `every` (changes heard in between keep it current; the
/// walks heal any that were missed), until `shutdown`.
pub fn spawn_index_refresh(
    files: Arc<Files>,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = files.refresh_index() => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
    })
}
