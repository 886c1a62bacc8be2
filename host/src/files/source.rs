//! Reading a file wherever it is: [`Files::open`] picks the newest version
//! among the holders, and a [`Source`] streams it, moving to the next holder
//! at the same offset when one dies and checking the SHA-256 of whole files
//! read from other nodes.

use std::collections::HashSet;
use std::ops::RangeInclusive;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::known::Known;
use super::{FileError, Files};
use crate::chord::{Id, NodeRef};
use crate::plugins::{FileEntry, PluginError, Refusal};
use crate::store::FileName;

impl Files {
    /// Opens the newest version of `name`: asks every holder what it knows,
    /// and reads here if this node has that version, else from the first
    /// holder that has it. A deletion newer than every copy is not found.
    pub async fn open(self: &Arc<Self>, name: &FileName) -> Result<Source, FileError> {
        // Unless a holder elsewhere has it, a missing local plugin is the answer.
        let mut last = FileError::NotFound(name.to_string());
        let local = match self.plugins.download(name).await {
            Ok(handle) => Some(handle),
            Err(PluginError::Refused { refusal: Refusal::NotFound, .. }) => None,
            Err(e @ PluginError::Unavailable(_)) => {
                last = e.into();
                None
            }
            Err(e) => return Err(e.into()),
        };
        let here = Known::from_parts(local.as_ref().map(|h| h.entry().clone()), self.tombstones.get(name));
        let (newest, having) = match self.survey(name, &here).await {
            Ok(found) => found,
            // Without the ring, this node's own copy is all there is.
            Err(e) if local.is_none() => return Err(e),
            Err(_) => (here.clone(), Vec::new()),
        };
        let Known::File(wanted) = newest else {
            return Err(last);
        };
        if let Some(handle) = local.filter(|h| h.entry().sha256 == wanted.sha256) {
            let entry = handle.entry().clone();
            let first = Some(First::Local(handle));
            return Ok(Source { files: self.clone(), name: name.clone(), entry, first });
        }
        for holder in having {
            match self.peers.fetch(&holder.addr, name.as_str(), 0, 0).await {
                Ok((entry, stream)) if entry.sha256 == wanted.sha256 => {
                    let first = Some(First::Remote(holder.id, stream.boxed()));
                    return Ok(Source { files: self.clone(), name: name.clone(), entry, first });
                }
                Ok(_) => {} // changed since it was asked
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Asks the other holders of `name` what they know of it: the newest
    /// state among theirs and `here` (this node's), and the other holders
    /// that have that state. Fails if none knows the name and one did not
    /// answer.
    async fn survey(&self, name: &FileName, here: &Known) -> Result<(Known, Vec<NodeRef>), FileError> {
        let me = self.ring.me().id;
        let holders: Vec<NodeRef> = self.holders(name).await?.into_iter().filter(|h| h.id != me).collect();
        let theirs =
            futures_util::future::join_all(holders.iter().map(|h| self.peers.stat(&h.addr, name.as_str()))).await;
        let newest = Known::newest(theirs.iter().filter_map(|k| k.as_ref().ok()).chain([here]));
        if newest == Known::Nothing
            && let Some(Err(e)) = theirs.iter().find(|k| k.is_err())
        {
            // Nobody that answered knows the name, and a holder did not answer.
            return Err(e.clone());
        }
        let having = holders
            .into_iter()
            .zip(theirs)
            .filter(|(_, k)| k.as_ref().is_ok_and(|k| k.same(&newest)))
            .map(|(h, _)| h)
            .collect();
        Ok((newest, having))
    }

    /// A node that serves the newest version of `name`: this one if it has
    /// it, else the first other holder that does.
    pub async fn locate(&self, name: &FileName) -> Result<(String, FileEntry), FileError> {
        let here = self.known_here(name).await?;
        let (newest, having) = self.survey(name, &here).await?;
        let Known::File(entry) = &newest else {
            return Err(FileError::NotFound(name.to_string()));
        };
        let node = if here.same(&newest) {
            self.ring.me().addr.clone()
        } else {
            having.into_iter().next().map(|h| h.addr).ok_or_else(|| FileError::NoHolder(name.to_string()))?
        };
        Ok((node, entry.clone()))
    }
}

/// A holder being read (`None`: this node) and its stream of bytes.
type Reading = (Option<Id>, BoxStream<'static, Result<Bytes, FileError>>);

enum First {
    Local(crate::plugins::DownloadHandle),
    Remote(Id, BoxStream<'static, Result<Bytes, FileError>>),
}

/// An open file somewhere in the network.
pub struct Source {
    files: Arc<Files>,
    name: FileName,
    entry: FileEntry,
    first: Option<First>,
}

impl Source {
    /// The file's entry (size, sha256 of what is served).
    pub fn entry(&self) -> &FileEntry {
        &self.entry
    }

    /// Streams `range` of the file. If the holder being read dies, reading
    /// goes on from the next holder at the same offset, provided it holds the
    /// same version; a whole-file read from other nodes is checked against
    /// the sha256.
    pub fn stream(self, range: RangeInclusive<u64>) -> impl Stream<Item = Result<Bytes, FileError>> + Send + 'static {
        let (tx, rx) = mpsc::channel::<Result<Bytes, FileError>>(4);
        let (start, end) = (*range.start(), *range.end() + 1);
        let Source { files, name, entry, first } = self;
        // Bytes from another node are checked against the sha256 end to end;
        // this node's own copy is trusted as its plugin reads it.
        let remote = matches!(first, Some(First::Remote(..)) | None);
        let whole = start == 0 && end == entry.size && remote;
        tokio::spawn(async move {
            let mut hasher = whole.then(Hasher::spawn);
            let mut offset = start;
            let mut failed: HashSet<Id> = HashSet::new();
            let mut current: Option<Reading> = match first {
                Some(First::Local(handle)) => {
                    Some((None, handle.stream(start..=end - 1).map(|r| r.map_err(FileError::from)).boxed()))
                }
                Some(First::Remote(id, stream)) if start == 0 => Some((Some(id), stream)),
                _ => None,
            };
            while offset < end {
                let (holder, mut stream) = match current.take() {
                    Some(open) => open,
                    None => match reopen(&files, &name, &entry.sha256, offset, end, &failed).await {
                        Some(open) => open,
                        None => {
                            let _ = tx.send(Err(FileError::NoHolder(name.to_string()))).await;
                            return;
                        }
                    },
                };
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(bytes) => {
                            let bytes = bytes.slice(..bytes.len().min((end - offset) as usize));
                            offset += bytes.len() as u64;
                            if let Some(h) = hasher.as_mut() {
                                h.update(bytes.clone()).await;
                            }
                            if tx.send(Ok(bytes)).await.is_err() {
                                return; // the client went away
                            }
                        }
                        Err(e) => {
                            tracing::warn!(file = %name, offset, "holder failed mid-stream, trying the next: {e}");
                            if let Some(id) = holder {
                                failed.insert(id);
                            }
                            break;
                        }
                    }
                }
                if holder.is_none() && offset < end {
                    // The local copy failed: only remote holders are left.
                    failed.insert(files.ring.me().id);
                }
            }
            if let Some(h) = hasher
                && h.finish().await != entry.sha256
            {
                let _ = tx.send(Err(FileError::Mismatch(name.to_string()))).await;
            }
        });
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
    }
}

/// SHA-256 of a stream, computed on a thread of its own so that hashing
/// overlaps moving the bytes; at most `HASH_CHUNKS` chunks wait for it.
struct Hasher {
    chunks: mpsc::Sender<Bytes>,
    digest: tokio::task::JoinHandle<String>,
}

const HASH_CHUNKS: usize = 16;

impl Hasher {
    fn spawn() -> Self {
        let (chunks, mut rx) = mpsc::channel::<Bytes>(HASH_CHUNKS);
        let digest = tokio::task::spawn_blocking(move || {
            let mut hasher = Sha256::new();
            while let Some(chunk) = rx.blocking_recv() {
                hasher.update(&chunk);
            }
            hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
        });
        Self { chunks, digest }
    }

    async fn update(&mut self, chunk: Bytes) {
        // The thread only stops when the sender is dropped.
        let _ = self.chunks.send(chunk).await;
    }

    /// The lowercase hex digest of everything passed to `update`.
    async fn finish(self) -> String {
        drop(self.chunks);
        self.digest.await.unwrap_or_default()
    }
}

/// Opens the rest of a range (`offset..end`) of `name` on the next holder,
/// not yet `failed`, of the version with `sha256`.
async fn reopen(
    files: &Arc<Files>,
    name: &FileName,
    sha256: &str,
    offset: u64,
    end: u64,
    failed: &HashSet<Id>,
) -> Option<Reading> {
    let holders = files.holders(name).await.ok()?;
    let me = files.ring.me().id;
    for holder in holders.into_iter().filter(|h| !failed.contains(&h.id)) {
        if holder.id == me {
            let Ok(handle) = files.plugins.download(name).await else { continue };
            if handle.entry().sha256 == sha256 {
                return Some((None, handle.stream(offset..=end - 1).map(|r| r.map_err(FileError::from)).boxed()));
            }
            continue;
        }
        let Ok((entry, stream)) = files.peers.fetch(&holder.addr, name.as_str(), offset, end - offset).await else {
            continue;
        };
        if entry.sha256 == sha256 {
            return Some((Some(holder.id), stream.boxed()));
        }
    }
    None
}
