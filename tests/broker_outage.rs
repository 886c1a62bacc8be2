//! RabbitMQ stopped and started again while a bridge publishes 10,000
//! hand-offs and events: every one reaches the broker at least once (none
//! lost, counted by id), and the outbox empties. Its own test binary: it stops the
//! broker every other test uses, and test binaries run one at a time.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

use ringshare::mom::{Bridge, EVENTS_EXCHANGE, HANDOFF_EXCHANGE, Message, handoff_queue};
use ringshare_tests::{NodeSetup, TestNode, Vhost, client, deletion_now, eventually};

const TOTAL: usize = 10_000;
const BATCH: usize = 100;
/// The (absent) node the hand-offs are for.
const HOLDER: &str = "127.0.0.1:9";

/// Starts the broker again when the test ends, whatever happened.
struct BrokerBack;

impl Drop for BrokerBack {
    fn drop(&mut self) {
        start_broker();
    }
}

fn start_broker() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/broker.sh");
    let status = Command::new("bash").arg(script).status().expect("scripts/broker.sh");
    assert!(status.success(), "the broker did not start again");
}

/// Message `i`: a hand-off when even, an event when odd.
fn message(i: usize) -> Message {
    let name = format!("f{i}");
    if i % 2 == 1 {
        let event = serde_json::json!({ "id": format!("m{i}"), "node": "publisher", "at_ns": i,
            "kind": "file.deleted", "name": name, "deleted_ns": i });
        return Message {
            id: format!("m{i}"),
            exchange: EVENTS_EXCHANGE.into(),
            routing_key: "file.deleted".into(),
            kind: "event".into(),
            body: event,
        };
    }
    Message {
        id: format!("m{i}"),
        exchange: HANDOFF_EXCHANGE.into(),
        routing_key: HOLDER.into(),
        kind: "hand-off".into(),
        body: serde_json::json!({ "name": name, "version_ns": i, "change": { "kind": "deleted" } }),
    }
}

/// A durable queue of the test's own that keeps every event.
const EVENTS_KEPT: &str = "test-events";

/// Waits (bounded) until `node`'s `GET /bridge` satisfies `check`.
async fn wait_for(node: &TestNode, what: &str, check: impl Fn(&serde_json::Value) -> bool) {
    eventually(what, || async {
        let status: serde_json::Value = client().get(node.at("/bridge")).send().await.unwrap().json().await.unwrap();
        if check(&status) { Ok(()) } else { Err(status.to_string()) }
    })
    .await;
}

/// Polls `done` every 50 ms for up to `limit`.
async fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_hand_offs_and_events_survive_a_broker_restart() {
    let vhost = Vhost::new();
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox.redb");
    let bridge = Bridge::open(&vhost.url(), &outbox, "publisher".into(), None).await.unwrap();
    let stop = CancellationToken::new();
    let running = bridge.spawn(None, stop.clone());
    until("connected", Duration::from_secs(30), || bridge.status().connected).await;
    // (The bridge declared the exchanges; events are kept here to be counted.)
    let connection = Connection::connect(&vhost.url(), ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut quorum = FieldTable::default();
    quorum.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum")));
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(EVENTS_KEPT.into(), durable, quorum).await.unwrap();
    let bind = QueueBindOptions::default();
    channel
        .queue_bind(EVENTS_KEPT.into(), EVENTS_EXCHANGE.into(), "#".into(), bind, FieldTable::default())
        .await
        .unwrap();
    connection.close(200, "declared".into()).await.unwrap();
    // A node consuming its hand-off queue through the same outage.
    let node = NodeSetup { amqp: Some(vhost.url()), ..NodeSetup::default() }.start().await;
    wait_for(&node, "connected", |s| s["connected"] == true).await;
    let back = BrokerBack;

    let written = AtomicBool::new(false);
    let publishing = async {
        for batch in 0..TOTAL / BATCH {
            bridge.publish((batch * BATCH..(batch + 1) * BATCH).map(message).collect()).await.unwrap();
        }
        written.store(true, Ordering::SeqCst);
    };
    let outage = async {
        until("a first thousand confirmed", Duration::from_secs(60), || bridge.status().published >= 1000).await;
        let stopped = tokio::task::spawn_blocking(|| Command::new("rabbitmqctl").arg("stop").status()).await;
        assert!(stopped.unwrap().unwrap().success(), "rabbitmqctl stop");
        until("the bridge saw it go", Duration::from_secs(30), || !bridge.status().connected).await;
        // The broker stays down until every message is in the outbox.
        until("all written", Duration::from_secs(120), || written.load(Ordering::SeqCst)).await;
        let waiting = bridge.status().outbox;
        tokio::task::spawn_blocking(start_broker).await.unwrap();
        waiting
    };
    let ((), waiting_at_restart) = tokio::join!(publishing, outage);
    assert!(waiting_at_restart > 0, "some messages waited for the broker in the outbox");
    until("the outbox emptied", Duration::from_secs(120), || bridge.status().outbox == 0).await;
    let status = bridge.status();
    assert!(status.published >= TOTAL as u64, "{status:?}");
    stop.cancel();
    running.await.unwrap();
    drop(back);

    // Everything confirmed is in the queue: each id at least once.
    let connection = Connection::connect(&vhost.url(), ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let (mut seen, mut received) = (HashSet::new(), 0usize);
    for queue in [handoff_queue(HOLDER), EVENTS_KEPT.to_owned()] {
        for _ in 0..TOTAL * 2 {
            let get = channel.basic_get(queue.as_str().into(), BasicGetOptions::default()).await.unwrap();
            let Some(got) = get else { break };
            let id = got.delivery.properties.message_id().as_ref().expect("message id").to_string();
            // (The node announces its own events too.)
            if id.starts_with('m') {
                received += 1;
                seen.insert(id);
            }
            got.delivery.acker.ack(BasicAckOptions::default()).await.unwrap();
        }
    }
    // The node's consumer came back too: a hand-off sent now is applied.
    wait_for(&node, "reconnected", |s| s["connected"] == true).await;
    let hint = deletion_now("after.txt");
    let props = BasicProperties::default().with_delivery_mode(2);
    let options = BasicPublishOptions::default();
    let confirm =
        channel.basic_publish(HANDOFF_EXCHANGE.into(), node.addr.as_str().into(), options, hint.as_bytes(), props);
    confirm.await.unwrap().await.unwrap();
    wait_for(&node, "the hand-off applied", |s| s["applied"] == 1).await;
    assert!(node.state().join("deleted/after.txt").exists());

    let missing: Vec<usize> = (0..TOTAL).filter(|i| !seen.contains(&format!("m{i}"))).collect();
    assert!(missing.is_empty(), "{} lost, e.g. {:?}", missing.len(), &missing[..missing.len().min(5)]);
    assert_eq!(seen.len(), TOTAL);
    eprintln!("{TOTAL} hand-offs and events, {} received ({} duplicates)", received, received - TOTAL);
    connection.close(200, "done".into()).await.unwrap();
}
