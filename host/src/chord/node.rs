//! One Chord node's protocol logic over any [`Transport`]: lookups, join,
//! stabilize, rectify (notify), check-predecessor, fix-fingers and graceful
//! leave, after Zave's corrected Chord. The same code runs over gRPC and
//! over the in-memory transport of the simulation.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::id::{BITS, Id};
use super::table::{NodeRef, RoutingTable, Step};

/// Most hops a lookup may take before it gives up (a ring in flux can send
/// a lookup round in circles for a while).
pub const MAX_HOPS: usize = 256;

/// Most nodes a walk of the ring visits (the REST views and the network listing).
pub const WALK_LIMIT: usize = 4096;

/// Most steps one ring merge takes along the two rings before it stops
/// (it takes about one per node of the smaller ring).
pub const MERGE_HOPS: u32 = 2 * WALK_LIMIT as u32;

/// Most lost nodes remembered and probed (the join addresses come on top).
pub const LOST_LIMIT: usize = 64;

/// How long, at least, a node that said goodbye is not taken back from
/// other nodes' lists (hearsay); its own answer takes it back at once.
pub(crate) const DEPARTED_AT_LEAST: Duration = Duration::from_secs(10);

/// Ring settings.
#[derive(Debug, Clone, Copy)]
pub struct ChordConfig {
    /// Successor-list length r. Default 8; keep r ≥ 2·log2 N so that a ring
    /// of N nodes survives half of them failing at once (Chord ToN §IV-E).
    pub successors: usize,
    /// Period of stabilize. Default 250 ms.
    pub stabilize_every: Duration,
    /// Period of a full finger-table refresh. Default 1 s.
    pub fix_fingers_every: Duration,
    /// Period of check-predecessor. Default 500 ms.
    pub check_predecessor_every: Duration,
    /// Period of the probe of lost nodes (members that stopped answering,
    /// and the join addresses): one that answers again from another ring
    /// starts a merge. Default 1 s.
    pub probe_every: Duration,
    /// How long a lost member is probed before it is forgotten (the join
    /// addresses are probed for ever). Default 24 h.
    pub remember_for: Duration,
}

impl Default for ChordConfig {
    fn default() -> Self {
        Self {
            successors: 8,
            stabilize_every: Duration::from_millis(250),
            fix_fingers_every: Duration::from_secs(1),
            check_predecessor_every: Duration::from_millis(500),
            probe_every: Duration::from_secs(1),
            remember_for: Duration::from_secs(24 * 3600),
        }
    }
}

/// A peer did not answer (down, or too slow).
#[derive(Debug, Clone, thiserror::Error)]
#[error("node {0} did not answer")]
pub struct Unreachable(pub String);

/// Why a ring operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RingError {
    /// Every node that could answer was unreachable.
    #[error("no live node could answer the lookup for {0}")]
    NoLiveNode(Id),
    /// A node did not answer a question about the ring.
    #[error("node {0} did not answer")]
    Unanswered(String),
    /// This node has not joined its ring yet.
    #[error("this node has not joined the ring yet: the node it joins through has not answered")]
    NotJoined,
    /// The lookup went round too long.
    #[error("lookup for {0} gave up after {MAX_HOPS} hops")]
    TooManyHops(Id),
    /// The node to join through did not answer.
    #[error("cannot join through {0}: it did not answer")]
    JoinUnreachable(String),
    /// The node to join through did not answer as a member of this
    /// node's cluster would, and why (see `GrpcTransport::diagnose`).
    #[error("cannot join through {0}: {1}")]
    JoinRefused(String, String),
}

/// A node's predecessor and successor list, as another node asks for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbours {
    /// The predecessor, if known.
    pub predecessor: Option<NodeRef>,
    /// The successor list, nearest first.
    pub successors: Vec<NodeRef>,
    /// Nodes that left gracefully lately, newest first, and for how much
    /// longer each counts as departed (see [`ChordNode::heard_departed`]).
    pub departed: Vec<(Id, Duration)>,
}

/// Nodes that said goodbye lately, and nodes heard from since they did.
#[derive(Default)]
struct Departures {
    /// Each: the node, when this node learned it left, and until when it
    /// counts as gone. Oldest first.
    gone: Vec<(Id, Instant, Instant)>,
    /// Nodes that answered after they were known to have left, and until
    /// when word of their departure from others is not taken.
    back: Vec<(Id, Instant)>,
}

/// Departures kept at most (the newest [`LOST_LIMIT`] are passed on).
const DEPARTURES_KEPT: usize = 4 * LOST_LIMIT;

impl Departures {
    fn prune(&mut self, now: Instant) {
        self.gone.retain(|(.., until)| *until > now);
        self.back.retain(|(_, until)| *until > now);
    }

    fn keep_newest(&mut self) {
        let excess = self.gone.len().saturating_sub(DEPARTURES_KEPT);
        self.gone.drain(..excess);
        let excess = self.back.len().saturating_sub(DEPARTURES_KEPT);
        self.back.drain(..excess);
    }

    /// `id` said goodbye to this node itself: gone for `period` from `now`
    /// (one that came back before leaves again).
    fn told(&mut self, id: Id, now: Instant, period: Duration) {
        self.prune(now);
        self.back.retain(|(b, _)| *b != id);
        self.gone.retain(|(g, ..)| *g != id);
        self.gone.push((id, now, now + period));
        self.keep_newest();
    }

