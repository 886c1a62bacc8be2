//! `ringshare devnet`: a small ring on this machine for trying things out.
//! Each node is a child process (`ringshare node`) on 127.0.0.1 with its own
//! store under one folder, the first starting the ring and the others
//! joining it; all share the configuration file and the broker. Between
//! them, ring and file calls go over mutual TLS: on its first start the
//! devnet makes a cluster CA and a node certificate for 127.0.0.1 in
//! `<data>/certs/` (`--tls false` runs them in plain HTTP). Ctrl-C (or
//! SIGTERM) stops every node gracefully; a node killed on its own leaves
//! the others running.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// What `devnet` is asked.
#[derive(clap::Args, Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevnetSettings {
    /// How many nodes (1 to 64).
    #[arg(long, env = "RINGSHARE_DEVNET_NODES", default_value_t = 4)]
    pub nodes: u16,
    /// The first node's port; the others take the next ones.
    #[arg(long, env = "RINGSHARE_DEVNET_PORT", default_value_t = 8080)]
    pub port: u16,
    /// The folder holding every node's store (`node-PORT/`) and log (`node-PORT.log`).
    #[arg(long, env = "RINGSHARE_DEVNET_DATA", default_value = crate::config::DEFAULT_DATA)]
    pub data: PathBuf,
    /// Folder of plugin components every node loads (default: the nodes'
    /// own setting, `[node] plugins` or its default).
    #[arg(long, env = "RINGSHARE_PLUGINS")]
    pub plugins: Option<PathBuf>,
    /// The RabbitMQ broker of every node, or `none` (default: the nodes'
    /// own setting, `[node] amqp` or its default).
    #[arg(long, env = "RINGSHARE_AMQP")]
    pub amqp: Option<String>,
    /// Mutual TLS between the nodes, with a CA and certificates the devnet
    /// makes in `<data>/certs/` on first start (`false`: plain HTTP).
    #[arg(long, env = "RINGSHARE_DEVNET_TLS", default_value_t = true, action = clap::ArgAction::Set)]
    #[serde(default = "yes")]
    pub tls: bool,
}

fn yes() -> bool {
    true
}

/// The devnet's certificates in `data`: its CA (made on first start) and a
/// node certificate for 127.0.0.1 shared by every node; answers the nodes'
/// `--tls-dir`.
pub fn certificates(data: &std::path::Path) -> anyhow::Result<PathBuf> {
    let (ca, node) = (data.join("certs/ca"), data.join("certs/127.0.0.1"));
    if !ca.join(crate::tls::CA_KEY).exists() {
        crate::tls::make_ca(&ca, crate::tls::CA_DAYS)?;
    }
    // Issued again when missing or no longer usable (expired, another CA).
    if crate::tls::Credentials::load(&node).is_err() {
        crate::tls::make_node(&ca, "127.0.0.1:1", &node, crate::tls::NODE_DAYS)?;
    }
    Ok(node)
}

/// A node of the devnet.
struct Running {
    port: u16,
    child: Child,
}

