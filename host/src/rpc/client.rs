//! [`GrpcTransport`]: the ring's transport between processes, on the
//! node's shared channels, every call under a deadline.

use std::time::Duration;

use crate::trace::{Tagged, tagging};

use super::CHORD_MESSAGE_MAX;
use super::channels::Channels;
use super::convert::{neighbours_from_pb, neighbours_to_pb, node_to_pb, step_from_pb};
use super::pb::{self, chord_client::ChordClient};
use crate::chord::{Id, Neighbours, NodeRef, Step, Transport, Unreachable};

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
        Ok(ChordClient::new(tagging(channel))
            .max_decoding_message_size(CHORD_MESSAGE_MAX)
            .max_encoding_message_size(CHORD_MESSAGE_MAX))
    }

    /// A request that gives up after the transport's timeout (the channel
    /// is shared with long file transfers, so the deadline is per call).
    fn timed<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        request
    }
}

fn unreachable(to: &NodeRef) -> impl FnOnce(tonic::Status) -> Unreachable + '_ {
    move |_| Unreachable(to.addr.clone())
}

impl Transport for GrpcTransport {
    async fn step(&self, to: &NodeRef, key: Id) -> Result<Step, Unreachable> {
        let reply = self.client(&to.addr)?.find_successor(self.timed(pb::FindSuccessorRequest { key: key.0 })).await;
        Ok(step_from_pb(reply.map_err(unreachable(to))?.into_inner()))
    }

    async fn neighbours(&self, to: &NodeRef) -> Result<Neighbours, Unreachable> {
        let reply = self.client(&to.addr)?.get_neighbours(self.timed(pb::Empty {})).await;
        Ok(neighbours_from_pb(reply.map_err(unreachable(to))?.into_inner()))
    }

    async fn notify(&self, to: &NodeRef, me: &NodeRef) -> Result<(), Unreachable> {
        self.client(&to.addr)?.notify(self.timed(node_to_pb(me))).await.map_err(unreachable(to))?;
        Ok(())
    }

    async fn ping(&self, to: &NodeRef) -> Result<(), Unreachable> {
        let reply = self.client(&to.addr)?.ping(self.timed(pb::Empty {})).await.map_err(unreachable(to))?;
        // Another node now answering on that address is not the node asked for.
        if reply.into_inner().id != to.id.0 {
            return Err(Unreachable(to.addr.clone()));
        }
        Ok(())
    }

    async fn leaving(&self, to: &NodeRef, leaver: &NodeRef, neighbours: Neighbours) -> Result<(), Unreachable> {
        let request =
            pb::LeaveRequest { leaver: Some(node_to_pb(leaver)), neighbours: Some(neighbours_to_pb(&neighbours)) };
        self.client(&to.addr)?.leave(self.timed(request)).await.map_err(unreachable(to))?;
        Ok(())
    }
}
