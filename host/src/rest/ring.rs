//! The ring as users see it: `GET /ring`, `GET /lookup/{name}`, `GET /nodes`.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;

use super::error::Error;
use super::{ApiError, AppState};
use crate::chord::{Id, NodeRef, RingError, WALK_LIMIT};
use crate::store::FileName;

#[derive(Serialize)]
pub struct RingJson {
    /// False while the node waits for the node it joins through.
    joined: bool,
    id: Id,
    addr: String,
    predecessor: Option<NodeRef>,
    successors: Vec<NodeRef>,
    fingers: Vec<FingerJson>,
    /// This node's clock against its peers': `in_step` false means it is
    /// off most of them by more than `max_offset_ms` and takes no writes.
    clock: ClockJson,
}

#[derive(Serialize)]
pub struct ClockJson {
    in_step: bool,
    max_offset_ms: u64,
    /// The last check, once a peer was measured: median offset of the
    /// peers' clocks from this one's, peers measured, how many are off.
    measured: Option<crate::clock::Verdict>,
}

#[derive(Serialize)]
pub struct FingerJson {
    index: usize,
    start: Id,
    node: Option<NodeRef>,
}

/// `GET /ring`: this node's id, predecessor, successor list and fingers.
#[utoipa::path(get, path = "/ring", tag = "ring", responses((status = 200, description = "{joined, id, addr, predecessor, successors, fingers, clock: {in_step, max_offset_ms, measured}}", body = serde_json::Value)))]
pub async fn ring(State(app): State<AppState>) -> Json<RingJson> {
    let table = app.ring.snapshot();
    let me = table.me().clone();
    let fingers = table
        .fingers()
        .iter()
        .enumerate()
        .map(|(i, node)| FingerJson { index: i, start: me.id.finger_target(i as u32), node: node.clone() })
        .collect();
    Json(RingJson {
        joined: app.ring.is_joined(),
        id: me.id,
        addr: me.addr,
        predecessor: table.predecessor.clone(),
        successors: table.successors().to_vec(),
        fingers,
        clock: {
            let clock = app.files.clock();
            ClockJson {
                in_step: clock.trusted(),
                max_offset_ms: crate::clock::max_offset().as_millis() as u64,
                measured: clock.verdict(),
            }
        },
    })
}

#[derive(Serialize)]
pub struct LookupJson {
    name: String,
    key: Id,
    node: NodeRef,
    hops: usize,
    /// Where the file belongs: the responsible node and its next k-1 successors.
    holders: Vec<NodeRef>,
}

/// `GET /lookup/{name}`: the node responsible for a file name.
#[utoipa::path(get, path = "/lookup/{name}", tag = "ring", params(("name" = String, Path)), responses((status = 200, description = "{name, key, node, hops, holders}", body = serde_json::Value), (status = 400, description = "a bad name", body = Error), (status = 503, description = "the ring is not joined", body = Error)))]
pub async fn lookup(
    State(app): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<LookupJson>, ApiError> {
    let name = FileName::parse(&name?.0)?;
    let key = Id::hash(name.as_str());
    let (node, hops) = app.ring.lookup(key).await?;
    let holders = app.files.holders(&name).await?;
    Ok(Json(LookupJson { name: name.as_str().to_owned(), key, node, hops, holders }))
}

#[derive(Serialize)]
pub struct NodeJson {
    id: Id,
    addr: String,
    alive: bool,
}

/// `GET /nodes`: every node met walking the ring from here, by id.
#[utoipa::path(get, path = "/nodes", tag = "ring", responses((status = 200, description = "[{id, addr, alive}] met walking the ring", body = serde_json::Value)))]
pub async fn nodes(State(app): State<AppState>) -> Json<Vec<NodeJson>> {
    let nodes = app.ring.walk(WALK_LIMIT).await;
    Json(nodes.into_iter().map(|(n, alive)| NodeJson { id: n.id, addr: n.addr, alive }).collect())
}

impl From<RingError> for ApiError {
    fn from(e: RingError) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ring-unavailable", e.to_string())
    }
}
