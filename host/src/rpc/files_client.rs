//! [`GrpcPeers`]: the file service's view of other nodes ([`Peers`]) over
//! their `Files` gRPC service, on the channels the ring uses too.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, Stream, StreamExt, TryStreamExt};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::channels::Channels;
use super::convert::{entry_from_pb, range_to_pb};
use super::files_pb::{self as pb, files_client::FilesClient};
use super::health::Health;
use super::status::from_status;
use super::{CHUNK_MAX, FILES_MESSAGE_MAX, pieces};
use crate::chord::NodeRef;
use crate::files::{
    BodyStream, ByteStream, CopySink, Deleted, ErrorKind, Fetched, FileError, Fut, Gather, Known, LeaseAnswer,
    NodeListing, Peers, StoreAnswer, StoreOrder,
};
use crate::integrity::{BLOCK, Digest, Outboard, Verifier, outboard_len, trim};
use crate::store::FileName;
use crate::store::digest::{KeyRange, Sum};
use crate::trace::{Tagged, tagging};

/// Chunks queued for one copy streamed with an upload.
const COPY_CHUNKS: usize = 4;

/// Other nodes' file services, over gRPC.
#[derive(Clone)]
pub struct GrpcPeers {
    channels: Channels,
    call_timeout: Duration,
    chunk_bytes: usize,
}

fn malformed(node: &str, message: impl Into<String>) -> FileError {
    FileError::remote(node, ErrorKind::PeerFailed, message)
}

fn status_error(node: &str) -> impl Fn(tonic::Status) -> FileError + '_ {
    move |s| from_status(node, &s)
}

/// `node` is suspected by the failure detector: not waited for.
fn suspected(node: &str) -> FileError {
    FileError::remote(node, ErrorKind::PeerUnavailable, "suspected: it has not answered for a second")
}

/// `call` to `node`, given up with `PeerUnavailable` once the failure
/// detector suspects `node`: listening from now, not from the first poll.
fn unless_suspected<T, C: Future<Output = Result<T, FileError>>>(
    health: &Health,
    node: &str,
    call: C,
) -> impl Future<Output = Result<T, FileError>> + use<T, C> {
    let (lost, node) = (health.suspected(node), node.to_owned());
    async move {
        tokio::select! {
            result = call => result,
            () = lost => Err(suspected(&node)),
        }
    }
}

fn message(part: pb::store_request::Part) -> pb::StoreRequest {
    pb::StoreRequest { part: Some(part) }
}

impl GrpcPeers {
    /// Clients on `channels` that give small calls (stat, list)
    /// `call_timeout` to answer and send chunks of about `chunk_bytes`.
    pub fn new(channels: Channels, call_timeout: Duration, chunk_bytes: usize) -> Self {
        Self { channels, call_timeout, chunk_bytes: chunk_bytes.min(CHUNK_MAX) }
    }

    /// A client to `node` whose every call, streaming ones included, carries
    /// the trace id of the request being served.
    fn client(&self, node: &str) -> Result<FilesClient<Tagged>, FileError> {
        self.client_on(node, self.channels.get(node))
    }

    /// A client like [`GrpcPeers::client`] on the channel that file bytes
    /// take (stores, copies, fetches).
    fn bulk_client(&self, node: &str) -> Result<FilesClient<Tagged>, FileError> {
        self.client_on(node, self.channels.bulk(node))
    }

    fn client_on(&self, node: &str, channel: Result<Channel, String>) -> Result<FilesClient<Tagged>, FileError> {
        let channel = channel.map_err(|why| FileError::remote(node, ErrorKind::PeerUnavailable, why))?;
        Ok(FilesClient::new(tagging(channel))
            .max_decoding_message_size(FILES_MESSAGE_MAX)
            .max_encoding_message_size(FILES_MESSAGE_MAX))
    }

