//! The node's metrics, for Prometheus: `GET /metrics` answers them in the
//! OpenMetrics text format (which Prometheus reads). One registry per
//! node, so that several nodes in one process (the tests) keep theirs apart.
//!
//! - `ringshare_http_request_seconds{method,route,status}`: REST requests by
//!   route template, with latency to the answer's head;
//! - `ringshare_rpc_seconds{method,status}`: gRPC calls this node served;
//! - `ringshare_lookup_hops`: hops of this node's lookups;
//! - `ringshare_plugin_call_seconds{plugin,kind,outcome}`: plugin calls and
//!   sessions (outcome `ok`, `refused`, `timeout`, `out_of_memory`,
//!   `trapped`, `busy`, `unavailable`);
//! - `ringshare_bytes_total{direction}`: `uploaded` (bodies of uploads taken
//!   here), `downloaded` (bodies of downloads served here), `replicated`
//!   (what other nodes sent here to store: copies, and uploads forwarded to
//!   this node as the responsible one; gRPC bytes, framing included);
//! - `ringshare_repair_backlog`, `ringshare_repair_passed_on_total`: files
//!   left to check in the running repair pass, copies and deletions passed on;
//! - `ringshare_repair_passes_total`: repair passes done;
//! - `ringshare_tombstones_expired_total`: tombstones dropped past the
//!   grace period once every holder had them;
//! - `ringshare_copies_unconfirmed`, `ringshare_copies_quarantined_total`:
//!   after an absence longer than the grace, copies still waiting for a
//!   holder to confirm them (as of the last repair pass), and copies no
//!   holder had, moved to quarantine;
//! - `ringshare_full_holders_skipped_total`: copies of uploads made on the
//!   next live successor because a holder's disk was full;
//! - `ringshare_broker_connected`, `ringshare_outbox_messages`,
//!   `ringshare_handoffs_total{outcome}`: the RabbitMQ bridge;
//! - `ringshare_ring_nodes`: distinct nodes in this node's routing table,
//!   itself included;
//! - `ringshare_store_files`: files in the host's index of its store, -1
//!   until the store has been listed once after the node started;
//! - `ringshare_refused_total{reason}`: callers refused as strangers
//!   (`no_certificate`: a ring or file call without a member's certificate;
//!   `handshake`: a TLS handshake that failed, such as a certificate of
//!   another CA; `claim`: a member speaking for an address not its own);
//! - `ringshare_tls_reloads_total{outcome}`: certificates read again after
//!   their files changed (`taken`, `refused`);
//! - `ringshare_store_syncs_total`, `ringshare_store_synced_writes_total`:
//!   syncs of the store (group commit) and the writes they made durable
//!   (uploads count twice: their content, then their commit; deletions once;
//!   a checkpoint of the journal once);
//! - `ringshare_journal_syncs_total`, `ringshare_journal_writes_total`: syncs
//!   of the journal of small uploads (group commit) and the uploads they
//!   made durable (`store::journal`);
//! - `ringshare_uploads_routed_by_table_total`: small uploads sent where
//!   this node's ring table placed them, without a lookup;
//! - `ringshare_reads_placed_by_table_total`: reads whose holders this
//!   node's ring table named, found there without a lookup;
//! - `ringshare_reads_under_lease_total`, `ringshare_lease_waits_total`:
//!   reads this node served from its own copy under a read lease (asking
//!   nobody), and writes or deletions it coordinated that waited for a
//!   holder's lease to run out (`files::lease`);
//! - `ringshare_read_cache_hits_total`, `ringshare_read_cache_misses_total`:
//!   reads of small files this node holds answered from memory, and not;
//! - `ringshare_clock_offset_ms`, `ringshare_clock_in_step`: the median
//!   offset of the peers' clocks from this node's, and whether it agrees
//!   with most of them (0: the node takes no writes).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a REST request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// `GET`, `PUT`, ...
    pub method: String,
    /// The route template (`/files/{name}`), or `unmatched`.
    pub route: String,
    /// The answer's status code.
    pub status: u16,
}

/// Labels of a gRPC call served.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// `/ringshare.files.v1.Files/Store`, ...
    pub method: String,
    /// The HTTP status of the answer's head.
    pub status: u16,
}

/// Labels of a plugin call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    /// The plugin's file name.
    pub plugin: String,
    /// `index`, `upload`, `download`, `http`.
    pub kind: String,
    /// How it ended.
    pub outcome: String,
}

/// Labels of bytes moved.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    /// `uploaded`, `downloaded`, `replicated`.
    pub direction: String,
}

/// Labels of hand-offs.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `applied`, `already_here`, `retried`, `rejected`.
    pub outcome: String,
}

