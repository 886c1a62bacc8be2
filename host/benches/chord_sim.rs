//! Scale benchmark of the ring logic (not a test): builds rings of N = 64,
//! 256 and 1,024 nodes in one process over the in-memory transport (the
//! same protocol code as over gRPC: joins, stabilize rounds, fix-fingers),
//! then measures hops over 10,000 random lookups, and lookup correctness
//! after half the nodes crash at once with no repair time.
//!
//! Then the Chord paper's churn experiment (Stoica et al., ToN 2003, §V-E,
//! Table III), in simulated time: 1,024 nodes with successor lists of 20,
//! each stabilizing at intervals uniform in [15, 45] s (its successor list,
//! its predecessor, and one finger entry per round, the fingers taken in
//! turn), nodes joining and leaving as Poisson processes of rate R each
//! (R = 0.05 to 0.40 per second), lookups of random keys from random live
//! nodes as a Poisson process of one per second. A lookup fails if it
//! answers anything but the live node that is responsible for the key
//! right then. "Timeouts" are calls to a node that is gone. Each rate
//! runs 600 s to settle, then 10,000 lookups, once with graceful leaves
//! (the paper's experiment) and once with crashes; the paper's row is
//! printed beside ours.
//!
//! Run: `cargo bench -p ringshare --bench chord_sim`

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use ringshare::chord::sim::{SimNet, oracle_successor};
use ringshare::chord::{BITS, ChordConfig, ChordNode, Id};

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

    println!();
    println!(
        "Churn (ToN 2003 Table III setup, N = 1,024, r = 20, stabilize every U[15, 45] s, 1 lookup/s, 10,000 lookups per row):"
    );
    println!();
    println!(
        "| R /s | departures | path length mean (1st, 99th) | paper | timeouts mean (1st, 99th) | paper | failures per 10,000 | paper |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (i, rate) in [0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.35, 0.40].into_iter().enumerate() {
        for crash in [false, true] {
            let started = Instant::now();
            let row = churn(rate, crash, &mut rng).await;
            let (hops, timeouts, failures) = PAPER[i];
            println!(
                "| {rate:.2} | {} | {:.2} ({}, {}) | {hops} | {:.2} ({}, {}) | {timeouts} | {} | {failures} | <!-- {:.0} s -->",
                if crash { "crashes" } else { "leaves" },
                row.hops.0,
                row.hops.1,
                row.hops.2,
                row.timeouts.0,
                row.timeouts.1,
                row.timeouts.2,
                row.failures,
                started.elapsed().as_secs_f64()
            );
        }
    }
}

/// Table III of the Chord paper (ToN 2003), by rate: path length mean
/// (1st, 99th percentiles), timeouts per lookup likewise, failures per
/// 10,000 lookups (joins and graceful leaves).
const PAPER: [(&str, &str, u32); 8] = [
    ("3.90 (1, 9)", "0.05 (0, 2)", 0),
    ("3.83 (1, 9)", "0.11 (0, 2)", 0),
    ("3.84 (1, 9)", "0.16 (0, 2)", 2),
    ("3.81 (1, 9)", "0.23 (0, 3)", 5),
    ("3.83 (1, 9)", "0.30 (0, 3)", 6),
    ("3.91 (1, 9)", "0.34 (0, 4)", 8),
    ("3.94 (1, 10)", "0.42 (0, 4)", 16),
    ("4.06 (1, 10)", "0.46 (0, 5)", 15),
];

/// What one churn run measured: path length and timeouts per lookup, each
/// (mean, 1st percentile, 99th percentile), and failed lookups.
struct Churned {
    hops: (f64, usize, usize),
    timeouts: (f64, usize, usize),
    failures: usize,
}

/// A simulated event, at a time in µs.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Stabilize(usize),
    Join,
    Depart,
    Lookup,
}

/// Settling time before lookups count, and lookups counted.
const SETTLE_S: f64 = 600.0;
const CHURN_LOOKUPS: usize = 10_000;

