//! The node's configuration: one typed struct with documented defaults.
//! Command-line flags and environment variables are read only in `main`.

use std::path::PathBuf;
use std::time::Duration;

use crate::chord::ChordConfig;

/// Everything a node needs to run.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Root of the node's store (files, metadata, temp files).
    pub data_dir: PathBuf,
    /// Folder whose `*.wasm` components are loaded as plugins at start.
    pub plugins_dir: PathBuf,
    /// Whether the default plugins built into the binary serve each kind
    /// the folder has none of. Default: yes.
    pub embedded_plugins: bool,
    /// Limits every plugin call runs under.
    pub limits: PluginLimits,
    /// Largest upload body accepted, in bytes (`413` above it).
    /// Default: 64 GiB.
    pub max_upload_bytes: u64,
    /// The address other nodes and clients reach this node at (`host:port`);
    /// its ring id is the hash of it. Default: the listener's address.
    pub advertise: Option<String>,
    /// A member of the ring to join (`host:port`); none starts a new ring.
    pub join: Option<String>,
    /// How long to keep trying to join (the member may still be starting).
    /// Default: 30 s.
    pub join_timeout: Duration,
    /// Ring settings (successor-list length, maintenance periods).
    pub chord: ChordConfig,
    /// Deadline of one call to another node. Default: 2 s.
    pub rpc_timeout: Duration,
    /// The largest offset between two nodes' clocks that is trusted: a
    /// node off most of its peers by more takes no writes, and a time from
    /// further ahead is refused. Default 500 ms.
    pub max_clock_offset: Duration,
    /// Copies kept of each file (k): the responsible node and k-1 of its
    /// successors. Default: 3.
    pub replicas: usize,
    /// Durable copies a new upload waits for before it is acknowledged, 1
    /// to `replicas`; the others are made in the background. Default (none):
    /// all `replicas`.
    pub write_quorum: Option<usize>,
    /// Holders a download that only other nodes hold reads from at once,
    /// each a share of the file in pieces (1: one holder at a time).
    /// Default: 8 (every holder, with up to 8 copies).
    pub download_sources: usize,
    /// Bytes of small files' content (64 KiB or less each) kept in memory,
    /// so that reads of them call no plugin (0: none). Default: 32 MiB.
    pub read_cache_bytes: u64,
    /// Length of a read lease (`files::lease`): a holder with one serves
    /// its own copy without asking the other holders. None: every read
    /// asks them. Default: none (`--read-lease-ms 2000` turns them on).
    pub read_lease: Option<Duration>,
    /// Bytes of this node's copies read back and checked against their
    /// hashes on each repair pass (0: never). Default: 256 MiB.
    pub scrub_bytes_per_pass: u64,
    /// Period of the repair pass that restores missing copies. Default: 30 s.
    pub repair_every: Duration,
    /// Whether a node seen to leave or stop answering (by this node, or
    /// announced by another) starts a repair pass at once. Default: yes.
    pub repair_on_departure: bool,
    /// How long a tombstone is kept once every holder has it, and the
    /// longest a node may be away and still have its copies taken back
    /// unchecked (Cassandra's `gc_grace_seconds`). Default: 7 days.
    pub tombstone_grace: Duration,
    /// The RabbitMQ broker that carries hand-offs and events, or none to
    /// run without one. Default: [`DEFAULT_AMQP`].
    pub amqp: Option<String>,
    /// With a broker, the pause before a hand-off that failed is retried
    /// the first time (it doubles with each delivery, up to 30 s; the
    /// broker dead-letters it after 10). Default: 0.5 s.
    pub handoff_retry_first: Duration,
    /// With a broker, the live network index is rebuilt from a walk of the
    /// ring this often (events keep it current in between). Default: 60 s.
    pub index_refresh_every: Duration,
    /// The node's certificate, key and cluster CA (`node.crt`, `node.key`,
    /// `ca.crt`; see `ringshare cert`): with them, ring and file calls are
    /// taken only from members of the cluster and made only to them, over
    /// mutual TLS. Default: none (plain HTTP, every caller trusted).
    pub tls_dir: Option<PathBuf>,
    /// A file of tokens (one a line) that REST writes must present as
    /// `Authorization: Bearer`. Default: none, protected mode: writes only
    /// from loopback clients.
    pub write_token: Option<PathBuf>,
    /// A file of tokens REST reads must present (or a write token).
    /// Default: none, reads are open.
    pub read_token: Option<PathBuf>,
    /// Connections served at once; one more is answered `503` and closed.
    /// Default: [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// How long an upload's body may send nothing before it is abandoned
    /// (nothing of it is kept). Default: 60 s, as nginx's
    /// `client_body_timeout`.
    pub body_timeout: Duration,
    /// REST writes a second one client address may make (bursts of twice
    /// that); 0: no limit. Default: 100.
    pub write_rate: u32,
    /// Whether loopback clients are held to `write_rate` too. Default: no.
    pub rate_limit_loopback: bool,
}

