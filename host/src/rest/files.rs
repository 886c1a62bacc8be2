//! `GET /files`, `PUT /files/{name}`, `GET|HEAD /files/{name}`.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use super::range::{self, Selection};
use super::{ApiError, AppState};
use crate::plugins::FileEntry;
use crate::store::FileName;

/// A file as the API shows it.
#[derive(Debug, Serialize)]
pub struct EntryJson {
    name: String,
    size: u64,
    sha256: String,
    modified_ns: u64,
}

impl From<FileEntry> for EntryJson {
    fn from(e: FileEntry) -> Self {
        Self { name: e.name, size: e.size, sha256: e.sha256, modified_ns: e.modified_ns }
    }
}

/// `GET /files`: the node's files, by name.
pub async fn list(State(app): State<AppState>) -> Result<Json<Vec<EntryJson>>, ApiError> {
    let mut entries: Vec<EntryJson> = app.plugins.list().await?.into_iter().map(EntryJson::from).collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(entries))
}

#[derive(Deserialize)]
pub struct UploadQuery {
    #[serde(default)]
    overwrite: bool,
}

/// `PUT /files/{name}[?overwrite=true]`: streams the body into the store.
pub async fn upload(
    State(app): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<UploadQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let name = FileName::parse(&name.map_err(bad_path)?.0)?;
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad-query", e.body_text()))?;
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > app.max_upload_bytes) {
        return Err(ApiError::too_large(app.max_upload_bytes));
    }
    let entry = store_stream(&app, &name, query.overwrite, body.into_data_stream()).await?;
    let location = format!("/files/{}", percent_encode(name.as_str()));
    let mut response = (StatusCode::CREATED, Json(EntryJson::from(entry))).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// Streams `body` through the upload plugin in chunks of the configured
/// size, refusing it past the node's limit. Whatever goes wrong, a partial
/// upload is abandoned and leaves nothing behind.
pub async fn store_stream<S, E>(
    app: &AppState,
    name: &FileName,
    overwrite: bool,
    body: S,
) -> Result<FileEntry, ApiError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let mut upload = app.plugins.upload(name, overwrite).await?;
    let mut body = std::pin::pin!(body);
    let mut pending = BytesMut::new();
    let mut total: u64 = 0;
    while let Some(next) = body.next().await {
        let data = match next {
            Ok(data) => data,
            Err(e) => {
                upload.abort().await;
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "body-failed",
                    format!("reading the upload failed: {e}"),
                ));
            }
        };
        total += data.len() as u64;
        if total > app.max_upload_bytes {
            upload.abort().await;
            return Err(ApiError::too_large(app.max_upload_bytes));
        }
        pending.extend_from_slice(&data);
        if pending.len() >= app.chunk_bytes {
            upload.write(pending.split().freeze()).await?;
        }
    }
    if !pending.is_empty() {
        upload.write(pending.freeze()).await?;
    }
    Ok(upload.finish().await?)
}

/// `GET|HEAD /files/{name}` (and the legacy `/download/{filename}`): streams
/// the file, honouring `Range`, `If-None-Match` and `If-Range`.
pub async fn download(
    State(app): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = FileName::parse(&name.map_err(bad_path)?.0)?;
    let handle = app.plugins.download(&name).await?;
    let entry = handle.entry();
    let size = entry.size;
    let etag = format!("\"{}\"", entry.sha256);
    let header_text = |h| headers.get(h).and_then(|v: &HeaderValue| v.to_str().ok());

    let mut response = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, "no-cache");
    if header_text(header::IF_NONE_MATCH).is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*")) {
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
        Some(span) if method != Method::HEAD => Body::from_stream(handle.stream(span)),
        _ => Body::empty(),
    };
    Ok(response.body(body).expect("valid response"))
}

fn bad_path(e: PathRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid-name", e.body_text())
}

/// Percent-encodes everything but unreserved characters, for `Location`.
fn percent_encode(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
