//! Ring and file events on the topic exchange `ringshare.events` (routing
//! key: the event's kind). Every node announces what it witnesses (it
//! joined; a node left or stopped answering; it stored or deleted a file as
//! the responsible node) and hears everyone's: they keep its live network
//! index current, wake its repair when a node is gone, and are streamed to
//! HTTP clients (`GET /events`).

use serde::{Deserialize, Serialize};

use crate::chord::RingChange;
use crate::files::{FileChange, NetworkEntry};
use crate::integrity::Digest;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id (also the AMQP message id).
    pub id: String,
    /// The node that announced it.
    pub node: String,
    /// When, by that node's clock (ns since the Unix epoch).
    pub at_ns: u64,
    /// What happened.
    #[serde(flatten)]
    pub what: What,
}

/// What an event says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum What {
    /// A node joined the ring.
    #[serde(rename = "node.joined")]
    NodeJoined {
        /// Its address.
        addr: String,
    },
    /// A node left the ring gracefully.
    #[serde(rename = "node.left")]
    NodeLeft {
        /// Its address.
        addr: String,
    },
    /// A node stopped answering.
    #[serde(rename = "node.suspected")]
    NodeSuspected {
        /// Its address.
        addr: String,
    },
    /// A version of a file was stored.
    #[serde(rename = "file.stored")]
    FileStored {
        /// The file's name.
        name: String,
        /// Its size.
        size: u64,
        /// Its BLAKE3.
        blake3: Digest,
        /// The version's time.
        modified_ns: u64,
        /// Nodes holding it when it was acknowledged.
        holders: Vec<String>,
    },
    /// A file was deleted.
    #[serde(rename = "file.deleted")]
    FileDeleted {
        /// The file's name.
        name: String,
        /// When it was deleted.
        deleted_ns: u64,
    },
}

impl What {
    /// The kind, also the routing key (`node.joined`, `file.stored`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            What::NodeJoined { .. } => "node.joined",
            What::NodeLeft { .. } => "node.left",
            What::NodeSuspected { .. } => "node.suspected",
            What::FileStored { .. } => "file.stored",
            What::FileDeleted { .. } => "file.deleted",
        }
    }

    /// What a change of the ring says.
    pub fn of_ring(change: RingChange) -> Self {
        match change {
            RingChange::Joined(node) => What::NodeJoined { addr: node.addr },
            RingChange::Left(node) => What::NodeLeft { addr: node.addr },
            RingChange::Suspected(node) => What::NodeSuspected { addr: node.addr },
        }
    }

    /// What a change of this node's files says (none for what only this
    /// node's index needs).
    pub fn of_files(change: FileChange) -> Option<Self> {
        match change {
            FileChange::Stored(e) => Some(What::FileStored {
                name: e.name,
                size: e.size,
                blake3: e.blake3,
                modified_ns: e.modified_ns,
                holders: e.holders,
            }),
            FileChange::Deleted { name, at } => Some(What::FileDeleted { name, deleted_ns: at }),
            FileChange::NodeGone(_) => None,
        }
    }

    /// The change to the network index it brings, if any.
    pub fn to_files(&self) -> Option<FileChange> {
        match self {
            What::NodeJoined { .. } => None,
            What::NodeLeft { addr } | What::NodeSuspected { addr } => Some(FileChange::NodeGone(addr.clone())),
            What::FileStored { name, size, blake3, modified_ns, holders } => Some(FileChange::Stored(NetworkEntry {
                name: name.clone(),
                size: *size,
                blake3: *blake3,
                modified_ns: *modified_ns,
                holders: holders.clone(),
            })),
            What::FileDeleted { name, deleted_ns } => Some(FileChange::Deleted { name: name.clone(), at: *deleted_ns }),
        }
    }

    /// Whether a node is gone (its keys need new holders).
    pub fn node_gone(&self) -> bool {
        matches!(self, What::NodeLeft { .. } | What::NodeSuspected { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_back_what_was_written_with_their_kind_inline() {
        let event = Event {
            id: "e1".into(),
            node: "127.0.0.1:1".into(),
            at_ns: 3,
            what: What::FileStored {
                name: "a".into(),
                size: 1,
                blake3: Digest([1; 32]),
                modified_ns: 2,
                holders: vec!["127.0.0.1:1".into()],
            },
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["kind"], "file.stored");
        assert_eq!(json["name"], "a");
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), event);
        let gone = What::of_ring(RingChange::Suspected(crate::chord::NodeRef::new("127.0.0.1:2")));
        assert_eq!(gone.kind(), "node.suspected");
        assert_eq!(gone.to_files(), Some(FileChange::NodeGone("127.0.0.1:2".into())));
        assert!(serde_json::from_str::<Event>(r#"{"id":"x","node":"n","at_ns":1,"kind":"file.eaten"}"#).is_err());
    }
}
