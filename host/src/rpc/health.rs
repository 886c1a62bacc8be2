//! [`Health`]: a failure detector for the peers this node talks to, so that
//! a peer cut off by the network is suspected within about a second rather
//! than after each call's own timeout (the calls of a write, a lookup and
//! stabilize would each wait it out in turn).
//!
//! A heartbeat detector with a fixed deadline (as Akka's deadline detector,
//! or SWIM's direct probe): every peer called in the last
//! [`WATCH_FOR`] and not heard from since the last [`HEARTBEAT`] is pinged
//! (answers to calls count as heartbeats); one not heard from for
//! [`SUSPECT_AFTER`] (four heartbeats) is suspected. Any answer, to a
//! heartbeat or to a call, clears it. While a peer is suspected, calls to
//! it fail at once, and calls already waiting on it give up
//! ([`Health::suspected`]): a write moves to the next live successors and a
//! lookup skips the peer. The ring's probe of lost nodes still reaches it,
//! so a healed network is noticed.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often a watched peer is pinged.
pub const HEARTBEAT: Duration = Duration::from_millis(250);
/// How long a peer may go unheard before it is suspected.
pub const SUSPECT_AFTER: Duration = Duration::from_secs(1);
/// How often the peers are judged.
const JUDGE_EVERY: Duration = Duration::from_millis(50);
/// How long after its last call a peer is still watched.
pub const WATCH_FOR: Duration = Duration::from_secs(30);

/// What is known of one peer.
struct Peer {
    heard: Instant,
    used: Instant,
    suspected: bool,
    /// Woken when the peer becomes suspected.
    lost: Arc<Notify>,
}

/// The failure detector (one per node, shared by every call to its peers).
#[derive(Default)]
pub struct Health {
    peers: Mutex<HashMap<String, Peer>>,
}

impl Health {
    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Peer>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A call to `addr` is about to be made: watch it from now on.
    pub fn used(&self, addr: &str) {
        let now = Instant::now();
        let mut peers = self.peers();
        match peers.get_mut(addr) {
            Some(peer) => peer.used = now,
            None => {
                let peer = Peer { heard: now, used: now, suspected: false, lost: Arc::default() };
                peers.insert(addr.to_owned(), peer);
            }
        }
    }

    /// `addr` answered.
    pub fn heard(&self, addr: &str) {
        if let Some(peer) = self.peers().get_mut(addr) {
            if peer.suspected {
                tracing::info!(peer = addr, "a suspected peer answers again");
            }
            peer.heard = Instant::now();
            peer.suspected = false;
        }
    }

    /// Whether `addr` is suspected now.
    pub fn is_suspected(&self, addr: &str) -> bool {
        self.peers().get(addr).is_some_and(|p| p.suspected)
    }

    /// Completes when `addr` is suspected (at once if it is already). It
    /// listens from the moment it is made, so a suspicion that comes before
    /// it is first polled is not missed.
    pub fn suspected(&self, addr: &str) -> impl Future<Output = ()> + Send + use<> {
        let (lost, already) = {
            let mut peers = self.peers();
            let now = Instant::now();
            let peer = peers.entry(addr.to_owned()).or_insert_with(|| Peer {
                heard: now,
                used: now,
                suspected: false,
                lost: Arc::default(),
            });
            // Enabled under the lock that `judge` holds while it notifies.
            let mut lost = Box::pin(peer.lost.clone().notified_owned());
            lost.as_mut().enable();
            (lost, peer.suspected)
        };
        async move {
            if !already {
                lost.await;
            }
        }
    }

    /// Peers to ping now: those called within [`WATCH_FOR`] (the others
    /// are forgotten) and not heard from since the last heartbeat (an
    /// answer to any call counts: a busy peer costs no pings).
    fn watched(&self) -> Vec<String> {
        let mut peers = self.peers();
        peers.retain(|_, p| p.used.elapsed() < WATCH_FOR);
        peers.iter().filter(|(_, p)| p.heard.elapsed() >= HEARTBEAT).map(|(addr, _)| addr.clone()).collect()
    }

    /// Suspects every watched peer not heard from for [`SUSPECT_AFTER`],
    /// and wakes the calls waiting on them.
    fn judge(&self) {
        for (addr, peer) in self.peers().iter_mut() {
            if !peer.suspected && peer.heard.elapsed() > SUSPECT_AFTER {
                tracing::warn!(peer = %addr, "suspected: no answer for {} ms", SUSPECT_AFTER.as_millis());
                peer.suspected = true;
                peer.lost.notify_waiters();
            }
        }
    }

    /// Pings the watched peers every [`HEARTBEAT`] with `ping` (true: it
    /// answered) and judges them, until `stop`.
    pub fn spawn_watch<P, F>(self: Arc<Self>, ping: P, stop: CancellationToken) -> tokio::task::JoinHandle<()>
    where
        P: Fn(String) -> F + Send + Sync + 'static,
        F: Future<Output = bool> + Send + 'static,
    {
        let ping = Arc::new(ping);
        tokio::spawn(async move {
            // Judged every JUDGE_EVERY, so a peer is suspected right at its
            // deadline; pinged every HEARTBEAT.
            let mut every = tokio::time::interval(JUDGE_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut pinged = Instant::now() - HEARTBEAT;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = every.tick() => {}
                }
                self.judge();
                if pinged.elapsed() < HEARTBEAT {
                    continue;
                }
                pinged = Instant::now();
                for addr in self.watched() {
                    // Each on its own: a peer that does not answer holds up nobody.
                    let (health, ping) = (self.clone(), ping.clone());
                    tokio::spawn(async move {
                        if tokio::time::timeout(SUSPECT_AFTER, ping(addr.clone())).await == Ok(true) {
                            health.heard(&addr);
                        }
                    });
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_peer_that_stops_answering_is_suspected_within_about_a_second_and_cleared_when_it_answers() {
        let health = Arc::new(Health::default());
        let answering = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let stop = CancellationToken::new();
        let flag = answering.clone();
        let watch = health.clone().spawn_watch(
            move |_| {
                let up = flag.load(std::sync::atomic::Ordering::SeqCst);
                async move { up }
            },
            stop.clone(),
        );
        health.used("peer:1");
        tokio::time::sleep(SUSPECT_AFTER * 2).await;
        assert!(!health.is_suspected("peer:1"), "a peer that answers is not suspected");
        let waiting = health.suspected("peer:1");
        answering.store(false, std::sync::atomic::Ordering::SeqCst);
        tokio::time::timeout(SUSPECT_AFTER * 3, waiting).await.expect("a call waiting on it gives up");
        assert!(health.is_suspected("peer:1"));
        answering.store(true, std::sync::atomic::Ordering::SeqCst);
        tokio::time::timeout(SUSPECT_AFTER, async {
            while health.is_suspected("peer:1") {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("cleared once it answers");
        stop.cancel();
        watch.await.unwrap();
    }
}
