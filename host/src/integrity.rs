//! Content integrity, pure: a file's hash is its BLAKE3 (what `b3sum`
//! prints), and its **outboard** is the BLAKE3 chaining value of each
//! 256 KiB block, 32 bytes per block (none for a file of one block), kept
//! beside the file.
//!
//! BLAKE3 is a Merkle tree over 1 KiB chunks whose left subtrees are powers
//! of two; a 256 KiB block aligned to 256 KiB is therefore always a whole
//! subtree, and its chaining value is what the tree uses. So:
//! - the outboard is checked against the root hash by merging it up the tree
//!   ([`Outboard::root`]), which costs one compression per block;
//! - any block read back is checked against its chaining value before a
//!   byte of it is used ([`Outboard::check`]), so a range is verified at the
//!   cost of hashing the blocks it touches (bao's "chunk groups", with the
//!   parents recomputed instead of stored: 1/8192 of the file instead of
//!   1/256).
//!
//! [`TreeHasher`] computes both as bytes arrive, in one pass.

use blake3::hazmat::{ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root};
use std::fmt;

/// Bytes per verified block (a power of two, at least one BLAKE3 chunk).
pub const BLOCK: u64 = 256 << 10;

/// A BLAKE3 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Lowercase hex, as the API and the plugins show it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 lowercase hex digits (anything else is refused: the text
    /// may come from a plugin or a peer and end up in a header).
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return None;
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Self(bytes))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).ok_or_else(|| serde::de::Error::custom("not 64 lowercase hex digits of a BLAKE3 digest"))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

/// Blocks in a file of `size` bytes (an empty file has one, empty, block).
pub fn blocks(size: u64) -> u64 {
    size.div_ceil(BLOCK).max(1)
}

/// Bytes of the outboard of a file of `size` bytes.
pub fn outboard_len(size: u64) -> u64 {
    match blocks(size) {
        1 => 0,
        n => n * 32,
    }
}

/// The byte range of block `index` of a file of `size` bytes.
pub fn block_span(index: u64, size: u64) -> std::ops::Range<u64> {
    let start = index * BLOCK;
    start..(start + BLOCK).min(size)
}

fn block_hasher(index: u64) -> blake3::Hasher {
    let mut hasher = blake3::Hasher::new();
    if index > 0 {
        hasher.set_input_offset(index * BLOCK);
    }
    hasher
}

/// Hashes a file as its bytes arrive: its root hash and its outboard.
pub struct TreeHasher {
    block: blake3::Hasher,
    block_len: u64,
    index: u64,
    /// Chaining values of complete subtrees not yet merged (left to right).
    stack: Vec<ChainingValue>,
    size: u64,
}

impl Default for TreeHasher {
    fn default() -> Self {
        Self { block: blake3::Hasher::new(), block_len: 0, index: 0, stack: Vec::new(), size: 0 }
    }
}

impl TreeHasher {
    /// A hasher at the start of a file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes hashed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Hashes `data`, the next bytes of the file; the chaining values of the
    /// blocks it completes are appended to `outboard`. A block's value is
    /// only emitted once a byte of the next block arrives (the last block
    /// is the root's business, see [`TreeHasher::finish`]).
    pub fn update(&mut self, mut data: &[u8], outboard: &mut Vec<u8>) {
        self.size += data.len() as u64;
        while !data.is_empty() {
            if self.block_len == BLOCK {
                self.close_block(outboard);
            }
            let take = ((BLOCK - self.block_len) as usize).min(data.len());
            self.block.update(&data[..take]);
            self.block_len += take as u64;
            data = &data[take..];
        }
    }

