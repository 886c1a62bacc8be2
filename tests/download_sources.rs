//! Downloads from every holder at once against one holder at a time, in
//! the same run. Five nodes on namespaced hosts (run as root), k = 3, a
//! file held by three of them; the two others read it: one with
//! `--download-sources 1` (one holder at a time, as before), one with the
//! default (every holder). Rounds alternate between them:
//! - with each holder's upload limited to 100 Mbit/s (`tc tbf`);
//! - with the limit lifted (veth links, as fast as this machine goes);
//! - on loopback, the same five nodes' setup on 127.0.0.1.
//!
//! `make bench` runs it (scripts/bench-multi-source.sh);
//! `cargo run --release -p ringshare-tests --example download_sources [MIB]`.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use ringshare_tests::hosts::{Hosts, PORT, ring_on, write_token};
use ringshare_tests::{
    NodeSetup, TestNode, blake3_hex, client, name_held_away_from, pattern, placement, wait_converged_within,
};

const TOKEN: &str = "download-sources-bench";
const ROUNDS: usize = 3;

/// The shipped ring timings and call timeout, not the tests'; `one_at_a_time`
/// reads one holder at a time.
fn setup(one_at_a_time: bool) -> NodeSetup {
    NodeSetup {
        chord: ringshare::chord::ChordConfig::default(),
        rpc_timeout: ringshare::NodeConfig::new("", "").rpc_timeout,
        download_sources: if one_at_a_time { 1 } else { 8 },
        ..NodeSetup::default()
    }
}

/// The readers among nodes at `addrs`: two next to each other on the ring
/// (a node's id is the hash of its address), so that a file held by the
/// other three (k = 3, consecutive) is held by neither. The second reads
/// one holder at a time.
fn readers(addrs: &[String]) -> Readers {
    let mut order: Vec<usize> = (0..addrs.len()).collect();
    order.sort_by_key(|&i| ringshare::chord::Id::hash(&addrs[i]));
    Readers { every: order[0], one: order[1] }
}

/// Which nodes read: `every` from every holder, `one` one holder at a time.
#[derive(Clone, Copy)]
struct Readers {
    every: usize,
    one: usize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mib: usize = std::env::args().nth(1).map_or(128, |s| s.parse().expect("MiB"));
    let data = pattern(42, mib << 20);
    let (hosts, tokens) = (Hosts::new(5), tempfile::tempdir().unwrap());
    let addrs: Vec<String> = (0..hosts.len()).map(|i| format!("{}:{PORT}", hosts.host(i).ip)).collect();
    let who = readers(&addrs);
    let nodes = ring_on(&hosts, &write_token(tokens.path(), TOKEN), |i| setup(i == who.one)).await;
    let (name, holders) = upload_away_from(&nodes, who, &data).await;
    println!("download of {mib} MiB through a node that holds no copy, k = 3, {ROUNDS} rounds each, same run");
    for &h in &holders {
        hosts.limit(h, 100);
    }
    compare("holders' uploads limited to 100 Mbit/s", &nodes, who, &name, &data).await;
    for &h in &holders {
        hosts.unlimit(h);
    }
    compare("no limit (veth)", &nodes, who, &name, &data).await;
    drop(nodes);
    drop(hosts);

    // Loopback, on ports picked now so that the readers are known before start.
    let addrs: Vec<String> = (0..5).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    let who = readers(&addrs);
    let mut nodes: Vec<TestNode> = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let join = nodes.first().map(|n| n.addr.clone());
        nodes.push(NodeSetup { listen: Some(addr.clone()), join, ..setup(i == who.one) }.start().await);
    }
    wait_converged_within(Duration::from_secs(60), &nodes).await;
    let (name, _) = upload_away_from(&nodes, who, &data).await;
    compare("loopback", &nodes, who, &name, &data).await;
}

/// A port free on 127.0.0.1 right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Uploads `data` under a name that neither reader holds; answers the name
/// and the holders' node numbers.
async fn upload_away_from(nodes: &[TestNode], who: Readers, data: &[u8]) -> (String, Vec<usize>) {
    let away = [nodes[who.every].addr.as_str(), nodes[who.one].addr.as_str()];
    let name = name_held_away_from(&nodes[0], &away, "big").await;
    let put = client().put(nodes[0].at(&format!("/files/{name}"))).bearer_auth(TOKEN).body(data.to_vec());
    assert_eq!(put.send().await.unwrap().status(), StatusCode::CREATED);
    let held = placement(&nodes[0], &name).await;
    (name, nodes.iter().enumerate().filter(|(_, n)| held.contains(&n.addr)).map(|(i, _)| i).collect())
}

/// Rounds of the download through the reader of one holder at a time and
/// the reader of every holder, alternating; prints each side's median MB/s and the ratio.
async fn compare(what: &str, nodes: &[TestNode], who: Readers, name: &str, data: &[u8]) {
    let (mut one, mut every) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        one.push(download(&nodes[who.one], name, data).await);
        every.push(download(&nodes[who.every], name, data).await);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (one, every) = (median(&mut one), median(&mut every));
    println!("{what}: one holder at a time {one:.1} MB/s, every holder {every:.1} MB/s: {:.2}x", every / one);
}

/// One download of `name` through `node`, checked: MB/s.
async fn download(node: &TestNode, name: &str, data: &[u8]) -> f64 {
    let began = Instant::now();
    let get = client().get(node.at(&format!("/files/{name}"))).timeout(Duration::from_secs(600));
    let answer = get.send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let got = answer.bytes().await.unwrap();
    let seconds = began.elapsed().as_secs_f64();
    assert_eq!(blake3_hex(&got), blake3_hex(data), "the download's bytes");
    data.len() as f64 / seconds / 1e6
}
