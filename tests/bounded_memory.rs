//! Memory stays bounded whatever the file size: a large upload and download
//! through a node must not grow this process (node and client) by anything
//! near the file's size. The 1 GiB figure against nginx is in the benchmark
//! (`make bench`); this test guards the property on every run.

use futures_util::StreamExt;
use reqwest::StatusCode;
use ringshare_tests::{TestNode, client, pattern};

const CHUNK: usize = 1 << 20;
const CHUNKS: u64 = 256; // 256 MiB

/// Resident set of this process now, from /proc (VmRSS), in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Samples [`rss`] every 20 ms until dropped; keeps the largest sample.
struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Sampler {
    fn start() -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut largest = rss();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                largest = largest.max(rss());
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            largest
        });
        Self { stop, thread: Some(thread) }
    }

    fn largest(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_streams_through_in_bounded_memory() {
    let node = TestNode::start().await;
    let http = client();
    // Warm up: plugins compiled, one small transfer done.
    http.put(node.at("/files/warm")).body(pattern(1, CHUNK)).send().await.unwrap().error_for_status().unwrap();
    http.get(node.at("/files/warm")).send().await.unwrap().bytes().await.unwrap();
    let before = rss();
    let sampler = Sampler::start();

    let block = bytes::Bytes::from(pattern(7, CHUNK));
    let mut expected = blake3::Hasher::new();
    for _ in 0..CHUNKS {
        expected.update(&block);
    }
    let expected = expected.finalize().to_hex().to_string();
    let body = futures_util::stream::iter((0..CHUNKS).map({
        let block = block.clone();
        move |_| Ok::<_, std::io::Error>(block.clone())
    }));
    let put = http.put(node.at("/files/big")).body(reqwest::Body::wrap_stream(body)).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    let entry: serde_json::Value = put.json().await.unwrap();
    assert_eq!(entry["blake3"], expected);

    let get = http.get(node.at("/files/big")).send().await.unwrap();
    assert_eq!(get.status(), StatusCode::OK);
    let mut stream = get.bytes_stream();
    let (mut got, mut size) = (blake3::Hasher::new(), 0u64);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        size += chunk.len() as u64;
        got.update(&chunk);
    }
    assert_eq!(size, CHUNKS * CHUNK as u64);
    assert_eq!(got.finalize().to_hex().to_string(), expected);

    let growth = sampler.largest().saturating_sub(before);
    let file = CHUNKS * CHUNK as u64;
    println!("RSS grew by at most {} MiB while moving a {} MiB file up and down", growth >> 20, file >> 20);
    assert!(growth < file / 8, "RSS grew by {growth} bytes for a {file}-byte file");
}
