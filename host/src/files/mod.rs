//! Files across the ring: a file named N lives on the node responsible for
//! `hash(N)` and the next k-1 nodes of its successor list. Any node takes an
//! upload and streams it to the responsible node, which stores it through
//! its upload plugin and copies it to its successors; any node serves a
//! download from a live holder, switching holders mid-stream when one dies.
//! The plugins stay the only code that reads and writes a node's files.
//!
//! - `placement`: holders and write quorum (pure);
//! - `local`: this node's store, through its plugins;
//! - `peers`: other nodes' stores, through the `Files` gRPC service;
//! - `service`: [`Files`], what the REST API and the RPC server call;
//! - `source`: reading the newest version from wherever it is;
//! - `known`: what a node knows of a name (a version or a deletion), ordered;
//! - `tombstones`: this node's record of deletions;
//! - `write`: new uploads, streamed to every holder as they arrive;
//! - `repair`: the loop that keeps k copies where the ring says, and the
//!   hand-over before a graceful leave.

mod known;
mod local;
mod peers;
pub mod placement;
mod repair;
mod service;
mod source;
mod tombstones;
mod write;

use tonic::Code;

use crate::chord::RingError;
use crate::plugins::PluginError;

pub use known::Known;
pub use local::{Expected, LocalWrite, store_local};
pub use peers::{Peers, entry_from_pb, entry_to_pb};
pub use repair::spawn_repair;
pub use service::{Deleted, Files, FilesSettings, NetworkEntry, StoreHow, Stored, Version};
pub use source::Source;
pub use tombstones::Tombstones;

/// Why a file operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FileError {
    /// This node's plugin failed or refused.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The ring could not say who holds the file.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// Another node answered with an error.
    #[error("node {node}: {message}")]
    Peer {
        /// The node's address.
        node: String,
        /// Its gRPC status code.
        code: Code,
        /// Its message.
        message: String,
    },
    /// The upload is larger than this node accepts.
    #[error("upload exceeds the limit of {0} bytes")]
    TooLarge(u64),
    /// The upload's body could not be read.
    #[error("reading the upload failed: {0}")]
    Body(String),
    /// No node holds a file of that name.
    #[error("not found: {0}")]
    NotFound(String),
    /// A copy of a version that has been deleted since.
    #[error("{name} was deleted at {at} ns, after this version")]
    Deleted {
        /// The file.
        name: String,
        /// When it was deleted.
        at: u64,
    },
    /// A copy of a version older than the one this node has.
    #[error("{name} has a newer version here, modified at {at} ns")]
    Superseded {
        /// The file.
        name: String,
        /// When this node's version was modified.
        at: u64,
    },
    /// This node's own bookkeeping failed.
    #[error("{0}")]
    Store(String),
    /// The file changed between holders while it was being read.
    #[error("{0} changed or was corrupted while it was read")]
    Mismatch(String),
    /// No holder of the file answered.
    #[error("no holder of {0} could serve it")]
    NoHolder(String),
    /// Fewer holders than a write quorum acknowledged.
    #[error("{name} is stored on {stored} of the {wanted} nodes a write quorum needs")]
    NoQuorum {
        /// The file.
        name: String,
        /// Copies made.
        stored: usize,
        /// Copies a quorum needs.
        wanted: usize,
    },
}

impl FileError {
    /// The gRPC status this error travels as between nodes.
    pub fn to_status(&self) -> tonic::Status {
        use crate::plugins::Refusal;
        let code = match self {
            FileError::Plugin(PluginError::Refused { refusal, .. }) => match refusal {
                Refusal::NotFound => Code::NotFound,
                Refusal::InvalidName => Code::InvalidArgument,
                Refusal::AlreadyExists => Code::AlreadyExists,
                Refusal::TooLarge => Code::ResourceExhausted,
                Refusal::OutOfRange => Code::OutOfRange,
                Refusal::Io | Refusal::Other => Code::Internal,
            },
            FileError::Plugin(PluginError::Unavailable(_)) => Code::Unavailable,
            FileError::Plugin(PluginError::Cancelled) => Code::Cancelled,
            FileError::Plugin(PluginError::Corrupt(_)) => Code::DataLoss,
            FileError::Plugin(_) => Code::Internal,
            FileError::Ring(_) | FileError::NoHolder(_) | FileError::NoQuorum { .. } => Code::Unavailable,
            FileError::Peer { code, .. } => *code,
            FileError::NotFound(_) => Code::NotFound,
            FileError::Deleted { .. } | FileError::Superseded { .. } => Code::FailedPrecondition,
            FileError::Store(_) => Code::Internal,
            FileError::Mismatch(_) => Code::DataLoss,
            FileError::TooLarge(_) => Code::ResourceExhausted,
            FileError::Body(_) => Code::InvalidArgument,
        };
        tonic::Status::new(code, self.to_string())
    }
}
