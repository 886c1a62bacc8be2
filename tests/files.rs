//! Files across the ring (real nodes, real plugins, loopback): an upload to
//! any node lands on the responsible node and its successors, downloads work
//! from any node, survive a crashed holder and a holder dying mid-stream.

use futures_util::StreamExt;
use reqwest::StatusCode;
use std::time::Duration;

use ringshare_tests::{
    NodeSetup, TestNode, blake3_hex, client, eventually, metric, metric_sum, pattern, placement, put, start_ring,
    start_ring_with, wait_converged, wait_placed,
};
use serde_json::Value;

fn node_at<'a>(nodes: &'a [TestNode], addr: &str) -> &'a TestNode {
    nodes.iter().find(|n| n.addr == addr).expect("a node of the ring")
}

/// Polls until every node in `addrs` stores `name` with `sha256`.
async fn wait_stored(nodes: &[TestNode], addrs: &[String], name: &str, sha256: &str) {
    eventually(&format!("{name} never reached all of {addrs:?}"), || async {
        let missing: Vec<&String> = addrs
            .iter()
            .filter(|a| {
                std::fs::read(node_at(nodes, a).data().join("files").join(name))
                    .map_or(true, |bytes| blake3_hex(&bytes) != sha256)
            })
            .collect();
        if missing.is_empty() { Ok(()) } else { Err(format!("missing on {missing:?}")) }
    })
    .await
}

