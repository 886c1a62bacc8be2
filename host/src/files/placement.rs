//! Where a file lives: on the node responsible for its key and the next
//! k-1 nodes of that node's successor list. The rules are pure functions
//! ([`holders`], and [`write_quorum`] for deletions); [`Placement`] asks the ring.

use std::sync::Arc;

use super::error::FileError;
use super::network::Ring;
use crate::chord::{Id, NodeRef, WALK_LIMIT};
use crate::store::FileName;
use crate::store::digest::KeyRange;

/// The keys a node holds copies of (see [`Placement::held`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Its own range: the keys it is responsible for.
    pub own: KeyRange,
    /// Every key it holds a copy of.
    pub all: KeyRange,
}

/// This node's view of where files belong.
pub struct Placement {
    ring: Arc<dyn Ring>,
    replicas: usize,
}

impl Placement {
    /// Placement of `replicas` copies (k) on `ring`.
    pub fn new(ring: Arc<dyn Ring>, replicas: usize) -> Self {
        Self { ring, replicas }
    }

    /// Copies kept of each file (k).
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// This node.
    pub fn me(&self) -> NodeRef {
        self.ring.me()
    }

    /// Whether `node` is this node.
    pub fn is_me(&self, node: &NodeRef) -> bool {
        node.id == self.ring.me().id
    }

    /// The node responsible for `name`: one lookup, where [`Placement::holders`]
    /// also asks that node for its successors. A write sent to it needs
    /// nothing more (it places the copies itself).
    pub async fn responsible(&self, name: &FileName) -> Result<NodeRef, FileError> {
        Ok(self.ring.lookup(Id::hash(name.as_str())).await?.0)
    }

    /// The node responsible for `name` as this node's own ring table tells,
    /// without a call (`None` when it does not tell). The answer is not
    /// checked to be alive, as a lookup's is: only for a write that is tried
    /// again, through a lookup, should that node be lost.
    pub fn responsible_by_table(&self, name: &FileName) -> Option<NodeRef> {
        self.ring.responsible_by_table(Id::hash(name.as_str()))
    }

    /// The holders of `name` as this node's own table tells, without a
    /// call ([`placed_by_table`]); `None` when the table does not name all
    /// of them. Like [`Placement::responsible_by_table`], unchecked: a read
    /// that finds no version there asks through a lookup.
    pub fn holders_by_table(&self, name: &FileName) -> Option<Vec<NodeRef>> {
        let responsible = self.responsible_by_table(name)?;
        let predecessor = self.ring.predecessor();
        placed_by_table(&self.me(), predecessor.as_ref(), &self.ring.successors(), &responsible, self.replicas)
    }

    /// Where `name` belongs: the responsible node first, then its
    /// successors (one lookup, one successor-list read).
    pub async fn holders(&self, name: &FileName) -> Result<Vec<NodeRef>, FileError> {
        Ok(self.holders_and_beyond(name).await?.0)
    }

    /// The holders of `name`, and the nodes after them on the responsible
    /// node's successor list (where a copy written under another view of the
    /// ring may be).
    pub async fn holders_and_beyond(&self, name: &FileName) -> Result<(Vec<NodeRef>, Vec<NodeRef>), FileError> {
        let (responsible, _) = self.ring.lookup(Id::hash(name.as_str())).await?;
        let successors = if self.is_me(&responsible) {
            self.ring.successors()
        } else {
            self.ring.successors_of(&responsible).await?
        };
        let placed = holders(&responsible, &successors, self.replicas);
        let beyond = successors.into_iter().filter(|n| !placed.iter().any(|p| p.id == n.id)).collect();
        Ok((placed, beyond))
    }

