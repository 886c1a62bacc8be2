//! Applying a hand-off addressed to this node: the bytes come with it (a
//! small file) or are pulled from a node that has them, checked against the
//! version's hash, and stored as a copy of that version; a hand-off whose
//! version was replaced or deleted since is dropped. Taking a hand-off twice
//! is harmless: the second finds its version already here.

use std::sync::Arc;

use super::error::FileError;
use super::handoff::{Change, HandOff, Taken};
use super::known::Known;
use super::local::{Expected, Local};
use super::network::Peers;
use super::write::{StoreHow, Writer};
use crate::integrity::Digest;
use crate::store::FileName;

/// Applies hand-offs addressed to this node.
pub struct Receiver {
    local: Arc<Local>,
    writer: Arc<Writer>,
    peers: Arc<dyn Peers>,
}

impl Receiver {
    /// Hand-offs are applied to `local`, with copies pulled through `peers`.
    pub fn new(local: Arc<Local>, writer: Arc<Writer>, peers: Arc<dyn Peers>) -> Self {
        Self { local, writer, peers }
    }

    /// Applies `hint` (for `name`, its name checked) here. An error means
    /// it could not be applied now (no source answered, the store failed):
    /// it is to be tried again later.
    pub async fn take(&self, name: &FileName, hint: &HandOff) -> Result<Taken, FileError> {
        let name = name.clone();
        let known = self.local.known(&name).await?;
        if newer_or_same(&known, hint.version_ns) {
            return Ok(Taken::AlreadyHere);
        }
        let (blake3, size, sources) = match &hint.change {
            Change::Deleted => {
                self.writer.delete_here(&name, Some(hint.version_ns), 0).await?;
                return Ok(Taken::Applied);
            }
            Change::Stored { blake3, size, sources, inline } => {
                if let Some(bytes) = inline {
                    return self.store_inline(&name, hint.version_ns, *blake3, bytes).await;
                }
                (*blake3, *size, sources)
            }
        };
        let mut last = FileError::NoHolder(name.to_string());
        for source in sources {
            let (entry, body) = match self.peers.fetch(source, &name, 0..size, None).await {
                Ok(found) => (found.entry, found.bytes),
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            if entry.modified_ns > hint.version_ns {
                // A newer version exists: it reaches this node by its own way.
                return Ok(Taken::AlreadyHere);
            }
            if entry.modified_ns != hint.version_ns || entry.blake3 != Some(blake3) {
                tracing::debug!(file = %name, %source, "the hand-off's source no longer has its version");
                last = FileError::NoHolder(name.to_string());
                continue;
            }
            let how = StoreHow::Copy { version_ns: hint.version_ns, expected: Expected::Known(blake3) };
            return taken(self.writer.store_here(&name, how, body).await);
        }
        Err(last)
    }
}

impl Receiver {
    /// Stores the content a hand-off carried, if it hashes to its version's
    /// hash (else the hand-off is refused: it would never store).
    async fn store_inline(
        &self,
        name: &FileName,
        version_ns: u64,
        blake3: Digest,
        bytes: &[u8],
    ) -> Result<Taken, FileError> {
        let body =
            futures_util::stream::iter([Ok::<_, std::convert::Infallible>(bytes::Bytes::copy_from_slice(bytes))]);
        let how = StoreHow::Copy { version_ns, expected: Expected::Known(blake3) };
        taken(self.writer.store_here(name, how, body).await)
    }
}

/// What a store of a copy means for its hand-off: a copy refused because
/// this node has something newer means the hand-off is already applied.
fn taken<T>(stored: Result<T, FileError>) -> Result<Taken, FileError> {
    match stored {
        Ok(_) => Ok(Taken::Applied),
        Err(FileError::Deleted { .. } | FileError::Superseded { .. }) => Ok(Taken::AlreadyHere),
        Err(e) => Err(e),
    }
}

/// Whether what this node knows of a file is at least as new as `version_ns`.
fn newer_or_same(known: &Known, version_ns: u64) -> bool {
    match known {
        Known::File(entry) => entry.modified_ns >= version_ns,
        Known::Deleted(at) => *at >= version_ns,
        Known::Nothing => false,
    }
}
