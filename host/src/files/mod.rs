//! Files across the ring: a file named N lives on the node responsible for
//! `hash(N)` and the next k-1 nodes of its successor list. Any node takes an
//! upload and streams it to the responsible node, which writes it and
//! streams it on to the other holders as it arrives; any node serves a
//! download from a live holder, switching holders mid-stream when one dies
//! or sends a block that does not match. The plugins stay the only code
//! that reads and writes a node's files; this module names no wire type.
//!
//! - `service`: [`Files`], what the REST API and the RPC server call, and
//!   the parts it owns:
//! - `placement`: [`Placement`], where a name belongs (rules are pure);
//! - `local`: [`Local`], this node's store, through its plugins;
//! - `write`: [`Writer`], uploads (fanned out to every holder) and deletions;
//! - `read`: [`Reader`] and [`Source`], the newest version from wherever it is;
//! - `lease`: [`Leases`], read leases, so a holder serves its own copy
//!   without asking the others;
//! - `repair`: [`Repairer`], k copies where the ring says, and the hand-over
//!   before a graceful leave;
//! - `network`: what the service needs of the ring and of other nodes
//!   (traits the RPC layer implements);
//! - `known`: what a node knows of a name (a version or a deletion), ordered;
//! - `tombstones`: this node's record of deletions;
//! - `error`: how file operations fail, with one typed kind for every edge.

mod cache;
mod error;
mod gather;
mod handoff;
mod index;
mod known;
mod lease;
mod local;
mod network;
pub mod placement;
mod read;
mod receive;
mod repair;
mod service;
mod striped;
mod tombstones;
mod write;

pub use error::{ErrorKind, FileError};
pub use gather::{Batch, Gather};
pub use handoff::{Change, HandOff, Hints, Taken, plausible_addr};
pub use index::{FileChange, NetworkEntry, NetworkIndex, NetworkListing};
pub use known::Known;
pub use lease::{LeaseCounters, Leases, spawn_renewal};
pub use local::{Expected, Local, LocalWrite};
pub use network::{
    BodyStream, ByteStream, CopySink, Deleted, Fetched, Fut, LeaseAnswer, NodeListing, Peers, Ring, StoreAnswer,
    StoreOrder,
};
pub use placement::Placement;
pub use read::{Reader, Source};
pub use repair::{Repairer, spawn_repair};
pub use service::{Delivery, Files, FilesSettings, spawn_index_refresh};
pub use tombstones::Tombstones;
pub use write::{StoreHow, Stored, Writer};
