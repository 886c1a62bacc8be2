//! `GET /files`, `PUT /files/{name}`, `GET|HEAD /files/{name}`,
//! `DELETE /files/{name}`, `GET /search?q=`.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::error::Error;
use super::range::{self, Selection};
use super::{ApiError, AppState};
use crate::files::{Deleted, NetworkEntry, Stored};
use crate::plugins::FileEntry;
use crate::store::FileName;

/// A file as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Entry)]
pub struct EntryJson {
    name: String,
    size: u64,
    /// BLAKE3 of the content (what `b3sum` prints); null for a file copied
    /// into the store by hand and not hashed yet.
    blake3: Option<String>,
    modified_ns: u64,
    /// For an upload: the nodes holding a durable copy when it was
    /// acknowledged, the responsible node first.
    #[serde(skip_serializing_if = "Option::is_none")]
    holders: Option<Vec<String>>,
    /// For an upload: the copies meant (k, fewer in a smaller ring).
    #[serde(skip_serializing_if = "Option::is_none")]
    copies_wanted: Option<usize>,
}

impl From<FileEntry> for EntryJson {
    fn from(e: FileEntry) -> Self {
        let blake3 = e.blake3.map(|d| d.to_hex());
        Self { name: e.name, size: e.size, blake3, modified_ns: e.modified_ns, holders: None, copies_wanted: None }
    }
}

impl From<Stored> for EntryJson {
    fn from(s: Stored) -> Self {
        Self { holders: Some(s.holders), copies_wanted: Some(s.copies_wanted), ..Self::from(s.entry) }
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    scope: Scope,
    /// With `scope=network`: ask every node now rather than the live index.
    #[serde(default)]
    walk: bool,
}

#[derive(Deserialize, Default, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Scope {
    #[default]
    Local,
    Network,
}

/// Names the nodes left out of a network listing (they did not answer),
/// comma-separated; absent when the listing is whole.
pub const MISSING_NODES: &str = "x-ringshare-missing-nodes";

/// `GET /files[?scope=local|network][&walk=true]`: this node's files, or
/// every node's merged by name with their holders (from the live index when
/// the node keeps one; `walk=true` asks every node instead, and says which
/// did not answer in [`MISSING_NODES`]).
#[utoipa::path(get, path = "/files", tag = "files", params(("scope" = Option<String>, Query, description = "`local` (default) or `network`"), ("walk" = Option<bool>, Query, description = "with scope=network: ask every node now")), responses((status = 200, description = "the files, each with its holders for scope=network", body = [EntryJson], headers(("x-ringshare-missing-nodes" = String, description = "scope=network: the nodes left out because they did not answer, comma-separated; absent when none"))), (status = 400, description = "a bad name or query", body = Error), (status = 503, description = "no plugin, no ring or no holder answering; or found on no node that answers while a member that would hold it does not", body = Error), (status = 500, description = "a plugin failed (timeout, memory cap, trap)", body = Error)))]
pub async fn list(
    State(app): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    if query.scope == Scope::Network {
        if !query.walk
            && let Some(generation) = app.files.index().generation()
        {
            let index = app.files.index();
            let json = app
                .network_json
                .get_or_render(generation, || serde_json::to_vec(&index.list()).expect("entries serialise"));
            return Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response());
        }
        let listing = if query.walk { app.files.walk_network().await } else { app.files.network_list().await };
        let mut response = Json(listing.entries).into_response();
        if !listing.missing.is_empty()
            && let Ok(missing) = HeaderValue::from_str(&listing.missing.join(", "))
        {
            response.headers_mut().insert(MISSING_NODES, missing);
        }
        return Ok(response);
    }
    let listing = app.files.list_here().await?;
    let render = || {
        let mut entries: Vec<EntryJson> = listing.entries.iter().cloned().map(EntryJson::from).collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        serde_json::to_vec(&entries).expect("entries serialise")
    };
    // Back from a long absence, copies are confirmed without a change of
    // the store's generation: no cached answer then.
    let json = match app.files.tombstones().away_from() {
        Some(_) => bytes::Bytes::from(render()),
        None => app.listing_json.get_or_render(listing.generation, render),
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}

