//! The RabbitMQ bridge against a real broker (each test in its own vhost):
//! hinted hand-offs reach a holder that missed a write, poison messages are
//! dead-lettered, and a node whose broker is down keeps what it must send.

use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use reqwest::StatusCode;
use serde_json::Value;

use ringshare::mom::{DEAD, DELIVERY_LIMIT, HANDOFF_EXCHANGE, handoff_queue};
use ringshare_tests::{
    NodeSetup, TestNode, Vhost, blake3_hex, client, deletion_now, eventually, pattern, placement, wait_converged,
};

/// `GET /bridge` of `node`.
async fn bridge(node: &TestNode) -> Value {
    client().get(node.at("/bridge")).send().await.unwrap().json().await.unwrap()
}

/// Waits until `node`'s bridge counter `field` reaches `at_least`.
async fn wait_count(node: &TestNode, field: &str, at_least: u64) {
    eventually(&format!("{field} on {}", node.addr), || async {
        let status = bridge(node).await;
        if status[field].as_u64().unwrap_or(0) >= at_least { Ok(()) } else { Err(status.to_string()) }
    })
    .await;
}

/// Waits until each queue in `want` holds that many messages (the broker's
/// statistics lag by a few seconds).
async fn wait_queues(vhost: &Vhost, want: &[(&str, u64)]) {
    eventually("queue counts", || async {
        let counts = vhost.messages();
        if want.iter().all(|(queue, n)| counts.get(*queue) == Some(n)) { Ok(()) } else { Err(format!("{counts:?}")) }
    })
    .await;
}

/// Waits until `node`'s bridge is connected to the broker.
async fn wait_connected(node: &TestNode) {
    eventually("bridge connected", || async {
        if bridge(node).await["connected"] == true { Ok(()) } else { Err("not yet".into()) }
    })
    .await;
}

/// Nodes keeping hand-offs through `vhost`, with no repair pass, periodic
/// or woken by a departure (so that only a hand-off can bring a missed copy).
fn through(vhost: &Vhost) -> NodeSetup {
    NodeSetup {
        amqp: Some(vhost.url()),
        repair_every: Duration::from_secs(3600),
        repair_on_departure: false,
        ..NodeSetup::default()
    }
}

/// A node that cannot store anything (no upload plugin).
fn without_upload(setup: NodeSetup) -> NodeSetup {
    NodeSetup { plugins: vec!["default/index".into(), "default/download".into()], ..setup }
}

/// A name whose responsible node is `nodes[0]` and whose holders include
/// `holder`.
async fn name_held_by(nodes: &[TestNode], holder: &str, prefix: &str) -> String {
    // (A node's share of the ring can be small: try names until one fits.)
    for i in 0..5000 {
        let name = format!("{prefix}-{i}.bin");
        let holders = placement(&nodes[0], &name).await;
        if holders[0] == nodes[0].addr && holders.iter().any(|h| h == holder) {
            return name;
        }
    }
    panic!("no name placed on {} and {holder}", nodes[0].addr);
}

