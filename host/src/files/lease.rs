//! Read leases: how a holder serves a file from its own store without
//! asking the other holders, and still never serves a version that an
//! acknowledged write or deletion replaced.
//!
//! - **Standing.** A node answers for its own range (after its
//!   predecessor) only while its successor names it as predecessor, asked
//!   less than `7/8 D` ago, in a run of such answers at least `D` old, and
//!   `D` after its range last took in keys (a predecessor learned, or one
//!   further back). The successor's range grows the moment it stops naming
//!   this node, so in a ring that is not split the two never answer for
//!   the same keys at once; a node that joins waits until the leases the
//!   range's last owner granted have run out. A write is answered only if
//!   its coordinator still stands for its key then ([`Leases::still_stands`]).
//!   While the network is split, each side coordinates its own writes, as
//!   before (they stay available; the newest wins when it heals). Only a node in standing coordinates a write or deletion
//!   ([`Leases::stand_for`]); a node alone in its ring stands once alone
//!   for `D`.
//! - **Leases.** Every holder asks the k-1 nodes before it (whose ranges
//!   it holds copies of) for a lease on each one's range, every `D/4`
//!   ([`Leases::renew`]). A node in standing grants it to one of its k-1
//!   first successors for `D` from when it got the request
//!   ([`Leases::grant`]), with its digest of the range taken after the
//!   grant was recorded; the holder uses it, for `7/8 D` from when it
//!   asked, only if its own digest of the range is the same: it then has
//!   every version and deletion the granter has.
//! - **Writes.** Before it acknowledges a write or deletion, the granter
//!   waits until every lease on the key held by a node that did not apply
//!   it has run out ([`Leases::settle`]), and counts that lease broken: it
//!   is renewed only after the digests match again (a new epoch). A lease
//!   renewed unbroken (same epoch) needs no digest.
//! - **Reads.** A node serves its copy of a name without asking anyone
//!   when it holds a lease whose range has the name's key, or stands for
//!   it itself and found its digest of its range the same as its first
//!   successor's since it began to (a node back from a crash lacks what
//!   was written meanwhile) ([`Leases::serves`]). Anything else (no
//!   lease, no copy, a deletion) asks the holders as before.
//!
//! Time is each node's monotonic clock; the `1/8` margins cover rates
//! that differ between machines (real clocks are within parts per
//! million).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

use super::error::{ErrorKind, FileError};
use super::local::Local;
use super::network::{LeaseAnswer, Peers, Ring};
use crate::chord::{Id, NodeRef, Standing};
use crate::store::digest::{KeyRange, Sum};

/// A lease this node granted.
#[derive(Debug, Clone)]
struct Grant {
    addr: String,
    range: KeyRange,
    until: Instant,
    epoch: u64,
    /// The holder applied every write in `range` since the epoch began.
    unbroken: bool,
}

/// A lease this node holds.
#[derive(Debug, Clone, Copy)]
struct Held {
    range: KeyRange,
    until: Instant,
    epoch: u64,
}

/// Counters of what leases did.
#[derive(Clone)]
pub struct LeaseCounters {
    /// Reads served from this node's copy under a lease or its standing.
    pub reads: Counter,
    /// Writes and deletions that waited for a holder's lease to run out.
    pub waits: Counter,
}

/// This node's leases, granted and held.
pub struct Leases {
    duration: Duration,
    replicas: usize,
    ring: Arc<dyn Ring>,
    granted: Mutex<(HashMap<Id, Grant>, u64)>,
    held: Mutex<HashMap<Id, Held>>,
    /// The standing (its run's start, and when the range last grew) in
    /// which this node's own range was found the same as its first
    /// successor's.
    own: Mutex<Option<Run>>,
    counters: OnceLock<LeaseCounters>,
}

/// A run of standing: when it began, and when the range last grew.
type Run = (Option<Instant>, Option<Instant>);

/// How long a write waits for this node to stand for its key before it is
/// refused: standing comes `D` after a change of the ring.
fn standing_wait(duration: Duration) -> Duration {
    duration * 2 + Duration::from_secs(1)
}

