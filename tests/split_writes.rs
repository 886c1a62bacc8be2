//! Writes while the network splits: 6 nodes on namespaced hosts (run as
//! root), 8 clients uploading 1 KiB files through every node, then the
//! network splits 3|3 and later heals. Prints the latency of writes started
//! before the split, in its first second, in seconds 1 to 5 and after, with
//! failures, then how long the heal took to one ring. `make bench` runs it
//! (scripts/bench-split.sh); `cargo run --release -p ringshare-tests
//! --example split_writes [SPLIT_SECONDS]`.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use ringshare_tests::hosts::{Hosts, ring_on, write_token};
use ringshare_tests::{NodeSetup, client, wait_converged_within};

const CLIENTS: usize = 8;
const TOKEN: &str = "split-bench-token";

/// One write: when it started (s since the load began), how long it took, whether it was acknowledged.
type Write = (f64, f64, bool);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let split_for = Duration::from_secs(std::env::args().nth(1).map_or(20, |s| s.parse().expect("seconds")));
    let (hosts, tokens) = (Hosts::new(6), tempfile::tempdir().unwrap());
    // The shipped ring timings and call timeout, not the tests'.
    let shipped = |_| NodeSetup {
        chord: ringshare::chord::ChordConfig::default(),
        rpc_timeout: ringshare::NodeConfig::new("", "").rpc_timeout,
        ..NodeSetup::default()
    };
    let nodes = ring_on(&hosts, &write_token(tokens.path(), TOKEN), shipped).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let began = Instant::now();
    let run_for = Duration::from_secs(5) + split_for;
    let load: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let url = urls[c % urls.len()].clone();
            tokio::spawn(async move {
                let mut writes: Vec<Write> = Vec::new();
                for n in 0..1_000_000u64 {
                    if began.elapsed() > run_for {
                        break;
                    }
                    let start = began.elapsed();
                    let put = client().put(format!("{url}/files/c{c}-{n}")).bearer_auth(TOKEN).body(vec![7u8; 1024]);
                    let answer = put.timeout(Duration::from_secs(30)).send().await;
                    let ok = answer.is_ok_and(|a| a.status() == StatusCode::CREATED);
                    writes.push((start.as_secs_f64(), (began.elapsed() - start).as_secs_f64(), ok));
                }
                writes
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cut = began.elapsed().as_secs_f64();
    hosts.split(&[3, 4, 5]);
    let mut writes = Vec::new();
    for client in load {
        writes.extend(client.await.unwrap());
    }
    let healed = Instant::now();
    hosts.heal();
    wait_converged_within(Duration::from_secs(120), &nodes).await;
    let one_ring = healed.elapsed().as_secs_f64();

    println!("writes of 1 KiB by {CLIENTS} clients through 6 nodes, split 3|3 for {} s:", split_for.as_secs());
    for (from, to, what) in [
        (0.0, cut, "before the split"),
        (cut, cut + 1.0, "started in its first second"),
        (cut + 1.0, cut + 5.0, "started in seconds 1-5"),
        (cut + 5.0, f64::MAX, "started after 5 s"),
        (cut, f64::MAX, "started during the split"),
    ] {
        let during: Vec<&Write> = writes.iter().filter(|(s, _, _)| *s >= from && *s < to).collect();
        let failed = during.iter().filter(|(_, _, ok)| !ok).count();
        let mut took: Vec<f64> = during.iter().map(|(_, d, _)| *d).collect();
        took.sort_by(f64::total_cmp);
        let at = |q: f64| took.get(((took.len() as f64 * q) as usize).min(took.len().saturating_sub(1))).copied();
        println!(
            "  {what:<28} {:>5} writes, {failed} failed, p50 {:.3} s, p99 {:.3} s, max {:.3} s",
            took.len(),
            at(0.5).unwrap_or(0.0),
            at(0.99).unwrap_or(0.0),
            took.last().copied().unwrap_or(0.0)
        );
    }
    println!("  healed: one ring of 6 after {one_ring:.1} s");
}
