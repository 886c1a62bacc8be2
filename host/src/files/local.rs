//! [`Local`]: this node's own store, through its plugins: its copies (a
//! file copied in by hand is hashed and recorded on first use), its
//! tombstones, and writes into it.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use tokio::sync::oneshot;

use super::cache::ReadCache;
use super::error::FileError;
use super::gather::Gather;
use super::known::Known;
use super::network::NodeListing;
use super::tombstones::Tombstones;
use crate::integrity::Digest;
use crate::plugins::{DownloadHandle, FileEntry, Finished, Listing, PluginError, PluginHost, PluginKind, Refusal};
use crate::store::FileName;
use crate::store::digest::{KeyRange, Plan, Sum};
use crate::store::journal::Journaled;

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
    /// The hash the content must have.
    pub expected: Expected,
    /// Bytes accepted at most.
    pub limit: u64,
}

/// This node's store.
pub struct Local {
    plugins: Arc<PluginHost>,
    tombstones: Tombstones,
    chunk_bytes: usize,
    cache: ReadCache,
}

impl Local {
    /// The store behind `plugins`, with its `tombstones`; writes go to the
    /// plugin in chunks of about `chunk_bytes`; small files' content is kept
    /// in `cache` as they are written and read.
    pub fn new(plugins: Arc<PluginHost>, tombstones: Tombstones, chunk_bytes: usize, cache: ReadCache) -> Self {
        Self { plugins, tombstones, chunk_bytes, cache }
    }

    /// The content of small files kept in memory.
    pub fn cache(&self) -> &ReadCache {
        &self.cache
    }

    /// This node's plugins.
    pub fn plugins(&self) -> &Arc<PluginHost> {
        &self.plugins
    }

    /// This node's record of deletions.
    pub fn tombstones(&self) -> &Tombstones {
        &self.tombstones
    }

    /// Every file of this node's store that it serves, from the host's
    /// index of it: a copy kept through a long absence is left out until a
    /// holder confirms it.
    pub async fn list(&self) -> Result<Listing, FileError> {
        let listing = self.list_all().await?;
        if self.tombstones.away_from().is_none() {
            return Ok(listing);
        }
        let entries = listing.entries.iter().filter(|e| !self.unconfirmed(e)).cloned().collect();
        Ok(Listing { generation: listing.generation, entries: Arc::new(entries) })
    }

    /// Every file of this node's store, confirmed or not.
    pub async fn list_all(&self) -> Result<Listing, FileError> {
        Ok(self.plugins.list().await?)
    }

    /// The sums of this node's files and tombstones over `ranges` (see
    /// `store::digest`).
    pub async fn sums(&self, ranges: Vec<KeyRange>) -> Result<Vec<Sum>, FileError> {
        let plan = Plan::new(ranges);
        let mut sums = self.plugins.file_sums(&plan).await?;
        for (sum, deleted) in sums.iter_mut().zip(self.tombstones.sums(&plan)) {
            sum.merge(deleted);
        }
        Ok(sums)
    }

    /// The sum of this node's files and tombstones over `range`.
    pub async fn sum(&self, range: KeyRange) -> Result<Sum, FileError> {
        Ok(self.sums(vec![range]).await?.first().copied().unwrap_or_default())
    }

    /// This node's files (those it serves, hashed) and tombstones whose
    /// names' keys fall in one of `ranges`.
    pub async fn entries_in(&self, ranges: &[KeyRange]) -> Result<NodeListing, FileError> {
        let mut files = self.plugins.files_in(ranges).await?;
        files.retain(|e| e.blake3.is_some() && !self.unconfirmed(e));
        Ok((files, self.tombstones.in_ranges(ranges)))
    }

    /// Whether this copy is from before a long absence and not confirmed
    /// by a holder yet (see `tombstones`).
    pub fn unconfirmed(&self, entry: &FileEntry) -> bool {
        self.tombstones.unconfirmed(&entry.name, entry.modified_ns)
    }

