//! [`Files`]: the node's file service over the ring.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{Stream, StreamExt};
use serde::Serialize;

use super::known::Known;
use super::network::{Peers, Ring, StoreOrder};
use super::tombstones::{Tombstones, now_ns};
use super::local::{Expected, LocalWrite, whole};
use super::{FileError, placement, store_local};
use crate::chord::{Id, NodeRef, WALK_LIMIT};
use crate::integrity::Digest;
use crate::plugins::{DownloadHandle, FileEntry, PluginError, PluginHost, PluginKind, Refusal};
use crate::store::FileName;

/// The node's file service: its own plugins, its place in the ring, and
/// clients of the other nodes.
pub struct Files {
    pub(super) plugins: Arc<PluginHost>,
    pub(super) ring: Arc<dyn Ring>,
    pub(super) peers: Arc<dyn Peers>,
    pub(super) tombstones: Tombstones,
    pub(super) replicas: usize,
    pub(super) write_quorum: usize,
    pub(super) max_upload_bytes: u64,
    pub(super) chunk_bytes: usize,
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
}

/// One version of a file: when it was written, and its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    /// Modification time, ns since the Unix epoch.
    pub modified_ns: u64,
    /// BLAKE3 of the content.
    pub blake3: Digest,
}

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
    /// BLAKE3 of the newest version.
    pub blake3: Digest,
    /// Modification time of the newest version.
    pub modified_ns: u64,
    /// Nodes holding the newest version.
    pub holders: Vec<String>,
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
        let FilesSettings { replicas, write_quorum, max_upload_bytes, chunk_bytes } = settings;
        Self { plugins, ring, peers, tombstones, replicas, write_quorum, max_upload_bytes, chunk_bytes }
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
    pub fn ring(&self) -> &Arc<dyn Ring> {
        &self.ring
    }

    /// Where `name` belongs: the responsible node first, then its successors.
    pub async fn holders(&self, name: &FileName) -> Result<Vec<NodeRef>, FileError> {
        let (responsible, _) = self.ring.lookup(Id::hash(name.as_str())).await?;
        let successors = if responsible.id == self.ring.me().id {
            self.ring.successors()
        } else {
            self.ring.successors_of(&responsible).await
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
            return self.store_here(name, StoreHow::New { overwrite, replicas: self.replicas - 1 }, body).await;
        }
        let order = StoreOrder { name: name.clone(), new: Some((overwrite, self.replicas - 1)), copy_of: None };
        let body = body.map(|item| item.map_err(|e| e.to_string())).boxed();
        let reply = self.peers.store(&responsible.addr, order, body, self.max_upload_bytes).await?;
        Ok(Stored { entry: reply.entry, holders: reply.holders, copies_wanted: reply.copies_wanted })
    }

    /// Stores `body` here as `how` says: a new upload is written here and
    /// streamed to `replicas` successors as it arrives (see
    /// [`Files::store_new`]); a copy of a known version is checked against
    /// what this node knows (a copy of a version deleted or replaced here
    /// since is refused) and discarded if its bytes do not hash to the
    /// version's hash.
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
        match self.known_here(name).await? {
            Known::Deleted(at) if version_ns <= at => {
                return Err(FileError::Deleted { name: name.to_string(), at });
            }
            Known::File(mine) if mine.modified_ns > version_ns => {
                return Err(FileError::Superseded { name: name.to_string(), at: mine.modified_ns });
            }
            _ => {}
        }
        let write = LocalWrite {
            name,
            overwrite: true,
            modified_ns: Some(version_ns),
            expected,
            limit: self.max_upload_bytes,
            chunk_bytes: self.chunk_bytes,
        };
        let entry = store_local(&self.plugins, write, body).await?;
        self.stored(name, &entry).await;
        Ok(Stored { entry, holders: vec![self.ring.me().addr.clone()], copies_wanted: 1 })
    }

    /// A version of `name` is stored here: older tombstones go.
    pub(super) async fn stored(&self, name: &FileName, entry: &FileEntry) {
        if let Err(e) = self.tombstones.clear_before(name, entry.modified_ns).await {
            tracing::warn!(file = %name, "could not clear its tombstone: {e}");
        }
    }

    /// Up to `count` of this node's successors, itself excluded.
    pub(super) fn successors(&self, count: usize) -> Vec<NodeRef> {
        let me = self.ring.me().id;
        self.ring.successors().into_iter().filter(|n| n.id != me).take(count).collect()
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
        self.peers.delete(&responsible.addr, name, None, self.replicas - 1).await
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
                    let reply = peers.delete(&target.addr, &name, Some(at), 0).await?;
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
        Ok(self.open_here(name).await?.map(|handle| handle.entry().clone()))
    }

    /// Opens this node's copy of `name`, if it has one, with its hash and
    /// outboard: a file the store has no record of (copied in by hand) is
    /// hashed and recorded first.
    pub async fn open_here(&self, name: &FileName) -> Result<Option<DownloadHandle>, FileError> {
        let handle = match self.plugins.download(name).await {
            Ok(handle) => handle,
            Err(PluginError::Refused { refusal: Refusal::NotFound, .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if handle.entry().blake3.is_some() {
            return Ok(Some(handle));
        }
        let entry = handle.entry().clone();
        let body = whole(handle);
        let write = LocalWrite {
            name,
            overwrite: true,
            modified_ns: Some(entry.modified_ns),
            expected: Expected::Nothing,
            limit: u64::MAX,
            chunk_bytes: self.chunk_bytes,
        };
        let recorded = store_local(&self.plugins, write, body).await?;
        tracing::info!(file = %name, blake3 = ?recorded.blake3, "hashed and recorded a file copied in by hand");
        match self.plugins.download(name).await {
            Ok(handle) if handle.entry().blake3.is_some() => Ok(Some(handle)),
            // Bytes that cannot be checked are never served.
            Ok(_) => Err(PluginError::Trapped {
                plugin: self.plugins.serving(PluginKind::Download).unwrap_or("download plugin").into(),
                detail: format!("broke the plugin contract: it does not report the hash recorded for {name}"),
            }
            .into()),
            Err(PluginError::Refused { refusal: Refusal::NotFound, .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Copies this node's `name` to `target`.
    pub(super) async fn replicate(self: Arc<Self>, target: NodeRef, name: FileName) -> Result<String, FileError> {
        let handle = self.open_here(&name).await?.ok_or_else(|| FileError::NotFound(name.to_string()))?;
        let entry = handle.entry().clone();
        let blake3 = entry.blake3.ok_or_else(|| FileError::Store(format!("{name} has no hash")))?;
        let order = StoreOrder { name: name.clone(), new: None, copy_of: Some((entry.modified_ns, blake3)) };
        let body = whole(handle).map(|item| item.map_err(|e| e.to_string())).boxed();
        self.peers.store(&target.addr, order, body, u64::MAX).await?;
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
                let listing = self.plugins.list().await.map_err(FileError::from);
                listing.map(|l| (l.entries.to_vec(), self.tombstones.all()))
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
        merged.into_values().collect()
    }
}
