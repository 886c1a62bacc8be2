//! Following the plugins folder (inotify, through `notify`): a component or
//! manifest closed after writing, renamed into or out of the folder, or
//! removed is read again. A file still being written is left alone until
//! its writer closes it, so it is never loaded half-written. Events arriving
//! together are read in one go, after a short pause.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};

use super::PluginHost;

/// How long the folder must be quiet before what changed is read.
const QUIET: Duration = Duration::from_millis(40);
/// The longest a change waits while the folder keeps changing.
const AT_MOST: Duration = Duration::from_millis(300);

/// What to read again.
enum Change {
    /// One plugin, by its `.wasm` file name.
    File(String),
    /// Events were lost: the whole folder.
    Everything,
}

/// The watch on the folder; dropping it ends the thread that reloads.
pub struct FolderWatch {
    _watcher: notify::RecommendedWatcher,
}

impl FolderWatch {
    /// Starts following `host`'s folder. Without a watch (no folder, or the
    /// system refused it) the plugins are read at start only, which is logged.
    pub fn start(host: &Arc<PluginHost>) -> Option<Self> {
        let (tx, rx) = mpsc::channel();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            for change in changes(event) {
                let _ = tx.send(change);
            }
        })
        .and_then(|mut w| w.watch(&host.dir, RecursiveMode::NonRecursive).map(|()| w));
        let watcher = match watcher {
            Ok(watcher) => watcher,
            Err(e) => {
                tracing::warn!(folder = %host.dir.display(), "cannot follow the plugins folder, plugins are read at start only: {e}");
                return None;
            }
        };
        let host = Arc::downgrade(host);
        let spawned = std::thread::Builder::new().name("ringshare-plugins".into()).spawn(move || follow(&host, &rx));
        if let Err(e) = spawned {
            tracing::warn!("cannot start the plugins folder's thread, plugins are read at start only: {e}");
            return None;
        }
        Some(Self { _watcher: watcher })
    }
}

fn follow(host: &Weak<PluginHost>, rx: &mpsc::Receiver<Change>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        let until = Instant::now() + AT_MOST;
        loop {
            let wait = QUIET.min(until.saturating_duration_since(Instant::now()));
            match rx.recv_timeout(wait) {
                Ok(change) => batch.push(change),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        let Some(host) = host.upgrade() else { return };
        let mut files = Vec::new();
        for change in batch {
            match change {
                Change::Everything => {
                    files.clear();
                    host.reload(None);
                    break;
                }
                Change::File(file) if !files.contains(&file) => files.push(file),
                Change::File(_) => {}
            }
        }
        if !files.is_empty() {
            host.reload(Some(files));
        }
    }
}

/// The plugins an event concerns.
fn changes(event: notify::Result<notify::Event>) -> Vec<Change> {
    let event = match event {
        Ok(event) => event,
        Err(e) => {
            tracing::warn!("watching the plugins folder: {e}; reading it again");
            return vec![Change::Everything];
        }
    };
    if event.need_rescan() {
        return vec![Change::Everything];
    }
    let finished = matches!(
        event.kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(_))
            | EventKind::Remove(_)
    );
    if !finished {
        return Vec::new();
    }
    event.paths.iter().filter_map(|p| plugin_file(p)).map(Change::File).collect()
}

/// The `.wasm` file a path of the folder belongs to: itself, or the
/// component beside a manifest.
fn plugin_file(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    if name.ends_with(".wasm") {
        Some(name.to_owned())
    } else {
        name.strip_suffix(".toml").map(|stem| format!("{stem}.wasm"))
    }
}