    /// Another node passed on that `id` left, gone for `left` more: taken
    /// unless known already or heard from since. Answers whether it was.
    fn heard(&mut self, id: Id, now: Instant, left: Duration) -> bool {
        if self.gone.iter().any(|(g, ..)| *g == id) || self.back.iter().any(|(b, _)| *b == id) {
            return false;
        }
        self.gone.push((id, now, now + left));
        self.keep_newest();
        true
    }

    /// `id` answered a call sent at `asked`: known gone since before that,
    /// it is back, and word of its departure is not taken for `period`.
    fn answered(&mut self, id: Id, asked: Instant, now: Instant, period: Duration) {
        let before = self.gone.len();
        self.gone.retain(|(g, since, _)| *g != id || *since >= asked);
        if self.gone.len() < before {
            self.back.retain(|(b, _)| *b != id);
            self.back.push((id, now + period));
            self.keep_newest();
        }
    }

    fn contains(&self, id: Id, now: Instant) -> bool {
        self.gone.iter().any(|(g, _, until)| *g == id && *until > now)
    }

    /// The newest `n` still gone, with how long each has left.
    fn newest(&self, now: Instant, n: usize) -> Vec<(Id, Duration)> {
        let live = self.gone.iter().rev().filter(|(.., until)| *until > now);
        live.take(n).map(|(id, _, until)| (*id, *until - now)).collect()
    }
}

/// How nodes reach each other: gRPC between processes, direct calls in the
/// simulation.
pub trait Transport: Send + Sync + 'static {
    /// One step of a lookup for `key`, answered by `to`.
    fn step(&self, to: &NodeRef, key: Id) -> impl Future<Output = Result<Step, Unreachable>> + Send;
    /// `to`'s predecessor and successor list.
    fn neighbours(&self, to: &NodeRef) -> impl Future<Output = Result<Neighbours, Unreachable>> + Send;
    /// Tells `to` that `me` believes it is `to`'s predecessor.
    fn notify(&self, to: &NodeRef, me: &NodeRef) -> impl Future<Output = Result<(), Unreachable>> + Send;
    /// Whether `to` is alive, asked whatever the failure detector thinks
    /// of it (the probe of lost nodes finds out this way that they are back).
    fn ping(&self, to: &NodeRef) -> impl Future<Output = Result<(), Unreachable>> + Send;
    /// Whether `to` is alive, for a lookup about to answer with it: unlike
    /// [`Transport::ping`], a transport with a failure detector gives up
    /// once it suspects `to`.
    fn answers(&self, to: &NodeRef) -> impl Future<Output = Result<(), Unreachable>> + Send {
        self.ping(to)
    }
    /// Tells `to` that `leaver` is leaving, with the leaver's neighbours.
    fn leaving(
        &self,
        to: &NodeRef,
        leaver: &NodeRef,
        neighbours: Neighbours,
    ) -> impl Future<Output = Result<(), Unreachable>> + Send;
    /// Tells `to`, of another ring, the two adjacent nodes of the caller's
    /// ring between which `to` belongs ([`ChordNode::handle_merge`]); `to`
    /// answers at once and goes on with the merge in the background.
    fn merge(&self, to: &NodeRef, hint: Merge) -> impl Future<Output = Result<(), Unreachable>> + Send;
    /// Whether the transport's failure detector suspects `to` now (then it
    /// is not waited for).
    fn suspected(&self, _to: &NodeRef) -> bool {
        false
    }
}

/// One step of a ring merge (Shafaat, Ghodsi and Haridi, "Dealing with
/// network partitions in structured overlay networks", Peer-to-Peer Netw.
/// Appl. 2009: `trymerge`): `pred` and `succ` are adjacent in the sender's
/// ring, and the receiver lies between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    /// The node of the sender's ring just before the receiver.
    pub pred: NodeRef,
    /// The node of the sender's ring just after the receiver.
    pub succ: NodeRef,
    /// Steps the merge has taken so far (at most [`MERGE_HOPS`]).
    pub hops: u32,
}

/// A node this node knew that stopped answering, or a join address.
struct Lost {
    node: NodeRef,
    since: Instant,
    /// A join address: probed for ever.
    seed: bool,
    /// A member of this ring that stopped answering (a join address may
    /// never have been one).
    member: bool,
    /// Only dropped out of the successor list, and did not answer a ping
    /// (see [`ChordNode::check_vanished`]): counted for reads, but still
    /// learned again from other nodes' lists.
    vanished: bool,
}

/// A change of the ring this node witnessed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingChange {
    /// This node joined a ring.
    Joined(NodeRef),
    /// A node said goodbye (a graceful leave).
    Left(NodeRef),
    /// A node stopped answering (found by stabilize or check-predecessor).
    Suspected(NodeRef),
    /// A node lost earlier answers again from another ring: a merge of
    /// the two rings started.
    Reunited(NodeRef),
}

