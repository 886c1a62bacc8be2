//! Digests of what a node holds, by ranges of the ring's key space, kept up
//! to date on every change: two replicas compare a range by exchanging a
//! few digests and walk only the parts that differ (anti-entropy, as
//! Dynamo's and Cassandra's Merkle trees of key ranges do).
//!
//! The key space (the ring's 64-bit ids) is cut into [`LEAVES`] leaves by
//! the ids' top [`LEAF_BITS`] bits. A leaf's digest is the XOR of the
//! 128-bit hashes of the items in it (a file's version: its name and
//! hash; a deletion: its name and time), and its count how many there are.
//! An item is added or removed in O(1), whatever the number of files; the
//! digest of a run of leaves is the XOR of theirs, and two sets of items
//! with the same digest are the same set but for a chance of 2^-128 per
//! comparison (the items are keyed BLAKE3 hashes, which nobody can aim).

/// Bits of an id that name its leaf.
pub const LEAF_BITS: u32 = 16;
/// Leaves of the key space.
pub const LEAVES: u32 = 1 << LEAF_BITS;

/// The leaf of key `key`.
pub fn leaf_of(key: u64) -> u32 {
    (key >> (64 - LEAF_BITS)) as u32
}

/// The first key of leaf `leaf`.
pub fn first_key(leaf: u32) -> u64 {
    u64::from(leaf) << (64 - LEAF_BITS)
}

/// A digest and a count of items: of a leaf, a run of leaves or a range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sum {
    /// The XOR of the items' hashes.
    pub digest: u128,
    /// How many items.
    pub count: u64,
}

impl Sum {
    /// Adds `item` (XOR is its own inverse: [`Sum::remove`] undoes it).
    pub fn add(&mut self, item: u128) {
        self.digest ^= item;
        self.count += 1;
    }

    /// Removes `item`, added before.
    pub fn remove(&mut self, item: u128) {
        self.digest ^= item;
        self.count = self.count.saturating_sub(1);
    }

    /// Adds every item of `other`.
    pub fn merge(&mut self, other: Sum) {
        self.digest ^= other.digest;
        self.count += other.count;
    }
}

/// Leaves of the key space, with their sums.
pub struct Leaves {
    digests: Vec<u128>,
    counts: Vec<u32>,
}

impl Default for Leaves {
    fn default() -> Self {
        Self { digests: vec![0; LEAVES as usize], counts: vec![0; LEAVES as usize] }
    }
}

impl std::fmt::Debug for Leaves {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let items: u64 = self.counts.iter().map(|c| u64::from(*c)).sum();
        f.debug_struct("Leaves").field("items", &items).finish()
    }
}

impl Leaves {
    /// Adds `item`, of key `key`.
    pub fn add(&mut self, key: u64, item: u128) {
        let leaf = leaf_of(key) as usize;
        self.digests[leaf] ^= item;
        self.counts[leaf] = self.counts[leaf].saturating_add(1);
    }

    /// Removes `item`, of key `key`, added before.
    pub fn remove(&mut self, key: u64, item: u128) {
        let leaf = leaf_of(key) as usize;
        self.digests[leaf] ^= item;
        self.counts[leaf] = self.counts[leaf].saturating_sub(1);
    }

    /// The sum of leaf `leaf`.
    pub fn leaf(&self, leaf: u32) -> Sum {
        let i = (leaf % LEAVES) as usize;
        Sum { digest: self.digests[i], count: u64::from(self.counts[i]) }
    }

    /// The sum of the leaves of `run`.
    pub fn run(&self, run: Run) -> Sum {
        let mut sum = Sum::default();
        for leaf in run.leaves() {
            sum.merge(self.leaf(leaf));
        }
        sum
    }
}

/// A run of consecutive leaves, clockwise from `first`, wrapping past the
/// last leaf to the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// The first leaf.
    pub first: u32,
    /// How many leaves, 1 to [`LEAVES`].
    pub count: u32,
}

