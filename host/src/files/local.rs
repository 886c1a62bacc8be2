//! This node's own store, through its plugins.

use bytes::{Bytes, BytesMut};
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use tokio::sync::oneshot;

use super::FileError;
use crate::integrity::Digest;
use crate::plugins::{DownloadHandle, FileEntry, PluginError, PluginHost};
use crate::store::FileName;

/// The hash a written content must have.
pub enum Expected {
    /// Any: a new upload, hashed as it arrives.
    Nothing,
    /// This one: a copy of a known version.
    Known(Digest),
    /// The one the sender will name once the content is complete (a copy
    /// streamed while its upload arrives). Not named: the copy is dropped.
    Late(oneshot::Receiver<Digest>),
}

/// One write into this node's store.
pub struct LocalWrite<'a> {
    /// The file.
    pub name: &'a FileName,
    /// Whether an existing file of that name is replaced.
    pub overwrite: bool,
    /// The stored file's modification time, if given (a copy keeps its
    /// version's time).
    pub modified_ns: Option<u64>,
    /// The hash the content must have (a copy of a known version).
    pub expected: Expected,
    /// Bytes accepted at most.
    pub limit: u64,
    /// Bytes gathered before they are handed to the plugin's stream.
    pub chunk_bytes: usize,
}

/// Streams `body` into the store through the upload plugin, refusing it
/// past `write.limit` bytes. Whatever goes wrong, a partial upload is
/// abandoned and leaves nothing behind.
pub async fn store_local<S, E>(
    plugins: &std::sync::Arc<PluginHost>,
    write: LocalWrite<'_>,
    body: S,
) -> Result<FileEntry, FileError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let mut upload = plugins.upload(write.name, write.overwrite, write.modified_ns).await?;
    let mut body = std::pin::pin!(body);
    let mut pending = BytesMut::new();
    let mut total: u64 = 0;
    while let Some(next) = body.next().await {
        let data = match next {
            Ok(data) => data,
            Err(e) => {
                upload.abort().await;
                return Err(FileError::Body(e.to_string()));
            }
        };
        total += data.len() as u64;
        if total > write.limit {
            upload.abort().await;
            return Err(FileError::TooLarge(write.limit));
        }
        if pending.is_empty() && data.len() >= write.chunk_bytes {
            upload.write(data).await?;
            continue;
        }
        pending.extend_from_slice(&data);
        if pending.len() >= write.chunk_bytes {
            upload.write(pending.split().freeze()).await?;
        }
    }
    if !pending.is_empty() {
        upload.write(pending.freeze()).await?;
    }
    let expected = match write.expected {
        Expected::Nothing => None,
        Expected::Known(digest) => Some(digest),
        Expected::Late(named) => match named.await {
            Ok(digest) => Some(digest),
            Err(_) => {
                upload.abort().await;
                return Err(FileError::Body(format!("the copy of {} ended without its commit", write.name)));
            }
        },
    };
    Ok(upload.finish(expected).await?)
}

/// The whole content of an open file, as a stream.
pub fn whole(handle: DownloadHandle) -> BoxStream<'static, Result<Bytes, PluginError>> {
    match handle.entry().size {
        0 => futures_util::stream::empty().boxed(),
        size => handle.stream(0..=size - 1).boxed(),
    }
}
