//! The original system's routes, kept as aliases of the new ones:
//! `GET /index`, `POST /upload/` (multipart field `file`) and
//! `GET /download/{filename}` (served by `files::download`), and its
//! portmapper's `GET /all_nodes`, `GET /active_nodes` and
//! `GET /search/{filename}`, answered by any node from the ring.

use axum::Json;
use axum::extract::multipart::MultipartRejection;
use axum::extract::rejection::PathRejection;
use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use serde::Serialize;

use super::error::Error;
use super::{ApiError, AppState};
use crate::chord::{NodeRef, WALK_LIMIT};
use crate::files::Delivery;
use crate::store::FileName;

#[derive(Serialize)]
pub struct IndexJson {
    files: Vec<IndexEntry>,
}

#[derive(Serialize)]
pub struct IndexEntry {
    filename: String,
    /// Where the file is downloaded from on this node.
    path: String,
}

/// `GET /index` → `{"files":[{"filename","path"}]}`.
#[utoipa::path(get, path = "/index", tag = "legacy", responses((status = 200, description = "{files: [{filename, path}]}", body = serde_json::Value), (status = 507, description = "a holder's disk is full, or would be left with less than it keeps free", body = Error), (status = 400, description = "a bad name or query", body = Error), (status = 503, description = "no plugin, no ring or no holder answering", body = Error), (status = 500, description = "a plugin failed (timeout, memory cap, trap)", body = Error)))]
pub async fn index(State(app): State<AppState>) -> Result<Json<IndexJson>, ApiError> {
    let mut files: Vec<IndexEntry> = app
        .plugins
        .list()
        .await?
        .entries
        .iter()
        .map(|e| IndexEntry { path: format!("/download/{}", e.name), filename: e.name.clone() })
        .collect();
    files.sort_by(|a, b| a.filename.cmp(&b.filename));
    Ok(Json(IndexJson { files }))
}

#[derive(Serialize)]
pub struct UploadJson {
    filename: String,
    message: String,
    size: u64,
    blake3: Option<String>,
    /// `stored` (on the ring), or `queued` (also kept as a hand-off for
    /// `node_address`, which did not answer).
    delivery: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_address: Option<String>,
}

/// `POST /upload/` with a multipart field `file`: stored on the ring under
/// the part's file name, replacing any file of that name (as the original
/// system did). With a form field `node_address` (before the file, as the
/// original client sends it) naming the node the file is meant for: if
/// that node does not answer, the file is stored on the ring all the same
/// and, if that node is (or would be) one of its holders, a hand-off is
/// kept for it (`queued`), which it takes when it is back.
#[utoipa::path(post, path = "/upload/", tag = "legacy", request_body(content = serde_json::Value, content_type = "multipart/form-data", description = "fields `node_address` (optional, first) and `file`"), responses((status = 200, description = "{filename, message, size, blake3, delivery}", body = serde_json::Value), (status = 400, description = "a bad name or query", body = Error), (status = 503, description = "no plugin, no ring or no holder answering", body = Error), (status = 500, description = "a plugin failed (timeout, memory cap, trap)", body = Error)))]
pub async fn upload(
    State(app): State<AppState>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<UploadJson>), ApiError> {
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "bad-multipart", message);
    let mut multipart = multipart.map_err(|e| bad(e.body_text()))?;
    let mut node_address = None;
    while let Some(field) = multipart.next_field().await.map_err(|e| bad(e.body_text()))? {
        match field.name() {
            Some("node_address") => {
                let text = field.text().await.map_err(|e| bad(e.body_text()))?;
                node_address = Some(parse_node_address(text.trim()).map_err(bad)?);
                continue;
            }
            Some("file") => {}
            _ => continue,
        }
        let Some(filename) = field.file_name().map(str::to_owned) else {
            return Err(bad("the `file` part has no filename".into()));
        };
        let name = FileName::parse(&filename)?;
        // The multipart field borrows the form: pump it through a channel so
        // the upload can travel to the responsible node.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, String>>(4);
        let body = tokio_stream::wrappers::ReceiverStream::new(rx);
        let put = app.files.put(&name, true, body);
        let pump = async move {
            let mut field = field;
            loop {
                match field.chunk().await {
                    Ok(Some(bytes)) => {
                        if tx.send(Ok(bytes)).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Err(e.body_text())).await;
                        break;
                    }
                }
            }
        };
        let (stored, ()) = tokio::join!(put, pump);
        let stored = stored?;
        let entry = &stored.entry;
        let uploaded = format!("File '{}' uploaded successfully ({} bytes)", entry.name, entry.size);
        let (delivery, message) = match &node_address {
            None => ("stored", uploaded),
            Some(node) => match app.files.meant_for(node, &stored).await? {
                Delivery::Stored => ("stored", format!("{uploaded} to the ring, with {node} up")),
                Delivery::Queued => ("queued", format!("{uploaded} to the ring; {node} is down: queued for it")),
                Delivery::NotAHolder => {
                    ("stored", format!("{uploaded} to the ring; {node} is down and would not hold it"))
                }
                Delivery::NoBroker => (
                    "stored",
                    format!("{uploaded} to the ring; {node} is down and this node has no broker to queue it"),
                ),
            },
        };
        let reply = UploadJson {
            filename: entry.name.clone(),
            message,
            size: entry.size,
            blake3: entry.blake3.map(|d| d.to_hex()),
            delivery,
            node_address,
        };
        return Ok((StatusCode::OK, Json(reply)));
    }
    Err(bad("no `file` part in the form".into()))
}

