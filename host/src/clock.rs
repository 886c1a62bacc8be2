//! Versions that do not trust clocks.
//!
//! - [`now_ns`] is a hybrid logical clock (Kulkarni, Demirbas et al.,
//!   "Logical Physical Clocks", OPODIS 2014) folded into one `u64` of
//!   nanoseconds: the largest of the wall clock and one past the last time
//!   given or seen. Every version and tombstone is stamped with it, and
//!   every write that arrives from another node is [`observe`]d first, so a
//!   version made after seeing another is larger than it, whatever the two
//!   wall clocks say. It stays within the clocks' error of real time (the
//!   logical part only counts nanoseconds).
//! - A time from another node more than the maximum offset ahead of this
//!   node's wall clock is refused rather than adopted (CockroachDB's "too far
//!   ahead to be trustworthy"): one fast clock cannot drag every version
//!   ahead.
//! - [`Offsets`] keeps this node's measured offset to each peer's wall
//!   clock. A node off by more than the maximum from most of the peers it
//!   measured is the one whose clock is wrong: it says so (log, `/metrics`,
//!   `/ring`) and takes no writes ([`Offsets::trusted`]) until it is corrected.
//!
//! One clock per process: nodes run in one process only in tests, where
//! they share the wall clock too.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The maximum offset unless the node is told otherwise (CockroachDB's).
pub const DEFAULT_MAX_OFFSET: Duration = Duration::from_millis(500);

/// A measurement older than this no longer counts.
const MEASURED_WITHIN: Duration = Duration::from_secs(60);

/// The last time given or seen, in ns.
static LAST: AtomicU64 = AtomicU64::new(0);
/// The maximum offset, in ns.
static MAX_OFFSET_NS: AtomicU64 = AtomicU64::new(DEFAULT_MAX_OFFSET.as_nanos() as u64);

/// The wall clock, in nanoseconds since the Unix epoch.
pub fn wall_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Now, for a new version or tombstone: the wall clock, or one past the
/// last time given or seen if that is later. Never the same twice.
pub fn now_ns() -> u64 {
    let wall = wall_ns();
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = wall.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// A time from another node is further ahead of this node's wall clock
/// than the maximum offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a time {ahead_ms} ms ahead of this node's clock (at most {max_ms} ms is trusted): the sending node's clock is \
     wrong, or this one's"
)]
pub struct TooFarAhead {
    /// How far ahead, in ms.
    pub ahead_ms: u64,
    /// The maximum offset, in ms.
    pub max_ms: u64,
}

/// Takes in a time another node stamped a write with: later versions made
/// here are larger. Refused if it is more than the maximum offset ahead.
pub fn observe(remote_ns: u64) -> Result<(), TooFarAhead> {
    let (wall, max) = (wall_ns(), MAX_OFFSET_NS.load(Ordering::Relaxed));
    if remote_ns > wall.saturating_add(max) {
        return Err(TooFarAhead { ahead_ms: (remote_ns - wall) / 1_000_000, max_ms: max / 1_000_000 });
    }
    LAST.fetch_max(remote_ns, Ordering::AcqRel);
    Ok(())
}

/// Sets the maximum offset between nodes' clocks.
pub fn set_max_offset(max: Duration) {
    MAX_OFFSET_NS.store(max.as_nanos() as u64, Ordering::Relaxed);
}

/// The maximum offset between nodes' clocks.
pub fn max_offset() -> Duration {
    Duration::from_nanos(MAX_OFFSET_NS.load(Ordering::Relaxed))
}

/// One measurement of a peer's wall clock against this node's.
#[derive(Debug, Clone)]
struct Measured {
    peer: String,
    /// The peer's clock minus this node's, in ns.
    offset_ns: i64,
    at: Instant,
}

