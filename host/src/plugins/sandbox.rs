//! What a plugin instance may touch: its store directory (read-only or
//! read-write by kind), a memory cap, and a log import. Nothing else: no
//! environment, no arguments, no network, no other host path.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::log;
use super::manifest::{Grant, StoreAccess};

/// How much of a plugin's stderr (panic messages) is kept for error reports.
pub(super) const STDERR_BYTES: usize = 16 << 10;

/// The per-instance state of a plugin's `Store`.
pub struct Sandbox {
    wasi: WasiCtx,
    table: ResourceTable,
    memory: MemoryCap,
    stderr: MemoryOutputPipe,
    plugin: Arc<str>,
    /// When the call running now must end (see [`Sandbox::sleep_budget`]).
    deadline: Option<Instant>,
}

/// Refuses linear-memory growth past a cap and remembers that it did, so a
/// trap caused by the cap is reported as such.
pub struct MemoryCap {
    limit: usize,
    hit: bool,
}

impl MemoryCap {
    /// A cap of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self { limit, hit: false }
    }
}

/// What a failed call is told by: the memory cap and what the plugin
/// wrote to stderr.
pub trait Confined {
    /// The instance's memory cap.
    fn memory_cap(&self) -> &MemoryCap;
    /// Its stderr.
    fn stderr(&self) -> &MemoryOutputPipe;

    /// Whether the memory cap stopped this instance.
    fn memory_cap_hit(&self) -> bool {
        self.memory_cap().hit
    }

    /// The memory cap in bytes.
    fn memory_limit(&self) -> usize {
        self.memory_cap().limit
    }

    /// What the plugin wrote to stderr (for a trap's report), trimmed.
    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr().contents()).trim().to_owned()
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
            return Err(wasmtime::format_err!("memory cap of {} bytes reached", self.limit));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl Sandbox {
    /// A store for one instance of `plugin` (a file name, for logs), granted
    /// `store_root` as `/store` as far as its `grant` says, and its memory cap.
    pub fn new_store(
        engine: &wasmtime::Engine,
        plugin: &Arc<str>,
        grant: &Grant,
        store_root: &Path,
    ) -> wasmtime::Result<Store<Sandbox>> {
        let stderr = MemoryOutputPipe::new(STDERR_BYTES);
        let mut wasi = WasiCtxBuilder::new();
        // Plugins run on a blocking thread already: let file calls run there
        // directly rather than hop to another one. (Set before the preopens:
        // each directory takes the setting when it is opened.)
        wasi.allow_blocking_current_thread(true);
        match grant.store {
            StoreAccess::None => {}
            StoreAccess::Read => _ = wasi.preopened_dir(store_root, "/store", FsPerms::ReadOnly)?,
            StoreAccess::ReadWrite => _ = wasi.preopened_dir(store_root, "/store", FsPerms::ReadWrite)?,
        }
        wasi.stderr(stderr.clone()).allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
        let sandbox = Sandbox {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            memory: MemoryCap::new(grant.memory_bytes),
            stderr,
            plugin: plugin.clone(),
            deadline: None,
        };
        let mut store = Store::new(engine, sandbox);
        store.limiter(|s| &mut s.memory);
        Ok(store)
    }

    /// A call with `budget` to run starts.
    pub fn start_call(&mut self, budget: Duration) {
        self.deadline = Some(Instant::now() + budget);
    }

    /// How long a sleep (a clock subscription) of `wanted` may last: no
    /// longer than what is left of the call, plus one epoch tick so that the
    /// plugin wakes past its deadline and the epoch check stops it. A plugin
    /// waiting inside the host runs no code the epoch could interrupt; this
    /// is what bounds it.
    pub fn sleep_budget(&self, wanted: Duration) -> Duration {
        match self.deadline {
            Some(deadline) => {
                wanted.min(deadline.saturating_duration_since(Instant::now()) + super::engine::EPOCH_TICK)
            }
            None => wanted,
        }
    }

    /// The instance's resources (streams the plugin hands over live here).
    pub fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

impl Confined for Sandbox {
    fn memory_cap(&self) -> &MemoryCap {
        &self.memory
    }
    fn stderr(&self) -> &MemoryOutputPipe {
        &self.stderr
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl log::Host for Sandbox {
    fn log(&mut self, level: log::Level, message: String) {
        let plugin = &*self.plugin;
        match level {
            log::Level::Trace => tracing::trace!(plugin, "{message}"),
            log::Level::Debug => tracing::debug!(plugin, "{message}"),
            log::Level::Info => tracing::info!(plugin, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, "{message}"),
            log::Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}
