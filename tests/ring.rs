//! The Chord ring over real gRPC on loopback: rings of several sizes
//! converge, concurrent joins converge, lookups agree with a sorted-list
//! oracle, a quarter of the ring crashing is repaired, graceful leaves keep
//! the ring whole, and malformed RPCs are refused. Every wait polls the
//! nodes' own state until a bounded deadline.

use std::time::Duration;

use ringshare::chord::Id;
use ringshare::rpc::pb::{self, chord_client::ChordClient};
use ringshare_tests::{NodeSetup, TestNode, client, eventually, ring_view, wait_converged};
use serde_json::Value;

fn ring_member() -> NodeSetup {
    NodeSetup { plugins: Vec::new(), ..NodeSetup::default() }
}

async fn start_ring(n: usize) -> Vec<TestNode> {
    ringshare_tests::start_ring_with(n, ring_member).await
}

/// From every node, lookups of `names` return the oracle's node, in at
/// most about 2·log2 N hops once the fingers are fixed (Chord's bound).
/// Both are waited for (bounded): on a busy machine a node may suspect a
/// live neighbour for a moment after the ring converged, and route around
/// it until it answers again.
async fn assert_lookups_agree(nodes: &[TestNode], names: usize) {
    let bound = (2.0 * (nodes.len() as f64).log2()).ceil().max(1.0) as u64;
    eventually(&format!("lookups agreeing with the oracle in at most {bound} hops"), || async {
        let hops = lookups_agree(nodes, names).await?;
        if hops <= bound { Ok(()) } else { Err(format!("{hops} hops")) }
    })
    .await;
}

