//! Running a node: prepare the store, load the plugins, take a place in the
//! ring, serve the REST API and the ring's gRPC on one listener until the
//! shutdown signal, then leave the ring gracefully.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::chord::{ChordNode, NodeRef, RingChange, spawn_maintenance};
use crate::config::NodeConfig;
use crate::files::{Files, FilesSettings, Tombstones, spawn_index_refresh, spawn_repair};
use crate::mom::Bridge;
use crate::plugins::PluginHost;
use crate::rest::{self, AppState};
use crate::rpc::{Channels, GrpcPeers, GrpcTransport, chord_routes, files_routes};
use crate::store::StoreDir;
use crate::store::journal::Journal;
use crate::store::records::Records;
use crate::store::sync::GroupSync;
use crate::tls::{Credentials, Gate, Rotating, members_only};

/// A node built and ready to serve: its routes (REST and both gRPC
/// services on one router), its place in the ring and its file service.
pub struct Node {
    /// Every route the node serves.
    pub app: axum::Router,
    /// Its place in the ring (not yet joined to any other node).
    pub ring: Arc<ChordNode<GrpcTransport>>,
    /// Its file service.
    pub files: Arc<Files>,
    /// Its bridge to RabbitMQ, unless it runs without one.
    pub bridge: Option<Arc<Bridge>>,
    /// With credentials, the listener's TLS configuration (followed as
    /// the certificate files change).
    pub tls: Option<Arc<Rotating>>,
    /// Who may call its ring and file RPCs.
    pub gate: Arc<Gate>,
}

