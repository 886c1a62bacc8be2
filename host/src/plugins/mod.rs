//! Plugins: WebAssembly components that implement a node's index, upload and
//! download behaviours, or serve routes of their own, loaded from a folder
//! that the node watches (a plugin added, replaced or removed takes effect
//! without a restart) and run sandboxed.
//!
//! - `bindings`: host side of the WIT worlds in `wit/`;
//! - `engine`: the engine and the epoch clock behind call deadlines;
//! - `manifest`: what a plugin asks for (`NAME.toml`) and what it is granted;
//! - `load`: reading one file of the folder and deciding what it is;
//! - `registry`: which version of which plugin serves, and calls in flight;
//! - `watch`: following the folder's changes;
//! - `sandbox`: per-instance state, capabilities and memory cap;
//! - `store_index`: the host's index of the store (every file's entry, in
//!   memory), kept by the plugins' writes and a watch of the store;
//! - `session`: the calls the host makes (list, streamed upload, streamed
//!   download), each on a fresh `Store` on a blocking thread, on the
//!   version that was current when it started;
//! - `error`: how those calls fail.

mod bindings;
mod content;
pub mod embedded;
mod engine;
mod error;
mod http;
mod load;
mod manifest;
mod registry;
mod sandbox;
mod session;
mod store_index;
mod watch;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use wasmtime::Engine;
use wasmtime::component::Linker;

use crate::config::PluginLimits;
use crate::integrity::Digest;
use crate::store::journal::Journal;
use crate::store::records::Records;
use crate::store::sync::GroupSync;
use bindings::download::DownloadPluginPre;
use bindings::index::IndexPluginPre;
use bindings::upload::UploadPluginPre;
use registry::{Call, Registry, Slot};
use sandbox::Sandbox;
use store_index::Filling;

pub use error::{PluginError, Refusal};
pub use http::CONCURRENT_REQUESTS as HTTP_REQUESTS_AT_ONCE;
pub use load::{Description, describe};
pub use manifest::{Grant, Manifest, StoreAccess};
pub use registry::{PluginStatus, Source};
pub use session::{DownloadHandle, Finished, UploadHandle};
pub use store_index::{Listing, Lookup};

/// The behaviours a plugin can provide; read from what the component exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    /// Lists the node's files.
    Index,
    /// Writes uploads into the store.
    Upload,
    /// Serves downloads from the store.
    Download,
    /// Serves HTTP requests under `/x/{route}/` (`wasi:http`).
    Http,
}

/// `ringshare:plugin/NAME` at the version of the plugin contract this host
/// speaks (`wit/plugin.wit`): the one place that version is written.
macro_rules! contract {
    ($name:literal) => {
        concat!("ringshare:plugin/", $name, "@0.6.0")
    };
}
pub(crate) use contract;

/// The version of the plugin contract this host speaks.
pub const CONTRACT_VERSION: &str = contract!("").split_at("ringshare:plugin/@".len()).1;

impl PluginKind {
    /// The kinds a node needs one of each, in a fixed order.
    pub const ALL: [PluginKind; 3] = [PluginKind::Index, PluginKind::Upload, PluginKind::Download];

    /// The WIT interface a plugin of this kind exports.
    pub fn export_name(self) -> &'static str {
        match self {
            PluginKind::Index => contract!("index"),
            PluginKind::Upload => contract!("upload"),
            PluginKind::Download => contract!("download"),
            PluginKind::Http => "wasi:http/incoming-handler@0.2",
        }
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PluginKind::Index => "index",
            PluginKind::Upload => "upload",
            PluginKind::Download => "download",
            PluginKind::Http => "http",
        })
    }
}

/// A file as a plugin reports it, checked by the host: its name is one
/// plain segment and its hash, if any, a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// The file's name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 of the content; none when the store has no record of it (a
    /// file copied in by hand, not yet hashed).
    pub blake3: Option<Digest>,
    /// Last modification, ns since the Unix epoch.
    pub modified_ns: u64,
}

