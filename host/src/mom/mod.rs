//! The RabbitMQ bridge: hinted hand-offs between nodes (and, later, ring
//! and file events) through a broker, with nothing lost while the broker is
//! down.
//!
//! - Publishing: a message is written to the node's [`Outbox`] first
//!   (durably), then a flusher publishes the outbox in order on a channel in
//!   confirm mode and removes each message only once the broker confirmed
//!   it. A nack or a lost connection leaves it in the outbox, to be sent
//!   again after reconnecting: delivery is at least once.
//! - Consuming: the node's own hand-off queue, with manual acks sent only
//!   after the hand-off is applied durably (or found already applied).
//!   Applying one is idempotent (by file version), which absorbs duplicates.
//!   A message that cannot be read is rejected to the dead-letter queue at
//!   once; one that fails is retried after a pause that grows with its
//!   delivery count, and dead-lettered by the broker after
//!   [`topology::DELIVERY_LIMIT`] deliveries.
//! - Connection: one per node, supervised here (not by lapin's automatic
//!   recovery): any error drops it, and it is opened again with capped
//!   exponential backoff; the node serves REST and gRPC all the while.

mod events;
mod outbox;
mod topology;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use lapin::{Confirmation, PublisherConfirm};
use serde::Serialize;
use tokio::sync::{Notify, broadcast};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

pub use events::{Event, What};
pub use outbox::{Message, Outbox, OutboxError};
pub use topology::{DEAD, DELIVERY_LIMIT, EVENTS_EXCHANGE, HANDOFF_EXCHANGE, handoff_queue};

use crate::chord::RingChange;
use crate::files::{FileChange, FileError, Files, Fut, HandOff, Hints, Taken};

/// Messages read from the outbox and published per round of confirms.
const BATCH: usize = 256;
/// Hand-offs applied at once (the broker sends no more unacked).
const PREFETCH: u16 = 4;
/// Pause before a failed hand-off is retried the first time (it doubles
/// with each delivery, up to 30 s).
pub const RETRY_FIRST: Duration = Duration::from_millis(500);
/// Pauses between connection attempts.
const FIRST_PAUSE: Duration = Duration::from_millis(200);
const LAST_PAUSE: Duration = Duration::from_secs(5);
/// How long connecting to the broker, or closing a connection, may take.
const BROKER_WAIT: Duration = Duration::from_secs(10);
/// How often a session checks that its connection is still open.
const CONNECTION_CHECK: Duration = Duration::from_millis(250);

/// Why a connection to the broker ended.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("broker: {0}")]
    Amqp(#[from] lapin::Error),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("broker refused a message: {0}")]
    Refused(String),
    #[error("broker connection: {0}")]
    Lost(String),
}

/// What the bridge has done, for `GET /bridge`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BridgeStatus {
    /// The broker's URL, without a password.
    pub url: String,
    /// Whether a connection is up.
    pub connected: bool,
    /// Messages in the outbox, not yet confirmed by the broker.
    pub outbox: u64,
    /// Messages the broker confirmed since start.
    pub published: u64,
    /// Hand-offs to this node applied since start.
    pub applied: u64,
    /// Hand-offs to this node that were already applied (duplicates, or a
    /// version superseded or deleted since).
    pub already_here: u64,
    /// Failed attempts to apply a hand-off, each to be retried.
    pub retried: u64,
    /// Messages this node sent to the dead-letter queue (unreadable).
    pub rejected: u64,
    /// Events heard (this node's own included).
    pub events_heard: u64,
    /// Whether the live network index has been filled by a walk of the ring.
    pub index_ready: bool,
    /// The last connection error, if any.
    pub last_error: Option<String>,
}

/// A node's bridge to the broker.
pub struct Bridge {
    me: String,
    /// The brokers to try, in turn (the nodes of a cluster, or one).
    urls: Vec<String>,
    outbox: Arc<Outbox>,
    /// Where hand-offs to this node are applied; none: the bridge only
    /// publishes.
    files: Option<Arc<Files>>,
    /// Something was added to the outbox.
    added: Notify,
    status: Mutex<BridgeStatus>,
    /// Events heard, for `GET /events`.
    heard: broadcast::Sender<Event>,
    /// Pause before a failed hand-off is retried the first time, in ms.
    retry_first_ms: std::sync::atomic::AtomicU64,
}

