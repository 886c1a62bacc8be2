//! Lazily connected HTTP/2 channels to each peer (flow control bounds what
//! is in flight on each).
//!
//! File bytes (stores, copies, fetches) go on a second connection to each
//! peer ([`Channels::bulk`]): the ring's calls and the failure detector's
//! heartbeats keep their own, so they never wait behind megabytes of a
//! transfer queued on the same socket. Over mutual TLS, that second
//! connection's socket is read through a [`ReadAhead`]: rustls on its own
//! reads one record (about 16 KiB) per `read` call, so a large fetch cost a
//! system call and a trip through the runtime per 16 KiB.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::health::Health;
use crate::tls::ReadAhead;

/// Bytes a peer may have in flight to this node per stream.
const STREAM_WINDOW: u32 = 4 << 20;
/// Bytes a peer may have in flight to this node over all streams.
const CONNECTION_WINDOW: u32 = 16 << 20;
/// Largest HTTP/2 frame accepted from a peer.
const MAX_FRAME: u32 = 1 << 20;

/// The channels to this node's peers.
#[derive(Clone)]
pub struct Channels {
    by_addr: Arc<Mutex<HashMap<String, Channel>>>,
    /// The channels that file bytes take.
    bulk_by_addr: Arc<Mutex<HashMap<String, Channel>>>,
    connect_timeout: Duration,
    /// With credentials: mutual TLS, the peer's certificate checked against
    /// the cluster's CA and the host it is called at.
    tls: Arc<RwLock<Option<ClientTlsConfig>>>,
    /// Which peers answer (every call consults it).
    health: Arc<Health>,
}

impl Channels {
    /// Channels that give up connecting after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            by_addr: Arc::default(),
            bulk_by_addr: Arc::default(),
            connect_timeout,
            tls: Arc::default(),
            health: Arc::default(),
        }
    }

    /// The same channels, over mutual TLS with `tls`.
    pub fn with_tls(self, tls: ClientTlsConfig) -> Self {
        self.set_tls(tls);
        self
    }

    /// From now on, channels are made with `tls` (new certificates): the
    /// ones made before are dropped, and calls in flight on them finish.
    pub fn set_tls(&self, tls: ClientTlsConfig) {
        *self.tls.write().unwrap_or_else(|p| p.into_inner()) = Some(tls);
        self.by_addr.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.bulk_by_addr.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The failure detector of these channels' peers.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// How long connecting may take.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The channel to `addr` (`host:port`), made on first use; `addr` is
    /// watched by the failure detector from now on.
    pub fn get(&self, addr: &str) -> Result<Channel, String> {
        self.health.used(addr);
        self.channel(addr)
    }

    /// The channel to `addr`, made on first use, without watching `addr`
    /// (the failure detector's own heartbeats, probes of lost nodes).
    pub fn channel(&self, addr: &str) -> Result<Channel, String> {
        made_once(&self.by_addr, addr, || Ok(self.endpoint(addr)?.connect_timeout(self.connect_timeout).connect_lazy()))
    }

    /// The channel for file bytes to and from `addr`, made on first use;
    /// `addr` is watched by the failure detector from now on. A connection
    /// of its own, apart from the ring's calls; over TLS, read through a
    /// [`ReadAhead`].
    pub fn bulk(&self, addr: &str) -> Result<Channel, String> {
        self.health.used(addr);
        made_once(&self.bulk_by_addr, addr, || {
            let endpoint = self.endpoint(addr)?;
            Ok(if endpoint.uri().scheme_str() == Some("https") {
                // The connect timeout bounds the TCP connect alone, as on
                // tonic's own path (`Endpoint::connect_timeout` would bound
                // the handshake too, which has its own bound in the TLS
                // configuration).
                let (to, timeout) = (addr.to_owned(), self.connect_timeout);
                endpoint
                    .connect_with_connector_lazy(tower::service_fn(move |_| connect_reading_ahead(to.clone(), timeout)))
            } else {
                endpoint.connect_timeout(self.connect_timeout).connect_lazy()
            })
        })
    }

    /// How a channel to `addr` is made, but for its connector.
    fn endpoint(&self, addr: &str) -> Result<Endpoint, String> {
        let tls = self.tls.read().unwrap_or_else(|p| p.into_inner()).clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| format!("{addr} is not an address: {e}"))?;
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls).map_err(|e| format!("TLS to {addr}: {e}"))?;
        }
        Ok(endpoint
            // HTTP/2's default 64 KiB window stalls a transfer every few
            // chunks; these bound what is in flight per stream and per peer.
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            // A chunk per frame rather than sixteen 16 KiB frames.
            .max_frame_size(MAX_FRAME)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(self.connect_timeout))
    }
}

/// The channel to `addr` in `by_addr`, made by `make` and kept there if
/// there is none yet.
fn made_once(
    by_addr: &Mutex<HashMap<String, Channel>>,
    addr: &str,
    make: impl FnOnce() -> Result<Channel, String>,
) -> Result<Channel, String> {
    let mut by_addr = by_addr.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(channel) = by_addr.get(addr) {
        return Ok(channel.clone());
    }
    let channel = make()?;
    by_addr.insert(addr.to_owned(), channel.clone());
    Ok(channel)
}

/// A TCP connection to `addr` whose reads go through a [`ReadAhead`]; tonic
/// makes the TLS connection over it.
async fn connect_reading_ahead(addr: String, timeout: Duration) -> io::Result<TokioIo<ReadAhead<TcpStream>>> {
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(&addr)).await.map_err(|_| {
        io::Error::new(io::ErrorKind::TimedOut, format!("connecting to {addr} took over {timeout:?}"))
    })??;
    // As on the listener: window updates must not wait for delayed ACKs.
    tcp.set_nodelay(true)?;
    Ok(TokioIo::new(ReadAhead::new(tcp)))
}