/// Uploads `data` as `name` through `nodes[0]` and waits until all its
/// placement holders store it; returns them.
async fn put_placed(nodes: &[TestNode], name: &str, data: &[u8]) -> Vec<String> {
    put(&nodes[0], name, data).await;
    let holders = placement(&nodes[0], name).await;
    wait_stored(nodes, &holders, name, &blake3_hex(data)).await;
    holders
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_through_any_node_are_placed_replicated_and_served_everywhere() {
    let nodes = start_ring(5).await;
    let http = client();
    let sizes = [0usize, 1, 1000, 65_537, 1 << 20, 3 << 20 | 7];
    for (i, size) in sizes.iter().enumerate() {
        let name = format!("spread-{i}.bin");
        let data = pattern(i as u64 + 100, *size);
        let via = &nodes[i % nodes.len()];
        let put = http.put(via.at(&format!("/files/{name}"))).body(data.clone()).send().await.unwrap();
        assert_eq!(put.status(), StatusCode::CREATED, "{name} via {}", via.addr);
        let reply: Value = put.json().await.unwrap();
        assert_eq!(reply["blake3"], blake3_hex(&data));
        let holders = placement(via, &name).await;
        assert_eq!(holders.len(), 3);
        // Acknowledged once every holder's copy is durable (the default
        // write quorum is all k), the responsible node first.
        let acked: Vec<&str> = reply["holders"].as_array().unwrap().iter().map(|h| h.as_str().unwrap()).collect();
        assert_eq!(acked[0], holders[0], "{reply}");
        assert!(acked.len() == 3 && acked.iter().all(|a| holders.iter().any(|h| h == a)), "{reply} vs {holders:?}");
        // Eventually all three hold it, each copy with the version's time;
        // nobody else does.
        wait_stored(&nodes, &holders, &name, &blake3_hex(&data)).await;
        for holder in &holders {
            let modified = std::fs::metadata(node_at(&nodes, holder).data().join("files").join(&name))
                .and_then(|m| m.modified())
                .unwrap();
            let ns = modified.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
            assert_eq!(reply["modified_ns"], ns, "{name} on {holder}");
        }
        for node in nodes.iter().filter(|n| !holders.contains(&n.addr)) {
            assert!(!node.data().join("files").join(&name).exists(), "{name} on non-holder {}", node.addr);
        }
        // Every node serves it, whole and in ranges.
        for node in &nodes {
            let body = http.get(node.at(&format!("/files/{name}"))).send().await.unwrap().bytes().await.unwrap();
            assert_eq!(body.len(), data.len(), "{name} from {}", node.addr);
            assert!(body == data, "{name} from {} differs", node.addr);
        }
        if *size > 10 {
            let far = &nodes[(i + 3) % nodes.len()];
            let part = http.get(far.at(&format!("/files/{name}"))).header("range", "bytes=5-9").send().await.unwrap();
            assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
            assert_eq!(part.bytes().await.unwrap(), data[5..10]);
        }
    }

    // The network listing and search see every file with its holders; a
    // whole listing names no node as missing.
    let answer = http.get(nodes[4].at("/files?scope=network")).send().await.unwrap();
    assert!(answer.headers().get(ringshare::rest::MISSING_NODES).is_none(), "{:?}", answer.headers());
    let listing: Vec<Value> = answer.json().await.unwrap();
    assert_eq!(listing.len(), sizes.len(), "{listing:?}");
    assert!(listing.iter().all(|e| e["holders"].as_array().unwrap().len() == 3), "{listing:?}");
    let found: Vec<Value> = http.get(nodes[1].at("/search?q=spread-1")).send().await.unwrap().json().await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["name"], "spread-1.bin");
    let none: Vec<Value> = http.get(nodes[1].at("/search?q=nothing")).send().await.unwrap().json().await.unwrap();
    assert!(none.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_listing_names_the_nodes_it_left_out() {
    // The third node's index plugin never answers: its listing times out.
    let mut nodes = start_ring(2).await;
    put(&nodes[0], "seen.txt", b"listed all the same").await;
    let stuck = NodeSetup::with_plugins(&["testdata/spin", "default/upload", "default/download"]);
    nodes.push(NodeSetup { join: Some(nodes[0].addr.clone()), ..stuck }.start().await);
    wait_converged(&nodes).await;
    let answer = client().get(nodes[1].at("/files?scope=network&walk=true")).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let missing = answer.headers().get(ringshare::rest::MISSING_NODES).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(missing.as_deref(), Some(nodes[2].addr.as_str()), "the node left out is named");
    let listing: Vec<Value> = answer.json().await.unwrap();
    assert!(listing.iter().any(|e| e["name"] == "seen.txt"), "the others' files are listed: {listing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_hold_across_nodes() {
    let nodes = start_ring(3).await;
    let http = client();
    let put = http.put(nodes[0].at("/files/shared.txt")).body("one").send().await.unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    let again = http.put(nodes[1].at("/files/shared.txt")).body("two").send().await.unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["code"], "already-exists");
    let replaced = http.put(nodes[2].at("/files/shared.txt?overwrite=true")).body("three").send().await.unwrap();
    assert_eq!(replaced.status(), StatusCode::CREATED);
    let holders = placement(&nodes[0], "shared.txt").await;
    wait_stored(&nodes, &holders, "shared.txt", &blake3_hex(b"three")).await;
    for node in &nodes {
        assert_eq!(http.get(node.at("/files/shared.txt")).send().await.unwrap().text().await.unwrap(), "three");
    }
    let missing = http.get(nodes[1].at("/files/nowhere")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_holder_loses_nothing() {
    let mut nodes = start_ring(5).await;
    let http = client();
    let data = pattern(7, 2 << 20);
    let holders = put_placed(&nodes, "survivor.bin", &data).await;

    let responsible = nodes.iter().position(|n| n.addr == holders[0]).unwrap();
    nodes.remove(responsible).kill();
    for node in &nodes {
        let body = http.get(node.at("/files/survivor.bin")).send().await.unwrap().bytes().await.unwrap();
        assert!(body == data, "from {}", node.addr);
    }
}

/// The holders an upload's answer names, responsible node first.
fn holders_of(reply: &Value) -> Vec<String> {
    reply["holders"].as_array().expect("holders").iter().map(|h| h.as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_and_reads_go_where_the_ring_table_says_and_a_lost_node_costs_a_lookup() {
    let mut nodes = start_ring(4).await;
    let http = client();
    let routed = "ringshare_uploads_routed_by_table_total";
    let before = metric(&nodes[0], routed).await;
    let mut answers = Vec::new();
    for i in 0..24 {
        let name = format!("small-{i}");
        let put =
            http.put(nodes[0].at(&format!("/files/{name}"))).body(format!("small body {i}")).send().await.unwrap();
        let status = put.status();
        let reply: Value = put.json().await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{name}: {reply}");
        answers.push((name, holders_of(&reply)));
    }
    assert_eq!(metric(&nodes[0], routed).await - before, 24.0, "each small upload went where the table said");
    for (name, holders) in &answers {
        let placed = placement(&nodes[1], name).await;
        assert_eq!(holders[0], placed[0], "{name}: stored by the node responsible for it");
        let (mut got, mut want) = (holders.clone(), placed);
        got.sort();
        want.sort();
        assert_eq!(got, want, "{name}: its copies on its placement");
    }

    // Reads ask the holders the table names (or none, a copy held under a
    // read lease); what they do not find there (a deletion, a name never
    // written) is asked through a lookup.
    let placed_reads = "ringshare_reads_placed_by_table_total";
    let leased_reads = "ringshare_reads_under_lease_total";
    let without_lookup = || async { metric(&nodes[1], placed_reads).await + metric(&nodes[1], leased_reads).await };
    let before = without_lookup().await;
    for (i, (name, _)) in answers.iter().enumerate() {
        let body = http.get(nodes[1].at(&format!("/files/{name}"))).send().await.unwrap().text().await.unwrap();
        assert_eq!(body, format!("small body {i}"), "{name} through {}", nodes[1].addr);
    }
    assert_eq!(without_lookup().await - before, 24.0, "each read found its holders in the table, or its lease");
    let (deleted, _) = &answers[0];
    let gone = http.delete(nodes[0].at(&format!("/files/{deleted}"))).send().await.unwrap();
    assert!(gone.status().is_success(), "delete: {}", gone.status());
    for missing in [deleted.as_str(), "never-written"] {
        let get = http.get(nodes[1].at(&format!("/files/{missing}"))).send().await.unwrap();
        assert_eq!(get.status(), StatusCode::NOT_FOUND, "{missing}");
    }
    assert_eq!(without_lookup().await - before, 24.0, "a read that found no file counted as placed");

    // The node the table names is killed the moment before the upload: the
    // first try finds it gone, the second looks the placement up.
    // (Any node but the one written through: one node's range may be too
    // small for a thousand names to find it.)
    let mut found = None;
    for i in 0..1_000 {
        let candidate = format!("lost-{i}");
        let responsible = placement(&nodes[0], &candidate).await[0].clone();
        if responsible != nodes[0].addr {
            found = Some((candidate, responsible));
            break;
        }
    }
    let (name, gone) = found.expect("a name another node is responsible for");
    let victim = nodes.iter().position(|n| n.addr == gone).unwrap();
    nodes.remove(victim).kill();
    let put = http.put(nodes[0].at(&format!("/files/{name}"))).body("after a crash").send().await.unwrap();
    let status = put.status();
    let reply: Value = put.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    assert!(!holders_of(&reply).contains(&gone), "stored on the killed node: {reply}");
    for node in &nodes {
        let body = http.get(node.at(&format!("/files/{name}"))).send().await.unwrap().text().await.unwrap();
        assert_eq!(body, "after a crash", "through {}", node.addr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_dying_mid_download_is_replaced_at_the_same_offset() {
    let mut nodes = start_ring(5).await;
    let http = client();
    let data = pattern(11, 48 << 20);
    let holders = put_placed(&nodes, "big.bin", &data).await;

    // Download through a node that holds no copy: it streams from the
    // responsible node first.
    let reader = nodes.iter().position(|n| !holders.contains(&n.addr)).unwrap();
    let response = http.get(nodes[reader].at("/files/big.bin")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = response.bytes_stream();
    let mut hasher = blake3::Hasher::new();
    let mut got = 0usize;
    while got < 1 << 20 {
        let chunk = stream.next().await.unwrap().unwrap();
        got += chunk.len();
        hasher.update(&chunk);
    }
    let responsible = nodes.iter().position(|n| n.addr == holders[0]).unwrap();
    nodes.remove(responsible).kill();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("the download goes on from another holder");
        got += chunk.len();
        hasher.update(&chunk);
    }
    assert_eq!(got, data.len());
    assert_eq!(hasher.finalize().to_hex().to_string(), blake3_hex(&data));
}

async fn upload_some(nodes: &[TestNode], count: usize, prefix: &str) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for i in 0..count {
        let name = format!("{prefix}-{i}.bin");
        let data = pattern(i as u64 + 500, 10_000 + i * 1000);
        put(&nodes[i % nodes.len()], &name, &data).await;
        files.push((name, blake3_hex(&data)));
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_receives_exactly_the_files_it_is_responsible_for() {
    let mut nodes = start_ring(4).await;
    let files = upload_some(&nodes, 16, "join").await;
    wait_placed(&nodes, &files).await;

    let via = nodes[0].addr.clone();
    nodes.push(NodeSetup { join: Some(via), ..NodeSetup::default() }.start().await);
    wait_converged(&nodes).await;
    wait_placed(&nodes, &files).await;

    let newcomer = nodes.last().unwrap();
    for (name, _) in &files {
        let holds = newcomer.data().join("files").join(name).exists();
        let should = placement(&nodes[0], name).await.contains(&newcomer.addr);
        assert_eq!(holds, should, "{name} on the newcomer");
    }
    // The nodes that handed files to the newcomer drop their extra copies:
    // in the end every node holds exactly the files it is a holder of.
    wait_exact(&nodes, &files).await;
}

/// Polls until every node holds exactly those of `files` it is a placement
/// holder of.
async fn wait_exact(nodes: &[TestNode], files: &[(String, String)]) {
    eventually("copies never matched the placement", || async {
        let mut wrong = Vec::new();
        for (name, _) in files {
            let holders = placement(&nodes[0], name).await;
            for node in nodes {
                if node.data().join("files").join(name).exists() != holders.contains(&node.addr) {
                    wrong.push(format!("{name} on {}", node.addr));
                }
            }
        }
        if wrong.is_empty() { Ok(()) } else { Err(format!("{wrong:?}")) }
    })
    .await
}

/// Stat calls answered by `nodes`, in all.
async fn stats_answered(nodes: &[TestNode]) -> f64 {
    let mut total = 0.0;
    for node in nodes {
        total +=
            metric(node, r#"ringshare_rpc_seconds_count{method="/ringshare.files.v1.Files/Stat",status="200"}"#).await;
    }
    total
}

/// Waits until every one of `nodes` has finished `more` repair passes
/// after the ones counted now.
async fn more_passes(nodes: &[TestNode], more: f64) {
    let mut wanted = Vec::new();
    for node in nodes {
        wanted.push(metric(node, "ringshare_repair_passes_total").await + more);
    }
    eventually("repair passes stopped", || async {
        for (node, want) in nodes.iter().zip(&wanted) {
            let done = metric(node, "ringshare_repair_passes_total").await;
            if done < *want {
                return Err(format!("{} at {done} passes, want {want}", node.addr));
            }
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_writes_gets_just_those_and_an_unchanged_store_costs_no_stat() {
    const SIZE: usize = 2048;
    let mut nodes = start_ring(4).await;
    let mut files = Vec::new();
    for i in 0..200 {
        let (name, data) = (format!("base-{i}"), pattern(i, SIZE));
        put(&nodes[0], &name, &data).await;
        files.push((name, blake3_hex(&data)));
    }
    wait_placed(&nodes, &files).await;
    wait_exact(&nodes, &files).await;
    // Unchanged, a store costs its replicas no per-file call: repair
    // passes compare digests of ranges.
    let before = stats_answered(&nodes).await;
    more_passes(&nodes, 3.0).await;
    assert_eq!(stats_answered(&nodes).await, before, "Stat calls while nothing changed");

    // A node crashes; meanwhile 60 files are added, 10 replaced, 10 deleted.
    let away_addr = nodes[2].addr.clone();
    let folder = nodes.remove(2).crash();
    wait_converged(&nodes).await;
    let http = client();
    let mut missed = Vec::new();
    for i in 0..60 {
        let (name, data) = (format!("new-{i}"), pattern(1000 + i, SIZE));
        put(&nodes[1], &name, &data).await;
        missed.push((name, blake3_hex(&data)));
    }
    for i in 0..10 {
        let (name, data) = (format!("base-{i}"), pattern(2000 + i, SIZE));
        let replaced = http.put(nodes[1].at(&format!("/files/{name}?overwrite=true"))).body(data.clone()).send();
        assert_eq!(replaced.await.unwrap().status(), StatusCode::CREATED);
        missed.push((name, blake3_hex(&data)));
        let gone = http.delete(nodes[0].at(&format!("/files/base-{}", 100 + i))).send().await.unwrap();
        assert_eq!(gone.status(), StatusCode::OK);
    }
    let deleted: Vec<String> = (100..110).map(|i| format!("base-{i}")).collect();
    files.retain(|(name, _)| !deleted.contains(name) && !missed.iter().any(|(m, _)| m == name));
    files.extend(missed.iter().cloned());

    // It comes back on its address with its old store, and gets what it missed.
    let back = NodeSetup { join: Some(nodes[0].addr.clone()), listen: Some(away_addr.clone()), ..NodeSetup::default() };
    nodes.push(back.start_in(folder).await);
    wait_converged(&nodes).await;
    wait_placed(&nodes, &files).await;
    wait_exact(&nodes, &files).await;
    eventually("a deleted file stayed on the node that came back", || async {
        let kept: Vec<&String> = deleted.iter().filter(|n| nodes[3].data().join("files").join(n).exists()).collect();
        if kept.is_empty() { Ok(()) } else { Err(format!("{kept:?}")) }
    })
    .await;
    let back = &nodes[3];
    let mut held_missed = 0;
    for (name, _) in &missed {
        held_missed += usize::from(placement(&nodes[0], name).await.contains(&back.addr));
    }
    let received = metric(back, r#"ringshare_bytes_total{direction="replicated"}"#).await;
    // What it missed and holds, and gRPC's framing: not the 200 files it had.
    let most = (held_missed * SIZE) as f64 * 1.5 + 16_384.0;
    assert!(received > 0.0 && received <= most, "received {received} bytes for {held_missed} missed files of {SIZE}");

    // In step again, passes go back to digests only.
    more_passes(&nodes, 2.0).await;
    let before = stats_answered(&nodes).await;
    more_passes(&nodes, 3.0).await;
    assert_eq!(stats_answered(&nodes).await, before, "Stat calls once in step");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_two_crashes_every_file_has_three_holders_again() {
    let mut nodes = start_ring(6).await;
    let files = upload_some(&nodes, 12, "crash").await;
    wait_placed(&nodes, &files).await;
    nodes.remove(4).kill();
    nodes.remove(1).kill();
    let http = client();
    for (name, sha) in &files {
        let body = http.get(nodes[0].at(&format!("/files/{name}"))).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(&blake3_hex(&body), sha, "{name} right after the crash");
    }
    wait_converged(&nodes).await;
    wait_placed(&nodes, &files).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_wakes_the_repair_without_waiting_for_its_period() {
    // The periodic pass is an hour away: only the wake-up can repair. The
    // nodes that see the crash announce it; every node hears it.
    let vhost = ringshare_tests::Vhost::new();
    let setup = || NodeSetup {
        repair_every: std::time::Duration::from_secs(3600),
        amqp: Some(vhost.url()),
        ..NodeSetup::default()
    };
    let first = setup().start().await;
    let join = Some(first.addr.clone());
    let mut nodes = vec![first];
    for _ in 0..4 {
        nodes.push(NodeSetup { join: join.clone(), ..setup() }.start().await);
    }
    wait_converged(&nodes).await;
    let files = upload_some(&nodes, 10, "woken").await;
    wait_placed(&nodes, &files).await;
    nodes.remove(3).kill();
    wait_converged(&nodes).await;
    wait_placed(&nodes, &files).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_leave_hands_files_over() {
    let mut nodes = start_ring(4).await;
    let files = upload_some(&nodes, 10, "leave").await;
    wait_placed(&nodes, &files).await;
    nodes.remove(2).stop().await;
    wait_converged(&nodes).await;
    wait_placed(&nodes, &files).await;
    let http = client();
    for (name, sha) in &files {
        for node in &nodes {
            let body = http.get(node.at(&format!("/files/{name}"))).send().await.unwrap().bytes().await.unwrap();
            assert_eq!(&blake3_hex(&body), sha, "{name} from {}", node.addr);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_leave_hands_its_keys_over_by_digests_before_any_repair() {
    // No repair pass runs here: every copy in place after the leave was
    // handed over by the node leaving.
    let setup =
        || NodeSetup { repair_every: Duration::from_secs(3600), repair_on_departure: false, ..NodeSetup::default() };
    let mut nodes = start_ring_with(5, setup).await;
    wait_converged(&nodes).await;
    let files = upload_some(&nodes, 60, "handed").await;
    let leaving = nodes.remove(2);
    let stats = || async {
        let mut stats = 0.0;
        for node in &nodes {
            let stat = ["method=\"/ringshare.files.v1.Files/Stat\""];
            stats += metric_sum(node, "ringshare_rpc_seconds_count", &stat).await;
        }
        stats
    };
    let before = stats().await;
    leaving.stop().await;
    let asked = stats().await - before;
    wait_converged(&nodes).await;
    for (name, sha) in &files {
        let holders = placement(&nodes[0], name).await;
        for holder in &holders {
            let copy = std::fs::read(node_at(&nodes, holder).data().join("files").join(name));
            assert!(copy.is_ok_and(|b| &blake3_hex(&b) == sha), "{name} was not handed over to {holder}");
        }
    }
    // Compared by ranges: no name was asked about one by one.
    assert!(asked < 5.0, "the leave asked {asked} Stat calls for {} files", files.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_leaving_a_ring_of_k_or_fewer_hands_every_file_to_the_others() {
    // No repair pass runs: the node that joins has none of the files the
    // first one held alone until that one hands them over as it leaves.
    let setup =
        || NodeSetup { repair_every: Duration::from_secs(3600), repair_on_departure: false, ..NodeSetup::default() };
    let first = setup().start().await;
    let files = upload_some(std::slice::from_ref(&first), 12, "alone").await;
    let second = NodeSetup { join: Some(first.addr.clone()), ..setup() }.start().await;
    let nodes = vec![first, second];
    wait_converged(&nodes).await;
    assert!(!nodes[1].data().join("files").join(&files[0].0).exists(), "a repair pass ran");
    let mut nodes = nodes;
    nodes.remove(0).stop().await;
    let http = client();
    for (name, sha) in &files {
        let copy = std::fs::read(nodes[0].data().join("files").join(name));
        assert!(copy.is_ok_and(|b| &blake3_hex(&b) == sha), "{name} was not handed over");
        let body = http.get(nodes[0].at(&format!("/files/{name}"))).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(&blake3_hex(&body), sha, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_copied_into_a_store_by_hand_is_replicated() {
    let nodes = start_ring(4).await;
    let data = pattern(77, 123_456);
    std::fs::write(nodes[3].data().join("files").join("by-hand.txt"), &data).unwrap();
    wait_placed(&nodes, &[("by-hand.txt".to_string(), blake3_hex(&data))]).await;
    let body = client().get(nodes[1].at("/files/by-hand.txt")).send().await.unwrap().bytes().await.unwrap();
    assert!(body == data);
}

/// Ok when no node in `nodes` has `path` (relative to its store).
fn none_has(path: &str, nodes: &[TestNode]) -> Result<(), String> {
    let left: Vec<&str> = nodes.iter().filter(|n| n.data().join(path).exists()).map(|n| n.addr.as_str()).collect();
    if left.is_empty() { Ok(()) } else { Err(format!("on {left:?}")) }
}

/// Status and JSON body of `GET path` on `node`.
async fn get_json(node: &TestNode, path: &str) -> (StatusCode, Value) {
    let response = client().get(node.at(path)).send().await.unwrap();
    (response.status(), response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_file_stays_deleted_when_a_former_holder_returns() {
    let mut nodes = start_ring(5).await;
    let http = client();
    let gone = pattern(21, 300_000);
    let kept = pattern(22, 1000);
    for (name, data) in [("gone.bin", &gone), ("kept.bin", &kept)] {
        put(&nodes[1], name, data).await;
    }
    let holders = placement(&nodes[0], "gone.bin").await;
    wait_stored(&nodes, &holders, "gone.bin", &blake3_hex(&gone)).await;

    // A holder goes away with its copy; the file is deleted while it is gone.
    let away = nodes.iter().position(|n| n.addr == holders[1]).unwrap();
    let folder = nodes.remove(away).stop().await;
    assert!(folder.path().join("data/store/files/gone.bin").exists());
    wait_converged(&nodes).await;
    let deleted = http.delete(nodes[3].at("/files/gone.bin")).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    let deleted: Value = deleted.json().await.unwrap();
    assert_eq!(deleted["existed"], true, "{deleted}");
    assert!(deleted["holders"].as_array().unwrap().len() >= 2, "a write quorum recorded it: {deleted}");
    for node in &nodes {
        let (status, body) = get_json(node, "/files/gone.bin").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "from {}: {body}", node.addr);
        assert_eq!(body["code"], "not-found");
    }
    // The answer came once a write quorum recorded the delete; the other
    // holders remove their copies in the background.
    eventually("a copy was left after the delete", || async { none_has("files/gone.bin", &nodes) }).await;

    // It comes back with its old copy: nobody serves or lists the file, and
    // the copy is removed instead of being replicated again.
    let returned = NodeSetup { join: Some(nodes[0].addr.clone()), ..NodeSetup::default() }.start_in(folder).await;
    nodes.push(returned);
    wait_converged(&nodes).await;
    // (Its repair pass may copy it to a holder that never saw the delete
    // before it learns of the tombstone; that copy keeps the old version's
    // time, so it is deleted too and never served.)
    eventually("a deleted copy stayed", || async {
        for node in &nodes {
            let (status, _) = get_json(node, "/files/gone.bin").await;
            assert_eq!(status, StatusCode::NOT_FOUND, "served again by {}", node.addr);
        }
        none_has("files/gone.bin", &nodes)
    })
    .await;
    for node in &nodes {
        let (_, listing) = get_json(node, "/files?scope=network").await;
        let names: Vec<&str> = listing.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["kept.bin"], "listed by {}", node.addr);
        let body = http.get(node.at("/files/kept.bin")).send().await.unwrap().bytes().await.unwrap();
        assert!(body == kept, "kept.bin from {}", node.addr);
    }
}

/// Whether any of `nodes` still keeps a tombstone of `name`.
fn tombstone_kept(nodes: &[TestNode], name: &str) -> Vec<String> {
    nodes.iter().filter(|n| n.state().join("deleted").join(name).exists()).map(|n| n.addr.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_end_after_the_grace_and_a_node_away_longer_brings_nothing_back() {
    const GRACE: Duration = Duration::from_secs(3);
    let setup = || NodeSetup { tombstone_grace: GRACE, ..NodeSetup::default() };
    let mut nodes = start_ring_with(4, setup).await;
    wait_converged(&nodes).await;
    let http = client();
    let gone = pattern(31, 200_000);
    let gone_holders = put_placed(&nodes, "gone.bin", &gone).await;
    // A file the node going away holds too, kept by the others meanwhile.
    let away_addr = gone_holders[1].clone();
    let mut kept_name = None;
    for n in 0..1000 {
        let name = format!("kept-{n}");
        if placement(&nodes[0], &name).await.contains(&away_addr) {
            kept_name = Some(name);
            break;
        }
    }
    let kept_name = kept_name.expect("a name the node going away holds");
    let kept = pattern(32, 5000);
    let kept_holders = put_placed(&nodes, &kept_name, &kept).await;
    assert!(kept_holders.contains(&away_addr));

    // A holder goes away with both copies; gone.bin is deleted meanwhile.
    let away = nodes.iter().position(|n| n.addr == away_addr).unwrap();
    let folder = nodes.remove(away).stop().await;
    assert!(folder.path().join("data/store/files/gone.bin").exists());
    wait_converged(&nodes).await;
    let deleted_at = std::time::Instant::now();
    let deleted = http.delete(nodes[0].at("/files/gone.bin")).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    assert!(tombstone_kept(&nodes, "gone.bin").len() >= 2, "the delete was acknowledged by a quorum of tombstones");

    // Every holder has the tombstone; past the grace, each drops its own.
    eventually("tombstones past the grace were kept", || async {
        let kept = tombstone_kept(&nodes, "gone.bin");
        if kept.is_empty() { Ok(()) } else { Err(format!("kept by {kept:?}")) }
    })
    .await;
    assert!(deleted_at.elapsed() >= GRACE, "a tombstone ended before the grace: {:?}", deleted_at.elapsed());
    let mut expired = 0.0;
    for node in &nodes {
        expired += metric(node, "ringshare_tombstones_expired_total").await;
    }
    assert!(expired >= 2.0, "{expired} tombstones counted as expired");

    // The node comes back, away longer than the grace, with its old copies:
    // the deleted one is never served, listed or copied out again, and goes
    // to its quarantine; the one its holders still have is confirmed.
    let (join, listen) = (Some(nodes[0].addr.clone()), Some(away_addr.clone()));
    let back = NodeSetup { join, listen, ..setup() }.start_in(folder).await;
    nodes.push(back);
    wait_converged(&nodes).await;
    let back = nodes.last().unwrap();
    eventually("the returning node settled its copies", || async {
        for node in &nodes {
            let (status, body) = get_json(node, "/files/gone.bin").await;
            assert_ne!(status, StatusCode::OK, "gone.bin served again by {}: {body}", node.addr);
            if status != StatusCode::NOT_FOUND {
                return Err(format!("gone.bin from {}: {status} {body}", node.addr));
            }
            let (_, listing) = get_json(node, "/files?scope=network").await;
            let names: Vec<&str> = listing.as_array().unwrap().iter().filter_map(|e| e["name"].as_str()).collect();
            assert!(!names.contains(&"gone.bin"), "gone.bin listed again by {}", node.addr);
        }
        if metric(back, "ringshare_copies_quarantined_total").await < 1.0 {
            return Err("gone.bin not quarantined yet".to_owned());
        }
        none_has("files/gone.bin", &nodes)?;
        match metric(back, "ringshare_copies_unconfirmed").await {
            0.0 => Ok(()),
            waiting => Err(format!("{waiting} copies unconfirmed")),
        }
    })
    .await;
    let moved = quarantined(back, "gone.bin").expect("gone.bin in the returning node's quarantine");
    assert!(std::fs::read(&moved).unwrap() == gone, "the quarantined copy is whole");
    assert!(back.data().join("files").join(&kept_name).exists(), "the confirmed copy stayed");
    for node in &nodes {
        let body = http.get(node.at(&format!("/files/{kept_name}"))).send().await.unwrap().bytes().await.unwrap();
        assert!(body == kept, "{kept_name} from {}", node.addr);
    }
}

/// Where `name` is in `node`'s quarantine folder, if it is.
fn quarantined(node: &TestNode, name: &str) -> Option<std::path::PathBuf> {
    let versions = std::fs::read_dir(node.state().join("quarantine")).ok()?;
    versions.filter_map(|v| v.ok()).map(|v| v.path().join(name)).find(|p| p.exists())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_refuse_bad_names_report_missing_files_and_allow_a_new_upload() {
    let nodes = start_ring(3).await;
    let http = client();
    let missing = http.delete(nodes[0].at("/files/never-there")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.json::<Value>().await.unwrap()["code"], "not-found");
    let bad = http.delete(nodes[0].at("/files/a%5Cb")).send().await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(bad.json::<Value>().await.unwrap()["code"], "invalid-name");

    http.put(nodes[0].at("/files/again.txt")).body("first").send().await.unwrap().error_for_status().unwrap();
    let deleted = http.delete(nodes[1].at("/files/again.txt")).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    let (status, _) = get_json(&nodes[2], "/files/again.txt").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Deleting twice: nothing left to delete.
    let twice = http.delete(nodes[2].at("/files/again.txt")).send().await.unwrap();
    assert_eq!(twice.status(), StatusCode::NOT_FOUND);

    // A later upload of the name is a new file, on every holder, that the
    // repair loop keeps (the tombstones are gone).
    let put = http.put(nodes[2].at("/files/again.txt")).body("second").send().await.unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    let holders = placement(&nodes[0], "again.txt").await;
    wait_stored(&nodes, &holders, "again.txt", &blake3_hex(b"second")).await;
    eventually("tombstones outlived a newer upload", || async { none_has("deleted/again.txt", &nodes) }).await;
    for node in &nodes {
        assert_eq!(http.get(node.at("/files/again.txt")).send().await.unwrap().text().await.unwrap(), "second");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portmapper_routes_answer_from_the_ring() {
    let mut nodes = start_ring(3).await;
    let http = client();
    http.put(nodes[0].at("/files/where.txt")).body("here").send().await.unwrap().error_for_status().unwrap();

    let (status, all) = get_json(&nodes[1], "/all_nodes").await;
    assert_eq!(status, StatusCode::OK);
    let mut expected: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    expected.sort();
    for key in ["all_nodes", "active_nodes"] {
        let mut got: Vec<String> = serde_json::from_value(all[key].clone()).unwrap();
        got.sort();
        assert_eq!(got, expected, "{key}: {all}");
    }

    let (status, found) = get_json(&nodes[2], "/search/where.txt").await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["filename"], "where.txt");
    let at = found["node_address"].as_str().unwrap();
    assert!(placement(&nodes[0], "where.txt").await.iter().any(|h| h == at), "{found}");
    let body = http.get(format!("http://{at}/download/where.txt")).send().await.unwrap().text().await.unwrap();
    assert_eq!(body, "here");
    let (status, missing) = get_json(&nodes[2], "/search/nothing.txt").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    let (status, _) = get_json(&nodes[2], "/search/a%5Cb").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    nodes.remove(2).kill();
    wait_converged(&nodes).await;
    let (_, active) = get_json(&nodes[0], "/active_nodes").await;
    let mut got: Vec<String> = serde_json::from_value(active["active_nodes"].clone()).unwrap();
    got.sort();
    let mut alive: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    alive.sort();
    assert_eq!(got, alive);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_copy_on_a_non_holder_is_never_served_and_goes_away() {
    let nodes = start_ring(4).await;
    let holders = put_placed(&nodes, "fresh.txt", b"new version").await;
    let outsider = nodes.iter().find(|n| !holders.contains(&n.addr)).unwrap();

    // An older version lands in the non-holder's store (written aside with
    // an hour-old mtime, then renamed in, so it is never seen as newer).
    let aside = outsider.root().join("fresh.txt");
    std::fs::write(&aside, "old version").unwrap();
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&aside).unwrap().set_modified(an_hour_ago).unwrap();
    let stale = outsider.data().join("files/fresh.txt");
    std::fs::rename(&aside, &stale).unwrap();

    // Reads through that node serve the holders' newer version at once, and
    // its repair pass drops the superseded copy without spreading it.
    let body = client().get(outsider.at("/files/fresh.txt")).send().await.unwrap().text().await.unwrap();
    assert_eq!(body, "new version");
    eventually("the stale copy stayed", || async { if stale.exists() { Err("still there".into()) } else { Ok(()) } })
        .await;
    for holder in &holders {
        let bytes = std::fs::read(node_at(&nodes, holder).data().join("files/fresh.txt")).unwrap();
        assert_eq!(bytes, b"new version", "on {holder}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_copies_and_malformed_file_calls_are_refused() {
    use ringshare::rpc::files_pb::{self as pb, files_client::FilesClient, store_request::Part};
    let nodes = start_ring(1).await;
    let http = client();
    let mut rpc = FilesClient::new(ringshare_tests::Cluster::shared().member_channel(&nodes[0]).await);
    let old_copy = blake3::hash(b"old copy").as_bytes().to_vec();
    let store_as = |name: &str, version_ns: u64, blake3: Vec<u8>, first: Option<Part>| {
        let blake3 = blake3.into();
        let header = Part::Header(pb::StoreHeader {
            name: name.into(),
            overwrite: true,
            replicas: 0,
            version_ns,
            blake3,
            commit_follows: false,
        });
        let parts = vec![first.unwrap_or(header), Part::Chunk(b"old copy".to_vec().into())];
        futures_util::stream::iter(parts.into_iter().map(|p| pb::StoreRequest { part: Some(p) }))
    };
    let store = |name: &str, version_ns: u64, first: Option<Part>| {
        let blake3 = if version_ns == 0 { Vec::new() } else { old_copy.clone() };
        store_as(name, version_ns, blake3, first)
    };

    // A copy of a version older than the node's own is refused; so is a
    // copy of a version older than a deletion. A later version is taken.
    let put: Value = http.put(nodes[0].at("/files/v.txt")).body("new").send().await.unwrap().json().await.unwrap();
    let current = put["modified_ns"].as_u64().unwrap();
    let status = rpc.store(store("v.txt", current - 1, None)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status}");
    assert_eq!(http.get(nodes[0].at("/files/v.txt")).send().await.unwrap().text().await.unwrap(), "new");
    http.put(nodes[0].at("/files/gone.txt")).body("x").send().await.unwrap().error_for_status().unwrap();
    let deleted: Value = http.delete(nodes[0].at("/files/gone.txt")).send().await.unwrap().json().await.unwrap();
    let at = deleted["deleted_ns"].as_u64().unwrap();
    let status = rpc.store(store("gone.txt", at, None)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status}");
    assert!(!nodes[0].data().join("files/gone.txt").exists());
    let later = rpc.store(store("gone.txt", at + 1, None)).await.unwrap().into_inner();
    assert_eq!(later.entry.unwrap().modified_ns, at + 1, "the copy keeps its version's time");

    // A copy whose bytes do not hash to its version's hash is discarded.
    let wrong = blake3::hash(b"something else").as_bytes().to_vec();
    let status = rpc.store(store_as("torn.txt", at + 1, wrong, None)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DataLoss, "{status}");
    assert!(!nodes[0].data().join("files/torn.txt").exists());
    let status = rpc.store(store_as("torn.txt", at + 1, vec![1, 2, 3], None)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    let status = rpc.store(store_as("torn.txt", at + 1, Vec::new(), None)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");

    // Malformed calls: a clear status, nothing stored.
    let status = rpc.store(store("x", 0, Some(Part::Chunk(b"no header".to_vec().into())))).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    let status = rpc.store(store("..", 0, None)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    let status = rpc.delete(pb::DeleteRequest { name: "a/b".into(), deleted_ns: 0, replicas: 0 }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    let status = rpc.stat(pb::StatRequest { name: String::new() }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    let whole = pb::KeyRange { from: 9, to: 9 };
    for (ranges, parts) in
        [(vec![], 16), (vec![whole; 4097], 1), (vec![whole], 0), (vec![whole], 257), (vec![whole; 300], 256)]
    {
        let status = rpc.digests(pb::DigestsRequest { ranges, parts }).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    }
    let status = rpc.entries(pb::EntriesRequest { ranges: vec![] }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    // Well formed, they answer: the whole ring in 4 parts holds the two
    // files stored above, and so do its entries.
    let parts = rpc.digests(pb::DigestsRequest { ranges: vec![whole], parts: 4 }).await.unwrap().into_inner().parts;
    assert_eq!(parts.len(), 4);
    assert!(parts.iter().all(|p| p.digest.len() == 16));
    assert_eq!(parts.iter().map(|p| p.count).sum::<u64>(), 2, "{parts:?}");
    let mut listed = rpc.entries(pb::EntriesRequest { ranges: vec![whole] }).await.unwrap().into_inner();
    let (mut entries, mut deleted) = (Vec::new(), Vec::new());
    while let Some(reply) = listed.message().await.unwrap() {
        entries.extend(reply.entries.into_iter().map(|e| e.name));
        deleted.extend(reply.deleted.into_keys());
    }
    entries.sort();
    assert_eq!((entries, deleted), (vec!["gone.txt".to_owned(), "v.txt".to_owned()], vec![]));
    let past_end = pb::FetchRequest { name: "v.txt".into(), offset: 99, length: 0, ..Default::default() };
    let status = rpc.fetch(past_end).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status}");

    // A fetch sends the outboard unless the caller has it already.
    let blocks = pattern(3, 600 << 10); // three blocks of 256 KiB
    http.put(nodes[0].at("/files/blocks.bin")).body(blocks.clone()).send().await.unwrap().error_for_status().unwrap();
    for without_outboard in [false, true] {
        let fetch = pb::FetchRequest { name: "blocks.bin".into(), offset: 300 << 10, length: 10, without_outboard };
        let mut parts = rpc.fetch(fetch).await.unwrap().into_inner();
        let (mut entry, mut outboard, mut chunks) = (0, 0, Vec::new());
        while let Some(reply) = parts.message().await.unwrap() {
            match reply.part.unwrap() {
                pb::fetch_reply::Part::Entry(_) => entry += 1,
                pb::fetch_reply::Part::Outboard(bytes) => outboard += bytes.len(),
                pb::fetch_reply::Part::Chunk(bytes) => chunks.extend_from_slice(&bytes),
            }
        }
        assert_eq!((entry, outboard), (1, if without_outboard { 0 } else { 3 * 32 }), "{without_outboard}");
        assert_eq!(chunks, blocks[256 << 10..512 << 10], "the whole block holding the range");
    }
    http.delete(nodes[0].at("/files/blocks.bin")).send().await.unwrap().error_for_status().unwrap();
    let listing: Vec<Value> = http.get(nodes[0].at("/files")).send().await.unwrap().json().await.unwrap();
    let names: Vec<&str> = listing.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["gone.txt", "v.txt"]);
}

/// Flips one byte of `path` at `at`, leaving the file's time as it was (as
/// a failing disk would).
fn rot(path: &std::path::Path, at: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let modified = file.metadata().unwrap().modified().unwrap();
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(at)).unwrap();
    file.read_exact(&mut byte).unwrap();
    file.seek(SeekFrom::Start(at)).unwrap();
    file.write_all(&[byte[0] ^ 0x40]).unwrap();
    file.set_modified(modified).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bit_rot_in_a_copy_nobody_reads_is_found_by_the_scrub_and_healed() {
    let nodes = start_ring(3).await;
    let data = pattern(12, 2 << 20);
    let holders = put_placed(&nodes, "quiet.bin", &data).await;
    let path = node_at(&nodes, &holders[2]).data().join("files/quiet.bin");
    rot(&path, 1_500_000);
    eventually("the rotten copy was never replaced", || async {
        match std::fs::read(&path) {
            Ok(bytes) if bytes == data => Ok(()),
            Ok(_) => Err("still damaged".into()),
            Err(e) => Err(format!("not back yet: {e}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_copy_is_never_served_and_is_healed() {
    let nodes = start_ring(4).await;
    let http = client();
    let data = pattern(11, 3 << 20);
    let holders = put_placed(&nodes, "fragile.bin", &data).await;

    // Bit rot on the responsible holder: one byte flipped, the file's time
    // left as it was (as a failing disk would).
    let path = node_at(&nodes, &holders[0]).data().join("files/fragile.bin");
    let flip_at = 1_000_000;
    rot(&path, flip_at);

    for node in &nodes {
        let range = format!("bytes={}-{}", flip_at - 10, flip_at + 10);
        let partial = http.get(node.at("/files/fragile.bin")).header("range", range).send().await.unwrap();
        assert_eq!(partial.status(), reqwest::StatusCode::PARTIAL_CONTENT, "through {}", node.addr);
        let body = partial.bytes().await.expect("no wrong byte, no broken stream");
        assert_eq!(&body[..], &data[flip_at as usize - 10..=flip_at as usize + 10], "range through {}", node.addr);
        let whole = http.get(node.at("/files/fragile.bin")).send().await.unwrap().bytes().await.unwrap();
        assert!(whole == data, "whole file through {}", node.addr);
    }
    // The damaged copy was dropped when it was read, and repair put a good
    // one back.
    eventually("the damaged copy was never replaced", || async {
        match std::fs::read(&path) {
            Ok(bytes) if bytes == data => Ok(()),
            Ok(_) => Err("still damaged".into()),
            Err(e) => Err(format!("not back yet: {e}")),
        }
    })
    .await;
}

/// The index of the node at `addr` in `nodes`.
fn index_of(nodes: &[TestNode], addr: &str) -> usize {
    nodes.iter().position(|n| n.addr == addr).expect("a node of the ring")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_201_means_k_durable_copies_even_if_two_holders_die_at_once() {
    let mut nodes = start_ring(5).await;
    let http = client();
    let data = pattern(21, 20 << 20);
    let holders = placement(&nodes[0], "durable.bin").await;
    let via = nodes.iter().position(|n| !holders.contains(&n.addr)).expect("a node outside the placement");
    let put = http.put(nodes[via].at("/files/durable.bin")).body(data.clone()).send().await.unwrap();
    let status = put.status();
    let reply: Value = put.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    // The moment the answer arrives: two of the three holders die.
    for holder in &holders[..2] {
        let i = index_of(&nodes, holder);
        nodes.remove(i).kill();
    }
    let acknowledged: Vec<&str> = reply["holders"].as_array().unwrap().iter().map(|h| h.as_str().unwrap()).collect();
    assert_eq!(acknowledged.len(), 3, "{reply}");
    assert_eq!(reply["copies_wanted"], 3);
    assert_eq!(acknowledged[0], holders[0], "the responsible node first");
    let mut sorted = acknowledged.clone();
    sorted.sort();
    let mut placed: Vec<&str> = holders.iter().map(String::as_str).collect();
    placed.sort();
    assert_eq!(sorted, placed, "every placement holder had it durable");
    for node in &nodes {
        let body = http.get(node.at("/files/durable.bin")).send().await.unwrap().bytes().await.unwrap();
        assert!(body == data, "through {} right after the crash", node.addr);
    }
    wait_converged(&nodes).await;
    wait_placed(&nodes, &[("durable.bin".to_string(), blake3_hex(&data))]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holder_is_stood_in_for_and_a_small_ring_says_how_many_copies() {
    let mut nodes = start_ring(5).await;
    let http = client();
    let holders = placement(&nodes[0], "stand-in.bin").await;
    // A holder dies just before the upload, before the ring notices.
    let dead = holders[1].clone();
    nodes.remove(index_of(&nodes, &dead)).kill();
    let responsible = index_of(&nodes, &holders[0]);
    let data = pattern(22, 3 << 20);
    let put = http.put(nodes[responsible].at("/files/stand-in.bin")).body(data.clone()).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    let reply: Value = put.json().await.unwrap();
    let acknowledged: Vec<String> =
        reply["holders"].as_array().unwrap().iter().map(|h| h.as_str().unwrap().to_owned()).collect();
    assert_eq!(acknowledged.len(), 3, "three durable copies on live nodes: {reply}");
    assert!(!acknowledged.contains(&dead), "{reply}");
    for addr in &acknowledged {
        let stored = std::fs::read(node_at(&nodes, addr).data().join("files/stand-in.bin")).unwrap();
        assert!(stored == data, "the copy on {addr}");
    }

    // Two nodes, three copies wanted: as many as there are nodes, and said.
    let pair = start_ring(2).await;
    let put = http.put(pair[0].at("/files/pair.bin")).body("two copies").send().await.unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    let reply: Value = put.json().await.unwrap();
    assert_eq!(reply["holders"].as_array().unwrap().len(), 2, "{reply}");
    assert_eq!(reply["copies_wanted"], 2, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_left_beyond_the_placement_is_found_before_not_found() {
    use ringshare::rpc::files_pb::{self as pb, files_client::FilesClient, store_request::Part};
    // Repair would move the copy at once; here nothing moves.
    let slow = || NodeSetup { repair_every: std::time::Duration::from_secs(600), ..NodeSetup::default() };
    let mut nodes = ringshare_tests::start_ring_with(4, slow).await;
    wait_converged(&nodes).await;
    let holders = placement(&nodes[0], "elsewhere.txt").await;
    let beyond = nodes.iter().find(|n| !holders.contains(&n.addr)).expect("a fourth node");
    // A copy written under another view of the ring: on a node after the
    // holders, on none of them.
    let data = b"written while the ring was changing".to_vec();
    let header = pb::StoreHeader {
        name: "elsewhere.txt".into(),
        overwrite: true,
        replicas: 0,
        version_ns: 1_700_000_000_000_000_000,
        blake3: blake3::hash(&data).as_bytes().to_vec().into(),
        commit_follows: false,
    };
    let parts = [Part::Header(header), Part::Chunk(data.clone().into())];
    let mut rpc = FilesClient::new(ringshare_tests::Cluster::shared().member_channel(beyond).await);
    rpc.store(futures_util::stream::iter(parts.map(|p| pb::StoreRequest { part: Some(p) }))).await.unwrap();
    for holder in &holders {
        let body = client().get(node_at(&nodes, holder).at("/files/elsewhere.txt")).send().await.unwrap();
        assert_eq!(body.status(), StatusCode::OK, "through {holder}");
        assert_eq!(body.bytes().await.unwrap(), data, "through {holder}");
    }
    let missing = client().get(nodes[0].at("/files/nowhere.txt")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    nodes.clear();
}
