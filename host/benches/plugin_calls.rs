//! Plugin call cost (not a test): a fresh Store and instance per call, with
//! wasmtime's on-demand instance allocator against its pooling (the default)
//! allocator, in the same run. Uses the default plugins built by
//! `scripts/build-plugins.sh`.
//!
//! Run: `cargo bench -p ringshare --bench plugin_calls`

use std::path::Path;
use std::time::Instant;

use ringshare::{FileName, GroupSync, PluginHost, PluginLimits, Records};

const CALLS: usize = 2_000;

/// The group commit of a store, and the host's records of its files.
fn synced(store: &Path) -> (std::sync::Arc<GroupSync>, std::sync::Arc<Records>) {
    (std::sync::Arc::new(GroupSync::open(&[store]).expect("open the store")), std::sync::Arc::new(Records::in_memory()))
}

async fn per_call_micros(pooling: bool, store: &Path) -> (f64, f64) {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins/default");
    assert!(plugins.join("index.wasm").is_file(), "build the plugins first (scripts/build-plugins.sh)");
    let limits = PluginLimits { pooling, ..PluginLimits::default() };
    let host = PluginHost::load(&plugins, store, limits, false, synced(store)).expect("plugins load");
    let name = FileName::parse("sample.bin").unwrap();
    let missing = FileName::parse("missing.bin").unwrap();

    // (Listings are answered from a cache until the store changes, so the
    // index plugin is not called per request; `remove` instantiates the
    // upload plugin every time.)
    let started = Instant::now();
    for _ in 0..CALLS {
        assert!(!host.remove(&missing).await.expect("remove"));
    }
    let remove = started.elapsed().as_secs_f64() * 1e6 / CALLS as f64;

    let started = Instant::now();
    for _ in 0..CALLS {
        let handle = host.download(&name).await.expect("open");
        assert_eq!(handle.entry().size, 4096);
    }
    let open = started.elapsed().as_secs_f64() * 1e6 / CALLS as f64;
    (remove, open)
}

/// Files in the listing measured.
const LISTED: usize = 1_000;

/// A store of `count` files of `size` bytes written through the upload
/// plugin (so each has its record, as files in a node do), the first named
/// `sample.bin`; and a host on it.
async fn fill(store: &Path, count: usize, size: usize) -> std::sync::Arc<PluginHost> {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins/default");
    let host = PluginHost::load(&plugins, store, PluginLimits::default(), false, synced(store)).expect("plugins load");
    for i in 0..count {
        let name = if i == 0 { "sample.bin".to_owned() } else { format!("file-{i:04}") };
        let mut upload = host.upload(&FileName::parse(&name).unwrap(), false, None).await.expect("upload");
        upload.write(vec![bytes::Bytes::from(vec![i as u8; size])]).await.expect("write");
        upload.finish(None).await.expect("finish");
    }
    host
}

/// A listing of `LISTED` files, each with its record, when the cache has
/// missed: `remove` of a missing file marks the store changed, so each round
/// is one remove and one listing; the removes alone are timed too and
/// taken off. Returns µs per listing.
async fn listing_micros(store: &Path) -> f64 {
    const ROUNDS: usize = 40;
    let host = fill(store, LISTED, 100).await;
    let missing = FileName::parse("missing.bin").unwrap();
    let mut removes = 0.0;
    let mut both = 0.0;
    for _ in 0..ROUNDS {
        let started = Instant::now();
        host.remove(&missing).await.expect("remove");
        removes += started.elapsed().as_secs_f64();
        let started = Instant::now();
        host.remove(&missing).await.expect("remove");
        assert_eq!(host.list().await.expect("list").entries.len(), LISTED);
        both += started.elapsed().as_secs_f64();
    }
    (both - removes) * 1e6 / ROUNDS as f64
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = ringshare::store::StoreDir::prepare(dir.path()).unwrap();
    fill(store.root(), 8, 4096).await;
    // Warm both once (page cache, first compile), then measure.
    per_call_micros(false, store.root()).await;
    let (remove_demand, open_demand) = per_call_micros(false, store.root()).await;
    let (remove_pool, open_pool) = per_call_micros(true, store.root()).await;
    println!("| call ({CALLS} each) | on-demand µs | pooling µs | pooling / on-demand |");
    println!("|---|---|---|---|");
    println!(
        "| upload remove (no such file) | {remove_demand:.1} | {remove_pool:.1} | {:.2} |",
        remove_pool / remove_demand
    );
    println!("| download open | {open_demand:.1} | {open_pool:.1} | {:.2} |", open_pool / open_demand);
    let listed = tempfile::tempdir().unwrap();
    let listed = ringshare::store::StoreDir::prepare(listed.path()).unwrap();
    let list = listing_micros(listed.root()).await;
    println!();
    println!(
        "index list of {LISTED} files after a change: {:.1} ms ({:.1} µs per file)",
        list / 1e3,
        list / LISTED as f64
    );
    println!("(each file written through the upload plugin, so that it has its record)");
}
