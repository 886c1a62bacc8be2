//! The `ringshare` command against a real devnet (its nodes are processes
//! of the same binary, on free loopback ports, without a broker): the
//! client commands and their output, exit codes and messages, an
//! interrupted download resumed and verified, the precedence of the
//! configuration file, the environment and the flags, and the devnet's own
//! start and graceful stop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ringshare");

fn plugins() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins/default");
    assert!(dir.join("index.wasm").is_file(), "build the plugins first (scripts/build-plugins.sh)");
    dir
}

/// `ringshare ARGS` in `dir`, with `env` set and RINGSHARE_* from outside cleared.
fn ringshare(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command.current_dir(dir).args(args);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("RINGSHARE_")) {
        command.env_remove(key);
    }
    command.envs(env.iter().copied()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().expect("run ringshare");
    // Bounded: a command that should refuse to start but starts instead
    // fails the test rather than hanging it.
    let pid = child.id();
    let (done, waited) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if waited.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    });
    let output = child.wait_with_output().expect("ringshare ran");
    let _ = done.send(());
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `n` consecutive ports free on 127.0.0.1 right now.
fn free_ports(n: u16) -> u16 {
    for _ in 0..200 {
        let base = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if base > 60_000 {
            continue;
        }
        if (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports");
}

/// A devnet of `nodes` nodes in a temporary folder.
struct Devnet {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
    pids: Vec<u32>,
}

impl Devnet {
    /// A devnet with the plugins built from `plugins/`.
    fn start(nodes: u16) -> Self {
        Self::start_with(nodes, Some(plugins()))
    }

    /// A devnet in an empty folder, given `plugins` (none: as installed,
    /// with only what the binary carries).
    fn start_with(nodes: u16, plugins: Option<PathBuf>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_ports(nodes);
        let mut command = Command::new(BIN);
        command.current_dir(dir.path()).args([
            "devnet",
            "--nodes",
            &nodes.to_string(),
            "--port",
            &port.to_string(),
            "--amqp",
            "none",
        ]);
        if let Some(plugins) = plugins {
            command.arg("--plugins").arg(plugins);
        }
        let mut child =
            command.env("RUST_LOG", "ringshare=debug").stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut pids = Vec::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(pid) = line.split("pid ").nth(1).and_then(|r| r.split_whitespace().next()) {
                pids.push(pid.parse().unwrap());
            }
            if line.starts_with("Ctrl-C stops them all") {
                break;
            }
        }
        assert_eq!(pids.len(), nodes as usize, "the devnet printed every node");
        std::thread::spawn(move || for _ in lines {});
        let devnet = Devnet { dir, port, child, pids };
        devnet.until("the ring never reached every node", |d| {
            d.json(&["nodes"], d.port)
                .as_array()
                .is_some_and(|a| a.len() == usize::from(nodes) && a.iter().all(|n| n["alive"] == true))
        });
        devnet
    }

    fn node(&self, i: u16) -> String {
        format!("127.0.0.1:{}", self.port + i)
    }

    fn run(&self, args: &[&str], node: u16) -> Output {
        let node = self.node(node);
        let mut all = args.to_vec();
        all.extend(["--node", &node]);
        ringshare(self.dir.path(), &all, &[])
    }

    fn json(&self, args: &[&str], port: u16) -> Value {
        let node = format!("127.0.0.1:{port}");
        let mut all = args.to_vec();
        all.extend(["--node", &node, "--json"]);
        let output = ringshare(self.dir.path(), &all, &[]);
        serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
    }

    /// Polls `check` every 50 ms for up to 30 s.
    fn until(&self, what: &str, mut check: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !check(self) {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        for pid in &self.pids {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(u32::from(seed)) as u8).collect()
}

#[test]
fn the_client_commands_against_a_devnet() {
    let net = Devnet::start(3);
    let data = pattern(3 << 20, 1);
    std::fs::write(net.path("report.pdf"), &data).unwrap();

    let put = net.run(&["put", "report.pdf"], 0);
    assert!(put.status.success(), "{}", stderr(&put));
    assert!(stdout(&put).starts_with("stored report.pdf: 3145728 bytes, blake3 "), "{}", stdout(&put));
    let again = net.run(&["put", "report.pdf"], 0);
    assert_eq!(again.status.code(), Some(5), "exists: {}", stderr(&again));

    // Downloaded from another node: byte for byte.
    let get = net.run(&["get", "report.pdf", "-o", "copy.pdf"], 1);
    assert!(get.status.success(), "{}", stderr(&get));
    assert!(stdout(&get).contains("blake3 verified"), "{}", stdout(&get));
    assert!(std::fs::read(net.path("copy.pdf")).unwrap() == data);
    assert!(!net.path("copy.pdf.part").exists() && !net.path("copy.pdf.part.etag").exists());
    // To standard output, in a pipe.
    let piped = net.run(&["get", "report.pdf", "-o", "-"], 2);
    assert!(piped.status.success() && piped.stdout == data, "{}", stderr(&piped));

    let listed = net.json(&["ls"], net.port);
    let shown = listed.as_array().unwrap().iter().find(|f| f["name"] == "report.pdf").cloned().unwrap_or_default();
    assert_eq!(shown["size"], 3 << 20, "{listed}");
    assert_eq!(shown["blake3"].as_str().map(str::len), Some(64), "{listed}");
    let network = net.json(&["ls", "--network"], net.port + 1);
    assert_eq!(network[0]["name"], "report.pdf", "{network}");
    assert_eq!(network[0]["holders"].as_array().map(Vec::len), Some(3), "{network}");
    let table = stdout(&net.run(&["ls", "--network"], 0));
    assert!(table.starts_with("NAME") && table.contains("report.pdf") && table.contains("3.0 MiB"), "{table}");
    let found = net.json(&["search", "rep"], net.port + 2);
    assert_eq!(found[0]["name"], "report.pdf", "{found}");
    assert_eq!(net.json(&["search", "zzz"], net.port), Value::Array(vec![]));
    let lookup = net.json(&["lookup", "report.pdf"], net.port);
    assert_eq!(lookup["holders"].as_array().map(Vec::len), Some(3), "{lookup}");
    assert!(lookup["hops"].is_u64() && lookup["node"]["addr"].is_string(), "{lookup}");
    let words = stdout(&net.run(&["lookup", "report.pdf"], 0));
    assert!(words.contains("responsible: 127.0.0.1:") && words.contains("holders: "), "{words}");
    let nodes = net.json(&["nodes"], net.port);
    assert_eq!(nodes.as_array().map(Vec::len), Some(3), "{nodes}");
    let ring = net.json(&["ring"], net.port);
    assert_eq!(ring["joined"], true, "{ring}");
    let plugins = stdout(&net.run(&["plugins"], 0));
    assert!(plugins.contains("upload.wasm") && plugins.contains("serving"), "{plugins}");

    // Errors in words, with exit codes that mean something.
    let missing = net.run(&["get", "missing.pdf"], 0);
    assert_eq!(missing.status.code(), Some(4), "{}", stderr(&missing));
    assert!(stderr(&missing).contains("no such file: missing.pdf"), "{}", stderr(&missing));
    for bad in ["..", "a/b", ""] {
        let refused = net.run(&["get", bad], 0);
        assert_eq!(refused.status.code(), Some(6), "{bad:?}: {}", stderr(&refused));
        assert!(stderr(&refused).contains("is not a file name"), "{}", stderr(&refused));
    }
    let closed = free_ports(1).to_string();
    let unreachable = ringshare(net.dir.path(), &["ls", "--node", &format!("127.0.0.1:{closed}")], &[]);
    assert_eq!(unreachable.status.code(), Some(3));
    assert!(
        stderr(&unreachable).contains(&format!("node 127.0.0.1:{closed} is not reachable")),
        "{}",
        stderr(&unreachable)
    );
    assert!(!stderr(&unreachable).contains("panicked") && !stderr(&unreachable).contains("backtrace"));

    // Over HTTPS on the same port, trusting the devnet's CA.
    let https = format!("https://{}", net.node(1));
    let ca = net.path("data/certs/ca/ca.crt");
    let secure = ringshare(
        net.dir.path(),
        &["get", "report.pdf", "-o", "-", "--node", &https],
        &[("RINGSHARE_CA", ca.to_str().unwrap())],
    );
    assert!(secure.status.success() && secure.stdout == data, "{}", stderr(&secure));
    let no_ca = ringshare(net.dir.path(), &["ls", "--node", &https], &[]);
    assert_eq!(no_ca.status.code(), Some(2), "{}", stderr(&no_ca));
    assert!(stderr(&no_ca).contains("--ca"), "{}", stderr(&no_ca));
    let other = ringshare(net.dir.path(), &["cert", "ca", "--out", "other-ca"], &[]);
    assert!(other.status.success(), "{}", stderr(&other));
    let foreign = ringshare(net.dir.path(), &["ls", "--node", &https, "--ca", "other-ca/ca.crt"], &[]);
    assert_eq!(foreign.status.code(), Some(3), "{}", stderr(&foreign));
    assert!(stderr(&foreign).contains("certificate"), "says why: {}", stderr(&foreign));

    let removed = net.run(&["rm", "report.pdf"], 2);
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert_eq!(net.run(&["get", "report.pdf"], 0).status.code(), Some(4));
}

/// The binary as installed, run from an empty folder: no plugins folder, so
/// the plugins built into it serve; a plugins folder named but missing is
/// refused; the embedded plugins export as files.
#[test]
fn the_binary_runs_from_an_empty_folder_with_its_embedded_plugins() {
    let net = Devnet::start_with(2, None);
    assert!(net.path("plugins").is_dir(), "the nodes made their plugins folder, to follow it");
    std::fs::write(net.path("notes.txt"), "from anywhere").unwrap();
    let put = net.run(&["put", "notes.txt"], 0);
    assert!(put.status.success(), "{}", stderr(&put));
    let got = net.run(&["get", "notes.txt", "-o", "-"], 1);
    assert_eq!(stdout(&got), "from anywhere", "{}", stderr(&got));
    let plugins = net.json(&["plugins"], net.port);
    let serving: Vec<&Value> = plugins.as_array().unwrap().iter().filter(|p| p["loaded"] == true).collect();
    assert_eq!(serving.len(), 3, "{plugins}");
    assert!(serving.iter().all(|p| p["source"] == "embedded"), "{plugins}");
    let table = stdout(&net.run(&["plugins"], 0));
    assert!(table.contains("upload.wasm (embedded)") && table.contains("serving"), "{table}");

    let exported = ringshare(net.dir.path(), &["plugin", "export", "mine"], &[]);
    assert!(exported.status.success(), "{}", stderr(&exported));
    for kind in ["index", "upload", "download"] {
        let file = net.path(&format!("mine/{kind}.wasm"));
        let check = ringshare(net.dir.path(), &["plugin", "check", file.to_str().unwrap(), "--plugins", "mine"], &[]);
        assert!(check.status.success(), "the exported {kind} plugin passes the check: {}", stdout(&check));
    }
    let again = ringshare(net.dir.path(), &["plugin", "export", "mine"], &[]);
    assert_eq!(again.status.code(), Some(1), "nothing is written over");
    let spelled = ringshare(net.dir.path(), &["plugins", "export", "theirs"], &[]);
    assert!(spelled.status.success(), "{}", stderr(&spelled));
    for kind in ["index", "upload", "download"] {
        let (one, other) = (net.path(&format!("mine/{kind}.wasm")), net.path(&format!("theirs/{kind}.wasm")));
        assert!(std::fs::read(one).unwrap() == std::fs::read(other).unwrap(), "`plugins export` wrote {kind} the same");
    }

    let missing =
        ringshare(net.dir.path(), &["node", "--amqp", "none", "--listen", "127.0.0.1:0", "--plugins", "nowhere"], &[]);
    assert_eq!(missing.status.code(), Some(2), "{}", stderr(&missing));
    assert!(stderr(&missing).contains("nowhere is not a folder"), "{}", stderr(&missing));
}

#[test]
fn an_interrupted_download_is_resumed_and_verified() {
    let net = Devnet::start(2);
    let first = pattern(256 << 20, 3);
    std::fs::write(net.path("big.bin"), &first).unwrap();
    assert!(net.run(&["put", "big.bin"], 0).status.success());

    // Interrupted: killed once part of it is on disk.
    let interrupt = |net: &Devnet| {
        let node = net.node(1);
        let mut get = Command::new(BIN)
            .current_dir(net.dir.path())
            .args(["get", "big.bin", "-o", "out.bin", "--node", &node])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let part = net.path("out.bin.part");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::fs::metadata(&part).map_or(0, |m| m.len()) < 4 << 20 {
            assert!(
                Instant::now() < deadline && get.try_wait().unwrap().is_none(),
                "the download ended before it could be cut"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        get.kill().unwrap();
        get.wait().unwrap();
        std::fs::metadata(&part).unwrap().len()
    };
    let cut = interrupt(&net);
    assert!(cut < 256 << 20, "the part is partial");
    let resumed = net.run(&["get", "big.bin", "-o", "out.bin", "--resume"], 1);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(stdout(&resumed).contains("resumed at byte"), "{}", stdout(&resumed));
    assert!(std::fs::read(net.path("out.bin")).unwrap() == first, "the resumed file is whole and right");
    std::fs::remove_file(net.path("out.bin")).unwrap();

    // Cut again, then the file changes: the part is of the old version, so
    // If-Range makes the node send the new one whole.
    interrupt(&net);
    let second = pattern(256 << 20, 7);
    std::fs::write(net.path("big.bin"), &second).unwrap();
    assert!(net.run(&["put", "big.bin", "--overwrite"], 0).status.success());
    let restarted = net.run(&["get", "big.bin", "-o", "out.bin", "--resume"], 1);
    assert!(restarted.status.success(), "{}", stderr(&restarted));
    assert!(!stdout(&restarted).contains("resumed at byte"), "{}", stdout(&restarted));
    assert!(std::fs::read(net.path("out.bin")).unwrap() == second, "the new version, whole");
}

#[test]
fn settings_come_from_the_file_then_the_environment_then_the_flags() {
    let net = Devnet::start(1);
    let live = net.node(0);
    let (dead_file, dead_flag) = (free_ports(1).to_string(), free_ports(1).to_string());
    std::fs::write(net.path("ringshare.toml"), format!("[client]\nnode = \"127.0.0.1:{dead_file}\"\n")).unwrap();
    let dir = net.dir.path();

    let from_file = ringshare(dir, &["nodes"], &[]);
    assert_eq!(from_file.status.code(), Some(3));
    assert!(stderr(&from_file).contains(&format!("127.0.0.1:{dead_file}")), "{}", stderr(&from_file));
    let from_env = ringshare(dir, &["nodes"], &[("RINGSHARE_NODE", &live)]);
    assert!(from_env.status.success(), "the environment wins over the file: {}", stderr(&from_env));
    let from_flag =
        ringshare(dir, &["nodes", "--node", &format!("127.0.0.1:{dead_flag}")], &[("RINGSHARE_NODE", &live)]);
    assert_eq!(from_flag.status.code(), Some(3), "the flag wins over the environment");
    assert!(stderr(&from_flag).contains(&format!("127.0.0.1:{dead_flag}")), "{}", stderr(&from_flag));

    // Out of range is refused, from any source, before anything starts.
    let flag = ringshare(dir, &["node", "--replicas", "0"], &[]);
    assert_eq!(flag.status.code(), Some(2));
    assert!(stderr(&flag).contains("replicas = 0 is out of range: it must be 1 to 16"), "{}", stderr(&flag));
    std::fs::write(net.path("bad.toml"), "[node]\nstabilize_ms = 1\n").unwrap();
    let file = ringshare(dir, &["--config", "bad.toml", "node"], &[]);
    assert_eq!(file.status.code(), Some(2));
    assert!(stderr(&file).contains("stabilize_ms = 1 is out of range"), "{}", stderr(&file));
    let env = ringshare(dir, &["node"], &[("RINGSHARE_PLUGIN_MEMORY_MIB", "0")]);
    assert!(stderr(&env).contains("plugin_memory_mib = 0 is out of range"), "{}", stderr(&env));
    std::fs::write(net.path("typo.toml"), "[node]\nreplica = 2\n").unwrap();
    let typo = ringshare(dir, &["--config", "typo.toml", "node"], &[]);
    assert!(stderr(&typo).contains("unknown field `replica`"), "{}", stderr(&typo));
    let missing = ringshare(dir, &["--config", "nowhere.toml", "nodes"], &[]);
    assert!(stderr(&missing).contains("cannot read the configuration file nowhere.toml"), "{}", stderr(&missing));

    // Logs as JSON, one object per line, for machines.
    let port = free_ports(1).to_string();
    std::fs::create_dir_all(net.path("no-plugins")).unwrap();
    let mut node = Command::new(BIN)
        .current_dir(dir)
        .args([
            "--log-format",
            "json",
            "node",
            "--amqp",
            "none",
            "--plugins",
            "no-plugins",
            "--embedded-plugins",
            "false",
        ])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data", "json-node"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = BufReader::new(node.stderr.take().unwrap()).lines().next().unwrap().unwrap();
    node.kill().unwrap();
    node.wait().unwrap();
    let line: Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert!(line["level"].is_string() && line["fields"]["message"].is_string(), "{line}");

    let help = stdout(&ringshare(dir, &["node", "--help"], &[]));
    for line in ["[default: 8]", "[env: RINGSHARE_REPLICAS=]", "[default: 127.0.0.1:8080]", "[default: 30000]"] {
        assert!(help.contains(line), "--help shows {line}:\n{help}");
    }
}

#[test]
fn a_devnet_survives_a_killed_node_and_stops_gracefully() {
    let mut net = Devnet::start(3);
    let killed = net.pids.pop().unwrap();
    assert!(Command::new("kill").args(["-9", &killed.to_string()]).status().unwrap().success());
    net.until("the others never saw the node go", |d| {
        let nodes = d.json(&["nodes"], d.port);
        nodes.as_array().is_some_and(|a| a.len() == 2 && a.iter().all(|n| n["alive"] == true))
    });
    assert!(net.child.try_wait().unwrap().is_none(), "the devnet runs on");

    let devnet = net.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &devnet]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = net.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the devnet did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    for i in 0..2 {
        assert!(std::net::TcpStream::connect(net.node(i)).is_err(), "node {i} stopped");
    }
    net.pids.clear();
}

/// `ringshare` alone on a terminal (a pty from `script`): the menu uploads
/// a file and quits; keys are typed ahead, as a fast user would.
#[test]
fn the_menu_uploads_a_file_on_a_terminal() {
    use std::io::Write;
    let net = Devnet::start(1);
    std::fs::write(net.path("note.txt"), b"from the menu").unwrap();
    let mut menu = Command::new("script")
        .current_dir(net.dir.path())
        .args(["-qec", BIN, "/dev/null"])
        .env("RINGSHARE_NODE", net.node(0))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("script (util-linux) runs the menu on a pty");
    // Down to "Upload a file", the file's name, then up from the top to "Quit".
    menu.stdin.take().unwrap().write_all(b"\x1b[B\rnote.txt\r\x1b[A\r").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while menu.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the menu did not quit");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut screen = String::new();
    std::io::Read::read_to_string(&mut menu.stdout.take().unwrap(), &mut screen).unwrap();
    assert!(screen.contains("Search and download") && screen.contains("stored note.txt: 13 bytes"), "{screen}");
    let listed = net.json(&["ls"], net.port);
    assert_eq!(listed[0]["name"], "note.txt", "{listed}");
}

/// One request followed across nodes: the trace id a request carries (or
/// is given) shows in the log lines of every node that served a part of it.
#[test]
fn a_request_is_followed_across_nodes_in_the_logs() {
    let net = Devnet::start(2);
    // `request` sent as it is to the first node; its whole answer.
    let send = |request: &str| {
        use std::io::{Read, Write};
        let mut socket = std::net::TcpStream::connect(net.node(0)).unwrap();
        socket.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        socket.read_to_string(&mut answer).unwrap();
        answer
    };
    // Whether the log of node `i` has a line with both `a` and `b`.
    let logged = |d: &Devnet, i: u16, a: &str, b: &str| {
        let log = std::fs::read_to_string(d.path(&format!("data/node-{}.log", d.port + i))).unwrap_or_default();
        log.lines().any(|l| l.contains(a) && l.contains(b))
    };
    let answer = send(
        "GET /files?scope=network&walk=true HTTP/1.1\r\nHost: x\r\nx-ringshare-trace: 00000000cafef00d\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("x-ringshare-trace: 00000000cafef00d"), "{answer}");
    // Both nodes logged their part (the other one: the listing it was asked for over gRPC).
    net.until("the trace id never reached both logs", |d| {
        (0..2).all(|i| logged(d, i, "trace=00000000cafef00d", "answered"))
    });
    assert!(logged(&net, 1, "trace=00000000cafef00d", "/ringshare.files.v1"), "the listing asked for over gRPC");
    // A streaming call too: the copy an upload sends to the other node.
    let answer = send(
        "PUT /files/traced.txt HTTP/1.1\r\nHost: x\r\nx-ringshare-trace: 00000000feedbeef\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    );
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    net.until("the upload's copy was not traced on the other node", |d| {
        logged(d, 1, "trace=00000000feedbeef", "Files/Store")
    });
}

/// `ringshare cert ca` and `cert node` make a cluster's certificates; every
/// bad input is refused with exit 2 and a message naming the file; a node
/// given a bad `--tls-dir` does not start.
#[test]
fn cert_commands_make_a_cluster_and_refuse_bad_input_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let at = dir.path();
    let made = ringshare(at, &["cert", "ca", "--out", "ca"], &[]);
    assert!(made.status.success(), "{}", stderr(&made));
    assert!(stdout(&made).contains("keep ca.key safe"), "{}", stdout(&made));
    let again = ringshare(at, &["cert", "ca", "--out", "ca"], &[]);
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("ca.key") && stderr(&again).contains("already exists"), "{}", stderr(&again));

    let issued = ringshare(at, &["cert", "node", "--ca", "ca", "--addr", "127.0.0.1:7100", "--out", "n1"], &[]);
    assert!(issued.status.success(), "{}", stderr(&issued));
    assert!(stdout(&issued).contains("127.0.0.1"), "{}", stdout(&issued));
    for file in ["ca.crt", "node.crt", "node.key"] {
        assert!(at.join("n1").join(file).is_file(), "{file}");
    }
    let no_port = ringshare(at, &["cert", "node", "--ca", "ca", "--addr", "127.0.0.1", "--out", "n2"], &[]);
    assert_eq!(no_port.status.code(), Some(2));
    assert!(stderr(&no_port).contains("HOST:PORT"), "{}", stderr(&no_port));

    // A node refuses a folder whose files are wrong, naming the file.
    let start = |tls: &str| {
        ringshare(at, &["node", "--amqp", "none", "--listen", "127.0.0.1:0", "--data", "d", "--tls-dir", tls], &[])
    };
    std::fs::create_dir(at.join("broken")).unwrap();
    let missing = start("broken");
    assert_eq!(missing.status.code(), Some(2), "{}", stderr(&missing));
    assert!(stderr(&missing).contains("ca.crt"), "{}", stderr(&missing));
    for file in ["ca.crt", "node.crt", "node.key"] {
        std::fs::copy(at.join("n1").join(file), at.join("broken").join(file)).unwrap();
    }
    std::fs::write(at.join("broken/node.crt"), "not a certificate").unwrap();
    let garbled = start("broken");
    assert_eq!(garbled.status.code(), Some(2));
    assert!(stderr(&garbled).contains("node.crt"), "{}", stderr(&garbled));
    // Another node's key beside this certificate.
    let other = ringshare(at, &["cert", "node", "--ca", "ca", "--addr", "127.0.0.1:7101", "--out", "n3"], &[]);
    assert!(other.status.success());
    std::fs::copy(at.join("n1/node.crt"), at.join("broken/node.crt")).unwrap();
    std::fs::copy(at.join("n3/node.key"), at.join("broken/node.key")).unwrap();
    let mismatched = start("broken");
    assert_eq!(mismatched.status.code(), Some(2));
    assert!(
        stderr(&mismatched).contains("node.key") && stderr(&mismatched).contains("not the key"),
        "{}",
        stderr(&mismatched)
    );
    // A certificate of another cluster's CA.
    assert!(ringshare(at, &["cert", "ca", "--out", "ca2"], &[]).status.success());
    std::fs::copy(at.join("n1/node.key"), at.join("broken/node.key")).unwrap();
    std::fs::copy(at.join("ca2/ca.crt"), at.join("broken/ca.crt")).unwrap();
    let foreign = start("broken");
    assert_eq!(foreign.status.code(), Some(2));
    assert!(stderr(&foreign).contains("not issued by the CA"), "{}", stderr(&foreign));
    // Issuing without the CA's key.
    std::fs::remove_file(at.join("ca2/ca.key")).unwrap();
    let keyless = ringshare(at, &["cert", "node", "--ca", "ca2", "--addr", "127.0.0.1:1", "--out", "n4"], &[]);
    assert_eq!(keyless.status.code(), Some(2));
    assert!(stderr(&keyless).contains("ca.key"), "{}", stderr(&keyless));
}

/// A node given write tokens takes `put` and `rm` only with one, which the
/// client sends from RINGSHARE_TOKEN; a token file others can read, and a
/// non-loopback listener without certificates, are refused at start.
#[test]
fn writes_need_the_nodes_token_and_unsafe_starts_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let at = dir.path();
    std::fs::write(at.join("tokens"), "t0ken-one\nt0ken-two\n").unwrap();
    std::fs::set_permissions(at.join("tokens"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(at.join("report.txt"), "quarterly").unwrap();
    let port = free_ports(1);
    let listen = format!("127.0.0.1:{port}");
    let mut node = Command::new(BIN)
        .current_dir(at)
        .args(["node", "--amqp", "none", "--listen", &listen, "--data", "d", "--write-token", "tokens", "--plugins"])
        .arg(plugins())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    assert!(lines.by_ref().take(5).map_while(Result::ok).any(|l| l.contains("listening")), "the node started");
    std::thread::spawn(move || for _ in lines {});

    let put = ringshare(at, &["put", "report.txt", "--node", &listen], &[]);
    assert_eq!(put.status.code(), Some(10), "{}", stderr(&put));
    assert!(stderr(&put).contains("RINGSHARE_TOKEN"), "{}", stderr(&put));
    let wrong = ringshare(at, &["put", "report.txt", "--node", &listen], &[("RINGSHARE_TOKEN", "guess")]);
    assert_eq!(wrong.status.code(), Some(10));
    let put = ringshare(at, &["put", "report.txt", "--node", &listen], &[("RINGSHARE_TOKEN", "t0ken-two")]);
    assert!(put.status.success(), "{}", stderr(&put));
    // Reads need none.
    let got = ringshare(at, &["get", "report.txt", "-o", "-", "--node", &listen], &[]);
    assert_eq!(stdout(&got), "quarterly");
    let rm = ringshare(at, &["rm", "report.txt", "--node", &listen], &[]);
    assert_eq!(rm.status.code(), Some(10));
    let rm = ringshare(at, &["rm", "report.txt", "--node", &listen], &[("RINGSHARE_TOKEN", "t0ken-one")]);
    assert!(rm.status.success(), "{}", stderr(&rm));
    let _ = node.kill();
    let _ = node.wait();

    let start = |args: &[&str]| {
        let mut all = vec!["node", "--amqp", "none", "--data", "d2"];
        all.extend(args);
        ringshare(at, &all, &[])
    };
    std::fs::set_permissions(at.join("tokens"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let readable = start(&["--listen", "127.0.0.1:0", "--write-token", "tokens"]);
    assert_eq!(readable.status.code(), Some(2));
    assert!(stderr(&readable).contains("readable by every user"), "{}", stderr(&readable));
    std::fs::write(at.join("empty"), "\n").unwrap();
    std::fs::set_permissions(at.join("empty"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let empty = start(&["--listen", "127.0.0.1:0", "--write-token", "empty"]);
    assert_eq!(empty.status.code(), Some(2));
    assert!(stderr(&empty).contains("holds no token"), "{}", stderr(&empty));
    let open = start(&["--listen", "0.0.0.0:0"]);
    assert_eq!(open.status.code(), Some(2));
    assert!(stderr(&open).contains("without --tls-dir") && stderr(&open).contains("--insecure"), "{}", stderr(&open));
}