    /// A request that gives up after the call timeout.
    fn timed<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.call_timeout);
        request
    }

    /// The entries and tombstones of a `List` or `Entries` stream; entries
    /// that break the contract are left out with a warning.
    async fn listing(
        &self,
        node: &str,
        mut replies: tonic::Streaming<pb::ListReply>,
    ) -> Result<NodeListing, FileError> {
        let (mut entries, mut deleted) = (Vec::new(), Vec::new());
        while let Some(reply) = replies.message().await.map_err(status_error(node))? {
            let valid = |e| entry_from_pb(e).inspect_err(|why| tracing::warn!(node, "left out: {why}")).ok();
            entries.extend(reply.entries.into_iter().filter_map(valid));
            deleted.extend(reply.deleted);
        }
        Ok((entries, deleted))
    }

    /// Waits for `call`'s first answer at most the call timeout: tonic only
    /// tells the peer the deadline, and a peer the network cut off never
    /// answers (the connection's keep-alive would take seconds to notice).
    /// A peer the failure detector suspects is not waited for.
    async fn answered<R>(
        &self,
        node: &str,
        call: impl Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    ) -> Result<R, FileError> {
        let answer = async {
            match tokio::time::timeout(self.call_timeout, call).await {
                Ok(reply) => reply.map_err(status_error(node)),
                Err(_) => Err(FileError::remote(
                    node,
                    ErrorKind::PeerUnavailable,
                    format!("no answer within {} ms", self.call_timeout.as_millis()),
                )),
            }
        };
        let health = self.channels.health();
        let reply = unless_suspected(health, node, answer).await?.into_inner();
        health.heard(node);
        Ok(reply)
    }

    async fn store_body(
        &self,
        node: &str,
        order: StoreOrder,
        body: BodyStream,
        limit: u64,
    ) -> Result<StoreAnswer, FileError> {
        let mut client = self.bulk_client(node)?;
        let (new, replicas) = order.new.unwrap_or((false, 0));
        let (version_ns, blake3) =
            order.copy_of.map_or((0, Bytes::new()), |(at, d)| (at, Bytes::copy_from_slice(&d.0)));
        let header = pb::StoreHeader {
            name: order.name.as_str().to_owned(),
            overwrite: new || order.copy_of.is_some(),
            replicas: replicas as u32,
            version_ns,
            blake3,
            commit_follows: false,
        };
        let (tx, rx) = mpsc::channel::<pb::StoreRequest>(4);
        let _ = tx.try_send(message(pb::store_request::Part::Header(header)));
        let outgoing = tokio_stream::wrappers::ReceiverStream::new(rx);
        let chunk_bytes = self.chunk_bytes;
        let pump = async move {
            let mut body = Gather::new(body, chunk_bytes, limit);
            while let Some(batch) = body.next().await {
                for chunk in pieces(batch?.to_bytes(), CHUNK_MAX) {
                    // The node hung up: its answer says why.
                    if tx.send(message(pb::store_request::Part::Chunk(chunk))).await.is_err() {
                        return Ok(());
                    }
                }
            }
            Ok(())
        };
        let call = async { client.store(outgoing).await.map(|r| r.into_inner()).map_err(status_error(node)) };
        // If the body fails, the call is dropped mid-stream: the node sees a
        // reset, not an end, and discards the partial file.
        let ((), reply) =
            unless_suspected(self.channels.health(), node, async { tokio::try_join!(pump, call) }).await?;
        let entry = reply.entry.ok_or_else(|| malformed(node, "store reply without entry"))?;
        let entry = entry_from_pb(entry).map_err(|why| malformed(node, why))?;
        if entry.name != order.name.as_str() || entry.blake3.is_none() {
            return Err(malformed(node, format!("stored {} but answered {entry:?}", order.name)));
        }
        Ok(StoreAnswer { entry, holders: reply.holders, copies_wanted: reply.copies_wanted as usize })
    }

    async fn fetch_range(
        &self,
        node: &str,
        name: &FileName,
        range: Range<u64>,
        known: Option<Arc<Outboard>>,
    ) -> Result<Fetched, FileError> {
        let mut client = self.bulk_client(node)?;
        let request = pb::FetchRequest {
            name: name.as_str().to_owned(),
            offset: range.start,
            length: range.end.saturating_sub(range.start),
            without_outboard: known.is_some(),
        };
        let mut stream = self.answered(node, client.fetch(request)).await?;
        let first = tokio::time::timeout(self.call_timeout, stream.message()).await;
        let first = first.map_err(|_| FileError::remote(node, ErrorKind::PeerUnavailable, "no answer in time"))?;
        let entry = match first.map_err(status_error(node))?.and_then(|m| m.part) {
            Some(pb::fetch_reply::Part::Entry(e)) => entry_from_pb(e).map_err(|why| malformed(node, why))?,
            _ => return Err(malformed(node, "fetch did not start with the entry")),
        };
        if entry.name != name.as_str() {
            return Err(malformed(node, format!("asked for {name}, sent {}", entry.name)));
        }
        let root = entry.blake3.ok_or_else(|| malformed(node, format!("{name} has no hash")))?;
        let outboard = match known {
            Some(known) if known.root() == root && known.size() == entry.size => known,
            // Another version than the caller's: its entry says so, no bytes.
            Some(known) => return Ok(Fetched { entry, outboard: known, bytes: futures_util::stream::empty().boxed() }),
            None => {
                // The outboard, in as many pieces as it took.
                let mut outboard_bytes = BytesMut::new();
                while (outboard_bytes.len() as u64) < outboard_len(entry.size) {
                    match stream.message().await.map_err(status_error(node))?.and_then(|m| m.part) {
                        Some(pb::fetch_reply::Part::Outboard(bytes)) if !bytes.is_empty() => {
                            outboard_bytes.extend_from_slice(&bytes)
                        }
                        _ => return Err(malformed(node, "fetch sent less outboard than the file needs")),
                    }
                }
                let outboard = Outboard::verified(root, entry.size, &outboard_bytes)
                    .map_err(|e| FileError::Mismatch(format!("{name} from {node}: {e}")))?;
                Arc::new(outboard)
            }
        };
        let (offset, end) = (range.start, range.end.min(entry.size));
        let mut verifier = Verifier::new(outboard.clone(), offset / BLOCK);
        let (addr, name) = (node.to_owned(), name.clone());
        let mut started = false;
        // Bytes arriving are news of the node: a holder whose link is full
        // of this very stream answers its heartbeats late, and is not to be
        // suspected for it.
        let health = self.channels.health().clone();
        let chunks = stream.filter_map(move |m| {
            let checked = match m {
                Ok(pb::FetchReply { part: Some(pb::fetch_reply::Part::Chunk(bytes)) }) => {
                    health.heard(&addr);
                    started = true;
                    let at = verifier.checked();
                    match verifier.push(bytes) {
                        Ok(checked) => Ok(trim(checked, at, offset, end)),
                        Err(e) => Err(FileError::Mismatch(format!("{name} from {addr}: {e}"))),
                    }
                }
                // Sent by a node that predates `without_outboard`: not needed.
                Ok(pb::FetchReply { part: Some(pb::fetch_reply::Part::Outboard(_)) }) if !started => {
                    return std::future::ready(None);
                }
                Ok(_) => Err(malformed(&addr, "unexpected message in fetch")),
                Err(s) => Err(from_status(&addr, &s)),
            };
            std::future::ready(Some(checked))
        });
        let bytes = chunks.map_ok(|pieces| futures_util::stream::iter(pieces.into_iter().map(Ok))).try_flatten();
        let bytes = cut_when(bytes, self.channels.health().suspected(node), node.to_owned());
        Ok(Fetched { entry, outboard, bytes })
    }
}

