//! Scale benchmark of the ring logic (not a test): builds rings of N = 64,
//! 256 and 1,024 nodes in one process over the in-memory transport (the
//! same protocol code as over gRPC: joins, stabilize rounds, fix-fingers),
//! then measures hops over 10,000 random lookups, and lookup correctness
//! after half the nodes crash at once with no repair time.
//!
//! Run: `cargo bench -p ringshare --bench chord_sim`

use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use ringshare::chord::sim::{SimNet, oracle_successor};
use ringshare::chord::{ChordConfig, ChordNode, Id};

const LOOKUPS: usize = 10_000;

struct Ring {
    net: SimNet,
    nodes: Vec<Arc<ChordNode<SimNet>>>,
    rounds: usize,
}

/// Whether every live node's successor list is exactly the next r live nodes.
fn converged(ring: &Ring, r: usize) -> bool {
    let ids = ring.net.live_ids();
    ring.nodes.iter().filter(|n| ring.net.is_up(&n.me().addr)).all(|n| {
        let table = n.snapshot();
        let me = ids.iter().position(|&id| id == n.me().id).unwrap();
        let want: Vec<Id> = (1..ids.len()).take(r).map(|k| ids[(me + k) % ids.len()]).collect();
        let got: Vec<Id> = table.successors().iter().map(|s| s.id).collect();
        got == want
    })
}

async fn build(n: usize, r: usize) -> Ring {
    let net = SimNet::new();
    let config = ChordConfig { successors: r, ..ChordConfig::default() };
    let nodes: Vec<_> = (0..n).map(|i| net.add(&format!("127.0.0.1:{}", 20_000 + i), config)).collect();
    let first = nodes[0].me().addr;
    // Joins one at a time, each followed by the stabilize calls that a real
    // ring's periodic maintenance would make before the next join: the
    // joiner's, and its predecessor's (which adopts the joiner).
    for (i, node) in nodes.iter().enumerate().skip(1) {
        node.join(&first).await.expect("join");
        node.stabilize().await;
        let successor = node.snapshot().successor().id;
        let me = node.me().id;
        if let Some(predecessor) =
            nodes[..i].iter().find(|n| n.snapshot().successor().id == successor && n.me().id != me)
        {
            predecessor.stabilize().await;
        }
    }
    let mut ring = Ring { net, nodes, rounds: 0 };
    while !converged(&ring, r) && ring.rounds < 500 {
        for node in &ring.nodes {
            node.stabilize().await;
        }
        ring.rounds += 1;
    }
    assert!(converged(&ring, r), "ring of {n} did not converge in {} rounds", ring.rounds);
    for node in &ring.nodes {
        node.fix_fingers().await;
    }
    ring
}

struct Stats {
    mean: f64,
    p99: usize,
    correct: usize,
    failed: usize,
}

async fn measure(ring: &Ring, rng: &mut StdRng) -> Stats {
    let ids = ring.net.live_ids();
    let live: Vec<_> = ring.nodes.iter().filter(|n| ring.net.is_up(&n.me().addr)).collect();
    let mut hops = Vec::with_capacity(LOOKUPS);
    let (mut correct, mut failed) = (0, 0);
    for _ in 0..LOOKUPS {
        let key = Id(rng.random());
        let from = live[rng.random_range(0..live.len())];
        match from.lookup(key).await {
            Ok((node, h)) => {
                hops.push(h);
                if node.id == oracle_successor(&ids, key) {
                    correct += 1;
                }
            }
            Err(_) => failed += 1,
        }
    }
    hops.sort_unstable();
    let mean = hops.iter().sum::<usize>() as f64 / hops.len().max(1) as f64;
    let p99 = hops.get(hops.len() * 99 / 100).copied().unwrap_or(0);
    Stats { mean, p99, correct, failed }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut rng = StdRng::seed_from_u64(2026);
    println!(
        "| N | r | build rounds | mean hops | target mean (½·log2 N + 0.5) | p99 hops | target p99 (log2 N) | correct |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut largest = None;
    for n in [64usize, 256, 1024] {
        let log2 = (n as f64).log2();
        let r = (2.0 * log2).ceil() as usize;
        let started = Instant::now();
        let ring = build(n, r).await;
        let built = started.elapsed();
        let s = measure(&ring, &mut rng).await;
        println!(
            "| {n} | {r} | {} ({:.1} s) | {:.2} | {:.2} | {} | {:.0} | {:.2}% |",
            ring.rounds,
            built.as_secs_f64(),
            s.mean,
            0.5 * log2 + 0.5,
            s.p99,
            log2,
            100.0 * s.correct as f64 / LOOKUPS as f64
        );
        largest = Some(ring);
    }

    // Half the nodes crash at once; no stabilize, no finger repair.
    let ring = largest.expect("built");
    let mut addrs: Vec<String> = ring.nodes.iter().map(|n| n.me().addr).collect();
    addrs.shuffle(&mut rng);
    for addr in &addrs[..addrs.len() / 2] {
        ring.net.kill(addr);
    }
    let s = measure(&ring, &mut rng).await;
    println!();
    println!("| failure experiment | N | r | killed | correct | wrong | failed | mean hops |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| 50% crash, no repair | {} | {} | {} | {:.2}% | {} | {} | {:.2} |",
        ring.nodes.len(),
        20,
        addrs.len() / 2,
        100.0 * s.correct as f64 / LOOKUPS as f64,
        LOOKUPS - s.correct - s.failed,
        s.failed,
        s.mean
    );
}
