//! The REST API users and clients call (axum).
//!
//! - `files`: `GET /files`, `PUT|GET|HEAD /files/{name}`;
//! - `legacy`: the original system's routes, kept as aliases;
//! - `range`: `Range` header handling for downloads;
//! - `ring`: `GET /ring`, `GET /lookup/{name}`, `GET /nodes`;
//! - `auth`: write tokens, protected mode and read tokens;
//! - `error`: the one place errors become `{"error","code"}` responses.

mod api;
mod auth;
mod error;
mod files;
mod legacy;
mod range;
mod ring;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, Method, StatusCode, Version, header};
use axum::response::Response;
use axum::{Json, Router};

use crate::chord::ChordNode;
use crate::files::Files;
use crate::mom::Bridge;
use crate::plugins::{PluginHost, PluginStatus};
use crate::rpc::GrpcTransport;
use error::Error;

pub use auth::{Access, WriteRate, tokens as auth_tokens};
pub use error::ApiError;
pub use files::MISSING_NODES;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The node's metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The node's plugins.
    pub plugins: Arc<PluginHost>,
    /// This node's place in the ring.
    pub ring: Arc<ChordNode<GrpcTransport>>,
    /// Files across the ring.
    pub files: Arc<Files>,
    /// The bridge to RabbitMQ, if the node has one.
    pub bridge: Option<Arc<Bridge>>,
    /// Who may write and read.
    pub access: Arc<Access>,
    /// How long a request body may send nothing.
    pub body_timeout: std::time::Duration,
    /// `GET /files` as last rendered, for the store generation it shows.
    pub listing_json: Arc<RenderedListing>,
    /// `GET /files?scope=network` as last rendered from the live index.
    pub network_json: Arc<RenderedListing>,
}

/// A rendered listing, reused while the store's generation is the same.
#[derive(Default)]
pub struct RenderedListing {
    last: std::sync::Mutex<Option<(u64, bytes::Bytes)>>,
}

impl RenderedListing {
    /// The body rendered for `generation`, rendering it if needed.
    pub fn get_or_render(&self, generation: u64, render: impl FnOnce() -> Vec<u8>) -> bytes::Bytes {
        if let Some((g, body)) = &*self.last.lock().unwrap_or_else(|p| p.into_inner())
            && *g == generation
        {
            return body.clone();
        }
        let body = bytes::Bytes::from(render());
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_ref().is_none_or(|(g, _)| *g <= generation) {
            *last = Some((generation, body.clone()));
        }
        body
    }
}

/// All routes of a node.
pub fn router(state: AppState) -> Router {
    let (router, _document) = routes().split_for_parts();
    router
        // The one route that cannot be an OpenAPI path (any depth under the
        // mount); documented by its handler's annotation all the same.
        .route("/x/{*path}", axum::routing::any(http_plugin))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no-route", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "method not allowed on this route")
        })
        // Upload handlers stream and count bytes themselves against
        // `max_upload_bytes`; axum's buffered-body limit does not apply.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(close_after_refused_upload))
        .layer(axum::middleware::from_fn(same_origin_writes))
        // A body that stops sending fails, and the upload is abandoned.
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(state.body_timeout))
        .layer(axum::middleware::from_fn_with_state(state.access.clone(), auth::authorize))
        .with_state(state)
}

/// Every documented route: each handler is registered with its OpenAPI
/// operation (utoipa-axum), so a route cannot be served undocumented
/// through here. `GET /openapi.json` serves the document this builds.
pub fn routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::with_openapi(<api::ApiDoc as utoipa::OpenApi>::openapi())
        .routes(routes!(files::list))
        .routes(routes!(files::download, files::upload, files::delete))
        .routes(routes!(files::search))
        .routes(routes!(page))
        .routes(routes!(plugins))
        .routes(routes!(metrics))
        .routes(routes!(api::openapi_json))
        .routes(routes!(ring::ring))
        .routes(routes!(ring::lookup))
        .routes(routes!(ring::nodes))
        .routes(routes!(bridge))
        .routes(routes!(events))
        .routes(routes!(legacy::index))
        .routes(routes!(legacy::upload))
        .routes(routes!(legacy::upload_without_slash))
        .routes(routes!(legacy::download))
        .routes(routes!(legacy::all_nodes))
        .routes(routes!(legacy::active_nodes))
        .routes(routes!(legacy::search))
}

/// Writes (anything but GET, HEAD, OPTIONS) from a browser page must come
/// from this node's own origin: a page elsewhere, or an HTTP plugin's page
/// (sandboxed: its origin is `null`), cannot upload or delete through the
/// visitor's browser. Clients that are not browsers send no `Origin`.
async fn same_origin_writes(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let writes = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let origin = request.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok());
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok());
    if writes && let Some(origin) = origin {
        let own = host.is_some_and(|host| origin.strip_prefix("http://").is_some_and(|o| o.eq_ignore_ascii_case(host)));
        if !own {
            let refused = format!("a write from another origin ({origin}) is refused");
            return axum::response::IntoResponse::into_response(ApiError::new(
                StatusCode::FORBIDDEN,
                "cross-origin",
                refused,
            ));
        }
    }
    next.run(request).await
}

