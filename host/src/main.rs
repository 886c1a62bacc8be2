//! `ringshare`: runs a node, a local devnet, the client commands, or the
//! menu; settings come from `ringshare.toml`, `RINGSHARE_*` variables and
//! flags, in that order of precedence (see `ringshare::settings`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use ringshare::client::{Client, ClientError, DEFAULT_NODE, GetOptions, PutOptions};
use ringshare::devnet::DevnetSettings;
use ringshare::settings::{ConfigFile, NodeSettings};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    version,
    about = "A peer-to-peer file-sharing network with sandboxed WebAssembly plugins",
    after_help = "Without a command, on a terminal: a menu (search and download, upload, list, nodes).\n\
                  Exit codes: 0 done, 1 failed, 2 bad usage, 3 node not reachable, 4 no such file,\n\
                  5 file exists, 6 refused as invalid, 7 hash mismatch, 8 the node failed, 9 local file error."
)]
struct Cli {
    /// Configuration file (default: ringshare.toml in the current folder, if there is one).
    #[arg(long, global = true, env = "RINGSHARE_CONFIG")]
    config: Option<PathBuf>,
    /// Log lines as text or as JSON (one object per line); RUST_LOG filters them.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "RINGSHARE_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node.
    Node(Box<NodeSettings>),
    /// Run a small ring on this machine (127.0.0.1), one process per node.
    Devnet(DevnetSettings),
    /// Work with plugin components.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Make a cluster's certificates, for mutual TLS between its nodes.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Upload files.
    Put {
        #[command(flatten)]
        to: Target,
        /// The files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The name to store it under (one file only; default: its file name).
        #[arg(long)]
        name: Option<String>,
        /// Replace a file of the same name.
        #[arg(long)]
        overwrite: bool,
    },
    /// Download a file, verified against its hash.
    Get {
        #[command(flatten)]
        to: Target,
        /// The file's name.
        name: String,
        /// Where to write it (default: NAME here; `-`: standard output).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Continue an interrupted download (NAME.part) where it stopped.
        #[arg(long)]
        resume: bool,
    },
    /// List this node's files, or every node's.
    Ls {
        #[command(flatten)]
        to: Target,
        /// Every file of the network, with its holders.
        #[arg(long)]
        network: bool,
    },
    /// Files anywhere whose name starts with PREFIX.
    Search {
        #[command(flatten)]
        to: Target,
        /// The start of the names.
        prefix: String,
    },
    /// The node responsible for NAME, and its holders.
    Lookup {
        #[command(flatten)]
        to: Target,
        /// A file name.
        name: String,
    },
    /// Every node of the ring.
    Nodes {
        #[command(flatten)]
        to: Target,
    },
    /// This node's place in the ring.
    Ring {
        #[command(flatten)]
        to: Target,
    },
    /// Delete a file everywhere.
    Rm {
        #[command(flatten)]
        to: Target,
        /// The file's name.
        name: String,
    },
    /// Follow the events the node hears (until Ctrl-C).
    Events {
        #[command(flatten)]
        to: Target,
    },
    /// What the node loaded from its plugins folder; `plugins export DIR`
    /// writes out the plugins built into this binary.
    Plugins {
        #[command(flatten)]
        to: Target,
        #[command(subcommand)]
        action: Option<PluginsAction>,
    },
}

#[derive(Subcommand)]
enum PluginsAction {
    /// The same as `ringshare plugin export DIR`.
    Export(ExportArgs),
}

/// Where `plugin export` and `plugins export` write.
#[derive(Args)]
struct ExportArgs {
    /// The folder to write into (created if missing).
    dir: PathBuf,
}

/// The node a client command talks to: the `[client]` table.
#[derive(Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientSettings {
    /// The node to talk to.
    #[arg(long, env = "RINGSHARE_NODE", default_value = DEFAULT_NODE)]
    node: String,
    /// A token the node takes (`Authorization: Bearer`): one of its write
    /// tokens for `put` and `rm` (or a read token, if reads need one).
    #[arg(long, env = "RINGSHARE_TOKEN", hide_env_values = true)]
    #[serde(default)]
    token: Option<String>,
    /// The CA certificate (PEM) to trust for an `https://` node: a
    /// devnet's is `data/certs/ca/ca.crt`.
    #[arg(long, env = "RINGSHARE_CA")]
    #[serde(default)]
    ca: Option<PathBuf>,
}

