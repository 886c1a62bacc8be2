//! Where a file lives, as pure functions: on the node responsible for its
//! key and the next k-1 nodes of that node's successor list; and how many
//! copies make a write quorum.

use crate::chord::NodeRef;

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

/// Copies (the responsible node's included) that must hold a file before an
/// upload is acknowledged: a majority of the `holders` that exist.
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
        fn a_quorum_is_a_majority(n in 1usize..50) {
            let q = write_quorum(n);
            prop_assert!(q <= n);
            prop_assert!(2 * q > n);
        }
    }
}