impl FileEntry {
    /// Checks what a plugin said; plugins are not trusted with what ends up
    /// in paths, headers and lengths.
    fn from_wit(e: bindings::WitEntry) -> Result<Self, String> {
        crate::store::FileName::parse(&e.name).map_err(|why| format!("entry name {:?}: {why}", e.name))?;
        let blake3 = match &e.blake3 {
            None => None,
            Some(text) => Some(Digest::parse(text).ok_or_else(|| format!("{:?} has hash {text:?}", e.name))?),
        };
        Ok(Self { name: e.name, size: e.size, blake3, modified_ns: e.modified_ns })
    }
}

/// A version ready to instantiate, by the world it implements.
pub enum Pre {
    /// An index plugin.
    Index(IndexPluginPre<Sandbox>),
    /// An upload plugin.
    Upload(UploadPluginPre<Sandbox>),
    /// A download plugin.
    Download(DownloadPluginPre<Sandbox>),
    /// An HTTP plugin.
    Http(wasmtime_wasi_http::p2::bindings::ProxyPre<http::HttpSandbox>),
}

/// The node's plugins and everything needed to run them. Built once per
/// node by [`PluginHost::load`], which also starts following the folder.
pub struct PluginHost {
    engine: Engine,
    _ticker: engine::EpochTicker,
    store_root: PathBuf,
    dir: PathBuf,
    limits: PluginLimits,
    linker: Linker<Sandbox>,
    http_linker: Linker<http::HttpSandbox>,
    /// Turns for requests to HTTP plugins.
    http_turns: Arc<tokio::sync::Semaphore>,
    compiled: load::Compiled,
    registry: RwLock<Registry>,
    /// Held while the folder is read, so that reloads do not interleave.
    reloading: Mutex<()>,
    index: store_index::StoreIndex,
    /// The store's group commit: every upload's content and commit are
    /// made durable by syncs shared with the uploads finishing with it.
    synced: Arc<GroupSync>,
    /// Where small uploads are made durable first, once the node has one.
    journal: std::sync::OnceLock<Arc<Journal>>,
    /// The host's record of each file's hash, kept for the next start.
    records: Arc<Records>,
    watcher: Mutex<Option<watch::FolderWatch>>,
    /// Where calls are counted, once a node's metrics are set up.
    metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
}

impl PluginHost {
    /// Compiles and links every `*.wasm` in `plugins_dir`, then follows the
    /// folder: a file added, replaced or removed later takes effect within
    /// a second. Files that are not usable plugins are refused with a log
    /// line and left out; only a failure to build the engine itself is an
    /// error. With `embedded`, the default plugins built into the binary
    /// serve each kind the folder has none of. Uploads are made durable
    /// through `synced`, and their hashes kept in `records`. This blocks
    /// (it compiles code): call it off the async runtime.
    pub fn load(
        plugins_dir: &Path,
        store_root: &Path,
        limits: PluginLimits,
        embedded: bool,
        (synced, records): (Arc<GroupSync>, Arc<Records>),
    ) -> anyhow::Result<Arc<Self>> {
        // A folder that is not there yet (the default, in a new place) is
        // made, so that plugins dropped into it later are followed.
        if !plugins_dir.exists()
            && let Err(e) = std::fs::create_dir_all(plugins_dir)
        {
            tracing::warn!(folder = %plugins_dir.display(), "cannot make the plugins folder: {e}");
        }
        let engine = match engine::new_engine(limits.pooling, limits.memory_bytes, limits.instances_at_once) {
            Err(e) if limits.pooling => {
                // Address space capped (`ulimit -v`): instances one by one.
                tracing::warn!("cannot reserve the plugin instance pool, instantiating on demand instead: {e:#}");
                engine::new_engine(false, limits.memory_bytes, limits.instances_at_once)
            }
            engine => engine,
        }
        .map_err(|e| anyhow::anyhow!("wasmtime engine: {e:#}"))?;
        let ticker = engine::EpochTicker::start(&engine)?;
        let host = Arc::new(PluginHost {
            linker: load::linker(&engine)?,
            http_linker: http::linker(&engine)?,
            http_turns: Arc::new(tokio::sync::Semaphore::new(http::CONCURRENT_REQUESTS)),
            engine,
            _ticker: ticker,
            store_root: store_root.to_path_buf(),
            dir: plugins_dir.to_path_buf(),
            limits,
            compiled: load::Compiled::default(),
            registry: RwLock::new(Registry::default()),
            reloading: Mutex::new(()),
            index: store_index::StoreIndex::watching(&store_root.join("files")),
            synced,
            journal: std::sync::OnceLock::new(),
            records,
            watcher: Mutex::new(None),
            metrics: std::sync::OnceLock::new(),
        });
        if embedded {
            let defaults = load::embedded(&host);
            host.registry.write().unwrap_or_else(|p| p.into_inner()).set_embedded(defaults);
        }
        // Watch first, so that nothing written while the folder is read is missed.
        let watch = watch::FolderWatch::start(&host);
        *host.watcher.lock().unwrap_or_else(|p| p.into_inner()) = watch;
        host.reload(None);
        Ok(host)
    }

