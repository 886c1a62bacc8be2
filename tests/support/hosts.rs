//! Hosts of their own for the tests: a small network built on this machine
//! out of network namespaces the test makes and removes (CI runs as root).
//!
//! Host `i` is the namespace `{tag}h{i}` with two links:
//! - a data link (`data0`, address `10.213.S.{i+1}`) on the network's bridge,
//!   or on the far bridge while [`Hosts::split`] has cut it off: the nodes
//!   reach each other only over these;
//! - a way in for the test (`mgmt0`, `10.214.S.{i+1}`), on a bridge whose
//!   ports are isolated from each other: the test's own requests (in the
//!   root namespace, which owns `10.214.S.254`) reach the node whatever the
//!   data links do, and no node reaches another over it.
//!
//! A node runs in its host on a runtime whose threads enter the namespace
//! as they start (`setns(2)`): every socket it opens is the host's.
//! Everything made is removed on drop, after a failure too; a command that
//! fails panics with the command and its error, never a silent skip.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The port every node listens on in its host.
pub const PORT: u16 = 7000;

/// One namespaced host: where its node runs and how it is reached.
#[derive(Debug, Clone)]
pub struct Host {
    /// The namespace's name (under `/run/netns`).
    pub namespace: String,
    /// Its address on the data network (what its node advertises).
    pub ip: String,
    /// Its address on the test's way in.
    pub reach: String,
}

/// A network of namespaced hosts.
pub struct Hosts {
    tag: String,
    hosts: Vec<Host>,
}

static MADE: AtomicU32 = AtomicU32::new(0);

/// Runs `ip` (or `tc`) with `args`; panics with the command and its error.
pub fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

fn ip(args: &[&str]) {
    run("ip", args)
}

