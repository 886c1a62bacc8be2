//! Node-to-node RPC: the gRPC contracts of `proto/` (tonic), the server side
//! answering other nodes and the client side used as the ring's transport.
//!
//! - `pb`: code generated from `proto/ringshare/chord/v1/chord.proto`;
//! - `server`: the `Chord` service over a [`ChordNode`](crate::chord::ChordNode);
//! - `client`: [`GrpcTransport`], the ring's transport between processes.

mod client;
mod convert;
mod server;

/// Generated protobuf and gRPC code.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("ringshare.chord.v1");
}

pub use client::GrpcTransport;
pub use server::chord_routes;