    /// Makes small uploads durable through `journal` from now on.
    pub fn keep_journal(&self, journal: Arc<Journal>) {
        let _ = self.journal.set(journal);
    }

    /// `entry` as a plugin reported it, with the hash the host recorded for
    /// that file when the plugin reported none (plugins of contract 0.6.0
    /// leave the record to the host) and the record is of the file as it is.
    fn with_record(&self, mut entry: FileEntry) -> FileEntry {
        if entry.blake3.is_none() {
            entry.blake3 = self.records.hash_of(&entry.name, entry.size, entry.modified_ns);
        }
        entry
    }

    /// Syncs the store: everything written before the call is on disk.
    /// Blocks.
    pub fn sync(&self) -> std::io::Result<()> {
        self.synced.sync()
    }

    /// Reads again `files` of the plugins folder (`NAME.wasm`), or all of
    /// it, and applies what changed.
    pub fn reload(&self, files: Option<Vec<String>>) {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let files = files.unwrap_or_else(|| {
            let mut files = wasm_files(&self.dir);
            files.extend(self.read_registry().files());
            files.sort();
            files.dedup();
            files
        });
        let mut changed = false;
        let index_before = self.read_registry().serving_version(Slot::Kind(PluginKind::Index));
        let mut listed = None;
        for file in files {
            let seen = self.read_registry().seen(&file);
            let outcome = load::read(self, &self.dir.join(&file), seen);
            // Listed first only if the index holds a listing to answer
            // from meanwhile: at start (the folder's index plugin taking
            // over from the built-in one) the node's own first listing,
            // taken in the background, fills it.
            if let registry::Outcome::Loaded(new, _) = &outcome
                && new.kind == PluginKind::Index
                && index_before.is_some()
                && self.index.filled()
                && self.read_registry().would_serve(new)
            {
                listed = self.list_before_serving(new);
            }
            changed |= self.registry.write().unwrap_or_else(|p| p.into_inner()).apply(&file, outcome);
        }
        // Another index plugin may list otherwise: its own first listing
        // fills the index; without one, the next use lists the store again.
        let index_now = self.read_registry().serving_version(Slot::Kind(PluginKind::Index));
        let filled = match listed {
            Some((entries, version)) if Some(version) == index_now => {
                self.index.end_fill(Ok(entries));
                true
            }
            Some(_) => {
                self.index.end_fill(Err(None));
                false
            }
            None => false,
        };
        if index_now != index_before && !filled {
            self.index.forget_all();
        }
        if changed {
            for kind in self.read_registry().empty_kinds() {
                tracing::warn!(%kind, folder = %self.dir.display(), "no {kind} plugin loaded: its routes answer 503");
            }
        }
    }

