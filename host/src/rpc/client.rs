//! [`GrpcTransport`]: the ring's transport between processes, on the
//! node's shared channels, every call under a deadline.

use std::time::Duration;

use crate::trace::{Tagged, tagging};

use super::CHORD_MESSAGE_MAX;
use super::channels::Channels;
use super::convert::{neighbours_from_pb, neighbours_to_pb, node_to_pb, step_from_pb};
use super::pb::{self, chord_client::ChordClient};
use crate::chord::{Id, Merge, Neighbours, NodeRef, Step, Transport, Unreachable};

/// gRPC clients to the ring's peers.
#[derive(Clone)]
pub struct GrpcTransport {
    channels: Channels,
    timeout: Duration,
}

impl GrpcTransport {
    /// A transport on `channels` whose calls give up after `timeout`.
    pub fn new(channels: Channels, timeout: Duration) -> Self {
        Self { channels, timeout }
    }

    /// A client to `addr` whose calls carry the trace id of the request
    /// being served.
    fn client(&self, addr: &str) -> Result<ChordClient<Tagged>, Unreachable> {
        let channel = self.channels.get(addr).map_err(|_| Unreachable(addr.to_owned()))?;
        Ok(Self::chord(channel))
    }

    /// A client to `addr` whose calls do not make the failure detector
    /// watch it.
    fn quiet_client(&self, addr: &str) -> Result<ChordClient<Tagged>, Unreachable> {
        let channel = self.channels.channel(addr).map_err(|_| Unreachable(addr.to_owned()))?;
        Ok(Self::chord(channel))
    }

    fn chord(channel: tonic::transport::Channel) -> ChordClient<Tagged> {
        ChordClient::new(tagging(channel))
            .max_decoding_message_size(CHORD_MESSAGE_MAX)
            .max_encoding_message_size(CHORD_MESSAGE_MAX)
    }

    /// Pings every peer called lately every heartbeat, for the failure
    /// detector, until `stop`.
    pub fn watch_peers(&self, stop: tokio_util::sync::CancellationToken) -> tokio::task::JoinHandle<()> {
        let transport = self.clone();
        let ping = move |addr: String| {
            let transport = transport.clone();
            async move { transport.heartbeat(&addr).await }
        };
        self.channels.health().clone().spawn_watch(ping, stop)
    }

    /// A request that tells the peer the transport's timeout (the channel
    /// is shared with long file transfers, so the deadline is per call).
    fn timed<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    /// `to`'s wall clock, for the clock check.
    pub async fn wall_clock(&self, to: &NodeRef) -> Result<u64, Unreachable> {
        let mut client = self.client(&to.addr)?;
        Ok(self.within(to, client.time(self.timed(pb::Empty {}))).await?.wall_ns)
    }

    /// Waits for `call` at most the transport's timeout. tonic only sends
    /// the deadline to the peer: a peer cut off by the network never
    /// answers at all, and a call on its open connection would wait for the
    /// connection's keep-alive to fail (seconds), holding up stabilize and
    /// every lookup behind it.
    ///
    /// A peer the failure detector suspects is not waited for at all, and a
    /// call gives up as soon as its peer becomes suspected.
    async fn within<R>(
        &self,
        to: &NodeRef,
        call: impl std::future::Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    ) -> Result<R, Unreachable> {
        let health = self.channels.health();
        let lost = health.suspected(&to.addr);
        let answer = tokio::select! {
            answer = tokio::time::timeout(self.timeout, call) => answer,
            () = lost => return Err(Unreachable(to.addr.clone())),
        };
        match answer {
            Ok(Ok(reply)) => {
                health.heard(&to.addr);
                Ok(reply.into_inner())
            }
            _ => Err(Unreachable(to.addr.clone())),
        }
    }

    /// Why `addr` cannot be called, in words, from one call made now: for a
    /// join that failed, whether nothing answers there, something that is
    /// not a ringshare node, or a node of another cluster (its TLS refused).
    pub async fn diagnose(&self, addr: &str) -> String {
        let Ok(mut client) = self.quiet_client(addr) else {
            return format!("{addr} is not an address this node can call");
        };
        // A one-off question, given time: a busy machine's handshake is slow.
        let patience = self.timeout.max(std::time::Duration::from_secs(5));
        match tokio::time::timeout(patience, client.time(tonic::Request::new(pb::Empty {}))).await {
            Err(_) => format!("it did not answer within {} ms", patience.as_millis()),
            Ok(Ok(_)) => "it answers now, but did not while this node tried to join".to_owned(),
            Ok(Err(status)) => {
                let mut why = format!("it is not a ringshare node of this cluster ({}", status.message());
                let mut source = std::error::Error::source(&status);
                while let Some(cause) = source {
                    let cause_text = cause.to_string();
                    if !why.contains(&cause_text) {
                        why.push_str(&format!(": {cause_text}"));
                    }
                    source = cause.source();
                }
                why.push(')');
                why
            }
        }
    }

