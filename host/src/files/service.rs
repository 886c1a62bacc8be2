//! [`Files`]: the node's file service over the ring.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{BoxStream, FuturesUnordered};
use futures_util::{Stream, StreamExt};
use serde::Serialize;

use super::known::Known;
use super::peers::{Peers, entry_from_pb};
use super::tombstones::{Tombstones, now_ns};
use super::{FileError, placement, store_local};
use crate::chord::{ChordNode, Id, NodeRef, WALK_LIMIT};
use crate::plugins::{FileEntry, PluginError, PluginHost, Refusal};
use crate::rpc::GrpcTransport;
use crate::rpc::files_pb as pb;
use crate::store::FileName;

/// The node's file service: its own plugins, its place in the ring, and
/// clients of the other nodes.
pub struct Files {
    pub(super) plugins: Arc<PluginHost>,
    pub(super) ring: Arc<ChordNode<GrpcTransport>>,
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
    /// is a copy of: a copy of a version deleted or replaced here since is
    /// refused.
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
        if version_ns != 0 {
            match self.known_here(name).await? {
                Known::Deleted(at) if version_ns <= at => {
                    return Err(FileError::Deleted { name: name.to_string(), at });
                }
                Known::File(mine) if mine.modified_ns > version_ns => {
                    return Err(FileError::Superseded { name: name.to_string(), at: mine.modified_ns });
                }
                _ => {}
            }
        }
        let modified_ns = (version_ns != 0).then_some(version_ns);
        let (limit, chunk) = (self.max_upload_bytes, self.chunk_bytes);
        let entry = store_local(&self.plugins, name, overwrite, modified_ns, body, limit, chunk).await?;
        if let Err(e) = self.tombstones.clear_before(name, entry.modified_ns).await {
            tracing::warn!(file = %name, "could not clear its tombstone: {e}");
        }
        let copies = self
            .successors(replicas)
            .into_iter()
            .map(|target| {
                let copy = self.clone().replicate(target, name.clone());
                tokio::spawn(async move { copy.await.map(|addr| (addr, ())) })
            })
            .collect();
        let (holders, _) = self.await_quorum(name, copies).await?;
        Ok(Stored { entry, holders })
    }

    /// Up to `count` of this node's successors, itself excluded.
    fn successors(&self, count: usize) -> Vec<NodeRef> {
        let me = self.ring.me().id;
        self.ring.snapshot().successors().iter().filter(|n| n.id != me).take(count).cloned().collect()
    }

    /// This node and the nodes of `copies` that succeed (with what each
    /// answered), once they make a write quorum of the group; the rest go on
    /// in the background.
    async fn await_quorum<T>(
        &self,
        name: &FileName,
        copies: Vec<tokio::task::JoinHandle<Result<(String, T), FileError>>>,
    ) -> Result<(Vec<String>, Vec<T>), FileError> {
        let wanted = placement::write_quorum(copies.len() + 1);
        let mut holders = vec![self.ring.me().addr.clone()];
        let mut answers = Vec::new();
        let mut copies: FuturesUnordered<_> = copies.into_iter().collect();
        while holders.len() < wanted {
            match copies.next().await {
                Some(Ok(Ok((addr, answer)))) => {
                    holders.push(addr);
                    answers.push(answer);
                }
                Some(Ok(Err(e))) => tracing::warn!(file = %name, "a copy was not updated: {e}"),
                Some(Err(e)) => tracing::warn!(file = %name, "a copy's task failed: {e}"),
                None => break,
            }
        }
        if holders.len() < wanted {
            return Err(FileError::NoQuorum { name: name.to_string(), stored: holders.len(), wanted });
        }
        Ok((holders, answers))
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
        let existed_here = self.forget_here(name, at).await?;
        let deletes = self
            .successors(replicas)
            .into_iter()
            .map(|target| {
                let (peers, name) = (self.peers.clone(), name.clone());
                tokio::spawn(async move {
                    let reply = peers.delete(&target.addr, name.as_str(), at, 0).await?;
                    Ok((target.addr, reply.existed))
                })
            })
            .collect();
        let (holders, existed_there) = self.await_quorum(name, deletes).await?;
        let existed = existed_here || existed_there.contains(&true);
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

    /// Every node's files, merged by name (the newest version wins), with
    /// their holders.
    pub async fn network_list(&self) -> Vec<NetworkEntry> {
        let me = self.ring.me();
        let nodes: Vec<NodeRef> =
            self.ring.walk(WALK_LIMIT).await.into_iter().filter(|(_, alive)| *alive).map(|(n, _)| n).collect();
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
