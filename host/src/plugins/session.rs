//! The calls the host makes into plugins. Each runs on a blocking thread with
//! a fresh `Store` and instance; every single call into the guest gets the
//! configured deadline. Uploads and downloads are sessions: a bounded channel
//! of chunks between the async side and the plugin's thread, so memory stays
//! bounded whatever the file size.

use std::ops::RangeInclusive;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::{mpsc, oneshot};
use wasmtime::Store;
use wasmtime::component::ResourceAny;

use super::bindings::{FileEntry, WitError};
use super::engine::ticks_for;
use super::sandbox::Sandbox;
use super::{Loaded, PluginError, PluginHost, PluginKind};
use crate::store::FileName;

/// Chunks in flight between a session's plugin thread and its HTTP side.
const CHANNEL_CHUNKS: usize = 4;

impl PluginHost {
    fn store_for(&self, plugin: &Arc<str>, kind: PluginKind) -> Result<Store<Sandbox>, PluginError> {
        Sandbox::new_store(&self.engine, plugin, kind, &self.store_root, self.limits.memory_bytes).map_err(|e| {
            PluginError::Trapped { plugin: plugin.clone(), detail: format!("cannot set up its sandbox: {e:#}") }
        })
    }

    /// A fresh store and instance of `plugin`, instantiated under the deadline.
    fn instantiate<P, I>(
        &self,
        plugin: &Loaded<P>,
        kind: PluginKind,
        instantiate: impl FnOnce(&P, &mut Store<Sandbox>) -> wasmtime::Result<I>,
    ) -> Result<(Store<Sandbox>, I), PluginError> {
        let mut store = self.store_for(&plugin.name, kind)?;
        let instance = self.guarded(&mut store, &plugin.name, |s| instantiate(&plugin.pre, s).map(Ok))?;
        Ok((store, instance))
    }

    /// One call into a plugin under the deadline, with its failure classified.
    fn guarded<T>(
        &self,
        store: &mut Store<Sandbox>,
        plugin: &Arc<str>,
        call: impl FnOnce(&mut Store<Sandbox>) -> wasmtime::Result<Result<T, WitError>>,
    ) -> Result<T, PluginError> {
        store.set_epoch_deadline(ticks_for(self.limits.call_timeout));
        let outcome = call(store);
        PluginError::from_call(store, plugin, self.limits.call_timeout, outcome)
    }

    /// Lists the node's files through the index plugin.
    pub async fn list(self: &Arc<Self>) -> Result<Vec<FileEntry>, PluginError> {
        let host = self.clone();
        blocking(move || {
            let plugin = loaded(&host.index, PluginKind::Index)?;
            let (mut store, instance) = host.instantiate(plugin, PluginKind::Index, |pre, s| pre.instantiate(s))?;
            host.guarded(&mut store, &plugin.name, |s| instance.ringshare_plugin_index().call_list(s))
        })
        .await
    }

