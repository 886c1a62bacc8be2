//! The `Files` gRPC service: other nodes store, fetch and list this node's
//! files, always through its plugins.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status, Streaming};

use super::convert::{entry_to_pb, range_to_pb};
use super::files_pb::{self as pb, fetch_reply, store_request};
use super::status::to_status;
use super::{FILES_MESSAGE_MAX, LIST_BATCH, OUTBOARD_PIECE, pieces};
use crate::chord::NodeRef;
use crate::config::MAX_REPLICAS;
use crate::files::{Expected, FileError, Files, Known, LeaseAnswer, StoreHow, plausible_addr};
use crate::integrity::{BLOCK, Digest};
use crate::plugins::{FileEntry, PluginError};
use crate::store::FileName;
use crate::store::digest::KeyRange;
use crate::tls::Gate;

/// The chunks of a store's stream, up to its commit (whose hash goes to
/// `commit`) or its end; anything else is an error that aborts the store.
fn content(
    stream: Streaming<pb::StoreRequest>,
    commit: Option<oneshot::Sender<Digest>>,
) -> impl futures_util::Stream<Item = Result<Bytes, String>> + Send {
    futures_util::stream::unfold((Some(stream), commit), |(mut stream, mut commit)| async move {
        let failed = |why: String| Some((Err(why), (None, None)));
        let s = stream.as_mut()?;
        match s.message().await {
            Ok(Some(pb::StoreRequest { part: Some(store_request::Part::Chunk(bytes)) })) => {
                Some((Ok(bytes), (stream, commit)))
            }
            Ok(Some(pb::StoreRequest { part: Some(store_request::Part::Commit(c)) })) => {
                match (commit.take(), <[u8; 32]>::try_from(&c.blake3[..])) {
                    (Some(tx), Ok(bytes)) => {
                        let _ = tx.send(Digest(bytes));
                        None
                    }
                    (None, _) => failed("this store takes no commit".into()),
                    (_, Err(_)) => failed("the commit's hash is not a BLAKE3 digest".into()),
                }
            }
            Ok(Some(_)) => failed("only chunks may follow the header".into()),
            Ok(None) => None,
            Err(status) => failed(status.message().to_owned()),
        }
    })
    .boxed()
}

/// A node's listing as `List` messages: [`LIST_BATCH`] entries and
/// tombstones at most in each, one message at least.
pub(super) fn list_batches(
    entries: &[FileEntry],
    deleted: Vec<(String, u64)>,
) -> impl Iterator<Item = pb::ListReply> + use<> {
    let mut entries: Vec<pb::Entry> = entries.iter().filter(|e| e.blake3.is_some()).map(entry_to_pb).collect();
    let mut deleted = deleted;
    let count = entries.len().max(deleted.len()).div_ceil(LIST_BATCH).max(1);
    (0..count).map(move |_| {
        let (e, d) = (entries.len().min(LIST_BATCH), deleted.len().min(LIST_BATCH));
        pb::ListReply { entries: entries.drain(..e).collect(), deleted: deleted.drain(..d).collect() }
    })
}

/// Path prefix of the file-transfer gRPC methods.
const FILES_PATH: &str = "/ringshare.files.v1.Files/{*method}";

/// Adds the file-transfer gRPC service to `router`.
pub fn files_routes(router: axum::Router, files: Arc<Files>, gate: Arc<Gate>) -> axum::Router {
    let service = pb::files_server::FilesServer::new(FilesService { files, gate })
        .max_decoding_message_size(FILES_MESSAGE_MAX)
        .max_encoding_message_size(FILES_MESSAGE_MAX);
    router.route_service(FILES_PATH, service)
}

struct FilesService {
    files: Arc<Files>,
    /// Who may speak for which address (a lease goes to the node asking).
    gate: Arc<Gate>,
}

fn name_of(name: &str) -> Result<FileName, Status> {
    FileName::parse(name).map_err(|e| Status::invalid_argument(e.to_string()))
}

