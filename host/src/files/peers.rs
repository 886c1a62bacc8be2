//! Other nodes' stores, through their `Files` gRPC service: one lazily
//! connected channel per node (HTTP/2 flow control bounds what is in flight).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use super::FileError;
use super::known::Known;
use super::service::Deleted;
use crate::integrity::{BLOCK, Digest, Outboard, Verifier, trim};
use crate::plugins::FileEntry;
use crate::rpc::files_pb::{self as pb, files_client::FilesClient};
use crate::store::FileName;

/// Bytes a node may have in flight to this one per transfer.
const STREAM_WINDOW: u32 = 4 << 20;
/// Bytes a node may have in flight to this one over all transfers.
const CONNECTION_WINDOW: u32 = 16 << 20;

/// Largest HTTP/2 frame accepted from another node.
const MAX_FRAME: u32 = 1 << 20;

/// Chunks queued for one copy streamed with an upload.
const COPY_CHUNKS: usize = 4;

/// A copy of an upload being streamed to another node as the upload
/// arrives. Dropped without [`CopyStream::commit`], the copy ends without
/// its hash and the node discards it.
pub struct CopyStream {
    node: String,
    tx: Option<mpsc::Sender<pb::StoreRequest>>,
    reply: tokio::task::JoinHandle<Result<pb::StoreReply, FileError>>,
    stall: Duration,
}

impl CopyStream {
    /// Sends the next chunk; a node that is gone, or that takes nothing for
    /// longer than the stall limit, is dropped (its answer says why).
    pub async fn send(&mut self, chunk: Bytes) {
        let Some(tx) = &self.tx else { return };
        let message = pb::StoreRequest { part: Some(pb::store_request::Part::Chunk(chunk)) };
        match tokio::time::timeout(self.stall, tx.send(message)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => self.tx = None,
            Err(_) => {
                tracing::warn!(node = %self.node, "a copy stalled; dropping it");
                self.tx = None;
                self.reply.abort();
            }
        }
    }

    /// Ends the content with its hash and waits for the node to have the
    /// copy durable; answers the node's address.
    pub async fn commit(mut self, blake3: Digest) -> Result<String, FileError> {
        if let Some(tx) = self.tx.take() {
            let commit = pb::StoreCommit { blake3: Bytes::copy_from_slice(&blake3.0) };
            let _ = tx.send(pb::StoreRequest { part: Some(pb::store_request::Part::Commit(commit)) }).await;
        }
        match (&mut self.reply).await {
            Ok(Ok(_)) => Ok(self.node),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(FileError::Peer {
                node: self.node.clone(),
                code: tonic::Code::Unavailable,
                message: "the copy was dropped".into(),
            }),
        }
    }
}

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

/// An entry from the wire, checked: a peer is not trusted with what ends
/// up in paths, headers and lengths.
pub fn entry_from_pb(e: pb::Entry) -> Result<FileEntry, String> {
    FileName::parse(&e.name).map_err(|why| format!("entry name {:?}: {why}", e.name))?;
    let blake3 = match e.blake3.len() {
        0 => None,
        32 => Some(Digest(e.blake3[..].try_into().expect("32 bytes"))),
        n => return Err(format!("entry {:?} has a hash of {n} bytes", e.name)),
    };
    Ok(FileEntry { name: e.name, size: e.size, blake3, modified_ns: e.modified_ns })
}

/// An entry for the wire.
pub fn entry_to_pb(e: &FileEntry) -> pb::Entry {
    let blake3 = e.blake3.map_or_else(Bytes::new, |d| Bytes::copy_from_slice(&d.0));
    pb::Entry { name: e.name.clone(), size: e.size, blake3, modified_ns: e.modified_ns }
}

