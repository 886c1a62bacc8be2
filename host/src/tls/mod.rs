//! Members only: a cluster's certificates and how a node uses them.
//!
//! - `certs`: making a cluster CA and node certificates (rcgen);
//! - `credentials`: loading and checking a node's `--tls-dir`, and the
//!   TLS configurations it makes for the listener and the peer channels;
//! - `rotation`: certificates replaced while the node runs;
//! - `gate`: who may call the ring and file RPCs (members, with a
//!   certificate of the cluster's CA), and the record of strangers refused;
//! - `read_ahead`: large reads from the socket under rustls.

mod certs;
mod credentials;
mod gate;
mod read_ahead;
mod rotation;

use std::path::Path;

pub use certs::{CA_DAYS, NODE_DAYS, make_ca, make_node};
pub use credentials::{Credentials, speaks_for};
pub use gate::{Gate, Peer, members_only};
pub use read_ahead::{READ_AHEAD, ReadAhead};
pub use rotation::{QUIET as ROTATION_QUIET, Rotating};

/// Time a client has to send its first byte and finish a TLS handshake on
/// the listener, and that a peer channel gives its handshake.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The CA's certificate, in a CA folder and in every node folder.
pub const CA_CERT: &str = "ca.crt";
/// The CA's private key, in the CA folder only.
pub const CA_KEY: &str = "ca.key";
/// A node's certificate.
pub const NODE_CERT: &str = "node.crt";
/// A node's private key.
pub const NODE_KEY: &str = "node.key";

/// The host part of `host:port` (`[v6]:port` too).
pub fn host_of(addr: &str) -> Option<&str> {
    let (host, port) = addr.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

/// What goes wrong with certificates, named by file where one is at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file is missing, unreadable, or not what it must be.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// A bad argument.
    #[error("{0}")]
    Usage(String),
    /// Making a key or certificate failed.
    #[error("cannot make the certificate: {0}")]
    Make(String),
}

impl TlsError {
    fn file(path: impl AsRef<Path>, why: impl std::fmt::Display) -> Self {
        Self::File { path: path.as_ref().display().to_string(), why: why.to_string() }
    }
}
