//! One lazily connected HTTP/2 channel per peer, shared by the ring's calls
//! and file transfers (HTTP/2 multiplexes them; flow control bounds what is
//! in flight). With credentials, the channel's connection is mutual TLS made
//! here with rustls over a [`ReadAhead`] socket (tonic's own TLS reads 4 KiB
//! at a time), the peer's certificate checked for the host it is called at.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint};

use super::health::Health;
use crate::tls::{ReadAhead, host_of};

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
    connect_timeout: Duration,
    /// With credentials: mutual TLS, the peer's certificate checked against
    /// the cluster's CA and the host it is called at.
    tls: Arc<RwLock<Option<Arc<rustls::ClientConfig>>>>,
    /// Which peers answer (every call consults it).
    health: Arc<Health>,
}

impl Channels {
    /// Channels that give up connecting after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        Self { by_addr: Arc::default(), connect_timeout, tls: Arc::default(), health: Arc::default() }
    }

    /// The same channels, over mutual TLS with `tls`.
    pub fn with_tls(self, tls: Arc<rustls::ClientConfig>) -> Self {
        self.set_tls(tls);
        self
    }

    /// From now on, channels are made with `tls` (new certificates): the
    /// ones made before are dropped, and calls in flight on them finish.
    pub fn set_tls(&self, tls: Arc<rustls::ClientConfig>) {
        *self.tls.write().unwrap_or_else(|p| p.into_inner()) = Some(tls);
        self.by_addr.lock().unwrap_or_else(|p| p.into_inner()).clear();
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
        let mut by_addr = self.by_addr.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = by_addr.get(addr) {
            return Ok(channel.clone());
        }
        let tls = self.tls.read().unwrap_or_else(|p| p.into_inner()).clone();
        // Over TLS the scheme stays `http`: the connection is ours, not tonic's.
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("{addr} is not an address: {e}"))?
            .connect_timeout(self.connect_timeout)
            // HTTP/2's default 64 KiB window stalls a transfer every few
            // chunks; these bound what is in flight per stream and per peer.
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            // A chunk per frame rather than sixteen 16 KiB frames.
            .max_frame_size(MAX_FRAME)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(self.connect_timeout);
        let channel = match tls {
            None => endpoint.connect_lazy(),
            Some(config) => {
                let host = host_of(addr).ok_or_else(|| format!("{addr} is not host:port"))?;
                let name = ServerName::try_from(host.to_owned()).map_err(|e| format!("{addr}: {e}"))?;
                let addr = addr.to_owned();
                endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
                    connect_tls(addr.clone(), name.clone(), config.clone())
                }))
            }
        };
        by_addr.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }
}

/// A mutual-TLS connection to `addr`, whose certificate must name `name`.
async fn connect_tls(
    addr: String,
    name: ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
) -> io::Result<TokioIo<TlsStream<ReadAhead<TcpStream>>>> {
    let tcp = TcpStream::connect(&addr).await?;
    // As on the listener: window updates must not wait for delayed ACKs.
    tcp.set_nodelay(true)?;
    let mut stream = tokio_rustls::TlsConnector::from(config).connect(name, ReadAhead::new(tcp)).await?;
    // As tonic's own connector: a server that does not speak HTTP/2 is
    // refused here, in words, rather than fail later on the preface.
    if stream.get_ref().1.alpn_protocol() != Some(b"h2".as_slice()) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{addr} did not agree to HTTP/2 over TLS")));
    }
    stream.get_mut().0.read_ahead();
    Ok(TokioIo::new(stream))
}