impl ClientSettings {
    /// A client of the node these settings name.
    fn client(&self, json: bool) -> Result<Client, ClientError> {
        Client::new(&self.node, json)?.with_token(self.token.as_deref())?.with_ca(self.ca.as_deref())
    }
}

#[derive(Args)]
struct Target {
    #[command(flatten)]
    settings: ClientSettings,
    /// Print the node's answer as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum CertCommand {
    /// Make a cluster CA: ca.crt and ca.key in OUT. Keep ca.key safe and off
    /// the nodes: whoever has it can admit a node to the cluster.
    Ca {
        /// The folder to write into (created if missing; an existing CA key is never replaced).
        #[arg(long)]
        out: PathBuf,
        /// Days the CA stays valid.
        #[arg(long, default_value_t = ringshare::tls::CA_DAYS)]
        days: u32,
    },
    /// Issue a node certificate: node.crt, node.key and a copy of ca.crt in
    /// OUT, naming the host of ADDR (the address other nodes reach it at).
    Node {
        /// The CA's folder (ca.crt and ca.key).
        #[arg(long)]
        ca: PathBuf,
        /// The node's advertised address, HOST:PORT (an IP address or a DNS name).
        #[arg(long)]
        addr: String,
        /// The folder to write into (the node's --tls-dir).
        #[arg(long)]
        out: PathBuf,
        /// Days the certificate stays valid.
        #[arg(long, default_value_t = ringshare::tls::NODE_DAYS)]
        days: u32,
    },
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
        #[arg(long, env = "RINGSHARE_PLUGINS", default_value = ringshare::config::DEFAULT_PLUGINS)]
        plugins: PathBuf,
    },
    /// Write the default plugins built into the binary (index.wasm,
    /// upload.wasm, download.wasm) into DIR, to start from them; a file
    /// already there is never replaced.
    Export(ExportArgs),
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the runtime: {e}"), 1),
    };
    runtime.block_on(dispatch(cli, &matches))
}

fn fail(message: &str, code: u8) -> ExitCode {
    eprintln!("ringshare: {message}");
    ExitCode::from(code)
}

fn init_logs(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    // Colours only on a terminal: a node's log file stays plain text.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}

async fn dispatch(cli: Cli, matches: &ArgMatches) -> ExitCode {
    let file = match ConfigFile::read(cli.config.as_deref()) {
        Ok(file) => file,
        Err(e) => return fail(&e, 2),
    };
    let sub = matches.subcommand().map(|(_, m)| m);
    let Some(command) = cli.command else {
        init_logs(cli.log_format, "off");
        if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
            let _ = Cli::command().print_help();
            return ExitCode::from(2);
        }
        // No flags here: the file's [client] table, under RINGSHARE_NODE.
        let settings = ClientSettings { node: DEFAULT_NODE.into(), token: None, ca: None };
        let mut settings = match file.layer("client", &settings, matches) {
            Ok(settings) => settings,
            Err(e) => return fail(&e, 2),
        };
        if let Ok(node) = std::env::var("RINGSHARE_NODE") {
            settings.node = node;
        }
        if let Ok(token) = std::env::var("RINGSHARE_TOKEN") {
            settings.token = Some(token);
        }
        if let Ok(ca) = std::env::var("RINGSHARE_CA") {
            settings.ca = Some(ca.into());
        }
        return match settings.client(false) {
            Ok(client) => finish(ringshare::client::menu(client).await.map(|()| String::new())),
            Err(e) => finish(Err(e)),
        };
    };
    let sub = sub.expect("a subcommand's matches");
    match command {
        Command::Node(settings) => {
            init_logs(cli.log_format, "info");
            let settings = match file.layer("node", &settings, sub) {
                Ok(settings) => settings,
                Err(e) => return fail(&e, 2),
            };
            let config = match settings.to_config() {
                Ok(config) => config,
                Err(e) => return fail(&e, 2),
            };
            match run_node(settings.listen, config).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&format!("{e:#}"), 1),
            }
        }
        Command::Devnet(settings) => {
            init_logs(cli.log_format, "info");
            let settings = match file.layer("devnet", &settings, sub) {
                Ok(settings) => settings,
                Err(e) => return fail(&e, 2),
            };
            match ringshare::devnet::run(settings, file.path().map(|p| p.to_path_buf())).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&format!("{e:#}"), 1),
            }
        }
        Command::Plugin(PluginCommand::Check { file: component, plugins }) => {
            // A check prints its own report; its logs are for RUST_LOG to ask.
            init_logs(cli.log_format, "off");
            let report = ringshare::check::check_plugin(&component, &plugins).await;
            println!("{report}");
            if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Command::Plugin(PluginCommand::Export(ExportArgs { dir }))
        | Command::Plugins { action: Some(PluginsAction::Export(ExportArgs { dir })), .. } => {
            match ringshare::plugins::embedded::export(&dir) {
                Ok(written) => {
                    println!("wrote {}", written.join(", "));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e, 1),
            }
        }
        Command::Cert(cert) => {
            let made = match cert {
                CertCommand::Ca { out, days } => ringshare::tls::make_ca(&out, days)
                    .map(|()| format!("made a cluster CA in {} (keep ca.key safe)", out.display())),
                CertCommand::Node { ca, addr, out, days } => {
                    ringshare::tls::make_node(&ca, &addr, &out, days).map(|names| {
                        format!("issued {} for {} in {}", ringshare::tls::NODE_CERT, names.join(", "), out.display())
                    })
                }
            };
            match made {
                Ok(said) => {
                    println!("{said}");
                    ExitCode::SUCCESS
                }
                Err(e @ ringshare::tls::TlsError::Make(_)) => fail(&e.to_string(), 1),
                Err(e) => fail(&e.to_string(), 2),
            }
        }
        client_command => {
            init_logs(cli.log_format, "off");
            finish(run_client(client_command, &file, sub).await)
        }
    }
}

