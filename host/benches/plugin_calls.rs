//! Plugin call cost (not a test): a fresh Store and instance per call, with
//! wasmtime's on-demand instance allocator (the default) against its pooling
//! allocator, in the same run. Uses the default plugins built by
//! `scripts/build-plugins.sh`.
//!
//! Run: `cargo bench -p ringshare --bench plugin_calls`

use std::path::Path;
use std::time::Instant;

use ringshare::{FileName, PluginHost, PluginLimits};

const CALLS: usize = 2_000;

async fn per_call_micros(pooling: bool, store: &Path) -> (f64, f64) {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins/default");
    assert!(plugins.join("index.wasm").is_file(), "build the plugins first (scripts/build-plugins.sh)");
    let limits = PluginLimits { pooling, ..PluginLimits::default() };
    let host = PluginHost::load(&plugins, store, limits).expect("plugins load");
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = ringshare::store::StoreDir::prepare(dir.path()).unwrap();
    for i in 0..8 {
        let name = if i == 0 { "sample.bin".to_string() } else { format!("file-{i}") };
        std::fs::write(dir.path().join("files").join(name), vec![i as u8; 4096]).unwrap();
    }
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
}
