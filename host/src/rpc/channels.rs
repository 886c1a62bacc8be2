//! One lazily connected HTTP/2 channel per peer, shared by the ring's calls
//! and file transfers (HTTP/2 multiplexes them; flow control bounds what is
//! in flight).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::health::Health;

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
    tls: Arc<RwLock<Option<ClientTlsConfig>>>,
    /// Which peers answer (every call consults it).
    health: Arc<Health>,
}

impl Channels {
    /// Channels that give up connecting after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        Self { by_addr: Arc::default(), connect_timeout, tls: Arc::default(), health: Arc::default() }
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
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| format!("{addr} is not an address: {e}"))?;
        if let Some(tls) = &tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(|e| format!("TLS to {addr}: {e}"))?;
        }
        let endpoint = endpoint
            .connect_timeout(self.connect_timeout)
            // HTTP/2's default 64 KiB window stalls a transfer every few
            // chunks; these bound what is in flight per stream and per peer.
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            // A chunk per frame rather than sixteen 16 KiB frames.
            .max_frame_size(MAX_FRAME)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(self.connect_timeout);
        let channel = endpoint.connect_lazy();
        by_addr.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }
}