    /// The keys this node holds copies of, as its view of the ring places
    /// them: its own range (after its predecessor), and every range it
    /// holds (after its k-th predecessor; the whole ring in a ring of k
    /// nodes or fewer). None while it knows no predecessor, or one of them
    /// does not answer.
    pub async fn held(&self) -> Option<Held> {
        let me = self.me();
        let Some(first) = self.ring.predecessor() else {
            // Alone in its ring: every key is its own.
            let alone = self.ring.successors().iter().all(|s| s.id == me.id);
            let ring = KeyRange { from: me.id.0, to: me.id.0 };
            return alone.then_some(Held { own: ring, all: ring });
        };
        let whole = KeyRange { from: me.id.0, to: me.id.0 };
        if first.id == me.id {
            return Some(Held { own: whole, all: whole });
        }
        let own = KeyRange { from: first.id.0, to: me.id.0 };
        let mut seen = vec![me.id, first.id];
        let mut last = first;
        for _ in 1..self.replicas {
            match self.ring.predecessor_of(&last).await.ok()? {
                Some(p) if !seen.contains(&p.id) => {
                    seen.push(p.id);
                    last = p;
                }
                // Back at a node already met: fewer nodes than copies.
                _ => return Some(Held { own, all: whole }),
            }
        }
        Some(Held { own, all: KeyRange { from: last.id.0, to: me.id.0 } })
    }

    /// What changes hands when this node leaves: the keys it holds, cut at
    /// its k nearest predecessors, each part with the node that becomes one
    /// of its holders once this node is gone. The part after the i-th
    /// predecessor (this node the 0-th) is held by that predecessor and its
    /// k-1 successors, this node among them; without it, the (k-i)-th
    /// successor of this node joins them. Empty in a ring of k nodes or
    /// fewer (every node holds every key already); `None` while a
    /// predecessor does not answer or too few successors are known.
    pub async fn heirs(&self) -> Option<Vec<(KeyRange, NodeRef)>> {
        let me = self.me();
        let mut preds = vec![me.clone()];
        let mut next = self.ring.predecessor()?;
        while preds.len() <= self.replicas {
            if preds.iter().any(|p| p.id == next.id) {
                return Some(Vec::new()); // round the ring: k nodes or fewer
            }
            preds.push(next.clone());
            if preds.len() <= self.replicas {
                next = self.ring.predecessor_of(&next).await.ok()??;
            }
        }
        heirs(&preds, &self.successors(self.replicas), self.replicas)
    }

    /// The placement of `name` once `leaver` is gone: k holders besides it.
    pub async fn holders_without(&self, name: &FileName, leaver: &NodeRef) -> Result<Vec<NodeRef>, FileError> {
        let placed = self.holders(name).await?;
        let responsible = &placed[0];
        let successors = if responsible.id == leaver.id { self.ring.successors() } else { placed[1..].to_vec() };
        let mut after: Vec<NodeRef> =
            holders(responsible, &successors, self.replicas + 1).into_iter().filter(|h| h.id != leaver.id).collect();
        after.truncate(self.replicas);
        Ok(after)
    }

    /// Whether `node` is, or would be if it were in the ring, one of the
    /// holders of `name`.
    pub async fn would_hold(&self, name: &FileName, node: &NodeRef) -> Result<bool, FileError> {
        let placed = self.holders(name).await?;
        Ok(would_hold(Id::hash(name.as_str()), &placed, self.replicas, node))
    }

    /// Whether `node` would be one of the holders of `name`, placed on
    /// `placed` (as [`Placement::holders`] answered) if it were in the ring.
    pub fn would_hold_placed(&self, name: &FileName, placed: &[NodeRef], node: &NodeRef) -> bool {
        would_hold(Id::hash(name.as_str()), placed, self.replicas, node)
    }

    /// A member that stopped answering (crashed, or beyond a split) and
    /// would be one of the holders of `name` (placed on `placed`) if it
    /// were back: a file found on no live holder may be there.
    pub fn lost_holder(&self, name: &FileName, placed: &[NodeRef]) -> Option<NodeRef> {
        let key = Id::hash(name.as_str());
        self.ring.lost_members().into_iter().find(|lost| would_hold(key, placed, self.replicas, lost))
    }

    /// Whether `node` answers ring calls.
    pub async fn answers(&self, node: &NodeRef) -> bool {
        self.ring.successors_of(node).await.is_ok()
    }

    /// Up to `count` of this node's successors, itself excluded.
    pub fn successors(&self, count: usize) -> Vec<NodeRef> {
        let me = self.ring.me().id;
        self.ring.successors().into_iter().filter(|n| n.id != me).take(count).collect()
    }

    /// The nodes of the ring that answer, met walking it from here.
    pub async fn live_nodes(&self) -> Vec<NodeRef> {
        self.ring.walk(WALK_LIMIT).await.into_iter().filter(|(_, alive)| *alive).map(|(n, _)| n).collect()
    }
}

