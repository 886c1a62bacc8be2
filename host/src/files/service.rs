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

use super::peers::{Peers, entry_from_pb};
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
        replicas: usize,
        max_upload_bytes: u64,
        chunk_bytes: usize,
    ) -> Self {
        Self { plugins, ring, peers, replicas: replicas.max(1), max_upload_bytes, chunk_bytes }
    }

    /// Largest upload accepted, in bytes.
    pub fn max_upload_bytes(&self) -> u64 {
        self.max_upload_bytes
    }

    /// This node's plugins.
    pub fn plugins(&self) -> &Arc<PluginHost> {
        &self.plugins
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
            return self.store_here(name, overwrite, body, self.replicas - 1).await;
        }
        let header =
            pb::StoreHeader { name: name.as_str().to_owned(), overwrite, replicas: (self.replicas - 1) as u32 };
        let reply = self.peers.store(&responsible.addr, header, body, self.max_upload_bytes).await?;
        let entry = reply.entry.map(entry_from_pb).ok_or_else(|| FileError::Peer {
            node: responsible.addr.clone(),
            code: tonic::Code::Internal,
            message: "store reply without entry".into(),
        })?;
        Ok(Stored { entry, holders: reply.holders })
    }

    /// Stores `body` here, then copies it to `replicas` successors, answering
    /// once a majority of the copies exist (the others go on).
    pub async fn store_here<S, E>(
        self: &Arc<Self>,
        name: &FileName,
        overwrite: bool,
        body: S,
        replicas: usize,
    ) -> Result<Stored, FileError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let entry = store_local(&self.plugins, name, overwrite, body, self.max_upload_bytes, self.chunk_bytes).await?;
        let me = self.ring.me();
        let mut holders = vec![me.addr.clone()];
        let targets: Vec<NodeRef> =
            self.ring.snapshot().successors().iter().filter(|n| n.id != me.id).take(replicas).cloned().collect();
        let wanted = placement::write_quorum(targets.len() + 1);
        let mut copies: FuturesUnordered<_> =
            targets.into_iter().map(|t| tokio::spawn(self.clone().replicate(t, name.clone()))).collect();
        while holders.len() < wanted {
            match copies.next().await {
                Some(Ok(Ok(addr))) => holders.push(addr),
                Some(Ok(Err(e))) => tracing::warn!(file = %name, "replica not written: {e}"),
                Some(Err(e)) => tracing::warn!(file = %name, "replica task failed: {e}"),
                None => break,
            }
        }
        // Copies still in flight finish in the background.
        if holders.len() < wanted {
            return Err(FileError::NoQuorum { name: name.to_string(), stored: holders.len(), wanted });
        }
        Ok(Stored { entry, holders })
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
        let size = handle.entry().size;
        let body: BoxStream<'static, Result<Bytes, PluginError>> =
            if size == 0 { futures_util::stream::empty().boxed() } else { handle.stream(0..=size - 1).boxed() };
        let header = pb::StoreHeader { name: name.as_str().to_owned(), overwrite: true, replicas: 0 };
        self.peers.store(&target.addr, header, body, u64::MAX).await?;
        Ok(target.addr)
    }

    /// Opens `name` wherever a copy is: here if this node holds it, else on
    /// the first holder that answers.
    pub async fn open(self: &Arc<Self>, name: &FileName) -> Result<Source, FileError> {
        // Unless a holder elsewhere has it, a missing local plugin is the answer.
        let mut last = FileError::NotFound(name.to_string());
        match self.plugins.download(name).await {
            Ok(handle) => {
                let entry = handle.entry().clone();
                return Ok(Source {
                    files: self.clone(),
                    name: name.clone(),
                    entry,
                    first: Some(First::Local(handle)),
                });
            }
            Err(PluginError::Refused { refusal: Refusal::NotFound, .. }) => {}
            Err(e @ PluginError::Unavailable(_)) => last = e.into(),
            Err(e) => return Err(e.into()),
        }
        let me = self.ring.me().id;
        for holder in self.holders(name).await?.into_iter().filter(|h| h.id != me) {
            match self.peers.fetch(&holder.addr, name.as_str(), 0, 0).await {
                Ok((entry, stream)) => {
                    let first = First::Remote(holder.id, stream.boxed());
                    return Ok(Source { files: self.clone(), name: name.clone(), entry, first: Some(first) });
                }
                Err(FileError::Peer { code: tonic::Code::NotFound, .. }) => {}
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Every node's files, merged by name (the newest version wins), with
    /// their holders.
    pub async fn network_list(&self) -> Vec<NetworkEntry> {
        let me = self.ring.me();
        let nodes: Vec<NodeRef> =
            self.ring.walk(4096).await.into_iter().filter(|(_, alive)| *alive).map(|(n, _)| n).collect();
        let listings = futures_util::future::join_all(nodes.iter().map(|node| async {
            let entries = if node.id == me.id {
                self.plugins.list().await.map_err(FileError::from)
            } else {
                self.peers.list(&node.addr).await
            };
            (node.addr.clone(), entries)
        }))
        .await;
        let mut merged: BTreeMap<String, NetworkEntry> = BTreeMap::new();
        for (addr, entries) in listings {
            let Ok(entries) = entries.inspect_err(|e| tracing::warn!(node = %addr, "listing failed: {e}")) else {
                continue;
            };
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
        merged.into_values().collect()
    }
}

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
            let mut hasher = whole.then(Sha256::new);
            let mut offset = start;
            let mut failed: HashSet<Id> = HashSet::new();
            let mut current: Option<(Option<Id>, BoxStream<'static, Result<Bytes, FileError>>)> = match first {
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
                                h.update(&bytes);
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
            if let Some(h) = hasher {
                let got: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
                if got != entry.sha256 {
                    let _ = tx.send(Err(FileError::Mismatch(name.to_string()))).await;
                }
            }
        });
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
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
) -> Option<(Option<Id>, BoxStream<'static, Result<Bytes, FileError>>)> {
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