    fn close_block(&mut self, outboard: &mut Vec<u8>) {
        let mut cv = self.block.finalize_non_root();
        outboard.extend_from_slice(&cv);
        self.index += 1;
        // Merge every pair of equal complete subtrees, as BLAKE3 itself does
        // with chunks: more input follows, so none of them is the root.
        let mut done = self.index;
        while done & 1 == 0 {
            let left = self.stack.pop().expect("a left sibling for every even count");
            cv = merge_subtrees_non_root(&left, &cv, Mode::Hash);
            done >>= 1;
        }
        self.stack.push(cv);
        self.block = block_hasher(self.index);
        self.block_len = 0;
    }

    /// The file's root hash; the last block's chaining value (if the file
    /// has several) is appended to `outboard`.
    pub fn finish(self, outboard: &mut Vec<u8>) -> Digest {
        if self.index == 0 {
            return Digest(*self.block.finalize().as_bytes());
        }
        let mut cv = self.block.finalize_non_root();
        outboard.extend_from_slice(&cv);
        let mut stack = self.stack;
        while stack.len() > 1 {
            let left = stack.pop().expect("checked");
            cv = merge_subtrees_non_root(&left, &cv, Mode::Hash);
        }
        Digest(*merge_subtrees_root(&stack[0], &cv, Mode::Hash).as_bytes())
    }
}

/// Why stored or received bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    /// The outboard is not the one of this hash and size.
    #[error("the block hashes do not match the file's hash")]
    Outboard,
    /// A block's bytes do not match its chaining value.
    #[error("block {0} does not match its hash")]
    Block(u64),
}

/// The verified outboard of a file: checks blocks read back.
#[derive(Debug, Clone)]
pub struct Outboard {
    root: Digest,
    size: u64,
    cvs: Vec<ChainingValue>,
}

impl Outboard {
    /// The outboard `bytes` of a file of `size` bytes whose hash is `root`,
    /// once they are shown to belong to it.
    pub fn verified(root: Digest, size: u64, bytes: &[u8]) -> Result<Self, IntegrityError> {
        if bytes.len() as u64 != outboard_len(size) {
            return Err(IntegrityError::Outboard);
        }
        let cvs: Vec<ChainingValue> = bytes.chunks_exact(32).map(|c| c.try_into().expect("32-byte chunks")).collect();
        let outboard = Self { root, size, cvs };
        if outboard.cvs.len() > 1 && outboard.computed_root() != root {
            return Err(IntegrityError::Outboard);
        }
        Ok(outboard)
    }

    /// The file's hash.
    pub fn root(&self) -> Digest {
        self.root
    }

    /// The file's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The outboard as bytes (what travels between nodes).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.cvs.concat()
    }

    fn computed_root(&self) -> Digest {
        let count = self.cvs.len() as u64;
        let left = left_blocks(count);
        let (l, r) = (self.subtree(0, left), self.subtree(left, count - left));
        Digest(*merge_subtrees_root(&l, &r, Mode::Hash).as_bytes())
    }

    /// The chaining value of the `count` blocks from `first` (a whole
    /// subtree of the file's tree).
    fn subtree(&self, first: u64, count: u64) -> ChainingValue {
        if count == 1 {
            return self.cvs[first as usize];
        }
        let left = left_blocks(count);
        let l = self.subtree(first, left);
        let r = self.subtree(first + left, count - left);
        merge_subtrees_non_root(&l, &r, Mode::Hash)
    }

    /// Checks that `data` is block `index` of the file.
    pub fn check(&self, index: u64, data: &[u8]) -> Result<(), IntegrityError> {
        if data.len() as u64 != block_span(index, self.size).end.saturating_sub(index * BLOCK) {
            return Err(IntegrityError::Block(index));
        }
        let mut hasher = block_hasher(index);
        hasher.update(data);
        self.matches(index, &hasher)
    }

    /// Whether `hasher`, fed exactly block `index`, gives that block's value
    /// (the root itself, for a file of one block).
    fn matches(&self, index: u64, hasher: &blake3::Hasher) -> Result<(), IntegrityError> {
        let ok = if self.cvs.is_empty() {
            index == 0 && hasher.finalize().as_bytes() == &self.root.0
        } else {
            self.cvs.get(index as usize) == Some(&hasher.finalize_non_root())
        };
        if ok { Ok(()) } else { Err(IntegrityError::Block(index)) }
    }
}