    /// Opens this node's copy of `name`, if it has one, with its hash and
    /// outboard: a file the store has no record of (copied in by hand) is
    /// hashed and recorded first.
    pub async fn open(&self, name: &FileName) -> Result<Option<DownloadHandle>, FileError> {
        let Some(handle) = self.open_as_is(name).await? else { return Ok(None) };
        if handle.entry().blake3.is_some() {
            return Ok(Some(handle));
        }
        let entry = handle.entry().clone();
        let write = LocalWrite {
            name,
            overwrite: true,
            modified_ns: Some(entry.modified_ns),
            expected: Expected::Nothing,
            limit: u64::MAX,
        };
        let recorded = self.write(write, whole(handle)).await?;
        tracing::info!(file = %name, blake3 = ?recorded.blake3, "hashed and recorded a file copied in by hand");
        match self.open_as_is(name).await? {
            Some(handle) if handle.entry().blake3.is_some() => Ok(Some(handle)),
            // Bytes that cannot be checked are never served.
            Some(_) => Err(PluginError::Trapped {
                plugin: self.plugins.serving(PluginKind::Download).unwrap_or_else(|| "download plugin".into()),
                detail: format!("broke the plugin contract: it does not report the hash recorded for {name}"),
            }
            .into()),
            None => Ok(None),
        }
    }

