//! Each test node runs on a runtime of its own, so that it can be stopped
//! dead. A runtime shut down in the background leaves the blocking threads
//! that were busy running on: a plugin call on one of them that then asks
//! wasmtime-wasi for a file finds the runtime gone, and wasmtime-wasi panics
//! (`child task panicked: JoinError::Cancelled`). A crashed process has no
//! such threads left, so these panics say nothing about the node; printed
//! with their backtraces, they buried the failing test's own message in CI
//! output. Those panics, on the threads of a runtime that was shut down and
//! saying so, are therefore not printed; every other panic is, as usual
//! (another panic on a shut-down node's thread included).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};

const PREFIX: &str = "ringshare-node-";

/// Runtimes that were shut down, by number.
static ENDED: Mutex<Option<HashSet<u64>>> = Mutex::new(None);
static NEXT: AtomicU64 = AtomicU64::new(0);

/// A node's runtime: one worker, its threads named after its number.
pub(crate) struct NodeRuntime {
    number: u64,
    runtime: Option<tokio::runtime::Runtime>,
}

impl NodeRuntime {
    pub(crate) fn new() -> Self {
        Self::build(None)
    }

    /// A runtime whose every thread enters the network namespace
    /// `namespace` as it starts: the node's sockets are that host's.
    pub(crate) fn in_namespace(namespace: String) -> Self {
        Self::build(Some(namespace))
    }

    fn build(namespace: Option<String>) -> Self {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let print = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let payload = info.payload();
                let message =
                    payload.downcast_ref::<String>().map(String::as_str).or(payload.downcast_ref::<&str>().copied());
                let runtime_gone =
                    message.is_some_and(|m| m.contains("JoinError::Cancelled") || m.contains("shutdown"));
                if !(runtime_gone && on_ended_runtime()) {
                    print(info)
                }
            }));
        });
        let number = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(1).thread_name(format!("{PREFIX}{number}")).enable_all();
        if let Some(namespace) = namespace {
            builder.on_thread_start(move || super::hosts::enter(&namespace));
        }
        let runtime = builder.build().expect("node runtime");
        Self { number, runtime: Some(runtime) }
    }

    pub(crate) fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.as_ref().expect("a running runtime").spawn(future)
    }

    /// Drops every task at once and lets the threads end in the background.
    pub(crate) fn shut_down(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            ENDED.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_default().insert(self.number);
            runtime.shutdown_background();
        }
    }
}

impl Drop for NodeRuntime {
    fn drop(&mut self) {
        self.shut_down();
    }
}

fn on_ended_runtime() -> bool {
    let thread = std::thread::current();
    let Some(number) = thread.name().and_then(|n| n.strip_prefix(PREFIX)).and_then(|n| n.parse::<u64>().ok()) else {
        return false;
    };
    ENDED.lock().unwrap_or_else(|e| e.into_inner()).as_ref().is_some_and(|ended| ended.contains(&number))
}
