//! What one node knows of a name, and which of two nodes knows better
//! (pure). Versions are ordered by modification time, then BLAKE3; a
//! deletion is ordered by its time and beats a version modified at the same
//! instant.

use crate::integrity::Digest;
use crate::plugins::FileEntry;

/// One node's state for a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    /// Neither a file nor a tombstone.
    Nothing,
    /// A version of the file.
    File(FileEntry),
    /// The name was deleted at this time (ns since the Unix epoch).
    Deleted(u64),
}

impl Known {
    /// A node's state from its copy (if any) and its tombstone (if any): the
    /// copy counts only if it is newer than the deletion.
    pub fn from_parts(entry: Option<FileEntry>, deleted: Option<u64>) -> Self {
        match (entry, deleted) {
            (Some(e), Some(at)) if e.modified_ns <= at => Known::Deleted(at),
            (Some(e), _) => Known::File(e),
            (None, Some(at)) => Known::Deleted(at),
            (None, None) => Known::Nothing,
        }
    }

    fn key(&self) -> Option<(u64, u8, Option<Digest>)> {
        match self {
            Known::Nothing => None,
            Known::File(e) => Some((e.modified_ns, 0, e.blake3)),
            Known::Deleted(at) => Some((*at, 1, None)),
        }
    }

    /// Whether this state supersedes `other`.
    pub fn newer_than(&self, other: &Known) -> bool {
        self.key() > other.key()
    }

    /// Whether both are the same version (same content, or same deletion).
    /// Copies of one version made on different nodes differ in modification
    /// time, so files compare by content.
    pub fn same(&self, other: &Known) -> bool {
        match (self, other) {
            (Known::File(a), Known::File(b)) => a.blake3.is_some() && a.blake3 == b.blake3,
            (a, b) => a.key() == b.key(),
        }
    }

    /// The newest of `states`.
    pub fn newest<'a>(states: impl IntoIterator<Item = &'a Known>) -> Known {
        let mut best = Known::Nothing;
        for state in states {
            if state.newer_than(&best) {
                best = state.clone();
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(text: &str) -> Option<Digest> {
        let mut bytes = [0u8; 32];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        Some(Digest(bytes))
    }

    fn file(modified_ns: u64, hash: &str) -> Known {
        Known::File(FileEntry { name: "f".into(), size: 1, blake3: digest(hash), modified_ns })
    }

    #[test]
    fn later_versions_win_then_larger_hashes() {
        assert!(file(2, "aa").newer_than(&file(1, "bb")));
        assert!(!file(1, "bb").newer_than(&file(2, "aa")));
        assert!(file(1, "bb").newer_than(&file(1, "aa")));
        assert!(!file(1, "aa").newer_than(&file(1, "aa")));
        assert!(file(0, "").newer_than(&Known::Nothing));
    }

    #[test]
    fn a_deletion_beats_versions_up_to_its_instant() {
        assert!(Known::Deleted(5).newer_than(&file(5, "ff")));
        assert!(!Known::Deleted(5).newer_than(&file(6, "00")));
        assert!(Known::Deleted(6).newer_than(&Known::Deleted(5)));
        assert_eq!(Known::newest(&[file(3, "a"), Known::Deleted(4), file(2, "b")]), Known::Deleted(4));
        assert_eq!(Known::newest(&[file(5, "a"), Known::Deleted(4)]), file(5, "a"));
    }

    #[test]
    fn a_copy_older_than_its_tombstone_counts_as_deleted() {
        let entry = |m| FileEntry { name: "f".into(), size: 1, blake3: digest("ab"), modified_ns: m };
        assert_eq!(Known::from_parts(Some(entry(3)), Some(3)), Known::Deleted(3));
        assert_eq!(Known::from_parts(Some(entry(4)), Some(3)), Known::File(entry(4)));
        assert_eq!(Known::from_parts(None, Some(3)), Known::Deleted(3));
        assert_eq!(Known::from_parts(None, None), Known::Nothing);
    }

    #[test]
    fn copies_of_one_version_are_the_same_whatever_their_times() {
        assert!(file(1, "ab").same(&file(9, "ab")));
        assert!(!file(1, "ab").same(&file(1, "cd")));
        assert!(Known::Deleted(4).same(&Known::Deleted(4)));
        assert!(!Known::Deleted(4).same(&Known::Deleted(5)));
        assert!(Known::Nothing.same(&Known::Nothing));
    }
}
