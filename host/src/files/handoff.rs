//! Hinted hand-off: a write one of a file's holders missed because it did
//! not answer is kept for it (by whatever carries [`Hints`]: the RabbitMQ
//! bridge, `mom`) and delivered when it is back. The holder then pulls the
//! bytes from a node that has them, checks them against the version's hash,
//! and stores them as a copy of that version; a hand-off whose version was
//! replaced or deleted since is dropped. Taking a hand-off twice is
//! harmless: the second finds its version already here.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::error::FileError;
use super::known::Known;
use super::local::{Expected, Local};
use super::network::{Fut, Peers};
use super::write::{StoreHow, Writer};
use crate::integrity::Digest;
use crate::store::FileName;

/// A write a holder missed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandOff {
    /// The file's name.
    pub name: String,
    /// The version's modification time, or when the file was deleted (ns
    /// since the Unix epoch).
    pub version_ns: u64,
    /// What happened to the file.
    pub change: Change,
}

/// What a hand-off delivers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A version was stored: its hash and size, and nodes that have it.
    Stored {
        /// BLAKE3 of the content, hex.
        blake3: Digest,
        /// Size in bytes.
        size: u64,
        /// Nodes holding a durable copy, to pull the bytes from.
        sources: Vec<String>,
        /// The content itself (base64), for a file of at most
        /// [`INLINE_MAX`] bytes: the holder needs no source to answer.
        #[serde(default, skip_serializing_if = "Option::is_none", with = "base64_bytes")]
        inline: Option<Vec<u8>>,
    },
    /// The file was deleted.
    Deleted,
}

/// Files up to this size travel inside their hand-off.
pub const INLINE_MAX: u64 = 256 << 10;

/// `Option<Vec<u8>>` as an optional base64 string.
mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, serializer: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => serializer.serialize_str(&STANDARD.encode(bytes)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<String>::deserialize(deserializer)? {
            Some(text) => STANDARD.decode(text).map(Some).map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

/// What became of a hand-off taken here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Taken {
    /// The version is now stored here (or deleted here).
    Applied,
    /// This node already had it, or something newer: nothing to do.
    AlreadyHere,
}

/// Keeps hand-offs for holders that did not answer.
pub trait Hints: Send + Sync {
    /// Keeps `hint` for `holder` (durably, before this returns: a crash
    /// after it does not lose it).
    fn hand_off(&self, holder: &str, hint: HandOff) -> Fut<'_, ()>;
}

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
            let (entry, body) = match self.peers.fetch(source, &name, 0, size).await {
                Ok(found) => found,
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
            return match self.writer.store_here(&name, how, body).await {
                Ok(_) => Ok(Taken::Applied),
                Err(FileError::Deleted { .. } | FileError::Superseded { .. }) => Ok(Taken::AlreadyHere),
                Err(e) => Err(e),
            };
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
        match self.writer.store_here(name, how, body).await {
            Ok(_) => Ok(Taken::Applied),
            Err(FileError::Deleted { .. } | FileError::Superseded { .. }) => Ok(Taken::AlreadyHere),
            Err(e) => Err(e),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_offs_read_back_what_was_written() {
        let hint = HandOff {
            name: "a.txt".into(),
            version_ns: 7,
            change: Change::Stored {
                blake3: Digest([7; 32]),
                size: 1,
                sources: vec!["127.0.0.1:1".into()],
                inline: Some(vec![0, 255, 7]),
            },
        };
        let json = serde_json::to_string(&hint).unwrap();
        assert!(json.contains(r#""kind":"stored""#) && json.contains(r#""inline":"AP8H""#), "{json}");
        assert_eq!(serde_json::from_str::<HandOff>(&json).unwrap(), hint);
        let gone = HandOff { name: "a.txt".into(), version_ns: 9, change: Change::Deleted };
        assert_eq!(serde_json::from_str::<HandOff>(&serde_json::to_string(&gone).unwrap()).unwrap(), gone);
        assert!(serde_json::from_str::<HandOff>(r#"{"name":"a","version_ns":1,"change":{"kind":"x"}}"#).is_err());
    }
}
