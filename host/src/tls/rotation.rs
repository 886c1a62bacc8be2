//! Certificates replaced while the node runs: the node follows its
//! `--tls-dir` (inotify, through `notify`) and, once the folder has been
//! quiet for [`QUIET`], loads it again. Credentials that load and check
//! (see [`Credentials::load`]) take over: new connections are served with
//! them, and the peer channels are made again with them. Credentials that
//! do not are refused with a log line naming the file, and the old ones
//! keep serving. Connections already open keep what they started with.
//! Counted in `ringshare_tls_reloads_total{outcome}`.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::{Credentials, TlsError};
use crate::metrics::{Metrics, OutcomeLabels};

/// How long the folder must be quiet before it is read again (a
/// certificate and its key are written one after the other).
pub const QUIET: Duration = Duration::from_millis(300);

/// What the node's TLS uses now, replaced when the files change.
pub struct Rotating {
    dir: PathBuf,
    server: RwLock<Arc<rustls::ServerConfig>>,
    /// Told the new client configuration (the peer channels).
    on_client: Box<dyn Fn(tonic::transport::ClientTlsConfig) + Send + Sync>,
    metrics: OnceLock<Arc<Metrics>>,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl Rotating {
    /// Serves `credentials` and follows their folder; `on_client` is told
    /// each new client configuration.
    pub fn start(
        credentials: &Credentials,
        on_client: impl Fn(tonic::transport::ClientTlsConfig) + Send + Sync + 'static,
    ) -> Result<Arc<Self>, TlsError> {
        let dir = credentials.dir().to_path_buf();
        let server = RwLock::new(credentials.server_config()?);
        let (changed, changes) = std::sync::mpsc::channel::<()>();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| !e.kind.is_access()) {
                let _ = changed.send(());
            }
        })
        .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w));
        let watcher = match watcher {
            Ok(watcher) => Some(watcher),
            Err(e) => {
                tracing::warn!(folder = %dir.display(), "cannot follow the certificates, a restart takes new ones: {e}");
                None
            }
        };
        let rotating =
            Arc::new(Self { dir, server, on_client: Box::new(on_client), metrics: OnceLock::new(), _watcher: watcher });
        let weak = Arc::downgrade(&rotating);
        std::thread::Builder::new()
            .name("tls-rotation".into())
            .spawn(move || {
                // Ends when the watcher, and so the sender, is dropped.
                while changes.recv().is_ok() {
                    while changes.recv_timeout(QUIET).is_ok() {}
                    match weak.upgrade() {
                        Some(rotating) => rotating.reload(),
                        None => return,
                    }
                }
            })
            .map_err(|e| TlsError::Make(format!("cannot start following the certificates: {e}")))?;
        Ok(rotating)
    }

    /// Counts reloads in `metrics` from now on.
    pub fn count_in(&self, metrics: Arc<Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// The configuration new connections are served with.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Loads the folder again; takes what loads, keeps the old otherwise.
    pub fn reload(&self) {
        let loaded = Credentials::load(&self.dir).and_then(|c| Ok((c.server_config()?, c.client_config())));
        let outcome = match loaded {
            Ok((server, client)) => {
                *self.server.write().unwrap_or_else(|p| p.into_inner()) = server;
                (self.on_client)(client);
                tracing::info!(folder = %self.dir.display(), "took the new certificates");
                "taken"
            }
            Err(e) => {
                tracing::warn!(folder = %self.dir.display(), "refused the new certificates, the old ones serve on: {e}");
                "refused"
            }
        };
        if let Some(metrics) = self.metrics.get() {
            metrics.tls_reloads.get_or_create(&OutcomeLabels { outcome: outcome.to_owned() }).inc();
        }
    }
}
