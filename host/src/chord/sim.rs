//! An in-memory network for the ring: many [`ChordNode`]s in one process,
//! reached by direct calls behind the same [`Transport`] trait as gRPC. Used
//! by the scale benchmark (`cargo bench --bench chord_sim`) and tests.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use super::id::Id;
use super::node::{ChordConfig, ChordNode, Neighbours, Transport, Unreachable};
use super::table::{NodeRef, Step};

/// The simulated network: nodes by address, and which of them are down.
#[derive(Clone, Default)]
pub struct SimNet {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    nodes: RwLock<HashMap<String, Arc<ChordNode<SimNet>>>>,
    down: RwLock<HashSet<String>>,
}

impl SimNet {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a node at `addr` (alone in its ring until it joins).
    pub fn add(&self, addr: &str, config: ChordConfig) -> Arc<ChordNode<SimNet>> {
        let node = Arc::new(ChordNode::new(NodeRef::new(addr), config, self.clone()));
        self.inner.nodes.write().unwrap().insert(addr.to_owned(), node.clone());
        node
    }

    /// Crashes the node at `addr`: it answers nothing from now on.
    pub fn kill(&self, addr: &str) {
        self.inner.down.write().unwrap().insert(addr.to_owned());
    }

    /// Whether the node at `addr` is up.
    pub fn is_up(&self, addr: &str) -> bool {
        !self.inner.down.read().unwrap().contains(addr) && self.inner.nodes.read().unwrap().contains_key(addr)
    }

    fn reach(&self, to: &NodeRef) -> Result<Arc<ChordNode<SimNet>>, Unreachable> {
        if self.inner.down.read().unwrap().contains(&to.addr) {
            return Err(Unreachable(to.addr.clone()));
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
}