/// Labels of refusals.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `no_certificate`, `handshake`, `claim`.
    pub reason: String,
}

/// Histograms of durations in seconds, by label set.
pub type Timings<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds() -> Histogram {
    // 100 µs to about 100 s.
    Histogram::new(exponential_buckets(0.0001, 4.0, 11))
}

/// Every metric of a node.
pub struct Metrics {
    registry: Registry,
    /// REST requests.
    pub http: Timings<HttpLabels>,
    /// gRPC calls served.
    pub rpc: Timings<RpcLabels>,
    /// Hops of lookups.
    pub lookup_hops: Histogram,
    /// Plugin calls.
    pub plugin_calls: Timings<PluginLabels>,
    /// Bytes moved, by direction.
    pub bytes: Family<DirectionLabels, Counter>,
    /// The three directions' counters, looked up once (every upload and
    /// download counts into one).
    directions: [(&'static str, Counter); 3],
    /// Files left to check in the running repair pass.
    pub repair_backlog: Gauge,
    /// Copies and deletions passed on by repair passes.
    pub repair_passed_on: Counter,
    /// Repair passes done.
    pub repair_passes: Counter,
    /// Tombstones dropped past the grace period.
    pub tombstones_expired: Counter,
    /// Copies kept through a long absence still waiting to be confirmed.
    pub copies_unconfirmed: Gauge,
    /// Copies kept through a long absence that no holder had, moved out.
    pub copies_quarantined: Counter,
    /// Copies not made on a holder whose disk was full (made on the next
    /// live successor instead).
    pub full_holders_skipped: Counter,
    /// Whether the broker is connected (0 or 1); set when scraped.
    pub broker_connected: Gauge,
    /// Messages waiting in the outbox for the broker; set when scraped.
    pub outbox: Gauge,
    /// Hand-offs to this node, by outcome; brought up to date when scraped.
    pub handoffs: Family<OutcomeLabels, Counter>,
    /// Distinct nodes in the routing table; set when scraped.
    pub ring_nodes: Gauge,
    /// Files in the host's index of its store (-1 before the first
    /// listing); set when scraped.
    pub store_files: Gauge,
    /// Callers refused as strangers, by reason.
    pub refused: Family<ReasonLabels, Counter>,
    /// Certificates read again, by outcome.
    pub tls_reloads: Family<OutcomeLabels, Counter>,
    /// The median offset of the peers' clocks from this node's, in ms; set
    /// when scraped.
    pub clock_offset_ms: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Whether this node's clock agrees with its peers' (0: it takes no
    /// writes); set when scraped.
    pub clock_in_step: Gauge,
    /// Syncs of the store (group commit).
    pub store_syncs: Counter,
    /// Reads of small files answered from memory.
    pub read_cache_hits: Counter,
    /// Reads of small files this node holds that were not in memory.
    pub read_cache_misses: Counter,
    /// Writes those syncs made durable.
    pub store_synced_writes: Counter,
    /// Syncs of the journal of small uploads (group commit).
    pub journal_syncs: Counter,
    /// Small uploads those syncs made durable.
    pub journal_writes: Counter,
    /// Small uploads sent where the ring table placed them, without a lookup.
    pub uploads_routed_by_table: Counter,
    /// Reads whose holders the ring table named, without a lookup.
    pub reads_placed_by_table: Counter,
    /// Reads served from this node's copy under a read lease.
    pub reads_under_lease: Counter,
    /// Writes and deletions that waited for a holder's lease to run out.
    pub lease_waits: Counter,
    /// Held while the hand-off counters are brought up to date.
    scraping: std::sync::Mutex<()>,
}

impl Metrics {
    /// A node's metrics, registered.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("ringshare");
        let http = Timings::<HttpLabels>::new_with_constructor(seconds as fn() -> Histogram);
        let rpc = Timings::<RpcLabels>::new_with_constructor(seconds as fn() -> Histogram);
        let plugin_calls = Timings::<PluginLabels>::new_with_constructor(seconds as fn() -> Histogram);
        let lookup_hops = Histogram::new([0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0]);
        let bytes = Family::<DirectionLabels, Counter>::default();
        let directions = ["uploaded", "downloaded", "replicated"]
            .map(|d| (d, bytes.get_or_create(&DirectionLabels { direction: d.to_owned() }).clone()));
        let handoffs = Family::<OutcomeLabels, Counter>::default();
        let (repair_backlog, repair_passed_on) = (Gauge::default(), Counter::default());
        let (broker_connected, outbox, ring_nodes) = (Gauge::default(), Gauge::default(), Gauge::default());
        registry.register("http_request_seconds", "REST requests, by route and status", http.clone());
        registry.register("rpc_seconds", "gRPC calls served, by method", rpc.clone());
        registry.register("lookup_hops", "Hops of this node's lookups", lookup_hops.clone());
        registry.register("plugin_call_seconds", "Plugin calls, by plugin and outcome", plugin_calls.clone());
        registry.register("bytes", "Bytes uploaded, downloaded and replicated here", bytes.clone());
        registry.register("repair_backlog", "Files left to check in the running repair pass", repair_backlog.clone());
        registry.register("repair_passed_on", "Copies and deletions passed on by repair", repair_passed_on.clone());
        registry.register("broker_connected", "Whether the RabbitMQ broker is connected", broker_connected.clone());
        registry.register("outbox_messages", "Messages waiting in the outbox for the broker", outbox.clone());
        registry.register("handoffs", "Hand-offs to this node, by outcome", handoffs.clone());
        registry.register("ring_nodes", "Distinct nodes in this node's routing table", ring_nodes.clone());
        let store_files = Gauge::default();
        let files_help = "Files in the host's index of its store (-1 until the store has been listed once)";
        registry.register("store_files", files_help, store_files.clone());
        let repair_passes = Counter::default();
        registry.register("repair_passes", "Repair passes done", repair_passes.clone());
        let (tombstones_expired, copies_unconfirmed, copies_quarantined) = Default::default();
        let expired_help = "Tombstones dropped past the grace period once every holder had them";
        registry.register("tombstones_expired", expired_help, Counter::clone(&tombstones_expired));
        let unconfirmed_help = "Copies kept through an absence longer than the grace, not yet confirmed by a holder";
        registry.register("copies_unconfirmed", unconfirmed_help, Gauge::clone(&copies_unconfirmed));
        let quarantined_help = "Copies kept through a long absence that no holder had, moved to quarantine";
        registry.register("copies_quarantined", quarantined_help, Counter::clone(&copies_quarantined));
        let full_holders_skipped = Counter::default();
        let skipped_help = "Copies made on the next live successor because a holder's disk was full";
        registry.register("full_holders_skipped", skipped_help, full_holders_skipped.clone());
        let refused = Family::<ReasonLabels, Counter>::default();
        registry.register("refused", "Callers refused as strangers, by reason", refused.clone());
        let tls_reloads = Family::<OutcomeLabels, Counter>::default();
        registry.register("tls_reloads", "Certificates read again after their files changed", tls_reloads.clone());
        let (clock_offset_ms, clock_in_step) = (Gauge::default(), Gauge::default());
        let offset_help = "Median offset of the peers' clocks from this node's, in ms";
        registry.register("clock_offset_ms", offset_help, clock_offset_ms.clone());
        let in_step_help = "Whether this node's clock agrees with its peers' (0: it takes no writes)";
        registry.register("clock_in_step", in_step_help, clock_in_step.clone());
        let (store_syncs, store_synced_writes) = (Counter::default(), Counter::default());
        let (read_cache_hits, read_cache_misses) = (Counter::default(), Counter::default());
        registry.register("read_cache_hits", "Reads of small files answered from memory", read_cache_hits.clone());
        let misses_help = "Reads of small files this node holds that were not in memory";
        registry.register("read_cache_misses", misses_help, read_cache_misses.clone());
        registry.register("store_syncs", "Syncs of the store (group commit)", store_syncs.clone());
        let synced_help = "Writes made durable by syncs of the store (an upload counts twice: content, commit)";
        registry.register("store_synced_writes", synced_help, store_synced_writes.clone());
        let (journal_syncs, journal_writes) = (Counter::default(), Counter::default());
        registry.register(
            "journal_syncs",
            "Syncs of the journal of small uploads (group commit)",
            journal_syncs.clone(),
        );
        registry.register(
            "journal_writes",
            "Small uploads made durable by syncs of the journal",
            journal_writes.clone(),
        );
        let uploads_routed_by_table = Counter::default();
        registry.register(
            "uploads_routed_by_table",
            "Small uploads sent where this node's ring table placed them, without a lookup",
            uploads_routed_by_table.clone(),
        );
        let reads_placed_by_table = Counter::default();
        registry.register(
            "reads_placed_by_table",
            "Reads whose holders this node's ring table named, found there without a lookup",
            reads_placed_by_table.clone(),
        );
        let reads_under_lease = Counter::default();
        registry.register(
            "reads_under_lease",
            "Reads this node served from its own copy under a read lease, asking no other holder",
            reads_under_lease.clone(),
        );
        let lease_waits = Counter::default();
        registry.register(
            "lease_waits",
            "Writes and deletions this node coordinated that waited for a holder's read lease to run out",
            lease_waits.clone(),
        );
        Arc::new(Self {
            registry,
            http,
            rpc,
            lookup_hops,
            plugin_calls,
            bytes,
            directions,
            repair_backlog,
            repair_passed_on,
            repair_passes,
            tombstones_expired,
            copies_unconfirmed,
            copies_quarantined,
            full_holders_skipped,
            broker_connected,
            outbox,
            handoffs,
            ring_nodes,
            store_files,
            refused,
            tls_reloads,
            clock_offset_ms,
            clock_in_step,
            store_syncs,
            read_cache_hits,
            read_cache_misses,
            store_synced_writes,
            journal_syncs,
            journal_writes,
            uploads_routed_by_table,
            reads_placed_by_table,
            reads_under_lease,
            lease_waits,
            scraping: std::sync::Mutex::new(()),
        })
    }

    /// The metrics in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!("encoding the metrics: {e}");
        }
        text
    }