/// This node's offsets to its peers' wall clocks, and the verdict on its own.
#[derive(Debug)]
pub struct Offsets {
    measured: Mutex<Vec<Measured>>,
    /// Whether this node's wall clock agrees with its peers'.
    in_step: AtomicBool,
    /// Whether it was judged since [`Offsets::judge_first`] (a node that
    /// joins a ring trusts its clock only once it is measured).
    judged: AtomicBool,
    /// Woken when it is judged.
    judgement: tokio::sync::Notify,
    /// The last verdict.
    last: Mutex<Option<Verdict>>,
}

impl Default for Offsets {
    fn default() -> Self {
        Self {
            measured: Mutex::default(),
            in_step: AtomicBool::new(true),
            judged: AtomicBool::new(true),
            judgement: tokio::sync::Notify::new(),
            last: Mutex::default(),
        }
    }
}

/// What the offsets say of this node's clock.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Verdict {
    /// The median offset of the peers' clocks from this node's, in ms
    /// (positive: theirs are ahead).
    pub median_offset_ms: f64,
    /// Peers measured within the last minute.
    pub peers: usize,
    /// Of those, how many are off by more than the maximum offset.
    pub off: usize,
    /// Whether this node's clock agrees with most of its peers'.
    pub in_step: bool,
}

impl Offsets {
    /// Whether this node's clock agrees with its peers' (as last judged):
    /// if not, it takes no writes.
    pub fn trusted(&self) -> bool {
        self.judged() && self.in_step.load(Ordering::Relaxed)
    }

    /// Whether this node's clock was judged since [`Offsets::judge_first`].
    pub fn judged(&self) -> bool {
        self.judged.load(Ordering::Relaxed)
    }

    /// Trusts this node's clock only once [`Offsets::judge`] has run: a
    /// node that joins a ring takes no writes before its clock is measured
    /// against its new neighbours' (its first check runs as it joins).
    pub fn judge_first(&self) {
        self.judged.store(false, Ordering::Relaxed);
    }

    /// Waits up to `limit` for this node's clock to be judged (at once if it
    /// was): whether it was.
    pub async fn judged_within(&self, limit: std::time::Duration) -> bool {
        // Every write asks: once judged, no waiter is registered.
        if self.judged() {
            return true;
        }
        let judgement = self.judgement.notified();
        tokio::pin!(judgement);
        judgement.as_mut().enable();
        if self.judged() {
            return true;
        }
        tokio::time::timeout(limit, judgement).await.is_ok() || self.judged()
    }