/// `bytes`, ended by an error as soon as `lost` resolves (the failure
/// detector suspects `node`): a holder that went silent mid-stream is not
/// waited for, its reader moves on to another.
fn cut_when(
    bytes: impl Stream<Item = Result<Bytes, FileError>> + Send + 'static,
    lost: impl Future<Output = ()> + Send + 'static,
    node: String,
) -> ByteStream {
    let state = (bytes.boxed(), Some(Box::pin(lost)));
    futures_util::stream::unfold(state, move |(mut bytes, lost)| {
        let node = node.clone();
        async move {
            let mut lost = lost?;
            tokio::select! {
                item = bytes.next() => item.map(|item| (item, (bytes, Some(lost)))),
                () = &mut lost => Some((Err(suspected(&node)), (bytes, None))),
            }
        }
    })
    .boxed()
}

impl Peers for GrpcPeers {
    fn store(&self, node: &str, order: StoreOrder, body: BodyStream, limit: u64) -> Fut<'_, StoreAnswer> {
        let node = node.to_owned();
        async move { self.store_body(&node, order, body, limit).await }.boxed()
    }

    fn open_copy(&self, node: &str, name: &FileName, version_ns: u64) -> Box<dyn CopySink> {
        let header = pb::StoreHeader {
            name: name.as_str().to_owned(),
            overwrite: true,
            replicas: 0,
            version_ns,
            blake3: Bytes::new(),
            commit_follows: true,
        };
        let (tx, rx) = mpsc::channel::<pb::StoreRequest>(COPY_CHUNKS);
        let _ = tx.try_send(message(pb::store_request::Part::Header(header)));
        let outgoing = tokio_stream::wrappers::ReceiverStream::new(rx);
        let client = self.bulk_client(node);
        let addr = node.to_owned();
        // A holder suspected while the copy streams is given up on: the
        // stream's sender sees it closed, and a stand-in takes the copy.
        let reply = unless_suspected(self.channels.health(), node, async move {
            Ok(client?.store(outgoing).await.map_err(status_error(&addr))?.into_inner())
        });
        let reply = tokio::spawn(crate::trace::carried(reply));
        let stall = self.channels.connect_timeout() * 5;
        Box::new(GrpcCopy { node: node.to_owned(), tx: Some(tx), reply, stall })
    }

    fn fetch(&self, node: &str, name: &FileName, range: Range<u64>, known: Option<Arc<Outboard>>) -> Fut<'_, Fetched> {
        let (node, name) = (node.to_owned(), name.clone());
        async move { self.fetch_range(&node, &name, range, known).await }.boxed()
    }

    fn stat(&self, node: &str, name: &FileName) -> Fut<'_, Known> {
        let (node, name) = (node.to_owned(), name.clone());
        async move {
            let request = self.timed(pb::StatRequest { name: name.as_str().to_owned() });
            let mut client = self.client(&node)?;
            let reply = self.answered(&node, client.stat(request)).await?;
            let entry = reply.entry.map(entry_from_pb).transpose().map_err(|why| malformed(&node, why))?;
            if entry.as_ref().is_some_and(|e| e.name != name.as_str() || e.blake3.is_none()) {
                return Err(malformed(&node, format!("asked about {name}, answered {entry:?}")));
            }
            Ok(Known::from_parts(entry, reply.deleted_ns))
        }
        .boxed()
    }

    fn delete(&self, node: &str, name: &FileName, deleted_ns: Option<u64>, replicas: usize) -> Fut<'_, Deleted> {
        let (node, name) = (node.to_owned(), name.clone());
        async move {
            let request = pb::DeleteRequest {
                name: name.as_str().to_owned(),
                deleted_ns: deleted_ns.unwrap_or(0),
                replicas: replicas as u32,
            };
            // No call timeout (a deletion waits for its quorum), but not
            // waited for past the failure detector's suspicion of the node.
            let mut client = self.client(&node)?;
            let deleted = async { client.delete(request).await.map_err(status_error(&node)) };
            let reply = unless_suspected(self.channels.health(), &node, deleted).await?.into_inner();
            self.channels.health().heard(&node);
            Ok(Deleted {
                name: name.as_str().to_owned(),
                existed: reply.existed,
                deleted_ns: reply.deleted_ns,
                holders: reply.holders,
            })
        }
        .boxed()
    }

    fn list(&self, node: &str) -> Fut<'_, NodeListing> {
        let node = node.to_owned();
        async move {
            let mut client = self.client(&node)?;
            let replies = self.answered(&node, client.list(self.timed(pb::ListRequest {}))).await?;
            self.listing(&node, replies).await
        }
        .boxed()
    }

    fn digests(&self, node: &str, ranges: &[KeyRange], parts: u32) -> Fut<'_, Vec<(KeyRange, Sum)>> {
        let node = node.to_owned();
        let request = pb::DigestsRequest { ranges: ranges.iter().map(|r| range_to_pb(*r)).collect(), parts };
        async move {
            let mut client = self.client(&node)?;
            let reply = self.answered(&node, client.digests(self.timed(request))).await?;
            reply
                .parts
                .into_iter()
                .map(|part| {
                    let range = part.range.ok_or_else(|| malformed(&node, "a digest without its range"))?;
                    let digest = <[u8; 16]>::try_from(&part.digest[..])
                        .map_err(|_| malformed(&node, format!("a digest of {} bytes, not 16", part.digest.len())))?;
                    let sum = Sum { digest: u128::from_le_bytes(digest), count: part.count };
                    Ok((KeyRange { from: range.from, to: range.to }, sum))
                })
                .collect()
        }
        .boxed()
    }

    fn entries(&self, node: &str, ranges: &[KeyRange]) -> Fut<'_, NodeListing> {
        let node = node.to_owned();
        let request = pb::EntriesRequest { ranges: ranges.iter().map(|r| range_to_pb(*r)).collect() };
        async move {
            let mut client = self.client(&node)?;
            let replies = self.answered(&node, client.entries(self.timed(request))).await?;
            self.listing(&node, replies).await
        }
        .boxed()
    }

    fn lease<'a>(&'a self, node: &'a str, me: &'a NodeRef, epoch: u64) -> Fut<'a, LeaseAnswer> {
        let request = pb::LeaseRequest { addr: me.addr.clone(), epoch };
        async move {
            let mut client = self.client(node)?;
            let reply = self.answered(node, client.lease(self.timed(request))).await?;
            if !reply.refused.is_empty() {
                return Ok(LeaseAnswer::Refused(reply.refused));
            }
            let range = reply.range.ok_or_else(|| malformed(node, "a lease without its range"))?;
            let digest = match (reply.renewed, reply.digest) {
                (true, _) => Sum::default(),
                (false, Some(d)) => {
                    let bytes = <[u8; 16]>::try_from(&d.digest[..])
                        .map_err(|_| malformed(node, format!("a digest of {} bytes, not 16", d.digest.len())))?;
                    Sum { digest: u128::from_le_bytes(bytes), count: d.count }
                }
                (false, None) => return Err(malformed(node, "a new lease without its digest")),
            };
            Ok(LeaseAnswer::Granted {
                range: KeyRange { from: range.from, to: range.to },
                epoch: reply.epoch,
                renewed: reply.renewed,
                digest,
                duration: Duration::from_millis(u64::from(reply.lease_ms)),
                predecessor: (!reply.predecessor.is_empty()).then_some(reply.predecessor),
            })
        }
        .boxed()
    }
}

