//! Who may call a node's ring and file RPCs. With credentials, only members
//! of its cluster: callers that presented, in the TLS handshake, a
//! certificate of the cluster's CA (the handshake verified it). Everyone
//! else is a stranger: a plain-HTTP caller, a TLS caller without a
//! certificate, or one whose certificate the handshake refused. A stranger's
//! attempt is refused, counted in `/metrics` (`ringshare_refused_total`),
//! and logged once per address and reason. A member may also only speak for
//! the host its certificate names (see [`Gate::may_claim`]).
//!
//! Without credentials the gate is open, as a node on loopback has been.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use rustls::pki_types::CertificateDer;

use crate::metrics::{Metrics, ReasonLabels};

/// Addresses remembered as already logged; past this many the record
/// starts over (a flood of addresses logs again rather than grow memory).
const REMEMBERED: usize = 10_000;

/// The caller of a request, as the node's listener saw it; in every
/// request's extensions.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Its address.
    pub remote: SocketAddr,
    /// The certificate it presented, verified as one of the cluster CA's;
    /// none over plain HTTP or when it presented none.
    pub certificate: Option<CertificateDer<'static>>,
}

/// The gate of one node.
pub struct Gate {
    members_only: bool,
    logged: Mutex<HashSet<(IpAddr, &'static str)>>,
    metrics: OnceLock<Arc<Metrics>>,
}

impl Gate {
    /// A gate that lets every caller through (a node without credentials).
    pub fn open() -> Arc<Self> {
        Arc::new(Self { members_only: false, logged: Mutex::default(), metrics: OnceLock::new() })
    }

    /// A gate that lets only members through.
    pub fn members() -> Arc<Self> {
        Arc::new(Self { members_only: true, logged: Mutex::default(), metrics: OnceLock::new() })
    }

    /// Whether only members may call.
    pub fn is_members_only(&self) -> bool {
        self.members_only
    }

    /// Counts refusals in `metrics` from now on.
    pub fn count_in(&self, metrics: Arc<Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// Records a refusal of `remote` for `reason`: counted always, logged
    /// the first time for that address and reason.
    pub fn refused(&self, remote: SocketAddr, reason: &'static str, detail: &str) {
        if let Some(metrics) = self.metrics.get() {
            metrics.refused.get_or_create(&ReasonLabels { reason: reason.to_owned() }).inc();
        }
        let first = {
            let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
            if logged.len() >= REMEMBERED {
                logged.clear();
            }
            logged.insert((remote.ip(), reason))
        };
        if first {
            tracing::warn!(%remote, reason, "refused a stranger: {detail} (logged once per address)");
        }
    }

    /// Whether the caller of a request (its `extensions`) may speak for the
    /// node at `addr`: always through an open gate or in-process; through a
    /// members-only gate, when its certificate names `addr`'s host. A refusal
    /// is recorded.
    pub fn may_claim(&self, extensions: &http::Extensions, addr: &str) -> bool {
        if !self.members_only {
            return true;
        }
        let Some(peer) = extensions.get::<Peer>() else { return true };
        let allowed = peer.certificate.as_ref().is_some_and(|der| super::speaks_for(der, addr));
        if !allowed {
            self.refused(
                peer.remote,
                "claim",
                &format!("a member spoke for {addr}, which its certificate does not name"),
            );
        }
        allowed
    }
}

/// Middleware in front of the ring and file RPCs: a stranger gets gRPC
/// status `UNAUTHENTICATED` and nothing else. Requests that did not come
/// through the listener (in-process tests) pass.
pub async fn members_only(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    if gate.members_only
        && let Some(Peer { remote, certificate: None }) = request.extensions().get::<Peer>()
    {
        gate.refused(*remote, "no_certificate", &format!("{} without a member's certificate", request.uri().path()));
        return tonic::Status::unauthenticated(
            "this node takes ring and file calls only from members of its cluster: mutual TLS with a certificate of its CA",
        )
        .into_http();
    }
    next.run(request).await
}
