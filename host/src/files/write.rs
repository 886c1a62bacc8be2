//! New uploads on the responsible node. The content is written here and
//! streamed, as it arrives, to the other holders (a fan-out: every holder
//! writes the bytes while they stream, nobody reads a stored copy back), and
//! the upload is acknowledged only once the copies are durable: each holder
//! has hashed what it received, found it equal to the hash this node
//! computed, and synced it. A holder that does not answer, or fails
//! mid-stream, is replaced by the next live successor, which gets a copy
//! of the durable local file (the repair loop later moves it to the holder
//! when it is back). With `--write-quorum W` below k, the answer comes once
//! W copies are durable and the others finish in the background.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::stream::FuturesUnordered;
use futures_util::{Stream, StreamExt};

use super::network::CopySink;
use super::service::{Files, Stored};
use super::tombstones::now_ns;
use super::FileError;
use crate::plugins::UploadHandle;
use crate::store::FileName;

impl Files {
    /// Stores a new upload here and on `replicas` successors at once;
    /// answers when the copies are durable (see the module's notes).
    pub(super) async fn store_new<S, E>(
        self: &Arc<Self>,
        name: &FileName,
        overwrite: bool,
        body: S,
        replicas: usize,
    ) -> Result<Stored, FileError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let version_ns = now_ns();
        // Refused here (exists, no plugin), nothing is sent anywhere.
        let mut local = self.plugins.upload(name, overwrite, Some(version_ns)).await?;
        let candidates = self.successors(usize::MAX);
        let (first, spare) = candidates.split_at(replicas.min(candidates.len()));
        let mut copies: Vec<Box<dyn CopySink>> =
            first.iter().map(|target| self.peers.open_copy(&target.addr, name, version_ns)).collect();

        let mut body = std::pin::pin!(body);
        let mut pending = BytesMut::new();
        let mut total = 0u64;
        while let Some(next) = body.next().await {
            let data = match next {
                Ok(data) => data,
                Err(e) => return Err(abandon(local, FileError::Body(e.to_string())).await),
            };
            total += data.len() as u64;
            if total > self.max_upload_bytes {
                return Err(abandon(local, FileError::TooLarge(self.max_upload_bytes)).await);
            }
            pending.extend_from_slice(&data);
            if pending.len() >= self.chunk_bytes {
                fan_out(&mut local, &mut copies, pending.split().freeze()).await?;
            }
        }
        if !pending.is_empty() {
            fan_out(&mut local, &mut copies, pending.freeze()).await?;
        }
        // Dropped unfinished, the copies end without their commit and every
        // holder discards what it got.
        let entry = local.finish(None).await?;
        self.stored(name, &entry).await;
        let root = entry.blake3.expect("the host hashed what it wrote");

        let copies_wanted = 1 + replicas.min(candidates.len());
        let quorum = self.write_quorum.min(copies_wanted);
        let mut holders = vec![self.ring.me().addr.clone()];
        let mut commits: FuturesUnordered<_> = copies.into_iter().map(|c| c.commit(root)).collect();
        while holders.len() < quorum {
            match commits.next().await {
                Some(Ok(addr)) => holders.push(addr),
                Some(Err(e)) => tracing::warn!(file = %name, "a copy streamed with the upload failed: {e}"),
                None => break,
            }
        }
        if !commits.is_empty() {
            // The answer does not wait for these (write quorum below k).
            let name = name.clone();
            tokio::spawn(async move {
                while let Some(outcome) = commits.next().await {
                    if let Err(e) = outcome {
                        tracing::warn!(file = %name, "a copy streamed with the upload failed: {e}");
                    }
                }
            });
        }
        // Holders that failed are replaced by the next live successors,
        // copied from the durable local file.
        for target in spare {
            if holders.len() >= quorum {
                break;
            }
            match self.clone().replicate(target.clone(), name.clone()).await {
                Ok(addr) => holders.push(addr),
                Err(e) => tracing::warn!(file = %name, node = %target.addr, "no copy on a stand-in either: {e}"),
            }
        }
        if holders.len() < quorum {
            tracing::warn!(file = %name, copies = holders.len(), quorum, "fewer live nodes than copies wanted");
        }
        Ok(Stored { entry, holders, copies_wanted })
    }
}

/// Writes `chunk` here and sends it to every copy still streaming.
async fn fan_out(local: &mut UploadHandle, copies: &mut [Box<dyn CopySink>], chunk: Bytes) -> Result<(), FileError> {
    local.write(chunk.clone()).await?;
    for copy in copies.iter_mut() {
        copy.send(chunk.clone()).await;
    }
    Ok(())
}

/// Gives up on an upload: nothing is kept here, and the copies, dropped
/// without their commit, are discarded by their holders.
async fn abandon(local: UploadHandle, error: FileError) -> FileError {
    local.abort().await;
    error
}