impl Bridge {
    /// The bridge of the node at `me`, with its outbox at `outbox`, talking
    /// to the broker at `url`; hand-offs to it are applied to `files` (none:
    /// it only publishes). Opens the outbox; [`Bridge::spawn`] connects.
    pub async fn open(
        url: &str,
        outbox: &std::path::Path,
        me: String,
        files: Option<Arc<Files>>,
    ) -> Result<Arc<Self>, OutboxError> {
        let path = outbox.to_path_buf();
        let outbox = Arc::new(
            tokio::task::spawn_blocking(move || Outbox::open(&path))
                .await
                .map_err(|e| OutboxError::from_task(&e))??,
        );
        let urls: Vec<String> = url.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect();
        if urls.is_empty() {
            return Err(OutboxError::new("no broker URL given".into()));
        }
        let status = BridgeStatus { url: redacted(&urls[0]), ..BridgeStatus::default() };
        let bridge = Self {
            me,
            urls,
            outbox,
            files,
            added: Notify::new(),
            status: Mutex::new(status),
            heard: broadcast::channel(1024).0,
            retry_first_ms: (RETRY_FIRST.as_millis() as u64).into(),
        };
        Ok(Arc::new(bridge))
    }

    /// Sets the pause before a failed hand-off is retried the first time
    /// (default [`RETRY_FIRST`]).
    pub fn set_retry_first(&self, pause: Duration) {
        self.retry_first_ms.store(pause.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// What the bridge has done so far.
    pub fn status(&self) -> BridgeStatus {
        let mut status = self.status.lock().expect("status lock").clone();
        status.outbox = self.outbox.waiting();
        status.index_ready = self.files.as_ref().is_some_and(|f| f.index().is_ready());
        status
    }

    fn count(&self, update: impl FnOnce(&mut BridgeStatus)) {
        update(&mut self.status.lock().expect("status lock"));
    }

    /// Writes `messages` to the outbox (durably) for the flusher to publish.
    pub async fn publish(&self, messages: Vec<Message>) -> Result<(), OutboxError> {
        let outbox = self.outbox.clone();
        tokio::task::spawn_blocking(move || outbox.push(&messages)).await.map_err(|e| OutboxError::from_task(&e))??;
        self.added.notify_one();
        Ok(())
    }

    /// The events heard from now on (a listener more than 1024 behind
    /// misses the oldest).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.heard.subscribe()
    }

    /// Keeps the bridge connected until `stop`: publishes the outbox,
    /// applies the hand-offs addressed to this node, and hears events. With
    /// `ring`, the ring's changes and this node's file changes are
    /// announced as events.
    pub fn spawn(
        self: &Arc<Self>,
        ring: Option<broadcast::Receiver<RingChange>>,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        if let (Some(ring), Some(files)) = (ring, &self.files) {
            let (bridge, files, stop) = (self.clone(), files.changes(), stop.clone());
            tokio::spawn(async move { bridge.announce(ring, files, stop).await });
        }
        let bridge = self.clone();
        tokio::spawn(async move { bridge.supervise(stop).await })
    }

    /// Turns what this node witnesses into events in the outbox.
    async fn announce(
        &self,
        mut ring: broadcast::Receiver<RingChange>,
        mut files: broadcast::Receiver<FileChange>,
        stop: CancellationToken,
    ) {
        // A dead node is forgotten again each time a neighbour's list names
        // it: one event per node per window is enough.
        let mut suspected: HashMap<String, tokio::time::Instant> = HashMap::new();
        loop {
            let what = tokio::select! {
                _ = stop.cancelled() => return,
                change = ring.recv() => match change {
                    Ok(change) => What::of_ring(change),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "ring changes missed by the bridge");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                change = files.recv() => match change {
                    Ok(change) => match What::of_files(change) {
                        Some(what) => what,
                        None => continue,
                    },
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "file changes missed by the bridge");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            if let What::NodeSuspected { addr } = &what {
                let now = tokio::time::Instant::now();
                if suspected.get(addr).is_some_and(|at| now.duration_since(*at) < crate::chord::SAME_DEPARTURE_WITHIN) {
                    continue;
                }
                suspected.insert(addr.clone(), now);
            }
            let event = Event { id: new_id(), node: self.me.clone(), at_ns: crate::clock::wall_ns(), what };
            let message = Message {
                id: event.id.clone(),
                exchange: EVENTS_EXCHANGE.into(),
                routing_key: event.what.kind().into(),
                kind: "event".into(),
                body: serde_json::to_value(&event).unwrap_or_default(),
            };
            if let Err(e) = self.publish(vec![message]).await {
                tracing::warn!("could not keep an event: {e}");
            }
        }
    }

    async fn supervise(self: Arc<Self>, stop: CancellationToken) {
        let mut pause = FIRST_PAUSE;
        for attempt in 0usize.. {
            let started = tokio::time::Instant::now();
            // After a failure, the next broker of the list (a cluster's
            // other nodes hold the same quorum queues).
            let url = &self.urls[attempt % self.urls.len()];
            match self.session(url, &stop).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(url = %redacted(url), "RabbitMQ bridge down, reconnecting: {e}");
                    self.count(|s| {
                        s.connected = false;
                        s.last_error = Some(format!("{}: {e}", redacted(url)));
                    });
                }
            }
            if started.elapsed() > LAST_PAUSE * 2 {
                pause = FIRST_PAUSE;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(LAST_PAUSE);
        }
    }

    /// One connection: declares the topology, then publishes and consumes
    /// until it fails (an error) or `stop` (closed cleanly).
    async fn session(self: &Arc<Self>, url: &str, stop: &CancellationToken) -> Result<(), LinkError> {
        let connecting = Connection::connect(url, ConnectionProperties::default());
        let connection = tokio::time::timeout(BROKER_WAIT, connecting)
            .await
            .map_err(|_| LinkError::Lost(format!("no answer to connecting within {BROKER_WAIT:?}")))??;
        // lapin does not always fail what waits on a connection the broker
        // closed (a publish or a confirm may wait forever: amqp-rs/lapin
        // #409), so the session also ends when the connection reports an
        // error or is seen closed.
        let events = connection.events_listener();
        let working = async {
            let publishing = connection.create_channel().await?;
            topology::declare(&publishing).await?;
            publishing.confirm_select(ConfirmSelectOptions::default()).await?;
            let consumer = match &self.files {
                Some(files) => Some((self.consumer(&connection).await?, files.clone())),
                None => None,
            };
            let listener = match &self.files {
                Some(files) => Some((self.listener(&connection).await?, files.clone())),
                None => None,
            };
            self.count(|s| {
                s.connected = true;
                s.url = redacted(url);
            });
            tracing::info!(url = %redacted(url), "RabbitMQ bridge connected");
            let consuming = async {
                match consumer {
                    Some((consumer, files)) => self.consume(consumer, files).await,
                    None => std::future::pending().await,
                }
            };
            let listening = async {
                match listener {
                    Some((listener, files)) => self.listen(listener, files).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                flushed = self.flush(&publishing) => flushed,
                consumed = consuming => consumed,
                listened = listening => listened,
                _ = stop.cancelled() => Ok(()),
            }
        };
        let result = tokio::select! {
            result = working => result,
            gone = gone(&connection, events) => Err(gone),
        };
        self.count(|s| s.connected = false);
        // Bounded for the same reason: a close may wait for a broker gone.
        let _ = tokio::time::timeout(BROKER_WAIT, connection.close(200, "node stopping".into())).await;
        result
    }

    /// Declares this node's hand-off queue and starts consuming it.
    async fn consumer(&self, connection: &Connection) -> Result<Consumer, LinkError> {
        let channel = connection.create_channel().await?;
        let mine = topology::declare_handoff_queue(&channel, &self.me).await?;
        channel.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
        let tag = format!("ringshare {}", self.me);
        let options = BasicConsumeOptions::default();
        Ok(channel.basic_consume(mine.as_str().into(), tag.as_str().into(), options, FieldTable::default()).await?)
    }

    /// A queue of this connection's own receiving every event (a missed
    /// event is healed by the next walk of the ring, so it need not outlive
    /// the connection).
    async fn listener(&self, connection: &Connection) -> Result<Consumer, LinkError> {
        let channel = connection.create_channel().await?;
        let queue = topology::declare_events_queue(&channel).await?;
        let options = BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() };
        let tag = format!("ringshare events {}", self.me);
        Ok(channel.basic_consume(queue.as_str().into(), tag.as_str().into(), options, FieldTable::default()).await?)
    }

    /// Applies every event heard to the network index, and passes it on.
    async fn listen(&self, mut listener: Consumer, files: Arc<Files>) -> Result<(), LinkError> {
        while let Some(delivery) = listener.next().await {
            let delivery = delivery?;
            let event = match Event::read(&delivery.data) {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!("ignoring an unreadable event: {e}");
                    continue;
                }
            };
            if let Some(change) = event.what.to_files() {
                files.index().apply(change);
            }
            if event.what.node_gone() && event.node != self.me {
                // This node's own suspicions already woke it.
                files.repairer().wake();
            }
            self.count(|s| s.events_heard += 1);
            let _ = self.heard.send(event);
        }
        Err(LinkError::Refused("the broker ended the event stream".into()))
    }