    /// Starts writing `name` through the upload plugin, with `modified_ns` as
    /// its modification time if given. Fails at once when the plugin refuses
    /// (for instance: exists and not `overwrite`).
    pub async fn upload(
        self: &Arc<Self>,
        name: &FileName,
        overwrite: bool,
        modified_ns: Option<u64>,
    ) -> Result<UploadHandle, PluginError> {
        loaded(&self.upload, PluginKind::Upload)?;
        let (chunks, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let (opened_tx, opened) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        let (host, name) = (self.clone(), name.as_str().to_owned());
        tokio::task::spawn_blocking(move || {
            let _ = done_tx.send(host.upload_session(&name, overwrite, modified_ns, rx, opened_tx));
        });
        opened.await.unwrap_or_else(|_| Err(session_lost(PluginKind::Upload)))?;
        Ok(UploadHandle { chunks: Some(chunks), done })
    }

    /// Removes `name` through the upload plugin; answers whether it existed.
    pub async fn remove(self: &Arc<Self>, name: &FileName) -> Result<bool, PluginError> {
        let (host, name) = (self.clone(), name.as_str().to_owned());
        blocking(move || {
            let plugin = loaded(&host.upload, PluginKind::Upload)?;
            let (mut store, instance) = host.instantiate(plugin, PluginKind::Upload, |pre, s| pre.instantiate(s))?;
            host.guarded(&mut store, &plugin.name, |s| instance.ringshare_plugin_upload().call_remove(s, &name))
        })
        .await
    }

    fn upload_session(
        &self,
        name: &str,
        overwrite: bool,
        modified_ns: Option<u64>,
        mut rx: mpsc::Receiver<UploadMsg>,
        opened: oneshot::Sender<Result<(), PluginError>>,
    ) -> Result<FileEntry, PluginError> {
        let plugin = loaded(&self.upload, PluginKind::Upload)?;
        let start = || {
            let (mut store, instance) = self.instantiate(plugin, PluginKind::Upload, |pre, s| pre.instantiate(s))?;
            let writer = self.guarded(&mut store, &plugin.name, |s| {
                instance.ringshare_plugin_upload().call_create(s, name, overwrite, modified_ns)
            })?;
            Ok::<_, PluginError>((store, instance, writer))
        };
        let (mut store, instance, writer) = match start() {
            Ok(started) => {
                let _ = opened.send(Ok(()));
                started
            }
            Err(e) => {
                let _ = opened.send(Err(e.clone()));
                return Err(e);
            }
        };
        let api = instance.ringshare_plugin_upload().writer();
        let result = loop {
            match rx.blocking_recv() {
                Some(UploadMsg::Chunk(chunk)) => {
                    if let Err(e) = self.guarded(&mut store, &plugin.name, |s| api.call_write(s, writer, &chunk)) {
                        break Err(e);
                    }
                }
                Some(UploadMsg::Finish) => {
                    break self.guarded(&mut store, &plugin.name, |s| api.call_finish(s, writer));
                }
                None => break Err(PluginError::Cancelled),
            }
        };
        // Unfinished, the writer's destructor removes its temp file.
        self.release(&mut store, &plugin.name, writer, &result);
        result
    }

    /// Opens `name` through the download plugin; the handle carries its
    /// entry (size, sha256) and streams any range of it.
    pub async fn download(self: &Arc<Self>, name: &FileName) -> Result<DownloadHandle, PluginError> {
        loaded(&self.download, PluginKind::Download)?;
        let (tx, chunks) = mpsc::channel(CHANNEL_CHUNKS);
        let (opened_tx, opened) = oneshot::channel();
        let (range_tx, range_rx) = oneshot::channel();
        let (host, name) = (self.clone(), name.as_str().to_owned());
        tokio::task::spawn_blocking(move || host.download_session(&name, opened_tx, range_rx, tx));
        let entry = opened.await.unwrap_or_else(|_| Err(session_lost(PluginKind::Download)))?;
        Ok(DownloadHandle { entry, range: range_tx, chunks })
    }

    fn download_session(
        &self,
        name: &str,
        opened: oneshot::Sender<Result<FileEntry, PluginError>>,
        range: oneshot::Receiver<RangeInclusive<u64>>,
        tx: mpsc::Sender<Result<Bytes, PluginError>>,
    ) {
        let Ok(plugin) = loaded(&self.download, PluginKind::Download) else {
            return;
        };
        let start = || {
            let (mut store, instance) = self.instantiate(plugin, PluginKind::Download, |pre, s| pre.instantiate(s))?;
            let api = instance.ringshare_plugin_download();
            let reader = self.guarded(&mut store, &plugin.name, |s| api.call_open(s, name))?;
            let entry = self.guarded(&mut store, &plugin.name, |s| api.reader().call_entry(s, reader).map(Ok))?;
            Ok::<_, PluginError>((store, instance, reader, entry))
        };
        let (mut store, instance, reader, entry) = match start() {
            Ok(started) => started,
            Err(e) => {
                let _ = opened.send(Err(e));
                return;
            }
        };
        let api = instance.ringshare_plugin_download().reader();
        let chunk = self.limits.chunk_bytes as u64;
        let mut result = Ok(());
        if opened.send(Ok(entry)).is_ok()
            && let Ok(range) = range.blocking_recv()
        {
            let (mut offset, end) = (*range.start(), *range.end() + 1);
            while offset < end {
                let len = chunk.min(end - offset) as u32;
                let read = self.guarded(&mut store, &plugin.name, |s| api.call_read(s, reader, offset, len));
                let item = match read {
                    Ok(bytes) if bytes.is_empty() => Err(PluginError::Refused {
                        plugin: plugin.name.clone(),
                        refusal: super::Refusal::OutOfRange,
                        message: format!("{name} ended at {offset} bytes, before the requested range"),
                    }),
                    Ok(bytes) => Ok(Bytes::from(bytes)),
                    Err(e) => Err(e),
                };
                offset += item.as_ref().map_or(0, |b| b.len() as u64);
                let failed = item.is_err();
                if let Err(e) = &item {
                    result = Err(e.clone());
                }
                if tx.blocking_send(item).is_err() || failed {
                    break;
                }
            }
        }
        self.release(&mut store, &plugin.name, reader, &result);
    }

    /// Drops a guest resource, unless the instance is dead (after a trap
    /// nothing can run in it any more).
    fn release<T>(
        &self,
        store: &mut Store<Sandbox>,
        plugin: &Arc<str>,
        handle: ResourceAny,
        after: &Result<T, PluginError>,
    ) {
        if matches!(after, Err(e) if e.is_plugin_fault()) {
            return;
        }
        store.set_epoch_deadline(ticks_for(self.limits.call_timeout));
        if let Err(e) = handle.resource_drop(&mut *store) {
            tracing::warn!(plugin = %plugin, "releasing a plugin resource failed: {e:#}");
        }
    }
}

fn loaded<P>(slot: &Option<Loaded<P>>, kind: PluginKind) -> Result<&Loaded<P>, PluginError> {
    slot.as_ref().ok_or(PluginError::Unavailable(kind))
}

fn session_lost(kind: PluginKind) -> PluginError {
    PluginError::Trapped {
        plugin: Arc::from(format!("<{kind} session>")),
        detail: "the session ended unexpectedly".into(),
    }
}

/// Runs a plugin call on a blocking thread. A call cut short because the
/// node is shutting down ends as cancelled.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PluginError> + Send + 'static,
) -> Result<T, PluginError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(PluginError::Cancelled),
    }
}

