//! Running a node: prepare the store, load the plugins, serve the API until
//! the shutdown signal.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::NodeConfig;
use crate::plugins::PluginHost;
use crate::rest::{self, AppState};
use crate::store::StoreDir;

/// Serves a node on `listener` until `shutdown` completes, then lets
/// requests in flight finish. Tests call this on `127.0.0.1:0`.
pub async fn run(
    listener: TcpListener,
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = StoreDir::prepare(&config.data_dir)
        .with_context(|| format!("preparing the store at {}", config.data_dir.display()))?;
    let (plugins_dir, limits) = (config.plugins_dir.clone(), config.limits);
    let plugins =
        tokio::task::spawn_blocking(move || PluginHost::load(&plugins_dir, store.root(), limits))
            .await
            .context("loading plugins")??;
    let state = AppState {
        plugins: Arc::new(plugins),
        max_upload_bytes: config.max_upload_bytes,
        chunk_bytes: config.limits.chunk_bytes,
    };
    tracing::info!(addr = %listener.local_addr()?, "serving");
    axum::serve(listener, rest::router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