    /// Opens this node's copy of `name` to read `range` of it at once (see
    /// `PluginHost::download_range`); a file copied in by hand is hashed
    /// first, as by [`Local::open`].
    pub async fn open_range(
        &self,
        name: &FileName,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Option<DownloadHandle>, FileError> {
        match self.plugins.download_range(name, range).await {
            Ok(handle) if handle.entry().blake3.is_some() => Ok(Some(handle)),
            Ok(_) => self.open(name).await,
            Err(PluginError::Refused { refusal: Refusal::NotFound, .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn open_as_is(&self, name: &FileName) -> Result<Option<DownloadHandle>, FileError> {
        match self.plugins.download(name).await {
            Ok(handle) => Ok(Some(handle)),
            Err(PluginError::Refused { refusal: Refusal::NotFound, .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// This node's version of `name`, if it has one: from the host's index
    /// of the store when it knows the file's hash (no file is opened), else
    /// by opening it (a file copied in by hand is hashed and recorded).
    pub async fn entry(&self, name: &FileName) -> Result<Option<FileEntry>, FileError> {
        match self.plugins.entry(name).await {
            Ok(Some(entry)) if entry.blake3.is_some() => return Ok(Some(entry)),
            Ok(Some(_)) => {} // not hashed yet: opening it records it
            Ok(None) => return Ok(None),
            Err(e) => tracing::debug!(file = %name, "the store's index cannot say, opening the file: {e}"),
        }
        Ok(self.open(name).await?.map(|handle| handle.entry().clone()))
    }

    /// What this node knows of `name`: its copy (unless it waits for a
    /// holder to confirm it) and its tombstone.
    pub async fn known(&self, name: &FileName) -> Result<Known, FileError> {
        let copy = self.entry(name).await?.filter(|e| !self.unconfirmed(e));
        Ok(Known::from_parts(copy, self.tombstones.get(name)))
    }

    /// Moves this node's copy of `name` out of the store into the
    /// quarantine folder (`<node>/quarantine/<version>/<name>`), durably,
    /// then removes it from the store; answers where it went.
    pub async fn quarantine(&self, name: &FileName) -> Result<Option<std::path::PathBuf>, FileError> {
        let Some(handle) = self.open(name).await? else { return Ok(None) };
        let folder = self.tombstones.quarantine().join(handle.entry().modified_ns.to_string());
        let target = folder.join(name.as_str());
        let temp = self.tombstones.quarantine().join(format!(".partial-{:016x}", rand::random::<u64>()));
        let kept = async {
            tokio::fs::create_dir_all(&folder).await?;
            let mut file = tokio::fs::File::create(&temp).await?;
            let mut content = whole(handle);
            while let Some(chunk) = content.next().await {
                tokio::io::AsyncWriteExt::write_all(&mut file, &chunk.map_err(std::io::Error::other)?).await?;
            }
            file.sync_all().await?;
            tokio::fs::rename(&temp, &target).await?;
            self.tombstones.sync().await
        }
        .await;
        if let Err(e) = kept {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(FileError::Store(format!("cannot move {name} to quarantine: {e}")));
        }
        self.remove(name).await?;
        Ok(Some(target))
    }

    /// Records the deletion of `name` at `at` here and removes this node's
    /// copy unless it is newer; answers whether a copy was removed.
    pub async fn forget(&self, name: &FileName, at: u64) -> Result<bool, FileError> {
        self.tombstones.record(name, at).await.map_err(|e| {
            let why = format!("cannot record the deletion of {name}: {e}");
            if crate::store::space::is_full(&e) { FileError::NoRoom(why) } else { FileError::Store(why) }
        })?;
        match self.entry(name).await? {
            Some(entry) if entry.modified_ns <= at => Ok(self.plugins.remove(name).await?),
            _ => Ok(false),
        }
    }

    /// Removes this node's copy of `name`; answers whether there was one.
    pub async fn remove(&self, name: &FileName) -> Result<bool, FileError> {
        Ok(self.plugins.remove(name).await?)
    }

    /// Streams `body` into the store through the upload plugin, refusing it
    /// past `write.limit` bytes; a version stored clears older tombstones.
    /// Whatever goes wrong, a partial upload is abandoned and leaves nothing
    /// behind.
    pub async fn write<S, E>(&self, write: LocalWrite<'_>, body: S) -> Result<FileEntry, FileError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let mut upload = self.plugins.upload(write.name, write.overwrite, write.modified_ns).await?;
        let body = std::pin::pin!(body);
        let mut body = Gather::new(body, self.chunk_bytes, write.limit);
        while let Some(batch) = body.next().await {
            match batch {
                Ok(batch) => upload.write(batch.into_pieces()).await?,
                Err(e) => {
                    upload.abort().await;
                    return Err(e);
                }
            }
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
        let finished = upload.finish(expected).await?;
        self.stored(write.name, &finished).await;
        Ok(finished.entry)
    }

    /// A version of `name` is stored here: older tombstones go, it needs no
    /// confirming, and its content is kept in memory if it is small (as the
    /// upload handed it over, hashed to the entry's hash).
    pub async fn stored(&self, name: &FileName, finished: &Finished) {
        let entry = &finished.entry;
        if let (Some(digest), Some(content)) = (entry.blake3, &finished.small) {
            self.cache.keep(digest, content.clone());
        }
        self.tombstones.confirm(name.as_str());
        if let Err(e) = self.tombstones.clear_before(name, entry.modified_ns).await {
            tracing::warn!(file = %name, "could not clear its tombstone: {e}");
        }
    }
}

impl Local {
    /// Writes again the journaled writes a crash left in the journal (see
    /// `store::journal`), in order, unless this node has a newer version or
    /// a deletion of the name since; then syncs the store once. Answers how
    /// many were written again. A name the host no longer accepts is left
    /// out with a log line. A copy written again is not taken as confirmed
    /// (see `tombstones`): it is what the node had before it stopped.
    /// (A create is written again over an older file too: the removal of
    /// that file may be what the crash lost.)
    pub async fn replay(&self, writes: Vec<Journaled>) -> Result<usize, FileError> {
        if writes.is_empty() {
            return Ok(0);
        }
        let mut replayed = 0;
        for write in writes {
            let name = match FileName::parse(&write.name) {
                Ok(name) => name,
                Err(e) => {
                    tracing::warn!(file = write.name, "a journaled write is not replayed: {e}");
                    continue;
                }
            };
            let deleted = self.tombstones.get(&name).is_some_and(|at| at >= write.version_ns);
            // The index's own entry: a file without a valid record may be
            // what the crash left of this very write.
            let kept = match self.plugins.entry(&name).await? {
                Some(entry) => entry.blake3.is_some() && entry.modified_ns > write.version_ns,
                None => false,
            };
            if deleted || kept {
                continue;
            }
            let mut upload = self.plugins.replay_upload(&name, write.version_ns).await?;
            if !write.content.is_empty() {
                upload.write(vec![write.content.clone()]).await?;
            }
            upload.finish(Some(write.blake3)).await?;
            replayed += 1;
        }
        let plugins = self.plugins.clone();
        tokio::task::spawn_blocking(move || plugins.sync())
            .await
            .map_err(|e| FileError::Store(format!("syncing the replayed writes: {e}")))?
            .map_err(|e| FileError::Store(format!("syncing the replayed writes: {e}")))?;
        Ok(replayed)
    }
}

/// The whole content of an open file, as a stream.
pub fn whole(handle: DownloadHandle) -> BoxStream<'static, Result<Bytes, PluginError>> {
    match handle.entry().size {
        0 => futures_util::stream::empty().boxed(),
        size => handle.stream(0..=size - 1).boxed(),
    }
}