/// Three nodes keeping hand-offs through `vhost`, the third unable to store
/// anything, all connected to the broker.
async fn ring_with_one_unable(vhost: &Vhost) -> Vec<TestNode> {
    let first = through(vhost).start().await;
    let join = Some(first.addr.clone());
    let second = NodeSetup { join: join.clone(), ..through(vhost) }.start().await;
    let third = without_upload(NodeSetup { join, ..through(vhost) }).start().await;
    let nodes = vec![first, second, third];
    wait_converged(&nodes).await;
    for node in &nodes {
        wait_connected(node).await;
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_missed_a_copy_gets_it_by_hand_off() {
    let vhost = Vhost::new();
    let mut nodes = ring_with_one_unable(&vhost).await;
    let join = Some(nodes[0].addr.clone());
    let missing = nodes[2].addr.clone();
    let name = name_held_by(&nodes, &missing, "missed").await;

    // The third holder cannot take its copy: the upload is acknowledged by
    // the other two, and a hand-off is kept for it.
    let data = pattern(31, 700_000);
    let put = client().put(nodes[0].at(&format!("/files/{name}"))).body(data.clone()).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    let reply: Value = put.json().await.unwrap();
    let acked: Vec<&str> = reply["holders"].as_array().unwrap().iter().map(|h| h.as_str().unwrap()).collect();
    assert!(!acked.contains(&missing.as_str()), "{reply}");
    wait_count(&nodes[0], "published", 1).await;
    // It keeps failing there (no upload plugin): retried, not lost.
    wait_count(&nodes[2], "retried", 1).await;
    assert!(!nodes[2].data().join("files").join(&name).exists());

    // Back with its upload plugin, at the same address, with the same store.
    let folder = nodes.pop().unwrap().crash();
    let back = NodeSetup { listen: Some(missing.clone()), join, ..through(&vhost) }.start_in(folder).await;
    wait_count(&back, "applied", 1).await;
    let copy = std::fs::read(back.data().join("files").join(&name)).unwrap();
    assert_eq!(blake3_hex(&copy), blake3_hex(&data), "the copy is the version uploaded");
    let served = client().get(back.at(&format!("/files/{name}"))).send().await.unwrap().bytes().await.unwrap();
    assert!(served == data);
    // Acked: its queue is empty, and nothing was dead-lettered.
    let queue = handoff_queue(&missing);
    wait_queues(&vhost, &[(&queue, 0), (DEAD, 0)]).await;
    assert_eq!(bridge(&back).await["rejected"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_file_travels_in_its_hand_off_and_needs_no_source() {
    let vhost = Vhost::new();
    let mut nodes = ring_with_one_unable(&vhost).await;
    let missing = nodes[2].addr.clone();
    let name = name_held_by(&nodes, &missing, "small").await;
    let data = pattern(32, 10_000);
    let put = client().put(nodes[0].at(&format!("/files/{name}"))).body(data.clone()).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    wait_count(&nodes[0], "published", 1).await;
    wait_count(&nodes[2], "retried", 1).await;

    // Every other node is gone before the holder comes back: only the
    // hand-off itself has the bytes.
    let unable = nodes.pop().unwrap();
    for node in nodes {
        let _ = node.crash();
    }
    let folder = unable.crash();
    let back = NodeSetup { listen: Some(missing), ..through(&vhost) }.start_in(folder).await;
    wait_count(&back, "applied", 1).await;
    let copy = std::fs::read(back.data().join("files").join(&name)).unwrap();
    assert_eq!(blake3_hex(&copy), blake3_hex(&data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_and_the_consumer_goes_on() {
    let vhost = Vhost::new();
    let node = through(&vhost).start().await;
    wait_connected(&node).await;
    node_publishes(
        &vhost,
        &node.addr,
        &[b"{not json".as_slice(), br#"{"name":"../x","version_ns":1,"change":{"kind":"deleted"}}"#],
    )
    .await;
    wait_count(&node, "rejected", 2).await;
    // A good one after them is applied: a deletion of a name never stored.
    let good = deletion_now("never.txt");
    node_publishes(&vhost, &node.addr, &[good.as_bytes()]).await;
    wait_count(&node, "applied", 1).await;
    assert!(node.state().join("deleted/never.txt").exists(), "the deletion was recorded");
    wait_queues(&vhost, &[(DEAD, 2), (&handoff_queue(&node.addr), 0)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_off_that_keeps_failing_is_dead_lettered_after_the_delivery_limit() {
    let vhost = Vhost::new();
    // Retried quickly, and it cannot succeed: no upload plugin, and its only
    // source does not exist.
    let node =
        without_upload(NodeSetup { handoff_retry_first: Duration::from_millis(5), ..through(&vhost) }).start().await;
    wait_connected(&node).await;
    let doomed = format!(
        r#"{{"name":"doomed.bin","version_ns":9,"change":{{"kind":"stored","blake3":"{}","size":5000000,"sources":["127.0.0.1:9"]}}}}"#,
        "ab".repeat(32)
    );
    node_publishes(&vhost, &node.addr, &[doomed.as_bytes()]).await;
    wait_queues(&vhost, &[(DEAD, 1), (&handoff_queue(&node.addr), 0)]).await;
    let status = bridge(&node).await;
    let retried = status["retried"].as_u64().unwrap();
    assert!(retried >= DELIVERY_LIMIT as u64, "tried {retried} times: {status}");
    assert_eq!(status["rejected"], 0, "{status}");
}

/// Publishes raw `payloads` to the hand-off queue of the node at `addr`.
async fn node_publishes(vhost: &Vhost, addr: &str, payloads: &[&[u8]]) {
    let connection = Connection::connect(&vhost.url(), ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    for payload in payloads {
        let properties = BasicProperties::default().with_delivery_mode(2);
        channel
            .basic_publish(HANDOFF_EXCHANGE.into(), addr.into(), BasicPublishOptions::default(), payload, properties)
            .await
            .unwrap()
            .await
            .unwrap();
    }
    connection.close(200, "done".into()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_broker_is_down_serves_and_sends_its_outbox_once_it_is_up() {
    // The vhost does not exist yet: to the nodes, the broker is down.
    let mut vhost = Vhost::reserved();
    let setup = || NodeSetup { replicas: 2, ..through(&vhost) };
    let first = setup().start().await;
    let second = without_upload(NodeSetup { join: Some(first.addr.clone()), ..setup() }).start().await;
    let nodes = vec![first, second];
    wait_converged(&nodes).await;
    let name = name_held_by(&nodes, &nodes[1].addr, "waiting").await;

    let put = client().put(nodes[0].at(&format!("/files/{name}"))).body("kept for later").send().await.unwrap();
    assert_eq!(put.status(), StatusCode::CREATED, "the node serves while its broker is down");
    // The hand-off, and the events of the join and the upload.
    eventually("the hand-off waits in the outbox", || async {
        let status = bridge(&nodes[0]).await;
        if status["outbox"].as_u64() >= Some(2) && status["connected"] == false {
            Ok(())
        } else {
            Err(status.to_string())
        }
    })
    .await;
    let waiting = bridge(&nodes[0]).await["outbox"].as_u64().unwrap();

    vhost.create();
    wait_count(&nodes[0], "published", waiting).await;
    eventually("the outbox emptied", || async {
        let status = bridge(&nodes[0]).await;
        if status["outbox"] == 0 { Ok(()) } else { Err(status.to_string()) }
    })
    .await;
    // The holder receives it (and retries it: it still cannot store).
    wait_count(&nodes[1], "retried", 1).await;
    // (The broker's queue statistics lag by a few seconds.)
    let queue = handoff_queue(&nodes[1].addr);
    wait_queues(&vhost, &[(&queue, 1)]).await;
}

/// `POST /upload/` of `data` as `name`, with `node_address` if given.
async fn legacy_upload(via: &TestNode, name: &str, data: &[u8], node_address: Option<&str>) -> reqwest::Response {
    let mut form = reqwest::multipart::Form::new();
    if let Some(addr) = node_address {
        form = form.text("node_address", addr.to_owned());
    }
    let part = reqwest::multipart::Part::bytes(data.to_vec()).file_name(name.to_owned());
    client().post(via.at("/upload/")).multipart(form.part("file", part)).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_upload_for_a_stopped_node_is_queued_and_delivered_when_it_is_back() {
    let vhost = Vhost::new();
    let setup = || NodeSetup { replicas: 2, ..through(&vhost) };
    let first = setup().start().await;
    let join = Some(first.addr.clone());
    let mut nodes = vec![first];
    for _ in 0..3 {
        nodes.push(NodeSetup { join: join.clone(), ..setup() }.start().await);
    }
    wait_converged(&nodes).await;
    // Names the last node holds, and one it does not, while it is up.
    let away = nodes[3].addr.clone();
    let mut its = None;
    let mut not_its = None;
    for i in 0..200 {
        let name = format!("legacy-{i}.txt");
        let holders = placement(&nodes[0], &name).await;
        match holders.contains(&away) {
            true if its.is_none() => its = Some(name),
            false if not_its.is_none() => not_its = Some(name),
            _ => {}
        }
    }
    let (its, not_its) = (its.unwrap(), not_its.unwrap());

    // While it is up: stored, as the original system answered.
    let up = legacy_upload(&nodes[0], "while-up.txt", b"up", Some(&away)).await;
    assert_eq!(up.status(), StatusCode::OK);
    let up: Value = up.json().await.unwrap();
    assert_eq!(up["delivery"], "stored", "{up}");
    assert!(up["message"].as_str().unwrap().contains("uploaded successfully"), "{up}");

    let folder = nodes.pop().unwrap().stop().await;
    wait_converged(&nodes).await;

    // A bad address is refused before anything is stored.
    let bad = legacy_upload(&nodes[0], "bad.txt", b"x", Some("not an address")).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(client().get(nodes[0].at("/files/bad.txt")).send().await.unwrap().status(), StatusCode::NOT_FOUND);

    let data = pattern(41, 300_000);
    let queued = legacy_upload(&nodes[1], &its, &data, Some(&away)).await;
    assert_eq!(queued.status(), StatusCode::OK);
    let queued: Value = queued.json().await.unwrap();
    assert_eq!(queued["delivery"], "queued", "{queued}");
    assert!(queued["message"].as_str().unwrap().contains(&away), "{queued}");
    let elsewhere: Value = legacy_upload(&nodes[1], &not_its, b"not for it", Some(&away)).await.json().await.unwrap();
    assert_eq!(elsewhere["delivery"], "stored", "{elsewhere}");
    // Served by the ring meanwhile.
    let body = client().get(nodes[2].at(&format!("/files/{its}"))).send().await.unwrap().bytes().await.unwrap();
    assert!(body == data);

    // Back: it takes the hand-off (no repair pass runs in this test).
    let back = NodeSetup { listen: Some(away.clone()), join, ..setup() }.start_in(folder).await;
    wait_count(&back, "applied", 1).await;
    let copy = std::fs::read(back.data().join("files").join(&its)).unwrap();
    assert_eq!(blake3_hex(&copy), blake3_hex(&data));
    assert!(!back.data().join("files").join(&not_its).exists());
}

/// Names and hashes of `GET /files?scope=network` on `node`, from its live
/// index or (`walk`) from every node.
async fn network(node: &TestNode, walk: bool) -> Vec<(String, String)> {
    let url = node.at(if walk { "/files?scope=network&walk=true" } else { "/files?scope=network" });
    let listing: Vec<Value> = client().get(url).send().await.unwrap().json().await.unwrap();
    listing.iter().map(|e| (e["name"].as_str().unwrap().to_owned(), e["blake3"].as_str().unwrap().to_owned())).collect()
}

/// Waits until every node's live listing is `expected` and agrees with a
/// walk of the ring.
async fn listings_agree(nodes: &[TestNode], expected: &[(String, String)]) {
    for node in nodes {
        eventually(&format!("the live listing of {}", node.addr), || async {
            let (live, walked) = (network(node, false).await, network(node, true).await);
            if live == expected && walked == expected {
                Ok(())
            } else {
                Err(format!("live {live:?}, walked {walked:?}"))
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_network_listing_follows_uploads_deletes_joins_leaves_and_kills() {
    let vhost = Vhost::new();
    // No periodic rebuild during the test: only the first walk and events.
    let setup = || NodeSetup { index_refresh_every: Duration::from_secs(3600), ..through(&vhost) };
    let first = setup().start().await;
    let join = Some(first.addr.clone());
    let mut nodes = vec![first];
    for _ in 0..3 {
        nodes.push(NodeSetup { join: join.clone(), ..setup() }.start().await);
    }
    wait_converged(&nodes).await;
    for node in &nodes {
        eventually("index ready", || async {
            let status = bridge(node).await;
            if status["index_ready"] == true && status["connected"] == true { Ok(()) } else { Err(status.to_string()) }
        })
        .await;
    }

    // Events stream to HTTP clients too.
    let mut stream = client().get(nodes[3].at("/events")).send().await.unwrap();
    assert_eq!(stream.headers()["content-type"], "text/event-stream");

    let mut expected: Vec<(String, String)> = Vec::new();
    for i in 0..8 {
        let name = format!("live-{i}.bin");
        let data = pattern(50 + i as u64, 1000 + i * 100);
        let put = client().put(nodes[i % 4].at(&format!("/files/{name}"))).body(data.clone()).send().await.unwrap();
        assert_eq!(put.status(), StatusCode::CREATED);
        expected.push((name, blake3_hex(&data)));
    }
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !seen.contains("event: file.stored") || !seen.contains("live-7.bin") {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk()).await.expect("events in time").unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(stream);
    for gone in ["live-2.bin", "live-5.bin"] {
        let deleted = client().delete(nodes[1].at(&format!("/files/{gone}"))).send().await.unwrap();
        assert_eq!(deleted.status(), StatusCode::OK);
        expected.retain(|(name, _)| name != gone);
    }
    expected.sort();
    listings_agree(&nodes, &expected).await;

    // A node joins (its first walk fills its index), one leaves, one is killed.
    nodes.push(NodeSetup { join: join.clone(), ..setup() }.start().await);
    wait_converged(&nodes).await;
    let _left = nodes.remove(2).stop().await;
    let _killed = nodes.remove(2).crash();
    wait_converged(&nodes).await;
    listings_agree(&nodes, &expected).await;
    // Search answers from the same index.
    let found: Vec<Value> = client().get(nodes[0].at("/search?q=live-1")).send().await.unwrap().json().await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
}