    /// Publishes the outbox, oldest first, forever.
    async fn flush(&self, channel: &Channel) -> Result<(), LinkError> {
        let mut declared = std::collections::HashSet::new();
        loop {
            let added = self.added.notified();
            let outbox = self.outbox.clone();
            let batch = tokio::task::spawn_blocking(move || outbox.oldest(BATCH))
                .await
                .map_err(|e| OutboxError::from_task(&e))??;
            if batch.is_empty() {
                // Woken by a new message; the timeout only guards against a
                // wake-up missed in a race.
                let _ = tokio::time::timeout(Duration::from_secs(1), added).await;
                continue;
            }
            let mut done = Vec::with_capacity(batch.len());
            let mut confirms = Vec::with_capacity(batch.len());
            for (seq, message) in batch {
                let message = match message {
                    Ok(message) => message,
                    Err(why) => {
                        tracing::error!(seq, "dropping an outbox entry that cannot be read: {why}");
                        done.push(seq);
                        continue;
                    }
                };
                // A hand-off's queue exists before the first message to it,
                // even if its node never connected yet.
                if message.exchange == HANDOFF_EXCHANGE && declared.insert(message.routing_key.clone()) {
                    topology::declare_handoff_queue(channel, &message.routing_key).await?;
                }
                confirms.push((seq, publish(channel, &message).await?));
            }
            for (seq, confirm) in confirms {
                match confirm.await? {
                    // Returned (no queue bound, as for an event nobody
                    // listens to) still counts as published.
                    Confirmation::Ack(_) => done.push(seq),
                    Confirmation::Nack(_) => return Err(LinkError::Refused(format!("outbox entry {seq} nacked"))),
                    Confirmation::NotRequested => return Err(LinkError::Refused("confirms are off".into())),
                }
            }
            // Counted before the removal: this future may be dropped (the
            // connection failed) while the removal, which cannot be
            // cancelled, runs on, and what the broker confirmed is published
            // either way (an entry not yet removed is sent again: at least once).
            let published = done.len() as u64;
            self.count(|s| s.published += published);
            let outbox = self.outbox.clone();
            tokio::task::spawn_blocking(move || outbox.remove(&done))
                .await
                .map_err(|e| OutboxError::from_task(&e))??;
        }
    }