/// Connections a node serves at once unless told otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// The broker a node talks to unless told otherwise.
pub const DEFAULT_AMQP: &str = "amqp://127.0.0.1:5672/%2f";
/// Where a node listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// A node's store unless told otherwise.
pub const DEFAULT_DATA: &str = "data";
/// A node's plugins folder unless told otherwise (where the build puts the
/// default plugins, from a checkout's root).
pub const DEFAULT_PLUGINS: &str = "plugins";

/// Most copies of a file a node keeps or is asked to make (k).
pub const MAX_REPLICAS: usize = 16;
/// Linear memory a plugin instance may grow to unless its limits say
/// otherwise (`--plugin-memory-mib`).
pub const DEFAULT_PLUGIN_MEMORY_BYTES: usize = 64 << 20;
/// How long a tombstone is kept once every holder has it: 7 days.
pub const DEFAULT_TOMBSTONE_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Limits on each plugin call.
#[derive(Debug, Clone, Copy)]
pub struct PluginLimits {
    /// Wall-clock budget of one call into a plugin (one list, one chunk
    /// written or read). Enforced by epoch interruption. Default: 30 s,
    /// enough for an index plugin to hash a few GB of files copied in by hand.
    pub call_timeout: Duration,
    /// Most linear memory one plugin instance may hold. Default: 64 MiB.
    pub memory_bytes: usize,
    /// Bytes handed to or asked of a plugin per write or read call.
    /// Default: 256 KiB.
    pub chunk_bytes: usize,
    /// Instantiate plugins from wasmtime's pooling allocator (slots reused,
    /// their touched pages zeroed in place) instead of mapping and
    /// unmapping each instance's memory. Default on: small GETs went from
    /// about 4,400 to 5,900 a second on one node (docs/benchmarks.md), the
    /// unmapping's TLB shootdowns gone.
    pub pooling: bool,
    /// With `pooling`: plugin instances (calls and open sessions) run at
    /// once; one more is answered busy (`503`). Each slot reserves about
    /// 100 MiB of address space, not memory. Default: 4,096.
    pub instances_at_once: u32,
    /// Bytes an upload must leave free on the store's disk: past it an
    /// upload is refused (`507 insufficient-storage`), so that deletions,
    /// tombstones and the outbox keep room. Default: 256 MiB.
    pub reserve_free_bytes: u64,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(30),
            memory_bytes: DEFAULT_PLUGIN_MEMORY_BYTES,
            chunk_bytes: 256 << 10,
            pooling: true,
            instances_at_once: 4096,
            reserve_free_bytes: 256 << 20,
        }
    }
}

impl Default for NodeConfig {
    /// The documented defaults, with the default folders.
    fn default() -> Self {
        Self::new(DEFAULT_DATA, DEFAULT_PLUGINS)
    }
}

impl NodeConfig {
    /// A configuration with the documented defaults for the given folders.
    pub fn new(data_dir: impl Into<PathBuf>, plugins_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            plugins_dir: plugins_dir.into(),
            embedded_plugins: true,
            limits: PluginLimits::default(),
            max_upload_bytes: 64 << 30,
            advertise: None,
            join: None,
            join_timeout: Duration::from_secs(30),
            chord: ChordConfig::default(),
            rpc_timeout: Duration::from_secs(2),
            max_clock_offset: crate::clock::DEFAULT_MAX_OFFSET,
            replicas: 3,
            write_quorum: None,
            download_sources: 8,
            read_cache_bytes: 32 << 20,
            read_lease: None,
            scrub_bytes_per_pass: 256 << 20,
            repair_every: Duration::from_secs(30),
            repair_on_departure: true,
            tombstone_grace: DEFAULT_TOMBSTONE_GRACE,
            amqp: Some(DEFAULT_AMQP.to_owned()),
            tls_dir: None,
            write_token: None,
            read_token: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            body_timeout: Duration::from_secs(60),
            write_rate: 100,
            rate_limit_loopback: false,
            index_refresh_every: Duration::from_secs(60),
            handoff_retry_first: Duration::from_millis(500),
        }
    }
}
