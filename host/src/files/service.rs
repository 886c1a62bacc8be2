//! [`Files`]: the node's file service over the ring.

use std::collections::{BTreeMap, HashSet};
use std::ops::RangeInclusive;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{BoxStream, FuturesUnordered};
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::known::Known;
use super::peers::{Peers, entry_from_pb};
use super::tombstones::{Tombstones, now_ns};
use super::{FileError, placement, store_local};
use crate::chord::{ChordNode, Id, NodeRef};
use crate::plugins::{FileEntry, PluginError, PluginHost, Refusal};
use crate::rpc::GrpcTransport;
use crate::rpc::files_pb as pb;
use crate::store::FileName;

/// The node's file service: its own plugins, its place in the ring, and
/// clients of the other nodes.
pub struct Files {
    plugins: Arc<PluginHost>,
    ring: Arc<ChordNode<GrpcTransport>>,
    pub(super) peers: Peers,
    pub(super) tombstones: Tombstones,
    pub(super) replicas: usize,
    max_upload_bytes: u64,
    chunk_bytes: usize,
}

/// A stored file and the nodes holding it when the upload was acknowledged.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The file's entry.
    pub entry: FileEntry,
    /// Addresses of the holders, the responsible node first.
    pub holders: Vec<String>,
}

/// A deletion and the nodes that recorded it when it was acknowledged.
#[derive(Debug, Clone, Serialize)]
pub struct Deleted {
    /// The file's name.
    pub name: String,
    /// Whether any of those nodes had a copy.
    pub existed: bool,
    /// When it was deleted, ns since the Unix epoch (the responsible node's clock).
    pub deleted_ns: u64,
    /// Addresses of the nodes that recorded it, the responsible node first.
    pub holders: Vec<String>,
}

/// One file in the network listing.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkEntry {
    /// The name.
    pub name: String,
    /// Size of the newest version.
    pub size: u64,
    /// SHA-256 of the newest version.
    pub sha256: String,
    /// Modification time of the newest version.
    pub modified_ns: u64,
    /// Nodes holding the newest version.
    pub holders: Vec<String>,
}

impl Files {
    /// The file service of a node keeping `replicas` copies (k) of each file.
    pub fn new(
        plugins: Arc<PluginHost>,
        ring: Arc<ChordNode<GrpcTransport>>,
        peers: Peers,
        tombstones: Tombstones,
        replicas: usize,
        max_upload_bytes: u64,
        chunk_bytes: usize,
    ) -> Self {
        Self { plugins, ring, peers, tombstones, replicas: replicas.max(1), max_upload_bytes, chunk_bytes }
    }

    /// Largest upload accepted, in bytes.
    pub fn max_upload_bytes(&self) -> u64 {
        self.max_upload_bytes
    }

    /// This node's plugins.
    pub fn plugins(&self) -> &Arc<PluginHost> {
        &self.plugins
    }

    /// This node's record of deletions.
    pub fn tombstones(&self) -> &Tombstones {
        &self.tombstones
    }

    /// This node's place in the ring.
    pub fn ring(&self) -> &Arc<ChordNode<GrpcTransport>> {
        &self.ring
    }

    /// Where `name` belongs: the responsible node first, then its successors.
    pub async fn holders(&self, name: &FileName) -> Result<Vec<NodeRef>, FileError> {
        let (responsible, _) = self.ring.lookup(Id::hash(name.as_str())).await?;
        let successors = if responsible.id == self.ring.me().id {
            self.ring.snapshot().successors().to_vec()
        } else {
            use crate::chord::Transport;
            self.ring.transport().neighbours(&responsible).await.map(|n| n.successors).unwrap_or_default()
        };
        Ok(placement::holders(&responsible, &successors, self.replicas))
    }