/// The holders of a file whose key `responsible` is responsible for:
/// `responsible` first, then its successors, `k` distinct nodes at most.
pub fn holders(responsible: &NodeRef, successors: &[NodeRef], k: usize) -> Vec<NodeRef> {
    let mut holders = vec![responsible.clone()];
    for node in successors {
        if holders.len() >= k {
            break;
        }
        if !holders.iter().any(|h| h.id == node.id) {
            holders.push(node.clone());
        }
    }
    holders
}

/// The holders of a key whose responsible node is `responsible`, read off
/// one node's table: `me`, its `predecessor` and its `successors`. They are
/// `responsible` and the nodes after it on the list, k of them; a list that
/// ends at the predecessor is the whole ring, and goes round through `me`
/// (fewer than k nodes then hold every key). `None` when `responsible` is
/// not on the list, or the list ends before k nodes.
pub fn placed_by_table(
    me: &NodeRef,
    predecessor: Option<&NodeRef>,
    successors: &[NodeRef],
    responsible: &NodeRef,
    k: usize,
) -> Option<Vec<NodeRef>> {
    let ring: Vec<&NodeRef> = std::iter::once(me).chain(successors.iter().filter(|s| s.id != me.id)).collect();
    let n = ring.len();
    let whole = n > 1 && predecessor.is_some_and(|p| p.id == ring[n - 1].id);
    let start = ring.iter().position(|node| node.id == responsible.id)?;
    let span = if whole { n } else { n - start };
    let placed: Vec<NodeRef> = (0..span.min(k)).map(|j| ring[(start + j) % n].clone()).collect();
    (placed.len() == k || (whole && placed.len() == n)).then_some(placed)
}

/// Whether `node` is among `placed` (the holders of `key`, k of them unless
/// the ring is smaller), or would be if it joined: its id falls between the
/// key and the last holder, so it would take that holder's place.
pub fn would_hold(key: Id, placed: &[NodeRef], k: usize, node: &NodeRef) -> bool {
    if placed.iter().any(|h| h.id == node.id) || placed.len() < k {
        return true;
    }
    node.id == key || node.id.in_half_open(key, placed[k - 1].id)
}

/// The parts of a node's keys and their heirs (see [`Placement::heirs`]),
/// from `preds`, the node itself then its k nearest predecessors, and its
/// k nearest successors; `None` with fewer of either.
pub fn heirs(preds: &[NodeRef], successors: &[NodeRef], k: usize) -> Option<Vec<(KeyRange, NodeRef)>> {
    if preds.len() <= k || successors.len() < k {
        return None;
    }
    let parts =
        (0..k).map(|i| (KeyRange { from: preds[i + 1].id.0, to: preds[i].id.0 }, successors[k - i - 1].clone()));
    Some(parts.collect())
}

