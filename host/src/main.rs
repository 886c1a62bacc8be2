//! `ringshare`: parses flags, binds the listener, runs the node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ringshare::{NodeConfig, PluginLimits};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(version, about = "A peer-to-peer file-sharing node with sandboxed WebAssembly plugins")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node.
    Node(NodeArgs),
    /// Work with plugin components.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Load a component as a node would and exercise it against a temporary
    /// store; exits 1 on any problem.
    Check {
        /// The component (`*.wasm`); a manifest beside it (`NAME.toml`) is read too.
        file: PathBuf,
        /// Where the default plugins are, to pair the checked one with for
        /// the steps its kind does not do.
        #[arg(long, env = "RINGSHARE_PLUGINS", default_value = "target/plugins/default")]
        plugins: PathBuf,
    },
}

#[derive(clap::Args)]
struct NodeArgs {
    /// Address of the REST API.
    #[arg(long, env = "RINGSHARE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address others reach this node at, if not the listener's (`host:port`).
    #[arg(long, env = "RINGSHARE_ADVERTISE")]
    advertise: Option<String>,
    /// A ring member to join (`host:port`); without it, start a new ring.
    #[arg(long, env = "RINGSHARE_JOIN")]
    join: Option<String>,
    /// Successor-list length r (keep r >= 2*log2(N) for N nodes).
    #[arg(long, env = "RINGSHARE_SUCCESSORS", default_value_t = 8)]
    successors: usize,
    /// Period of the ring's stabilize task, in milliseconds.
    #[arg(long, env = "RINGSHARE_STABILIZE_MS", default_value_t = 250)]
    stabilize_ms: u64,
    /// Copies kept of each file (k): the responsible node and k-1 successors.
    #[arg(long, env = "RINGSHARE_REPLICAS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=16))]
    replicas: u32,
    /// Durable copies a new upload waits for before it answers (1 to
    /// --replicas; default: all of them); the rest are made in the background.
    #[arg(long, env = "RINGSHARE_WRITE_QUORUM", value_parser = clap::value_parser!(u32).range(1..=16))]
    write_quorum: Option<u32>,
    /// MiB of this node's copies read back and checked on each repair pass
    /// (0: never).
    #[arg(long, env = "RINGSHARE_SCRUB_MIB", default_value_t = 256)]
    scrub_mib: u64,
    /// Period of the repair loop that restores k copies, in milliseconds.
    #[arg(long, env = "RINGSHARE_REPAIR_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(100..))]
    repair_ms: u64,
    /// Run a repair pass as soon as a node is seen to leave or stop
    /// answering (else only every --repair-ms).
    #[arg(long, env = "RINGSHARE_REPAIR_ON_DEPARTURE", default_value_t = true, action = clap::ArgAction::Set)]
    repair_on_departure: bool,
    /// The node's store (created if missing).
    #[arg(long, env = "RINGSHARE_DATA", default_value = "data")]
    data: PathBuf,
    /// Folder of plugin components (`*.wasm`), loaded at start.
    #[arg(long, env = "RINGSHARE_PLUGINS", default_value = "target/plugins/default")]
    plugins: PathBuf,
    /// Largest upload accepted, in bytes.
    #[arg(long, env = "RINGSHARE_MAX_UPLOAD_BYTES", default_value_t = 64 << 30)]
    max_upload_bytes: u64,
    /// Deadline of one plugin call, in milliseconds.
    #[arg(long, env = "RINGSHARE_PLUGIN_TIMEOUT_MS", default_value_t = 30_000)]
    plugin_timeout_ms: u64,
    /// The RabbitMQ broker for hand-offs and events (`amqp://…`; several,
    /// comma-separated, are tried in turn: the nodes of a cluster), or
    /// `none` to run without one.
    #[arg(long, env = "RINGSHARE_AMQP", default_value = ringshare::config::DEFAULT_AMQP)]
    amqp: String,
    /// With a broker: period of the walk of the ring that rebuilds the live
    /// network index (events keep it current in between), in milliseconds.
    #[arg(long, env = "RINGSHARE_INDEX_REFRESH_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1000..))]
    index_refresh_ms: u64,
    /// Linear-memory cap of one plugin instance, in MiB.
    #[arg(long, env = "RINGSHARE_PLUGIN_MEMORY_MIB", default_value_t = 64)]
    plugin_memory_mib: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let command = Cli::parse().command;
    // A check prints its own report; its logs are for RUST_LOG to ask.
    let quiet = matches!(command, Command::Plugin(_));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| if quiet { "off" } else { "info" }.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = match command {
        Command::Node(args) => args,
        Command::Plugin(PluginCommand::Check { file, plugins }) => {
            let report = ringshare::check::check_plugin(&file, &plugins).await;
            println!("{report}");
            std::process::exit(if report.passed() { 0 } else { 1 });
        }
    };
    let mut config = NodeConfig::new(args.data, args.plugins);
    config.max_upload_bytes = args.max_upload_bytes;
    config.advertise = args.advertise;
    config.join = args.join;
    config.chord.successors = args.successors.max(1);
    config.replicas = args.replicas as usize;
    if let Some(w) = args.write_quorum {
        anyhow::ensure!(
            w <= args.replicas,
            "--write-quorum {w} is more than the {} copies kept (--replicas)",
            args.replicas
        );
        config.write_quorum = Some(w as usize);
    }
    config.repair_every = Duration::from_millis(args.repair_ms);
    config.repair_on_departure = args.repair_on_departure;
    config.amqp = (args.amqp != "none").then_some(args.amqp);
    config.index_refresh_every = Duration::from_millis(args.index_refresh_ms);
    config.scrub_bytes_per_pass = args.scrub_mib << 20;
    config.chord.stabilize_every = Duration::from_millis(args.stabilize_ms.max(10));
    config.limits = PluginLimits {
        call_timeout: Duration::from_millis(args.plugin_timeout_ms),
        memory_bytes: args.plugin_memory_mib << 20,
        ..PluginLimits::default()
    };
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    // Scripts and tests wait for this line.
    println!("ringshare node listening on http://{}", listener.local_addr()?);

    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    ringshare::run(listener, config, shutdown.cancelled_owned()).await
}

/// Cancels `token` on ctrl-c or SIGTERM.
async fn stop_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    token.cancel();
}
