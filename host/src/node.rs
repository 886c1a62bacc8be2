//! Running a node: prepare the store, load the plugins, take a place in the
//! ring, serve the REST API and the ring's gRPC on one listener until the
//! shutdown signal, then leave the ring gracefully.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::chord::{ChordNode, NodeRef, spawn_maintenance};
use crate::config::NodeConfig;
use crate::plugins::PluginHost;
use crate::rest::{self, AppState};
use crate::rpc::{GrpcTransport, chord_routes};
use crate::store::StoreDir;

/// Serves a node on `listener` until `shutdown` completes, then leaves the
/// ring and lets requests in flight finish. Tests call this on `127.0.0.1:0`.
pub async fn run(
    listener: TcpListener,
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = StoreDir::prepare(&config.data_dir)
        .with_context(|| format!("preparing the store at {}", config.data_dir.display()))?;
    let (plugins_dir, limits) = (config.plugins_dir.clone(), config.limits);
    let plugins = tokio::task::spawn_blocking(move || PluginHost::load(&plugins_dir, store.root(), limits))
        .await
        .context("loading plugins")??;

    let addr = match &config.advertise {
        Some(addr) => addr.clone(),
        None => listener.local_addr()?.to_string(),
    };
    let ring = Arc::new(ChordNode::new(NodeRef::new(addr), config.chord, GrpcTransport::new(config.rpc_timeout)));
    let state = AppState {
        plugins: Arc::new(plugins),
        ring: ring.clone(),
        max_upload_bytes: config.max_upload_bytes,
        chunk_bytes: config.limits.chunk_bytes,
    };
    let app = chord_routes(rest::router(state), ring.clone());

    let stop = CancellationToken::new();
    let serving = {
        let (stop, ring) = (stop.clone(), ring.clone());
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    stop.cancelled().await;
                    ring.leave().await;
                })
                .await
        })
    };
    // The listener is being served: a node joining through us, or the one we
    // join through, can call back.
    if let Some(via) = &config.join
        && let Err(e) = ring.join(via).await
    {
        stop.cancel();
        let _ = serving.await;
        return Err(e).with_context(|| format!("joining the ring through {via}"));
    }
    tracing::info!(me = %ring.me().addr, id = %ring.me().id, "serving");
    let maintenance = spawn_maintenance(ring, stop.clone());

    shutdown.await;
    stop.cancel();
    maintenance.await.ok();
    serving.await.context("server task")??;
    Ok(())
}