/// `mutex`'s guard, also after a thread panicked holding it (the state
/// is whole between statements).
fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The run of standing `standing` is in: when it began, and when the
/// range last grew.
fn run_of(standing: &Standing) -> Run {
    (standing.tenure.since, standing.gained_at)
}

/// The part of a lease's length its holder trusts.
fn trusted(duration: Duration) -> Duration {
    duration * 7 / 8
}

/// The range `standing` lets a node of id `me` answer for at `now`, with
/// leases of `duration` (pure; see the module's notes).
pub fn standing_range(standing: &Standing, me: Id, duration: Duration, now: Instant) -> Option<KeyRange> {
    let range = match (&standing.predecessor, standing.alone) {
        (_, true) => KeyRange { from: me.0, to: me.0 },
        (Some(p), false) => KeyRange { from: p.id.0, to: me.0 },
        (None, false) => return None,
    };
    let since = standing.tenure.since?;
    let asked = standing.tenure.last_asked?;
    let settled = now >= since + duration && standing.gained_at.is_none_or(|g| now >= g + duration);
    (settled && now < asked + trusted(duration)).then_some(range)
}

impl Leases {
    /// Leases of `duration` among the k = `replicas` holders of `ring`.
    pub fn new(ring: Arc<dyn Ring>, replicas: usize, duration: Duration) -> Self {
        Self {
            duration,
            replicas,
            ring,
            granted: Mutex::new((HashMap::new(), 0)),
            held: Mutex::default(),
            own: Mutex::default(),
            counters: OnceLock::new(),
        }
    }

    /// A lease's length.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// Counts what leases do in `counters`.
    pub fn count_in(&self, counters: LeaseCounters) {
        let _ = self.counters.set(counters);
    }

    /// The range this node answers for now, if it stands for one.
    fn standing(&self, now: Instant) -> Option<KeyRange> {
        let standing = self.ring.standing()?;
        standing_range(&standing, self.ring.me().id, self.duration, now)
    }