/// The churn experiment at join and departure rate `rate` per second each;
/// departures crash if `crash`, else leave gracefully.
async fn churn(rate: f64, crash: bool, rng: &mut StdRng) -> Churned {
    const N: usize = 1024;
    let r = 20;
    let ring = build(N, r).await;
    let (net, mut nodes) = (ring.net, ring.nodes);
    let config = ChordConfig { successors: r, ..ChordConfig::default() };
    // The fingers worth refreshing: those reaching past a node's own arc
    // (2·log2 N of them); the rest point at the successor anyway.
    let fingers = 2 * N.ilog2();
    let mut next_finger = vec![0u32; N];
    let mut live: Vec<usize> = (0..N).collect();
    let mut queue: BinaryHeap<Reverse<(u64, u64, Event)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut at = |queue: &mut BinaryHeap<Reverse<(u64, u64, Event)>>, t: f64, event: Event| {
        seq += 1;
        queue.push(Reverse(((t * 1e6) as u64, seq, event)));
    };
    let exp = |rng: &mut StdRng, rate: f64| -(1.0 - rng.random::<f64>()).ln() / rate;
    for i in 0..N {
        at(&mut queue, rng.random_range(0.0..45.0), Event::Stabilize(i));
    }
    at(&mut queue, exp(rng, rate), Event::Join);
    at(&mut queue, exp(rng, rate), Event::Depart);
    at(&mut queue, SETTLE_S, Event::Lookup);
    let (mut hops, mut timeouts, mut failures) = (Vec::new(), Vec::new(), 0);
    while let Some(Reverse((micros, _, event))) = queue.pop() {
        let t = micros as f64 / 1e6;
        match event {
            Event::Stabilize(i) => {
                if !net.is_up(&nodes[i].me().addr) || nodes[i].is_leaving() {
                    continue;
                }
                let node = &nodes[i];
                node.stabilize().await;
                node.check_predecessor().await;
                node.fix_finger(BITS - 1 - next_finger[i] % fingers).await;
                next_finger[i] += 1;
                at(&mut queue, t + rng.random_range(15.0..45.0), Event::Stabilize(i));
            }
            Event::Join => {
                let node = net.add(&format!("10.{}.0.1:7000", nodes.len()), config);
                let via = nodes[live[rng.random_range(0..live.len())]].me().addr;
                if node.join(&via).await.is_ok() {
                    node.stabilize().await;
                    live.push(nodes.len());
                    at(&mut queue, t + rng.random_range(15.0..45.0), Event::Stabilize(nodes.len()));
                    next_finger.push(0);
                } else {
                    next_finger.push(0);
                }
                nodes.push(node);
                at(&mut queue, t + exp(rng, rate), Event::Join);
            }
            Event::Depart => {
                let gone = live.swap_remove(rng.random_range(0..live.len()));
                if crash {
                    net.kill(&nodes[gone].me().addr);
                } else {
                    nodes[gone].leave().await;
                }
                at(&mut queue, t + exp(rng, rate), Event::Depart);
            }
            Event::Lookup => {
                let from = &nodes[live[rng.random_range(0..live.len())]];
                let key = Id(rng.random());
                let before = net.unanswered();
                let answer = from.lookup(key).await;
                timeouts.push((net.unanswered() - before) as usize);
                let ids: Vec<Id> = {
                    let mut ids: Vec<Id> = live.iter().map(|&i| nodes[i].me().id).collect();
                    ids.sort_unstable();
                    ids
                };
                match answer {
                    Ok((node, h)) if node.id == oracle_successor(&ids, key) => hops.push(h),
                    Ok((_, h)) => {
                        hops.push(h);
                        failures += 1;
                    }
                    Err(_) => failures += 1,
                }
                if timeouts.len() == CHURN_LOOKUPS {
                    break;
                }
                at(&mut queue, t + exp(rng, 1.0), Event::Lookup);
            }
        }
    }
    let spread = |mut v: Vec<usize>| {
        v.sort_unstable();
        let mean = v.iter().sum::<usize>() as f64 / v.len().max(1) as f64;
        (mean, v[v.len() / 100], v[v.len() * 99 / 100])
    };
    Churned { hops: spread(hops), timeouts: spread(timeouts), failures }
}