    /// Applies the hand-offs delivered to this node, a few at once; ends
    /// with an error when the delivery stream does (the connection is gone).
    async fn consume(self: &Arc<Self>, mut consumer: Consumer, files: Arc<Files>) -> Result<(), LinkError> {
        // Dropped with the session: a hand-off being applied is abandoned
        // unacked, and the broker delivers it again.
        let mut applying = JoinSet::new();
        loop {
            tokio::select! {
                delivery = consumer.next() => match delivery {
                    Some(delivery) => {
                        let (bridge, files) = (self.clone(), files.clone());
                        let delivery = delivery?;
                        applying.spawn(async move { bridge.apply(&files, delivery).await });
                    }
                    None => return Err(LinkError::Refused("the broker ended the consumer".into())),
                },
                Some(_) = applying.join_next() => {}
            }
        }
    }

    /// Applies one hand-off and settles its delivery.
    async fn apply(&self, files: &Files, delivery: Delivery) {
        let (name, hint) = match HandOff::read(&delivery.data) {
            Ok(parsed) => parsed,
            Err(why) => {
                tracing::warn!(id = ?delivery.properties.message_id(), "hand-off dead-lettered: {why}");
                let _ = delivery.acker.reject(BasicRejectOptions { requeue: false }).await;
                self.count(|s| s.rejected += 1);
                return;
            }
        };
        match files.take_hand_off(&name, &hint).await {
            Ok(taken) => {
                if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
                    tracing::warn!(file = %name, "could not ack a hand-off (it will come again): {e}");
                }
                self.count(|s| match taken {
                    Taken::Applied => s.applied += 1,
                    Taken::AlreadyHere => s.already_here += 1,
                });
                tracing::info!(file = %name, version = hint.version_ns, ?taken, "hand-off taken");
            }
            Err(e) => {
                let count = delivery_count(&delivery);
                tracing::warn!(file = %name, delivery = count, "hand-off failed, retrying later: {e}");
                self.count(|s| s.retried += 1);
                let first = Duration::from_millis(self.retry_first_ms.load(std::sync::atomic::Ordering::Relaxed));
                tokio::time::sleep(retry_pause(first, count)).await;
                let _ = delivery.acker.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await;
            }
        }
    }
}