/// A copy streamed over gRPC.
struct GrpcCopy {
    node: String,
    tx: Option<mpsc::Sender<pb::StoreRequest>>,
    reply: tokio::task::JoinHandle<Result<pb::StoreReply, FileError>>,
    stall: Duration,
}

impl Drop for GrpcCopy {
    /// A copy dropped before its commit resets its stream: the node
    /// discards what it got at once.
    fn drop(&mut self) {
        self.reply.abort();
    }
}

impl CopySink for GrpcCopy {
    fn send(&mut self, chunk: Bytes) -> BoxFuture<'_, ()> {
        async move {
            for chunk in pieces(chunk, CHUNK_MAX) {
                let Some(tx) = &self.tx else { return };
                match tokio::time::timeout(self.stall, tx.send(message(pb::store_request::Part::Chunk(chunk)))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => self.tx = None,
                    Err(_) => {
                        tracing::warn!(node = %self.node, "a copy stalled; dropping it");
                        self.tx = None;
                        self.reply.abort();
                    }
                }
            }
        }
        .boxed()
    }

    fn commit(mut self: Box<Self>, blake3: Digest) -> BoxFuture<'static, Result<String, FileError>> {
        async move {
            if let Some(tx) = self.tx.take() {
                let commit = pb::StoreCommit { blake3: Bytes::copy_from_slice(&blake3.0) };
                let _ = tx.send(message(pb::store_request::Part::Commit(commit))).await;
            }
            match (&mut self.reply).await {
                Ok(Ok(_)) => Ok(self.node.clone()),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(FileError::remote(&self.node, ErrorKind::PeerUnavailable, "the copy was dropped")),
            }
        }
        .boxed()
    }
}
