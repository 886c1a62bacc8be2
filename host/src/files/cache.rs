//! [`ReadCache`]: the content of small files this node holds, kept in
//! memory by hash, so that a read of a small file it holds is answered
//! without a plugin call, a file open or a thread hand-off.
//!
//! An entry is only ever the bytes of one version, keyed by that version's
//! BLAKE3 hash, and only bytes that were checked against that hash go in: an
//! upload's as the host hashed them, a copy's as they matched the hash it
//! was sent for, a read's as they matched the outboard. So a hit is exactly
//! what the download plugin would have had to answer (the host checks every
//! byte it answers against the same hash), and nothing needs invalidating:
//! the host's index says which version of a name is current, and a version
//! no name points to any longer ages out. What is kept is bounded in bytes
//! (`--read-cache-mib`), evicted by S3-FIFO (`quick_cache`), and files over
//! [`FILE_AT_MOST`] never go in.

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use std::sync::OnceLock;

use crate::integrity::Digest;

/// Files up to this size are kept: the size an upload hands over whole
/// (and journals), which a read of this node's copy also reads whole before
/// it answers (so that such a read fills the cache).
pub const FILE_AT_MOST: u64 = crate::store::journal::CONTENT_AT_MOST as u64;

/// What an entry costs beyond its bytes (its key, the cache's slot, the
/// `Bytes` header), so that many tiny files cannot overrun the budget.
const ENTRY_OVERHEAD: u64 = 128;

#[derive(Clone)]
struct Weight;

impl quick_cache::Weighter<Digest, Bytes> for Weight {
    fn weight(&self, _: &Digest, content: &Bytes) -> u64 {
        content.len() as u64 + ENTRY_OVERHEAD
    }
}

/// Reads answered from memory, and reads of small files that were not.
struct Counted {
    hits: Counter,
    misses: Counter,
}

/// The content of small files by hash, within a budget of bytes.
pub struct ReadCache {
    /// None: the cache is off (a budget of 0).
    entries: Option<quick_cache::sync::Cache<Digest, Bytes, Weight>>,
    counted: OnceLock<Counted>,
}

impl ReadCache {
    /// A cache of at most `budget` bytes (0: none).
    pub fn new(budget: u64) -> Self {
        let entries = (budget > 0).then(|| {
            // A guess at the entries it will hold (files of about 4 KiB),
            // for the initial table size.
            let items = (budget / (4096 + ENTRY_OVERHEAD)).clamp(16, 1 << 20) as usize;
            quick_cache::sync::Cache::with_weighter(items, budget, Weight)
        });
        Self { entries, counted: OnceLock::new() }
    }

    /// Counts hits and misses in `hits` and `misses`.
    pub fn count_in(&self, hits: Counter, misses: Counter) {
        let _ = self.counted.set(Counted { hits, misses });
    }

    /// The content of the version hashed `digest`, if it is kept.
    pub fn get(&self, digest: &Digest) -> Option<Bytes> {
        let found = self.entries.as_ref()?.get(digest);
        if let Some(counted) = self.counted.get() {
            match found {
                Some(_) => counted.hits.inc(),
                None => counted.misses.inc(),
            };
        }
        found
    }

    /// The content of the version hashed `digest`, if it is kept, not
    /// counted as a read (nor made more likely to stay).
    pub fn peek(&self, digest: &Digest) -> Option<Bytes> {
        self.entries.as_ref()?.peek(digest)
    }

    /// Keeps `content`, whose BLAKE3 hash (checked by the caller) is
    /// `digest`, if it is small enough. It is copied: a piece of a larger
    /// buffer (a request body's, a plugin stream's) would keep all of that
    /// buffer alive beyond what the budget counts.
    pub fn keep(&self, digest: Digest, content: Bytes) {
        if let Some(entries) = &self.entries
            && content.len() as u64 <= FILE_AT_MOST
            && entries.peek(&digest).is_none()
        {
            entries.insert(digest, Bytes::copy_from_slice(&content));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(bytes: &[u8]) -> Digest {
        Digest(*blake3::hash(bytes).as_bytes())
    }

    #[test]
    fn small_contents_are_kept_by_hash_and_large_ones_never() {
        let cache = ReadCache::new(1 << 20);
        let (small, large) = (Bytes::from(vec![7u8; 1000]), Bytes::from(vec![8u8; FILE_AT_MOST as usize + 1]));
        cache.keep(digest_of(&small), small.clone());
        cache.keep(digest_of(&large), large.clone());
        assert_eq!(cache.get(&digest_of(&small)), Some(small));
        assert_eq!(cache.get(&digest_of(&large)), None);
        assert_eq!(cache.get(&digest_of(b"never kept")), None);
    }

    #[test]
    fn what_is_kept_holds_no_larger_buffer_alive() {
        let cache = ReadCache::new(1 << 20);
        let buffer = Bytes::from(vec![5u8; 1 << 16]);
        let piece = buffer.slice(0..100);
        cache.keep(digest_of(&piece), piece.clone());
        drop(buffer);
        let kept = cache.get(&digest_of(&piece)).unwrap();
        assert_eq!(kept, piece);
        assert_ne!(kept.as_ptr(), piece.as_ptr(), "a copy, not a view of the 64 KiB buffer");
    }

    #[test]
    fn the_budget_bounds_what_is_kept_and_counts_hits_and_misses() {
        let budget = 64 * (1024 + ENTRY_OVERHEAD);
        let cache = ReadCache::new(budget);
        let (hits, misses) = (Counter::default(), Counter::default());
        cache.count_in(hits.clone(), misses.clone());
        let contents: Vec<Bytes> = (0..1000u32).map(|i| Bytes::from(i.to_le_bytes().repeat(256))).collect();
        for content in &contents {
            cache.keep(digest_of(content), content.clone());
        }
        let kept = contents.iter().filter(|c| cache.get(&digest_of(c)).is_some()).count();
        assert!(kept > 0 && kept <= 64, "{kept} of 1000 files of 1 KiB kept in a budget of 64");
        assert_eq!(hits.get() as usize, kept);
        assert_eq!(misses.get() as usize, 1000 - kept);
        // A peek is not a read.
        let peeked = contents.iter().filter(|c| cache.peek(&digest_of(c)).is_some()).count();
        assert_eq!(peeked, kept);
        assert_eq!((hits.get() as usize, misses.get() as usize), (kept, 1000 - kept));
    }

    #[test]
    fn a_cache_of_no_bytes_keeps_nothing() {
        let cache = ReadCache::new(0);
        cache.keep(digest_of(b"x"), Bytes::from_static(b"x"));
        assert_eq!(cache.get(&digest_of(b"x")), None);
    }
}