    /// Stores `body` as `name` on the responsible node, which copies it to
    /// its successors; returns once a write quorum holds it.
    pub async fn put<S, E>(self: &Arc<Self>, name: &FileName, overwrite: bool, body: S) -> Result<Stored, FileError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let holders = self.holders(name).await?;
        let responsible = &holders[0];
        if responsible.id == self.ring.me().id {
            return self.store_here(name, overwrite, 0, body, self.replicas - 1).await;
        }
        let header = pb::StoreHeader {
            name: name.as_str().to_owned(),
            overwrite,
            replicas: (self.replicas - 1) as u32,
            version_ns: 0,
        };
        let reply = self.peers.store(&responsible.addr, header, body, self.max_upload_bytes).await?;
        let entry = reply.entry.map(entry_from_pb).ok_or_else(|| FileError::Peer {
            node: responsible.addr.clone(),
            code: tonic::Code::Internal,
            message: "store reply without entry".into(),
        })?;
        Ok(Stored { entry, holders: reply.holders })
    }

    /// Stores `body` here, then copies it to `replicas` successors, answering
    /// once a majority of the copies exist (the others go on). `version_ns`
    /// is 0 for a new upload, else the modification time of the version this
    /// is a copy of: a copy of a version deleted since is refused.
    pub async fn store_here<S, E>(
        self: &Arc<Self>,
        name: &FileName,
        overwrite: bool,
        version_ns: u64,
        body: S,
        replicas: usize,
    ) -> Result<Stored, FileError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        if let Some(at) = self.tombstones.get(name).filter(|at| version_ns != 0 && version_ns <= *at) {
            return Err(FileError::Deleted { name: name.to_string(), at });
        }
        let entry = store_local(&self.plugins, name, overwrite, body, self.max_upload_bytes, self.chunk_bytes).await?;
        if let Err(e) = self.tombstones.clear_before(name, entry.modified_ns).await {
            tracing::warn!(file = %name, "could not clear its tombstone: {e}");
        }
        let targets = self.successors(replicas);
        let copies = targets.into_iter().map(|t| tokio::spawn(self.clone().replicate(t, name.clone()))).collect();
        let holders = self.await_quorum(name, copies).await?;
        Ok(Stored { entry, holders })
    }

    /// Up to `count` of this node's successors, itself excluded.
    fn successors(&self, count: usize) -> Vec<NodeRef> {
        let me = self.ring.me().id;
        self.ring.snapshot().successors().iter().filter(|n| n.id != me).take(count).cloned().collect()
    }

    /// This node and the nodes of `copies` that succeed, once they make a
    /// write quorum of the group; the rest go on in the background.
    async fn await_quorum(
        &self,
        name: &FileName,
        copies: Vec<tokio::task::JoinHandle<Result<String, FileError>>>,
    ) -> Result<Vec<String>, FileError> {
        let wanted = placement::write_quorum(copies.len() + 1);
        let mut holders = vec![self.ring.me().addr.clone()];
        let mut copies: FuturesUnordered<_> = copies.into_iter().collect();
        while holders.len() < wanted {
            match copies.next().await {
                Some(Ok(Ok(addr))) => holders.push(addr),
                Some(Ok(Err(e))) => tracing::warn!(file = %name, "a copy was not updated: {e}"),
                Some(Err(e)) => tracing::warn!(file = %name, "a copy's task failed: {e}"),
                None => break,
            }
        }
        if holders.len() < wanted {
            return Err(FileError::NoQuorum { name: name.to_string(), stored: holders.len(), wanted });
        }
        Ok(holders)
    }

    /// Deletes `name` on every holder: the responsible node records the
    /// deletion and passes it to its successors; answers once a write quorum
    /// recorded it.
    pub async fn delete(self: &Arc<Self>, name: &FileName) -> Result<Deleted, FileError> {
        let holders = self.holders(name).await?;
        let responsible = &holders[0];
        if responsible.id == self.ring.me().id {
            return self.delete_here(name, 0, self.replicas - 1).await;
        }
        self.peers.delete(&responsible.addr, name.as_str(), 0, (self.replicas - 1) as u32).await
    }

    /// Records the deletion of `name` at `at` (0: now) here, removes this
    /// node's copy if it is not newer, then does the same on `replicas`
    /// successors, answering once a write quorum recorded it.
    pub async fn delete_here(
        self: &Arc<Self>,
        name: &FileName,
        at: u64,
        replicas: usize,
    ) -> Result<Deleted, FileError> {
        let at = if at == 0 { now_ns() } else { at };
        let mut existed = self.forget_here(name, at).await?;
        let targets = self.successors(replicas);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let deletes = targets
            .into_iter()
            .map(|target| {
                let (files, name, done) = (self.clone(), name.clone(), done_tx.clone());
                tokio::spawn(async move {
                    let reply = files.peers.delete(&target.addr, name.as_str(), at, 0).await?;
                    let _ = done.send(reply.existed);
                    Ok(target.addr)
                })
            })
            .collect();
        let holders = self.await_quorum(name, deletes).await?;
        drop(done_tx);
        while let Ok(had) = done_rx.try_recv() {
            existed |= had;
        }
        Ok(Deleted { name: name.to_string(), existed, deleted_ns: at, holders })
    }

    /// Records the deletion of `name` at `at` here and removes this node's
    /// copy unless it is newer; answers whether a copy was removed.
    pub(super) async fn forget_here(&self, name: &FileName, at: u64) -> Result<bool, FileError> {
        self.tombstones
            .record(name, at)
            .await
            .map_err(|e| FileError::Store(format!("cannot record the deletion of {name}: {e}")))?;
        match self.local_entry(name).await? {
            Some(entry) if entry.modified_ns <= at => Ok(self.plugins.remove(name).await?),
            _ => Ok(false),
        }
    }

    /// What this node knows of `name`: its copy and its tombstone.
    pub async fn known_here(&self, name: &FileName) -> Result<Known, FileError> {
        Ok(Known::from_parts(self.local_entry(name).await?, self.tombstones.get(name)))
    }

    /// This node's version of `name`, if it has one.
    pub async fn local_entry(&self, name: &FileName) -> Result<Option<FileEntry>, FileError> {
        match self.plugins.download(name).await {
            Ok(handle) => Ok(Some(handle.entry().clone())),
            Err(PluginError::Refused { refusal: Refusal::NotFound, .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Copies this node's `name` to `target`.
    pub(super) async fn replicate(self: Arc<Self>, target: NodeRef, name: FileName) -> Result<String, FileError> {
        let handle = self.plugins.download(&name).await?;
        let (size, version_ns) = (handle.entry().size, handle.entry().modified_ns);
        let body: BoxStream<'static, Result<Bytes, PluginError>> =
            if size == 0 { futures_util::stream::empty().boxed() } else { handle.stream(0..=size - 1).boxed() };
        let header = pb::StoreHeader { name: name.as_str().to_owned(), overwrite: true, replicas: 0, version_ns };
        self.peers.store(&target.addr, header, body, u64::MAX).await?;
        Ok(target.addr)
    }

    /// Opens the newest version of `name`: asks every holder what it knows,
    /// and reads here if this node has that version, else from the first
    /// holder that has it. A deletion newer than every copy is not found.
    pub async fn open(self: &Arc<Self>, name: &FileName) -> Result<Source, FileError> {
        // Unless a holder elsewhere has it, a missing local plugin is the answer.
        let mut last = FileError::NotFound(name.to_string());
        let local = match self.plugins.download(name).await {
            Ok(handle) => Some(handle),
            Err(PluginError::Refused { refusal: Refusal::NotFound, .. }) => None,
            Err(e @ PluginError::Unavailable(_)) => {
                last = e.into();
                None
            }
            Err(e) => return Err(e.into()),
        };
        let here = Known::from_parts(local.as_ref().map(|h| h.entry().clone()), self.tombstones.get(name));
        let (newest, having) = match self.survey(name, &here).await {
            Ok(found) => found,
            // Without the ring, this node's own copy is all there is.
            Err(e) if local.is_none() => return Err(e),
            Err(_) => (here.clone(), Vec::new()),
        };
        let Known::File(wanted) = newest else {
            return Err(last);
        };
        if let Some(handle) = local.filter(|_| here.same(&Known::File(wanted.clone()))) {
            let entry = handle.entry().clone();
            let first = Some(First::Local(handle));
            return Ok(Source { files: self.clone(), name: name.clone(), entry, first });
        }
        for holder in having {
            match self.peers.fetch(&holder.addr, name.as_str(), 0, 0).await {
                Ok((entry, stream)) if entry.sha256 == wanted.sha256 => {
                    let first = Some(First::Remote(holder.id, stream.boxed()));
                    return Ok(Source { files: self.clone(), name: name.clone(), entry, first });
                }
                Ok(_) => {} // changed since it was asked
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Asks the other holders of `name` what they know of it: the newest
    /// state among theirs and `here` (this node's), and the other holders
    /// that have it.
    async fn survey(&self, name: &FileName, here: &Known) -> Result<(Known, Vec<NodeRef>), FileError> {
        let me = self.ring.me().id;
        let holders: Vec<NodeRef> = self.holders(name).await?.into_iter().filter(|h| h.id != me).collect();
        let theirs =
            futures_util::future::join_all(holders.iter().map(|h| self.peers.stat(&h.addr, name.as_str()))).await;
        let newest = Known::newest(theirs.iter().filter_map(|k| k.as_ref().ok()).chain([here]));
        let having = holders
            .into_iter()
            .zip(theirs)
            .filter(|(_, k)| matches!(k, Ok(k) if matches!(newest, Known::File(_)) && k.same(&newest)))
            .map(|(h, _)| h)
            .collect();
        Ok((newest, having))
    }

    /// A node that serves the newest version of `name`: this one if it has
    /// it, else the first other holder that does.
    pub async fn locate(&self, name: &FileName) -> Result<(String, FileEntry), FileError> {
        let here = self.known_here(name).await?;
        let (newest, having) = self.survey(name, &here).await?;
        let Known::File(entry) = newest else {
            return Err(FileError::NotFound(name.to_string()));
        };
        let node = if here.same(&Known::File(entry.clone())) {
            self.ring.me().addr.clone()
        } else {
            having.into_iter().next().map(|h| h.addr).ok_or_else(|| FileError::NoHolder(name.to_string()))?
        };
        Ok((node, entry))
    }

    /// Every node's files, merged by name (the newest version wins), with
    /// their holders.
    pub async fn network_list(&self) -> Vec<NetworkEntry> {
        let me = self.ring.me();
        let nodes: Vec<NodeRef> =
            self.ring.walk(4096).await.into_iter().filter(|(_, alive)| *alive).map(|(n, _)| n).collect();
        let listings = futures_util::future::join_all(nodes.iter().map(|node| async {
            let listing = if node.id == me.id {
                self.plugins.list().await.map(|entries| (entries, self.tombstones.all())).map_err(FileError::from)
            } else {
                self.peers.list(&node.addr).await
            };
            (node.addr.clone(), listing)
        }))
        .await;
        let mut merged: BTreeMap<String, NetworkEntry> = BTreeMap::new();
        let mut deleted: BTreeMap<String, u64> = BTreeMap::new();
        for (addr, listing) in listings {
            let Ok((entries, tombstones)) =
                listing.inspect_err(|e| tracing::warn!(node = %addr, "listing failed: {e}"))
            else {
                continue;
            };
            for (name, at) in tombstones {
                let slot = deleted.entry(name).or_insert(at);
                *slot = (*slot).max(at);
            }
            for e in entries {
                let slot = merged.entry(e.name.clone()).or_insert_with(|| NetworkEntry {
                    name: e.name.clone(),
                    size: e.size,
                    sha256: e.sha256.clone(),
                    modified_ns: e.modified_ns,
                    holders: Vec::new(),
                });
                if e.sha256 != slot.sha256 && e.modified_ns > slot.modified_ns {
                    // A newer version: its holders replace the older one's.
                    slot.size = e.size;
                    slot.sha256 = e.sha256.clone();
                    slot.modified_ns = e.modified_ns;
                    slot.holders.clear();
                }
                if e.sha256 == slot.sha256 {
                    slot.holders.push(addr.clone());
                }
            }
        }
        // Copies not yet removed of a file deleted since are not listed.
        merged.retain(|name, e| deleted.get(name).is_none_or(|at| e.modified_ns > *at));
        merged.into_values().collect()
    }
}

/// A holder being read (`None`: this node) and its stream of bytes.
type Reading = (Option<Id>, BoxStream<'static, Result<Bytes, FileError>>);

enum First {
    Local(crate::plugins::DownloadHandle),
    Remote(Id, BoxStream<'static, Result<Bytes, FileError>>),
}

/// An open file somewhere in the network.
pub struct Source {
    files: Arc<Files>,
    name: FileName,
    entry: FileEntry,
    first: Option<First>,
}

impl Source {
    /// The file's entry (size, sha256 of what is served).
    pub fn entry(&self) -> &FileEntry {
        &self.entry
    }

    /// Streams `range` of the file. If the holder being read dies, reading
    /// goes on from the next holder at the same offset, provided it holds the
    /// same version; a whole-file read from other nodes is checked against
    /// the sha256.
    pub fn stream(self, range: RangeInclusive<u64>) -> impl Stream<Item = Result<Bytes, FileError>> + Send + 'static {
        let (tx, rx) = mpsc::channel::<Result<Bytes, FileError>>(4);
        let (start, end) = (*range.start(), *range.end() + 1);
        let Source { files, name, entry, first } = self;
        // Bytes from another node are checked against the sha256 end to end;
        // this node's own copy is trusted as its plugin reads it.
        let remote = matches!(first, Some(First::Remote(..)) | None);
        let whole = start == 0 && end == entry.size && remote;
        tokio::spawn(async move {
            let mut hasher = whole.then(Hasher::spawn);
            let mut offset = start;
            let mut failed: HashSet<Id> = HashSet::new();
            let mut current: Option<Reading> = match first {
                Some(First::Local(handle)) => {
                    Some((None, handle.stream(start..=end - 1).map(|r| r.map_err(FileError::from)).boxed()))
                }
                Some(First::Remote(id, stream)) if start == 0 => Some((Some(id), stream)),
                _ => None,
            };
            while offset < end {
                let (holder, mut stream) = match current.take() {
                    Some(open) => open,
                    None => match reopen(&files, &name, &entry.sha256, offset, end, &failed).await {
                        Some(open) => open,
                        None => {
                            let _ = tx.send(Err(FileError::NoHolder(name.to_string()))).await;
                            return;
                        }
                    },
                };
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(bytes) => {
                            let bytes = bytes.slice(..bytes.len().min((end - offset) as usize));
                            offset += bytes.len() as u64;
                            if let Some(h) = hasher.as_mut() {
                                h.update(bytes.clone()).await;
                            }
                            if tx.send(Ok(bytes)).await.is_err() {
                                return; // the client went away
                            }
                        }
                        Err(e) => {
                            tracing::warn!(file = %name, offset, "holder failed mid-stream, trying the next: {e}");
                            if let Some(id) = holder {
                                failed.insert(id);
                            }
                            break;
                        }
                    }
                }
                if holder.is_none() && offset < end {
                    // The local copy failed: only remote holders are left.
                    failed.insert(files.ring.me().id);
                }
            }
            if let Some(h) = hasher
                && h.finish().await != entry.sha256
            {
                let _ = tx.send(Err(FileError::Mismatch(name.to_string()))).await;
            }
        });
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
    }
}

/// SHA-256 of a stream, computed on a thread of its own so that hashing
/// overlaps moving the bytes; at most `HASH_CHUNKS` chunks wait for it.
struct Hasher {
    chunks: mpsc::Sender<Bytes>,
    digest: tokio::task::JoinHandle<String>,
}

const HASH_CHUNKS: usize = 16;

impl Hasher {
    fn spawn() -> Self {
        let (chunks, mut rx) = mpsc::channel::<Bytes>(HASH_CHUNKS);
        let digest = tokio::task::spawn_blocking(move || {
            let mut hasher = Sha256::new();
            while let Some(chunk) = rx.blocking_recv() {
                hasher.update(&chunk);
            }
            hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
        });
        Self { chunks, digest }
    }

    async fn update(&mut self, chunk: Bytes) {
        // The thread only stops when the sender is dropped.
        let _ = self.chunks.send(chunk).await;
    }

    /// The lowercase hex digest of everything passed to `update`.
    async fn finish(self) -> String {
        drop(self.chunks);
        self.digest.await.unwrap_or_default()
    }
}

/// Opens the rest of a range (`offset..end`) of `name` on the next holder,
/// not yet `failed`, of the version with `sha256`.
async fn reopen(
    files: &Arc<Files>,
    name: &FileName,
    sha256: &str,
    offset: u64,
    end: u64,
    failed: &HashSet<Id>,
) -> Option<Reading> {
    let holders = files.holders(name).await.ok()?;
    let me = files.ring.me().id;
    for holder in holders.into_iter().filter(|h| !failed.contains(&h.id)) {
        if holder.id == me {
            let Ok(handle) = files.plugins.download(name).await else { continue };
            if handle.entry().sha256 == sha256 {
                return Some((None, handle.stream(offset..=end - 1).map(|r| r.map_err(FileError::from)).boxed()));
            }
            continue;
        }
        let Ok((entry, stream)) = files.peers.fetch(&holder.addr, name.as_str(), offset, end - offset).await else {
            continue;
        };
        if entry.sha256 == sha256 {
            return Some((Some(holder.id), stream.boxed()));
        }
    }
    None
}