impl Run {
    /// The run of `count` leaves from `first`, if it is one: `first` a
    /// leaf and `count` 1 to [`LEAVES`].
    pub fn new(first: u32, count: u32) -> Option<Run> {
        (first < LEAVES && (1..=LEAVES).contains(&count)).then_some(Run { first, count })
    }

    /// The leaves the keys of the ring range `(from, to]` fall in (the
    /// whole key space when `from == to`).
    pub fn covering(from: u64, to: u64) -> Run {
        let first = leaf_of(from.wrapping_add(1));
        if from == to {
            return Run { first, count: LEAVES };
        }
        let last = leaf_of(to);
        let count = (last.wrapping_sub(first) % LEAVES) + 1;
        // A range of nearly the whole ring may start and end in one leaf.
        let count = if count == 1 && to.wrapping_sub(from) > first_key(1) { LEAVES } else { count };
        Run { first, count }
    }

    /// Its leaves, in order.
    pub fn leaves(self) -> impl Iterator<Item = u32> {
        (0..self.count).map(move |i| (self.first + i) % LEAVES)
    }

    /// Whether `leaf` is one of its leaves.
    pub fn contains(self, leaf: u32) -> bool {
        (leaf.wrapping_sub(self.first) % LEAVES) < self.count
    }

    /// The run cut into up to `parts` runs of nearly equal length, in order.
    pub fn split(self, parts: u32) -> Vec<Run> {
        let parts = parts.clamp(1, self.count);
        let (each, extra) = (self.count / parts, self.count % parts);
        let mut first = self.first;
        (0..parts)
            .map(|i| {
                let count = each + u32::from(i < extra);
                let run = Run { first, count };
                first = (first + count) % LEAVES;
                run
            })
            .collect()
    }
}

/// A set of leaves.
#[derive(Clone)]
pub struct LeafSet(Vec<u64>);

impl Default for LeafSet {
    fn default() -> Self {
        Self(vec![0; (LEAVES / 64) as usize])
    }
}

impl LeafSet {
    /// Adds `leaf`.
    pub fn insert(&mut self, leaf: u32) {
        let leaf = leaf % LEAVES;
        self.0[(leaf / 64) as usize] |= 1 << (leaf % 64);
    }

    /// Whether `leaf` is in it.
    pub fn contains(&self, leaf: u32) -> bool {
        let leaf = leaf % LEAVES;
        self.0[(leaf / 64) as usize] & (1 << (leaf % 64)) != 0
    }
}

/// A ring range `(from, to]` of keys (the whole ring when `from == to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRange {
    /// The key before the first.
    pub from: u64,
    /// The last key.
    pub to: u64,
}

impl KeyRange {
    /// Whether `key` lies in it.
    pub fn contains(self, key: u64) -> bool {
        in_range(key, self.from, self.to)
    }

    /// The leaves its keys fall in.
    pub fn run(self) -> Run {
        Run::covering(self.from, self.to)
    }

    /// Its leaves that hold keys outside it too (at most two).
    fn partial(self) -> Vec<u32> {
        if self.from == self.to {
            return Vec::new();
        }
        let run = self.run();
        if run.count == LEAVES {
            // What is left out lies in one leaf, or two side by side.
            let (a, b) = (leaf_of(self.from.wrapping_add(1)), leaf_of(self.to));
            return if a == b { vec![a] } else { vec![a, b] };
        }
        let last = (run.first + run.count - 1) % LEAVES;
        let mut partial = Vec::with_capacity(2);
        if first_key(run.first) != self.from.wrapping_add(1) {
            partial.push(run.first);
        }
        if first_key((last + 1) % LEAVES) != self.to.wrapping_add(1) && !partial.contains(&last) {
            partial.push(last);
        }
        partial
    }

    /// The range cut into up to `parts` ranges along leaves, in order.
    pub fn split(self, parts: u32) -> Vec<KeyRange> {
        let runs = self.run().split(parts);
        let mut ranges = Vec::with_capacity(runs.len());
        let mut from = self.from;
        for i in 0..runs.len() {
            let to = match runs.get(i + 1) {
                Some(next) => first_key(next.first).wrapping_sub(1),
                None => self.to,
            };
            ranges.push(KeyRange { from, to });
            from = to;
        }
        ranges
    }
}