/// Prints a client command's answer, or its error in words with its exit code.
fn finish(outcome: Result<String, ClientError>) -> ExitCode {
    match outcome {
        Ok(text) => {
            if !text.is_empty() {
                println!("{text}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string(), e.exit_code() as u8),
    }
}

async fn run_client(command: Command, file: &ConfigFile, matches: &ArgMatches) -> Result<String, ClientError> {
    let client = |to: &Target| -> Result<Client, ClientError> {
        let settings = file.layer("client", &to.settings, matches).map_err(ClientError::Usage)?;
        settings.client(to.json)
    };
    match command {
        Command::Put { to, files, name, overwrite } => client(&to)?.put(PutOptions { files, name, overwrite }).await,
        Command::Get { to, name, output, resume } => client(&to)?.get(GetOptions { name, output, resume }).await,
        Command::Ls { to, network } => client(&to)?.ls(network).await,
        Command::Search { to, prefix } => client(&to)?.search(&prefix).await,
        Command::Lookup { to, name } => client(&to)?.lookup(&name).await,
        Command::Nodes { to } => client(&to)?.nodes().await,
        Command::Ring { to } => client(&to)?.ring().await,
        Command::Rm { to, name } => client(&to)?.rm(&name).await,
        Command::Plugins { to, action: None } => client(&to)?.plugins().await,
        Command::Events { to } => {
            let client = client(&to)?;
            tokio::select! {
                ended = client.events(|line| println!("{line}")) => Err(ended),
                _ = tokio::signal::ctrl_c() => Ok(String::new()),
            }
        }
        Command::Node(_)
        | Command::Devnet(_)
        | Command::Plugin(_)
        | Command::Cert(_)
        | Command::Plugins { action: Some(_), .. } => {
            unreachable!("dispatched before")
        }
    }
}

/// Raises the soft limit of open files to the hard one (as Go's runtime
/// does): each connection is a descriptor, and the soft default (often
/// 1024) is below the node's connection cap. Says so if it stays below.
fn raise_open_files(connections: usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::debug!("cannot raise the open-files limit: {e}");
        }
    }
    let now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    // Files, plugin stores and peer channels need descriptors too.
    if now < connections as u64 + 256 {
        tracing::warn!(
            open_files = now,
            connections,
            "the open-files limit is below --max-connections; raise it (ulimit -n)"
        );
    }
}

async fn run_node(listen: std::net::SocketAddr, config: ringshare::NodeConfig) -> anyhow::Result<()> {
    raise_open_files(config.max_connections);
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    // Scripts, devnet and tests wait for this line.
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
