//! A node whose clock runs ten minutes ahead (libfaketime, which `make test`
//! installs) among nodes whose clocks agree: it says so, takes no writes
//! it would have to stamp, and none of its time ends up in a version, so it
//! neither wins overwrites it should lose nor brings deleted files back.
//! The nodes are processes of the binary on free loopback ports.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ringshare");
/// Debian's libfaketime, multithreaded flavour.
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

fn plugins() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins/default");
    assert!(dir.join("index.wasm").is_file(), "build the plugins first (scripts/build-plugins.sh)");
    dir
}

/// A node process, killed on drop.
struct NodeProcess {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl NodeProcess {
    /// Starts a node on `port`, joining the node on `join`; `ahead` runs
    /// its clock ten minutes ahead.
    fn start(port: u16, join: Option<u16>, ahead: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let listen = format!("127.0.0.1:{port}");
        let mut command = Command::new(BIN);
        command.current_dir(dir.path()).args(["node", "--amqp", "none", "--listen", &listen, "--data", "data"]);
        command.args(["--stabilize-ms", "50", "--repair-ms", "300", "--replicas", "3", "--plugins"]).arg(plugins());
        if let Some(join) = join {
            command.args(["--join", &format!("127.0.0.1:{join}")]);
        }
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("RINGSHARE_")) {
            command.env_remove(key);
        }
        if ahead {
            command.env("LD_PRELOAD", FAKETIME).env("FAKETIME", "+10m").env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        let child = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        Self { child, url: format!("http://{listen}"), _dir: dir }
    }

    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` consecutive ports free on 127.0.0.1 right now.
fn free_ports(n: u16) -> u16 {
    for _ in 0..200 {
        let base = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if base < 60_000 && (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports");
}

async fn json(url: &str) -> Option<Value> {
    reqwest::get(url).await.ok()?.json().await.ok()
}

/// Polls `check` every 50 ms until it holds, for at most `limit`.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(()) => return,
            Err(why) if Instant::now() > deadline => panic!("{what}: {why}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Whether the node at `url` judges its clock in step, once it measured two peers.
async fn in_step(url: &str) -> Result<bool, String> {
    let ring = json(&format!("{url}/ring")).await.ok_or("no answer")?;
    let clock = &ring["clock"];
    if clock["measured"]["peers"].as_u64().unwrap_or(0) < 2 {
        return Err(format!("{url} measured fewer than two peers: {clock}"));
    }
    Ok(clock["in_step"].as_bool().expect("in_step"))
}

/// The address of the node responsible for `name`, as `via` sees it.
async fn responsible(via: &NodeProcess, name: &str) -> String {
    let lookup = json(&via.at(&format!("/lookup/{name}"))).await.expect("a lookup");
    lookup["node"]["addr"].as_str().unwrap().to_owned()
}

async fn put(via: &NodeProcess, name: &str, body: &str) -> (StatusCode, Value) {
    let answer =
        reqwest::Client::new().put(via.at(&format!("/files/{name}?overwrite=true"))).body(body.to_owned()).send().await;
    let answer = answer.unwrap();
    (answer.status(), answer.json().await.unwrap_or(Value::Null))
}

async fn get(via: &NodeProcess, name: &str) -> Result<String, StatusCode> {
    let answer = reqwest::get(via.at(&format!("/files/{name}"))).await.unwrap();
    match answer.status() {
        StatusCode::OK => Ok(answer.text().await.unwrap()),
        status => Err(status),
    }
}

fn wall_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_ten_minutes_ahead_says_so_takes_no_writes_and_wins_nothing() {
    assert!(
        Path::new(FAKETIME).is_file(),
        "{FAKETIME} is missing: `make test` installs libfaketime (scripts/setup.sh)"
    );
    let base = free_ports(3);
    let a = NodeProcess::start(base, None, false);
    eventually(Duration::from_secs(30), "the first node starts", || async {
        json(&a.at("/ring")).await.map(drop).ok_or_else(|| "no answer".to_owned())
    })
    .await;
    let b = NodeProcess::start(base + 1, Some(base), false);
    let fast = NodeProcess::start(base + 2, Some(base), true);
    let fast_addr = format!("127.0.0.1:{}", base + 2);

    // It says so: out of step on /ring and in /metrics; the others are in step.
    eventually(Duration::from_secs(60), "the clocks are judged", || async {
        match (in_step(&a.url).await?, in_step(&b.url).await?, in_step(&fast.url).await?) {
            (true, true, false) => Ok(()),
            verdicts => Err(format!("in step (a, b, fast): {verdicts:?}")),
        }
    })
    .await;
    let metrics = reqwest::get(fast.at("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "ringshare_clock_in_step 0"), "{metrics}");
    let offset = metrics.lines().find_map(|l| l.strip_prefix("ringshare_clock_offset_ms ")).expect("the offset");
    let offset: f64 = offset.trim().parse().unwrap();
    assert!((-601_000.0..=-599_000.0).contains(&offset), "the peers are ten minutes behind it: {offset} ms");

    // A name it is responsible for: it would stamp the version, so the
    // upload is refused (503 clock-offset) whichever node takes it.
    let mut mine = None;
    let mut theirs = None;
    for n in 0..500 {
        let name = format!("name-{n}");
        let owner = responsible(&a, &name).await;
        match (owner == fast_addr, &mine, &theirs) {
            (true, None, _) => mine = Some(name),
            (false, _, None) => theirs = Some(name),
            _ => {}
        }
        if mine.is_some() && theirs.is_some() {
            break;
        }
    }
    let (mine, theirs) = (mine.expect("a name the fast node owns"), theirs.expect("a name another node owns"));
    let (status, error) = put(&a, &mine, "stamped by a fast clock?").await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("clock-offset")), "{error}");
    assert!(get(&a, &mine).await.is_err(), "nothing of the refused upload is kept");

    // A name another node owns: versions come from that node's clock, even
    // when the fast node takes the request; the last overwrite wins.
    let mut versions = Vec::new();
    for (via, body) in [(&a, "one"), (&fast, "two"), (&b, "three")] {
        let (status, entry) = put(via, &theirs, body).await;
        assert_eq!(status, StatusCode::CREATED, "{body} via {}: {entry}", via.url);
        versions.push(entry["modified_ns"].as_u64().expect("a version"));
    }
    assert!(versions.is_sorted() && versions.iter().all(|&v| v < wall_ns() + 1_000_000_000), "{versions:?}");
    for node in [&a, &b, &fast] {
        assert_eq!(get(node, &theirs).await.as_deref(), Ok("three"), "via {}", node.url);
    }
    // A deletion through the fast node is stamped by the owner too, and
    // stays: repair passes (every 300 ms) bring nothing back.
    let deleted = reqwest::Client::new().delete(fast.at(&format!("/files/{theirs}"))).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    for _ in 0..10 {
        for node in [&a, &b, &fast] {
            assert_eq!(get(node, &theirs).await, Err(StatusCode::NOT_FOUND), "via {}", node.url);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Once the fast node is gone, its names are written with the good
    // clocks, and no earlier version stamped ten minutes ahead outranks them.
    drop(fast);
    eventually(Duration::from_secs(60), "a good node takes the fast node's names", || async {
        match put(&a, &mine, "written later").await {
            (StatusCode::CREATED, _) => Ok(()),
            (status, error) => Err(format!("{status}: {error}")),
        }
    })
    .await;
    for node in [&a, &b] {
        assert_eq!(get(node, &mine).await.as_deref(), Ok("written later"), "via {}", node.url);
    }
}
