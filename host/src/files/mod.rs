//! Files across the ring: a file named N lives on the node responsible for
//! `hash(N)` and the next k-1 nodes of its successor list. Any node takes an
//! upload and streams it to the responsible node, which stores it through
//! its upload plugin and copies it to its successors; any node serves a
//! download from a live holder, switching holders mid-stream when one dies.
//! The plugins stay the only code that reads and writes a node's files.
//!
//! - `placement`: holders and write quorum (pure);
//! - `local`: this node's store, through its plugins;
//! - `network`: what the service needs of the ring and of other nodes (traits
//!   the RPC layer implements);
//! - `error`: how file operations fail, with one typed kind for every edge;
//! - `service`: [`Files`], what the REST API and the RPC server call;
//! - `source`: reading the newest version from wherever it is;
//! - `known`: what a node knows of a name (a version or a deletion), ordered;
//! - `tombstones`: this node's record of deletions;
//! - `write`: new uploads, streamed to every holder as they arrive;
//! - `repair`: the loop that keeps k copies where the ring says, and the
//!   hand-over before a graceful leave.

mod error;
mod known;
mod local;
mod network;
pub mod placement;
mod repair;
mod service;
mod source;
mod tombstones;
mod write;

pub use error::{ErrorKind, FileError};
pub use known::Known;
pub use local::{Expected, LocalWrite, store_local};
pub use network::{BodyStream, ByteStream, CopySink, Fut, Peers, Ring, StoreAnswer, StoreOrder};
pub use repair::spawn_repair;
pub use service::{Deleted, Files, FilesSettings, NetworkEntry, StoreHow, Stored, Version};
pub use source::Source;
pub use tombstones::Tombstones;