impl Node {
    /// Prepares the store, loads the plugins and builds the services of a
    /// node that other nodes reach at `addr`. In-process tests call the
    /// router directly.
    pub async fn build(config: &NodeConfig, addr: String) -> anyhow::Result<Self> {
        let store = StoreDir::prepare(&config.data_dir)
            .with_context(|| format!("preparing the store at {}", config.data_dir.display()))?;
        let (plugins_dir, limits, embedded) = (config.plugins_dir.clone(), config.limits, config.embedded_plugins);
        let store_root = store.root().to_path_buf();
        // One group commit for the store and the host's own records.
        let synced = Arc::new(
            GroupSync::open(&[store.root(), store.state()])
                .with_context(|| format!("opening {} to sync it", config.data_dir.display()))?,
        );
        let (loading, records_at) = (synced.clone(), store.state().join("records"));
        let plugins = tokio::task::spawn_blocking(move || {
            let records = Records::open(&records_at)
                .with_context(|| format!("reading the records of the store's files at {}", records_at.display()))?;
            PluginHost::load(&plugins_dir, &store_root, limits, embedded, (loading, Arc::new(records)))
        })
        .await
        .context("loading plugins")??;
        // The host's index of the store is filled from disk now, not by the
        // first request that needs it (those wait for this listing).
        let filling = plugins.clone();
        tokio::spawn(async move {
            if let Err(e) = filling.list().await {
                tracing::warn!("cannot list the store yet: {e}");
            }
        });
        let credentials = match &config.tls_dir {
            Some(dir) => Some(Credentials::load(dir).context("loading the node's certificates (--tls-dir)")?),
            None => None,
        };
        // Two channels per peer: the ring's calls, and file bytes (`Channels::bulk`).
        let channels = match &credentials {
            Some(credentials) => Channels::new(config.rpc_timeout).with_tls(credentials.client_config()),
            None => Channels::new(config.rpc_timeout),
        };
        let (tls, gate) = match &credentials {
            Some(credentials) => {
                let channels = channels.clone();
                (Some(Rotating::start(credentials, move |client| channels.set_tls(client))?), Gate::members())
            }
            None => (None, Gate::open()),
        };
        let transport = GrpcTransport::new(channels.clone(), config.rpc_timeout);
        let ring = Arc::new(ChordNode::new(NodeRef::new(addr), config.chord, transport));
        // A stat or listing is one plugin call on the other node, plus the trip.
        let call_timeout = config.limits.call_timeout + config.rpc_timeout;
        let peers = Arc::new(GrpcPeers::new(channels, call_timeout, config.limits.chunk_bytes));
        let tombstones = Tombstones::open(store.state(), synced.clone(), config.tombstone_grace)
            .with_context(|| format!("loading tombstones from {}", store.state().display()))?;
        let settings = FilesSettings {
            replicas: config.replicas,
            write_quorum: config.write_quorum.unwrap_or(config.replicas),
            max_upload_bytes: config.max_upload_bytes,
            chunk_bytes: config.limits.chunk_bytes,
            scrub_bytes: config.scrub_bytes_per_pass,
            download_sources: config.download_sources,
            read_cache_bytes: config.read_cache_bytes,
            read_lease: config.read_lease,
            repair_on_departure: config.repair_on_departure,
        };
        let files = Arc::new(Files::new(plugins.clone(), ring.clone(), peers, tombstones, settings));
        // Small uploads are made durable through the journal; what a crash
        // left in it is written again before the node serves. Like a
        // database whose log cannot be replayed, a node whose journal cannot
        // be written again does not start: it says why.
        let journal_dir = store.state().join("journal");
        let (journal, unreplayed) = {
            let (dir, synced) = (journal_dir.clone(), synced.clone());
            tokio::task::spawn_blocking(move || Journal::open(&dir, synced))
                .await
                .context("opening the journal")?
                .with_context(|| format!("opening the journal at {}", journal_dir.display()))?
        };
        let found = unreplayed.len();
        let replayed = files.replay(unreplayed).await.with_context(|| {
            format!("writing again the {found} small uploads the journal at {} holds", journal_dir.display())
        })?;
        if found > 0 {
            tracing::info!("the journal held {found} writes from before the node stopped; {replayed} written again");
        }
        let clearing = journal.clone();
        tokio::task::spawn_blocking(move || clearing.replayed())
            .await
            .context("clearing the journal")?
            .context("clearing the replayed journal")?;
        journal.start_checkpoints().context("starting the journal's checkpoints")?;
        plugins.keep_journal(journal.clone());
        let bridge = match &config.amqp {
            Some(url) => {
                let outbox = store.state().join("outbox.redb");
                let bridge = Bridge::open(url, &outbox, ring.me().addr, Some(files.clone()))
                    .await
                    .with_context(|| format!("opening the outbox at {}", outbox.display()))?;
                bridge.set_retry_first(config.handoff_retry_first);
                let hints: Arc<dyn crate::files::Hints> = bridge.clone();
                files.keep_hints(&hints);
                Some(bridge)
            }
            None => None,
        };
        let metrics = crate::metrics::Metrics::new();
        gate.count_in(metrics.clone());
        synced.count_in(metrics.store_syncs.clone(), metrics.store_synced_writes.clone());
        journal.count_in(metrics.journal_syncs.clone(), metrics.journal_writes.clone());
        if let Some(tls) = &tls {
            tls.count_in(metrics.clone());
        }
        plugins.count_calls(metrics.clone());
        ring.count_hops(metrics.lookup_hops.clone());
        files.count_in(metrics.clone());
        let state = AppState {
            metrics: metrics.clone(),
            plugins,
            ring: ring.clone(),
            files: files.clone(),
            bridge: bridge.clone(),
            access: Arc::new(
                rest::Access::load(
                    config.write_token.as_deref(),
                    config.read_token.as_deref(),
                    rest::WriteRate { per_second: config.write_rate, loopback: config.rate_limit_loopback },
                )
                .map_err(|e| anyhow::anyhow!("REST tokens: {e}"))?,
            ),
            body_timeout: config.body_timeout,
            listing_json: Default::default(),
            network_json: Default::default(),
        };
        let rpc =
            files_routes(chord_routes(axum::Router::new(), ring.clone(), gate.clone()), files.clone(), gate.clone())
                .route_layer(axum::middleware::from_fn_with_state(gate.clone(), members_only));
        let app = rest::router(state)
            .merge(rpc)
            .layer(axum::middleware::from_fn_with_state(metrics, crate::metrics::record))
            .layer(axum::middleware::from_fn(crate::trace::follow));
        Ok(Self { app, ring, files, bridge, tls, gate })
    }
}