/// How to sum a store's items over some ranges: whole leaves from its
/// leaves, and one scan of its items for the leaves a range only partly
/// covers.
pub struct Plan {
    ranges: Vec<KeyRange>,
    /// Each range's partial leaves.
    partial: Vec<Vec<u32>>,
    scanned: LeafSet,
}

impl Plan {
    /// The plan for `ranges`.
    pub fn new(ranges: Vec<KeyRange>) -> Plan {
        let mut scanned = LeafSet::default();
        let partial: Vec<Vec<u32>> = ranges.iter().map(|r| r.partial()).collect();
        for leaf in partial.iter().flatten() {
            scanned.insert(*leaf);
        }
        Plan { ranges, partial, scanned }
    }

    /// The leaves to scan.
    pub fn scanned(&self) -> &LeafSet {
        &self.scanned
    }

    /// The sums of the ranges: `leaf` answers a whole leaf; `scan` is given
    /// the leaves to scan and calls back with each item in them (its key
    /// and hash).
    pub fn sums(&self, leaf: impl Fn(u32) -> Sum, scan: impl FnOnce(&LeafSet, &mut dyn FnMut(u64, u128))) -> Vec<Sum> {
        let mut sums: Vec<Sum> = self
            .ranges
            .iter()
            .zip(&self.partial)
            .map(|(range, partial)| {
                let mut sum = Sum::default();
                for l in range.run().leaves().filter(|l| !partial.contains(l)) {
                    sum.merge(leaf(l));
                }
                sum
            })
            .collect();
        scan(&self.scanned, &mut |key, item| {
            let l = leaf_of(key);
            for (i, (range, partial)) in self.ranges.iter().zip(&self.partial).enumerate() {
                if partial.contains(&l) && range.contains(key) {
                    sums[i].add(item);
                }
            }
        });
        sums
    }
}

/// Whether `key` lies in the ring range `(from, to]` (everything when
/// `from == to`).
pub fn in_range(key: u64, from: u64, to: u64) -> bool {
    from == to || key.wrapping_sub(from).wrapping_sub(1) < to.wrapping_sub(from)
}

/// The item of a version of file `name`: its content's hash (none: not
/// hashed yet). Not its time: copies of one version compare by content
/// (see `files::known`).
pub fn file_item(name: &str, blake3: Option<&[u8; 32]>) -> u128 {
    item(b"file", name, 0, blake3.unwrap_or(&[0; 32]))
}

/// The item of the deletion of `name` at `at`.
pub fn deletion_item(name: &str, at: u64) -> u128 {
    item(b"deleted", name, at, &[0; 32])
}

fn item(kind: &[u8], name: &str, time: u64, hash: &[u8; 32]) -> u128 {
    let mut hasher = blake3::Hasher::new_keyed(&KEY);
    hasher.update(kind).update(&[0]).update(&(name.len() as u64).to_le_bytes()).update(name.as_bytes());
    hasher.update(&time.to_le_bytes()).update(hash);
    let out = hasher.finalize();
    u128::from_le_bytes(out.as_bytes()[..16].try_into().expect("16 bytes"))
}

