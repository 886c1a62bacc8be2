//! HTTP plugins: components implementing the standard `wasi:http/proxy`
//! world (as Spin's are), mounted at `/x/{route}/`. Each request gets a
//! fresh instance with the plugin's grant (the store's complete files
//! read-only at `/store/files`, and nothing else of the store; or nothing),
//! its memory cap, no network (outgoing requests are refused) and a
//! deadline: the plugin must answer within its call deadline, and once it
//! has answered, its body must not stall for longer than that, whether it
//! computes (epoch interruption) or waits (a watchdog drops it). The guest
//! sees the full path and its mount in the `x-ringshare-mount` header.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderValue, Response, header};
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::oneshot;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::manifest::{Grant, StoreAccess};
use super::registry::{Call, Slot};
use super::sandbox::{Confined, MemoryCap, STDERR_BYTES};
use super::{PluginError, PluginHost, Pre};

/// Requests served by HTTP plugins at once on a node; more wait for a turn
/// (up to the plugin's deadline). Each may hold its memory cap.
pub const CONCURRENT_REQUESTS: usize = 32;

/// The per-request state of an HTTP plugin's `Store`.
pub struct HttpSandbox {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: NoNetwork,
    memory: MemoryCap,
    stderr: MemoryOutputPipe,
}

impl WasiView for HttpSandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for HttpSandbox {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

impl Confined for HttpSandbox {
    fn memory_cap(&self) -> &MemoryCap {
        &self.memory
    }
    fn stderr(&self) -> &MemoryOutputPipe {
        &self.stderr
    }
}

/// Refuses every outgoing request: plugins do not reach the network.
struct NoNetwork;

type Sent = wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl WasiHttpHooks for NoNetwork {
    fn send_request(
        &mut self,
        _request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _finished: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// The linker HTTP plugins are instantiated with: WASI (no sockets are
/// granted) and `wasi:http`, whose outgoing requests are refused.
pub(super) fn linker(engine: &wasmtime::Engine) -> anyhow::Result<Linker<HttpSandbox>> {
    let mut linker = Linker::<HttpSandbox>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    Ok(linker)
}

/// When the plugin last showed progress: its start, its answer, the last
/// piece of body taken from it.
struct Progress {
    started: Instant,
    last_ms: AtomicU64,
    /// Set when the watchdog dropped the plugin.
    dropped: std::sync::atomic::AtomicBool,
}

impl Progress {
    fn touch(&self) {
        self.last_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Whether the plugin has gone `limit` without progress.
    fn stalled(&self, limit: Duration) -> bool {
        let since = self.started.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)));
        since > limit
    }
}

impl PluginHost {
    /// Serves `request` through the HTTP plugin mounted at `/x/{route}/`;
    /// none when no plugin serves that route.
    pub async fn serve_http(
        self: &Arc<Self>,
        route: &str,
        request: axum::extract::Request,
    ) -> Result<Option<Response<Body>>, PluginError> {
        let Some(plugin) = self.read_registry().call(Slot::Route(route)) else {
            return Ok(None);
        };
        let timeout = plugin.grant.call_timeout;
        let turn = tokio::time::timeout(timeout, self.http_turns.clone().acquire_owned()).await;
        let Ok(Ok(turn)) = turn else {
            return Err(PluginError::Busy { plugin: plugin.file.clone(), waited: timeout });
        };
        let Pre::Http(pre) = &plugin.pre else {
            return Err(PluginError::Unavailable(plugin.kind));
        };
        let pre = pre.clone();
        let mut store = self.http_store(&plugin, &plugin.grant)?;
        let progress = Arc::new(Progress {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            dropped: std::sync::atomic::AtomicBool::new(false),
        });
        let watched = progress.clone();
        store.epoch_deadline_callback(move |_| {
            // Yield every tick, so that a busy plugin never holds a runtime thread.
            Ok(if watched.stalled(timeout) { UpdateDeadline::Interrupt } else { UpdateDeadline::Yield(1) })
        });
        store.set_epoch_deadline(1);

        let (mut parts, body) = request.into_parts();
        without_credentials(&mut parts.headers);
        let mount = HeaderValue::try_from(format!("/x/{route}")).map_err(|e| trapped(&plugin, e))?;
        parts.headers.insert("x-ringshare-mount", mount);
        if !parts.headers.contains_key(header::HOST) {
            parts.headers.insert(header::HOST, HeaderValue::from_static("localhost"));
        }
        let body = body.map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(e.to_string())));
        let (answer_tx, answer) = oneshot::channel();
        let incoming = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, http::Request::from_parts(parts, body))
            .map_err(|e| trapped(&plugin, e))?;
        let out = store.data_mut().http().new_response_outparam(answer_tx).map_err(|e| trapped(&plugin, e))?;

        // The plugin goes on running while it writes its body: it runs in a
        // task of its own, which owns the store and the call.
        let (outcome_tx, outcome) = oneshot::channel();
        let file = plugin.file.clone();
        let name = file.clone();
        let host = self.clone();
        let started = Instant::now();
        let task = tokio::spawn(async move {
            let _turn = turn;
            let ran = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy.wasi_http_incoming_handler().call_handle(&mut store, incoming, out).await
            }
            .await;
            let result = PluginError::from_call(&store, &file, timeout, ran.map(Ok));
            host.counted(&plugin, started, &result);
            // Sent before the store (and with it an unfinished body) is dropped.
            let _ = outcome_tx.send(result);
            drop(plugin);
        });
        // Epoch interruption stops a plugin that computes; one that waits in
        // a host call (a sleep, a read) is dropped by this watchdog.
        let (abort, watched) = (task.abort_handle(), progress.clone());
        tokio::spawn(async move {
            let every = (timeout / 4).max(Duration::from_millis(20));
            while !abort.is_finished() {
                tokio::time::sleep(every).await;
                if watched.stalled(timeout) {
                    watched.dropped.store(true, Ordering::SeqCst);
                    abort.abort();
                }
            }
        });
        match answer.await {
            Ok(Ok(response)) => {
                progress.touch();
                let mut response = response.map(|inner| Body::new(Watched { inner, progress, outcome: Some(outcome) }));
                confine(response.headers_mut());
                Ok(Some(response))
            }
            Ok(Err(code)) => {
                Err(PluginError::Trapped { plugin: name, detail: format!("it answered with an error: {code:?}") })
            }
            // It never answered: the outcome says why.
            Err(_) => match outcome.await {
                Ok(Err(e)) => Err(e),
                Err(_) if progress.dropped.load(Ordering::SeqCst) => {
                    Err(PluginError::Timeout { plugin: name, limit: timeout })
                }
                Ok(Ok(())) | Err(_) => Err(PluginError::Trapped {
                    plugin: name,
                    detail: "it returned without answering the request".into(),
                }),
            },
        }
    }

    fn http_store(&self, plugin: &Call, grant: &Grant) -> Result<Store<HttpSandbox>, PluginError> {
        let stderr = MemoryOutputPipe::new(STDERR_BYTES);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stderr(stderr.clone()).allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
        if grant.store != StoreAccess::None {
            // HTTP plugins read the complete files at most: not the host's
            // records, temp files, tombstones or outbox.
            let files = self.store_root.join("files");
            wasi.preopened_dir(files, "/store/files", FsPerms::ReadOnly).map_err(|e| trapped(plugin, e))?;
        }
        let sandbox = HttpSandbox {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: NoNetwork,
            memory: MemoryCap::new(grant.memory_bytes),
            stderr,
        };
        let mut store = Store::new(&self.engine, sandbox);
        store.limiter(|s| &mut s.memory);
        Ok(store)
    }
}

