//! Helpers for the end-to-end tests: start real nodes on `127.0.0.1:0` with
//! plugins built from `plugins/` (by `scripts/build-plugins.sh`, which
//! `make test` runs first), and talk to them over HTTP.

pub mod broker;
pub use broker::Vhost;
pub mod hosts;
mod runtime;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use ringshare::chord::ChordConfig;
use ringshare::{NodeConfig, PluginLimits};

use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The default plugins.
pub const DEFAULT_PLUGINS: [&str; 3] = ["default/index", "default/upload", "default/download"];

/// A built plugin component, e.g. `default/index` or `testdata/spin`.
pub fn plugin(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins").join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} is missing: build the plugins first (scripts/build-plugins.sh)", path.display());
    path
}

/// A cluster's certificates, made in a temporary folder: its CA, and
/// node certificates issued by it.
pub struct Cluster {
    dir: TempDir,
    /// Held while a node certificate is made (tests run side by side).
    making: std::sync::Mutex<()>,
}

impl Cluster {
    /// A new cluster CA.
    pub fn new() -> Self {
        Self::in_dir(tempfile::tempdir().expect("temp dir"))
    }

    fn in_dir(dir: TempDir) -> Self {
        ringshare::tls::make_ca(&dir.path().join("ca"), 30).expect("a CA");
        Self { dir, making: std::sync::Mutex::new(()) }
    }

    /// The cluster every test node belongs to unless its test says
    /// otherwise (made once per test process, under `target/tmp`: a static
    /// is never dropped, so it is not left in the system's temp folder).
    pub fn shared() -> &'static Cluster {
        static SHARED: std::sync::OnceLock<Cluster> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| {
            let under = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tmp");
            std::fs::create_dir_all(&under).expect("target/tmp");
            let dir = tempfile::Builder::new().prefix("test-cluster-").tempdir_in(under).expect("temp dir");
            Cluster::in_dir(dir)
        })
    }

    /// A gRPC channel to `node` as a member of this cluster on 127.0.0.1
    /// opens it (mutual TLS).
    pub async fn member_channel(&self, node: &TestNode) -> tonic::transport::Channel {
        let dir = self.node("127.0.0.1");
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("certificate files");
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(read("ca.crt")))
            .identity(tonic::transport::Identity::from_pem(read("node.crt"), read("node.key")));
        let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{}", node.addr)).expect("an address");
        endpoint.tls_config(tls).expect("TLS").connect().await.expect("a member's channel")
    }

    /// The CA's folder.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    /// A node folder (`--tls-dir`) with a certificate naming `host`, made on
    /// first use and shared by every node of that host.
    pub fn node(&self, host: &str) -> PathBuf {
        let out = self.dir.path().join(format!("node-{host}"));
        let _one_at_a_time = self.making.lock().unwrap_or_else(|p| p.into_inner());
        if !out.join(ringshare::tls::NODE_CERT).exists() {
            ringshare::tls::make_node(&self.ca(), &format!("{host}:1"), &out, 30).expect("a node certificate");
        }
        out
    }
}

impl Default for Cluster {
    fn default() -> Self {
        Self::new()
    }
}

/// A running node and the folders it owns. Each node runs on its own tokio
/// runtime, so that [`TestNode::kill`] can stop it dead like a crash: every
/// task and connection gone at once, no goodbye to the ring.
pub struct TestNode {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// `127.0.0.1:PORT`: the node's address in the ring.
    pub addr: String,
    /// Holds `data/` (the store) and `plugins/`; removed on drop.
    dir: Option<TempDir>,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    runtime: runtime::NodeRuntime,
}

