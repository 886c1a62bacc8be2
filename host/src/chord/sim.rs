//! An in-memory network for the ring: many [`ChordNode`]s in one process,
//! reached by direct calls behind the same [`Transport`] trait as gRPC. Used
//! by the scale benchmark (`cargo bench --bench chord_sim`) and tests.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::id::Id;
use super::node::{ChordConfig, ChordNode, Merge, Neighbours, Transport, Unreachable};
use super::table::{NodeRef, Step};

/// The simulated network: nodes by address, which of them are down, and
/// which are cut off from the rest. Each node holds its own handle, which
/// knows whose calls it carries.
#[derive(Clone, Default)]
pub struct SimNet {
    inner: Arc<Inner>,
    /// The node whose calls this handle carries (none: the test's own).
    from: Option<String>,
}

#[derive(Default)]
struct Inner {
    nodes: RwLock<HashMap<String, Arc<ChordNode<SimNet>>>>,
    down: RwLock<HashSet<String>>,
    /// Nodes on the far side of a split: they reach only each other.
    cut_off: RwLock<HashSet<String>>,
    /// Calls that found their node down, leaving or cut off: what a real
    /// network would spend a timeout on.
    unanswered: AtomicU64,
}

impl SimNet {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a node at `addr` (alone in its ring until it joins).
    pub fn add(&self, addr: &str, config: ChordConfig) -> Arc<ChordNode<SimNet>> {
        let own = SimNet { inner: self.inner.clone(), from: Some(addr.to_owned()) };
        let node = Arc::new(ChordNode::new(NodeRef::new(addr), config, own));
        self.inner.nodes.write().unwrap().insert(addr.to_owned(), node.clone());
        // A node started where one was killed is up.
        self.inner.down.write().unwrap().remove(addr);
        node
    }

    /// Crashes the node at `addr`: it answers nothing from now on.
    pub fn kill(&self, addr: &str) {
        self.inner.down.write().unwrap().insert(addr.to_owned());
    }

    /// Splits the network in two: `addrs` reach only each other from now on.
    pub fn split(&self, addrs: &[String]) {
        *self.inner.cut_off.write().unwrap() = addrs.iter().cloned().collect();
    }

    /// Heals a split: every node reaches every other again.
    pub fn heal(&self) {
        self.inner.cut_off.write().unwrap().clear();
    }

    /// Whether the node at `addr` is up.
    pub fn is_up(&self, addr: &str) -> bool {
        !self.inner.down.read().unwrap().contains(addr) && self.inner.nodes.read().unwrap().contains_key(addr)
    }

    /// Calls so far that no node answered (see [`Inner::unanswered`]).
    pub fn unanswered(&self) -> u64 {
        self.inner.unanswered.load(Ordering::Relaxed)
    }

    fn reach(&self, to: &NodeRef) -> Result<Arc<ChordNode<SimNet>>, Unreachable> {
        let reached = self.try_reach(to);
        if reached.is_err() {
            self.inner.unanswered.fetch_add(1, Ordering::Relaxed);
        }
        reached
    }

    fn try_reach(&self, to: &NodeRef) -> Result<Arc<ChordNode<SimNet>>, Unreachable> {
        let down = self.inner.down.read().unwrap();
        // A crashed node reaches nobody either (its tasks may still run here).
        if down.contains(&to.addr) || self.from.as_ref().is_some_and(|from| down.contains(from)) {
            return Err(Unreachable(to.addr.clone()));
        }
        drop(down);
        if let Some(from) = &self.from {
            let cut_off = self.inner.cut_off.read().unwrap();
            if cut_off.contains(from) != cut_off.contains(&to.addr) {
                return Err(Unreachable(to.addr.clone()));
            }
        }
        let node = self.inner.nodes.read().unwrap().get(&to.addr).cloned();
        node.filter(|n| n.me().id == to.id && !n.is_leaving()).ok_or_else(|| Unreachable(to.addr.clone()))
    }