    /// Asks `addr` (any node there, joined or not) the time: whether it
    /// answered within the timeout. The failure detector's heartbeat: it
    /// asks whether the node is reachable, not whether it is in the ring.
    pub async fn heartbeat(&self, addr: &str) -> bool {
        let Ok(mut client) = self.quiet_client(addr) else { return false };
        let answered = tokio::time::timeout(self.timeout, client.time(self.timed(pb::Empty {}))).await;
        let up = matches!(answered, Ok(Ok(_)));
        if up {
            self.channels.health().heard(addr);
        }
        up
    }
}

impl Transport for GrpcTransport {
    async fn step(&self, to: &NodeRef, key: Id) -> Result<Step, Unreachable> {
        let mut client = self.client(&to.addr)?;
        let reply = self.within(to, client.find_successor(self.timed(pb::FindSuccessorRequest { key: key.0 }))).await?;
        Ok(step_from_pb(reply))
    }

    async fn neighbours(&self, to: &NodeRef) -> Result<Neighbours, Unreachable> {
        let mut client = self.client(&to.addr)?;
        Ok(neighbours_from_pb(self.within(to, client.get_neighbours(self.timed(pb::Empty {}))).await?))
    }

    async fn notify(&self, to: &NodeRef, me: &NodeRef) -> Result<(), Unreachable> {
        let mut client = self.client(&to.addr)?;
        self.within(to, client.notify(self.timed(node_to_pb(me)))).await.map(drop)
    }

    async fn ping(&self, to: &NodeRef) -> Result<(), Unreachable> {
        // Not refused for suspicion: the probe of lost nodes pings to find
        // out whether they are back.
        let mut client = self.quiet_client(&to.addr)?;
        let reply = tokio::time::timeout(self.timeout, client.ping(self.timed(pb::Empty {}))).await;
        let reply = match reply {
            Ok(Ok(reply)) => reply.into_inner(),
            _ => return Err(Unreachable(to.addr.clone())),
        };
        self.channels.health().heard(&to.addr);
        same_node(to, &reply)
    }

    async fn answers(&self, to: &NodeRef) -> Result<(), Unreachable> {
        // Asked every time (a node killed a moment ago refuses the
        // connection at once); one cut off is given up on once it is
        // suspected (about a second), not after the call's timeout.
        let mut client = self.client(&to.addr)?;
        let reply = self.within(to, client.ping(self.timed(pb::Empty {}))).await?;
        same_node(to, &reply)
    }

    async fn leaving(&self, to: &NodeRef, leaver: &NodeRef, neighbours: Neighbours) -> Result<(), Unreachable> {
        let request =
            pb::LeaveRequest { leaver: Some(node_to_pb(leaver)), neighbours: Some(neighbours_to_pb(&neighbours)) };
        let mut client = self.client(&to.addr)?;
        self.within(to, client.leave(self.timed(request))).await.map(drop)
    }

    fn suspected(&self, to: &NodeRef) -> bool {
        self.channels.health().is_suspected(&to.addr)
    }

    async fn merge(&self, to: &NodeRef, hint: Merge) -> Result<(), Unreachable> {
        let request = pb::MergeRequest {
            pred: Some(node_to_pb(&hint.pred)),
            succ: Some(node_to_pb(&hint.succ)),
            hops: hint.hops,
        };
        let mut client = self.client(&to.addr)?;
        self.within(to, client.merge(self.timed(request))).await.map(drop)
    }
}

/// Whether the node that answered a ping on `to`'s address is `to` (another
/// node now answering there is not the node asked for).
fn same_node(to: &NodeRef, reply: &pb::Node) -> Result<(), Unreachable> {
    if reply.id == to.id.0 { Ok(()) } else { Err(Unreachable(to.addr.clone())) }
}
