//! Hinted hand-off: a write one of a file's holders missed because it did
//! not answer is kept for it (by whatever carries [`Hints`]: the RabbitMQ
//! bridge, `mom`) and delivered when it is back, where
//! [`super::receive::Receiver`] applies it. This file holds what travels.

use serde::{Deserialize, Serialize};

use super::network::Fut;
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

/// Longest node address taken from the wire (as in ring messages).
pub const MAX_ADDR_BYTES: usize = 255;
/// Most source nodes a hand-off may name.
const MAX_SOURCES: usize = 64;

/// Whether `addr` could be a node's address: 1 to [`MAX_ADDR_BYTES`] bytes
/// without spaces or control characters.
pub fn plausible_addr(addr: &str) -> bool {
    !addr.is_empty() && addr.len() <= MAX_ADDR_BYTES && !addr.chars().any(|c| c.is_control() || c.is_whitespace())
}

impl HandOff {
    /// A hand-off as it came from the broker, checked: its name is a file
    /// name, its sources are addresses (64 at most), and content that
    /// travels with it is of the size it says and small.
    pub fn read(bytes: &[u8]) -> Result<(FileName, Self), String> {
        let hint: HandOff = serde_json::from_slice(bytes).map_err(|e| format!("not a hand-off: {e}"))?;
        let name = FileName::parse(&hint.name).map_err(|e| format!("hand-off name: {e}"))?;
        if let Change::Stored { size, sources, inline, .. } = &hint.change {
            if sources.len() > MAX_SOURCES || !sources.iter().all(|s| plausible_addr(s)) {
                return Err(format!("{name}: {} sources, or one is not an address", sources.len()));
            }
            if let Some(inline) = inline
                && (inline.len() as u64 != *size || *size > INLINE_MAX)
            {
                return Err(format!("{name}: {} bytes carried for a version of {size}", inline.len()));
            }
        }
        Ok((name, hint))
    }
}

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

    #[test]
    fn hand_offs_that_lie_are_refused_with_the_reason() {
        let stored = |name: &str, size: u64, sources: Vec<String>, inline: Option<Vec<u8>>| {
            let change = Change::Stored { blake3: Digest([1; 32]), size, sources, inline };
            serde_json::to_vec(&HandOff { name: name.into(), version_ns: 1, change }).unwrap()
        };
        let ok = stored("a", 3, vec!["127.0.0.1:1".into()], Some(vec![1, 2, 3]));
        assert_eq!(HandOff::read(&ok).unwrap().0.as_str(), "a");
        for (bad, why) in [
            (stored("../a", 0, vec![], None), "hand-off name"),
            (stored("a", 4, vec![], Some(vec![1, 2, 3])), "3 bytes carried for a version of 4"),
            (stored("a", 1, vec!["has space:1".into()], None), "not an address"),
            (stored("a", 1, vec!["h:1".into(); 65], None), "65 sources"),
            (b"{\"name\":1}".to_vec(), "not a hand-off"),
        ] {
            let refused = HandOff::read(&bad).unwrap_err();
            assert!(refused.contains(why), "{refused}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// Fuzzed: whatever arrives on a hand-off queue is refused or is a
        /// hand-off whose every part was checked.
        #[test]
        fn fuzzed_hand_offs_are_refused_or_checked(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            name in "\\PC{0,12}|\\.\\.|[a-z/]{1,5}",
            size in 0u64..10,
            inline in proptest::option::of(proptest::collection::vec(proptest::num::u8::ANY, 0..10)),
            sources in proptest::collection::vec("\\PC{0,20}", 0..4),
        ) {
            let _ = HandOff::read(&bytes);
            let change = Change::Stored { blake3: Digest([2; 32]), size, sources, inline };
            let json = serde_json::to_vec(&HandOff { name, version_ns: 5, change }).unwrap();
            if let Ok((name, hint)) = HandOff::read(&json) {
                proptest::prop_assert_eq!(name.as_str(), hint.name.as_str());
                if let Change::Stored { size, sources, inline, .. } = hint.change {
                    proptest::prop_assert!(sources.iter().all(|s| plausible_addr(s)));
                    proptest::prop_assert!(inline.is_none_or(|b| b.len() as u64 == size));
                }
            }
        }
    }
}
