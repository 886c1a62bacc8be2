//! One configuration for the `ringshare` command: every setting is a flag,
//! a `RINGSHARE_*` environment variable and a key of the configuration file
//! (`ringshare.toml`, or `--config PATH`), read in that order of
//! precedence: the file, then the environment, then the flags. Each
//! default is written once, here, and shown by `--help`. Values out of
//! range are refused with a message, never clamped.
//!
//! ```toml
//! [node]             # `ringshare node` (and every node of `ringshare devnet`)
//! replicas = 2
//! repair_ms = 10000
//!
//! [client]           # the client commands
//! node = "http://127.0.0.1:8081"
//!
//! [devnet]           # `ringshare devnet`
//! nodes = 5
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::{DEFAULT_AMQP, DEFAULT_DATA, DEFAULT_LISTEN, DEFAULT_PLUGINS, NodeConfig, PluginLimits};

/// The configuration file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "ringshare.toml";

/// The library's defaults ([`NodeConfig::default`]): the one place they
/// are written; the flags show them.
fn defaults() -> NodeConfig {
    NodeConfig::default()
}

fn default_write_rate() -> u32 {
    defaults().write_rate
}

fn default_body_timeout_ms() -> u64 {
    ms(defaults().body_timeout)
}

fn default_reserve_free_mib() -> u64 {
    defaults().limits.reserve_free_bytes >> 20
}

fn default_tombstone_grace() -> String {
    humantime::format_duration(defaults().tombstone_grace).to_string()
}

fn yes() -> bool {
    true
}

fn default_max_connections() -> usize {
    defaults().max_connections
}

fn default_download_sources() -> usize {
    defaults().download_sources
}

fn default_read_lease_ms() -> u64 {
    defaults().read_lease.map_or(0, |d| d.as_millis() as u64)
}

fn default_read_cache_mib() -> u64 {
    defaults().read_cache_bytes >> 20
}

