//! [`GrpcTransport`]: the ring's transport between processes, one lazily
//! connected HTTP/2 channel per peer, every call under a deadline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use super::convert::{neighbours_from_pb, neighbours_to_pb, node_to_pb, step_from_pb};
use super::pb::{self, chord_client::ChordClient};
use crate::chord::{Id, Neighbours, NodeRef, Step, Transport, Unreachable};

/// gRPC clients to the ring's peers.
#[derive(Clone)]
pub struct GrpcTransport {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    timeout: Duration,
}

impl GrpcTransport {
    /// A transport whose calls give up after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self { channels: Arc::default(), timeout }
    }

    fn client(&self, addr: &str) -> Result<ChordClient<Channel>, Unreachable> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(addr) {
            return Ok(ChordClient::new(channel.clone()));
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|_| Unreachable(addr.to_owned()))?
            .connect_timeout(self.timeout)
            .timeout(self.timeout);
        let channel = endpoint.connect_lazy();
        channels.insert(addr.to_owned(), channel.clone());
        Ok(ChordClient::new(channel))
    }
}

fn unreachable(to: &NodeRef) -> impl FnOnce(tonic::Status) -> Unreachable + '_ {
    move |_| Unreachable(to.addr.clone())
}

impl Transport for GrpcTransport {
    async fn step(&self, to: &NodeRef, key: Id) -> Result<Step, Unreachable> {
        let reply = self.client(&to.addr)?.find_successor(pb::FindSuccessorRequest { key: key.0 }).await;
        Ok(step_from_pb(reply.map_err(unreachable(to))?.into_inner()))
    }

    async fn neighbours(&self, to: &NodeRef) -> Result<Neighbours, Unreachable> {
        let reply = self.client(&to.addr)?.get_neighbours(pb::Empty {}).await;
        Ok(neighbours_from_pb(reply.map_err(unreachable(to))?.into_inner()))
    }

    async fn notify(&self, to: &NodeRef, me: &NodeRef) -> Result<(), Unreachable> {
        self.client(&to.addr)?.notify(node_to_pb(me)).await.map_err(unreachable(to))?;
        Ok(())
    }

    async fn ping(&self, to: &NodeRef) -> Result<(), Unreachable> {
        let reply = self.client(&to.addr)?.ping(pb::Empty {}).await.map_err(unreachable(to))?;
        // Another node now answering on that address is not the node asked for.
        if reply.into_inner().id != to.id.0 {
            return Err(Unreachable(to.addr.clone()));
        }
        Ok(())
    }

    async fn leaving(&self, to: &NodeRef, leaver: &NodeRef, neighbours: Neighbours) -> Result<(), Unreachable> {
        let request =
            pb::LeaveRequest { leaver: Some(node_to_pb(leaver)), neighbours: Some(neighbours_to_pb(&neighbours)) };
        self.client(&to.addr)?.leave(request).await.map_err(unreachable(to))?;
        Ok(())
    }
}