    /// Every live node, sorted by id: the oracle for correctness checks.
    pub fn live_ids(&self) -> Vec<Id> {
        let down = self.inner.down.read().unwrap();
        let mut ids: Vec<Id> = self
            .inner
            .nodes
            .read()
            .unwrap()
            .iter()
            .filter(|(a, _)| !down.contains(*a))
            .map(|(_, n)| n.me().id)
            .collect();
        ids.sort();
        ids
    }
}

/// The live node responsible for `key` among sorted `ids`.
pub fn oracle_successor(ids: &[Id], key: Id) -> Id {
    ids.iter().copied().find(|&id| id >= key).unwrap_or(ids[0])
}

impl Transport for SimNet {
    async fn step(&self, to: &NodeRef, key: Id) -> Result<Step, Unreachable> {
        Ok(self.reach(to)?.handle_step(key))
    }

    async fn neighbours(&self, to: &NodeRef) -> Result<Neighbours, Unreachable> {
        Ok(self.reach(to)?.handle_neighbours())
    }

    async fn notify(&self, to: &NodeRef, me: &NodeRef) -> Result<(), Unreachable> {
        let node = self.reach(to)?;
        node.handle_notify(me.clone()).await;
        Ok(())
    }

    async fn ping(&self, to: &NodeRef) -> Result<(), Unreachable> {
        self.reach(to).map(|_| ())
    }

    async fn leaving(&self, to: &NodeRef, leaver: &NodeRef, neighbours: Neighbours) -> Result<(), Unreachable> {
        self.reach(to)?.handle_leaving(leaver, neighbours);
        Ok(())
    }

    async fn merge(&self, to: &NodeRef, hint: Merge) -> Result<(), Unreachable> {
        go_on_merging(self.reach(to)?, hint);
        Ok(())
    }
}