/// Starts the nodes, prints where they are, and runs until Ctrl-C or until
/// every node has stopped. `config` is passed on to each node.
pub async fn run(settings: DevnetSettings, config: Option<PathBuf>) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=64).contains(&settings.nodes),
        "nodes = {} is out of range: it must be 1 to 64",
        settings.nodes
    );
    let last = u32::from(settings.port) + u32::from(settings.nodes) - 1;
    anyhow::ensure!(last <= u32::from(u16::MAX), "ports {}..={last} do not exist", settings.port);
    std::fs::create_dir_all(&settings.data)?;
    let data = std::fs::canonicalize(&settings.data)?;
    let exe = std::env::current_exe()?;
    let tls_dir = if settings.tls { Some(certificates(&data)?) } else { None };
    let amqp = settings.amqp.as_deref().unwrap_or(crate::config::DEFAULT_AMQP);
    if amqp != "none" && !broker_answers(amqp).await {
        eprintln!(
            "devnet: RabbitMQ does not answer at {amqp}; the nodes run and connect when it does \
             (scripts/broker.sh starts one; --amqp none runs without)"
        );
    }
    // Ctrl-C from the start: nodes already started are stopped, not left behind.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut running: Vec<Running> = Vec::new();
    let first = format!("127.0.0.1:{}", settings.port);
    for i in 0..settings.nodes {
        let port = settings.port + i;
        let join = (i > 0).then(|| first.clone());
        let started = tokio::select! {
            started = start(&exe, &settings, &data, port, join, config.as_deref(), tls_dir.as_deref()) => started,
            _ = interrupt.recv() => Err(anyhow::anyhow!("interrupted while starting")),
            _ = terminate.recv() => Err(anyhow::anyhow!("stopped while starting")),
        };
        match started {
            Ok(child) => running.push(Running { port, child }),
            Err(e) => {
                stop(&mut running).await;
                return Err(e);
            }
        }
    }
    // Ready once every node is in the ring, so that a `put` right after
    // stores its k copies.
    let stopped = tokio::select! {
        () = wait_joined(&running) => false,
        _ = interrupt.recv() => true,
        _ = terminate.recv() => true,
    };
    if stopped {
        stop(&mut running).await;
        return Ok(());
    }
    let plugins = settings.plugins.as_ref().map_or_else(
        || "built into the binary (and any in their plugins folder)".into(),
        |p| format!("of {} (the built-in ones for a kind it has none of)", p.display()),
    );
    println!("ringshare devnet: {} nodes with the plugins {plugins}", running.len());
    for node in &running {
        let pid = node.child.id().unwrap_or(0);
        println!(
            "  http://127.0.0.1:{}   pid {pid}   log {}",
            node.port,
            data.join(format!("node-{}.log", node.port)).display()
        );
    }
    match &tls_dir {
        Some(_) => {
            println!("Between nodes: mutual TLS, members only (cluster CA in {}).", data.join("certs/ca").display())
        }
        None => println!("Between nodes: plain HTTP, every caller trusted (--tls false)."),
    }
    println!("Ctrl-C stops them all; a node killed on its own (kill PID) leaves the others running.");

    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                running.retain_mut(|node| match node.child.try_wait() {
                    Ok(Some(status)) => {
                        eprintln!("devnet: the node on port {} stopped ({status}); the others run on", node.port);
                        false
                    }
                    _ => true,
                });
                if running.is_empty() {
                    eprintln!("devnet: every node has stopped");
                    return Ok(());
                }
            }
        }
    }
    eprintln!("devnet: stopping {} nodes (each hands its files over and leaves the ring)", running.len());
    stop(&mut running).await;
    Ok(())
}