/// How to start a test node.
pub struct NodeSetup {
    /// Plugins copied into the node's plugins folder.
    pub plugins: Vec<String>,
    /// Extra files written into the plugins folder: (file name, bytes).
    pub extra_files: Vec<(String, Vec<u8>)>,
    /// The node's configuration, with the folders filled in at start.
    pub limits: PluginLimits,
    /// Upload limit in bytes.
    pub max_upload_bytes: u64,
    /// A ring member to join.
    pub join: Option<String>,
    /// How long to keep trying to join.
    pub join_timeout: Duration,
    /// Period of the repair pass.
    pub repair_every: Duration,
    /// Copies kept of each file.
    pub replicas: usize,
    /// The address to listen on (default: a free port on 127.0.0.1).
    pub listen: Option<String>,
    /// Ring settings: fast maintenance for tests.
    pub chord: ChordConfig,
    /// The RabbitMQ broker (a test's own vhost, see [`Vhost`]); none runs
    /// the node without a bridge.
    pub amqp: Option<String>,
    /// With a broker: how often the live network index is rebuilt.
    pub index_refresh_every: Duration,
    /// Whether a node gone starts a repair pass at once.
    pub repair_on_departure: bool,
    /// With a broker: the first pause before a failed hand-off is retried.
    pub handoff_retry_first: Duration,
    /// The node's certificates (see [`Cluster`]): members only, mutual TLS.
    /// Default: the shared test cluster's, so tests run with TLS on; none
    /// runs the node in plain HTTP.
    pub tls_dir: Option<PathBuf>,
    /// How long an upload's body may stall.
    pub body_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Whether the default plugins built into the binary serve the kinds
    /// the node's folder has none of. Default: off, so that a test's node
    /// runs exactly the plugins it was given.
    pub embedded_plugins: bool,
    /// A namespaced host to run on (see [`hosts`]): the node listens on
    /// port [`hosts::PORT`] there and advertises the host's data address;
    /// the test reaches it on the host's way in. None: loopback.
    pub host: Option<hosts::Host>,
    /// A file of write tokens (`--write-token`); none: writes from loopback only.
    pub write_token: Option<PathBuf>,
    /// How long a call to another node may take (tests: 500 ms).
    pub rpc_timeout: Duration,
    /// Holders a large download reads at once (default: the node's, 8).
    pub download_sources: usize,
    /// How long a tombstone is kept once every holder has it (default: the
    /// node's, 7 days).
    pub tombstone_grace: Duration,
    /// Length of a read lease (default: the node's).
    pub read_lease: Option<Duration>,
}

impl Default for NodeSetup {
    fn default() -> Self {
        Self {
            plugins: DEFAULT_PLUGINS.iter().map(|p| p.to_string()).collect(),
            extra_files: Vec::new(),
            limits: PluginLimits {
                call_timeout: Duration::from_secs(2),
                memory_bytes: 32 << 20,
                chunk_bytes: 64 << 10,
                // Room for the tests on a nearly full disk; the full-disk
                // tests set their own.
                reserve_free_bytes: 16 << 20,
                ..PluginLimits::default()
            },
            max_upload_bytes: 64 << 30,
            join: None,
            join_timeout: Duration::from_secs(20),
            repair_every: Duration::from_millis(300),
            replicas: 3,
            listen: None,
            chord: ChordConfig {
                successors: 8,
                stabilize_every: Duration::from_millis(50),
                fix_fingers_every: Duration::from_millis(200),
                check_predecessor_every: Duration::from_millis(100),
                probe_every: Duration::from_millis(250),
                ..ChordConfig::default()
            },
            amqp: None,
            index_refresh_every: Duration::from_secs(60),
            repair_on_departure: true,
            handoff_retry_first: Duration::from_millis(500),
            tls_dir: Some(Cluster::shared().node("127.0.0.1")),
            body_timeout: Duration::from_secs(60),
            max_connections: ringshare::config::DEFAULT_MAX_CONNECTIONS,
            embedded_plugins: false,
            host: None,
            write_token: None,
            rpc_timeout: Duration::from_millis(500),
            download_sources: ringshare::NodeConfig::new("", "").download_sources,
            tombstone_grace: ringshare::config::DEFAULT_TOMBSTONE_GRACE,
            read_lease: ringshare::NodeConfig::new("", "").read_lease,
        }
    }
}

impl NodeSetup {
    /// A node with just these plugins (e.g. `default/index`, `testdata/spin`).
    pub fn with_plugins(plugins: &[&str]) -> Self {
        Self { plugins: plugins.iter().map(|p| p.to_string()).collect(), ..Self::default() }
    }

    /// Starts the node in a new temporary folder.
    pub async fn start(self) -> TestNode {
        let dir = tempfile::tempdir().expect("temp dir");
        self.start_in(dir).await
    }