impl Hints for Bridge {
    fn hand_off(&self, holder: &str, hint: HandOff) -> Fut<'_, ()> {
        let holder = holder.to_owned();
        Box::pin(async move {
            let body = serde_json::to_value(&hint).map_err(|e| FileError::Store(e.to_string()))?;
            let message = Message {
                id: new_id(),
                exchange: HANDOFF_EXCHANGE.into(),
                routing_key: holder,
                kind: "hand-off".into(),
                body,
            };
            self.publish(vec![message]).await.map_err(|e| FileError::Store(e.to_string()))
        })
    }
}

impl OutboxError {
    fn from_task(e: &tokio::task::JoinError) -> Self {
        OutboxError::new(format!("outbox task: {e}"))
    }
}

/// Publishes one message: persistent, with its id and kind.
/// Ends when `connection` is lost: an error reported by lapin, or a state
/// other than connected seen by a check every [`CONNECTION_CHECK`].
async fn gone(connection: &Connection, events: impl futures_util::Stream<Item = lapin::Event>) -> LinkError {
    let mut events = std::pin::pin!(events);
    let mut check = tokio::time::interval(CONNECTION_CHECK);
    loop {
        tokio::select! {
            Some(event) = events.next() => {
                if let lapin::Event::Error(error) = event {
                    return LinkError::Amqp(error);
                }
            }
            _ = check.tick() => {
                if !connection.status().connected() {
                    return LinkError::Lost("no longer open".into());
                }
            }
        }
    }
}

async fn publish(channel: &Channel, message: &Message) -> Result<PublisherConfirm, LinkError> {
    let payload = serde_json::to_vec(&message.body).map_err(|e| LinkError::Refused(e.to_string()))?;
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(message.id.as_str().into())
        .with_type(message.kind.as_str().into());
    let exchange = message.exchange.as_str().into();
    let key = message.routing_key.as_str().into();
    Ok(channel.basic_publish(exchange, key, BasicPublishOptions::default(), &payload, properties).await?)
}

/// How many times the broker delivered this message before (quorum queues
/// count it in `x-delivery-count`).
fn delivery_count(delivery: &Delivery) -> u32 {
    let headers = delivery.properties.headers().as_ref();
    match headers.and_then(|h| h.inner().get("x-delivery-count")) {
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
        Some(AMQPValue::LongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
        _ => 0,
    }
}

/// Pause before a failed hand-off goes back to the queue: `first`,
/// doubling with each delivery, at most 30 s.
fn retry_pause(first: Duration, deliveries: u32) -> Duration {
    first.saturating_mul(1 << deliveries.min(16)).min(Duration::from_secs(30))
}

/// A fresh message id.
pub fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// `url` without its password.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user = url[scheme + 3..at].split(':').next().unwrap_or("");
            format!("{}{user}:…{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(redacted("amqp://guest:secret@127.0.0.1:5672/%2f"), "amqp://guest:…@127.0.0.1:5672/%2f");
        assert_eq!(redacted("amqp://127.0.0.1:5672/%2f"), "amqp://127.0.0.1:5672/%2f");
    }

    #[test]
    fn retries_back_off_up_to_a_cap() {
        let first = Duration::from_millis(500);
        assert_eq!(retry_pause(first, 0), first);
        assert_eq!(retry_pause(first, 1), Duration::from_secs(1));
        assert_eq!(retry_pause(first, 40), Duration::from_secs(30));
        assert_ne!(new_id(), new_id());
    }
}
