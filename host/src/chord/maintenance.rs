//! The ring's periodic tasks, stopped by the node's shutdown signal.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio::time::{MissedTickBehavior, interval};
use tokio_util::sync::CancellationToken;

use super::node::{ChordNode, Transport};

/// Runs stabilize, check-predecessor and fix-fingers at the configured
/// periods until `shutdown` is cancelled; the probe of lost nodes runs on
/// a task of its own, so that probes waiting on a split network's timeouts
/// never hold up stabilize.
pub fn spawn_maintenance<T: Transport>(node: Arc<ChordNode<T>>, shutdown: CancellationToken) -> JoinHandle<()> {
    let prober = node.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut probe = interval(prober.config().probe_every);
        probe.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = probe.tick() => prober.probe_lost().await,
            }
        }
    });
    tokio::spawn(async move {
        let config = *node.config();
        let mut stabilize = interval(config.stabilize_every);
        let mut check = interval(config.check_predecessor_every);
        let mut fingers = interval(config.fix_fingers_every);
        for timer in [&mut stabilize, &mut check, &mut fingers] {
            timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = stabilize.tick() => node.stabilize().await,
                _ = check.tick() => node.check_predecessor().await,
                _ = fingers.tick() => node.fix_fingers().await,
            }
        }
    })
}