    /// Starts the node in `dir` (reusing a store left there by an earlier node).
    pub async fn start_in(self, dir: TempDir) -> TestNode {
        let plugins_dir = dir.path().join("plugins");
        let _ = std::fs::remove_dir_all(&plugins_dir);
        std::fs::create_dir_all(&plugins_dir).expect("plugins dir");
        for name in &self.plugins {
            let src = plugin(name);
            std::fs::copy(&src, plugins_dir.join(src.file_name().unwrap())).expect("copy plugin");
        }
        for (file, bytes) in &self.extra_files {
            std::fs::write(plugins_dir.join(file), bytes).expect("write extra file");
        }
        let mut config = NodeConfig::new(dir.path().join("data"), plugins_dir);
        config.limits = self.limits;
        config.max_upload_bytes = self.max_upload_bytes;
        config.join = self.join;
        config.join_timeout = self.join_timeout;
        config.repair_every = self.repair_every;
        config.replicas = self.replicas;
        config.chord = self.chord;
        config.amqp = self.amqp;
        config.index_refresh_every = self.index_refresh_every;
        config.repair_on_departure = self.repair_on_departure;
        config.handoff_retry_first = self.handoff_retry_first;
        config.tls_dir = self.tls_dir;
        config.body_timeout = self.body_timeout;
        config.max_connections = self.max_connections;
        config.embedded_plugins = self.embedded_plugins;
        config.write_token = self.write_token;
        config.rpc_timeout = self.rpc_timeout;
        config.download_sources = self.download_sources;
        config.tombstone_grace = self.tombstone_grace;
        config.read_lease = self.read_lease;
        let (runtime, listener, url) = match &self.host {
            Some(host) => {
                let runtime = runtime::NodeRuntime::in_namespace(host.namespace.clone());
                let listen = format!("0.0.0.0:{}", hosts::PORT);
                // Bound on one of the runtime's threads: in the host's namespace.
                let listener = runtime.spawn(async move { bind(&listen) }).await.expect("bind in the host");
                config.advertise = Some(format!("{}:{}", host.ip, hosts::PORT));
                (runtime, listener, format!("http://{}:{}", host.reach, hosts::PORT))
            }
            None => {
                let listener = bind(self.listen.as_deref().unwrap_or("127.0.0.1:0"));
                let url = format!("http://{}", listener.local_addr().unwrap());
                (runtime::NodeRuntime::new(), listener, url)
            }
        };
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = config.advertise.clone().unwrap_or_else(|| listener.local_addr().unwrap().to_string());
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            ringshare::run(listener, config, token.cancelled_owned()).await
        });
        TestNode { url, addr, dir: Some(dir), shutdown, task, runtime }
    }
}

impl TestNode {
    /// Starts a node with the default plugins and settings.
    pub async fn start() -> TestNode {
        NodeSetup::default().start().await
    }

    /// `url` + `path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// The node's folder: `data/` (its data folder) and `plugins/`.
    pub fn root(&self) -> &Path {
        self.dir.as_ref().expect("node folder").path()
    }

    /// The node's store: the folder its plugins see as `/store`.
    pub fn data(&self) -> PathBuf {
        self.root().join("data/store")
    }

    /// The node's own state (tombstones, outbox), which no plugin sees.
    pub fn state(&self) -> PathBuf {
        self.root().join("data/node")
    }

    /// Names of files left in the store's temp folder.
    pub fn temp_files(&self) -> Vec<String> {
        std::fs::read_dir(self.data().join("tmp"))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    }

    /// Stops the node gracefully (it leaves the ring) and hands back its folder.
    pub async fn stop(mut self) -> TempDir {
        self.shutdown.cancel();
        (&mut self.task).await.expect("node task").expect("node ran cleanly");
        self.runtime.shut_down();
        self.dir.take().expect("node folder")
    }

    /// Crashes the node: its runtime and every task on it are dropped at once.
    pub fn kill(self) {
        drop(self.crash());
    }

    /// Crashes the node like [`TestNode::kill`], and hands back its folder
    /// (its store, as a crashed process leaves it).
    pub fn crash(mut self) -> TempDir {
        self.runtime.shut_down();
        self.dir.take().expect("node folder")
    }

    /// Waits until the node's task ends (a failed join ends it) and returns its result.
    pub async fn outcome(mut self) -> anyhow::Result<()> {
        let result = (&mut self.task).await.expect("node task");
        self.runtime.shut_down();
        result
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.runtime.shut_down();
    }
}

/// Binds `addr`, retrying for a few seconds while a crashed node's socket
/// on it is still being dropped.
fn bind(addr: &str) -> std::net::TcpListener {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(listener) => return listener,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("binding {addr}: {e}"),
        }
    }
}