/// The key of the items' hashes: the same on every node (a fixed string).
const KEY: [u8; 32] = *b"ringshare anti-entropy items v1.";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn runs_cover_ranges_and_wrap() {
        assert_eq!(Run::covering(5, 5), Run { first: 0, count: LEAVES });
        // (0, first key of leaf 2]: leaves 0 (keys 1..), 1 and 2.
        assert_eq!(Run::covering(0, first_key(2)), Run { first: 0, count: 3 });
        // Wrapping past the top of the ring.
        let run = Run::covering(first_key(LEAVES - 1), first_key(1) + 7);
        assert_eq!(run, Run { first: LEAVES - 1, count: 3 });
        assert!(run.contains(LEAVES - 1) && run.contains(0) && run.contains(1) && !run.contains(2));
        assert_eq!(run.leaves().collect::<Vec<_>>(), [LEAVES - 1, 0, 1]);
        // Nearly the whole ring, starting and ending in one leaf.
        assert_eq!(Run::covering(first_key(3) + 10, first_key(3) + 5).count, LEAVES);
        assert_eq!(Run::new(LEAVES, 1), None);
        assert_eq!(Run::new(0, 0), None);
    }

    #[test]
    fn a_run_splits_into_runs_that_cover_it_in_order() {
        let run = Run { first: LEAVES - 3, count: 10 };
        let parts = run.split(4);
        assert_eq!(parts.iter().map(|p| p.count).collect::<Vec<_>>(), [3, 3, 2, 2]);
        let leaves: Vec<u32> = parts.iter().flat_map(|p| p.leaves()).collect();
        assert_eq!(leaves, run.leaves().collect::<Vec<_>>());
        assert_eq!(run.split(100).len(), 10, "no empty parts");
    }

    #[test]
    fn items_differ_by_every_part() {
        let base = file_item("a", Some(&[1; 32]));
        assert_ne!(base, file_item("b", Some(&[1; 32])));
        assert_ne!(base, file_item("a", Some(&[2; 32])));
        assert_ne!(deletion_item("a", 0), file_item("a", None));
        assert_ne!(deletion_item("a", 1), deletion_item("a", 2));
    }

    proptest! {
        /// Summed by plan, a range's sum is that of its items, and a range
        /// split along leaves sums to the same.
        #[test]
        fn a_plan_sums_exactly_the_items_of_each_range(
            items in proptest::collection::vec((any::<u64>(), any::<u128>()), 0..300),
            from in any::<u64>(),
            to in any::<u64>(),
            parts in 1u32..300,
            near in any::<bool>(),
        ) {
            // Ranges inside one leaf, or starting and ending in one, too.
            let to = if near { from.wrapping_add(to % (1 << 50)) } else { to };
            let mut leaves = Leaves::default();
            for (key, item) in &items { leaves.add(*key, *item); }
            let range = KeyRange { from, to };
            let split = range.split(parts);
            let mut ranges = vec![range];
            ranges.extend(split.iter().copied());
            let sums = Plan::new(ranges.clone()).sums(|l| leaves.leaf(l), |scanned, found| {
                for (key, item) in &items {
                    if scanned.contains(leaf_of(*key)) { found(*key, *item); }
                }
            });
            for (range, sum) in ranges.iter().zip(&sums) {
                let mut want = Sum::default();
                for (key, item) in &items { if range.contains(*key) { want.add(*item); } }
                prop_assert_eq!(*sum, want, "{:?}", range);
            }
            let mut parts_sum = Sum::default();
            for sum in &sums[1..] { parts_sum.merge(*sum); }
            prop_assert_eq!(parts_sum, sums[0]);
        }

        /// Whatever order items come and go in, the leaves hold the sums of
        /// the items left, and a run's sum is that of the items in it.
        #[test]
        fn leaves_hold_the_sum_of_what_is_left(
            items in proptest::collection::vec((any::<u64>(), any::<u128>(), any::<bool>()), 0..200),
            from in any::<u64>(),
            to in any::<u64>(),
        ) {
            let mut leaves = Leaves::default();
            let mut left = Vec::new();
            for (key, item, stays) in &items {
                leaves.add(*key, *item);
                if *stays { left.push((*key, *item)); }
            }
            for (key, item, stays) in &items {
                if !stays { leaves.remove(*key, *item); }
            }
            let run = Run::covering(from, to);
            let mut want = Sum::default();
            for (key, item) in &left {
                if run.contains(leaf_of(*key)) { want.add(*item); }
            }
            prop_assert_eq!(leaves.run(run), want);
            // Every key of the range falls in the run.
            for (key, _) in &left {
                if in_range(*key, from, to) { prop_assert!(run.contains(leaf_of(*key))); }
            }
        }
    }
}
