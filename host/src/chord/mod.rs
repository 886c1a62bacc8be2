//! The Chord ring (Stoica et al., ToN 2003), kept correct under churn with
//! Pamela Zave's corrections (IEEE TSE 2017). Knows nothing of HTTP, WASM or
//! AMQP.
//!
//! - `id`: identifiers and interval tests on the circle (pure);
//! - `table`: predecessor, successor list, fingers and the decisions made
//!   from them (pure);
//! - `node`: the protocol over any [`Transport`];
//! - `maintenance`: the periodic tasks (stabilize, check-predecessor,
//!   fix-fingers) until shutdown;
//! - `sim`: an in-memory transport to run many nodes in one process.

mod id;
mod maintenance;
mod node;
pub mod sim;
mod table;

pub use id::{BITS, Id};
pub use maintenance::spawn_maintenance;
pub use node::{
    ChordConfig, ChordNode, LOST_LIMIT, MAX_HOPS, MERGE_HOPS, Merge, Neighbours, RingChange, RingError, Standing,
    Tenure, Transport, Unreachable, WALK_LIMIT,
};
pub use table::{NodeRef, RoutingTable, Step, merged_successors};

/// A node seen gone again within this window is the same departure: the
/// repair it wakes and the event announcing it are not repeated.
pub const SAME_DEPARTURE_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);
