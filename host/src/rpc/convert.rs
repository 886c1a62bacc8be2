//! Conversions between the ring's types and their protobuf messages. Nodes
//! from the wire are checked: an id must be the hash of the address.

use tonic::Status;

use bytes::Bytes;

use super::{files_pb, pb};
use crate::chord::{Id, Neighbours, NodeRef, Step};
use crate::integrity::Digest;
use crate::plugins::FileEntry;
use crate::store::FileName;
use crate::store::digest::KeyRange;

pub fn node_to_pb(n: &NodeRef) -> pb::Node {
    pb::Node { id: n.id.0, addr: n.addr.clone() }
}

pub fn nodes_to_pb(nodes: &[NodeRef]) -> Vec<pb::Node> {
    nodes.iter().map(node_to_pb).collect()
}

/// A node from the wire, refused unless its id is the hash of its address.
pub fn node_from_pb(n: pb::Node) -> Result<NodeRef, Status> {
    if n.addr.is_empty() || n.addr.len() > 255 {
        return Err(Status::invalid_argument("node address must be 1 to 255 bytes"));
    }
    let node = NodeRef::new(n.addr);
    if node.id != Id(n.id) {
        return Err(Status::invalid_argument(format!("node id {:016x} is not the hash of {}", n.id, node.addr)));
    }
    Ok(node)
}

/// Nodes from a peer's answer: malformed ones are dropped, not trusted.
pub fn nodes_from_pb(nodes: Vec<pb::Node>) -> Vec<NodeRef> {
    nodes.into_iter().filter_map(|n| node_from_pb(n).ok()).collect()
}

pub fn neighbours_to_pb(n: &Neighbours) -> pb::Neighbours {
    let departed = n.departed.iter().map(|(id, left)| pb::Departure { id: id.0, for_ms: left.as_millis() as u64 });
    pb::Neighbours {
        predecessor: n.predecessor.as_ref().map(node_to_pb),
        successors: nodes_to_pb(&n.successors),
        departed: departed.collect(),
    }
}

/// Neighbours from a peer's answer: malformed nodes are dropped, and past
/// [`crate::chord::LOST_LIMIT`] departures are not read.
pub fn neighbours_from_pb(n: pb::Neighbours) -> Neighbours {
    let departed = n.departed.into_iter().take(crate::chord::LOST_LIMIT);
    Neighbours {
        predecessor: n.predecessor.and_then(|p| node_from_pb(p).ok()),
        successors: nodes_from_pb(n.successors),
        departed: departed.map(|d| (Id(d.id), std::time::Duration::from_millis(d.for_ms))).collect(),
    }
}

pub fn step_to_pb(step: Step) -> pb::FindSuccessorResponse {
    match step {
        Step::Done(nodes) => {
            pb::FindSuccessorResponse { done: true, nodes: nodes_to_pb(&nodes), successors: Vec::new() }
        }
        Step::Next { closer, successors } => {
            pb::FindSuccessorResponse { done: false, nodes: nodes_to_pb(&closer), successors: nodes_to_pb(&successors) }
        }
    }
}

pub fn step_from_pb(r: pb::FindSuccessorResponse) -> Step {
    let nodes = nodes_from_pb(r.nodes);
    if r.done { Step::Done(nodes) } else { Step::Next { closer: nodes, successors: nodes_from_pb(r.successors) } }
}

/// A file entry from the wire, checked: a peer is not trusted with what
/// ends up in paths, headers and lengths.
pub fn entry_from_pb(e: files_pb::Entry) -> Result<FileEntry, String> {
    FileName::parse(&e.name).map_err(|why| format!("entry name {:?}: {why}", e.name))?;
    let blake3 = match e.blake3.len() {
        0 => None,
        32 => Some(Digest(e.blake3[..].try_into().expect("32 bytes"))),
        n => return Err(format!("entry {:?} has a hash of {n} bytes", e.name)),
    };
    Ok(FileEntry { name: e.name, size: e.size, blake3, modified_ns: e.modified_ns })
}

/// A file entry for the wire.
pub fn entry_to_pb(e: &FileEntry) -> files_pb::Entry {
    let blake3 = e.blake3.map_or_else(Bytes::new, |d| Bytes::copy_from_slice(&d.0));
    files_pb::Entry { name: e.name.clone(), size: e.size, blake3, modified_ns: e.modified_ns }
}

pub fn range_to_pb(range: KeyRange) -> files_pb::KeyRange {
    files_pb::KeyRange { from: range.from, to: range.to }
}
