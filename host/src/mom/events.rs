//! Ring and file events on the topic exchange `ringshare.events` (routing
//! key: the event's kind). Every node announces what it witnesses (it
//! joined; a node left or stopped answering; it stored or deleted a file as
//! the responsible node) and hears everyone's: they keep its live network
//! index current, wake its repair when a node is gone, and are streamed to
//! HTTP clients (`GET /events`).

use serde::{Deserialize, Serialize};

use crate::chord::RingChange;
use crate::files::{FileChange, NetworkEntry, plausible_addr};
use crate::integrity::Digest;
use crate::store::FileName;

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

/// Most holders an event may name.
const MAX_HOLDERS: usize = 64;
/// Longest event id taken.
const MAX_ID_BYTES: usize = 128;

impl Event {
    /// An event as heard from the broker, checked before it reaches the
    /// network index, the page and `/events`: names are file names, and
    /// addresses and ids are short and printable.
    pub fn read(bytes: &[u8]) -> Result<Self, String> {
        let event: Event = serde_json::from_slice(bytes).map_err(|e| format!("not an event: {e}"))?;
        if event.id.is_empty() || event.id.len() > MAX_ID_BYTES || event.id.chars().any(char::is_control) {
            return Err("an event id must be 1 to 128 printable bytes".into());
        }
        if !plausible_addr(&event.node) {
            return Err(format!("{:?} is not a node's address", event.node));
        }
        match &event.what {
            What::NodeJoined { addr } | What::NodeLeft { addr } | What::NodeSuspected { addr } => {
                if !plausible_addr(addr) {
                    return Err(format!("{addr:?} is not a node's address"));
                }
            }
            What::FileStored { name, holders, .. } => {
                FileName::parse(name).map_err(|e| format!("event name: {e}"))?;
                if holders.len() > MAX_HOLDERS || !holders.iter().all(|h| plausible_addr(h)) {
                    return Err(format!("{name}: {} holders, or one is not an address", holders.len()));
                }
            }
            What::FileDeleted { name, .. } => {
                FileName::parse(name).map_err(|e| format!("event name: {e}"))?;
            }
        }
        Ok(event)
    }
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
            // A node found again in another ring joins this one's view.
            RingChange::Joined(node) | RingChange::Reunited(node) => What::NodeJoined { addr: node.addr },
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

    fn event(what: What) -> Vec<u8> {
        serde_json::to_vec(&Event { id: "e".into(), node: "127.0.0.1:1".into(), at_ns: 1, what }).unwrap()
    }

    #[test]
    fn events_that_lie_are_refused_with_the_reason() {
        let stored = |name: &str, holders: Vec<String>| What::FileStored {
            name: name.into(),
            size: 1,
            blake3: Digest([1; 32]),
            modified_ns: 1,
            holders,
        };
        assert!(Event::read(&event(stored("a", vec!["127.0.0.1:1".into()]))).is_ok());
        for (bad, why) in [
            (event(stored("a/b", vec![])), "event name"),
            (event(stored("a", vec!["x\ny".into()])), "not an address"),
            (event(stored("a", vec!["h:1".into(); 65])), "65 holders"),
            (event(What::FileDeleted { name: "..".into(), deleted_ns: 1 }), "event name"),
            (event(What::NodeLeft { addr: String::new() }), "not a node's address"),
            (br#"{"id":"x","node":"n","at_ns":1,"kind":"file.eaten"}"#.to_vec(), "not an event"),
        ] {
            let refused = Event::read(&bad).unwrap_err();
            assert!(refused.contains(why), "{refused}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// Fuzzed: whatever arrives on the events exchange is refused or is
        /// an event whose names and addresses were checked.
        #[test]
        fn fuzzed_events_are_refused_or_checked(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            name in "\\PC{0,12}|\\.\\.|[a-z/]{1,5}",
            holders in proptest::collection::vec("\\PC{0,20}", 0..4),
        ) {
            let _ = Event::read(&bytes);
            let what = What::FileStored { name, size: 1, blake3: Digest([3; 32]), modified_ns: 1, holders };
            if let Ok(Event { what: What::FileStored { name, holders, .. }, .. }) = Event::read(&event(what)) {
                proptest::prop_assert!(FileName::parse(&name).is_ok());
                proptest::prop_assert!(holders.iter().all(|h| plausible_addr(h)));
            }
        }
    }
}
