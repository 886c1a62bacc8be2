//! How file operations fail, and the one typed [`ErrorKind`] every edge
//! reports: the REST API maps kinds to HTTP in one place (`rest::error`),
//! the RPC layer to gRPC in one place (`rpc::status`), and a kind travels
//! between nodes, so a failure gets the same answer whichever node was
//! asked.

use crate::chord::RingError;
use crate::plugins::{PluginError, Refusal};

/// What kind of failure, as users and other nodes see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No such file.
    NotFound,
    /// A name (or another argument) that is not acceptable.
    InvalidName,
    /// The file exists and overwriting was not asked for.
    AlreadyExists,
    /// Over a size limit.
    TooLarge,
    /// A range or offset outside the file.
    OutOfRange,
    /// A copy of a version deleted since.
    Deleted,
    /// A copy of a version older than the one held.
    Superseded,
    /// The ring could not say who holds the file.
    RingUnavailable,
    /// No holder could serve, or too few could store.
    HoldersUnavailable,
    /// Another node did not answer.
    PeerUnavailable,
    /// Another node answered something that makes no sense.
    PeerFailed,
    /// No plugin of the kind needed is loaded.
    PluginUnavailable,
    /// A plugin ran past its deadline.
    PluginTimeout,
    /// A plugin hit its memory cap.
    PluginOutOfMemory,
    /// A plugin trapped or broke its contract.
    PluginFailed,
    /// A plugin refused (its store failed, or another reason of its own).
    PluginError,
    /// Bytes that do not match their hash.
    ChecksumMismatch,
    /// The request's body could not be read.
    BodyFailed,
    /// The work was cancelled (the client went away, the node is stopping).
    Cancelled,
    /// This node's own bookkeeping failed.
    Internal,
    /// A holder's disk is full (or would be left with less than it keeps
    /// free).
    InsufficientStorage,
    /// A clock is off its peers' by more than the maximum offset: this
    /// node's (it takes no writes), or the sender's (its time is refused).
    ClockOffset,
}

impl ErrorKind {
    /// Every kind.
    pub const ALL: [ErrorKind; 22] = [
        ErrorKind::NotFound,
        ErrorKind::InvalidName,
        ErrorKind::AlreadyExists,
        ErrorKind::TooLarge,
        ErrorKind::OutOfRange,
        ErrorKind::Deleted,
        ErrorKind::Superseded,
        ErrorKind::RingUnavailable,
        ErrorKind::HoldersUnavailable,
        ErrorKind::PeerUnavailable,
        ErrorKind::PeerFailed,
        ErrorKind::PluginUnavailable,
        ErrorKind::PluginTimeout,
        ErrorKind::PluginOutOfMemory,
        ErrorKind::PluginFailed,
        ErrorKind::PluginError,
        ErrorKind::ChecksumMismatch,
        ErrorKind::BodyFailed,
        ErrorKind::Cancelled,
        ErrorKind::Internal,
        ErrorKind::InsufficientStorage,
        ErrorKind::ClockOffset,
    ];

