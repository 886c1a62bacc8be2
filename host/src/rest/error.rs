//! API errors: JSON `{"error": "...", "code": "..."}` with the right status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::files::{ErrorKind, FileError};
use crate::plugins::PluginError;
use crate::store::NameError;

/// An error answer as the API document shows it: `{"error": "...", "code": "..."}`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Error {
    /// What went wrong, in words.
    error: String,
    /// A stable machine-readable code (`not-found`, `plugin-timeout`, ...).
    code: String,
}

/// An error answer of the REST API.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    code: &'a str,
}

impl ApiError {
    /// An error with an explicit status and machine-readable code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// `413`: the body is over the node's limit.
    pub fn too_large(limit: u64) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", format!("upload exceeds the limit of {limit} bytes"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body { error: &self.message, code: self.code };
        (self.status, Json(body)).into_response()
    }
}

/// A path segment axum could not decode is refused like a bad name.
impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(e: axum::extract::rejection::PathRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid-name", e.body_text())
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid-name", e.to_string())
    }
}

/// The HTTP status of each kind of failure: the one place they are mapped.
fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::InvalidName | ErrorKind::BodyFailed | ErrorKind::Cancelled => StatusCode::BAD_REQUEST,
        ErrorKind::AlreadyExists | ErrorKind::Deleted | ErrorKind::Superseded => StatusCode::CONFLICT,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
        ErrorKind::ClockOffset => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::OutOfRange => StatusCode::RANGE_NOT_SATISFIABLE,
        ErrorKind::RingUnavailable
        | ErrorKind::HoldersUnavailable
        | ErrorKind::PeerUnavailable
        | ErrorKind::PluginUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::PeerFailed | ErrorKind::ChecksumMismatch => StatusCode::BAD_GATEWAY,
        ErrorKind::PluginTimeout
        | ErrorKind::PluginOutOfMemory
        | ErrorKind::PluginFailed
        | ErrorKind::PluginError
        | ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<FileError> for ApiError {
    fn from(e: FileError) -> Self {
        let kind = e.kind();
        let message = match &e {
            FileError::Plugin(PluginError::Refused { plugin, .. }) => format!("{e} (plugin {plugin})"),
            _ => e.to_string(),
        };
        Self::new(status_of(kind), kind.name(), message)
    }
}

impl From<PluginError> for ApiError {
    fn from(e: PluginError) -> Self {
        FileError::Plugin(e).into()
    }
}