fn default_max_clock_offset_ms() -> u64 {
    ms(defaults().max_clock_offset)
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// A node's settings: `ringshare node`'s flags, the `[node]` table.
#[derive(Args, Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    /// Address of the REST API and the ring's gRPC (they share it).
    #[arg(long, env = "RINGSHARE_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Address others reach this node at, if not the listener's (`host:port`);
    /// the node's ring id is its hash.
    #[arg(long, env = "RINGSHARE_ADVERTISE")]
    pub advertise: Option<String>,
    /// A ring member to join (`host:port`); without it, start a new ring.
    #[arg(long, env = "RINGSHARE_JOIN")]
    pub join: Option<String>,
    /// Successor-list length r, 1 to 64 (keep r >= 2*log2(N) for N nodes).
    #[arg(long, env = "RINGSHARE_SUCCESSORS", default_value_t = defaults().chord.successors)]
    pub successors: usize,
    /// Period of the ring's stabilize task, in milliseconds (10 to 60000).
    #[arg(long, env = "RINGSHARE_STABILIZE_MS", default_value_t = ms(defaults().chord.stabilize_every))]
    pub stabilize_ms: u64,
    /// Copies kept of each file (k), 1 to 16: the responsible node and k-1 successors.
    #[arg(long, env = "RINGSHARE_REPLICAS", default_value_t = defaults().replicas)]
    pub replicas: usize,
    /// Durable copies a new upload waits for before it answers, 1 to
    /// --replicas (default: all of them); the rest are made in the background.
    #[arg(long, env = "RINGSHARE_WRITE_QUORUM")]
    pub write_quorum: Option<usize>,
    /// Holders a large download reads from at once (1 to 16; 1: one at a
    /// time), when this node has no copy of its own.
    #[arg(long, env = "RINGSHARE_DOWNLOAD_SOURCES", default_value_t = defaults().download_sources)]
    #[serde(default = "default_download_sources")]
    pub download_sources: usize,
    /// MiB of small files' content (64 KiB or less each) kept in memory, so
    /// that reads of them call no plugin (0: none).
    #[arg(long, env = "RINGSHARE_READ_CACHE_MIB", default_value_t = defaults().read_cache_bytes >> 20)]
    #[serde(default = "default_read_cache_mib")]
    pub read_cache_mib: u64,
    /// Length of a read lease, in milliseconds (0: off): a holder with a
    /// lease from the node that coordinates a name's writes serves its own
    /// copy without asking the other holders, and writes wait for a
    /// holder's lease to run out before they are acknowledged without it.
    /// At least 4 stabilize periods.
    #[arg(long, env = "RINGSHARE_READ_LEASE_MS", default_value_t = default_read_lease_ms())]
    #[serde(default = "default_read_lease_ms")]
    pub read_lease_ms: u64,
    /// MiB of this node's copies read back and checked on each repair pass (0: never).
    #[arg(long, env = "RINGSHARE_SCRUB_MIB", default_value_t = defaults().scrub_bytes_per_pass >> 20)]
    pub scrub_mib: u64,
    /// Period of the repair loop that restores k copies, in milliseconds (at least 100).
    #[arg(long, env = "RINGSHARE_REPAIR_MS", default_value_t = ms(defaults().repair_every))]
    pub repair_ms: u64,
    /// Run a repair pass as soon as a node is seen to leave or stop
    /// answering (else only every --repair-ms).
    #[arg(long, env = "RINGSHARE_REPAIR_ON_DEPARTURE", default_value_t = defaults().repair_on_departure, action = clap::ArgAction::Set)]
    pub repair_on_departure: bool,
    /// How long a tombstone is kept once every holder has it, and the
    /// longest a node may be away and have its copies taken back without
    /// asking their holders: a duration such as `7d`, `12h` or `90s`
    /// (at least 1s).
    #[arg(long, env = "RINGSHARE_TOMBSTONE_GRACE", default_value = "7d")]
    #[serde(default = "default_tombstone_grace")]
    pub tombstone_grace: String,
    /// The node's store (created if missing).
    #[arg(long, env = "RINGSHARE_DATA", default_value = DEFAULT_DATA)]
    pub data: PathBuf,
    /// Folder of plugin components (`*.wasm`), followed while the node
    /// runs. A folder given that does not exist is refused; the default may
    /// be missing (the embedded plugins serve).
    #[arg(long, env = "RINGSHARE_PLUGINS", default_value = DEFAULT_PLUGINS)]
    pub plugins: PathBuf,
    /// Let the default index, upload and download plugins built into the
    /// binary serve each kind the plugins folder has none of (`false`: that
    /// kind's routes answer 503 instead).
    #[arg(long, env = "RINGSHARE_EMBEDDED_PLUGINS", default_value_t = true, action = clap::ArgAction::Set)]
    #[serde(default = "yes")]
    pub embedded_plugins: bool,
    /// Largest upload accepted, in bytes (at least 1).
    #[arg(long, env = "RINGSHARE_MAX_UPLOAD_BYTES", default_value_t = defaults().max_upload_bytes)]
    pub max_upload_bytes: u64,
    /// Deadline of one plugin call, in milliseconds (1 to 3600000).
    #[arg(long, env = "RINGSHARE_PLUGIN_TIMEOUT_MS", default_value_t = ms(defaults().limits.call_timeout))]
    pub plugin_timeout_ms: u64,
    /// Linear-memory cap of one plugin instance, in MiB (1 to 4096).
    #[arg(long, env = "RINGSHARE_PLUGIN_MEMORY_MIB", default_value_t = defaults().limits.memory_bytes >> 20)]
    pub plugin_memory_mib: usize,
    /// Plugin instances (calls and open sessions) run at once; one more is
    /// answered busy (`503`). 1 to 65536; each reserves address space, not
    /// memory.
    #[arg(long, env = "RINGSHARE_PLUGIN_INSTANCES", default_value_t = defaults().limits.instances_at_once)]
    pub plugin_instances: u32,
    /// The RabbitMQ broker for hand-offs and events (`amqp://…`; several,
    /// comma-separated, are tried in turn: the nodes of a cluster), or
    /// `none` to run without one.
    #[arg(long, env = "RINGSHARE_AMQP", default_value = DEFAULT_AMQP)]
    pub amqp: String,
    /// With a broker: period of the walk of the ring that rebuilds the live
    /// network index, in milliseconds (at least 1000).
    #[arg(long, env = "RINGSHARE_INDEX_REFRESH_MS", default_value_t = ms(defaults().index_refresh_every))]
    pub index_refresh_ms: u64,
    /// Folder of this node's certificate, key and cluster CA (node.crt,
    /// node.key, ca.crt; made by `ringshare cert`): ring and file calls then
    /// go only between members of the cluster, over mutual TLS.
    #[arg(long, env = "RINGSHARE_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// File of tokens (one a line, not readable by others) that REST writes
    /// must present as `Authorization: Bearer`; without it, writes are
    /// taken only from this machine (protected mode).
    #[arg(long, env = "RINGSHARE_WRITE_TOKEN")]
    pub write_token: Option<PathBuf>,
    /// File of tokens REST reads must present (a write token does too);
    /// without it, reads are open.
    #[arg(long, env = "RINGSHARE_READ_TOKEN")]
    pub read_token: Option<PathBuf>,
    /// How long an upload's body may send nothing before it is abandoned,
    /// in milliseconds (at least 100).
    #[arg(long, env = "RINGSHARE_BODY_TIMEOUT_MS", default_value_t = ms(defaults().body_timeout))]
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// REST writes a second one client address may make, bursts of twice
    /// that (0: no limit); past it, 429.
    #[arg(long, env = "RINGSHARE_WRITE_RATE", default_value_t = defaults().write_rate)]
    #[serde(default = "default_write_rate")]
    pub write_rate: u32,
    /// Hold loopback clients to --write-rate too (else they are not limited).
    #[arg(long, env = "RINGSHARE_RATE_LIMIT_LOOPBACK", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    #[serde(default)]
    pub rate_limit_loopback: bool,
    /// MiB an upload must leave free on the store's disk; past it uploads
    /// are answered 507 and reads and deletions go on.
    #[arg(long, env = "RINGSHARE_RESERVE_FREE_MIB", default_value_t = defaults().limits.reserve_free_bytes >> 20)]
    #[serde(default = "default_reserve_free_mib")]
    pub reserve_free_mib: u64,
    /// Connections served at once (1 to 1000000); one more is answered 503.
    #[arg(long, env = "RINGSHARE_MAX_CONNECTIONS", default_value_t = defaults().max_connections)]
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// The largest offset between two nodes' clocks that is trusted, in ms
    /// (1 to 600000): a node off most of its peers by more takes no writes,
    /// and a version stamped further ahead is refused.
    #[arg(long, env = "RINGSHARE_MAX_CLOCK_OFFSET_MS", default_value_t = ms(defaults().max_clock_offset))]
    #[serde(default = "default_max_clock_offset_ms")]
    pub max_clock_offset_ms: u64,
    /// Listen on a non-loopback address without --tls-dir: every process
    /// that reaches the port can then call the ring and file RPCs.
    #[arg(long, env = "RINGSHARE_INSECURE", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    #[serde(default)]
    pub insecure: bool,
}

