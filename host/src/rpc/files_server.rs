//! The `Files` gRPC service: other nodes store, fetch and list this node's
//! files, always through its plugins.

use std::sync::Arc;

use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::files_pb::{self as pb, fetch_reply, store_request};
use crate::files::{FileError, Files, Known, entry_to_pb};
use crate::store::FileName;

/// Path prefix of the file-transfer gRPC methods.
const FILES_PATH: &str = "/ringshare.files.v1.Files/{*method}";

/// Adds the file-transfer gRPC service to `router`.
pub fn files_routes(router: axum::Router, files: Arc<Files>) -> axum::Router {
    router.route_service(FILES_PATH, pb::files_server::FilesServer::new(FilesService { files }))
}

struct FilesService {
    files: Arc<Files>,
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
        let body = stream.map(|message| match message {
            Ok(pb::StoreRequest { part: Some(store_request::Part::Chunk(bytes)) }) => Ok(bytes),
            Ok(_) => Err("only chunks may follow the header".to_owned()),
            Err(status) => Err(status.message().to_owned()),
        });
        // A copy never asks for more copies than a node keeps.
        let replicas = (header.replicas as usize).min(16);
        let stored = self
            .files
            .store_here(&name, header.overwrite, header.version_ns, body, replicas)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::StoreReply { entry: Some(entry_to_pb(&stored.entry)), holders: stored.holders }))
    }

    type FetchStream = BoxStream<'static, Result<pb::FetchReply, Status>>;

    async fn fetch(&self, request: Request<pb::FetchRequest>) -> Result<Response<Self::FetchStream>, Status> {
        let request = request.into_inner();
        let name = name_of(&request.name)?;
        let handle = self.files.plugins().download(&name).await.map_err(|e| FileError::from(e).to_status())?;
        let entry = handle.entry().clone();
        let size = entry.size;
        if request.offset > size {
            return Err(Status::out_of_range(format!("offset {} is past the end ({size} bytes)", request.offset)));
        }
        let end = if request.length == 0 { size } else { size.min(request.offset.saturating_add(request.length)) };
        let head = futures_util::stream::once(async move {
            Ok(pb::FetchReply { part: Some(fetch_reply::Part::Entry(entry_to_pb(&entry))) })
        });
        let body: Self::FetchStream = if end > request.offset {
            handle
                .stream(request.offset..=end - 1)
                .map_ok(|bytes| pb::FetchReply { part: Some(fetch_reply::Part::Chunk(bytes)) })
                .map_err(|e| FileError::from(e).to_status())
                .boxed()
        } else {
            futures_util::stream::empty().boxed()
        };
        Ok(Response::new(head.chain(body).boxed()))
    }

    async fn stat(&self, request: Request<pb::StatRequest>) -> Result<Response<pb::StatReply>, Status> {
        let name = name_of(&request.into_inner().name)?;
        let (entry, deleted_ns) = match self.files.known_here(&name).await.map_err(|e| e.to_status())? {
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
        let replicas = (request.replicas as usize).min(16);
        let deleted = self.files.delete_here(&name, request.deleted_ns, replicas).await.map_err(|e| e.to_status())?;
        Ok(Response::new(pb::DeleteReply {
            existed: deleted.existed,
            holders: deleted.holders,
            deleted_ns: deleted.deleted_ns,
        }))
    }

    async fn list(&self, _: Request<pb::ListRequest>) -> Result<Response<pb::ListReply>, Status> {
        let entries = self.files.plugins().list().await.map_err(|e| FileError::from(e).to_status())?;
        let deleted = self.files.tombstones().all().into_iter().collect();
        Ok(Response::new(pb::ListReply { entries: entries.iter().map(entry_to_pb).collect(), deleted }))
    }
}
