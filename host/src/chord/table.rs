//! A node's view of the ring: predecessor, successor list and finger table,
//! and the pure decisions made from it (next hop, successor-list merge,
//! whom to accept as predecessor). No I/O.

use serde::Serialize;

use super::id::{BITS, Id};

/// A node as others see it: its id and the address its ring RPCs answer on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct NodeRef {
    /// Hash of `addr`.
    pub id: Id,
    /// `host:port` of the node's ring (gRPC) listener.
    pub addr: String,
}

impl NodeRef {
    /// The node advertised at `addr`.
    pub fn new(addr: impl Into<String>) -> Self {
        let addr = addr.into();
        Self { id: Id::hash(&addr), addr }
    }
}

/// A node's answer to "who is responsible for this key?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The key is between this node and its successor: the answer is the
    /// first live node of this list (the successor list).
    Done(Vec<NodeRef>),
    /// Ask one of `closer` next, best (closest preceding the key) first.
    /// Should all of them be dead, the first live node of `successors` (the
    /// answering node's list) is the answer.
    Next {
        /// Nodes between the answering node and the key, closest to the key first.
        closer: Vec<NodeRef>,
        /// The answering node's successor list.
        successors: Vec<NodeRef>,
    },
}

/// Predecessor, successor list and fingers of one node.
#[derive(Debug, Clone)]
pub struct RoutingTable {
    me: NodeRef,
    r: usize,
    /// The node just before this one, once known. Changed only through
    /// [`RoutingTable::set_predecessor`], which notes when this node's
    /// range grows.
    pub predecessor: Option<NodeRef>,
    successors: Vec<NodeRef>,
    fingers: Vec<Option<NodeRef>>,
    /// When this node's own range last took in keys it did not have (a
    /// predecessor learned, or one further back than the last).
    gained_at: Option<std::time::Instant>,
    /// The last predecessor known, kept while there is none.
    last_predecessor: Option<NodeRef>,
}

impl RoutingTable {
    /// The table of a node alone in its ring, keeping `r` successors.
    pub fn new(me: NodeRef, r: usize) -> Self {
        let fingers = vec![None; BITS as usize];
        let (gained_at, last_predecessor) = (None, None);
        Self { successors: vec![me.clone()], me, r: r.max(1), predecessor: None, fingers, gained_at, last_predecessor }
    }

    /// Sets the predecessor (`now` being the time): when the new one sits
    /// before the last one known (a predecessor forgotten meanwhile
    /// counts until another is set), or none was ever known, this node's
    /// range takes in keys another node may have answered for until now,
    /// and `now` is noted ([`RoutingTable::gained_at`]).
    pub fn set_predecessor(&mut self, predecessor: Option<NodeRef>, now: std::time::Instant) {
        if let Some(new) = &predecessor {
            let gained = match &self.last_predecessor {
                None => true,
                Some(old) => new.id != old.id && !new.id.in_open(old.id, self.me.id),
            };
            if gained {
                self.gained_at = Some(now);
            }
            self.last_predecessor = Some(new.clone());
        }
        self.predecessor = predecessor;
    }

    /// When this node's own range last took in keys (see
    /// [`RoutingTable::set_predecessor`]); `None` if it never had one.
    pub fn gained_at(&self) -> Option<std::time::Instant> {
        self.gained_at
    }

    /// This node.
    pub fn me(&self) -> &NodeRef {
        &self.me
    }

    /// The successor list, nearest first; `[me]` when alone.
    pub fn successors(&self) -> &[NodeRef] {
        &self.successors
    }

    /// The first successor.
    pub fn successor(&self) -> &NodeRef {
        &self.successors[0]
    }

    /// Finger `i` (`None` until fixed).
    pub fn fingers(&self) -> &[Option<NodeRef>] {
        &self.fingers
    }

    /// The next step of a lookup for `key` made at this node.
    pub fn step(&self, key: Id) -> Step {
        if key.in_half_open(self.me.id, self.successor().id) {
            return Step::Done(self.successors.clone());
        }
        let mut candidates: Vec<NodeRef> = self
            .fingers
            .iter()
            .flatten()
            .chain(&self.successors)
            .filter(|n| n.id.in_open(self.me.id, key))
            .cloned()
            .collect();
        // Closest preceding first: farthest from this node.
        candidates.sort_by_key(|n| std::cmp::Reverse(self.me.id.distance_to(n.id)));
        candidates.dedup_by(|a, b| a.id == b.id);
        Step::Next { closer: candidates, successors: self.successors.clone() }
    }

