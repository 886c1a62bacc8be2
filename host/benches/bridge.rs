//! RabbitMQ bridge throughput (not a test), against the local broker
//! (`scripts/broker.sh` starts it; `make bench` runs that first), each
//! measurement in a fresh vhost, in the same run:
//!
//! - baseline: lapin publishing persistent messages straight to a quorum
//!   queue with publisher confirms, 256 in flight (what the broker takes);
//! - events one by one: a node's path for each event or hand-off, one
//!   durable outbox commit per message, then published with confirms;
//! - outbox flush: messages written while the broker is down, sent once it
//!   is up (the rate a node catches up at).
//!
//! Run: `cargo bench -p ringshare --bench bridge`

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

use ringshare::mom::{Bridge, HANDOFF_EXCHANGE, Message};

const DIRECT: usize = 20_000;
const ONE_BY_ONE: usize = 2_000;
const FLUSHED: usize = 20_000;

fn rabbitmqctl(args: &[&str]) {
    let status = Command::new("rabbitmqctl").args(args).output().expect("rabbitmqctl");
    assert!(status.status.success(), "rabbitmqctl {args:?}: is the broker up (scripts/broker.sh)?");
}

struct Vhost(String);

impl Vhost {
    fn named() -> Self {
        Self(format!("ringshare-bench-{:08x}", rand::random::<u32>()))
    }
    fn create(&self) {
        rabbitmqctl(&["add_vhost", &self.0]);
        rabbitmqctl(&["set_permissions", "-p", &self.0, "guest", ".*", ".*", ".*"]);
    }
    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.0)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").args(["delete_vhost", &self.0]).output();
    }
}

fn message(i: usize) -> Message {
    Message {
        id: format!("m{i}"),
        exchange: HANDOFF_EXCHANGE.into(),
        routing_key: "127.0.0.1:9".into(),
        kind: "hand-off".into(),
        body: serde_json::json!({ "name": format!("file-{i}.bin"), "version_ns": i, "change": { "kind": "deleted" } }),
    }
}

/// Messages per second lapin publishes with confirms, 256 in flight.
async fn direct() -> f64 {
    let vhost = Vhost::named();
    vhost.create();
    let connection = Connection::connect(&vhost.url(), ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum")));
    let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare("direct".into(), options, args).await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let payload = serde_json::to_vec(&message(0).body).unwrap();
    let started = Instant::now();
    for batch in 0..DIRECT / 256 + 1 {
        let mut confirms = Vec::new();
        for _ in 0..256.min(DIRECT - (batch * 256).min(DIRECT)) {
            let props = BasicProperties::default().with_delivery_mode(2);
            let confirm = channel
                .basic_publish("".into(), "direct".into(), BasicPublishOptions::default(), &payload, props)
                .await
                .unwrap();
            confirms.push(confirm);
        }
        for confirm in confirms {
            assert!(confirm.await.unwrap().is_ack());
        }
    }
    let rate = DIRECT as f64 / started.elapsed().as_secs_f64();
    connection.close(200, "done".into()).await.unwrap();
    rate
}

/// Waits until `bridge`'s outbox is empty; panics after `limit`.
async fn drained(bridge: &Bridge, limit: Duration) {
    let deadline = Instant::now() + limit;
    while bridge.status().outbox > 0 {
        assert!(Instant::now() < deadline, "the outbox did not empty: {:?}", bridge.status());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Messages per second through a bridge, each written to the outbox alone.
async fn one_by_one() -> f64 {
    let vhost = Vhost::named();
    vhost.create();
    let dir = tempfile::tempdir().unwrap();
    let bridge = Bridge::open(&vhost.url(), &dir.path().join("outbox.redb"), "bench".into(), None).await.unwrap();
    let stop = CancellationToken::new();
    let running = bridge.spawn(None, stop.clone());
    while !bridge.status().connected {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    for i in 0..ONE_BY_ONE {
        bridge.publish(vec![message(i)]).await.unwrap();
    }
    drained(&bridge, Duration::from_secs(120)).await;
    let rate = ONE_BY_ONE as f64 / started.elapsed().as_secs_f64();
    stop.cancel();
    running.await.unwrap();
    rate
}

/// Messages per second a bridge sends from a full outbox once the broker is
/// up, and how long writing them into the outbox took.
async fn flush() -> (f64, f64) {
    let vhost = Vhost::named();
    let dir = tempfile::tempdir().unwrap();
    let bridge: Arc<Bridge> =
        Bridge::open(&vhost.url(), &dir.path().join("outbox.redb"), "bench".into(), None).await.unwrap();
    let stop = CancellationToken::new();
    let running = bridge.spawn(None, stop.clone());
    let written = Instant::now();
    for batch in 0..FLUSHED / 1000 {
        bridge.publish((batch * 1000..(batch + 1) * 1000).map(message).collect()).await.unwrap();
    }
    let write_rate = FLUSHED as f64 / written.elapsed().as_secs_f64();
    vhost.create();
    // The bridge retries every few seconds; time from its connection on.
    while !bridge.status().connected {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let started = Instant::now();
    drained(&bridge, Duration::from_secs(120)).await;
    let rate = FLUSHED as f64 / started.elapsed().as_secs_f64();
    stop.cancel();
    running.await.unwrap();
    (rate, write_rate)
}

#[tokio::main]
async fn main() {
    let direct = direct().await;
    let one = one_by_one().await;
    let (flushed, written) = flush().await;
    println!("RabbitMQ bridge, persistent messages with publisher confirms, quorum queues, one broker on loopback");
    println!("| path | messages/s | / lapin direct |");
    println!("|---|---|---|");
    println!("| lapin direct, 256 in flight ({DIRECT} messages) | {direct:.0} | 1.00 |");
    println!("| node path, one durable outbox commit per message ({ONE_BY_ONE}) | {one:.0} | {:.2} |", one / direct);
    println!("| outbox flush after an outage ({FLUSHED} waiting) | {flushed:.0} | {:.2} |", flushed / direct);
    println!("| outbox writes while the broker is down (batches of 1000) | {written:.0} | {:.2} |", written / direct);
}