#[derive(Deserialize)]
pub struct SearchQuery {
    q: String,
}

/// `GET /search?q=PREFIX`: files anywhere in the network whose name starts
/// with the prefix.
#[utoipa::path(get, path = "/search", tag = "files", params(("q" = String, Query, description = "the start of the names")), responses((status = 200, description = "files anywhere whose name starts with q", body = [EntryJson]), (status = 400, description = "a bad name or query", body = Error), (status = 503, description = "no plugin, no ring or no holder answering; or found on no node that answers while a member that would hold it does not", body = Error), (status = 500, description = "a plugin failed (timeout, memory cap, trap)", body = Error)))]
pub async fn search(
    State(app): State<AppState>,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Json<Vec<NetworkEntry>>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    if query.q.len() > crate::store::MAX_NAME_BYTES {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad-query", "the prefix is longer than any name"));
    }
    let found = app.files.search(&query.q).await;
    Ok(Json(found))
}

#[derive(Deserialize)]
pub struct UploadQuery {
    #[serde(default)]
    overwrite: bool,
}

/// `PUT /files/{name}[?overwrite=true]`: streams the body to the node
/// responsible for the name, which stores it and copies it to its
/// successors; answers once a write quorum holds it.
#[utoipa::path(put, path = "/files/{name}", tag = "files", params(("name" = String, Path, description = "one plain name"), ("overwrite" = Option<bool>, Query, description = "replace a file of that name")), request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "the file, streamed"), responses((status = 201, description = "stored: k copies durable", body = EntryJson), (status = 409, description = "exists (without overwrite)", body = Error), (status = 413, description = "over the node's upload limit", body = Error), (status = 507, description = "a holder's disk is full, or would be left with less than it keeps free; nothing is kept", body = Error), (status = 400, description = "a bad name or query", body = Error), (status = 503, description = "no plugin, no ring or no holder answering; or found on no node that answers while a member that would hold it does not", body = Error), (status = 500, description = "a plugin failed (timeout, memory cap, trap)", body = Error)))]
pub async fn upload(
    State(app): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<UploadQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let name = FileName::parse(&name?.0)?;
    let Query(query) = query.map_err(bad_query)?;
    let limit = app.files.max_upload_bytes();
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::too_large(limit));
    }
    let stored = app.files.put(&name, query.overwrite, body.into_data_stream()).await?;
    let location = format!("/files/{}", crate::store::url_segment(name.as_str()));
    let mut response = (StatusCode::CREATED, Json(EntryJson::from(stored))).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// `DELETE /files/{name}`: deletes the file on every holder, leaving
