//! Identifiers on the Chord circle and interval tests with wrap-around.
//! Pure: no I/O.
//!
//! The circle has 2^64 points. A node's id is the hash of its advertised
//! address, a key's id the hash of a file name (first 8 bytes of SHA-256,
//! big-endian), so both spread evenly over the circle.

use std::fmt;

use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Bits of an identifier.
pub const BITS: u32 = 64;

/// A point on the identifier circle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub u64);

impl Id {
    /// The id of some bytes: an address or a file name.
    pub fn hash(bytes: impl AsRef<[u8]>) -> Id {
        let digest = Sha256::digest(bytes.as_ref());
        Id(u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")))
    }

    /// How far `to` lies clockwise from `self` (0 when equal).
    pub fn distance_to(self, to: Id) -> u64 {
        to.0.wrapping_sub(self.0)
    }

    /// The target of finger `i` (0-based): `self + 2^i` on the circle.
    pub fn finger_target(self, i: u32) -> Id {
        Id(self.0.wrapping_add(1u64 << i))
    }

    /// Whether `self` lies in the open arc `(from, to)`, going clockwise.
    /// `(a, a)` is the whole circle but `a`.
    pub fn in_open(self, from: Id, to: Id) -> bool {
        let d = from.distance_to(self);
        d != 0 && (from == to || d < from.distance_to(to))
    }

    /// Whether `self` lies in the half-open arc `(from, to]`, going
    /// clockwise. `(a, a]` is the whole circle.
    pub fn in_half_open(self, from: Id, to: Id) -> bool {
        from == to || (self != from && from.distance_to(self) <= from.distance_to(to))
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Ids travel as 16 hex digits in JSON (readable, and exact in every client).
impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The arc from `from` (exclusive) to `to` walked point by point on a
    /// circle of `modulus` points: the oracle for the interval tests.
    fn walk_contains(x: u64, from: u64, to: u64, include_end: bool, modulus: u64) -> bool {
        let mut p = (from + 1) % modulus;
        while p != to {
            if p == x {
                return true;
            }
            p = (p + 1) % modulus;
        }
        include_end && x == to
    }

    #[test]
    fn interval_examples() {
        let (a, b) = (Id(10), Id(20));
        assert!(Id(15).in_open(a, b));
        assert!(!Id(10).in_open(a, b));
        assert!(!Id(20).in_open(a, b));
        assert!(Id(20).in_half_open(a, b));
        assert!(!Id(25).in_half_open(a, b));
        // Wrap-around: (20, 10) holds 25 and 5 but not 15.
        assert!(Id(25).in_open(b, a) && Id(5).in_open(b, a) && !Id(15).in_open(b, a));
        assert!(Id(u64::MAX).in_open(b, a) && Id(0).in_half_open(b, a));
        // Degenerate arcs.
        assert!(Id(11).in_open(a, a) && !Id(10).in_open(a, a));
        assert!(Id(10).in_half_open(a, a) && Id(99).in_half_open(a, a));
        assert_eq!(Id(u64::MAX).finger_target(0), Id(0));
        assert_eq!(Id(1).finger_target(63), Id(1 + (1 << 63)));
    }

    proptest! {
        // On a small circle the arcs can be walked point by point; the
        // 64-bit tests must agree with the walk (ids scaled to the top bits
        // keep the circle's wrap-around exact).
        #[test]
        fn intervals_agree_with_walking_the_circle(x in 0u64..64, from in 0u64..64, to in 0u64..64) {
            let scale = |v: u64| Id(v << 58);
            let open = if from == to { x != from } else { walk_contains(x, from, to, false, 64) };
            let half = if from == to { true } else { walk_contains(x, from, to, true, 64) };
            prop_assert_eq!(scale(x).in_open(scale(from), scale(to)), open);
            prop_assert_eq!(scale(x).in_half_open(scale(from), scale(to)), half);
        }

        #[test]
        fn half_open_is_open_plus_the_end(x: u64, from: u64, to: u64) {
            let (x, from, to) = (Id(x), Id(from), Id(to));
            if from != to {
                prop_assert_eq!(x.in_half_open(from, to), x.in_open(from, to) || x == to);
            }
        }

        #[test]
        fn every_point_but_the_ends_is_on_exactly_one_side(x: u64, a: u64, b: u64) {
            let (x, a, b) = (Id(x), Id(a), Id(b));
            if a != b && x != a && x != b {
                prop_assert!(x.in_open(a, b) ^ x.in_open(b, a));
            }
        }
    }
}