/// Checks a stream of bytes block by block against a verified outboard and
/// hands back only what passed: bytes of a block are released once the
/// whole block is checked.
pub struct Verifier {
    outboard: std::sync::Arc<Outboard>,
    index: u64,
    hasher: blake3::Hasher,
    pending: Vec<bytes::Bytes>,
    pending_len: u64,
}

impl Verifier {
    /// A verifier of the file's bytes from the start of block `first`.
    pub fn new(outboard: std::sync::Arc<Outboard>, first: u64) -> Self {
        Self { outboard, index: first, hasher: block_hasher(first), pending: Vec::new(), pending_len: 0 }
    }

    /// The offset in the file of the next byte expected.
    pub fn offset(&self) -> u64 {
        self.index * BLOCK + self.pending_len
    }

    /// The offset up to which bytes have been checked (a block boundary, or
    /// the end of the file).
    pub fn checked(&self) -> u64 {
        (self.index * BLOCK).min(self.outboard.size)
    }

    /// Bytes still missing to complete the current block.
    pub fn wanted(&self) -> u64 {
        block_span(self.index, self.outboard.size).end.saturating_sub(self.offset())
    }

    /// Takes the next bytes; returns the pieces of every block they
    /// complete, checked, with the offset of the first. Bytes past the end of
    /// the file are refused.
    pub fn push(&mut self, mut bytes: bytes::Bytes) -> Result<Vec<bytes::Bytes>, IntegrityError> {
        let mut released = Vec::new();
        while !bytes.is_empty() {
            let wanted = self.wanted();
            if wanted == 0 {
                return Err(IntegrityError::Block(self.index));
            }
            let piece = bytes.split_to((wanted as usize).min(bytes.len()));
            self.hasher.update(&piece);
            self.pending_len += piece.len() as u64;
            self.pending.push(piece);
            if self.wanted() == 0 {
                self.close_block()?;
                released.append(&mut self.pending);
            }
        }
        Ok(released)
    }

    fn close_block(&mut self) -> Result<(), IntegrityError> {
        self.outboard.matches(self.index, &self.hasher)?;
        self.index += 1;
        self.hasher = block_hasher(self.index);
        self.pending_len = 0;
        Ok(())
    }

    /// Whether every block up to the end of the file has been checked.
    pub fn at_end(&self) -> bool {
        self.pending_len == 0 && self.index * BLOCK >= self.outboard.size
    }
}

/// The parts of `pieces` (contiguous, the first at offset `at`) that fall in
/// `start..end`.
pub fn trim(pieces: Vec<bytes::Bytes>, at: u64, start: u64, end: u64) -> Vec<bytes::Bytes> {
    let mut offset = at;
    let mut kept = Vec::with_capacity(pieces.len());
    for piece in pieces {
        let piece_end = offset + piece.len() as u64;
        let (from, to) = (start.max(offset), end.min(piece_end));
        if from < to {
            kept.push(piece.slice((from - offset) as usize..(to - offset) as usize));
        }
        offset = piece_end;
    }
    kept
}

