//! What the file service needs of the other nodes, as traits it owns: the
//! ring's answers (who holds a name) and the other nodes' file services.
//! The RPC layer implements [`Peers`] over gRPC (`rpc::files_client`) and
//! the ring is any [`ChordNode`]; `files` never names a wire type.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use serde::Serialize;

use super::error::FileError;
use super::known::Known;
use crate::chord::{ChordNode, Id, NodeRef, RingError, Transport};
use crate::integrity::{Digest, Outboard};
use crate::plugins::FileEntry;
use crate::store::FileName;
use crate::store::digest::{KeyRange, Sum};

/// A future of the file service's.
pub type Fut<'a, T> = BoxFuture<'a, Result<T, FileError>>;

/// Bytes of a file moving between nodes.
pub type ByteStream = BoxStream<'static, Result<Bytes, FileError>>;

/// Bytes of a request's body, on their way to a node.
pub type BodyStream = BoxStream<'static, Result<Bytes, String>>;

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

/// What a store on another node is (see `Files::store_here`).
#[derive(Debug, Clone)]
pub struct StoreOrder {
    /// The file.
    pub name: FileName,
    /// A new upload: whether it may replace a version, and the copies the
    /// node is to stream on. A copy: none.
    pub new: Option<(bool, usize)>,
    /// A copy's version: its time and hash.
    pub copy_of: Option<(u64, Digest)>,
}

/// What a node answered a store with.
#[derive(Debug, Clone)]
pub struct StoreAnswer {
    /// The stored file's entry.
    pub entry: FileEntry,
    /// The nodes holding a durable copy.
    pub holders: Vec<String>,
    /// The copies it meant to make.
    pub copies_wanted: usize,
}

/// A copy streamed to another node while an upload arrives. Dropped
/// without [`CopySink::commit`], the copy ends without its hash and the
/// node discards it.
pub trait CopySink: Send {
    /// Sends the next chunk; a node that is gone or stalls is dropped (its
    /// answer to the commit says why).
    fn send(&mut self, chunk: Bytes) -> BoxFuture<'_, ()>;
    /// Ends the content with its hash; answers the node's address once it
    /// has the copy durable.
    fn commit(self: Box<Self>, blake3: Digest) -> BoxFuture<'static, Result<String, FileError>>;
}

/// A range of a file fetched from another node.
pub struct Fetched {
    /// The node's entry for the file: which version it sent.
    pub entry: FileEntry,
    /// The outboard the bytes were checked against (shared by every fetch
    /// of that version).
    pub outboard: Arc<Outboard>,
    /// The bytes, checked block by block.
    pub bytes: ByteStream,
}

/// What a node asked for a lease answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAnswer {
    /// No lease, and why.
    Refused(String),
    /// A lease on `range` for `duration` from when it was asked.
    Granted {
        /// The granter's own range.
        range: KeyRange,
        /// Its epoch.
        epoch: u64,
        /// The epoch asked for, renewed: no digest needed.
        renewed: bool,
        /// The granter's digest of `range` (when not renewed).
        digest: Sum,
        /// How long it lasts.
        duration: Duration,
        /// The granter's predecessor, the next node to ask.
        predecessor: Option<String>,
    },
}

/// A node's own files, and its tombstones (name, deleted at).
pub type NodeListing = (Vec<FileEntry>, Vec<(String, u64)>);

/// The other nodes' file services.
pub trait Peers: Send + Sync {
    /// Streams `body` to `node` as `order` says; stops (and the node
    /// discards what it got) if the body fails or passes `limit` bytes.
    fn store(&self, node: &str, order: StoreOrder, body: BodyStream, limit: u64) -> Fut<'_, StoreAnswer>;
    /// Starts streaming a copy of a new upload of `name`, version time
    /// `version_ns`, to `node`.
    fn open_copy(&self, node: &str, name: &FileName, version_ns: u64) -> Box<dyn CopySink>;
    /// `name` on `node`, bytes `range`: its entry and exactly those bytes,
    /// every block checked against an outboard checked against the entry's
    /// hash: `known` if given (the node is asked to send none), else the
    /// node's. A node that has another version than `known`'s answers its
    /// entry and no bytes.
    fn fetch(&self, node: &str, name: &FileName, range: Range<u64>, known: Option<Arc<Outboard>>) -> Fut<'_, Fetched>;
    /// What `node` knows of `name`.
    fn stat(&self, node: &str, name: &FileName) -> Fut<'_, Known>;
    /// Asks `node` to delete `name` as of `deleted_ns` (none: now) and pass
    /// the deletion to `replicas` successors.
    fn delete(&self, node: &str, name: &FileName, deleted_ns: Option<u64>, replicas: usize) -> Fut<'_, Deleted>;
    /// `node`'s own files, and its tombstones.
    fn list(&self, node: &str) -> Fut<'_, NodeListing>;
    /// The sums of `node`'s files and tombstones over each of `ranges` cut
    /// into up to `parts` parts (see `store::digest`): every part and its sum.
    fn digests(&self, node: &str, ranges: &[KeyRange], parts: u32) -> Fut<'_, Vec<(KeyRange, Sum)>>;
    /// `node`'s files and tombstones in `ranges`.
    fn entries(&self, node: &str, ranges: &[KeyRange]) -> Fut<'_, NodeListing>;
    /// Asks `node` for a read lease on its range, for `me`, which still
    /// trusts the lease of `epoch` from it (0: none); see `files::lease`.
    fn lease<'a>(&'a self, node: &'a str, me: &'a NodeRef, epoch: u64) -> Fut<'a, LeaseAnswer>;
}