    /// The last verdict, if any peer was measured yet.
    pub fn verdict(&self) -> Option<Verdict> {
        *self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a measurement of `peer`: it said its clock read `theirs_ns`
    /// while this node's read `sent_ns` before asking and `answered_ns`
    /// after. The offset is taken at the midpoint of the round trip.
    pub fn record(&self, peer: &str, sent_ns: u64, theirs_ns: u64, answered_ns: u64) {
        let midpoint = sent_ns / 2 + answered_ns / 2;
        let offset_ns = theirs_ns as i64 - midpoint as i64;
        let mut measured = self.measured.lock().unwrap_or_else(|p| p.into_inner());
        measured.retain(|m| m.peer != peer && m.at.elapsed() < MEASURED_WITHIN);
        measured.push(Measured { peer: peer.to_owned(), offset_ns, at: Instant::now() });
    }

    /// The verdict on this node's clock, from the peers measured in the
    /// last minute: out of step when more than half of them are off by more
    /// than the maximum offset (with one peer, that one decides; two nodes
    /// that disagree both stop taking writes, as neither can tell who is
    /// right). Also sets what [`Offsets::trusted`] answers, and logs a change.
    pub fn judge(&self) -> Verdict {
        let max = MAX_OFFSET_NS.load(Ordering::Relaxed) as i64;
        let mut offsets: Vec<i64> = {
            let measured = self.measured.lock().unwrap_or_else(|p| p.into_inner());
            measured.iter().filter(|m| m.at.elapsed() < MEASURED_WITHIN).map(|m| m.offset_ns).collect()
        };
        offsets.sort_unstable();
        let off = offsets.iter().filter(|o| o.unsigned_abs() > max as u64).count();
        let median_offset_ms = offsets.get(offsets.len() / 2).map_or(0.0, |o| *o as f64 / 1e6);
        let verdict = Verdict { median_offset_ms, peers: offsets.len(), off, in_step: off * 2 <= offsets.len() };
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(verdict);
        let was = self.in_step.swap(verdict.in_step, Ordering::Relaxed);
        self.judged.store(true, Ordering::Relaxed);
        self.judgement.notify_waiters();
        if was && !verdict.in_step {
            tracing::error!(
                median_offset_ms,
                off,
                peers = verdict.peers,
                max_offset_ms = max / 1_000_000,
                "this node's clock is off its peers' by more than the maximum offset: it takes no writes until the \
                 clock is corrected"
            );
        } else if !was && verdict.in_step {
            tracing::warn!(median_offset_ms, "this node's clock agrees with its peers' again: it takes writes");
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_never_repeats_and_never_goes_back() {
        let mut last = now_ns();
        for _ in 0..10_000 {
            let next = now_ns();
            assert!(next > last);
            last = next;
        }
    }

    #[test]
    fn a_time_seen_from_another_node_orders_what_comes_after() {
        let ahead = wall_ns() + 300_000_000; // 300 ms ahead: within 500 ms
        observe(ahead).unwrap();
        assert!(now_ns() > ahead, "a version made after seeing another is larger");
    }

    #[test]
    fn a_time_too_far_ahead_is_refused_and_not_adopted() {
        let far = wall_ns() + 600_000_000_000; // ten minutes
        let refused = observe(far).unwrap_err();
        assert!(refused.ahead_ms >= 599_000 && refused.max_ms == 500, "{refused}");
        assert!(now_ns() < far);
    }

    #[test]
    fn the_clock_off_most_peers_is_the_wrong_one() {
        let offsets = Offsets::default();
        let now = wall_ns();
        let ten_minutes = 600_000_000_000u64;
        // Seen from a node ten minutes ahead: both peers are behind.
        offsets.record("a", now, now - ten_minutes, now + 1_000_000);
        offsets.record("b", now, now - ten_minutes, now + 1_000_000);
        let verdict = offsets.judge();
        assert!(!verdict.in_step && verdict.off == 2 && verdict.median_offset_ms < -599_000.0, "{verdict:?}");
        assert!(!offsets.trusted());
        // Seen from a good node: one peer of two is off, not most.
        let good = Offsets::default();
        good.record("fast", now, now + ten_minutes, now + 1_000_000);
        good.record("b", now, now + 400_000, now + 1_000_000);
        let verdict = good.judge();
        assert!(verdict.in_step && verdict.off == 1 && good.trusted(), "{verdict:?}");
        // A measurement of the same peer replaces the last.
        good.record("fast", now, now, now);
        assert_eq!(good.judge().off, 0);
    }

    #[tokio::test]
    async fn a_node_told_to_judge_first_trusts_its_clock_only_once_judged() {
        let offsets = std::sync::Arc::new(Offsets::default());
        assert!(offsets.trusted(), "a first node, alone, has nobody to measure");
        offsets.judge_first();
        assert!(!offsets.trusted() && !offsets.judged(), "joining: not before its clock is measured");
        assert!(!offsets.judged_within(std::time::Duration::from_millis(20)).await, "nobody judged it");
        let waiting = tokio::spawn({
            let offsets = offsets.clone();
            async move { offsets.judged_within(std::time::Duration::from_secs(60)).await }
        });
        let now = wall_ns();
        offsets.record("a", now, now + 1_000_000, now + 2_000_000);
        assert!(!offsets.trusted(), "measured, not yet judged");
        assert!(offsets.judge().in_step && offsets.trusted());
        assert!(waiting.await.unwrap(), "a write waiting for the judgement goes on");
    }
}