    /// The node responsible for `key` as this table alone tells, without a
    /// call: this node when `key` is in (predecessor, me], else the first
    /// node of the successor list at or after `key`; `None` when neither
    /// covers it. A lookup from here would answer the same (its last hop
    /// asks the node before `key` on this same list), but for the calls it
    /// makes and its check that the answer is alive.
    pub fn responsible(&self, key: Id) -> Option<NodeRef> {
        if let Some(pred) = &self.predecessor
            && key.in_half_open(pred.id, self.me.id)
        {
            return Some(self.me.clone());
        }
        let mut from = self.me.id;
        for node in &self.successors {
            if key.in_half_open(from, node.id) {
                return Some(node.clone());
            }
            from = node.id;
        }
        None
    }

    /// Replaces the successor list with `head` followed by `tail` (the
    /// head's own list): ordered by distance, without duplicates or this
    /// node, at most `r` long; `[me]` when nothing is left.
    pub fn set_successors(&mut self, head: impl IntoIterator<Item = NodeRef>, tail: &[NodeRef]) {
        self.successors = merged_successors(&self.me, head.into_iter().chain(tail.iter().cloned()), self.r);
    }

    /// Drops `dead` from the successor list, fingers and predecessor.
    pub fn forget(&mut self, dead: &NodeRef) {
        self.successors.retain(|n| n.id != dead.id);
        if self.successors.is_empty() {
            self.successors.push(self.me.clone());
        }
        for finger in &mut self.fingers {
            if finger.as_ref().is_some_and(|f| f.id == dead.id) {
                *finger = None;
            }
        }
        if self.predecessor.as_ref().is_some_and(|p| p.id == dead.id) {
            self.set_predecessor(None, std::time::Instant::now());
        }
    }

    /// Whether `candidate`, who says it precedes this node, should become
    /// its predecessor (Zave's rectify): when there is none, or the current
    /// one is dead, or the candidate is closer.
    pub fn accepts_predecessor(&self, candidate: &NodeRef, current_alive: bool) -> bool {
        if candidate.id == self.me.id {
            return false;
        }
        match &self.predecessor {
            None => true,
            Some(p) => !current_alive || candidate.id.in_open(p.id, self.me.id),
        }
    }

    /// Sets finger `i`.
    pub fn set_finger(&mut self, i: usize, node: Option<NodeRef>) {
        self.fingers[i] = node;
    }
}