/// An upload refused before its body was read leaves the rest of the body
/// on the HTTP/1 connection, which the server then closes; `Connection:
/// close` tells the client so, rather than letting it reuse the connection
/// for its next request and lose that request.
async fn close_after_refused_upload(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let upload = matches!(*request.method(), Method::PUT | Method::POST) && request.version() < Version::HTTP_2;
    let mut response = next.run(request).await;
    if upload && (response.status().is_client_error() || response.status().is_server_error()) {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// `GET /plugins`: what was loaded from the plugins folder and what was
/// refused, with reasons.
#[utoipa::path(get, path = "/plugins", tag = "plugins", responses((status = 200, description = "each file of the plugins folder: kind, loaded, version, calls, grant, refusal", body = serde_json::Value)))]
async fn plugins(State(app): State<AppState>) -> Json<Vec<PluginStatus>> {
    Json(app.plugins.statuses())
}

/// `GET /`: the live picture of the ring, one page embedded in the binary
/// (inline script and style; everything it shows comes from this node's API).
#[utoipa::path(get, path = "/", tag = "node", responses((status = 200, description = "the live ring page", content_type = "text/html")))]
async fn page() -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:",
            ),
        ),
    ];
    axum::response::IntoResponse::into_response((headers, include_str!("page.html")))
}

/// `GET /metrics`: the node's metrics in the OpenMetrics text format, with
/// the ring's size and the bridge's state read now.
#[utoipa::path(get, path = "/metrics", tag = "node", responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text")))]
async fn metrics(State(app): State<AppState>) -> Response {
    let m = &app.metrics;
    m.ring_nodes.set(app.ring.known_nodes() as i64);
    m.store_files.set(app.plugins.indexed_files().map_or(-1, |n| n as i64));
    let clock = app.files.clock();
    m.clock_in_step.set(i64::from(clock.trusted()));
    m.clock_offset_ms.set(clock.verdict().map_or(0.0, |v| v.median_offset_ms));
    if let Some(bridge) = &app.bridge {
        let status = bridge.status();
        m.broker_connected.set(i64::from(status.connected));
        m.outbox.set(status.outbox as i64);
        for (outcome, total) in [
            ("applied", status.applied),
            ("already_here", status.already_here),
            ("retried", status.retried),
            ("rejected", status.rejected),
        ] {
            m.handoffs_up_to(outcome, total);
        }
    }
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    axum::response::IntoResponse::into_response((
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        m.render(),
    ))
}

/// `/x/{route}/...`: served by the HTTP plugin mounted at that route (the
/// whole path and query go to the plugin); `404 no-route` when none is.
#[utoipa::path(get, path = "/x/{route}/{path}", tag = "plugins", description = "Any method: the request goes to the HTTP plugin mounted at /x/{route}/ (whole path and query).", params(("route" = String, Path), ("path" = String, Path, description = "the rest of the path, any depth")), responses((status = 200, description = "whatever the plugin answers"), (status = 404, description = "no plugin serves that route", body = Error), (status = 500, description = "the plugin failed or ran past its deadline", body = Error), (status = 503, description = "every turn for HTTP plugins is taken", body = Error)))]
async fn http_plugin(State(app): State<AppState>, request: axum::extract::Request) -> Result<Response, ApiError> {
    let path = request.uri().path().strip_prefix("/x/").unwrap_or_default();
    let route = path.split('/').next().unwrap_or_default().to_owned();
    match app.plugins.serve_http(&route, request).await? {
        Some(response) => Ok(response),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "no-route", format!("no plugin serves /x/{route}/"))),
    }
}

/// `GET /events`: the ring and file events this node hears, as
/// Server-Sent Events (`event:` the kind, `id:` the event id, `data:` the
/// event as JSON), from now on; `503 no-broker` without a broker.
#[utoipa::path(get, path = "/events", tag = "node", responses((status = 200, description = "Server-Sent Events: node.joined|left|suspected, file.stored|deleted", content_type = "text/event-stream"), (status = 503, description = "no broker", body = Error)))]
async fn events(
    State(app): State<AppState>,
) -> Result<
    axum::response::sse::Sse<
        impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
    >,
    ApiError,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let Some(bridge) = &app.bridge else {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no-broker", "this node runs without a broker"));
    };
    let heard = bridge.events();
    let stream = futures_util::stream::unfold(heard, |mut heard| async move {
        loop {
            match heard.recv().await {
                Ok(event) => {
                    let sse = Event::default().id(event.id.clone()).event(event.what.kind()).json_data(&event);
                    match sse {
                        Ok(sse) => return Some((Ok(sse), heard)),
                        Err(e) => tracing::warn!("an event could not be written: {e}"),
                    }
                }
                // A slow client misses the oldest events, not the stream.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// `GET /bridge`: the RabbitMQ bridge's connection, outbox and counters
/// (`{"enabled": false}` for a node running without a broker).
#[utoipa::path(get, path = "/bridge", tag = "node", responses((status = 200, description = "the RabbitMQ bridge: connected, outbox, counters", body = serde_json::Value)))]
async fn bridge(State(app): State<AppState>) -> Json<serde_json::Value> {
    Json(match &app.bridge {
        Some(bridge) => {
            let mut status = serde_json::to_value(bridge.status()).unwrap_or_default();
            status["enabled"] = true.into();
            status
        }
        None => serde_json::json!({ "enabled": false }),
    })
}
