//! Node-to-node RPC: the gRPC contracts of `proto/` (tonic), the server side
//! answering other nodes and the client side used as the ring's transport.
//!
//! - `pb`: code generated from `proto/ringshare/chord/v1/chord.proto`;
//! - `server`: the `Chord` service over a [`ChordNode`](crate::chord::ChordNode);
//! - `client`: [`GrpcTransport`], the ring's transport between processes;
//! - `channels`: one HTTP/2 channel per peer, shared by both services;
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
mod server;
mod status;

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

pub use channels::Channels;
pub use client::GrpcTransport;
pub use files_client::GrpcPeers;
pub use files_server::files_routes;
pub use server::chord_routes;