    /// Waits until this node stands for `key` (a write or deletion it
    /// coordinates); refused with `PeerUnavailable` (the writer tries
    /// again through a lookup) if it does not within a bound.
    pub async fn stand_for(&self, key: Id) -> Result<(), FileError> {
        let deadline = Instant::now() + standing_wait(self.duration);
        loop {
            let now = Instant::now();
            match self.standing(now) {
                Some(range) if range.contains(key.0) => return Ok(()),
                // Standing for other keys, or none: the range may be about
                // to take the key in (a predecessor lost, a lookup that
                // already knows it); a write routed here by a stale table
                // is tried again through a lookup after the bound.
                _ if now >= deadline => break,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        Err(self.not_standing("does not answer for this key now (the ring is changing round it): ask the ring again"))
    }

    /// The error of a write this node does not stand for, and `why`.
    fn not_standing(&self, why: &str) -> FileError {
        let me = self.ring.me().addr;
        FileError::remote(&me, ErrorKind::PeerUnavailable, format!("{me} {why}"))
    }

    /// Whether this node still stands for `key`, checked as a write or
    /// deletion it coordinates is answered: one that lost its standing
    /// meanwhile (a node joined before it, it started to leave) may have
    /// written where another now answers, and says it cannot tell.
    pub fn still_stands(&self, key: Id) -> Result<(), FileError> {
        if self.standing(Instant::now()).is_some_and(|r| r.contains(key.0)) {
            return Ok(());
        }
        Err(self.not_standing(
            "stopped answering for this key while the write was made (the ring changed round it): its copies may \
             be kept, but it cannot be acknowledged here",
        ))
    }

    /// Answers `requester`'s request for a lease on this node's range;
    /// `epoch` is the lease it still trusts; `local` gives this node's
    /// digest of the range.
    pub async fn grant(&self, requester: &NodeRef, epoch: u64, local: &Local) -> Result<LeaseAnswer, FileError> {
        let now = Instant::now();
        let Some(range) = self.standing(now) else {
            return Ok(LeaseAnswer::Refused("this node does not answer for its range now".into()));
        };
        let me = self.ring.me();
        let successors: Vec<NodeRef> =
            self.ring.successors().into_iter().filter(|n| n.id != me.id).take(self.replicas - 1).collect();
        if !successors.iter().any(|n| n.id == requester.id) {
            return Ok(LeaseAnswer::Refused(format!(
                "{} is not one of this node's {} first successors",
                requester.addr,
                self.replicas - 1
            )));
        }
        let (epoch, renewed) = {
            let mut granted = locked(&self.granted);
            let (grants, last_epoch) = &mut *granted;
            grants.retain(|_, g| g.until > now);
            let renewed = epoch != 0
                && grants
                    .get(&requester.id)
                    .is_some_and(|g| g.unbroken && g.epoch == epoch && g.until > now && g.range == range);
            let epoch = if renewed {
                epoch
            } else {
                *last_epoch += 1;
                *last_epoch
            };
            let grant =
                Grant { addr: requester.addr.clone(), range, until: now + self.duration, epoch, unbroken: true };
            grants.insert(requester.id, grant);
            (epoch, renewed)
        };
        // Taken after the grant was recorded: a write applied here after
        // this digest is either applied by the holder too or waited for.
        let digest = if renewed { Sum::default() } else { local.sum(range).await? };
        let predecessor = self.ring.predecessor().map(|p| p.addr);
        Ok(LeaseAnswer::Granted { range, epoch, renewed, digest, duration: self.duration, predecessor })
    }

    /// A write or deletion of `key` was applied by the nodes at `applied`:
    /// waits until every lease on `key` held by another node has run out,
    /// and counts those leases broken. Answers whether it waited.
    pub async fn settle(&self, key: Id, applied: &[String]) -> bool {
        let now = Instant::now();
        let until = {
            let mut granted = locked(&self.granted);
            let mut until: Option<Instant> = None;
            for grant in granted.0.values_mut() {
                if grant.range.contains(key.0) && !applied.contains(&grant.addr) {
                    grant.unbroken = false;
                    if grant.until > now {
                        until = until.max(Some(grant.until));
                    }
                }
            }
            until
        };
        let Some(until) = until else { return false };
        if let Some(counters) = self.counters.get() {
            counters.waits.inc();
        }
        tokio::time::sleep_until(until.into()).await;
        true
    }

    /// Whether this node may serve its own copy of `key` without asking:
    /// it holds a lease on it, or stands for it and its range was found
    /// the same as its first successor's in this standing.
    pub fn serves(&self, key: Id) -> bool {
        let now = Instant::now();
        let held = locked(&self.held);
        let leased = held.values().any(|h| h.until > now && h.range.contains(key.0));
        drop(held);
        if leased {
            return true;
        }
        let Some(standing) = self.ring.standing() else { return false };
        let run = run_of(&standing);
        standing_range(&standing, self.ring.me().id, self.duration, now).is_some_and(|r| r.contains(key.0))
            && *locked(&self.own) == Some(run)
    }

    /// Compares this node's own range with its first successor's copies of
    /// it, once per run of standing (see [`Leases::serves`]).
    async fn check_own(&self, peers: &dyn Peers, local: &Local) {
        let Some(standing) = self.ring.standing() else { return };
        let run = run_of(&standing);
        let me = self.ring.me();
        let Some(range) = standing_range(&standing, me.id, self.duration, Instant::now()) else { return };
        if *locked(&self.own) == Some(run) {
            return;
        }
        let same = match self.ring.successors().into_iter().find(|n| n.id != me.id) {
            // Alone: what it has is all there is.
            None => true,
            Some(first) => match (peers.digests(&first.addr, &[range], 1).await, local.sum(range).await) {
                (Ok(theirs), Ok(mine)) => theirs.first().map(|(_, sum)| sum) == Some(&mine),
                _ => false,
            },
        };
        if same {
            *locked(&self.own) = Some(run);
        }
    }

    /// Counts a read served under a lease.
    pub fn served(&self) {
        if let Some(counters) = self.counters.get() {
            counters.reads.inc();
        }
    }

    /// Asks this node's k-1 predecessors for leases on their ranges, one
    /// after the other (each names the next); keeps those whose digest is
    /// this node's over the same range (`local`), drops the others.
    pub async fn renew(&self, peers: &dyn Peers, local: &Local) {
        self.check_own(peers, local).await;
        let me = self.ring.me();
        let mut next = self.ring.predecessor().map(|p| p.addr);
        let mut asked = Vec::new();
        for _ in 1..self.replicas {
            let Some(addr) = next.take() else { break };
            let granter = NodeRef::new(addr);
            if granter.id == me.id || asked.contains(&granter.id) {
                break;
            }
            asked.push(granter.id);
            let held = self.trusted_epoch(granter.id);
            let when = Instant::now();
            let answer = peers.lease(&granter.addr, &me, held).await;
            let kept = match answer {
                Ok(LeaseAnswer::Granted { range, epoch, renewed, digest, duration, predecessor }) => {
                    next = predecessor;
                    let same =
                        if renewed { held == epoch } else { local.sum(range).await.is_ok_and(|mine| mine == digest) };
                    let until = when + trusted(duration.min(self.duration));
                    same.then_some(Held { range, until, epoch })
                }
                Ok(LeaseAnswer::Refused(why)) => {
                    tracing::debug!(node = %granter.addr, "no lease: {why}");
                    None
                }
                Err(e) => {
                    tracing::debug!(node = %granter.addr, "no lease: {e}");
                    None
                }
            };
            let mut leases = locked(&self.held);
            match kept {
                Some(lease) => leases.insert(granter.id, lease),
                None => leases.remove(&granter.id),
            };
        }
        let mut leases = locked(&self.held);
        leases.retain(|id, _| asked.contains(id));
    }

    /// The epoch of the lease held from `granter`, if it is still trusted;
    /// 0 otherwise.
    fn trusted_epoch(&self, granter: Id) -> u64 {
        let held = locked(&self.held);
        held.get(&granter).filter(|h| h.until > Instant::now()).map_or(0, |h| h.epoch)
    }
}

/// Renews this node's leases every quarter of their length until
/// `shutdown`.
pub fn spawn_renewal(
    leases: Arc<Leases>,
    peers: Arc<dyn Peers>,
    local: Arc<Local>,
    shutdown: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(leases.duration() / 4);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = every.tick() => leases.renew(&*peers, &local).await,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chord::Tenure;

    const D: Duration = Duration::from_secs(2);

    fn standing(pred: Option<&str>, since: Instant, asked: Instant, gained: Option<Instant>) -> Standing {
        Standing {
            predecessor: pred.map(NodeRef::new),
            alone: false,
            gained_at: gained,
            tenure: Tenure { since: Some(since), last_asked: Some(asked), alone: false },
        }
    }

    #[test]
    fn a_node_stands_for_its_range_only_after_a_settled_run_of_confirmations() {
        let me = NodeRef::new("127.0.0.1:2");
        let t0 = Instant::now();
        let s = standing(Some("127.0.0.1:1"), t0, t0 + D, None);
        // Too early: the run is not a lease's length old.
        assert_eq!(standing_range(&s, me.id, D, t0 + D / 2), None);
        let range = standing_range(&s, me.id, D, t0 + D + D / 2).expect("settled and fresh");
        assert_eq!(range, KeyRange { from: NodeRef::new("127.0.0.1:1").id.0, to: me.id.0 });
        // The last confirmation is too old.
        assert_eq!(standing_range(&s, me.id, D, t0 + D + trusted(D)), None);
        // The range grew lately: wait a lease's length from then.
        let grew = standing(Some("127.0.0.1:1"), t0, t0 + 2 * D, Some(t0 + D));
        assert_eq!(standing_range(&grew, me.id, D, t0 + D + D / 2), None);
        assert!(standing_range(&grew, me.id, D, t0 + 2 * D).is_some());
        // No predecessor, not alone: no range to stand for.
        assert_eq!(standing_range(&standing(None, t0, t0 + D, None), me.id, D, t0 + D), None);
        // Alone: the whole ring.
        let alone = Standing { alone: true, ..standing(None, t0, t0 + D, None) };
        assert_eq!(standing_range(&alone, me.id, D, t0 + D), Some(KeyRange { from: me.id.0, to: me.id.0 }));
        // No run at all.
        let none = Standing { tenure: Tenure::default(), ..s };
        assert_eq!(standing_range(&none, me.id, D, t0 + D), None);
    }
}