/// One node of the ring.
pub struct ChordNode<T> {
    table: Mutex<RoutingTable>,
    transport: T,
    config: ChordConfig,
    /// Set once this node starts leaving: it answers no ring call after that.
    leaving: AtomicBool,
    /// Clear while this node waits to join a ring: it is alone, but not the
    /// whole network, and answers no lookup.
    joined: AtomicBool,
    /// Nodes that said goodbye, and until when to ignore them: a stabilize
    /// that read a leaver's list just before its goodbye must not bring it back.
    departed: Mutex<Departures>,
    /// Nodes that stopped answering, and the join addresses: probed until
    /// they answer, so that the two halves of a split ring find each other
    /// again when the network heals.
    lost: Mutex<Vec<Lost>>,
    /// Changes witnessed, for whoever listens ([`ChordNode::changes`]).
    changes: tokio::sync::broadcast::Sender<RingChange>,
    /// Where the hops of this node's lookups are counted, once a node's
    /// metrics are set up.
    hops: std::sync::OnceLock<prometheus_client::metrics::histogram::Histogram>,
    /// Whether this node's successor names it as predecessor, as stabilize
    /// last found (see [`ChordNode::standing`]).
    tenure: Mutex<Tenure>,
}

/// A run of stabilize answers in which no successor claimed this node's
/// keys, and the latest in which the first live successor named this node
/// as its predecessor (or this node was alone).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tenure {
    /// When the run began: the first confirmation's arrival.
    pub since: Option<Instant>,
    /// When the latest confirmation was asked for.
    pub last_asked: Option<Instant>,
    /// Whether the run's confirmations are this node's own, alone.
    pub alone: bool,
}

/// What a stabilize answer says of this node's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The successor names this node as its predecessor, or there is no
    /// other node.
    Confirmed { alone: bool },
    /// The successor names a node before this one: it claims this node's
    /// keys.
    Claimed,
    /// No word either way: no answer, no predecessor named, or one between
    /// this node and the successor.
    Silent,
}

/// What this node can tell of its own range: its predecessor, when the
/// range last took in keys, and its tenure. A node whose successor named
/// it as predecessor when asked at `t` is the only one answering for its
/// range until the successor's own range grows; the successor waits as
/// long after that as this node trusts such an answer
/// (`files::lease`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// The predecessor, if known.
    pub predecessor: Option<NodeRef>,
    /// Whether this node is alone in its ring.
    pub alone: bool,
    /// When its range last took in keys ([`RoutingTable::gained_at`]).
    pub gained_at: Option<Instant>,
    /// The current run of confirmations by its successor.
    pub tenure: Tenure,
}

impl<T: Transport> ChordNode<T> {
    /// A node alone in a new ring.
    pub fn new(me: NodeRef, config: ChordConfig, transport: T) -> Self {
        Self {
            table: Mutex::new(RoutingTable::new(me, config.successors)),
            transport,
            config,
            leaving: AtomicBool::new(false),
            joined: AtomicBool::new(true),
            departed: Mutex::default(),
            lost: Mutex::default(),
            hops: std::sync::OnceLock::new(),
            changes: tokio::sync::broadcast::channel(256).0,
            tenure: Mutex::default(),
        }
    }

    /// The changes of the ring this node witnesses from now on (a listener
    /// that falls more than 256 behind misses the oldest).
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<RingChange> {
        self.changes.subscribe()
    }

    fn witness(&self, change: RingChange) {
        // Nobody listening is fine.
        let _ = self.changes.send(change);
    }

    /// Forgets `node`, which did not answer, and probes it from now on.
    fn suspect(&self, node: &NodeRef) {
        self.table().forget(node);
        self.remember_lost(node, false);
        self.witness(RingChange::Suspected(node.clone()));
    }

    /// Probes `node` from now on ([`ChordNode::probe_lost`]): a member
    /// that stopped answering, or (`seed`) a join address.
    fn remember_lost(&self, node: &NodeRef, seed: bool) {
        // A node that said goodbye is silent, not lost.
        if node.id == self.me().id || (!seed && self.has_departed(node)) {
            return;
        }
        let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = lost.iter_mut().find(|l| l.node.id == node.id) {
            known.since = Instant::now();
            known.seed |= seed;
            known.member |= !seed;
            known.vanished &= seed;
            return;
        }
        if !seed && lost.iter().filter(|l| !l.seed).count() >= LOST_LIMIT {
            // The member lost longest ago makes room.
            let oldest = lost.iter().enumerate().filter(|(_, l)| !l.seed).min_by_key(|(_, l)| l.since).map(|(i, _)| i);
            if let Some(oldest) = oldest {
                lost.remove(oldest);
            }
        }
        lost.push(Lost { node: node.clone(), since: Instant::now(), seed, member: !seed, vanished: false });
    }

    /// The nodes probed for a lost ring: members that stopped answering
    /// (for [`ChordConfig::remember_for`]) and the join addresses.
    pub fn lost(&self) -> Vec<NodeRef> {
        self.lost_where(|_| true)
    }

    /// Members of this ring that stopped answering and are not back (for
    /// [`ChordConfig::remember_for`]): crashed, or on the far side of a
    /// split. A file found nowhere else may be on them.
    pub fn lost_members(&self) -> Vec<NodeRef> {
        self.lost_where(|l| l.member)
    }

    /// Whether `node` is a member that stopped answering and is not back:
    /// it is not learned again from other nodes' lists (which may still
    /// name it), only from its own answer.
    fn is_lost_member(&self, node: &NodeRef) -> bool {
        let lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        lost.iter().any(|l| l.member && !l.vanished && l.node.id == node.id)
    }