/// Runs a merge step in the background, as a node's gRPC service does (a
/// function of its own: the step's future holds this transport's).
fn go_on_merging(node: Arc<ChordNode<SimNet>>, hint: Merge) {
    tokio::spawn(async move { node.handle_merge(hint).await });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::chord::node::DEPARTED_AT_LEAST;
    use crate::chord::spawn_maintenance;

    fn fast() -> ChordConfig {
        ChordConfig {
            successors: 4,
            stabilize_every: Duration::from_millis(20),
            fix_fingers_every: Duration::from_millis(100),
            check_predecessor_every: Duration::from_millis(40),
            probe_every: Duration::from_millis(200),
            ..ChordConfig::default()
        }
    }

    /// Whether `nodes` form one ring in id order: each one's successor and
    /// predecessor are its neighbours among `nodes`.
    fn one_ring(nodes: &[Arc<ChordNode<SimNet>>]) -> Result<(), String> {
        let mut ids: Vec<Id> = nodes.iter().map(|n| n.me().id).collect();
        ids.sort();
        for node in nodes {
            let table = node.snapshot();
            let me = table.me().id;
            let at = ids.iter().position(|&id| id == me).unwrap();
            let (next, previous) = (ids[(at + 1) % ids.len()], ids[(at + ids.len() - 1) % ids.len()]);
            if table.successor().id != next || table.predecessor.as_ref().map(|p| p.id) != Some(previous) {
                return Err(format!(
                    "{me} has successor {} and predecessor {:?}",
                    table.successor().id,
                    table.predecessor
                ));
            }
        }
        Ok(())
    }

    /// Waits (at most `within`) until `check` holds.
    async fn until(within: Duration, what: &str, check: impl Fn() -> Result<(), String>) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match check() {
                Ok(()) => return,
                Err(why) if tokio::time::Instant::now() > deadline => panic!("{what}: {why}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// A ring of `n` nodes, each joined through the first, with maintenance running.
    async fn ring(net: &SimNet, n: usize, stop: &CancellationToken) -> Vec<Arc<ChordNode<SimNet>>> {
        let nodes: Vec<_> = (0..n).map(|i| net.add(&format!("10.0.0.{i}:7000"), fast())).collect();
        for node in &nodes[1..] {
            node.join(&nodes[0].me().addr).await.unwrap();
        }
        for node in &nodes {
            spawn_maintenance(node.clone(), stop.clone());
        }
        until(Duration::from_secs(30), "the ring converges", || one_ring(&nodes)).await;
        nodes
    }

    #[tokio::test]
    async fn a_split_ring_merges_back_into_one_when_the_network_heals() {
        let (net, stop) = (SimNet::new(), CancellationToken::new());
        let nodes = ring(&net, 16, &stop).await;
        // Every other node by id on the far side: each half's ring must
        // interleave with the other's when they merge again.
        let mut by_id = nodes.clone();
        by_id.sort_by_key(|n| n.me().id);
        let (far, near): (Vec<_>, Vec<_>) = by_id.into_iter().enumerate().partition(|(i, _)| i % 2 == 1);
        let far: Vec<_> = far.into_iter().map(|(_, n)| n).collect();
        let near: Vec<_> = near.into_iter().map(|(_, n)| n).collect();
        net.split(&far.iter().map(|n| n.me().addr).collect::<Vec<_>>());
        until(Duration::from_secs(30), "each side forms a ring of its own", || {
            one_ring(&near).and_then(|()| one_ring(&far))
        })
        .await;
        // Long enough that each side forgot the other's nodes in its tables
        // (a full finger refresh is 100 ms).
        tokio::time::sleep(Duration::from_secs(2)).await;
        one_ring(&near).and_then(|()| one_ring(&far)).unwrap();
        net.heal();
        until(Duration::from_secs(30), "the two rings merge into one", || one_ring(&nodes)).await;
        for node in &nodes {
            let (owner, _) = node.lookup(Id(42)).await.unwrap();
            assert_eq!(owner.id, oracle_successor(&net.live_ids(), Id(42)));
        }
        stop.cancel();
    }

    #[tokio::test]
    async fn a_node_that_leaves_is_not_taken_for_lost_by_the_nodes_whose_lists_named_it() {
        let (net, stop) = (SimNet::new(), CancellationToken::new());
        let mut nodes = ring(&net, 8, &stop).await;
        let leaver = nodes.pop().unwrap();
        leaver.leave().await;
        net.kill(&leaver.me().addr);
        until(Duration::from_secs(30), "the ring closes over the leaver", || one_ring(&nodes)).await;
        // Stabilize rounds after that (every 20 ms) would find it silent.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for node in &nodes {
            let lost = node.lost_members();
            assert!(!lost.iter().any(|l| l.id == leaver.me().id), "{} takes the leaver for lost", node.me().addr);
        }
        stop.cancel();
    }

    #[tokio::test]
    async fn a_node_that_left_and_comes_back_at_once_is_taken_back_as_soon_as_it_answers() {
        let (net, stop) = (SimNet::new(), CancellationToken::new());
        let mut nodes = ring(&net, 5, &stop).await;
        let addr = "10.0.0.77:7000";
        let (leaver, gone) = (net.add(addr, fast()), CancellationToken::new());
        leaver.join(&nodes[0].me().addr).await.unwrap();
        spawn_maintenance(leaver.clone(), gone.clone());
        nodes.push(leaver.clone());
        until(Duration::from_secs(30), "the ring takes the sixth node", || one_ring(&nodes)).await;
        leaver.leave().await;
        gone.cancel();
        net.kill(addr);
        nodes.pop();
        until(Duration::from_secs(30), "the ring closes over the leaver", || one_ring(&nodes)).await;
        // Restarted at once: back well before its departure stops keeping
        // it out of what other nodes hear of it.
        let back = net.add(addr, fast());
        back.join(&nodes[0].me().addr).await.unwrap();
        spawn_maintenance(back.clone(), stop.clone());
        nodes.push(back);
        until(DEPARTED_AT_LEAST * 4 / 5, "the node that came back is in the ring again", || one_ring(&nodes)).await;
        stop.cancel();
    }

    #[tokio::test]
    async fn a_node_cut_off_while_another_left_hears_of_the_leave_from_its_neighbours() {
        let (net, stop) = (SimNet::new(), CancellationToken::new());
        let mut nodes = ring(&net, 8, &stop).await;
        let leaver = nodes.pop().unwrap();
        let mut by_id = nodes.clone();
        by_id.sort_by_key(|n| n.me().id);
        // The node two before the leaver: its successor list names it.
        let after = by_id.iter().position(|n| n.me().id > leaver.me().id).unwrap_or(0);
        let away = by_id[(after + by_id.len() - 2) % by_id.len()].clone();
        // Cut off while the leaver says goodbye: it is not told, finds every
        // other node silent, the leaver among them.
        net.split(&[away.me().addr.clone()]);
        let named = |n: &ChordNode<SimNet>| n.lost_members().iter().any(|l| l.id == leaver.me().id);
        until(Duration::from_secs(30), "the cut-off node takes the leaver for lost", || {
            if named(&away) { Ok(()) } else { Err("not yet".into()) }
        })
        .await;
        leaver.leave().await;
        net.kill(&leaver.me().addr);
        net.heal();
        until(Duration::from_secs(30), "the ring closes over the leaver", || one_ring(&nodes)).await;
        // Back in the ring, it hears from its neighbours that the leaver left
        // (before the word of it runs out).
        until(DEPARTED_AT_LEAST * 4 / 5, "the cut-off node hears the leaver left", || {
            if named(&away) { Err("still takes it for lost".into()) } else { Ok(()) }
        })
        .await;
        stop.cancel();
    }

    #[tokio::test]
    async fn a_leaver_found_silent_before_its_notice_came_is_not_lost_after_it() {
        let (net, stop) = (SimNet::new(), CancellationToken::new());
        let mut nodes = ring(&net, 4, &stop).await;
        let leaver = nodes.pop().unwrap();
        // Silent while it leaves (a leaving node answers no ring call): its
        // neighbours' rounds find it gone before its notice arrives.
        net.kill(&leaver.me().addr);
        let named = |n: &Arc<ChordNode<SimNet>>| n.lost_members().iter().any(|l| l.id == leaver.me().id);
        until(Duration::from_secs(30), "a node takes the silent leaver for lost", || {
            if nodes.iter().any(named) { Ok(()) } else { Err("none yet".into()) }
        })
        .await;
        let neighbours = leaver.handle_neighbours();
        for node in &nodes {
            node.handle_leaving(&leaver.me(), neighbours.clone());
        }
        // Rounds after the notice find it silent again.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for node in &nodes {
            assert!(!named(node), "{} takes the leaver for lost", node.me().addr);
        }
        stop.cancel();
    }

    #[tokio::test]
    async fn a_node_that_started_alone_is_merged_into_the_ring_it_knew() {
        let (net, stop) = (SimNet::new(), CancellationToken::new());
        let mut nodes = ring(&net, 5, &stop).await;
        let crash = CancellationToken::new();
        let lost = net.add("10.0.0.99:7000", fast());
        lost.join(&nodes[0].me().addr).await.unwrap();
        spawn_maintenance(lost.clone(), crash.clone());
        nodes.push(lost.clone());
        until(Duration::from_secs(30), "the node joins", || one_ring(&nodes)).await;
        // It crashes, and comes back at the same address as a ring of its
        // own (started without --join): its old neighbours probe it.
        crash.cancel();
        net.kill(&lost.me().addr);
        nodes.pop();
        until(Duration::from_secs(30), "the ring drops the crashed node", || one_ring(&nodes)).await;
        net.inner.nodes.write().unwrap().remove(&lost.me().addr);
        net.inner.down.write().unwrap().clear();
        let back = net.add(&lost.me().addr, fast());
        spawn_maintenance(back.clone(), stop.clone());
        nodes.push(back);
        until(Duration::from_secs(30), "the lone node is merged back", || one_ring(&nodes)).await;
        stop.cancel();
    }
}