#[tonic::async_trait]
impl pb::files_server::Files for FilesService {
    async fn store(&self, request: Request<Streaming<pb::StoreRequest>>) -> Result<Response<pb::StoreReply>, Status> {
        let mut stream = request.into_inner();
        let header = match stream.message().await? {
            Some(pb::StoreRequest { part: Some(store_request::Part::Header(header)) }) => header,
            _ => return Err(Status::invalid_argument("the first message of a store must be its header")),
        };
        let name = name_of(&header.name)?;
        let digest = |bytes: &[u8]| -> Result<Digest, Status> {
            bytes.try_into().map(Digest).map_err(|_| {
                Status::invalid_argument(format!("a hash of {} bytes is not a BLAKE3 digest", bytes.len()))
            })
        };
        let (commit_tx, commit_rx) = oneshot::channel();
        let how = match (header.version_ns, header.blake3.is_empty(), header.commit_follows) {
            // A copy never asks for more copies than a node keeps.
            (0, true, false) => {
                StoreHow::New { overwrite: header.overwrite, replicas: (header.replicas as usize).min(MAX_REPLICAS) }
            }
            (0, _, _) => return Err(Status::invalid_argument("a new upload names no version and no hash")),
            (version_ns, false, false) => {
                StoreHow::Copy { version_ns, expected: Expected::Known(digest(&header.blake3)?) }
            }
            (version_ns, true, true) => StoreHow::Copy { version_ns, expected: Expected::Late(commit_rx) },
            _ => return Err(Status::invalid_argument("a copy names its hash in the header or in its commit")),
        };
        let body = content(stream, header.commit_follows.then_some(commit_tx));
        let stored = self.files.store_here(&name, how, body).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::StoreReply {
            entry: Some(entry_to_pb(&stored.entry)),
            holders: stored.holders,
            copies_wanted: stored.copies_wanted as u32,
        }))
    }

    type FetchStream = BoxStream<'static, Result<pb::FetchReply, Status>>;

    async fn fetch(&self, request: Request<pb::FetchRequest>) -> Result<Response<Self::FetchStream>, Status> {
        let request = request.into_inner();
        let name = name_of(&request.name)?;
        let handle = self.files.open_here(&name).await.map_err(|e| to_status(&e))?;
        let Some(handle) = handle else {
            return Err(Status::not_found(format!("{name} is not stored here")));
        };
        let entry = handle.entry().clone();
        let size = entry.size;
        if request.offset > size {
            return Err(Status::out_of_range(format!("offset {} is past the end ({size} bytes)", request.offset)));
        }
        let end = if request.length == 0 { size } else { size.min(request.offset.saturating_add(request.length)) };
        let outboard = handle.outboard().map(|o| Bytes::from(o.to_bytes())).filter(|o| !o.is_empty());
        let outboard = outboard.filter(|_| !request.without_outboard);
        let mut head = vec![Ok(pb::FetchReply { part: Some(fetch_reply::Part::Entry(entry_to_pb(&entry))) })];
        let entry = entry.clone();
        for piece in outboard.into_iter().flat_map(|o| pieces(o, OUTBOARD_PIECE)) {
            head.push(Ok(pb::FetchReply { part: Some(fetch_reply::Part::Outboard(piece)) }));
        }
        // Whole blocks, so the caller can check each one.
        let (first, last) = (request.offset / BLOCK * BLOCK, end.div_ceil(BLOCK) * BLOCK);
        let files = self.files.clone();
        let body: Self::FetchStream = if end > request.offset {
            handle
                .stream(first..=last.min(size) - 1)
                .map_ok(|bytes| pb::FetchReply { part: Some(fetch_reply::Part::Chunk(bytes)) })
                .map_err(move |e| {
                    if matches!(e, PluginError::Corrupt(_)) {
                        files.damaged(&name, entry.clone());
                    }
                    to_status(&FileError::from(e))
                })
                .boxed()
        } else {
            futures_util::stream::empty().boxed()
        };
        Ok(Response::new(futures_util::stream::iter(head).chain(body).boxed()))
    }

    async fn stat(&self, request: Request<pb::StatRequest>) -> Result<Response<pb::StatReply>, Status> {
        let name = name_of(&request.into_inner().name)?;
        let (entry, deleted_ns) = match self.files.known_here(&name).await.map_err(|e| to_status(&e))? {
            Known::Nothing => (None, None),
            Known::File(entry) => (Some(entry_to_pb(&entry)), None),
            Known::Deleted(at) => (None, Some(at)),
        };
        Ok(Response::new(pb::StatReply { entry, deleted_ns }))
    }

    async fn delete(&self, request: Request<pb::DeleteRequest>) -> Result<Response<pb::DeleteReply>, Status> {
        let request = request.into_inner();
        let name = name_of(&request.name)?;
        // A deletion never asks for more copies than a node keeps.
        let replicas = (request.replicas as usize).min(MAX_REPLICAS);
        let deleted = self
            .files
            .delete_here(&name, (request.deleted_ns != 0).then_some(request.deleted_ns), replicas)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::DeleteReply {
            existed: deleted.existed,
            holders: deleted.holders,
            deleted_ns: deleted.deleted_ns,
        }))
    }

    type ListStream = BoxStream<'static, Result<pb::ListReply, Status>>;

    async fn list(&self, _: Request<pb::ListRequest>) -> Result<Response<Self::ListStream>, Status> {
        let listing = self.files.list_here().await.map_err(|e| to_status(&e))?;
        let deleted = self.files.tombstones().all();
        Ok(Response::new(futures_util::stream::iter(list_batches(&listing.entries, deleted).map(Ok)).boxed()))
    }

    async fn digests(&self, request: Request<pb::DigestsRequest>) -> Result<Response<pb::DigestsReply>, Status> {
        let request = request.into_inner();
        let ranges = key_ranges(&request.ranges)?;
        if !(1..=MAX_PARTS_EACH).contains(&request.parts) {
            return Err(Status::invalid_argument(format!("parts must be 1 to {MAX_PARTS_EACH}")));
        }
        if ranges.len() * request.parts as usize > MAX_PARTS {
            return Err(Status::invalid_argument(format!("at most {MAX_PARTS} parts in all")));
        }
        let parts: Vec<KeyRange> = ranges.iter().flat_map(|r| r.split(request.parts)).collect();
        let sums = self.files.sums(parts.clone()).await.map_err(|e| to_status(&e))?;
        let parts = parts
            .iter()
            .zip(sums)
            .map(|(range, sum)| pb::RangeDigest {
                range: Some(range_to_pb(*range)),
                digest: Bytes::copy_from_slice(&sum.digest.to_le_bytes()),
                count: sum.count,
            })
            .collect();
        Ok(Response::new(pb::DigestsReply { parts }))
    }

    type EntriesStream = BoxStream<'static, Result<pb::ListReply, Status>>;

    async fn entries(&self, request: Request<pb::EntriesRequest>) -> Result<Response<Self::EntriesStream>, Status> {
        let ranges = key_ranges(&request.into_inner().ranges)?;
        let (entries, deleted) = self.files.entries_in(&ranges).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(futures_util::stream::iter(list_batches(&entries, deleted).map(Ok)).boxed()))
    }

    async fn lease(&self, request: Request<pb::LeaseRequest>) -> Result<Response<pb::LeaseReply>, Status> {
        let addr = request.get_ref().addr.clone();
        if !plausible_addr(&addr) {
            return Err(Status::invalid_argument("addr must be the caller's host:port"));
        }
        if !self.gate.may_claim(request.extensions(), &addr) {
            return Err(Status::permission_denied(format!(
                "your certificate does not name {addr}: you may only ask for a lease for yourself"
            )));
        }
        let epoch = request.into_inner().epoch;
        let answer = self.files.grant_lease(&NodeRef::new(addr), epoch).await.map_err(|e| to_status(&e))?;
        let reply = match answer {
            LeaseAnswer::Refused(refused) => pb::LeaseReply { refused, ..Default::default() },
            LeaseAnswer::Granted { range, epoch, renewed, digest, duration, predecessor } => pb::LeaseReply {
                refused: String::new(),
                range: Some(range_to_pb(range)),
                epoch,
                renewed,
                digest: (!renewed).then(|| pb::RangeDigest {
                    range: Some(range_to_pb(range)),
                    digest: Bytes::copy_from_slice(&digest.digest.to_le_bytes()),
                    count: digest.count,
                }),
                lease_ms: u32::try_from(duration.as_millis()).unwrap_or(u32::MAX),
                predecessor: predecessor.unwrap_or_default(),
            },
        };
        Ok(Response::new(reply))
    }
}

/// Ranges a `Digests` or `Entries` call may ask about at once.
const MAX_RANGES: usize = 4096;
/// Parts a range may be cut into, and parts in all.
const MAX_PARTS_EACH: u32 = 256;
const MAX_PARTS: usize = 65_536;

/// The ranges of a request: 1 to [`MAX_RANGES`].
fn key_ranges(ranges: &[pb::KeyRange]) -> Result<Vec<KeyRange>, Status> {
    if ranges.is_empty() || ranges.len() > MAX_RANGES {
        return Err(Status::invalid_argument(format!("ask about 1 to {MAX_RANGES} ranges")));
    }
    Ok(ranges.iter().map(|r| KeyRange { from: r.from, to: r.to }).collect())
}
