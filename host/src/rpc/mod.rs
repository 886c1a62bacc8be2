//! Node-to-node RPC: the gRPC contracts of `proto/` (tonic), the server side
//! answering other nodes and the client side used as the ring's transport.
//!
//! - `pb`: code generated from `proto/ringshare/chord/v1/chord.proto`;
//! - `server`: the `Chord` service over a [`ChordNode`](crate::chord::ChordNode);
//! - `client`: [`GrpcTransport`], the ring's transport between processes;
//! - `channels`: one HTTP/2 channel per peer, shared by both services;
//! - `health`: the failure detector every call to a peer consults;
//! - `files_server`: the `Files` service (store, fetch, list) over this
//!   node's file service;
//! - `files_client`: [`GrpcPeers`], the file service's view of other nodes;
//! - `status`: file errors on the wire, with their typed kind;
//! - `convert`: every conversion between the host's types and protobuf.

mod channels;
mod client;
mod convert;
mod files_client;
mod files_server;
pub mod health;
mod server;
mod status;
#[cfg(test)]
mod tests;

/// Generated protobuf and gRPC code of the ring.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("ringshare.chord.v1");
}

/// Generated protobuf and gRPC code of file transfer.
#[allow(missing_docs, clippy::all)]
pub mod files_pb {
    tonic::include_proto!("ringshare.files.v1");
}

/// The largest ring message either side sends or takes: a successor list
/// of addresses is a few KiB.
const CHORD_MESSAGE_MAX: usize = 64 << 10;
/// The most file bytes in one message: a node's chunk size is capped to it.
pub const CHUNK_MAX: usize = 4 << 20;
/// The largest file-transfer message either side sends or takes: a chunk,
/// with room for its framing. Outboards and listings travel in pieces
/// well under it.
const FILES_MESSAGE_MAX: usize = CHUNK_MAX + (64 << 10);
/// Outboard bytes in one `Fetch` message (whole 32-byte values).
const OUTBOARD_PIECE: usize = 1 << 20;
/// Entries, and tombstones, in one `List` message: 1,024 names of the
/// longest kind are about 330 KiB.
const LIST_BATCH: usize = 1024;
// An outboard piece holds whole 32-byte values; a piece or a chunk fits a
// message with its framing.
const _: () = assert!(OUTBOARD_PIECE.is_multiple_of(32) && OUTBOARD_PIECE < FILES_MESSAGE_MAX - 64);

/// `bytes` in pieces of at most `max` bytes (views of it, no copy).
fn pieces(bytes: bytes::Bytes, max: usize) -> impl Iterator<Item = bytes::Bytes> {
    (0..bytes.len()).step_by(max.max(1)).map(move |at| bytes.slice(at..bytes.len().min(at + max)))
}

pub use channels::Channels;
pub use client::GrpcTransport;
pub use files_client::GrpcPeers;
pub use files_server::files_routes;
pub use server::chord_routes;
