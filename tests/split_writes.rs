//! Writes while the network splits: 6 nodes on namespaced hosts (run as
//! root), 8 clients uploading 1 KiB files through every node, then the
//! network splits 3|3 and later heals. Prints the latency of writes started
//! before the split, in its first second, in seconds 1 to 5 and after, with
//! failures, then how long the heal took to one ring.
//!
//! The 8 clients are a closed loop: each waits for its write before the
//! next, so while writes caught by the cut wait, few start. An open-loop
//! prober beside them starts a write every [`PROBE_EVERY`] whatever the
//! others do, from 2 s before the cut to 5 s after it, so the split's first
//! second has writes of its own to measure. `make bench` runs it
//! (scripts/bench-split.sh); `cargo run --release -p ringshare-tests
//! --example split_writes [SPLIT_SECONDS]`.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use ringshare_tests::hosts::{Hosts, ring_on, write_token};
use ringshare_tests::{NodeSetup, client, wait_converged_within};

const CLIENTS: usize = 8;
const TOKEN: &str = "split-bench-token";
/// How often the open-loop prober starts a write.
const PROBE_EVERY: Duration = Duration::from_millis(25);

/// One write: when it started (s since the load began), how long it took, whether it was acknowledged.
type Write = (f64, f64, bool);

/// Uploads 1 KiB as `name` through `url`, timed from `began`.
async fn write(url: &str, name: &str, began: Instant) -> Write {
    let start = began.elapsed();
    let put = client().put(format!("{url}/files/{name}")).bearer_auth(TOKEN).body(vec![7u8; 1024]);
    let answer = put.timeout(Duration::from_secs(30)).send().await;
    let ok = answer.is_ok_and(|a| a.status() == StatusCode::CREATED);
    (start.as_secs_f64(), (began.elapsed() - start).as_secs_f64(), ok)
}

/// Prints each row's count, failures and latency quantiles.
fn report(title: &str, writes: &[Write], rows: &[(f64, f64, &str)]) {
    println!("{title}");
    for &(from, to, what) in rows {
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
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // RUST_LOG=warn shows the nodes' own account of the split on stderr.
    if std::env::var_os("RUST_LOG").is_some() {
        let filter = tracing_subscriber::EnvFilter::from_default_env();
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    }
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
                    writes.push(write(&url, &format!("c{c}-{n}"), began).await);
                }
                writes
            })
        })
        .collect();
    // The prober: one write every PROBE_EVERY, each on its own task, from
    // 3 s to 10 s after the load began (the cut is at 5 s).
    let probe_urls = urls.clone();
    let prober = tokio::spawn(async move {
        let mut every = tokio::time::interval_at((began + Duration::from_secs(3)).into(), PROBE_EVERY);
        let mut probes = Vec::new();
        for n in 0..(7_000 / PROBE_EVERY.as_millis() as usize) {
            every.tick().await;
            let url = probe_urls[n % probe_urls.len()].clone();
            probes.push(tokio::spawn(async move { write(&url, &format!("probe-{n}"), began).await }));
        }
        let mut writes = Vec::new();
        for probe in probes {
            writes.push(probe.await.unwrap());
        }
        writes
    });
    tokio::time::sleep_until((began + Duration::from_secs(5)).into()).await;
    let cut = began.elapsed().as_secs_f64();
    eprintln!("the split at {:?}", std::time::SystemTime::now());
    hosts.split(&[3, 4, 5]);
    let mut writes = Vec::new();
    for client in load {
        writes.extend(client.await.unwrap());
    }
    let probes = prober.await.unwrap();
    let healed = Instant::now();
    hosts.heal();
    wait_converged_within(Duration::from_secs(120), &nodes).await;
    let one_ring = healed.elapsed().as_secs_f64();

    let rows = [
        (0.0, cut, "before the split"),
        (cut, cut + 1.0, "started in its first second"),
        (cut + 1.0, cut + 5.0, "started in seconds 1-5"),
        (cut + 5.0, f64::MAX, "started after 5 s"),
        (cut, f64::MAX, "started during the split"),
    ];
    let title =
        format!("writes of 1 KiB by {CLIENTS} clients through 6 nodes, split 3|3 for {} s:", split_for.as_secs());
    report(&title, &writes, &rows);
    let title =
        format!("open-loop probes, one write every {} ms through the 6 nodes in turn:", PROBE_EVERY.as_millis());
    report(&title, &probes, &rows[..3]);
    if std::env::var_os("RUST_LOG").is_some() {
        for (n, (start, took, ok)) in probes.iter().enumerate().filter(|(_, w)| w.1 > 1.5) {
            eprintln!(
                "slow probe-{n} through node {}: started {:.3} s after the cut, took {took:.3} s, ok {ok}",
                n % 6 + 1,
                start - cut
            );
        }
    }
    println!("  healed: one ring of 6 after {one_ring:.1} s");
}
