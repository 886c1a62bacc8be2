//! Node-to-node RPC: the gRPC contracts of `proto/` (tonic), the server side
//! answering other nodes and the client side used as the ring's transport.
//!
//! - `pb`: code generated from `proto/ringshare/chord/v1/chord.proto`;
//! - `server`: the `Chord` service over a [`ChordNode`](crate::chord::ChordNode);
//! - `client`: [`GrpcTransport`], the ring's transport between processes;
//! - `files_server`: the `Files` service (store, fetch, list) over this
//!   node's plugins.

mod client;
mod convert;
mod files_server;
mod server;

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

pub use client::GrpcTransport;
pub use files_server::files_routes;
pub use server::chord_routes;
