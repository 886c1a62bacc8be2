//! Plugins: WebAssembly components that implement a node's index, upload and
//! download behaviours, loaded once from a folder and run sandboxed.
//!
//! - `bindings`: host side of the WIT worlds in `wit/`;
//! - `engine`: the engine and the epoch clock behind call deadlines;
//! - `load`: reading a folder of components and deciding what each one is;
//! - `sandbox`: per-instance state, capabilities and memory cap;
//! - `listing`: the index plugin's last answer, until the store changes;
//! - `session`: the calls the host makes (list, streamed upload, streamed
//!   download), each on a fresh `Store` on a blocking thread;
//! - `error`: how those calls fail.
//!
//! The engine, linker and pre-instances are built once in [`PluginHost::load`].

mod bindings;
mod content;
mod engine;
mod error;
mod listing;
mod load;
mod sandbox;
mod session;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use wasmtime::Engine;

use crate::config::PluginLimits;
use crate::integrity::Digest;
use bindings::download::DownloadPluginPre;
use bindings::index::IndexPluginPre;
use bindings::upload::UploadPluginPre;
use sandbox::Sandbox;

pub use error::{PluginError, Refusal};
pub use listing::Listing;
pub use session::{DownloadHandle, UploadHandle};

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
}

impl PluginKind {
    /// Every kind, in a fixed order.
    pub const ALL: [PluginKind; 3] = [PluginKind::Index, PluginKind::Upload, PluginKind::Download];

    /// The WIT interface a plugin of this kind exports.
    pub fn export_name(self) -> &'static str {
        match self {
            PluginKind::Index => "ringshare:plugin/index@0.3.0",
            PluginKind::Upload => "ringshare:plugin/upload@0.3.0",
            PluginKind::Download => "ringshare:plugin/download@0.3.0",
        }
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PluginKind::Index => "index",
            PluginKind::Upload => "upload",
            PluginKind::Download => "download",
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

/// What became of one file of the plugins folder.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    /// File name within the plugins folder.
    pub file: String,
    /// The kind it provides, when that could be told.
    pub kind: Option<PluginKind>,
    /// Whether it serves requests.
    pub loaded: bool,
    /// Why it was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A plugin ready to instantiate.
struct Loaded<P> {
    name: Arc<str>,
    pre: P,
}

/// The node's plugins, one per kind at most, and everything needed to run
/// them: build once, share behind an `Arc`.
pub struct PluginHost {
    engine: Engine,
    _ticker: engine::EpochTicker,
    store_root: PathBuf,
    limits: PluginLimits,
    index: Option<Loaded<IndexPluginPre<Sandbox>>>,
    upload: Option<Loaded<UploadPluginPre<Sandbox>>>,
    download: Option<Loaded<DownloadPluginPre<Sandbox>>>,
    statuses: Vec<PluginStatus>,
    listings: listing::ListingCache,
}

impl PluginHost {
    /// Compiles and links every `*.wasm` in `plugins_dir`. Files that are not
    /// usable plugins are refused with a log line and left out; only a
    /// failure to build the engine itself is an error. This blocks (it
    /// compiles code): call it off the async runtime.
    pub fn load(plugins_dir: &Path, store_root: &Path, limits: PluginLimits) -> anyhow::Result<Self> {
        let engine = engine::new_engine(limits.pooling, limits.memory_bytes)
            .map_err(|e| anyhow::anyhow!("wasmtime engine: {e:#}"))?;
        let ticker = engine::EpochTicker::start(&engine)?;
        let mut host = PluginHost {
            engine,
            _ticker: ticker,
            store_root: store_root.to_path_buf(),
            limits,
            index: None,
            upload: None,
            download: None,
            statuses: Vec::new(),
            listings: listing::ListingCache::watching(&store_root.join("files")),
        };
        load::load_folder(&mut host, plugins_dir)?;
        Ok(host)
    }

    /// What became of every file in the plugins folder, in load order.
    pub fn statuses(&self) -> &[PluginStatus] {
        &self.statuses
    }

    /// The file name of the plugin serving `kind`, if any.
    pub fn serving(&self, kind: PluginKind) -> Option<&str> {
        let name = match kind {
            PluginKind::Index => self.index.as_ref().map(|p| &p.name),
            PluginKind::Upload => self.upload.as_ref().map(|p| &p.name),
            PluginKind::Download => self.download.as_ref().map(|p| &p.name),
        };
        name.map(|n| &**n)
    }
}
