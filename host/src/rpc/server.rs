//! The `Chord` gRPC service: answers other nodes from this node's table.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{neighbours_from_pb, neighbours_to_pb, node_from_pb, node_to_pb, nodes_to_pb, step_to_pb};
use super::{CHORD_MESSAGE_MAX, GrpcTransport, pb};
use crate::chord::{ChordNode, Id, MERGE_HOPS, Merge};
use crate::tls::Gate;

type Node = Arc<ChordNode<GrpcTransport>>;

/// Path prefix of the ring's gRPC methods.
const CHORD_PATH: &str = "/ringshare.chord.v1.Chord/{*method}";

/// Adds the ring's gRPC service to `router`, beside the REST API on the
/// same listener (gRPC arrives as HTTP/2 on its own paths). `gate` says
/// which node a caller may speak for.
pub fn chord_routes(router: axum::Router, node: Node, gate: Arc<Gate>) -> axum::Router {
    let service = pb::chord_server::ChordServer::new(ChordService { node, gate })
        .max_decoding_message_size(CHORD_MESSAGE_MAX)
        .max_encoding_message_size(CHORD_MESSAGE_MAX);
    router.route_service(CHORD_PATH, service)
}

struct ChordService {
    node: Node,
    gate: Arc<Gate>,
}

impl ChordService {
    /// A caller may only speak for the node its certificate names (a
    /// member cannot claim another node's place in the ring).
    fn claims<T>(&self, request: &Request<T>, addr: &str) -> Result<(), Status> {
        if self.gate.may_claim(request.extensions(), addr) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "your certificate does not name {addr}: you may only speak for yourself"
            )))
        }
    }

    /// A leaving node answers no ring call, so that nobody re-learns it.
    fn serving(&self) -> Result<&Node, Status> {
        if self.node.is_leaving() {
            Err(Status::unavailable("this node is leaving the ring"))
        } else if !self.node.is_joined() {
            // Alone until its join completes, its table would send lookups
            // astray (a node restarted at once is still named by the ring).
            Err(Status::unavailable("this node has not joined the ring yet"))
        } else {
            Ok(&self.node)
        }
    }
}

#[tonic::async_trait]
impl pb::chord_server::Chord for ChordService {
    async fn find_successor(
        &self,
        request: Request<pb::FindSuccessorRequest>,
    ) -> Result<Response<pb::FindSuccessorResponse>, Status> {
        let key = Id(request.into_inner().key);
        Ok(Response::new(step_to_pb(self.serving()?.handle_step(key))))
    }

    async fn get_predecessor(&self, _: Request<pb::Empty>) -> Result<Response<pb::GetPredecessorResponse>, Status> {
        let predecessor = self.serving()?.handle_neighbours().predecessor.as_ref().map(node_to_pb);
        Ok(Response::new(pb::GetPredecessorResponse { predecessor }))
    }

    async fn get_successor_list(&self, _: Request<pb::Empty>) -> Result<Response<pb::NodeList>, Status> {
        Ok(Response::new(pb::NodeList { nodes: nodes_to_pb(&self.serving()?.handle_neighbours().successors) }))
    }

    async fn get_neighbours(&self, _: Request<pb::Empty>) -> Result<Response<pb::Neighbours>, Status> {
        Ok(Response::new(neighbours_to_pb(&self.serving()?.handle_neighbours())))
    }

    async fn notify(&self, request: Request<pb::Node>) -> Result<Response<pb::Empty>, Status> {
        // A malformed message is refused as such before any claim is weighed.
        let candidate = node_from_pb(request.get_ref().clone())?;
        self.claims(&request, &candidate.addr)?;
        self.serving()?.handle_notify(candidate).await;
        Ok(Response::new(pb::Empty {}))
    }

    async fn ping(&self, _: Request<pb::Empty>) -> Result<Response<pb::Node>, Status> {
        Ok(Response::new(node_to_pb(&self.serving()?.me())))
    }

    async fn leave(&self, request: Request<pb::LeaveRequest>) -> Result<Response<pb::Empty>, Status> {
        let leaver = request.get_ref().leaver.clone().ok_or_else(|| Status::invalid_argument("leaver is required"))?;
        let leaver = node_from_pb(leaver)?;
        self.claims(&request, &leaver.addr)?;
        let request = request.into_inner();
        let neighbours = neighbours_from_pb(request.neighbours.unwrap_or_default());
        self.serving()?.handle_leaving(&leaver, neighbours);
        Ok(Response::new(pb::Empty {}))
    }

    /// Answered in every state (joining, leaving): it is also the failure
    /// detector's heartbeat, which asks whether the node is reachable.
    async fn time(&self, _: Request<pb::Empty>) -> Result<Response<pb::TimeReply>, Status> {
        Ok(Response::new(pb::TimeReply { wall_ns: crate::clock::wall_ns() }))
    }

    async fn merge(&self, request: Request<pb::MergeRequest>) -> Result<Response<pb::Empty>, Status> {
        let request = request.into_inner();
        let node = |n: Option<pb::Node>, what: &str| {
            node_from_pb(n.ok_or_else(|| Status::invalid_argument(format!("{what} is required")))?)
        };
        let (pred, succ) = (node(request.pred, "pred")?, node(request.succ, "succ")?);
        if request.hops > MERGE_HOPS {
            return Err(Status::invalid_argument(format!("hops must be at most {MERGE_HOPS}")));
        }
        let node = self.serving()?.clone();
        // The merge goes on in the background: its next step is another
        // node's call, and the sender does not wait for the whole chain.
        tokio::spawn(crate::trace::carried(async move {
            node.handle_merge(Merge { pred, succ, hops: request.hops }).await;
        }));
        Ok(Response::new(pb::Empty {}))
    }
}