async fn start(
    exe: &std::path::Path,
    settings: &DevnetSettings,
    data: &std::path::Path,
    port: u16,
    join: Option<String>,
    config: Option<&std::path::Path>,
    tls_dir: Option<&std::path::Path>,
) -> anyhow::Result<Child> {
    let log = std::fs::File::create(data.join(format!("node-{port}.log")))?;
    let mut command = Command::new(exe);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    command
        .arg("node")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data")
        .arg(data.join(format!("node-{port}")));
    if let Some(plugins) = &settings.plugins {
        command.arg("--plugins").arg(plugins);
    }
    if let Some(amqp) = &settings.amqp {
        command.arg("--amqp").arg(amqp);
    }
    if let Some(tls_dir) = tls_dir {
        command.arg("--tls-dir").arg(tls_dir);
    }
    // What is each node's own is set here, not inherited.
    for own in ["RINGSHARE_LISTEN", "RINGSHARE_ADVERTISE", "RINGSHARE_JOIN", "RINGSHARE_DATA", "RINGSHARE_TLS_DIR"] {
        command.env_remove(own);
    }
    if let Some(join) = join {
        command.arg("--join").arg(join);
    }
    // Their own process group: Ctrl-C reaches the devnet, which stops them in turn.
    command.process_group(0).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log).kill_on_drop(true);
    let mut child = command.spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout from the node"))?;
    let mut lines = BufReader::new(stdout).lines();
    // Ready once it prints its address.
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("listening on") {
                return true;
            }
        }
        false
    })
    .await;
    if ready != Ok(true) {
        let _ = child.start_kill();
        let log = data.join(format!("node-{port}.log"));
        let tail = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(5).collect();
        anyhow::bail!(
            "the node on port {port} did not start; the end of {}:\n{}",
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    // Keep draining its stdout so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(child)
}

/// Waits (30 s at most) until the nodes form one ring: each knows its
/// predecessor and the next nodes after it (as many as the default number
/// of copies needs). Warns if they do not by then.
async fn wait_joined(running: &[Running]) {
    let Ok(http) = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(2)).build() else { return };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut why = String::new();
    while tokio::time::Instant::now() < deadline {
        let mut views = Vec::new();
        for node in running {
            let url = format!("http://127.0.0.1:{}/ring", node.port);
            let view: Option<serde_json::Value> = match http.get(&url).send().await {
                Ok(answer) => answer.json().await.ok(),
                Err(_) => None,
            };
            views.extend(view);
        }
        match one_ring(&views, running.len()) {
            Ok(()) => return,
            Err(e) => why = e,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("devnet: the nodes have not formed one ring in 30 s ({why}); they keep trying");
}

/// Whether `views` (each node's `GET /ring`) show `n` nodes in one ring:
/// each with the right predecessor and, first in its successor list, the
/// next nodes by id (up to the default number of copies less one).
fn one_ring(views: &[serde_json::Value], n: usize) -> Result<(), String> {
    if views.len() < n {
        return Err(format!("{} of {n} nodes answer", views.len()));
    }
    let id = |v: &serde_json::Value| v["id"].as_str().unwrap_or_default().to_owned();
    let mut ids: Vec<String> = views.iter().map(id).collect();
    ids.sort();
    let after = (n - 1).min(crate::NodeConfig::default().replicas.saturating_sub(1));
    for view in views {
        let at = ids.iter().position(|i| *i == id(view)).unwrap_or_default();
        if view["joined"] != true {
            return Err(format!("{} has not joined", view["addr"]));
        }
        let successors: Vec<String> = view["successors"].as_array().into_iter().flatten().map(id).collect();
        let wanted: Vec<String> = (1..=after).map(|k| ids[(at + k) % n].clone()).collect();
        if successors.get(..after) != Some(&wanted[..]) {
            return Err(format!("{} does not know the nodes after it yet", view["addr"]));
        }
        if n > 1 && id(&view["predecessor"]) != ids[(at + n - 1) % n] {
            return Err(format!("{} does not know the node before it yet", view["addr"]));
        }
    }
    Ok(())
}

/// Asks every node to stop (SIGTERM: each hands its files over and leaves
/// the ring), waits up to 30 s for each, then kills what is left.
async fn stop(running: &mut Vec<Running>) {
    for node in running.iter() {
        if let Some(pid) = node.child.id().and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
    for node in running.iter_mut() {
        match tokio::time::timeout(Duration::from_secs(30), node.child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!("devnet: the node on port {} did not stop in 30 s: killed", node.port);
                let _ = node.child.kill().await;
            }
        }
    }
    running.clear();
}

/// Whether something accepts connections where the first broker URL points.
async fn broker_answers(amqp: &str) -> bool {
    let first = amqp.split(',').next().unwrap_or_default();
    let Some(rest) = first.split("://").nth(1) else { return false };
    let host_port = rest.split('/').next().unwrap_or_default();
    let host_port = host_port.rsplit('@').next().unwrap_or_default();
    let target = if host_port.contains(':') { host_port.to_owned() } else { format!("{host_port}:5672") };
    matches!(tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(target)).await, Ok(Ok(_)))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::one_ring;

    fn view(id: &str, predecessor: &str, successors: &[&str]) -> Value {
        let successors: Vec<Value> = successors.iter().map(|s| json!({ "id": s })).collect();
        json!({ "joined": true, "id": id, "addr": format!("node {id}"), "predecessor": { "id": predecessor }, "successors": successors })
    }

    #[test]
    fn a_ring_is_one_when_every_node_knows_its_neighbours() {
        let ring = [view("a", "c", &["b", "c"]), view("b", "a", &["c", "a"]), view("c", "b", &["a", "b"])];
        assert_eq!(one_ring(&ring, 3), Ok(()));
        assert!(one_ring(&ring[..2], 3).unwrap_err().contains("2 of 3 nodes answer"));

        let mut lagging = ring.clone();
        lagging[1] = view("b", "a", &["c"]);
        assert!(one_ring(&lagging, 3).unwrap_err().contains("after it"));
        lagging[1] = view("b", "c", &["c", "a"]);
        assert!(one_ring(&lagging, 3).unwrap_err().contains("before it"));
        lagging[1]["joined"] = json!(false);
        assert!(one_ring(&lagging, 3).unwrap_err().contains("has not joined"));

        let alone = [view("a", "a", &["a"])];
        assert_eq!(one_ring(&alone, 1), Ok(()));
    }
}