/// Serves a node on `listener` until `shutdown` completes, then leaves the
/// ring and lets requests in flight finish. Tests call this on `127.0.0.1:0`.
pub async fn run(
    listener: TcpListener,
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = match &config.advertise {
        Some(addr) => addr.clone(),
        None => listener.local_addr()?.to_string(),
    };
    crate::clock::set_max_offset(config.max_clock_offset);
    let Node { app, ring, files, bridge, tls, gate } = Node::build(&config, addr).await?;

    let stop = CancellationToken::new();
    let serving = {
        let (stop, ring, files) = (stop.clone(), ring.clone(), files.clone());
        tokio::spawn(crate::listener::serve(listener, app, tls, gate, config.max_connections, async move {
            stop.cancelled().await;
            // Still serving: hand files over, then leave the ring.
            let copies = files.hand_over().await;
            tracing::info!(copies, "handed files over before leaving");
            if let Err(e) = files.tombstones().mark_left() {
                tracing::warn!("cannot keep the time this node left: {e}");
            }
            ring.leave().await;
        }))
    };
    // The listener is being served: a node joining through us, or the one we
    // join through, can call back.
    if config.join.is_some() {
        // Until it has joined, this node is not the network: no lookups;
        // and no writes stamped before its clock is measured.
        ring.expect_join();
        files.clock().judge_first();
    }
    if let Some(via) = &config.join
        && let Err(e) = join_with_retries(&ring, via, config.join_timeout).await
    {
        stop.cancel();
        let _ = serving.await;
        return Err(e).with_context(|| format!("joining the ring through {via}"));
    }
    tracing::info!(me = %ring.me().addr, id = %ring.me().id, "serving");
    let reacting = spawn_repair_on_departures(ring.changes(), files.clone(), stop.clone());
    let mom = bridge.map(|bridge| {
        spawn_index_refresh(files.clone(), config.index_refresh_every, stop.clone());
        bridge.spawn(Some(ring.changes()), stop.clone())
    });
    let clock_check = spawn_clock_check(ring.clone(), files.clock(), stop.clone());
    let watch = ring.transport().watch_peers(stop.clone());
    let maintenance = spawn_maintenance(ring, stop.clone());
    let repair = spawn_repair(files.repairer().clone(), config.repair_every, stop.clone());
    let leases = files.spawn_lease_renewal(stop.clone());

    shutdown.await;
    stop.cancel();
    maintenance.await.ok();
    clock_check.await.ok();
    watch.await.ok();
    repair.await.ok();
    if let Some(leases) = leases {
        leases.await.ok();
    }
    reacting.await.ok();
    if let Some(mom) = mom {
        mom.await.ok();
    }
    serving.await.context("server task")?;
    // Copies finishing in the background and streams still being served.
    files.shut_down(std::time::Duration::from_secs(10)).await;
    Ok(())
}

/// Wakes the repair loop whenever this node sees another leave or stop
/// answering (the RabbitMQ bridge wakes it for what other nodes see).
fn spawn_repair_on_departures(
    mut changes: tokio::sync::broadcast::Receiver<RingChange>,
    files: Arc<Files>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // A dead node is forgotten again each time a neighbour's list names
        // it; one wake-up per node per window is enough.
        let mut woken_for: std::collections::HashMap<String, tokio::time::Instant> = Default::default();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                change = changes.recv() => match change {
                    // A merged ring holds files placed while it was split.
                    Ok(RingChange::Left(node) | RingChange::Suspected(node) | RingChange::Reunited(node)) => {
                        let now = tokio::time::Instant::now();
                        if woken_for.get(&node.addr).is_none_or(|at| now.duration_since(*at) > crate::chord::SAME_DEPARTURE_WITHIN) {
                            woken_for.insert(node.addr, now);
                            files.repairer().wake();
                        }
                    }
                    Ok(RingChange::Joined(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => files.repairer().wake(),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    })
}

/// How often this node's clock is measured against its neighbours'.
const CLOCK_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Measures this node's wall clock against its predecessor's and its
/// successors' every second (the first time at once), and judges whether
/// it is the one that is off ([`crate::clock::Offsets::judge`]).
fn spawn_clock_check(
    ring: Arc<ChordNode<GrpcTransport>>,
    clock: Arc<crate::clock::Offsets>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    use crate::clock::wall_ns;
    tokio::spawn(async move {
        let mut every = tokio::time::interval(CLOCK_CHECK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            let table = ring.snapshot();
            let me = table.me().id;
            let mut peers: Vec<NodeRef> =
                table.successors().iter().chain(table.predecessor.iter()).filter(|n| n.id != me).cloned().collect();
            peers.sort_by_key(|n| n.id);
            peers.dedup_by_key(|n| n.id);
            let ring = &ring;
            let asked = peers.iter().map(|peer| async move {
                let sent = wall_ns();
                let theirs = ring.transport().wall_clock(peer).await;
                (peer, sent, theirs, wall_ns())
            });
            for (peer, sent, theirs, answered) in futures_util::future::join_all(asked).await {
                if let Ok(theirs) = theirs {
                    clock.record(&peer.addr, sent, theirs, answered);
                }
            }
            clock.judge();
        }
    })
}

/// Joins through `via`, retrying with backoff for up to `timeout` while it
/// does not answer (it may still be starting).
async fn join_with_retries(
    ring: &ChordNode<GrpcTransport>,
    via: &str,
    timeout: std::time::Duration,
) -> Result<(), crate::chord::RingError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = std::time::Duration::from_millis(50);
    loop {
        match ring.join(via).await {
            Err(e) if tokio::time::Instant::now() + pause < deadline => {
                tracing::info!(via, "join failed, retrying: {e}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(1));
            }
            Err(crate::chord::RingError::JoinUnreachable(_)) => {
                let why = ring.transport().diagnose(via).await;
                return Err(crate::chord::RingError::JoinRefused(via.to_owned(), why));
            }
            outcome => return outcome,
        }
    }
}
