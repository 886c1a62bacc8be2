//! `GET /openapi.json`: the REST API as an OpenAPI 3 document, generated
//! (utoipa) from the annotations on the route handlers, errors included.

use std::sync::LazyLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;

use super::error::Error;
use super::files;

/// The document's frame; its paths come from the routes ([`super::routes`]),
/// plus the HTTP plugins' mount, which is not an ordinary route.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "ringshare node",
        description = "One node of a ringshare network: files stored on a Chord ring through WebAssembly plugins."
    ),
    paths(super::http_plugin),
    components(schemas(Error, files::EntryJson))
)]
pub(super) struct ApiDoc;

/// The document, written once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    let (_, document) = super::routes().split_for_parts();
    document.to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
});

#[utoipa::path(get, path = "/openapi.json", tag = "node", responses((status = 200, description = "this document", content_type = "application/json")))]
pub async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], DOCUMENT.as_str()).into_response()
}