    /// The kind's name: the `code` of REST errors, and what travels between
    /// nodes.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not-found",
            ErrorKind::InvalidName => "invalid-name",
            ErrorKind::AlreadyExists => "already-exists",
            ErrorKind::TooLarge => "too-large",
            ErrorKind::OutOfRange => "range-not-satisfiable",
            ErrorKind::Deleted => "deleted",
            ErrorKind::Superseded => "superseded",
            ErrorKind::RingUnavailable => "ring-unavailable",
            ErrorKind::HoldersUnavailable => "holders-unavailable",
            ErrorKind::PeerUnavailable => "peer-unavailable",
            ErrorKind::PeerFailed => "peer-failed",
            ErrorKind::PluginUnavailable => "plugin-unavailable",
            ErrorKind::PluginTimeout => "plugin-timeout",
            ErrorKind::PluginOutOfMemory => "plugin-out-of-memory",
            ErrorKind::PluginFailed => "plugin-failed",
            ErrorKind::PluginError => "plugin-error",
            ErrorKind::ChecksumMismatch => "checksum-mismatch",
            ErrorKind::BodyFailed => "body-failed",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Internal => "internal",
            ErrorKind::InsufficientStorage => "insufficient-storage",
            ErrorKind::ClockOffset => "clock-offset",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// Why a file operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FileError {
    /// This node's plugin failed or refused.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The ring could not say who holds the file.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// Another node answered with an error (or none).
    #[error("node {node}: {message}")]
    Remote {
        /// The node's address.
        node: String,
        /// What kind of failure it reported.
        kind: ErrorKind,
        /// Its words.
        message: String,
    },
    /// The upload is larger than this node accepts.
    #[error("upload exceeds the limit of {0} bytes")]
    TooLarge(u64),
    /// The upload's body could not be read.
    #[error("reading the upload failed: {0}")]
    Body(String),
    /// No node holds a file of that name.
    #[error("no node holds {0}")]
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
    /// This node's disk has no room for its own bookkeeping.
    #[error("no room on this node's disk: {0}")]
    NoRoom(String),
    /// Bytes that do not match their hash.
    #[error("checksum mismatch: {0}")]
    Mismatch(String),
    /// No holder of the file answered.
    #[error("no holder of {0} could serve it")]
    NoHolder(String),
    /// A clock is off by more than the maximum offset.
    #[error("{0}")]
    ClockOffset(String),
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

impl From<crate::clock::TooFarAhead> for FileError {
    fn from(e: crate::clock::TooFarAhead) -> Self {
        FileError::ClockOffset(e.to_string())
    }
}

impl FileError {
    /// The kind of this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            FileError::Plugin(e) => match e {
                PluginError::Unavailable(_)
                | PluginError::Busy { .. }
                | PluginError::Crowded { .. }
                | PluginError::Stopping => ErrorKind::PluginUnavailable,
                PluginError::Refused { refusal, .. } => match refusal {
                    Refusal::NotFound => ErrorKind::NotFound,
                    Refusal::InvalidName => ErrorKind::InvalidName,
                    Refusal::AlreadyExists => ErrorKind::AlreadyExists,
                    Refusal::TooLarge => ErrorKind::TooLarge,
                    Refusal::OutOfRange => ErrorKind::OutOfRange,
                    Refusal::Io | Refusal::Other => ErrorKind::PluginError,
                },
                PluginError::Timeout { .. } => ErrorKind::PluginTimeout,
                PluginError::OutOfMemory { .. } => ErrorKind::PluginOutOfMemory,
                PluginError::Trapped { .. } => ErrorKind::PluginFailed,
                PluginError::Corrupt(_) => ErrorKind::ChecksumMismatch,
                PluginError::Cancelled => ErrorKind::Cancelled,
                PluginError::NoRoom(_) => ErrorKind::InsufficientStorage,
            },
            FileError::Ring(_) => ErrorKind::RingUnavailable,
            FileError::Remote { kind, .. } => *kind,
            FileError::TooLarge(_) => ErrorKind::TooLarge,
            FileError::Body(_) => ErrorKind::BodyFailed,
            FileError::NotFound(_) => ErrorKind::NotFound,
            FileError::Deleted { .. } => ErrorKind::Deleted,
            FileError::Superseded { .. } => ErrorKind::Superseded,
            FileError::Store(_) => ErrorKind::Internal,
            FileError::NoRoom(_) => ErrorKind::InsufficientStorage,
            FileError::Mismatch(_) => ErrorKind::ChecksumMismatch,
            FileError::NoHolder(_) | FileError::NoQuorum { .. } => ErrorKind::HoldersUnavailable,
            FileError::ClockOffset(_) => ErrorKind::ClockOffset,
        }
    }

    /// Another node's failure, as this node reports it: the kind it sent.
    pub fn remote(node: &str, kind: ErrorKind, message: impl Into<String>) -> Self {
        FileError::Remote { node: node.to_owned(), kind, message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_distinct_name_that_reads_back() {
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_name(kind.name()), Some(kind));
        }
        let mut names: Vec<_> = ErrorKind::ALL.iter().map(|k| k.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ErrorKind::ALL.len());
        assert_eq!(ErrorKind::from_name("no-such-kind"), None);
    }
}