    /// `node` answered: it is no longer lost (a join address stays probed).
    fn found(&self, node: &NodeRef) {
        let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        lost.retain_mut(|l| {
            l.member &= l.node.id != node.id;
            l.seed || l.node.id != node.id
        });
    }

    fn lost_where(&self, which: impl Fn(&Lost) -> bool) -> Vec<NodeRef> {
        let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        let forget_before = Instant::now().checked_sub(self.config.remember_for);
        lost.retain(|l| l.seed || forget_before.is_none_or(|before| l.since > before));
        lost.iter().filter(|l| which(l)).map(|l| l.node.clone()).collect()
    }

    /// Marks this node as waiting to join a ring: until [`ChordNode::join`]
    /// succeeds it answers lookups with [`RingError::NotJoined`].
    pub fn expect_join(&self) {
        self.joined.store(false, Ordering::SeqCst);
    }

    /// Whether this node is part of a ring (its own, or the one it joined).
    pub fn is_joined(&self) -> bool {
        self.joined.load(Ordering::SeqCst)
    }

    /// Whether this node is leaving (or has left) the ring.
    pub fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::SeqCst)
    }

    /// How long a node that said goodbye counts as departed: long enough
    /// that the lists of slow nodes naming it have moved on (on a busy
    /// machine rounds run late); one that comes back is taken again as soon
    /// as it answers ([`ChordNode::found`]).
    fn departed_for(&self) -> Duration {
        (self.config.stabilize_every * 20).max(DEPARTED_AT_LEAST)
    }

    fn departures_lock(&self) -> std::sync::MutexGuard<'_, Departures> {
        self.departed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The nodes that said goodbye lately, newest first, and for how much
    /// longer each counts as departed: what [`ChordNode::handle_neighbours`]
    /// passes on.
    fn departures(&self) -> Vec<(Id, Duration)> {
        self.departures_lock().newest(Instant::now(), LOST_LIMIT)
    }

    /// Departures another node passed on: each counts here for what is left
    /// of it (never longer than this node's own period), unless this node
    /// knows it already or heard from the node since; and a node taken for
    /// lost here that in fact said goodbye is not lost. So the word of a
    /// leave reaches, one stabilize round at a time, the nodes the leaver
    /// could not tell (one cut off or suspected while it left).
    pub fn heard_departed(&self, departed: &[(Id, Duration)]) {
        let (me, now, longest) = (self.me().id, Instant::now(), self.departed_for());
        let heard: Vec<Id> = {
            let mut known = self.departures_lock();
            known.prune(now);
            let fresh = departed.iter().take(LOST_LIMIT).filter(|(id, left)| *id != me && !left.is_zero());
            fresh.filter(|(id, left)| known.heard(*id, now, (*left).min(longest))).map(|(id, _)| *id).collect()
        };
        if !heard.is_empty() {
            self.lost.lock().unwrap_or_else(|p| p.into_inner()).retain(|l| l.seed || !heard.contains(&l.node.id));
        }
    }

    /// `node` answered a call sent at `asked`: if it was known to have left
    /// before that, it is back (a leaving node answers no ring call), and
    /// word of its departure is not taken from others for a period. An
    /// answer to a call sent before its goodbye came brings nothing back.
    fn answered_since(&self, node: &NodeRef, asked: Instant) {
        let period = self.departed_for();
        self.departures_lock().answered(node.id, asked, Instant::now(), period);
    }

    /// Whether `node` said goodbye recently.
    fn has_departed(&self, node: &NodeRef) -> bool {
        self.departures_lock().contains(node.id, Instant::now())
    }

    /// The settings.
    pub fn config(&self) -> &ChordConfig {
        &self.config
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// This node.
    pub fn me(&self) -> NodeRef {
        self.table().me().clone()
    }

    /// A copy of the routing table.
    pub fn snapshot(&self) -> RoutingTable {
        self.table().clone()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, RoutingTable> {
        self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    // ---- answering other nodes -------------------------------------------

    /// This node's predecessor, when its range last grew, and its tenure.
    pub fn standing(&self) -> Standing {
        // A node leaving answers for nothing from the moment it starts to.
        let tenure =
            if self.is_leaving() { Tenure::default() } else { *self.tenure.lock().unwrap_or_else(|p| p.into_inner()) };
        let t = self.table();
        let alone = t.successor().id == t.me().id;
        Standing { predecessor: t.predecessor.clone(), alone, gained_at: t.gained_at(), tenure }
    }

    /// Notes stabilize's answer, asked for at `asked`: a confirmation
    /// renews the run (a new one starts when there was none, or when this
    /// node is newly alone or newly among others); a claim ends it.
    fn note_tenure(&self, verdict: Verdict, asked: Instant) {
        let mut tenure = self.tenure.lock().unwrap_or_else(|p| p.into_inner());
        match verdict {
            Verdict::Claimed => *tenure = Tenure::default(),
            Verdict::Silent => {}
            Verdict::Confirmed { alone } => {
                // Newly alone (its range is the whole ring), or newly among
                // others (whose ranges it may have answered for): a new run.
                if alone != tenure.alone {
                    *tenure = Tenure::default();
                }
                tenure.since.get_or_insert_with(Instant::now);
                tenure.last_asked = Some(asked);
                tenure.alone = alone;
            }
        }
    }

    /// Answers one lookup step for `key`.
    pub fn handle_step(&self, key: Id) -> Step {
        self.table().step(key)
    }

    /// Answers "who are your neighbours?".
    pub fn handle_neighbours(&self) -> Neighbours {
        let departed = self.departures();
        let t = self.table();
        Neighbours { predecessor: t.predecessor.clone(), successors: t.successors().to_vec(), departed }
    }

    /// Rectify: `candidate` believes it is this node's predecessor.
    pub async fn handle_notify(&self, candidate: NodeRef) {
        let current = self.table().predecessor.clone();
        let current_alive = match &current {
            Some(p) if p.id != candidate.id => self.alive(p).await,
            _ => true,
        };
        let mut t = self.table();
        if t.predecessor != current {
            return; // changed meanwhile; the next notify decides
        }
        if t.accepts_predecessor(&candidate, current_alive) {
            t.set_predecessor(Some(candidate.clone()), Instant::now());
        }
        drop(t);
        // It called: it is alive, and a neighbour in this ring.
        self.found(&candidate);
        let mut t = self.table();
        // A node alone learns of its first peer here.
        if t.successor().id == t.me().id {
            t.set_successors([candidate], &[]);
        }
    }

    /// `leaver` leaves the ring, handing over its neighbours.
    pub fn handle_leaving(&self, leaver: &NodeRef, neighbours: Neighbours) {
        self.departures_lock().told(leaver.id, Instant::now(), self.departed_for());
        self.heard_departed(&neighbours.departed);
        // Found silent while it was leaving, before this notice came: it is
        // not lost (reads of names it held would answer 503 meanwhile).
        self.lost.lock().unwrap_or_else(|p| p.into_inner()).retain(|l| l.node.id != leaver.id || l.seed);
        let mut t = self.table();
        if t.successor().id == leaver.id {
            let rest: Vec<NodeRef> = t.successors()[1..].to_vec();
            let theirs: Vec<NodeRef> = neighbours.successors.into_iter().filter(|n| n.id != leaver.id).collect();
            t.set_successors(rest, &theirs);
        }
        if t.predecessor.as_ref().is_some_and(|p| p.id == leaver.id) {
            let me = t.me().id;
            t.set_predecessor(neighbours.predecessor.filter(|p| p.id != me && p.id != leaver.id), Instant::now());
        }
        t.forget(leaver);
        drop(t);
        self.witness(RingChange::Left(leaver.clone()));
    }

    // ---- asking other nodes ----------------------------------------------

    async fn ask_step(&self, to: &NodeRef, key: Id) -> Result<Step, Unreachable> {
        if to.id == self.table().me().id {
            return Ok(self.handle_step(key));
        }
        self.transport.step(to, key).await
    }

    async fn alive(&self, node: &NodeRef) -> bool {
        let me = self.table().me().id;
        node.id == me || (!self.transport.suspected(node) && self.transport.answers(node).await.is_ok())
    }

    /// The node responsible for `key` and the number of remote hops taken.
    pub async fn lookup(&self, key: Id) -> Result<(NodeRef, usize), RingError> {
        if !self.is_joined() {
            return Err(RingError::NotJoined);
        }
        let first = self.handle_step(key);
        let found = self.follow(first, key).await;
        if let (Ok((_, hops)), Some(histogram)) = (&found, self.hops.get()) {
            histogram.observe(*hops as f64);
        }
        found
    }

    /// The node responsible for `key` as this node's table alone tells
    /// ([`RoutingTable::responsible`]), without a call; `None` while this
    /// node is not joined or is leaving, when the table does not tell, or
    /// when that node is suspected. Unlike [`ChordNode::lookup`], the answer
    /// is not checked to be alive: a caller that cannot afford a dead answer
    /// looks up instead.
    pub fn responsible_by_table(&self, key: Id) -> Option<NodeRef> {
        if !self.is_joined() || self.is_leaving() {
            return None;
        }
        let node = self.table().responsible(key)?;
        (!self.transport.suspected(&node)).then_some(node)
    }

    /// Counts the hops of this node's lookups in `histogram` from now on.
    pub fn count_hops(&self, histogram: prometheus_client::metrics::histogram::Histogram) {
        let _ = self.hops.set(histogram);
    }

    /// Distinct nodes in the routing table, this one included.
    pub fn known_nodes(&self) -> usize {
        let table = self.snapshot();
        let mut ids: Vec<Id> = std::iter::once(table.me().id)
            .chain(table.predecessor.iter().map(|n| n.id))
            .chain(table.successors().iter().map(|n| n.id))
            .chain(table.fingers().iter().flatten().map(|n| n.id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    /// Follows lookup steps until the answer.
    async fn follow(&self, mut step: Step, key: Id) -> Result<(NodeRef, usize), RingError> {
        for hops in 0..MAX_HOPS {
            let fallback = match step {
                Step::Done(list) => list,
                Step::Next { closer, successors } => {
                    let mut answer = None;
                    for node in closer {
                        match self.ask_step(&node, key).await {
                            Ok(s) => {
                                answer = Some(s);
                                break;
                            }
                            Err(_) => self.suspect(&node),
                        }
                    }
                    match answer {
                        Some(next) => {
                            step = next;
                            continue;
                        }
                        // Every node between the last live hop and the key is
                        // dead: the first live node after them is responsible.
                        None => successors,
                    }
                }
            };
            for node in fallback {
                if self.alive(&node).await {
                    return Ok((node, hops));
                }
            }
            return Err(RingError::NoLiveNode(key));
        }
        Err(RingError::TooManyHops(key))
    }

    /// Joins the ring that `via` (any member's address) belongs to: finds
    /// this node's successor and copies its successor list (Zave).
    ///
    /// A node's id is the hash of its address, so a ring that already names
    /// this node is one it crashed out of and comes back to (a supervisor
    /// restarting it at once): it takes its place again, with the node after
    /// its id as its successor.
    pub async fn join(&self, via: &str) -> Result<(), RingError> {
        let me = self.me();
        let via = NodeRef::new(via);
        let unreachable = |_| RingError::JoinUnreachable(via.addr.clone());
        let first = self.transport.step(&via, me.id).await.map_err(unreachable)?;
        let (mut successor, _) = self.follow(first, me.id).await?;
        if successor.id == me.id {
            let after = Id(me.id.0.wrapping_add(1));
            let first = self.transport.step(&via, after).await.map_err(unreachable)?;
            successor = self.follow(first, after).await?.0;
            if successor.id == me.id {
                successor = via.clone();
            }
            tracing::info!(me = %me.addr, successor = %successor.addr, "rejoining the ring, which still names this node");
        }
        self.remember_lost(&via, true);
        let theirs = self.transport.neighbours(&successor).await.map_err(|e| RingError::JoinUnreachable(e.0))?;
        self.table().set_successors([successor.clone()], &theirs.successors);
        let _ = self.transport.notify(&successor, &me).await;
        self.joined.store(true, Ordering::SeqCst);
        self.witness(RingChange::Joined(me));
        Ok(())
    }

    /// Stabilize: find the first live successor, adopt its predecessor if
    /// that one sits between, take its successor list, and notify it.
    pub async fn stabilize(&self) {
        let me = self.me();
        let mut theirs = None;
        let before = self.table().successors().to_vec();
        for successor in before.iter().cloned() {
            if successor.id == me.id {
                theirs = Some((successor, self.handle_neighbours(), Instant::now()));
                break;
            }
            let asked = Instant::now();
            match self.transport.neighbours(&successor).await {
                Ok(n) => {
                    theirs = Some((successor, n, asked));
                    break;
                }
                Err(_) => self.suspect(&successor),
            }
        }
        let Some((successor, neighbours, asked)) = theirs else { return };
        let verdict = match &neighbours.predecessor {
            _ if successor.id == me.id => Verdict::Confirmed { alone: true },
            Some(p) if p.id == me.id => Verdict::Confirmed { alone: false },
            Some(p) if !p.id.in_open(me.id, successor.id) => Verdict::Claimed,
            _ => Verdict::Silent,
        };
        self.note_tenure(verdict, asked);
        self.heard_departed(&neighbours.departed);
        self.answered_since(&successor, asked);
        let mut head = vec![successor.clone()];
        let pinged = Instant::now();
        if let Some(p) = neighbours.predecessor.clone()
            && p.id.in_open(me.id, successor.id)
            && self.alive(&p).await
        {
            self.answered_since(&p, pinged);
            head.insert(0, p);
        }
        // Another node's list may still name a node this one found dead (a
        // ring smaller than the list wraps round to it): only its own
        // answer brings it back, never hearsay.
        let tail: Vec<NodeRef> =
            neighbours.successors.into_iter().filter(|n| !self.has_departed(n) && !self.is_lost_member(n)).collect();
        // One that answered before its goodbye came is not brought back.
        head.retain(|n| !self.has_departed(n));
        for answered in &head {
            self.found(answered);
        }
        self.table().set_successors(head, &tail);
        self.check_vanished(&before).await;
        let first = self.table().successor().clone();
        if first.id != me.id && self.transport.notify(&first, &me).await.is_err() {
            self.suspect(&first);
        }
    }

    /// Nodes of the successor list `before` that dropped out of it without
    /// leaving: a node further along found them gone (a crash, or a split).
    /// Each that does not answer here either is remembered as lost (and
    /// probed), so that a read that finds no copy knows one may be there;
    /// unlike a node this one found gone itself, it is still learned again
    /// from other nodes' lists. One that answers was only pushed down the
    /// list by a node that joined.
    async fn check_vanished(&self, before: &[NodeRef]) {
        let me = self.me().id;
        let now = self.table().successors().to_vec();
        let vanished: Vec<&NodeRef> = before
            .iter()
            .filter(|n| n.id != me && !now.iter().any(|k| k.id == n.id))
            .filter(|n| !self.has_departed(n) && !self.is_lost_member(n))
            .collect();
        let answers = futures_util::future::join_all(vanished.iter().map(|n| self.alive(n))).await;
        let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        for (node, alive) in vanished.into_iter().zip(answers) {
            if !alive && !lost.iter().any(|l| l.node.id == node.id) && lost.len() < LOST_LIMIT {
                let since = Instant::now();
                lost.push(Lost { node: node.clone(), since, seed: false, member: true, vanished: true });
            }
        }
    }

    /// Check-predecessor: forget a predecessor that no longer answers.
    pub async fn check_predecessor(&self) {
        let Some(p) = self.table().predecessor.clone() else { return };
        if !self.alive(&p).await {
            let mut t = self.table();
            if t.predecessor.as_ref() == Some(&p) {
                t.set_predecessor(None, Instant::now());
            }
            drop(t);
            self.remember_lost(&p, false);
            self.witness(RingChange::Suspected(p));
        }
    }

    // ---- finding and merging another ring ----------------------------------

    /// Probes the lost nodes at once. One that answers but is not where this
    /// ring would put it belongs to another ring (the network split and
    /// healed, or it started alone): a merge starts ([`ChordNode::handle_merge`]).
    /// One found back in this ring is no longer lost.
    pub async fn probe_lost(&self) {
        if !self.is_joined() || self.is_leaving() {
            return;
        }
        let lost = self.lost();
        let answers = futures_util::future::join_all(lost.iter().map(|n| self.transport.ping(n))).await;
        for (node, answer) in lost.into_iter().zip(answers) {
            if answer.is_err() || self.has_departed(&node) {
                continue;
            }
            let Ok((responsible, _)) = self.lookup(node.id).await else { continue };
            if responsible.id == node.id {
                self.found(&node);
                continue;
            }
            // The lookup just made found the node after it: no second one.
            let successor = self.table().successor().clone();
            let around = if node.id.in_half_open(self.me().id, successor.id) {
                Some((self.me(), successor))
            } else {
                self.preceding(responsible).await
            };
            let Some((pred, succ)) = around else { continue };
            if node.id == pred.id || node.id == succ.id {
                continue;
            }
            tracing::info!(node = %node.addr, "a lost node answers from another ring: merging the rings");
            self.witness(RingChange::Reunited(node.clone()));
            let _ = self.transport.merge(&node, Merge { pred, succ, hops: 0 }).await;
        }
    }

    /// The two adjacent nodes of this ring around `key`: `(pred, succ)` with
    /// `key` in `(pred, succ]`.
    async fn bracket(&self, key: Id) -> Option<(NodeRef, NodeRef)> {
        let me = self.me();
        let successor = self.table().successor().clone();
        if key.in_half_open(me.id, successor.id) {
            return Some((me, successor));
        }
        let (succ, _) = self.lookup(key).await.ok()?;
        self.preceding(succ).await
    }

    /// `(pred, succ)`: `succ` (the node a lookup found responsible for
    /// a key) and the node before it.
    async fn preceding(&self, succ: NodeRef) -> Option<(NodeRef, NodeRef)> {
        let me = self.me();
        let pred = if succ.id == me.id {
            self.table().predecessor.clone()?
        } else {
            self.transport.neighbours(&succ).await.ok()?.predecessor?
        };
        Some((pred, succ))
    }

    /// A merge step (`trymerge`): the sender's ring has `hint.pred` and
    /// `hint.succ` adjacent, with this node between them. First the merge
    /// moves on: `hint.succ` learns where it belongs in this ring (as this
    /// ring was), so the merge zigzags along both rings, one step per
    /// node, until it meets nodes already adjacent. Then this node adopts
    /// the hinted nodes where they are closer than its own neighbours, once
    /// they answer; stabilize spreads the rest.
    pub async fn handle_merge(&self, hint: Merge) {
        let me = self.me();
        if !self.is_joined() || self.is_leaving() || hint.succ.id == me.id {
            return;
        }
        if hint.hops < MERGE_HOPS
            && let Some((pred, succ)) = self.bracket(hint.succ.id).await
            && hint.succ.id != pred.id
            && hint.succ.id != succ.id
        {
            let next = Merge { pred, succ, hops: hint.hops + 1 };
            let _ = self.transport.merge(&hint.succ, next).await;
        }
        let successor = self.table().successor().clone();
        if hint.succ.id.in_open(me.id, successor.id) && !self.has_departed(&hint.succ) && self.alive(&hint.succ).await {
            self.found(&hint.succ);
            {
                let mut t = self.table();
                let old = t.successors().to_vec();
                t.set_successors([hint.succ.clone()], &old);
            }
            let _ = self.transport.notify(&hint.succ, &me).await;
        }
        let predecessor = self.table().predecessor.clone();
        let closer = predecessor.as_ref().is_none_or(|p| hint.pred.id.in_open(p.id, me.id));
        if hint.pred.id != me.id && closer && !self.has_departed(&hint.pred) && self.alive(&hint.pred).await {
            self.found(&hint.pred);
            let mut t = self.table();
            if t.predecessor == predecessor {
                t.set_predecessor(Some(hint.pred), Instant::now());
            }
        }
    }

    /// Fix-fingers: refreshes every finger, reusing one lookup's answer for
    /// all the following targets it also covers.
    pub async fn fix_fingers(&self) {
        let me = self.me();
        let mut last: Option<NodeRef> = None;
        for i in 0..BITS {
            let target = me.id.finger_target(i);
            let covered = last.as_ref().filter(|n| target.in_half_open(me.id, n.id) && n.id != me.id);
            let finger = match covered {
                Some(n) => Some(n.clone()),
                None => self.lookup(target).await.ok().map(|(n, _)| n),
            };
            last = finger.clone();
            self.table().set_finger(i as usize, finger);
        }
    }

    /// Refreshes finger `i` alone, by a lookup of its target: fix-fingers
    /// one entry at a time, as the Chord paper's simulations run it (the
    /// churn benchmark compares with them).
    pub async fn fix_finger(&self, i: u32) {
        let target = self.me().id.finger_target(i);
        let finger = self.lookup(target).await.ok().map(|(n, _)| n);
        self.table().set_finger(i as usize, finger);
    }

    /// Graceful leave: the successor learns its new predecessor, the
    /// predecessor its new successor list.
    pub async fn leave(&self) {
        self.leaving.store(true, Ordering::SeqCst);
        let t = self.snapshot();
        let me = t.me().clone();
        let neighbours = Neighbours {
            predecessor: t.predecessor.clone(),
            successors: t.successors().to_vec(),
            departed: self.departures(),
        };
        // Its successors first (the first takes over its keys), then the
        // nodes before it whose successor lists name it, each found by
        // asking the last its predecessor. Any left untold would see it
        // drop out of their lists or fingers, find it silent and take it
        // for lost (reads of names it would hold then answer 503), until
        // they forget it ([`ChordConfig::remember_for`]).
        let mut told = HashSet::from([me.id]);
        for successor in t.successors() {
            if told.insert(successor.id) {
                let _ = self.transport.leaving(successor, &me, neighbours.clone()).await;
            }
        }
        let mut next = t.predecessor.clone();
        for step in 1..=self.config.successors {
            let Some(p) = next.take() else { break };
            if told.insert(p.id) && self.transport.leaving(&p, &me, neighbours.clone()).await.is_err() {
                break;
            }
            if step < self.config.successors {
                next = self.transport.neighbours(&p).await.ok().and_then(|n| n.predecessor).filter(|b| b.id != me.id);
            }
        }
    }

    /// Walks the ring from this node along first live successors, at most
    /// `limit` nodes: every node met, sorted by id, with whether it answered.
    /// Nodes named in successor lists that did not answer are listed as dead.
    pub async fn walk(&self, limit: usize) -> Vec<(NodeRef, bool)> {
        let me = self.me();
        let mut alive = vec![me.clone()];
        let mut seen: HashSet<Id> = HashSet::from([me.id]);
        let mut dead: Vec<NodeRef> = Vec::new();
        let mut neighbours = self.handle_neighbours();
        'walk: while alive.len() < limit {
            for successor in neighbours.successors.clone() {
                if seen.contains(&successor.id) {
                    break 'walk; // back at the start (or a loop): done
                }
                match self.transport.neighbours(&successor).await {
                    Ok(next) => {
                        seen.insert(successor.id);
                        alive.push(successor);
                        neighbours = next;
                        continue 'walk;
                    }
                    Err(_) => {
                        if !dead.iter().any(|d| d.id == successor.id) {
                            dead.push(successor);
                        }
                    }
                }
            }
            break;
        }
        let mut nodes: Vec<(NodeRef, bool)> = alive.into_iter().map(|n| (n, true)).collect();
        nodes.extend(dead.into_iter().filter(|d| !seen.contains(&d.id)).map(|d| (d, false)));
        nodes.sort_by_key(|(n, _)| n.id);
        nodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_secs(10);

    #[test]
    fn a_departure_heard_of_stays_until_it_runs_out_and_an_answer_since_ends_it() {
        let (mut departures, now) = (Departures::default(), Instant::now());
        assert!(departures.heard(Id(1), now, Duration::from_secs(3)));
        assert!(!departures.heard(Id(1), now, PERIOD), "known already: not taken again, nor extended");
        assert!(departures.contains(Id(1), now + Duration::from_secs(2)));
        assert!(!departures.contains(Id(1), now + Duration::from_secs(4)));
        // An answer to a call sent before the word came brings nothing back.
        departures.answered(Id(1), now - Duration::from_millis(1), now, PERIOD);
        assert!(departures.contains(Id(1), now));
        // One sent after it: back, and word of its departure is not taken.
        departures.answered(Id(1), now + Duration::from_millis(1), now, PERIOD);
        assert!(!departures.contains(Id(1), now));
        assert!(!departures.heard(Id(1), now, PERIOD));
        assert!(!departures.contains(Id(1), now));
        // Until it says goodbye itself again.
        departures.told(Id(1), now, PERIOD);
        assert!(departures.contains(Id(1), now));
    }

    #[test]
    fn the_newest_departures_are_passed_on_and_what_is_kept_is_bounded() {
        let (mut departures, now) = (Departures::default(), Instant::now());
        for i in 0..(DEPARTURES_KEPT as u64 + 10) {
            departures.heard(Id(i), now, PERIOD);
        }
        assert_eq!(departures.gone.len(), DEPARTURES_KEPT);
        let newest = departures.newest(now, 3);
        let ids: Vec<u64> = newest.iter().map(|(id, _)| id.0).collect();
        let last = DEPARTURES_KEPT as u64 + 9;
        assert_eq!(ids, vec![last, last - 1, last - 2]);
        assert!(newest.iter().all(|(_, left)| *left <= PERIOD));
    }
}
