//! File errors on the wire, in one place: a [`FileError`] becomes a gRPC
//! status whose code fits its kind and whose metadata names the kind, and a
//! status from a peer becomes a [`FileError::Remote`] of that kind, so a
//! failure gets the same REST answer whichever node was asked.

use tonic::{Code, Status};

use crate::files::{ErrorKind, FileError};

/// The metadata key carrying the kind.
const KIND: &str = "ringshare-error-kind";

/// The status `e` travels as.
pub fn to_status(e: &FileError) -> Status {
    let kind = e.kind();
    let code = match kind {
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::InvalidName | ErrorKind::BodyFailed => Code::InvalidArgument,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::TooLarge | ErrorKind::InsufficientStorage => Code::ResourceExhausted,
        ErrorKind::OutOfRange => Code::OutOfRange,
        ErrorKind::Deleted | ErrorKind::Superseded | ErrorKind::ClockOffset => Code::FailedPrecondition,
        ErrorKind::RingUnavailable
        | ErrorKind::HoldersUnavailable
        | ErrorKind::PeerUnavailable
        | ErrorKind::PluginUnavailable => Code::Unavailable,
        ErrorKind::ChecksumMismatch => Code::DataLoss,
        ErrorKind::Cancelled => Code::Cancelled,
        ErrorKind::PeerFailed
        | ErrorKind::PluginTimeout
        | ErrorKind::PluginOutOfMemory
        | ErrorKind::PluginFailed
        | ErrorKind::PluginError
        | ErrorKind::Internal => Code::Internal,
    };
    let mut status = Status::new(code, e.to_string());
    status.metadata_mut().insert(KIND, kind.name().parse().expect("kind names are ASCII"));
    status
}

/// A peer's status as this node reports it. A status without a kind (the
/// call never reached the peer's file service) is told by its code.
pub fn from_status(node: &str, status: &Status) -> FileError {
    let named = status.metadata().get(KIND).and_then(|v| v.to_str().ok()).and_then(ErrorKind::from_name);
    let kind = named.unwrap_or(match status.code() {
        Code::NotFound => ErrorKind::NotFound,
        Code::InvalidArgument => ErrorKind::InvalidName,
        Code::AlreadyExists => ErrorKind::AlreadyExists,
        Code::ResourceExhausted => ErrorKind::TooLarge,
        Code::OutOfRange => ErrorKind::OutOfRange,
        Code::DataLoss => ErrorKind::ChecksumMismatch,
        Code::Cancelled => ErrorKind::Cancelled,
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Aborted => ErrorKind::PeerUnavailable,
        _ => ErrorKind::PeerFailed,
    });
    FileError::remote(node, kind, status.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_survives_the_wire() {
        for kind in ErrorKind::ALL {
            let sent = FileError::remote("a:1", kind, "why");
            let received = from_status("b:2", &to_status(&sent));
            assert_eq!(received.kind(), kind);
        }
        let plugin = FileError::Plugin(crate::plugins::PluginError::Timeout {
            plugin: "slow.wasm".into(),
            limit: std::time::Duration::from_secs(1),
        });
        assert_eq!(from_status("b:2", &to_status(&plugin)).kind(), ErrorKind::PluginTimeout);
        assert_eq!(from_status("b:2", &Status::unavailable("connection refused")).kind(), ErrorKind::PeerUnavailable);
    }
}
