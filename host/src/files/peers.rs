//! Other nodes' stores, through their `Files` gRPC service: one lazily
//! connected channel per node (HTTP/2 flow control bounds what is in flight).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use super::FileError;
use super::known::Known;
use super::service::Deleted;
use crate::plugins::FileEntry;
use crate::rpc::files_pb::{self as pb, files_client::FilesClient};

/// Bytes a node may have in flight to this one per transfer.
const STREAM_WINDOW: u32 = 4 << 20;
/// Bytes a node may have in flight to this one over all transfers.
const CONNECTION_WINDOW: u32 = 16 << 20;

/// Largest HTTP/2 frame accepted from another node.
const MAX_FRAME: u32 = 1 << 20;

/// Clients of other nodes' `Files` service.
#[derive(Clone)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    connect_timeout: Duration,
    call_timeout: Duration,
    chunk_bytes: usize,
}

fn peer_error(node: &str) -> impl Fn(tonic::Status) -> FileError + '_ {
    move |s| FileError::Peer { node: node.to_owned(), code: s.code(), message: s.message().to_owned() }
}

/// An entry from the wire.
pub fn entry_from_pb(e: pb::Entry) -> FileEntry {
    FileEntry { name: e.name, size: e.size, sha256: e.sha256, modified_ns: e.modified_ns }
}

/// An entry for the wire.
pub fn entry_to_pb(e: &FileEntry) -> pb::Entry {
    pb::Entry { name: e.name.clone(), size: e.size, sha256: e.sha256.clone(), modified_ns: e.modified_ns }
}

impl Peers {
    /// Clients that give up connecting after `connect_timeout`, give small
    /// calls (stat, list) `call_timeout` to answer, and send chunks of about
    /// `chunk_bytes`.
    pub fn new(connect_timeout: Duration, call_timeout: Duration, chunk_bytes: usize) -> Self {
        Self { channels: Arc::default(), connect_timeout, call_timeout, chunk_bytes }
    }

    fn client(&self, addr: &str) -> Result<FilesClient<Channel>, FileError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(addr) {
            return Ok(FilesClient::new(channel.clone()));
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| FileError::Peer {
                node: addr.to_owned(),
                code: tonic::Code::InvalidArgument,
                message: e.to_string(),
            })?
            .connect_timeout(self.connect_timeout)
            // HTTP/2's default 64 KiB window stalls a fetch every few chunks;
            // these bound what is in flight per transfer and per node.
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            // A chunk per frame rather than sixteen 16 KiB frames.
            .max_frame_size(MAX_FRAME)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(self.connect_timeout);
        let channel = endpoint.connect_lazy();
        channels.insert(addr.to_owned(), channel.clone());
        Ok(FilesClient::new(channel))
    }

    /// Streams `body` to `node`'s Store. Stops (and the node discards what it
    /// got) if the body fails or passes `limit` bytes.
    pub async fn store<S, E>(
        &self,
        node: &str,
        header: pb::StoreHeader,
        body: S,
        limit: u64,
    ) -> Result<pb::StoreReply, FileError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let mut client = self.client(node)?;
        let (tx, rx) = mpsc::channel::<pb::StoreRequest>(4);
        tx.send(pb::StoreRequest { part: Some(pb::store_request::Part::Header(header)) })
            .await
            .map_err(|_| FileError::Body("store stream closed".into()))?;
        let outgoing = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
        let chunk_bytes = self.chunk_bytes;
        let pump = async move {
            let mut body = std::pin::pin!(body);
            let mut total = 0u64;
            let mut pending = bytes::BytesMut::new();
            while let Some(next) = body.next().await {
                let data = next.map_err(|e| FileError::Body(e.to_string()))?;
                total += data.len() as u64;
                if total > limit {
                    return Err(FileError::TooLarge(limit));
                }
                pending.extend_from_slice(&data);
                if pending.len() >= chunk_bytes {
                    let chunk =
                        pb::StoreRequest { part: Some(pb::store_request::Part::Chunk(pending.split().freeze())) };
                    // The node hung up: its answer says why.
                    if tx.send(chunk).await.is_err() {
                        return Ok(());
                    }
                }
            }
            if !pending.is_empty() {
                let _ =
                    tx.send(pb::StoreRequest { part: Some(pb::store_request::Part::Chunk(pending.freeze())) }).await;
            }
            Ok(())
        };
        let call = async { client.store(outgoing).await.map(|r| r.into_inner()).map_err(peer_error(node)) };
        // If the body fails, the call is dropped mid-stream: the node sees a
        // reset, not an end, and discards the partial file.
        let ((), reply) = tokio::try_join!(pump, call)?;
        Ok(reply)
    }

    /// Opens `name` on `node` from `offset` (`length` 0: to the end): its
    /// entry, and the stream of its bytes.
    pub async fn fetch(
        &self,
        node: &str,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<(FileEntry, impl Stream<Item = Result<Bytes, FileError>> + Send + 'static), FileError> {
        let mut client = self.client(node)?;
        let request = pb::FetchRequest { name: name.to_owned(), offset, length };
        let mut stream = client.fetch(request).await.map_err(peer_error(node))?.into_inner();
        let first = stream.message().await.map_err(peer_error(node))?;
        let entry = match first.and_then(|m| m.part) {
            Some(pb::fetch_reply::Part::Entry(e)) => entry_from_pb(e),
            _ => {
                return Err(FileError::Peer {
                    node: node.to_owned(),
                    code: tonic::Code::Internal,
                    message: "fetch did not start with the entry".into(),
                });
            }
        };
        let node = node.to_owned();
        let chunks = stream.map(move |m| match m {
            Ok(pb::FetchReply { part: Some(pb::fetch_reply::Part::Chunk(bytes)) }) => Ok(bytes),
            Ok(_) => Err(FileError::Peer {
                node: node.clone(),
                code: tonic::Code::Internal,
                message: "unexpected message in fetch".into(),
            }),
            Err(s) => Err(peer_error(&node)(s)),
        });
        Ok((entry, chunks))
    }

    /// A request that gives up after the call timeout.
    fn timed<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.call_timeout);
        request
    }

    /// What `node` knows of `name`: its version and its tombstone.
    pub async fn stat(&self, node: &str, name: &str) -> Result<Known, FileError> {
        let request = self.timed(pb::StatRequest { name: name.to_owned() });
        let reply = self.client(node)?.stat(request).await.map_err(peer_error(node))?.into_inner();
        Ok(Known::from_parts(reply.entry.map(entry_from_pb), reply.deleted_ns))
    }

    /// Asks `node` to delete `name` as of `deleted_ns` (0: now) and pass the
    /// deletion to `replicas` successors.
    pub async fn delete(&self, node: &str, name: &str, deleted_ns: u64, replicas: u32) -> Result<Deleted, FileError> {
        let request = pb::DeleteRequest { name: name.to_owned(), deleted_ns, replicas };
        let reply = self.client(node)?.delete(request).await.map_err(peer_error(node))?.into_inner();
        Ok(Deleted {
            name: name.to_owned(),
            existed: reply.existed,
            deleted_ns: reply.deleted_ns,
            holders: reply.holders,
        })
    }

    /// `node`'s own files, and its tombstones (name, deleted at).
    pub async fn list(&self, node: &str) -> Result<(Vec<FileEntry>, Vec<(String, u64)>), FileError> {
        let reply = self.client(node)?.list(self.timed(pb::ListRequest {})).await.map_err(peer_error(node))?;
        let reply = reply.into_inner();
        Ok((reply.entries.into_iter().map(entry_from_pb).collect(), reply.deleted.into_iter().collect()))
    }
}
