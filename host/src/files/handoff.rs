//! Hinted hand-off: a write one of a file's holders missed because it did
//! not answer is kept for it (by whatever carries [`Hints`]: the RabbitMQ
//! bridge, `mom`) and delivered when it is back, where
//! [`super::receive::Receiver`] applies it. This file holds what travels.

use serde::{Deserialize, Serialize};

use super::network::Fut;
use crate::integrity::Digest;

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
