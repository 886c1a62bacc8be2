//! The node's one listener: the REST API and the ring's gRPC share a port,
//! over plain HTTP or TLS, told apart by the first byte a client sends (a
//! TLS handshake starts with 0x16, an HTTP request with a letter, an HTTP/2
//! preface with `P`). With credentials, TLS asks the client for a
//! certificate of the cluster's CA without requiring one, so browsers and
//! `curl` reach REST over HTTPS (or plain HTTP) while only members reach
//! the RPCs (see `tls::gate`). Every request carries its [`Peer`].
//!
//! Each connection is served by hyper with timers on: a client has
//! [`HEADER_TIMEOUT`] to send a request's head (and an idle keep-alive
//! connection is closed after it), [`HANDSHAKE_TIMEOUT`] to finish a TLS
//! handshake or send its first byte. HTTP/2 connections carry at most
//! [`HTTP2_STREAMS`] requests at once, and one whose client resets streams
//! faster than they are taken up (the "rapid reset" flood) is closed
//! ([`HTTP2_PENDING_RESETS`]). At most `max_connections` are open at once: one
//! more is answered `503 overloaded` (plain HTTP) or closed (TLS) at once.
//! After the shutdown signal the listener stops taking connections and
//! waits for the open ones to finish their requests.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use crate::tls::{Gate, Peer, Rotating};

/// Time a client has to send a request's head, and that an idle
/// keep-alive connection stays open.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
pub use crate::tls::HANDSHAKE_TIMEOUT;
/// Requests one HTTP/2 connection may have in flight at once.
pub const HTTP2_STREAMS: u32 = 256;
/// Streams a client may reset before this node took them up, on one HTTP/2
/// connection, before the connection is closed (`GOAWAY`,
/// `ENHANCE_YOUR_CALM`): the "rapid reset" flood (CVE-2023-44487) costs the
/// node next to nothing. h2's own default, written here so that it stays.
pub const HTTP2_PENDING_RESETS: usize = 20;
/// Streams this node may reset for a client's errors on one HTTP/2
/// connection before closing it (RUSTSEC-2024-0003); hyper's default.
pub const HTTP2_ERROR_RESETS: usize = 1024;
/// What a connection over the cap is told, in plain HTTP.
const OVERLOADED: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n\
content-length: 81\r\n\r\n{\"error\":\"the node has too many connections open, try again\",\"code\":\"overloaded\"}";
/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// Serves `app` on `listener` until `shutdown` completes, then lets the
/// open connections finish. With `tls`, clients may speak TLS (and present
/// a member's certificate); `gate` records the handshakes that fail. At
/// most `max_connections` are served at once.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<Rotating>>,
    gate: Arc<Gate>,
    max_connections: usize,
    shutdown: impl Future<Output = ()> + Send,
) {
    let graceful = GracefulShutdown::new();
    let open = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it
                    // was taken: wait a little rather than spin.
                    tracing::debug!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Without TCP_NODELAY, the small HTTP/2 frames a receiving node
        // sends back (window updates) wait for delayed ACKs, and a stream of
        // bytes *to* this node crawls at a tenth of its speed.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tokio::spawn(overloaded(tcp));
            continue;
        };
        let (app, tls, gate, watcher) = (app.clone(), tls.clone(), gate.clone(), graceful.watcher());
        tokio::spawn(async move {
            connection(tcp, remote, app, tls, gate, watcher).await;
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A connection over the cap: a plain HTTP client is told so, a TLS one
/// (or a silent one) is closed.
async fn overloaded(mut tcp: TcpStream) {
    use tokio::io::AsyncWriteExt;
    let mut first = [0u8; 1];
    if let Ok(Ok(1)) = tokio::time::timeout(Duration::from_secs(1), tcp.peek(&mut first)).await
        && first[0] != TLS_HANDSHAKE
    {
        let _ = tokio::time::timeout(Duration::from_secs(1), tcp.write_all(OVERLOADED)).await;
    }
}

async fn connection(
    tcp: TcpStream,
    remote: SocketAddr,
    app: Router,
    tls: Option<Arc<Rotating>>,
    gate: Arc<Gate>,
    watcher: Watcher,
) {
    let mut first = [0u8; 1];
    let speaks_tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await {
        Ok(Ok(1)) => first[0] == TLS_HANDSHAKE,
        _ => return, // closed, failed, or silent
    };
    if !speaks_tls {
        return serve_connection(tcp, Peer { remote, certificate: None }, app, watcher).await;
    }
    let Some(config) = tls.map(|t| t.server_config()) else {
        tracing::debug!(%remote, "a TLS client on a node without credentials: closed");
        return;
    };
    let accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, tokio_rustls::TlsAcceptor::from(config).accept(tcp)).await;
    let stream = match accepted {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return gate.refused(remote, "handshake", &format!("TLS handshake failed: {e}")),
        Err(_) => return gate.refused(remote, "handshake", "TLS handshake not finished in time"),
    };
    let certificate = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.clone().into_owned());
    serve_connection(stream, Peer { remote, certificate }, app, watcher).await
}

async fn serve_connection<IO>(io: IO, peer: Peer, app: Router, watcher: Watcher)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(peer.clone());
        app.clone().oneshot(request.map(axum::body::Body::new))
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(HEADER_TIMEOUT))
        .max_concurrent_streams(HTTP2_STREAMS)
        .max_pending_accept_reset_streams(HTTP2_PENDING_RESETS)
        .max_local_error_reset_streams(HTTP2_ERROR_RESETS);
    let connection = builder.serve_connection(TokioIo::new(io), service).into_owned();
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!("connection ended: {e}");
    }
}