    /// Bytes moved in `direction`.
    pub fn moved(&self, direction: &str) -> Counter {
        match self.directions.iter().find(|(d, _)| *d == direction) {
            Some((_, counter)) => counter.clone(),
            None => self.bytes.get_or_create(&DirectionLabels { direction: direction.to_owned() }).clone(),
        }
    }

    /// Brings the counter of hand-offs ending in `outcome` up to `total`.
    pub fn handoffs_up_to(&self, outcome: &str, total: u64) {
        let _one_scrape_at_a_time = self.scraping.lock().unwrap_or_else(|p| p.into_inner());
        let counter = self.handoffs.get_or_create(&OutcomeLabels { outcome: outcome.to_owned() });
        counter.inc_by(total.saturating_sub(counter.get()));
    }

    /// Records one plugin call.
    pub fn plugin_call(&self, plugin: &str, kind: &str, outcome: &str, started: Instant) {
        let labels = PluginLabels { plugin: plugin.to_owned(), kind: kind.to_owned(), outcome: outcome.to_owned() };
        self.plugin_calls.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    }
}

/// Middleware recording every request the node serves: REST requests by
/// route, gRPC calls by method, and the bytes of uploads, downloads and
/// copies received.
pub async fn record(metrics: axum::extract::State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let grpc = request.headers().get("content-type").is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"));
    let path = request.uri().path().to_owned();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let (uploaded, downloaded) = match (grpc, route.as_str()) {
        (true, _) if path.ends_with("/Store") => (Some("replicated"), None),
        (false, "/files/{name}") if method == axum::http::Method::PUT => (Some("uploaded"), None),
        (false, "/upload" | "/upload/") => (Some("uploaded"), None),
        (false, "/files/{name}" | "/download/{filename}") if method == axum::http::Method::GET => {
            (None, Some("downloaded"))
        }
        _ => (None, None),
    };
    let request = match uploaded {
        Some(direction) => request.map(|body| Body::new(Counted { inner: body, counter: metrics.moved(direction) })),
        None => request,
    };
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed().as_secs_f64();
    // Labels come from a bounded set whatever a client sends: a method the
    // node does not serve, or a path no route matched, is `other`.
    if grpc {
        let unimplemented = response.headers().get("grpc-status").is_some_and(|s| s != "0");
        let method = if route == "unmatched" || unimplemented && status == 200 { "other".into() } else { path };
        metrics.rpc.get_or_create(&RpcLabels { method, status }).observe(elapsed);
    } else {
        let method = match method.as_str() {
            m @ ("GET" | "HEAD" | "PUT" | "POST" | "DELETE" | "OPTIONS" | "PATCH") => m.to_owned(),
            _ => "other".to_owned(),
        };
        metrics.http.get_or_create(&HttpLabels { method, route, status }).observe(elapsed);
    }
    match downloaded {
        Some(direction) if response.status().is_success() => {
            let counter = metrics.moved(direction);
            response.map(|body| Body::new(Counted { inner: body, counter }))
        }
        _ => response,
    }
}

/// A body whose data bytes are counted as they pass.
struct Counted {
    inner: Body,
    counter: Counter,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.counter.inc_by(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_every_family_and_counts_what_was_recorded() {
        let metrics = Metrics::new();
        metrics.moved("uploaded").inc_by(42);
        metrics.plugin_call("index.wasm", "index", "ok", Instant::now());
        metrics.handoffs_up_to("applied", 3);
        metrics.handoffs_up_to("applied", 5);
        let text = metrics.render();
        assert!(text.contains("ringshare_bytes_total{direction=\"uploaded\"} 42"), "{text}");
        assert!(text.contains("ringshare_handoffs_total{outcome=\"applied\"} 5"), "{text}");
        assert!(
            text.contains("ringshare_plugin_call_seconds_count{plugin=\"index.wasm\",kind=\"index\",outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
    }
}