/// Checks every lookup against the oracle; answers the most hops one took,
/// or the first lookup that named another node.
async fn lookups_agree(nodes: &[TestNode], names: usize) -> Result<u64, String> {
    let mut most = 0;
    let mut ids: Vec<(Id, &str)> = nodes.iter().map(|n| (Id::hash(&n.addr), n.addr.as_str())).collect();
    ids.sort();
    let http = client();
    for k in 0..names {
        let name = format!("file-{k}.bin");
        let key = Id::hash(&name);
        let want = ids.iter().find(|(id, _)| *id >= key).unwrap_or(&ids[0]).1;
        for node in nodes {
            let answer: Value =
                http.get(node.at(&format!("/lookup/{name}"))).send().await.unwrap().json().await.unwrap();
            if answer["node"]["addr"] != want {
                return Err(format!("lookup of {name} from {} named another node than {want}: {answer}", node.addr));
            }
            most = most.max(answer["hops"].as_u64().unwrap());
        }
    }
    Ok(most)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rings_of_one_two_three_and_eight_converge_and_route() {
    for n in [1, 2, 3, 8] {
        let nodes = start_ring(n).await;
        wait_converged(&nodes).await;
        assert_lookups_agree(&nodes, 12).await;
        let walk: Vec<Value> = client().get(nodes[n - 1].at("/nodes")).send().await.unwrap().json().await.unwrap();
        assert_eq!(walk.len(), n, "{walk:?}");
        assert!(walk.iter().all(|v| v["alive"] == true));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_joins_converge() {
    let first = ring_member().start().await;
    let via = first.addr.clone();
    let mut nodes = vec![first];
    let joiners = (0..15).map(|_| NodeSetup { join: Some(via.clone()), ..ring_member() }.start());
    nodes.extend(futures_util::future::join_all(joiners).await);
    wait_converged(&nodes).await;
    assert_lookups_agree(&nodes, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarter_of_the_ring_crashing_is_repaired() {
    let mut nodes = start_ring(16).await;
    wait_converged(&nodes).await;
    // Crash 4 nodes at once, spread around the ring.
    for index in [13, 9, 5, 1] {
        nodes.remove(index).kill();
    }
    wait_converged(&nodes).await;
    assert_lookups_agree(&nodes, 10).await;
    let walk: Vec<Value> = client().get(nodes[0].at("/nodes")).send().await.unwrap().json().await.unwrap();
    assert_eq!(walk.iter().filter(|v| v["alive"] == true).count(), 12, "{walk:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_leaves_keep_the_ring_whole_at_every_step() {
    let mut nodes = start_ring(8).await;
    wait_converged(&nodes).await;
    for index in [6, 3, 0] {
        let leaver = nodes.remove(index);
        let gone = leaver.addr.clone();
        leaver.stop().await;
        // Right after the leave, before any maintenance had to repair
        // anything: no node names the leaver first, and a walk of the ring
        // from every node meets every remaining node.
        let mut live: Vec<&str> = nodes.iter().map(|n| n.addr.as_str()).collect();
        live.sort_unstable();
        for node in &nodes {
            let view = ring_view(node).await.unwrap();
            assert_ne!(view["successors"][0]["addr"], gone.as_str(), "{view}");
            let walk: Vec<Value> = client().get(node.at("/nodes")).send().await.unwrap().json().await.unwrap();
            let mut alive: Vec<&str> =
                walk.iter().filter(|v| v["alive"] == true).map(|v| v["addr"].as_str().unwrap()).collect();
            alive.sort_unstable();
            assert_eq!(alive, live, "walk from {}", node.addr);
        }
        wait_converged(&nodes).await;
    }
    assert_lookups_agree(&nodes, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_an_unreachable_node_fails_clearly() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = unused.local_addr().unwrap().to_string();
    drop(unused);
    let setup = NodeSetup { join: Some(addr.clone()), join_timeout: Duration::from_millis(500), ..ring_member() };
    let node = setup.start().await;
    let error = node.outcome().await.expect_err("joining nowhere must fail");
    assert!(format!("{error:#}").contains(&addr), "{error:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_something_that_is_not_a_ringshare_node_fails_clearly() {
    // A web server that answers every request with a page.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let page = axum::Router::new().fallback(|| async { "a web page, not a ring" });
    let server = tokio::spawn(async move { axum::serve(listener, page).await });
    let setup = NodeSetup { join: Some(addr.clone()), join_timeout: Duration::from_millis(500), ..ring_member() };
    let error = setup.start().await.outcome().await.expect_err("joining a web server must fail");
    let error = format!("{error:#}");
    assert!(error.contains(&addr) && error.contains("not a ringshare node"), "{error}");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_a_ring_of_another_cluster_fails_clearly() {
    let theirs = NodeSetup::default().start().await; // the shared test cluster's CA
    // Serving before the stranger tries: a node still starting (on a busy
    // machine) leaves the handshake unanswered, which says nothing of
    // certificates.
    wait_converged(std::slice::from_ref(&theirs)).await;
    let other = ringshare_tests::Cluster::new();
    let setup = NodeSetup {
        join: Some(theirs.addr.clone()),
        join_timeout: Duration::from_millis(500),
        tls_dir: Some(other.node("127.0.0.1")),
        ..ring_member()
    };
    let error = setup.start().await.outcome().await.expect_err("joining another cluster must fail");
    let error = format!("{error:#}");
    assert!(error.contains(&theirs.addr) && error.contains("certificate"), "{error}");
    // The ring it tried to join has not heard of it.
    let view = ring_view(&theirs).await.unwrap();
    assert!(view["successors"].as_array().unwrap().iter().all(|s| s["addr"] == theirs.addr.as_str()), "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_ring_messages_are_refused() {
    let nodes = start_ring(2).await;
    wait_converged(&nodes).await;
    let before = ring_view(&nodes[0]).await.unwrap();
    let mut rpc = ChordClient::new(ringshare_tests::Cluster::shared().member_channel(&nodes[0]).await);

    // An id that is not the hash of the address.
    let forged = pb::Node { id: 42, addr: "127.0.0.1:1".into() };
    let status = rpc.notify(forged.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    assert!(status.message().contains("not the hash"), "{status}");
    let status = rpc.notify(pb::Node { id: 0, addr: String::new() }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let status = rpc.leave(pb::LeaveRequest { leaver: None, neighbours: None }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let status = rpc.leave(pb::LeaveRequest { leaver: Some(forged), neighbours: None }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    // Nothing changed.
    let after = ring_view(&nodes[0]).await.unwrap();
    assert_eq!(before["successors"], after["successors"]);
    assert_eq!(before["predecessor"], after["predecessor"]);
    wait_converged(&nodes).await;

    // Bad names on the REST side get a 400.
    let bad = client().get(nodes[0].at("/lookup/%00")).send().await.unwrap();
    assert_eq!(bad.status(), reqwest::StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_node_restarted_at_once_rejoins_every_time() {
    let mut nodes = start_ring(4).await;
    wait_converged(&nodes).await;
    for round in 0..4 {
        // Crashed and started again at once, as a supervisor would, before
        // the others noticed: same address (so same id), same store.
        let victim = nodes.remove(1 + round % 3);
        let addr = victim.addr.clone();
        let dir = victim.crash();
        let via = nodes[0].addr.clone();
        let back = NodeSetup { join: Some(via), listen: Some(addr.clone()), ..ring_member() }.start_in(dir).await;
        eventually("the restarted node never served", || async {
            ring_view(&back).await.map(drop).ok_or_else(|| "no answer".to_string())
        })
        .await;
        let ring = ring_view(&back).await.unwrap();
        assert_eq!(ring["addr"], addr.as_str(), "round {round}");
        nodes.push(back);
        wait_converged(&nodes).await;
        assert_lookups_agree(&nodes, 6).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_waiting_to_join_does_not_pass_its_store_off_as_the_network() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = unused.local_addr().unwrap().to_string();
    drop(unused);
    // A node with a file left in its store from before, whose ring is away.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data/store/files")).unwrap();
    std::fs::write(dir.path().join("data/store/files/old.txt"), b"maybe deleted since").unwrap();
    let setup = NodeSetup { join: Some(nowhere), join_timeout: Duration::from_secs(30), ..NodeSetup::default() };
    let node = setup.start_in(dir).await;
    let http = client();
    eventually("the node never answered", || async {
        ring_view(&node).await.map(drop).ok_or_else(|| "no answer".to_string())
    })
    .await;
    assert_eq!(ring_view(&node).await.unwrap()["joined"], false);
    for (method, path) in [
        (reqwest::Method::GET, "/files/old.txt"),
        (reqwest::Method::PUT, "/files/new.txt"),
        (reqwest::Method::DELETE, "/files/old.txt"),
        (reqwest::Method::GET, "/lookup/old.txt"),
    ] {
        let response = http.request(method.clone(), node.at(path)).body("x").send().await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE, "{method} {path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "ring-unavailable", "{method} {path}: {body}");
    }
    let plugins = http.get(node.at("/plugins")).send().await.unwrap();
    assert_eq!(plugins.status(), reqwest::StatusCode::OK);
    assert!(!node.data().join("files/new.txt").exists());
}