/// A node's address as the original client sends it: `host:port`.
fn parse_node_address(text: &str) -> Result<String, String> {
    let refuse = || format!("node_address {text:?} is not host:port");
    let (host, port) = text.rsplit_once(':').ok_or_else(refuse)?;
    let valid_host = !host.is_empty()
        && host.len() <= 253
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
    match port.parse::<u16>() {
        Ok(port) if port > 0 && valid_host => Ok(text.to_owned()),
        _ => Err(refuse()),
    }
}

#[derive(Serialize)]
pub struct AllNodesJson {
    all_nodes: Vec<String>,
    active_nodes: Vec<String>,
}

/// `GET /all_nodes` → `{"all_nodes":[...],"active_nodes":[...]}`: every
/// node met walking the ring, and those of them that answer.
#[utoipa::path(get, path = "/all_nodes", tag = "legacy", responses((status = 200, description = "{all_nodes, active_nodes}", body = serde_json::Value)))]
pub async fn all_nodes(State(app): State<AppState>) -> Json<AllNodesJson> {
    let nodes = app.ring.walk(WALK_LIMIT).await;
    let active_nodes = active(&nodes);
    Json(AllNodesJson { all_nodes: nodes.into_iter().map(|(n, _)| n.addr).collect(), active_nodes })
}

#[derive(Serialize)]
pub struct ActiveNodesJson {
    active_nodes: Vec<String>,
}

/// `GET /active_nodes` → `{"active_nodes":[...]}`.
#[utoipa::path(get, path = "/active_nodes", tag = "legacy", responses((status = 200, description = "{active_nodes}", body = serde_json::Value)))]
pub async fn active_nodes(State(app): State<AppState>) -> Json<ActiveNodesJson> {
    Json(ActiveNodesJson { active_nodes: active(&app.ring.walk(WALK_LIMIT).await) })
}

/// Addresses of the walked nodes that answered.
fn active(nodes: &[(NodeRef, bool)]) -> Vec<String> {
    nodes.iter().filter(|(_, alive)| *alive).map(|(n, _)| n.addr.clone()).collect()
}

#[derive(Serialize)]
pub struct SearchJson {
    node_address: String,
    filename: String,
}

/// `GET /search/{filename}` → `{"node_address","filename"}`: a node that
/// serves the file (this one when it holds it); `404` when none does.
#[utoipa::path(get, path = "/search/{filename}", tag = "legacy", params(("filename" = String, Path)), responses((status = 200, description = "{node_address, filename}", body = serde_json::Value), (status = 404, description = "no node serves it", body = Error), (status = 400, description = "a bad name or query", body = Error), (status = 503, description = "no plugin, no ring or no holder answering", body = Error), (status = 500, description = "a plugin failed (timeout, memory cap, trap)", body = Error)))]
pub async fn search(
    State(app): State<AppState>,
    filename: Result<Path<String>, PathRejection>,
) -> Result<Json<SearchJson>, ApiError> {
    let name = FileName::parse(&filename?.0)?;
    let (node_address, _) = app.files.locate(&name).await?;
    Ok(Json(SearchJson { node_address, filename: name.as_str().to_owned() }))
}

#[cfg(test)]
mod tests {
    use super::parse_node_address;

    #[test]
    fn node_addresses_are_host_and_port() {
        for good in ["127.0.0.1:7001", "node-2.local:80", "[::1]:9000"] {
            assert_eq!(parse_node_address(good).as_deref(), Ok(good));
        }
        for bad in ["", "127.0.0.1", ":80", "host:0", "host:99999", "a b:80", "h/x:80", "host:8o"] {
            assert!(parse_node_address(bad).is_err(), "{bad}");
        }
    }
}

/// `POST /upload`: the same as `POST /upload/`.
#[utoipa::path(post, path = "/upload", tag = "legacy", request_body(content = serde_json::Value, content_type = "multipart/form-data"), responses((status = 200, description = "as POST /upload/", body = serde_json::Value), (status = 400, description = "a bad form", body = Error)))]
pub async fn upload_without_slash(
    state: State<AppState>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<UploadJson>), ApiError> {
    upload(state, multipart).await
}

/// `GET|HEAD /download/{filename}`: the same as `GET /files/{name}`.
#[utoipa::path(get, path = "/download/{filename}", tag = "legacy", params(("filename" = String, Path)), responses((status = 200, description = "the file", body = Vec<u8>, content_type = "application/octet-stream"), (status = 404, description = "no such file", body = Error)))]
pub async fn download(
    state: State<AppState>,
    name: Result<axum::extract::Path<String>, PathRejection>,
    method: axum::http::Method,
    headers: axum::http::HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    super::files::download(state, name, method, headers).await
}