impl NodeSettings {
    /// The node's configuration, or what is out of range, in words.
    pub fn to_config(&self) -> Result<NodeConfig, String> {
        within("successors", self.successors, 1, Some(64))?;
        within("stabilize_ms", self.stabilize_ms, 10, Some(60_000))?;
        within("replicas", self.replicas, 1, Some(crate::config::MAX_REPLICAS))?;
        if let Some(w) = self.write_quorum {
            within("write_quorum", w, 1, Some(self.replicas))
                .map_err(|e| format!("{e} (the copies kept, replicas)"))?;
        }
        within("repair_ms", self.repair_ms, 100, None)?;
        within("scrub_mib", self.scrub_mib, 0, Some(1 << 30))?;
        within("download_sources", self.download_sources, 1, Some(crate::config::MAX_REPLICAS))?;
        within("read_cache_mib", self.read_cache_mib, 0, Some(1 << 20))?;
        if self.read_lease_ms != 0 {
            within("read_lease_ms", self.read_lease_ms, 4 * self.stabilize_ms.max(50), Some(600_000))
                .map_err(|e| format!("{e} (0 turns read leases off; else at least 4 stabilize periods)"))?;
        }
        within("max_upload_bytes", self.max_upload_bytes, 1, None)?;
        within("plugin_timeout_ms", self.plugin_timeout_ms, 1, Some(3_600_000))?;
        within("plugin_memory_mib", self.plugin_memory_mib, 1, Some(4096))?;
        within("plugin_instances", self.plugin_instances as usize, 1, Some(65_536))?;
        within("index_refresh_ms", self.index_refresh_ms, 1000, None)?;
        within("max_connections", self.max_connections, 1, Some(1_000_000))?;
        within("body_timeout_ms", self.body_timeout_ms, 100, None)?;
        within("reserve_free_mib", self.reserve_free_mib, 0, Some(1 << 30))?;
        within("max_clock_offset_ms", self.max_clock_offset_ms, 1, Some(600_000))?;
        if self.plugins != std::path::Path::new(DEFAULT_PLUGINS) && !self.plugins.is_dir() {
            return Err(format!("plugins: {} is not a folder", self.plugins.display()));
        }
        let mut config = NodeConfig::new(&self.data, &self.plugins);
        config.embedded_plugins = self.embedded_plugins;
        config.max_upload_bytes = self.max_upload_bytes;
        config.advertise = self.advertise.clone();
        config.join = self.join.clone();
        config.chord.successors = self.successors;
        config.chord.stabilize_every = Duration::from_millis(self.stabilize_ms);
        config.replicas = self.replicas;
        config.write_quorum = self.write_quorum;
        config.repair_every = Duration::from_millis(self.repair_ms);
        config.repair_on_departure = self.repair_on_departure;
        config.tombstone_grace = duration("tombstone_grace", &self.tombstone_grace, Duration::from_secs(1))?;
        config.amqp = (self.amqp != "none").then(|| self.amqp.clone());
        config.index_refresh_every = Duration::from_millis(self.index_refresh_ms);
        config.scrub_bytes_per_pass = self.scrub_mib << 20;
        config.download_sources = self.download_sources;
        config.read_cache_bytes = self.read_cache_mib << 20;
        config.read_lease = (self.read_lease_ms > 0).then(|| Duration::from_millis(self.read_lease_ms));
        if !self.listen.ip().is_loopback() && self.tls_dir.is_none() && !self.insecure {
            return Err(format!(
                "refusing to listen on {} without --tls-dir: anyone who reaches it could join the ring, \
                 fetch or delete files. Give the node its certificates (ringshare cert), or pass --insecure",
                self.listen
            ));
        }
        for (what, file) in [("write_token", &self.write_token), ("read_token", &self.read_token)] {
            if let Some(file) = file {
                crate::rest::auth_tokens(file).map_err(|e| format!("{what}: {e}"))?;
            }
        }
        if let Some(dir) = &self.tls_dir {
            // Refused here, naming the file, rather than when the node starts.
            crate::tls::Credentials::load(dir).map_err(|e| format!("tls_dir: {e}"))?;
        }
        config.tls_dir = self.tls_dir.clone();
        config.write_token = self.write_token.clone();
        config.max_connections = self.max_connections;
        config.max_clock_offset = Duration::from_millis(self.max_clock_offset_ms);
        config.body_timeout = Duration::from_millis(self.body_timeout_ms);
        config.write_rate = self.write_rate;
        config.rate_limit_loopback = self.rate_limit_loopback;
        config.read_token = self.read_token.clone();
        config.limits = PluginLimits {
            call_timeout: Duration::from_millis(self.plugin_timeout_ms),
            memory_bytes: self.plugin_memory_mib << 20,
            instances_at_once: self.plugin_instances,
            reserve_free_bytes: self.reserve_free_mib << 20,
            ..PluginLimits::default()
        };
        Ok(config)
    }
}