impl Hosts {
    /// Makes `count` hosts on one network.
    pub fn new(count: usize) -> Hosts {
        assert!(count < 250, "at most 249 hosts");
        let made = MADE.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("r{:x}{made:x}", pid % 0x10000);
        let subnet = free_subnet(pid, made);
        let mut network = Hosts { tag, hosts: Vec::new() };
        network.remove(); // leftovers of a killed run with the same tag
        let (data, far, way_in) = (network.bridge("A"), network.bridge("B"), network.bridge("M"));
        for b in [&data, &far, &way_in] {
            ip(&["link", "add", b, "type", "bridge"]);
            ip(&["link", "set", b, "up"]);
        }
        ip(&["addr", "add", &format!("10.214.{subnet}.254/24"), "dev", &way_in]);
        for i in 0..count {
            let host = Host {
                namespace: format!("{}h{i}", network.tag),
                ip: format!("10.213.{subnet}.{}", i + 1),
                reach: format!("10.214.{subnet}.{}", i + 1),
            };
            let ns = host.namespace.as_str();
            ip(&["netns", "add", ns]);
            network.hosts.push(host.clone());
            for (outer, inner, bridge, addr) in
                [(network.data_link(i), "data0", &data, &host.ip), (network.way_in(i), "mgmt0", &way_in, &host.reach)]
            {
                ip(&["link", "add", &outer, "type", "veth", "peer", "name", inner, "netns", ns]);
                ip(&["link", "set", &outer, "master", bridge, "up"]);
                ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", inner]);
                ip(&["-n", ns, "link", "set", inner, "up"]);
            }
            run("bridge", &["link", "set", "dev", &network.way_in(i), "isolated", "on"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        network
    }

    fn bridge(&self, which: &str) -> String {
        format!("{}{which}", self.tag)
    }

    fn data_link(&self, i: usize) -> String {
        format!("{}d{i}", self.tag)
    }

    fn way_in(&self, i: usize) -> String {
        format!("{}m{i}", self.tag)
    }

    /// Host `i`.
    pub fn host(&self, i: usize) -> Host {
        self.hosts[i].clone()
    }

    /// How many hosts there are.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Splits the network: the hosts `far` reach only each other from now on
    /// (their data links move to the far bridge), the rest only each other.
    pub fn split(&self, far: &[usize]) {
        for &i in far {
            ip(&["link", "set", &self.data_link(i), "master", &self.bridge("B")]);
        }
    }

    /// Heals every split: all data links on the one bridge again.
    pub fn heal(&self) {
        for i in 0..self.hosts.len() {
            ip(&["link", "set", &self.data_link(i), "master", &self.bridge("A")]);
        }
    }

    /// Limits what host `i` sends on its data link to `mbit` Mbit/s (`tc
    /// tbf` on its end of the link): its upload, the scarce direction of
    /// most links. What it receives is not limited.
    pub fn limit(&self, i: usize, mbit: u32) {
        let rate = format!("{mbit}mbit");
        // At least rate / HZ (250 here) in the bucket, or packets drop.
        let burst = format!("{}kb", (mbit as usize * 1000 / 8 / 250).max(32));
        let tbf = ["root", "tbf", "rate", &rate, "burst", &burst, "latency", "400ms"];
        let ns = self.hosts[i].namespace.as_str();
        run("ip", &[&["netns", "exec", ns, "tc", "qdisc", "replace", "dev", "data0"][..], &tbf[..]].concat());
    }

    /// Lifts [`Hosts::limit`] from host `i`.
    pub fn unlimit(&self, i: usize) {
        let ns = self.hosts[i].namespace.as_str();
        run("ip", &["netns", "exec", ns, "tc", "qdisc", "del", "dev", "data0", "root"]);
    }

    /// Bytes host `i` has sent on its data link so far (what the bridge's
    /// end of its link received).
    pub fn sent(&self, i: usize) -> u64 {
        let path = format!("/sys/class/net/{}/statistics/rx_bytes", self.data_link(i));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        text.trim().parse().unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Removes every namespace and link of this network (quietly: some may
    /// not exist).
    fn remove(&self) {
        let quiet = |args: &[&str]| {
            let _ = Command::new("ip").args(args).stderr(std::process::Stdio::null()).status();
        };
        for host in &self.hosts {
            quiet(&["netns", "del", &host.namespace]);
        }
        for which in ["A", "B", "M"] {
            quiet(&["link", "del", &self.bridge(which)]);
        }
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A `10.214.S.0/24` no other network of this machine uses (tests run side
/// by side, and in several processes).
fn free_subnet(pid: u32, made: u32) -> u32 {
    let used = Command::new("ip").args(["-o", "-4", "addr", "show"]).output().expect("ip addr show").stdout;
    let used = String::from_utf8_lossy(&used);
    (0..200)
        .map(|k| (pid + made * 37 + k) % 200 + 20)
        .find(|s| !used.contains(&format!("10.214.{s}.")))
        .expect("a free 10.214.S.0/24")
}

/// Moves the calling thread into `namespace` (a node's runtime calls this
/// as each of its threads starts).
pub fn enter(namespace: &str) {
    let path = format!("/run/netns/{namespace}");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&file),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .unwrap_or_else(|e| panic!("setns into {namespace}: {e}"));
}

/// Writes `token` as the write-token file `dir/write-token`, readable by its
/// owner only (a node refuses a token file every user may read).
pub fn write_token(dir: &std::path::Path, token: &str) -> std::path::PathBuf {
    let file = dir.join("write-token");
    std::fs::write(&file, token).expect("write the token file");
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod 600");
    file
}

/// Starts one node per host of `hosts`, each joined through the first, set
/// up by `setup` (given the host's number) with its host, a certificate
/// naming it and the write token `token` filled in; waits (at most 60 s)
/// until they form one ring.
pub async fn ring_on(
    hosts: &Hosts,
    token: &std::path::Path,
    setup: impl Fn(usize) -> super::NodeSetup,
) -> Vec<super::TestNode> {
    let first = format!("{}:{PORT}", hosts.host(0).ip);
    let mut nodes = Vec::new();
    for i in 0..hosts.len() {
        let host = hosts.host(i);
        let node = super::NodeSetup {
            tls_dir: Some(super::Cluster::shared().node(&host.ip)),
            join: (i > 0).then(|| first.clone()),
            host: Some(host),
            write_token: Some(token.to_owned()),
            ..setup(i)
        };
        nodes.push(node.start().await);
    }
    super::wait_converged_within(std::time::Duration::from_secs(60), &nodes).await;
    nodes
}
