//! Load generator for `scripts/bench-small-files.sh` (not a test): PUTs
//! FILES small files of SIZE bytes from CLIENTS concurrent clients to one or
//! more servers (round robin), then GETs them all back, checking every
//! body. Prints one line of JSON: the PUT rate over all files and over the
//! first and the last tenth of them (in completion order), and the GET
//! rate. Works against any server that takes `PUT {base}{name}` and serves
//! `GET {base}{name}` (ringshare's `/files/`, nginx WebDAV).
//!
//!   cargo bench --bench small_files -- --base URL[,URL...] [--files N]
//!       [--clients C] [--size BYTES] [--prefix P] [--mixed SECONDS]
//!
//! With `--mixed`, the clients then run a mixed load for that long: each
//! request is a PUT of a new file or a GET of one already written, half and
//! half; the JSON line adds the operations per second and the p50 and p99
//! latency of each kind.

use std::time::{Duration, Instant};

use futures_util::StreamExt;

struct Args {
    bases: Vec<String>,
    files: usize,
    clients: usize,
    size: usize,
    prefix: String,
    mixed: u64,
}

fn args() -> Args {
    let mut parsed =
        Args { bases: Vec::new(), files: 20_000, clients: 8, size: 1024, prefix: "small".into(), mixed: 0 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--base" => parsed.bases = value().split(',').map(str::to_owned).collect(),
            "--files" => parsed.files = value().parse().expect("--files N"),
            "--clients" => parsed.clients = value().parse().expect("--clients C"),
            "--size" => parsed.size = value().parse().expect("--size BYTES"),
            "--prefix" => parsed.prefix = value(),
            "--mixed" => parsed.mixed = value().parse().expect("--mixed SECONDS"),
            "--bench" => {} // added by `cargo bench`
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(!parsed.bases.is_empty(), "--base URL is needed");
    assert!(parsed.files >= 10 && parsed.clients > 0, "at least 10 files and one client");
    parsed
}

/// The content of file `i`: distinct per file, `size` bytes.
fn body(i: usize, size: usize) -> Vec<u8> {
    let seed = format!("file {i} ");
    seed.bytes().cycle().take(size).collect()
}

/// Files per second over the completions `from..to` (in completion order).
fn rate(done: &[Duration], from: usize, to: usize) -> f64 {
    let span = done[to - 1].saturating_sub(if from == 0 { Duration::ZERO } else { done[from - 1] });
    (to - from) as f64 / span.as_secs_f64().max(1e-9)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = args();
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.clients).build().expect("a client");
    let url = |i: usize| format!("{}{}-{i:06}", args.bases[i % args.bases.len()], args.prefix);

    let started = Instant::now();
    let puts = futures_util::stream::iter(0..args.files).map(|i| {
        let (http, url, body) = (http.clone(), url(i), body(i, args.size));
        async move {
            let answer = http.put(&url).body(body).send().await.map_err(|e| format!("PUT {url}: {e}"))?;
            if !answer.status().is_success() {
                return Err(format!("PUT {url}: {}", answer.status()));
            }
            Ok::<_, String>(started.elapsed())
        }
    });
    let mut done: Vec<Duration> = Vec::with_capacity(args.files);
    let mut puts = puts.buffer_unordered(args.clients);
    while let Some(outcome) = puts.next().await {
        done.push(outcome.unwrap_or_else(|e| panic!("{e}")));
    }
    done.sort();
    let tenth = args.files / 10;
    let put_rate = rate(&done, 0, args.files);
    let (first, last) = (rate(&done, 0, tenth), rate(&done, args.files - tenth, args.files));

    let started = Instant::now();
    let gets = futures_util::stream::iter(0..args.files).map(|i| {
        let (http, url, want) = (http.clone(), url(i), body(i, args.size));
        async move {
            let answer = http.get(&url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
            let status = answer.status();
            let got = answer.bytes().await.map_err(|e| format!("GET {url}: {e}"))?;
            if !status.is_success() || got[..] != want[..] {
                return Err(format!("GET {url}: {status}, {} bytes that differ", got.len()));
            }
            Ok::<_, String>(())
        }
    });
    let mut gets = gets.buffer_unordered(args.clients);
    while let Some(outcome) = gets.next().await {
        outcome.unwrap_or_else(|e| panic!("{e}"));
    }
    let get_rate = args.files as f64 / started.elapsed().as_secs_f64();
    let mixed = if args.mixed > 0 { mixed(&args, &http).await } else { String::new() };
    println!(
        "{{\"files\":{},\"clients\":{},\"size\":{},\"put_per_s\":{put_rate:.1},\"put_first_tenth_per_s\":{first:.1},\"put_last_tenth_per_s\":{last:.1},\"get_per_s\":{get_rate:.1}{mixed}}}",
        args.files, args.clients, args.size
    );
}

/// The mixed load (see the module's notes): JSON fields to add.
async fn mixed(args: &Args, http: &reqwest::Client) -> String {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.mixed);
    let clients = (0..args.clients).map(|client| {
        let (http, bases, prefix, size, files) =
            (http.clone(), args.bases.clone(), args.prefix.clone(), args.size, args.files);
        tokio::spawn(async move {
            // (is a PUT, latency) of each request, bounded by the deadline.
            let mut took: Vec<(bool, Duration)> = Vec::new();
            let mut state = client as u64 * 2_654_435_761 + 1;
            let mut n = 0;
            while Instant::now() < deadline {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                let pick = (state >> 33) as usize;
                let base = &bases[(pick / 2) % bases.len()];
                let at = Instant::now();
                if pick.is_multiple_of(2) {
                    n += 1;
                    let url = format!("{base}{prefix}-mixed-{client}-{n}");
                    let answer = http.put(&url).body(body(client * 1_000_000 + n, size)).send().await;
                    let answer = answer.unwrap_or_else(|e| panic!("PUT {url}: {e}"));
                    assert!(answer.status().is_success(), "PUT {url}: {}", answer.status());
                    took.push((true, at.elapsed()));
                } else {
                    let i = (pick / 2) % files;
                    let url = format!("{}{prefix}-{i:06}", bases[i % bases.len()]);
                    let answer = http.get(&url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
                    let status = answer.status();
                    let got = answer.bytes().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
                    assert!(status.is_success() && got[..] == body(i, size)[..], "GET {url}: {status}");
                    took.push((false, at.elapsed()));
                }
            }
            took
        })
    });
    let mut took = Vec::new();
    for client in clients.collect::<Vec<_>>() {
        took.extend(client.await.expect("a client"));
    }
    let ops = took.len() as f64 / started.elapsed().as_secs_f64();
    let quantiles = |put: bool| {
        let mut kind: Vec<Duration> = took.iter().filter(|(p, _)| *p == put).map(|(_, d)| *d).collect();
        kind.sort();
        let at = |q: f64| {
            kind.get(((kind.len() as f64 * q) as usize).min(kind.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        (at(0.5), at(0.99))
    };
    let ((put50, put99), (get50, get99)) = (quantiles(true), quantiles(false));
    format!(
        ",\"mixed_ops_per_s\":{ops:.1},\"mixed_put_p50_ms\":{put50:.1},\"mixed_put_p99_ms\":{put99:.1},\"mixed_get_p50_ms\":{get50:.1},\"mixed_get_p99_ms\":{get99:.1}"
    )
}
