//! A real RabbitMQ for the tests: made sure of once per test binary
//! (`scripts/broker.sh` installs and starts it on 127.0.0.1 if nothing
//! answers), and one vhost per test, so tests run in parallel without
//! seeing each other's queues, and leave nothing behind.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// Runs `scripts/broker.sh` once.
pub fn ensure_broker() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/broker.sh");
        let status = Command::new("bash").arg(&script).status().expect("running scripts/broker.sh");
        assert!(status.success(), "no RabbitMQ broker: {} failed", script.display());
    });
}

fn rabbitmqctl(args: &[&str]) -> String {
    let out = Command::new("rabbitmqctl").args(args).output().expect("running rabbitmqctl");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A vhost of the test broker, deleted when dropped.
pub struct Vhost {
    name: String,
    created: bool,
}

impl Vhost {
    /// A new, empty vhost the `guest` user may use.
    pub fn new() -> Self {
        let mut vhost = Self::reserved();
        vhost.create();
        vhost
    }

    /// A vhost name no one uses yet, not created: a node pointed at it
    /// cannot connect (as if the broker were down) until [`Vhost::create`].
    pub fn reserved() -> Self {
        ensure_broker();
        Self { name: format!("ringshare-test-{:016x}", rand::random::<u64>()), created: false }
    }

    /// Creates the vhost (the broker "comes up" for nodes pointed at it).
    pub fn create(&mut self) {
        rabbitmqctl(&["add_vhost", &self.name]);
        rabbitmqctl(&["set_permissions", "-p", &self.name, "guest", ".*", ".*", ".*"]);
        self.created = true;
    }

    /// The URL nodes connect with.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.name)
    }

    /// Messages in each queue (ready and unacknowledged).
    pub fn messages(&self) -> HashMap<String, u64> {
        let listing = rabbitmqctl(&["list_queues", "-q", "--no-table-headers", "-p", &self.name, "name", "messages"]);
        listing
            .lines()
            .filter_map(|line| {
                let (name, count) = line.trim().rsplit_once(char::is_whitespace)?;
                Some((name.trim().to_owned(), count.parse().ok()?))
            })
            .collect()
    }
}

impl Default for Vhost {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        if self.created {
            let _ = Command::new("rabbitmqctl").args(["delete_vhost", &self.name]).output();
        }
    }
}