/// Writes `bytes` as `file` in `node`'s plugins folder the way deployments
/// do: a temp file (a name the node does not read) renamed over the old one.
pub fn drop_plugin(node: &TestNode, file: &str, bytes: &[u8]) {
    let folder = node.root().join("plugins");
    let temp = folder.join(format!(".{file}.part"));
    std::fs::write(&temp, bytes).expect("write the temp file");
    std::fs::rename(&temp, folder.join(file)).expect("rename it into place");
}

/// An HTTP client for the tests (no proxies: loopback only).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().expect("client")
}

/// Deterministic pseudo-random bytes (xorshift), so big payloads need no storage.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A hand-off that deletes `name` now: a deletion dated long ago would be
/// past the tombstone grace, and the node's next repair pass would rightly
/// drop its tombstone.
pub fn deletion_now(name: &str) -> String {
    let now_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!(r#"{{"name":"{name}","version_ns":{now_ns},"change":{{"kind":"deleted"}}}}"#)
}

/// Lowercase hex BLAKE3 (what `b3sum` prints).
pub fn blake3_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Sends `method target` with `body` over a raw connection, byte for byte as
/// given (HTTP clients normalise targets such as `/files/%2E%2E` away), and
/// returns the status and body of the answer.
pub async fn raw_request(node: &TestNode, method: &str, target: &str, body: &[u8]) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = node.url.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.expect("send head");
    socket.write_all(body).await.expect("send body");
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.expect("read answer");
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete HTTP answer");
    let status_line = String::from_utf8_lossy(&answer[..split]).lines().next().unwrap_or_default().to_owned();
    let status = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status code");
    (status, answer[split + 4..].to_vec())
}

/// How long a ring may take to settle in the tests.
pub const SETTLE: Duration = Duration::from_secs(30);

/// `GET /ring` of `node`, if it answers.
pub async fn ring_view(node: &TestNode) -> Option<Value> {
    client().get(node.at("/ring")).timeout(Duration::from_secs(2)).send().await.ok()?.json().await.ok()
}

fn id_of(v: &Value) -> u64 {
    u64::from_str_radix(v["id"].as_str().unwrap(), 16).unwrap()
}

/// Zave's invariants plus full convergence: every successor list is the next
/// live nodes in id order (ordered, no duplicates, at least one live node),
/// and every predecessor is the previous live node.
fn check_converged(views: &[Value], r: usize) -> Result<(), String> {
    let mut ids: Vec<u64> = views.iter().map(id_of).collect();
    ids.sort_unstable();
    for view in views {
        let me = id_of(view);
        let pos = ids.iter().position(|&i| i == me).unwrap();
        let successors: Vec<u64> = view["successors"].as_array().unwrap().iter().map(id_of).collect();
        let want: Vec<u64> = if ids.len() == 1 {
            vec![me]
        } else {
            (1..ids.len()).take(r).map(|k| ids[(pos + k) % ids.len()]).collect()
        };
        if successors != want {
            return Err(format!("{me:016x}: successors {successors:x?}, want {want:x?}"));
        }
        let predecessor = view["predecessor"].as_object().map(|_| id_of(&view["predecessor"]));
        let want_pred = (ids.len() > 1).then(|| ids[(pos + ids.len() - 1) % ids.len()]);
        if ids.len() > 1 && predecessor != want_pred {
            return Err(format!("{me:016x}: predecessor {predecessor:x?}, want {want_pred:x?}"));
        }
    }
    Ok(())
}

/// Polls `check` every 25 ms until it holds; fails with `what` and the last
/// reason it gave after `SETTLE`.
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    eventually_within(SETTLE, what, check).await
}