/// An ordered successor list for `me` from candidate nodes: sorted by
/// clockwise distance from `me`, deduplicated, without `me`, at most `r`;
/// `[me]` when no other node is given.
pub fn merged_successors(me: &NodeRef, nodes: impl IntoIterator<Item = NodeRef>, r: usize) -> Vec<NodeRef> {
    let mut list: Vec<NodeRef> = nodes.into_iter().filter(|n| n.id != me.id).collect();
    list.sort_by_key(|n| me.id.distance_to(n.id));
    list.dedup_by(|a, b| a.id == b.id);
    list.truncate(r);
    if list.is_empty() {
        list.push(me.clone());
    }
    list
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_range_grows_when_the_predecessor_moves_back_not_when_one_joins_between() {
        let me = NodeRef::new("127.0.0.1:1");
        let mut t = RoutingTable::new(me.clone(), 4);
        let t0 = std::time::Instant::now();
        let mut others: Vec<NodeRef> = (2..40).map(|p| NodeRef::new(format!("127.0.0.1:{p}"))).collect();
        // Ordered by how far before `me` each sits: nearest first.
        others.sort_by_key(|n| me.id.0.wrapping_sub(n.id.0));
        let (near, far) = (others[0].clone(), others[others.len() - 1].clone());
        t.set_predecessor(Some(far.clone()), t0);
        assert_eq!(t.gained_at(), Some(t0), "the first predecessor");
        let t1 = t0 + std::time::Duration::from_secs(1);
        t.set_predecessor(Some(near.clone()), t1);
        assert_eq!(t.gained_at(), Some(t0), "one that joined between gives keys away");
        t.set_predecessor(None, t1);
        t.set_predecessor(Some(near.clone()), t1);
        assert_eq!(t.gained_at(), Some(t0), "the same one again after it was forgotten");
        let t2 = t1 + std::time::Duration::from_secs(1);
        t.set_predecessor(None, t2);
        t.set_predecessor(Some(far), t2);
        assert_eq!(t.gained_at(), Some(t2), "one further back: keys taken in");
    }

    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn node(id: u64) -> NodeRef {
        NodeRef { id: Id(id), addr: format!("n{id}") }
    }

    /// A converged ring of `ids`: each table with its true successors and
    /// fingers (the sorted-list oracle fills them).
    fn converged(ids: &BTreeSet<u64>, r: usize) -> Vec<RoutingTable> {
        let sorted: Vec<u64> = ids.iter().copied().collect();
        let successor_of = |key: u64| *sorted.iter().find(|&&n| n >= key).unwrap_or(&sorted[0]);
        sorted
            .iter()
            .enumerate()
            .map(|(i, &id)| {
                let mut t = RoutingTable::new(node(id), r);
                let next = (1..sorted.len()).map(|k| node(sorted[(i + k) % sorted.len()]));
                t.set_successors(next, &[]);
                for b in 0..BITS {
                    t.set_finger(b as usize, Some(node(successor_of(Id(id).finger_target(b).0))));
                }
                t
            })
            .collect()
    }

    /// Follows steps from table `start` to the answer, as a lookup would.
    fn route(tables: &[RoutingTable], start: usize, key: Id) -> (u64, usize) {
        let mut at = start;
        for hops in 0..200 {
            match tables[at].step(key) {
                Step::Done(list) => return (list[0].id.0, hops),
                Step::Next { closer: candidates, .. } => {
                    at = tables.iter().position(|t| t.me().id == candidates[0].id).unwrap();
                }
            }
        }
        panic!("no answer in 200 hops");
    }

    proptest! {
        #[test]
        fn lookups_find_the_oracles_successor(ids in prop::collection::btree_set(any::<u64>(), 1..40), keys in prop::collection::vec(any::<u64>(), 1..20), start in any::<prop::sample::Index>()) {
            let tables = converged(&ids, 4);
            let sorted: Vec<u64> = ids.iter().copied().collect();
            for key in keys {
                let want = *sorted.iter().find(|&&n| n >= key).unwrap_or(&sorted[0]);
                let (got, hops) = route(&tables, start.index(tables.len()), Id(key));
                prop_assert_eq!(got, want);
                prop_assert!(hops <= 64);
            }
        }

        #[test]
        fn a_converged_table_names_the_oracles_successor_or_nothing(ids in prop::collection::btree_set(any::<u64>(), 1..40), keys in prop::collection::vec(any::<u64>(), 1..20), at in any::<prop::sample::Index>(), r in 1usize..6) {
            let mut tables = converged(&ids, r);
            let sorted: Vec<u64> = ids.iter().copied().collect();
            let i = at.index(tables.len());
            let n = sorted.len();
            tables[i].predecessor = (n > 1).then(|| node(sorted[(i + n - 1) % n]));
            let table = &tables[i];
            for key in keys {
                let want = *sorted.iter().find(|&&id| id >= key).unwrap_or(&sorted[0]);
                match table.responsible(Id(key)) {
                    Some(got) => prop_assert_eq!(got.id.0, want),
                    // Nothing said only for keys beyond the list's last node.
                    None => prop_assert!(!Id(key).in_half_open(Id(sorted[(i + n - 1) % n]), Id(sorted[i]))
                        && n > r + 1),
                }
            }
        }

        #[test]
        fn merged_lists_are_ordered_unique_and_bounded(me: u64, others in prop::collection::vec(any::<u64>(), 0..30), r in 1usize..10) {
            let list = merged_successors(&node(me), others.iter().map(|&o| node(o)), r);
            let distinct: BTreeSet<u64> = others.iter().copied().filter(|&o| o != me).collect();
            prop_assert_eq!(list.len(), distinct.len().clamp(1, r));
            if distinct.is_empty() {
                prop_assert_eq!(list[0].id, Id(me));
            } else {
                let distances: Vec<u64> = list.iter().map(|n| Id(me).distance_to(n.id)).collect();
                prop_assert!(distances.windows(2).all(|w| w[0] < w[1]));
                prop_assert!(list.iter().all(|n| n.id != Id(me)));
                // The nearest `r` of them, exactly.
                let mut all: Vec<u64> = distinct.iter().map(|&o| Id(me).distance_to(Id(o))).collect();
                all.sort_unstable();
                prop_assert_eq!(distances, all[..list.len()].to_vec());
            }
        }

        #[test]
        fn a_closer_predecessor_is_accepted(me: u64, current: u64, candidate: u64) {
            prop_assume!(me != current && me != candidate && current != candidate);
            let mut t = RoutingTable::new(node(me), 3);
            t.predecessor = Some(node(current));
            prop_assert_eq!(t.accepts_predecessor(&node(candidate), true), Id(candidate).in_open(Id(current), Id(me)));
            prop_assert!(t.accepts_predecessor(&node(candidate), false));
        }
    }

    #[test]
    fn a_lone_node_answers_every_key_itself() {
        let t = RoutingTable::new(node(5), 8);
        assert_eq!(t.step(Id(1)), Step::Done(vec![node(5)]));
        assert_eq!(t.step(Id(5)), Step::Done(vec![node(5)]));
    }

    #[test]
    fn forgetting_the_last_successor_leaves_the_node_alone() {
        let mut t = RoutingTable::new(node(5), 8);
        t.set_successors([node(9)], &[node(5), node(9)]);
        assert_eq!(t.successors(), &[node(9)]);
        t.forget(&node(9));
        assert_eq!(t.successors(), &[node(5)]);
    }
}
