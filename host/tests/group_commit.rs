//! Group commit under a crash: a node process (k = 1) takes uploads from
//! sixteen clients at once, small files and files of several blocks, new
//! names and overwrites, and is killed (SIGKILL) while they run. Started
//! again on the same data folder it serves every acknowledged upload byte
//! for byte, and every file it lists is whole: one of the versions a client
//! sent, never part of one. While it ran, its uploads shared their syncs:
//! the small ones syncs of the journal (`store/journal.rs`), the others
//! syncs of the store; what the journal held at the kill was written again
//! at the restart.
//!
//! A killed process leaves the kernel's page cache behind, so this checks
//! what a crash of the node leaves (commits cut between their steps, temp
//! files, records), not a power failure; the order of syncs that covers a
//! power failure is in `store/sync.rs` and the upload session.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ringshare");
const CLIENTS: usize = 16;
/// Uploads acknowledged before the kill.
const BEFORE_KILL: usize = 300;

fn plugins() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins/default");
    assert!(dir.join("index.wasm").is_file(), "build the plugins first (scripts/build-plugins.sh)");
    dir
}

/// A node process, killed when dropped (also when the test fails).
struct Node(Child);

impl Node {
    /// Kills the node at once (SIGKILL) and waits for it to end.
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn start(data: &Path, port: u16) -> Node {
    let listen = format!("127.0.0.1:{port}");
    let mut command = Command::new(BIN);
    command.args(["node", "--amqp", "none", "--replicas", "1", "--listen", &listen, "--data"]).arg(data);
    command.arg("--plugins").arg(plugins()).args(["--embedded-plugins", "false"]);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("RINGSHARE_")) {
        command.env_remove(key);
    }
    Node(command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start the node"))
}

async fn ready(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while reqwest::get(format!("{url}/ring")).await.map(|r| r.status()).ok() != Some(StatusCode::OK) {
        assert!(Instant::now() < deadline, "the node at {url} did not answer in 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The content of version `version` of file `file`: 1 KiB to 1.2 MiB, so
/// that overwrites go from one block to several and back.
fn content(file: usize, version: usize) -> Vec<u8> {
    let len = match (file + version) % 4 {
        0 => 1 << 10,
        1 => 3 << 10,
        2 => 300 << 10,
        _ => 1_200 << 10,
    };
    let seed = (file * 1_000 + version) as u64;
    (0..len).map(|i| ((i as u64).wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(97)) as u8).collect()
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok()))
        .unwrap_or_else(|| panic!("no {name} in the metrics"))
        .round() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_batch_keeps_every_acknowledged_upload_and_nothing_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut node = start(&data, port);
    ready(&url).await;

    // name -> hashes of every version sent, in order (one client writes a
    // name); name -> how many of them were sent when the last was acknowledged.
    let sent: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
    let acked: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let http = reqwest::Client::new();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let uploads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (sent, acked, http, stop, url) = (sent.clone(), acked.clone(), http.clone(), stop.clone(), url.clone());
        let uploads = uploads.clone();
        clients.push(tokio::spawn(async move {
            // Bounded: at most 200 uploads per client.
            for round in 0..200 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                // A third of the uploads overwrite a name this client wrote;
                // the others add a name (no overwrite: the plugin links).
                let overwrite = round % 3 == 2;
                let file = client * 1_000 + if overwrite { round / 3 } else { round };
                let name = format!("f{file}");
                let body = content(file, round);
                let hash = blake3::hash(&body).to_hex().to_string();
                let count = {
                    let mut sent = sent.lock().unwrap();
                    let versions = sent.entry(name.clone()).or_default();
                    versions.push(hash);
                    versions.len()
                };
                let answer = http.put(format!("{url}/files/{name}?overwrite={overwrite}")).body(body).send().await;
                match answer {
                    Ok(answer) if answer.status().is_success() => {
                        acked.lock().unwrap().insert(name, count);
                        uploads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    // The node died under this request: not acknowledged.
                    _ => return,
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while uploads.load(std::sync::atomic::Ordering::Relaxed) < BEFORE_KILL {
        let done = uploads.load(std::sync::atomic::Ordering::Relaxed);
        assert!(Instant::now() < deadline, "{done} uploads acknowledged in 300 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let metrics = reqwest::get(format!("{url}/metrics")).await.unwrap().text().await.unwrap();
    node.kill();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let (syncs, writes) =
        (metric(&metrics, "ringshare_store_syncs_total"), metric(&metrics, "ringshare_store_synced_writes_total"));
    assert!(syncs > 0 && syncs < writes, "uploads shared their syncs: {syncs} syncs for {writes} writes");
    let (syncs, writes) =
        (metric(&metrics, "ringshare_journal_syncs_total"), metric(&metrics, "ringshare_journal_writes_total"));
    assert!(syncs > 0 && syncs < writes, "small uploads shared journal syncs: {syncs} syncs for {writes} writes");

    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut node = start(&data, port);
    ready(&url).await;
    let acked = acked.lock().unwrap().clone();
    let sent = sent.lock().unwrap().clone();
    // Every acknowledged upload byte for byte (the node checks every
    // block), or the version of the same name sent after it, in flight at
    // the kill; never an older one.
    for (name, count) in &acked {
        let answer = http.get(format!("{url}/files/{name}")).send().await.unwrap();
        let status = answer.status();
        let body = answer.bytes().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{name} was acknowledged: {}", String::from_utf8_lossy(&body));
        let got = blake3::hash(&body).to_hex().to_string();
        let allowed = &sent[name][count - 1..];
        assert!(allowed.contains(&got), "{name}: {got} is not the acknowledged version or a later one");
    }
    // Every file listed is whole: one of the versions sent.
    let listed: Value = http.get(format!("{url}/files")).send().await.unwrap().json().await.unwrap();
    let listed = listed.as_array().expect("a listing");
    assert!(listed.len() >= acked.len(), "{} listed, {} acknowledged", listed.len(), acked.len());
    for entry in listed {
        let name = entry["name"].as_str().unwrap();
        let answer = http.get(format!("{url}/files/{name}")).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{name} is listed");
        let got = blake3::hash(&answer.bytes().await.unwrap()).to_hex().to_string();
        assert!(sent.get(name).is_some_and(|versions| versions.contains(&got)), "{name} is listed but is {got}");
        if let Some(entry_hash) = entry["blake3"].as_str() {
            assert_eq!(entry_hash, got, "{name}: the listing's hash is the content's");
        }
    }
    let temps = std::fs::read_dir(data.join("store/tmp")).unwrap().count();
    assert_eq!(temps, 0, "the temp files of uploads cut short are gone after the restart");
    node.kill();
}
