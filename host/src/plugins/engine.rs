//! The one wasmtime engine of a node, and the clock that drives call
//! deadlines through epoch interruption.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the engine's epoch advances; deadlines are whole ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Bytes of a pooled instance's memory (and of its tables) zeroed in place
/// when the instance ends, rather than returned to the kernel.
const KEEP_RESIDENT: usize = 1 << 20;

/// Builds the engine every plugin of the node is compiled and run with.
/// With `pooling`, instances come from a pool of `instances` slots sized
/// for `memory_bytes` each.
pub fn new_engine(pooling: bool, memory_bytes: usize, instances: u32) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    if pooling {
        let mut pool = PoolingAllocationConfig::default();
        pool.max_memory_size(memory_bytes);
        pool.linear_memory_keep_resident(KEEP_RESIDENT);
        pool.table_keep_resident(KEEP_RESIDENT);
        pool.pagemap_scan(wasmtime::Enabled::Auto);
        pool.total_component_instances(instances);
        pool.total_core_instances(8 * instances);
        pool.total_memories(instances);
        pool.total_tables(8 * instances);
        config.memory_reservation(memory_bytes as u64);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&config)
}

/// Advances `engine`'s epoch every [`EPOCH_TICK`] until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    /// Starts the ticking thread.
    pub fn start(engine: &Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (engine, flag) = (engine.clone(), stop.clone());
        std::thread::Builder::new().name("ringshare-epoch".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })?;
        Ok(Self { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Whole ticks covering `timeout` (at least one).
pub fn ticks_for(timeout: Duration) -> u64 {
    (timeout.as_millis().div_ceil(EPOCH_TICK.as_millis()) as u64).max(1)
}