enum UploadMsg {
    Chunk(Bytes),
    Finish,
}

/// An upload in progress. Dropped without [`UploadHandle::finish`], the
/// upload is abandoned and leaves nothing behind.
pub struct UploadHandle {
    chunks: Option<mpsc::Sender<UploadMsg>>,
    done: oneshot::Receiver<Result<FileEntry, PluginError>>,
}

impl UploadHandle {
    /// Hands the next chunk to the plugin; waits while the plugin is behind.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), PluginError> {
        let sent = match &self.chunks {
            Some(chunks) => chunks.send(UploadMsg::Chunk(chunk)).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The session ended early: its result says why.
        self.chunks = None;
        match (&mut self.done).await {
            Ok(Err(e)) => Err(e),
            _ => Err(session_lost(PluginKind::Upload)),
        }
    }

    /// Commits the upload and returns the stored file's entry.
    pub async fn finish(mut self) -> Result<FileEntry, PluginError> {
        if let Some(chunks) = self.chunks.take() {
            let _ = chunks.send(UploadMsg::Finish).await;
        }
        self.done.await.unwrap_or_else(|_| Err(session_lost(PluginKind::Upload)))
    }

    /// Abandons the upload and waits until the plugin has cleaned up.
    pub async fn abort(mut self) {
        self.chunks = None;
        let _ = self.done.await;
    }
}

/// An open file on the download plugin.
pub struct DownloadHandle {
    entry: FileEntry,
    range: oneshot::Sender<RangeInclusive<u64>>,
    chunks: mpsc::Receiver<Result<Bytes, PluginError>>,
}

impl DownloadHandle {
    /// The file's entry: size and sha256 of exactly what will be read.
    pub fn entry(&self) -> &FileEntry {
        &self.entry
    }

    /// Streams the bytes of `range` (inclusive, within the file). Dropping the
    /// stream stops the plugin's reads.
    pub fn stream(self, range: RangeInclusive<u64>) -> impl Stream<Item = Result<Bytes, PluginError>> + Send {
        let _ = self.range.send(range);
        futures_util::stream::unfold(
            self.chunks,
            |mut chunks| async move { chunks.recv().await.map(|item| (item, chunks)) },
        )
    }
}
