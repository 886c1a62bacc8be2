//! API errors: JSON `{"error": "...", "code": "..."}` with the right status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::files::FileError;
use crate::plugins::{PluginError, Refusal};
use crate::store::NameError;

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

impl From<FileError> for ApiError {
    fn from(e: FileError) -> Self {
        match e {
            FileError::Plugin(e) => e.into(),
            FileError::Ring(e) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "ring-unavailable", e.to_string()),
            FileError::TooLarge(limit) => Self::too_large(limit),
            FileError::Body(m) => Self::new(StatusCode::BAD_REQUEST, "body-failed", m),
            FileError::NotFound(name) => Self::new(StatusCode::NOT_FOUND, "not-found", format!("no node holds {name}")),
            FileError::NoHolder(_) | FileError::NoQuorum { .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "holders-unavailable", e.to_string())
            }
            FileError::Mismatch(_) => Self::new(StatusCode::BAD_GATEWAY, "checksum-mismatch", e.to_string()),
            FileError::Deleted { .. } => Self::new(StatusCode::CONFLICT, "deleted", e.to_string()),
            FileError::Superseded { .. } => Self::new(StatusCode::CONFLICT, "superseded", e.to_string()),
            FileError::Store(_) => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "store-failed", e.to_string()),
            FileError::Peer { code, ref message, .. } => {
                let (status, code) = match code {
                    tonic::Code::NotFound => (StatusCode::NOT_FOUND, "not-found"),
                    tonic::Code::AlreadyExists => (StatusCode::CONFLICT, "already-exists"),
                    tonic::Code::InvalidArgument => (StatusCode::BAD_REQUEST, "invalid-name"),
                    tonic::Code::ResourceExhausted => (StatusCode::PAYLOAD_TOO_LARGE, "too-large"),
                    tonic::Code::OutOfRange => (StatusCode::RANGE_NOT_SATISFIABLE, "out-of-range"),
                    tonic::Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "peer-unavailable"),
                    tonic::Code::FailedPrecondition => (StatusCode::CONFLICT, "stale-copy"),
                    _ => (StatusCode::BAD_GATEWAY, "peer-failed"),
                };
                let _ = message;
                Self::new(status, code, e.to_string())
            }
        }
    }
}

impl From<PluginError> for ApiError {
    fn from(e: PluginError) -> Self {
        let (status, code) = match &e {
            PluginError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "plugin-unavailable"),
            PluginError::Refused { refusal, .. } => match refusal {
                Refusal::NotFound => (StatusCode::NOT_FOUND, "not-found"),
                Refusal::InvalidName => (StatusCode::BAD_REQUEST, "invalid-name"),
                Refusal::AlreadyExists => (StatusCode::CONFLICT, "already-exists"),
                Refusal::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too-large"),
                Refusal::OutOfRange => (StatusCode::RANGE_NOT_SATISFIABLE, "out-of-range"),
                Refusal::Io => (StatusCode::INTERNAL_SERVER_ERROR, "io"),
                Refusal::Other => (StatusCode::INTERNAL_SERVER_ERROR, "plugin-error"),
            },
            PluginError::Timeout { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "plugin-timeout"),
            PluginError::OutOfMemory { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "plugin-out-of-memory"),
            PluginError::Trapped { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "plugin-failed"),
            PluginError::Cancelled => (StatusCode::BAD_REQUEST, "cancelled"),
            PluginError::Corrupt(_) => (StatusCode::BAD_GATEWAY, "checksum-mismatch"),
        };
        let message = match &e {
            PluginError::Refused { plugin, .. } => format!("{e} (plugin {plugin})"),
            _ => e.to_string(),
        };
        Self::new(status, code, message)
    }
}