/// `value` read as a duration (`7d`, `12h 30m`, `90s`) of at least `low`,
/// or why not.
fn duration(name: &str, value: &str, low: Duration) -> Result<Duration, String> {
    let read = humantime::parse_duration(value.trim())
        .map_err(|e| format!("{name} = {value:?} is not a duration such as 7d, 12h or 90s: {e}"))?;
    if read < low {
        return Err(format!(
            "{name} = {value:?} is out of range: it must be at least {}",
            humantime::format_duration(low)
        ));
    }
    Ok(read)
}

/// `value` within `low..=high` (no upper bound: `None`), or why not.
fn within<T: PartialOrd + std::fmt::Display + Copy>(
    name: &str,
    value: T,
    low: T,
    high: Option<T>,
) -> Result<(), String> {
    let above = high.is_some_and(|high| value > high);
    if value < low || above {
        let range = high.map_or_else(|| format!("at least {low}"), |high| format!("{low} to {high}"));
        return Err(format!("{name} = {value} is out of range: it must be {range}"));
    }
    Ok(())
}

/// The configuration file: its tables, unread.
#[derive(Debug, Default)]
pub struct ConfigFile {
    path: Option<PathBuf>,
    table: toml::Table,
}

impl ConfigFile {
    /// Reads `path`, which must exist; without a path, `ringshare.toml` in
    /// the current folder if there is one.
    pub fn read(path: Option<&Path>) -> Result<Self, String> {
        let (path, required) = match path {
            Some(path) => (path.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(format!("cannot read the configuration file {}: {e}", path.display())),
        };
        let table: toml::Table =
            toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message().trim()))?;
        for key in table.keys() {
            if !["node", "client", "devnet"].contains(&key.as_str()) {
                return Err(format!(
                    "{}: unknown table [{key}] (there are [node], [client] and [devnet])",
                    path.display()
                ));
            }
        }
        Ok(Self { path: Some(path), table })
    }

    /// The file's path, if one was read.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// `parsed` (a command's settings as clap read them, defaults included)
    /// with the file's `[section]` applied under what the environment or
    /// the command line set.
    pub fn layer<T: Serialize + DeserializeOwned>(
        &self,
        section: &str,
        parsed: &T,
        matches: &ArgMatches,
    ) -> Result<T, String> {
        let mut merged = toml::Table::try_from(parsed).map_err(|e| format!("settings: {e}"))?;
        if let Some(values) = self.table.get(section) {
            let where_ = || self.path.as_ref().map_or_else(String::new, |p| format!("{}: ", p.display()));
            let values = values.as_table().ok_or_else(|| format!("{}[{section}] must be a table", where_()))?;
            for (key, value) in values {
                let explicit = matches!(
                    matches.try_get_raw(key).ok().and_then(|_| matches.value_source(key)),
                    Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                );
                if !explicit {
                    merged.insert(key.clone(), value.clone());
                }
            }
            return T::deserialize(merged).map_err(|e| format!("{}[{section}]: {}", where_(), e.message().trim()));
        }
        T::deserialize(merged).map_err(|e| format!("settings: {}", e.message().trim()))
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches, Parser};

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        node: NodeSettings,
    }

    fn parse(args: &[&str], file: &str) -> Result<NodeSettings, String> {
        let matches = Cli::command().try_get_matches_from(std::iter::once("ringshare").chain(args.iter().copied()));
        let matches = matches.map_err(|e| e.to_string())?;
        let cli = Cli::from_arg_matches(&matches).map_err(|e| e.to_string())?;
        let table: toml::Table = toml::from_str(file).map_err(|e| e.to_string())?;
        ConfigFile { path: None, table }.layer("node", &cli.node, &matches)
    }

    #[test]
    fn the_file_is_read_under_the_flags() {
        let file = "[node]\nreplicas = 2\nrepair_ms = 5000\ndata = \"from-file\"\n";
        let settings = parse(&["--replicas", "5"], file).unwrap();
        assert_eq!(settings.replicas, 5, "a flag wins over the file");
        assert_eq!(settings.repair_ms, 5000, "the file wins over the default");
        assert_eq!(settings.data, PathBuf::from("from-file"));
        assert_eq!(settings.successors, 8, "the default stays where nothing is said");
        let settings = parse(&[], "").unwrap();
        assert_eq!(settings.replicas, 3);
    }

    #[test]
    fn unknown_keys_and_wrong_types_in_the_file_are_refused() {
        let error = parse(&[], "[node]\nreplica = 2\n").unwrap_err();
        assert!(error.contains("unknown field `replica`"), "{error}");
        let error = parse(&[], "[node]\nreplicas = \"two\"\n").unwrap_err();
        assert!(error.contains("invalid type"), "{error}");
    }

    #[test]
    fn values_out_of_range_are_refused_not_clamped() {
        let error = parse(&["--replicas", "0"], "").unwrap().to_config().unwrap_err();
        assert_eq!(error, "replicas = 0 is out of range: it must be 1 to 16");
        let error = parse(&["--replicas", "3", "--write-quorum", "4"], "").unwrap().to_config().unwrap_err();
        assert!(error.starts_with("write_quorum = 4 is out of range: it must be 1 to 3"), "{error}");
        let error = parse(&[], "[node]\nstabilize_ms = 1\n").unwrap().to_config().unwrap_err();
        assert_eq!(error, "stabilize_ms = 1 is out of range: it must be 10 to 60000");
        let error = parse(&["--repair-ms", "5"], "").unwrap().to_config().unwrap_err();
        assert_eq!(error, "repair_ms = 5 is out of range: it must be at least 100");
        assert!(parse(&[], "").unwrap().to_config().is_ok());
    }

    #[test]
    fn the_tombstone_grace_is_a_duration_with_its_unit() {
        let grace = |args: &[&str], file: &str| parse(args, file).unwrap().to_config().map(|c| c.tombstone_grace);
        assert_eq!(grace(&[], ""), Ok(Duration::from_secs(7 * 24 * 3600)));
        assert_eq!(grace(&["--tombstone-grace", "90s"], ""), Ok(Duration::from_secs(90)));
        assert_eq!(grace(&[], "[node]\ntombstone_grace = \"2d 12h\"\n"), Ok(Duration::from_secs(60 * 3600)));
        let error = grace(&["--tombstone-grace", "forever"], "").unwrap_err();
        assert!(error.starts_with("tombstone_grace = \"forever\" is not a duration such as 7d"), "{error}");
        let error = grace(&["--tombstone-grace", "10ms"], "").unwrap_err();
        assert_eq!(error, "tombstone_grace = \"10ms\" is out of range: it must be at least 1s");
    }
}