/// tombstones so that a holder that was away does not bring it back;
/// answers once a write quorum recorded the deletion. `404` when no holder
/// had it (the deletion is recorded all the same); `503` instead while a
/// member that would hold it does not answer (crashed, or beyond a split).
#[utoipa::path(delete, path = "/files/{name}", tag = "files", params(("name" = String, Path, description = "one plain name")), responses((status = 200, description = "deleted once a write quorum recorded it: {name, existed, deleted_ns, holders}", body = serde_json::Value), (status = 404, description = "no holder had it", body = Error), (status = 507, description = "the deletion cannot be recorded: the disk is full to the last byte", body = Error), (status = 400, description = "a bad name or query", body = Error), (status = 503, description = "no plugin, no ring or no holder answering; or found on no node that answers while a member that would hold it does not", body = Error), (status = 500, description = "a plugin failed (timeout, memory cap, trap)", body = Error)))]
pub async fn delete(
    State(app): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<Deleted>, ApiError> {
    let name = FileName::parse(&name?.0)?;
    let deleted = app.files.delete(&name).await?;
    if !deleted.existed {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not-found", format!("no holder had {name}")));
    }
    Ok(Json(deleted))
}

/// `GET|HEAD /files/{name}` (and the legacy `/download/{filename}`): streams
/// the file from a holder, honouring `Range`, `If-Match`, `If-None-Match`
/// and `If-Range`; `HEAD`, `304`, `412` and `416` are answered from what the
/// holders said, without opening the file.
#[utoipa::path(get, path = "/files/{name}", tag = "files", description = "Also HEAD. Honours Range, If-Match, If-None-Match (ETag = BLAKE3) and If-Range.", params(("name" = String, Path, description = "one plain name")), responses((status = 200, description = "the file, streamed and checked block by block", body = Vec<u8>, content_type = "application/octet-stream"), (status = 206, description = "the range asked"), (status = 304, description = "not modified"), (status = 412, description = "If-Match names another version", body = Error), (status = 404, description = "no such file", body = Error), (status = 416, description = "a range outside the file", body = Error), (status = 502, description = "a holder failed or sent damaged bytes", body = Error), (status = 400, description = "a bad name or query", body = Error), (status = 503, description = "no plugin, no ring or no holder answering; or found on no node that answers while a member that would hold it does not", body = Error), (status = 500, description = "a plugin failed (timeout, memory cap, trap)", body = Error)))]
pub async fn download(
    State(app): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = FileName::parse(&name?.0)?;
    let source = app.files.open(&name).await?;
    let entry = source.entry();
    let size = entry.size;
    // The hash is a checked digest: 64 hex digits, always a valid header.
    let etag = format!("\"{}\"", entry.blake3.map(|d| d.to_hex()).unwrap_or_default());
    let header_text = |h| headers.get(h).and_then(|v: &HeaderValue| v.to_str().ok());

    let mut response = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, "no-cache");
    // Preconditions in RFC 9110's order, each compared strongly with the
    // version found: If-Match, then If-None-Match, then If-Range.
    let names_it = |tags: &str| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*");
    if let Some(wanted) = header_text(header::IF_MATCH)
        && !names_it(wanted)
    {
        let mut error = ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition-failed",
            format!("{name} is at version {etag}, not one of If-Match's {wanted}"),
        )
        .into_response();
        error.headers_mut().insert(header::ETAG, HeaderValue::from_str(&etag).expect("ascii"));
        return Ok(error);
    }
    if header_text(header::IF_NONE_MATCH).is_some_and(names_it) {
        return Ok(response.status(StatusCode::NOT_MODIFIED).body(Body::empty()).expect("valid response"));
    }
    let range_header = match header_text(header::IF_RANGE) {
        Some(tag) if tag.trim() != etag => None,
        _ => header_text(header::RANGE),
    };
    let (status, span) = match range::select(range_header, size) {
        Selection::Full => (StatusCode::OK, (size > 0).then(|| 0..=size - 1)),
        Selection::Partial(r) => {
            response = response.header(header::CONTENT_RANGE, format!("bytes {}-{}/{size}", r.start(), r.end()));
            (StatusCode::PARTIAL_CONTENT, Some(r))
        }
        Selection::Unsatisfiable => {
            let mut error = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range-not-satisfiable",
                format!("the requested range is outside the file ({size} bytes)"),
            )
            .into_response();
            let value = HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii");
            error.headers_mut().insert(header::CONTENT_RANGE, value);
            return Ok(error);
        }
    };
    let length = span.as_ref().map_or(0, |r| r.end() - r.start() + 1);
    response = response
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, length);
    let body = match span {
        Some(span) if method != Method::HEAD => Body::from_stream(source.start(span).await?),
        _ => Body::empty(),
    };
    Ok(response.body(body).expect("valid response"))
}

fn bad_query(e: QueryRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad-query", e.body_text())
}
