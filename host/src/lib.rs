//! # ringshare node host
//!
//! One node of the ringshare network: a REST API whose file behaviours
//! (listing, upload, download) are WebAssembly component plugins, each
//! sandboxed to the node's store directory.
//!
//! - [`config`]: the node's typed configuration and its defaults;
//! - [`chord`]: the Chord ring: ids, routing table, protocol, maintenance,
//!   and an in-memory network for simulations;
//! - [`files`]: files across the ring: placement, replicas, downloads from
//!   any holder;
//! - [`integrity`]: BLAKE3 hashes and outboards, verified block by block;
//! - [`metrics`]: the node's Prometheus metrics;
//! - [`trace`]: one request followed across nodes in the logs;
//! - [`rpc`]: node-to-node gRPC (tonic): the ring and file transfer;
//! - [`store`]: file names and the on-disk layout of a node's store;
//! - [`plugins`]: the wasmtime engine, plugin loading, limits, capabilities
//!   and the calls/sessions the rest of the host makes into plugins;
//! - [`rest`]: the axum routes users and clients call;
//! - [`tls`]: members only: a cluster's certificates, and who may call;
//! - [`listener`]: the one port of REST and gRPC, plain or TLS, with timeouts;
//! - [`node`]: [`run`] ties them together on a bound listener;
//! - [`check`]: `ringshare plugin check`, a plugin exercised on its own;
//! - [`settings`]: the command's settings, from a file, the environment and flags;
//! - [`client`]: the client commands (`put`, `get`, `ls`, ...) and the menu;
//! - [`devnet`]: `ringshare devnet`, a ring of local processes.
#![deny(missing_docs)]

pub mod check;
pub mod chord;
pub mod client;
pub mod clock;
pub mod config;
pub mod devnet;
pub mod files;
pub mod integrity;
pub mod listener;
pub mod metrics;
pub mod mom;
pub mod node;
pub mod plugins;
pub mod rest;
pub mod rpc;
pub mod settings;
pub mod store;
pub mod tls;
pub mod trace;

pub use config::{NodeConfig, PluginLimits};
pub use node::{Node, run};
pub use plugins::{PluginError, PluginHost, PluginKind};
pub use store::records::Records;
pub use store::sync::GroupSync;
pub use store::{FileName, NameError};