/// A plugin's answer is served from the node's own origin: in a browser,
/// its pages run sandboxed, as an origin of their own (their scripts may
/// run, but cannot act on this node's API as the node's pages can), and it
/// sets no cookies.
fn confine(headers: &mut http::HeaderMap) {
    headers.remove(http::header::SET_COOKIE);
    headers.append(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static("sandbox allow-scripts allow-popups allow-downloads"),
    );
}

fn trapped(plugin: &Call, e: impl std::fmt::Display) -> PluginError {
    PluginError::Trapped { plugin: plugin.file.clone(), detail: format!("cannot set up its request: {e:#}") }
}

/// The body an HTTP plugin writes, watched: each piece taken counts as
/// progress, and an end caused by the plugin failing mid-body is an error
/// (the connection is cut) rather than a clean end of a truncated body.
struct Watched {
    inner: HyperOutgoingBody,
    progress: Arc<Progress>,
    outcome: Option<oneshot::Receiver<Result<(), PluginError>>>,
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                let failed = match this.outcome.take().map(|mut rx| rx.try_recv()) {
                    // Still running: the body ended because the plugin finished it.
                    None | Some(Ok(Ok(()))) | Some(Err(oneshot::error::TryRecvError::Empty)) => None,
                    Some(Ok(Err(e))) => Some(e.to_string()),
                    Some(Err(oneshot::error::TryRecvError::Closed)) => Some("the plugin's task ended".into()),
                };
                Poll::Ready(failed.map(|why| {
                    tracing::warn!("an HTTP plugin's answer was cut short: {why}");
                    Err(wasmtime_wasi_http::Error::HttpResponseIncomplete)
                }))
            }
            Poll::Ready(Some(frame)) => {
                this.progress.touch();
                Poll::Ready(Some(frame))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        false
    }
}

/// Takes the node's own credentials out of a request before a plugin sees
/// it: the bearer token, and the ring page's `ringshare_token` cookie (the
/// page sets it for the whole site, so it would reach every plugin route).
fn without_credentials(headers: &mut axum::http::HeaderMap) {
    headers.remove(header::AUTHORIZATION);
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.starts_with("ringshare_token="))
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if let Ok(value) = HeaderValue::from_str(&kept.join("; "))
        && !kept.is_empty()
    {
        headers.insert(header::COOKIE, value);
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_never_sees_the_nodes_credentials_but_keeps_its_own_cookies() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer secret"));
        headers.append(header::COOKIE, HeaderValue::from_static("theme=dark; ringshare_token=secret"));
        headers.append(header::COOKIE, HeaderValue::from_static("lang=fr"));
        without_credentials(&mut headers);
        assert!(headers.get(header::AUTHORIZATION).is_none());
        let cookies: Vec<_> = headers.get_all(header::COOKIE).iter().collect();
        assert_eq!(cookies, ["theme=dark; lang=fr"]);
        let mut only = axum::http::HeaderMap::new();
        only.insert(header::COOKIE, HeaderValue::from_static("ringshare_token=secret"));
        without_credentials(&mut only);
        assert!(only.get(header::COOKIE).is_none(), "no empty cookie header is left");
    }
}
