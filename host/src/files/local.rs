//! This node's own store, through its plugins.

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

use super::FileError;
use crate::plugins::{FileEntry, PluginHost};
use crate::store::FileName;

/// Streams `body` through the upload plugin in chunks of `chunk_bytes`,
/// refusing it past `limit` bytes; `modified_ns`, if given, is the stored
/// file's modification time (a copy keeps its version's time). Whatever goes wrong, a partial upload is
/// abandoned and leaves nothing behind.
pub async fn store_local<S, E>(
    plugins: &std::sync::Arc<PluginHost>,
    name: &FileName,
    overwrite: bool,
    modified_ns: Option<u64>,
    body: S,
    limit: u64,
    chunk_bytes: usize,
) -> Result<FileEntry, FileError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let mut upload = plugins.upload(name, overwrite, modified_ns).await?;
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
        if total > limit {
            upload.abort().await;
            return Err(FileError::TooLarge(limit));
        }
        pending.extend_from_slice(&data);
        if pending.len() >= chunk_bytes {
            upload.write(pending.split().freeze()).await?;
        }
    }
    if !pending.is_empty() {
        upload.write(pending.freeze()).await?;
    }
    Ok(upload.finish().await?)
}