/// Blocks in the left subtree of a subtree of `count` blocks: the largest
/// power of two below `count` (BLAKE3's rule, in blocks).
fn left_blocks(count: u64) -> u64 {
    debug_assert!(count > 1);
    1 << (63 - (count - 1).leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 1000) as u8).collect()
    }

    fn hash_in_pieces(bytes: &[u8], piece: usize) -> (Digest, Vec<u8>) {
        let mut hasher = TreeHasher::new();
        let mut outboard = Vec::new();
        for part in bytes.chunks(piece.max(1)) {
            hasher.update(part, &mut outboard);
        }
        let root = hasher.finish(&mut outboard);
        (root, outboard)
    }

    const B: usize = BLOCK as usize;

    #[test]
    fn roots_are_plain_blake3_at_the_edges() {
        for len in [0, 1, 1024, 1025, B - 1, B, B + 1, 2 * B, 2 * B + 1, 3 * B, 4 * B, 5 * B + 17, 8 * B] {
            let bytes = data(len);
            let (root, outboard) = hash_in_pieces(&bytes, 100_000);
            assert_eq!(root.0, *blake3::hash(&bytes).as_bytes(), "len {len}");
            assert_eq!(outboard.len() as u64, outboard_len(len as u64), "len {len}");
            let verified = Outboard::verified(root, len as u64, &outboard).expect("own outboard verifies");
            for i in 0..blocks(len as u64) {
                let span = block_span(i, len as u64);
                verified.check(i, &bytes[span.start as usize..span.end as usize]).expect("own block checks");
            }
        }
    }

    #[test]
    fn a_flipped_byte_or_a_foreign_outboard_is_caught() {
        let mut bytes = data(3 * B + 5);
        let (root, outboard) = hash_in_pieces(&bytes, 4096);
        let verified = Outboard::verified(root, bytes.len() as u64, &outboard).unwrap();
        bytes[B + 10] ^= 1;
        assert_eq!(verified.check(1, &bytes[B..2 * B]), Err(IntegrityError::Block(1)));
        assert_eq!(verified.check(0, &bytes[..B]), Ok(()));
        let mut bad = outboard.clone();
        bad[40] ^= 1;
        assert!(Outboard::verified(root, bytes.len() as u64, &bad).is_err());
        assert!(Outboard::verified(root, bytes.len() as u64, &outboard[..64]).is_err());
        let small = data(100);
        let (small_root, none) = hash_in_pieces(&small, 7);
        let one = Outboard::verified(small_root, 100, &none).unwrap();
        assert_eq!(one.check(0, &small), Ok(()));
        assert_eq!(one.check(0, &small[..99]), Err(IntegrityError::Block(0)));
    }

    #[test]
    fn the_verifier_releases_whole_checked_blocks_only() {
        let mut bytes = data(2 * B + 9);
        let (root, outboard) = hash_in_pieces(&bytes, 9000);
        let outboard = std::sync::Arc::new(Outboard::verified(root, bytes.len() as u64, &outboard).unwrap());
        let mut verifier = Verifier::new(outboard.clone(), 1);
        let out = verifier.push(bytes::Bytes::copy_from_slice(&bytes[B..B + 100])).unwrap();
        assert!(out.is_empty(), "nothing leaves before its block is checked");
        let out = verifier.push(bytes::Bytes::copy_from_slice(&bytes[B + 100..])).unwrap();
        assert_eq!(out.concat(), &bytes[B..]);
        assert!(verifier.at_end());
        bytes[5] ^= 0x80;
        let mut verifier = Verifier::new(outboard, 0);
        assert_eq!(verifier.push(bytes::Bytes::copy_from_slice(&bytes[..B])), Err(IntegrityError::Block(0)));
    }

    #[test]
    fn digests_parse_only_lowercase_hex() {
        let d = Digest(*blake3::hash(b"x").as_bytes());
        assert_eq!(Digest::parse(&d.to_hex()), Some(d));
        assert_eq!(Digest::parse(&d.to_hex().to_uppercase()), None);
        assert_eq!(Digest::parse(&format!("{}\n", &d.to_hex()[..63])), None);
        assert_eq!(Digest::parse(""), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn any_size_in_any_pieces_matches_blake3(len in 0usize..(6 * B), piece in 1usize..300_000) {
            let bytes = data(len);
            let (root, outboard) = hash_in_pieces(&bytes, piece);
            prop_assert_eq!(root.0, *blake3::hash(&bytes).as_bytes());
            prop_assert!(Outboard::verified(root, len as u64, &outboard).is_ok());
        }
    }
}