    /// A new index version's listing of the store, taken before it serves,
    /// so that requests are answered from the old listing meanwhile
    /// instead of waiting for it.
    fn list_before_serving(&self, new: &Arc<registry::Loaded>) -> Option<(Filling, (Digest, u64))> {
        self.index.begin_fill();
        let (call, mut filling) = (Call::on(new.clone()), Filling::default());
        match self.list_on(&call, |entry| filling.add(entry)) {
            Ok(()) => Some((filling, (new.version, new.loaded_at_ms))),
            Err(e) => {
                tracing::warn!(plugin = %new.file, "the new index version could not list the store: {e}");
                self.index.end_fill(Err(None));
                None
            }
        }
    }

    fn read_registry(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts plugin calls in `metrics` from now on.
    pub fn count_calls(&self, metrics: Arc<crate::metrics::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// Records one call into `plugin` that started at `started`.
    fn counted<T>(&self, plugin: &registry::Loaded, started: std::time::Instant, outcome: &Result<T, PluginError>) {
        if let Some(metrics) = self.metrics.get() {
            metrics.plugin_call(&plugin.file, &plugin.kind.to_string(), outcome_name(outcome), started);
        }
    }

    /// What every file of the plugins folder is doing, in name order.
    pub fn statuses(&self) -> Vec<PluginStatus> {
        self.read_registry().statuses()
    }

    /// How many files the host's index of the store holds; none until the
    /// store has been listed once.
    pub fn indexed_files(&self) -> Option<usize> {
        self.index.len()
    }

    /// The file name of the plugin serving `kind`, if any.
    pub fn serving(&self, kind: PluginKind) -> Option<Arc<str>> {
        self.read_registry().serving_file(Slot::Kind(kind))
    }

    /// The version serving `kind` now, taken for one call or session.
    fn call(&self, kind: PluginKind) -> Result<Call, PluginError> {
        self.read_registry().call(Slot::Kind(kind)).ok_or(PluginError::Unavailable(kind))
    }
}

/// How a call ended, as the metrics label it.
fn outcome_name<T>(outcome: &Result<T, PluginError>) -> &'static str {
    match outcome {
        Ok(_) => "ok",
        Err(PluginError::Refused { .. }) => "refused",
        Err(PluginError::Timeout { .. }) => "timeout",
        Err(PluginError::OutOfMemory { .. }) => "out_of_memory",
        Err(PluginError::Trapped { .. } | PluginError::Corrupt(_)) => "trapped",
        Err(PluginError::Busy { .. } | PluginError::Crowded { .. }) => "busy",
        Err(PluginError::Unavailable(_)) => "unavailable",
        Err(PluginError::Cancelled) => "cancelled",
        Err(PluginError::NoRoom(_)) => "no_room",
        Err(PluginError::Stopping) => "stopping",
    }
}

/// The `*.wasm` file names in `dir`.
fn wasm_files(dir: &Path) -> Vec<String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(folder = %dir.display(), "cannot read the plugins folder: {e}");
            return Vec::new();
        }
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.ends_with(".wasm"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]
        /// Fuzzed: an entry a plugin returns, with names and hashes of any
        /// kind, is refused or has a file name and a 32-byte hash or none.
        #[test]
        fn fuzzed_plugin_entries_are_refused_or_checked(
            name in "\\PC{0,20}|[./\\\\\\x00]{0,3}|.{250,260}",
            blake3 in proptest::option::of("[0-9a-fA-F]{62,66}|\\PC{0,70}"),
            size in proptest::num::u64::ANY,
        ) {
            let wit = bindings::WitEntry { name: name.clone(), size, blake3: blake3.clone(), modified_ns: 1 };
            match FileEntry::from_wit(wit) {
                Ok(entry) => {
                    proptest::prop_assert!(crate::store::FileName::parse(&name).is_ok());
                    proptest::prop_assert_eq!(entry.blake3.map(|d| d.to_hex()), blake3);
                    proptest::prop_assert_eq!(entry.size, size);
                }
                Err(why) => proptest::prop_assert!(!why.is_empty()),
            }
        }
    }
}