fn malformed(node: &str, message: impl Into<String>) -> FileError {
    FileError::Peer { node: node.to_owned(), code: tonic::Code::Internal, message: message.into() }
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

    /// Opens `name` on `node` for the bytes `offset..end`: its entry, and
    /// the stream of exactly those bytes, every block checked against the
    /// outboard the node sent, itself checked against the entry's hash. A
    /// block that does not match ends the stream with
    /// [`FileError::Mismatch`].
    pub async fn fetch(
        &self,
        node: &str,
        name: &str,
        offset: u64,
        end: u64,
    ) -> Result<(FileEntry, impl Stream<Item = Result<Bytes, FileError>> + Send + 'static), FileError> {
        let mut client = self.client(node)?;
        let request = pb::FetchRequest { name: name.to_owned(), offset, length: end.saturating_sub(offset) };
        let mut stream = client.fetch(request).await.map_err(peer_error(node))?.into_inner();
        let entry = match stream.message().await.map_err(peer_error(node))?.and_then(|m| m.part) {
            Some(pb::fetch_reply::Part::Entry(e)) => entry_from_pb(e).map_err(|why| malformed(node, why))?,
            _ => return Err(malformed(node, "fetch did not start with the entry")),
        };
        let root = entry.blake3.ok_or_else(|| malformed(node, format!("{name} has no hash")))?;
        let outboard_bytes = if crate::integrity::outboard_len(entry.size) == 0 {
            Bytes::new()
        } else {
            match stream.message().await.map_err(peer_error(node))?.and_then(|m| m.part) {
                Some(pb::fetch_reply::Part::Outboard(bytes)) => bytes,
                _ => return Err(malformed(node, "fetch sent no outboard")),
            }
        };
        let outboard = Outboard::verified(root, entry.size, &outboard_bytes)
            .map_err(|e| FileError::Mismatch(format!("{name} from {node}: {e}")))?;
        let end = end.min(entry.size);
        let first = offset / BLOCK;
        let mut verifier = Verifier::new(Arc::new(outboard), first);
        let (node, name) = (node.to_owned(), name.to_owned());
        let chunks = stream.map(move |m| {
            let bytes = match m {
                Ok(pb::FetchReply { part: Some(pb::fetch_reply::Part::Chunk(bytes)) }) => bytes,
                Ok(_) => return Err(malformed(&node, "unexpected message in fetch")),
                Err(s) => return Err(peer_error(&node)(s)),
            };
            let at = verifier.checked();
            let checked =
                verifier.push(bytes).map_err(|e| FileError::Mismatch(format!("{name} from {node}: {e}")))?;
            Ok(trim(checked, at, offset, end))
        });
        Ok((entry, chunks.map_ok(|pieces| futures_util::stream::iter(pieces.into_iter().map(Ok))).try_flatten()))
    }

    /// Starts streaming a copy to `node`: the header now, chunks as they
    /// come ([`CopyStream::send`]), the hash last ([`CopyStream::commit`]).
    pub fn open_copy(&self, node: &str, header: pb::StoreHeader) -> CopyStream {
        let (tx, rx) = mpsc::channel::<pb::StoreRequest>(COPY_CHUNKS);
        let _ = tx.try_send(pb::StoreRequest { part: Some(pb::store_request::Part::Header(header)) });
        let outgoing = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
        let client = self.client(node);
        let addr = node.to_owned();
        let reply = tokio::spawn(async move {
            let reply = client?.store(outgoing).await.map_err(peer_error(&addr))?.into_inner();
            Ok(reply)
        });
        CopyStream { node: node.to_owned(), tx: Some(tx), reply, stall: self.connect_timeout * 5 }
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
        let entry = reply.entry.map(entry_from_pb).transpose().map_err(|why| malformed(node, why))?;
        Ok(Known::from_parts(entry, reply.deleted_ns))
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
        let entries = reply
            .entries
            .into_iter()
            .filter_map(|e| entry_from_pb(e).inspect_err(|why| tracing::warn!(node, "left out: {why}")).ok())
            .collect();
        Ok((entries, reply.deleted.into_iter().collect()))
    }
}

