//! One request followed across nodes. Every request a node serves (REST or
//! gRPC) runs in a `request` span carrying a trace id: the one the caller
//! sent in `x-ringshare-trace` (gRPC metadata travels as HTTP/2 headers),
//! or a new one. Calls to other nodes made while serving it carry the id,
//! so each node's log lines for one request share it
//! (`RUST_LOG=ringshare=debug`). REST answers send it back in the same
//! header, for finding a request's lines afterwards.

use std::fmt;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The header (and gRPC metadata key) carrying the trace id.
pub const HEADER: &str = "x-ringshare-trace";

tokio::task_local! {
    static CURRENT: TraceId;
}

/// A request's trace id: 64 random bits, written as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceId(u64);

impl TraceId {
    /// A new random id.
    pub fn new() -> Self {
        Self(rand::random())
    }

    /// Reads an id written by [`fmt::Display`].
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == 16).then(|| u64::from_str_radix(text, 16).ok().map(Self)).flatten()
    }

    /// The id of the request this task is serving, if any.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(|id| *id).ok()
    }
}

impl Default for TraceId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// `future` under the trace id and span of the request this task is
/// serving, if any: for work spawned while serving (failover reads, copies
/// and deletions that finish in the background, hand-offs), so that the
/// calls it makes to other nodes carry the request's id too.
pub fn carried<F: Future>(future: F) -> impl Future<Output = F::Output> {
    let id = TraceId::current();
    async move {
        match id {
            Some(id) => CURRENT.scope(id, future).await,
            None => future.await,
        }
    }
    .instrument(tracing::Span::current())
}

/// Adds the current trace id, if any, to a call to another node.
pub fn tag<T>(request: &mut tonic::Request<T>) {
    if let Some(id) = TraceId::current()
        && let Ok(value) = id.to_string().parse()
    {
        request.metadata_mut().insert(HEADER, value);
    }
}

/// [`tag`] as a gRPC client interceptor, so that every call of a client
/// is tagged, streaming ones included.
pub fn tagged(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    tag(&mut request);
    Ok(request)
}

/// The type of [`tagged`], as a plain function.
pub type TagFn = fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>;

/// A channel whose calls are tagged with the trace id ([`tagged`]).
pub type Tagged = tonic::service::interceptor::InterceptedService<tonic::transport::Channel, TagFn>;

/// `channel`, its calls tagged with the trace id.
pub fn tagging(channel: tonic::transport::Channel) -> Tagged {
    tonic::service::interceptor::InterceptedService::new(channel, tagged as TagFn)
}

/// Middleware: serves each request in a span with its trace id, logs its
/// answer at debug level, and sends the id back.
pub async fn follow(request: Request, next: Next) -> Response {
    let id = request.headers().get(HEADER).and_then(|v| v.to_str().ok()).and_then(TraceId::parse).unwrap_or_default();
    let span = tracing::debug_span!("request", trace = %id, method = %request.method(), path = %request.uri().path());
    let answered = async move {
        let started = std::time::Instant::now();
        let response = next.run(request).await;
        tracing::debug!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "answered"
        );
        response
    };
    let mut response = CURRENT.scope(id, answered.instrument(span)).await;
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_reads_back_as_written_and_nothing_else_does() {
        let id = TraceId::new();
        assert_eq!(TraceId::parse(&id.to_string()), Some(id));
        assert_eq!(TraceId::parse("00000000000000ff"), Some(TraceId(255)));
        assert_eq!(TraceId::parse("xyz"), None);
        assert_eq!(TraceId::parse("0000000000000000ff"), None);
    }

    #[tokio::test]
    async fn calls_made_while_serving_carry_the_id() {
        let id = TraceId::new();
        let tagged = CURRENT
            .scope(id, async {
                let mut request = tonic::Request::new(());
                tag(&mut request);
                request.metadata().get(HEADER).map(|v| v.to_str().unwrap().to_owned())
            })
            .await;
        assert_eq!(tagged, Some(id.to_string()));
        let spawned = CURRENT.scope(id, async { tokio::spawn(carried(async { TraceId::current() })).await.unwrap() });
        assert_eq!(spawned.await, Some(id), "a task spawned while serving carries the id");
        let bare = CURRENT.scope(id, async { tokio::spawn(async { TraceId::current() }).await.unwrap() });
        assert_eq!(bare.await, None, "task-locals do not follow a spawn by themselves");
        assert_eq!(carried(async { TraceId::current() }).await, None);
        let mut outside = tonic::Request::new(());
        tag(&mut outside);
        assert!(outside.metadata().get(HEADER).is_none());
    }
}