/// What the file service asks of the ring.
pub trait Ring: Send + Sync {
    /// This node.
    fn me(&self) -> NodeRef;
    /// This node's successor list.
    fn successors(&self) -> Vec<NodeRef>;
    /// The node responsible for `key`, and the hops it took to find it.
    fn lookup(&self, key: Id) -> BoxFuture<'_, Result<(NodeRef, usize), RingError>>;
    /// The node responsible for `key` as this node's own table tells,
    /// without a call and unchecked; `None` when it does not tell.
    fn responsible_by_table(&self, _key: Id) -> Option<NodeRef> {
        None
    }
    /// `node`'s successor list; an error if it does not answer.
    fn successors_of<'a>(&'a self, node: &'a NodeRef) -> BoxFuture<'a, Result<Vec<NodeRef>, RingError>>;
    /// This node's predecessor, if it knows one.
    fn predecessor(&self) -> Option<NodeRef>;
    /// `node`'s predecessor, if it knows one; an error if it does not answer.
    fn predecessor_of<'a>(&'a self, node: &'a NodeRef) -> BoxFuture<'a, Result<Option<NodeRef>, RingError>>;
    /// The nodes met walking the ring, and whether each answered.
    fn walk(&self, limit: usize) -> BoxFuture<'_, Vec<(NodeRef, bool)>>;
    /// Members that stopped answering and are not back: crashed, or cut
    /// off by a split.
    fn lost_members(&self) -> Vec<NodeRef> {
        Vec::new()
    }
    /// What this node can tell of its own range (see `chord::Standing`);
    /// `None` where the ring cannot tell, and then this node never counts
    /// as the only one answering for its range.
    fn standing(&self) -> Option<crate::chord::Standing> {
        None
    }
}

impl<T: Transport + Send + Sync + 'static> Ring for ChordNode<T> {
    fn me(&self) -> NodeRef {
        ChordNode::me(self)
    }

    fn successors(&self) -> Vec<NodeRef> {
        self.snapshot().successors().to_vec()
    }

    fn lost_members(&self) -> Vec<NodeRef> {
        ChordNode::lost_members(self)
    }

    fn lookup(&self, key: Id) -> BoxFuture<'_, Result<(NodeRef, usize), RingError>> {
        ChordNode::lookup(self, key).boxed()
    }

    fn responsible_by_table(&self, key: Id) -> Option<NodeRef> {
        ChordNode::responsible_by_table(self, key)
    }

    fn predecessor(&self) -> Option<NodeRef> {
        self.snapshot().predecessor.clone()
    }

    fn predecessor_of<'a>(&'a self, node: &'a NodeRef) -> BoxFuture<'a, Result<Option<NodeRef>, RingError>> {
        async move {
            let neighbours = self.transport().neighbours(node).await.map_err(|e| RingError::Unanswered(e.0))?;
            Ok(neighbours.predecessor)
        }
        .boxed()
    }

    fn successors_of<'a>(&'a self, node: &'a NodeRef) -> BoxFuture<'a, Result<Vec<NodeRef>, RingError>> {
        async move {
            let neighbours = self.transport().neighbours(node).await.map_err(|e| RingError::Unanswered(e.0))?;
            Ok(neighbours.successors)
        }
        .boxed()
    }

    fn walk(&self, limit: usize) -> BoxFuture<'_, Vec<(NodeRef, bool)>> {
        ChordNode::walk(self, limit).boxed()
    }

    fn standing(&self) -> Option<crate::chord::Standing> {
        Some(ChordNode::standing(self))
    }
}