/// Holders (the responsible node included) that must record a deletion
/// before it is acknowledged: a majority of the `holders` that exist.
/// (Uploads wait for `--write-quorum` copies, all k unless told otherwise.)
pub fn write_quorum(holders: usize) -> usize {
    holders / 2 + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(i: u16) -> NodeRef {
        NodeRef::new(format!("127.0.0.1:{i}"))
    }

    proptest! {
        #[test]
        fn holders_are_distinct_bounded_and_led_by_the_responsible_node(
            list in prop::collection::vec(0u16..20, 0..12), k in 1usize..6,
        ) {
            let responsible = node(100);
            let successors: Vec<NodeRef> = list.iter().map(|&i| node(i)).collect();
            let h = holders(&responsible, &successors, k);
            prop_assert_eq!(&h[0], &responsible);
            prop_assert!(h.len() <= k);
            let mut ids: Vec<_> = h.iter().map(|n| n.id).collect();
            ids.dedup();
            ids.sort();
            ids.dedup();
            prop_assert_eq!(ids.len(), h.len());
            let distinct = list.iter().collect::<std::collections::BTreeSet<_>>().len();
            prop_assert_eq!(h.len(), (distinct + 1).min(k));
        }

        #[test]
        fn a_node_would_hold_a_key_exactly_when_joining_would_make_it_a_holder(
            ports in prop::collection::btree_set(1u16..2000, 1..12), joiner in 2000u16..3000, key: u64, k in 1usize..5,
        ) {
            let key = Id(key);
            let by_distance = |mut ring: Vec<NodeRef>| {
                ring.sort_by_key(|n| key.distance_to(n.id));
                ring.truncate(k);
                ring
            };
            let ring: Vec<NodeRef> = ports.iter().map(|&p| node(p)).collect();
            let x = node(joiner);
            let placed = by_distance(ring.clone());
            let after_join = by_distance(ring.into_iter().chain([x.clone()]).collect());
            prop_assert_eq!(would_hold(key, &placed, k, &x), after_join.contains(&x));
            prop_assert!(would_hold(key, &placed, k, &placed[0]));
        }

        #[test]
        fn the_heir_of_a_key_is_the_holder_its_placement_gains_when_the_node_leaves(
            ports in prop::collection::btree_set(1u16..2000, 2..14), at: prop::sample::Index, key: u64, k in 1usize..5,
        ) {
            let mut ring: Vec<NodeRef> = ports.iter().map(|&p| node(p)).collect();
            ring.sort_by_key(|n| n.id);
            prop_assume!(ring.len() > k);
            let n = ring.len();
            let me = at.index(n);
            let preds: Vec<NodeRef> = (0..=k).map(|i| ring[(me + n - i) % n].clone()).collect();
            let successors: Vec<NodeRef> = (1..=k).map(|i| ring[(me + i) % n].clone()).collect();
            let parts = heirs(&preds, &successors, k).expect("enough neighbours");
            // Holders of a key: the first k nodes at or after it.
            let holders_in = |ring: &[NodeRef]| {
                let mut by = ring.to_vec();
                by.sort_by_key(|h| Id(key).distance_to(h.id));
                by.truncate(k);
                by
            };
            let before = holders_in(&ring);
            let without: Vec<NodeRef> = ring.iter().filter(|h| h.id != ring[me].id).cloned().collect();
            let after = holders_in(&without);
            let part = parts.iter().find(|(range, _)| Id(key).in_half_open(Id(range.from), Id(range.to)));
            match part {
                Some((_, heir)) => {
                    prop_assert!(before.contains(&ring[me]));
                    let gained: Vec<&NodeRef> = after.iter().filter(|h| !before.contains(h)).collect();
                    prop_assert_eq!(gained, vec![heir]);
                }
                None => prop_assert!(!before.contains(&ring[me])),
            }
        }

        #[test]
        fn a_table_names_the_true_holders_or_nothing(
            ids in prop::collection::btree_set(any::<u64>(), 1..30), at: prop::sample::Index, key: u64,
            k in 1usize..5, r in 1usize..8,
        ) {
            // A converged ring: each node knows its predecessor and its r
            // nearest successors.
            let ring: Vec<NodeRef> = ids.iter().map(|&id| NodeRef { id: Id(id), addr: id.to_string() }).collect();
            let n = ring.len();
            let me = at.index(n);
            let successors: Vec<NodeRef> = (1..=r.min(n - 1)).map(|j| ring[(me + j) % n].clone()).collect();
            let predecessor = (n > 1).then(|| ring[(me + n - 1) % n].clone());
            let first = ring.iter().position(|node| node.id.0 >= key).unwrap_or(0);
            let truth: Vec<NodeRef> = (0..k.min(n)).map(|j| ring[(first + j) % n].clone()).collect();
            for responsible in [&ring[first], &ring[me]] {
                match placed_by_table(&ring[me], predecessor.as_ref(), &successors, responsible, k) {
                    Some(placed) if responsible.id == ring[first].id => prop_assert_eq!(&placed, &truth),
                    Some(placed) => {
                        prop_assert_eq!(&placed[0], responsible);
                        prop_assert_eq!(placed.len(), k.min(n));
                    }
                    None => {
                        // Only when the list does not reach k nodes from it.
                        let at = (ring.iter().position(|node| node.id == responsible.id).unwrap() + n - me) % n;
                        prop_assert!(n == 1 || (successors.len() < n - 1 && at + k > successors.len() + 1));
                    }
                }
            }
        }

        #[test]
        fn a_quorum_is_a_majority(n in 1usize..50) {
            let q = write_quorum(n);
            prop_assert!(q <= n);
            prop_assert!(2 * q > n);
        }
    }
}