/// Polls `check` every 25 ms until it holds; fails with `what` and the last
/// reason it gave after `limit`.
pub async fn eventually_within<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match check().await {
            Ok(()) => return,
            Err(why) if tokio::time::Instant::now() > deadline => panic!("{what}: {why}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

/// Polls until the live `nodes` form a converged ring, or fails after
/// [`SETTLE`] and 4 s more per node: each joiner's place spreads by
/// stabilize rounds, which a busy machine (a build beside the suite) slows.
pub async fn wait_converged(nodes: &[TestNode]) {
    wait_converged_within(SETTLE + Duration::from_secs(4) * nodes.len() as u32, nodes).await
}

/// Polls until the live `nodes` form a converged ring, or fails after `limit`.
pub async fn wait_converged_within(limit: Duration, nodes: &[TestNode]) {
    eventually_within(limit, &format!("ring of {} did not converge", nodes.len()), || async {
        let mut views = Vec::new();
        for node in nodes {
            if let Some(v) = ring_view(node).await {
                views.push(v);
            }
        }
        if views.len() == nodes.len() { check_converged(&views, 8) } else { Err("a node did not answer".into()) }
    })
    .await
}

/// A ring of `n` nodes with the default plugins, joined through the first.
pub async fn start_ring(n: usize) -> Vec<TestNode> {
    let nodes = start_ring_with(n, NodeSetup::default).await;
    wait_converged(&nodes).await;
    nodes
}

/// Starts `n` nodes set up by `setup`, each joining through the first;
/// does not wait for the ring to converge.
pub async fn start_ring_with(n: usize, setup: impl Fn() -> NodeSetup) -> Vec<TestNode> {
    let mut nodes = vec![setup().start().await];
    for _ in 1..n {
        let join = Some(nodes[0].addr.clone());
        nodes.push(NodeSetup { join, ..setup() }.start().await);
    }
    nodes
}

/// The sum of the samples of `name` in a `/metrics` text whose labels
/// include each of `labels` (`k="v"`), 0 when there is none yet.
pub fn sum_of(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .sum()
}

/// The sum of `node`'s samples of `name` with `labels` (see [`sum_of`]).
pub async fn metric_sum(node: &TestNode, name: &str, labels: &[&str]) -> f64 {
    let text = client().get(node.at("/metrics")).send().await.unwrap().text().await.unwrap();
    sum_of(&text, name, labels)
}

/// The value of one series of `node`'s `/metrics` (0 when absent).
pub async fn metric(node: &TestNode, series: &str) -> f64 {
    let text = client().get(node.at("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(&format!("{series} "))).map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Placement holders of `name` (responsible node first), as `/lookup` says.
pub async fn placement(node: &TestNode, name: &str) -> Vec<String> {
    let answer: Value = client().get(node.at(&format!("/lookup/{name}"))).send().await.unwrap().json().await.unwrap();
    answer["holders"].as_array().unwrap().iter().map(|h| h["addr"].as_str().unwrap().to_owned()).collect()
}

/// A name, `{prefix}-{n}` for the first `n` found, that none of the nodes
/// at `away` would hold (as `via` places it now).
pub async fn name_held_away_from(via: &TestNode, away: &[&str], prefix: &str) -> String {
    for n in 0..10_000 {
        let name = format!("{prefix}-{n}");
        if placement(via, &name).await.iter().all(|holder| !away.contains(&holder.as_str())) {
            return name;
        }
    }
    panic!("no name with a holder other than {away:?} in 10,000 tries");
}

/// Uploads `data` as `name` through `via`; it must be created.
pub async fn put(via: &TestNode, name: &str, data: &[u8]) {
    let put = client().put(via.at(&format!("/files/{name}"))).body(data.to_vec()).send().await.unwrap();
    assert_eq!(put.status(), reqwest::StatusCode::CREATED, "{name} via {}", via.addr);
}

/// Polls until the placement holders of every file in `files` (as the ring
/// says now, asked of `nodes[0]`) store it.
pub async fn wait_placed(nodes: &[TestNode], files: &[(String, String)]) {
    eventually("files never reached their holders", || async {
        for (name, sha) in files {
            let holders = placement(&nodes[0], name).await;
            let complete = holders.len() == 3.min(nodes.len())
                && holders.iter().all(|a| {
                    nodes.iter().find(|n| &n.addr == a).is_some_and(|n| {
                        std::fs::read(n.data().join("files").join(name)).is_ok_and(|b| &blake3_hex(&b) == sha)
                    })
                });
            if !complete {
                return Err(format!("{name} is not on all of {holders:?}"));
            }
        }
        Ok(())
    })
    .await
}

/// The router of a one-copy node without a broker, built in-process (no
/// socket; call it with `tower::ServiceExt::oneshot`), with the default
/// plugins in a fresh folder (kept while the returned guard lives), its
/// configuration changed by `change`.
pub async fn built(change: impl FnOnce(&mut NodeConfig)) -> (axum::Router, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for kind in ["index", "upload", "download"] {
        let built = plugin(&format!("default/{kind}"));
        std::fs::copy(&built, plugins.join(format!("{kind}.wasm"))).unwrap();
    }
    let mut config = NodeConfig::new(dir.path().join("data"), plugins);
    config.replicas = 1;
    config.amqp = None;
    change(&mut config);
    let node = ringshare::Node::build(&config, "127.0.0.1:1".into()).await.unwrap();
    (node.app, dir)
}
