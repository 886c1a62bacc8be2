//! The calls the host makes into plugins. Each runs on a blocking thread with
//! a fresh `Store` and instance; every single call into the guest gets the
//! configured deadline. Uploads and downloads are sessions: the plugin opens
//! the file and hands over a `wasi:io` stream (an upload's content: the open
//! file), which the session's thread fills or drains natively, hashing every byte written and checking every
//! block read against the file's outboard before it leaves. A bounded
//! channel of chunks links the thread to the async side, so memory stays
//! bounded whatever the file size.

use std::ops::RangeInclusive;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use wasmtime::Store;
use wasmtime::component::{Resource, ResourceAny};
use wasmtime_wasi::p2::{DynInputStream, StreamError};

use super::bindings::WitError;
use super::content::ContentFile;
use super::engine::ticks_for;
use super::registry::{Call, Loaded};
use super::sandbox::Sandbox;
use super::store_index::{self, Filling, Listing, Lookup};
use super::{FileEntry, PluginError, PluginHost, PluginKind, Pre, Refusal};
use crate::integrity::{self, BLOCK, Digest, Outboard, TreeHasher, Verifier, trim};
use crate::store::digest::{KeyRange, Plan, Sum};
use crate::store::journal::{CONTENT_AT_MOST, Journaled, Lease};
use crate::store::{FileName, space};

/// Chunks in flight between a session's plugin thread and its HTTP side.
const CHANNEL_CHUNKS: usize = 8;
/// Most bytes asked of a content stream at once (wasmtime-wasi reads files
/// in pieces of at most 64 KiB).
const READ_PIECE: usize = 64 << 10;
/// Outboard bytes gathered before they are written out.
const OUTBOARD_BATCH: usize = 64 << 10;
/// An upload refused for want of room.
fn no_room(e: space::NoRoom) -> PluginError {
    PluginError::NoRoom(e.to_string())
}

/// Entries asked of an index plugin per page of its listing.
const LIST_PAGE: u32 = 1024;
/// Most entries one listing may bring: a plugin whose listing goes on past
/// this is taken for one that never ends it.
const LIST_AT_MOST: usize = 1 << 25;

/// A file opened for reading: its entry, and its outboard when it has one.
type Opened = (FileEntry, Option<Arc<Outboard>>);

/// Times a reader is opened again when a file's outboard does not match its
/// record: an overwrite commits them with separate renames.
const OPEN_ATTEMPTS: usize = 3;

impl PluginHost {
    /// A fresh store and instance of `plugin`, instantiated under its deadline.
    fn instantiate<I>(
        &self,
        plugin: &Loaded,
        instantiate: impl FnOnce(&Pre, &mut Store<Sandbox>) -> wasmtime::Result<I>,
    ) -> Result<(Store<Sandbox>, I), PluginError> {
        let mut store =
            Sandbox::new_store(&self.engine, &plugin.file, &plugin.grant, &self.store_root).map_err(|e| {
                PluginError::Trapped {
                    plugin: plugin.file.clone(),
                    detail: format!("cannot set up its sandbox: {e:#}"),
                }
            })?;
        // Instantiating is set-up, not a call: not counted in the metrics.
        start_call(&mut store, plugin.grant.call_timeout);
        let instance = match instantiate(&plugin.pre, &mut store) {
            // Every slot in use is the node's state, not the plugin's fault.
            Err(e) if e.is::<wasmtime::PoolConcurrencyLimitError>() => {
                return Err(PluginError::Crowded { plugin: plugin.file.clone(), slots: self.limits.instances_at_once });
            }
            instance => instance.map(Ok),
        };
        let instance = PluginError::from_call(&store, &plugin.file, plugin.grant.call_timeout, instance)?;
        Ok((store, instance))
    }

    /// One call into a plugin under its deadline, with its failure classified.
    fn guarded<T>(
        &self,
        store: &mut Store<Sandbox>,
        plugin: &Loaded,
        call: impl FnOnce(&mut Store<Sandbox>) -> wasmtime::Result<Result<T, WitError>>,
    ) -> Result<T, PluginError> {
        let started = std::time::Instant::now();
        let outcome = self.deadlined(store, plugin, call);
        self.counted(plugin, started, &outcome);
        outcome
    }

    /// Runs `call` under the plugin's deadline and classifies its failure.
    fn deadlined<T>(
        &self,
        store: &mut Store<Sandbox>,
        plugin: &Loaded,
        call: impl FnOnce(&mut Store<Sandbox>) -> wasmtime::Result<Result<T, WitError>>,
    ) -> Result<T, PluginError> {
        start_call(store, plugin.grant.call_timeout);
        let outcome = call(store);
        PluginError::from_call(store, &plugin.file, plugin.grant.call_timeout, outcome)
    }

    /// The node's files, from the host's index of the store: filled by the
    /// index plugin's listing on first use (requests that need it together
    /// wait for one listing), then kept by every write and removal, with the
    /// files changed by hand read again one by one. Entries that break the
    /// contract (a name that is not one plain segment, a hash that is not a
    /// digest) are left out with a log line naming the plugin. Answers
    /// `Unavailable` while no index plugin is loaded.
    pub async fn list(self: &Arc<Self>) -> Result<Listing, PluginError> {
        self.call(PluginKind::Index)?;
        self.settle().await?;
        Ok(self.index.listing().expect("a settled index is filled"))
    }

    /// The sums of this node's files over the ranges of `plan` (see
    /// `store::digest`), from the host's index, brought up to date first.
    pub async fn file_sums(self: &Arc<Self>, plan: &Plan) -> Result<Vec<Sum>, PluginError> {
        self.call(PluginKind::Index)?;
        self.settle().await?;
        Ok(self.index.sums(plan).expect("a settled index is filled"))
    }

    /// This node's files whose names' keys fall in one of `ranges`.
    pub async fn files_in(self: &Arc<Self>, ranges: &[KeyRange]) -> Result<Vec<FileEntry>, PluginError> {
        self.call(PluginKind::Index)?;
        self.settle().await?;
        Ok(self.index.entries_in(ranges).expect("a settled index is filled"))
    }

    /// This node's entry for `name`, if it has a complete file of that name:
    /// from the index, which reads the name again if it changed by hand.
    /// Until the store has been listed once (a large store lists for a
    /// while after the node starts), the name is read on its own instead
    /// of after the whole listing.
    pub async fn entry(self: &Arc<Self>, name: &FileName) -> Result<Option<FileEntry>, PluginError> {
        match self.index.lookup(name.as_str()) {
            Lookup::Known(entry) => return Ok(entry),
            Lookup::Unsure if !self.index.filled() => return self.read_entry(name).await,
            Lookup::Unsure => {}
        }
        self.settle().await?;
        Ok(self.index.held(name.as_str()))
    }

    /// The entry of `name` as the download plugin opens it, past the index.
    async fn read_entry(self: &Arc<Self>, name: &FileName) -> Result<Option<FileEntry>, PluginError> {
        match self.download(name).await {
            Ok(handle) => Ok(Some(handle.entry().clone())),
            Err(PluginError::Refused { refusal: Refusal::NotFound, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Brings the index up to date: a listing of the store if it has none
    /// (or lost track), else the names changed by hand read again. One
    /// settling at a time; those who waited for a listing that failed share
    /// its failure.
    async fn settle(self: &Arc<Self>) -> Result<(), PluginError> {
        if !self.index.needs_fill() && self.index.unsure().is_empty() {
            return Ok(());
        }
        let seen = self.index.fills_ended();
        let _one = self.index.one_at_a_time().await;
        if self.index.needs_fill() {
            if let Some(failed) = self.index.failure_since(seen) {
                return Err(failed);
            }
            return self.fill().await;
        }
        let unsure = self.index.unsure();
        if unsure.len() > store_index::SETTLE_BY_NAME_AT_MOST {
            return self.fill().await;
        }
        for name in unsure {
            let Ok(file) = FileName::parse(&name) else {
                self.index.settled(&name, None);
                continue;
            };
            match self.read_entry(&file).await {
                Ok(entry) => self.index.settled(&name, entry.as_ref()),
                // The download plugin cannot say: the index plugin can.
                Err(_) => return self.fill().await,
            }
        }
        Ok(())
    }

    /// Fills the index with the index plugin's listing of the store.
    async fn fill(self: &Arc<Self>) -> Result<(), PluginError> {
        let (host, plugin) = (self.clone(), self.call(PluginKind::Index)?);
        self.index.begin_fill();
        let listed = blocking(move || {
            let mut filling = Filling::default();
            host.list_on(&plugin, |entry| filling.add(entry)).map(|()| filling)
        })
        .await;
        match listed {
            Ok(filling) => {
                tracing::debug!(files = filling.len(), "the store is listed");
                self.index.end_fill(Ok(filling));
                Ok(())
            }
            Err(e) => {
                self.index.end_fill(Err(Some(&e)));
                Err(e)
            }
        }
    }

    /// Asks the index plugin for its listing now, past the host's index
    /// (for `plugin check`, which exercises the plugin itself).
    pub async fn list_by_plugin(self: &Arc<Self>) -> Result<Vec<FileEntry>, PluginError> {
        let (host, plugin) = (self.clone(), self.call(PluginKind::Index)?);
        blocking(move || {
            let mut entries = Vec::new();
            host.list_on(&plugin, |entry| entries.push(entry)).map(|()| entries)
        })
        .await
    }

    /// Lists the store through `plugin` (an index plugin), on this thread,
    /// handing each entry to `found`, page by page ([`LIST_PAGE`] entries
    /// asked at a time, each page under the plugin's deadline). Entries
    /// that break the contract are left out with a log line; a page longer
    /// than asked, or a listing that never ends, fails it.
    pub(super) fn list_on(&self, plugin: &Loaded, mut found: impl FnMut(FileEntry)) -> Result<(), PluginError> {
        let (mut store, instance) = self.instantiate(plugin, |pre, s| pre.index()?.instantiate(s))?;
        let api = instance.ringshare_plugin_index();
        let listing = self.guarded(&mut store, plugin, |s| api.call_list(s))?;
        let mut listed = 0usize;
        let mut pages = || loop {
            let page = self.guarded(&mut store, plugin, |s| api.listing().call_next(s, listing, LIST_PAGE))?;
            if page.is_empty() {
                return Ok(());
            }
            if page.len() > LIST_PAGE as usize {
                let why = format!("answered a page of {} entries where at most {LIST_PAGE} were asked", page.len());
                return Err(broken(&plugin.file, why));
            }
            listed += page.len();
            if listed > LIST_AT_MOST {
                return Err(broken(&plugin.file, format!("listed more than {LIST_AT_MOST} entries without an end")));
            }
            for entry in page {
                match FileEntry::from_wit(entry) {
                    Ok(entry) => found(self.with_record(entry)),
                    Err(why) => tracing::warn!(plugin = %plugin.file, "left out of the listing: {why}"),
                }
            }
        };
        let result = pages();
        self.release(&mut store, plugin, listing, &result);
        result
    }

    /// Starts writing `name` through the upload plugin, with `modified_ns` as
    /// its modification time if given. The host hashes what it writes (see
    /// [`UploadHandle::finish`]). Fails at once when the plugin refuses (for
    /// instance: exists and not `overwrite`).
    pub async fn upload(
        self: &Arc<Self>,
        name: &FileName,
        overwrite: bool,
        modified_ns: Option<u64>,
    ) -> Result<UploadHandle, PluginError> {
        self.start_upload(name, overwrite, modified_ns, false).await
    }

    /// Writes `name` again at `version_ns` as a journaled write replayed
    /// after a crash: nothing is synced per file (the replay syncs once at
    /// its end, before the journal lets the write go).
    pub async fn replay_upload(
        self: &Arc<Self>,
        name: &FileName,
        version_ns: u64,
    ) -> Result<UploadHandle, PluginError> {
        self.start_upload(name, true, Some(version_ns), true).await
    }

    async fn start_upload(
        self: &Arc<Self>,
        name: &FileName,
        overwrite: bool,
        modified_ns: Option<u64>,
        replay: bool,
    ) -> Result<UploadHandle, PluginError> {
        let plugin = self.call(PluginKind::Upload)?;
        // A full disk refuses before the plugin makes anything.
        space::room_for(&self.store_root, 0, self.limits.reserve_free_bytes).map_err(no_room)?;
        let (chunks, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let (opened_tx, opened) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        let (host, name, rt) = (self.clone(), name.clone(), Handle::current());
        tokio::task::spawn_blocking(move || {
            let request = UploadRequest { name: &name, overwrite, modified_ns, replay };
            let _ = done_tx.send(host.upload_session(&rt, &plugin, request, rx, opened_tx));
        });
        match opened.await {
            Ok(opened) => opened?,
            Err(_) => return Err(session_lost(PluginKind::Upload).await),
        }
        Ok(UploadHandle {
            chunks: Some(chunks),
            done,
            tree: TreeHasher::new(),
            cvs: Vec::new(),
            small: Some(Vec::new()),
        })
    }

    /// Removes `name` through the upload plugin; answers whether it existed.
    pub async fn remove(self: &Arc<Self>, name: &FileName) -> Result<bool, PluginError> {
        let (host, name, plugin) = (self.clone(), name.as_str().to_owned(), self.call(PluginKind::Upload)?);
        blocking(move || {
            let (mut store, instance) = host.instantiate(&plugin, |pre, s| pre.upload()?.instantiate(s))?;
            let removed =
                host.guarded(&mut store, &plugin, |s| instance.ringshare_plugin_upload().call_remove(s, &name));
            if removed.is_ok() {
                host.records.forget(&name);
                host.index.removed(&name);
            }
            removed
        })
        .await
    }

    fn upload_session(
        &self,
        rt: &Handle,
        plugin: &Call,
        request: UploadRequest<'_>,
        mut rx: mpsc::Receiver<UploadMsg>,
        opened: oneshot::Sender<Result<(), PluginError>>,
    ) -> Result<FileEntry, PluginError> {
        let name = request.name.as_str();
        let start = || {
            let (mut store, instance) = self.instantiate(plugin, |pre, s| pre.upload()?.instantiate(s))?;
            let api = instance.ringshare_plugin_upload();
            let writer =
                self.guarded(&mut store, plugin, |s| api.call_create(s, name, request.overwrite, request.modified_ns))?;
            let content = (|| -> Result<_, PluginError> {
                let content = self.guarded(&mut store, plugin, |s| api.writer().call_content(s, writer))?;
                let content = take_resource(&mut store, &plugin.file, content)?;
                ContentFile::from_descriptor(content).map_err(|why| broken(&plugin.file, why))
            })();
            match content {
                Ok(content) => Ok((store, instance, writer, content)),
                Err(e) => {
                    self.release(&mut store, plugin, writer, &Err::<(), _>(e.clone()));
                    Err(e)
                }
            }
        };
        let (mut store, instance, writer, mut content) = match start() {
            Ok(started) => {
                let _ = opened.send(Ok(()));
                started
            }
            Err(e) => {
                let e = self.for_want_of_room(e);
                let _ = opened.send(Err(e.clone()));
                return Err(e);
            }
        };
        let api = instance.ringshare_plugin_upload().writer();
        let io = |e: &dyn std::fmt::Display| PluginError::Refused {
            plugin: plugin.file.clone(),
            refusal: Refusal::Io,
            message: format!("writing {name}: {e}"),
        };
        // The outboard is asked for when there is some to write: a file of
        // one block has none, and its upload makes no outboard file.
        let mut outboard = None;
        let mut write_outboard = |store: &mut Store<Sandbox>, cvs: Bytes| -> Result<(), PluginError> {
            if cvs.is_empty() {
                return Ok(());
            }
            let stream = match &mut outboard {
                Some(stream) => stream,
                None => {
                    let stream = self.guarded(store, plugin, |s| api.call_outboard(s, writer))?;
                    outboard.insert(take_resource(store, &plugin.file, stream)?)
                }
            };
            rt.block_on(stream.blocking_write_and_flush(cvs)).map_err(|e| io(&e))
        };
        let mut durable = Durable::Later;
        let result = loop {
            match rx.blocking_recv() {
                Some(UploadMsg::Chunk { pieces, cvs }) => {
                    let more = pieces.iter().map(|p| p.len() as u64).sum();
                    if let Err(e) = space::room_for(&self.store_root, more, self.limits.reserve_free_bytes) {
                        break Err(no_room(e));
                    }
                    if let Err(e) = content.write(&pieces) {
                        break Err(if space::is_full(&e) { PluginError::NoRoom(e.to_string()) } else { io(&e) });
                    }
                    if let Some(cvs) = cvs
                        && let Err(e) = write_outboard(&mut store, cvs)
                    {
                        break Err(e);
                    }
                }
                Some(UploadMsg::Finish { size, root, cvs, expected, small }) => {
                    if let Err(e) = write_outboard(&mut store, cvs) {
                        break Err(e);
                    }
                    if let Some(expected) = expected.filter(|e| *e != root) {
                        break Err(PluginError::Corrupt(format!(
                            "the copy of {name} received hashes to {root}, not {expected}"
                        )));
                    }
                    drop((content, outboard.take()));
                    // The content is on disk before the plugin makes it
                    // visible: a crash never leaves a visible file whose
                    // bytes did not reach the disk and are not replayed.
                    durable = match self.make_durable(&request, root, small) {
                        Ok(durable) => durable,
                        Err(e) => break Err(io(&e)),
                    };
                    // A reader that finds the version the moment the plugin
                    // makes it visible has its hash from the host already.
                    let _visible = request.modified_ns.map(|at| self.records.pending(name, size, at, root));
                    let finished =
                        self.guarded(&mut store, plugin, |s| api.call_finish(s, writer, size, &root.to_hex()));
                    break finished.and_then(|e| {
                        let entry = FileEntry::from_wit(e).map_err(|why| broken(&plugin.file, why))?;
                        if entry.name != name || entry.size != size || entry.blake3 != Some(root) {
                            return Err(broken(
                                &plugin.file,
                                format!("finished {name} ({size} bytes, {root}) but reported {entry:?}"),
                            ));
                        }
                        self.records.record(name, size, entry.modified_ns, root);
                        Ok(entry)
                    });
                }
                None => break Err(PluginError::Cancelled),
            }
        };
        let result = result.map_err(|e| self.for_want_of_room(e));
        // Unfinished, the writer's destructor removes its temp files.
        self.release(&mut store, plugin, writer, &result);
        let durable = match (&result, durable) {
            // Whatever the plugin made visible before it failed is on disk
            // (as the store's syncs would have made it), and the journal
            // does not replay the write.
            (Err(_), Durable::Journaled(lease)) => {
                if let Err(e) = self.synced.sync() {
                    tracing::warn!(file = name, "could not sync what a failed upload left: {e}");
                }
                lease.void();
                Durable::Later
            }
            (_, durable) => durable,
        };
        let entry = result?;
        self.index.stored(&entry);
        match durable {
            // The commit (renames, the record) is on disk before the upload
            // is acknowledged; the sync is shared with every upload
            // finishing now. A failed sync fails the upload: what reached
            // the disk is unknown.
            Durable::Synced => self.synced.sync().map_err(|e| io(&e))?,
            // The journal holds the write until a checkpoint, which waits
            // for the commit to be over and syncs it.
            Durable::Journaled(lease) => drop(lease),
            Durable::Later => {}
        }
        Ok(entry)
    }

    /// Makes an upload's content durable before the plugin commits it: a
    /// small content of a given version goes into the journal (one shared
    /// sync of one file, and the commit is then synced by a checkpoint);
    /// anything else is synced in place, and synced again once committed.
    /// A replayed write is made durable by its replay, at the end.
    fn make_durable(
        &self,
        request: &UploadRequest<'_>,
        root: Digest,
        small: Option<Bytes>,
    ) -> std::io::Result<Durable<'_>> {
        if request.replay {
            return Ok(Durable::Later);
        }
        match (self.journal.get(), request.modified_ns, small) {
            (Some(journal), Some(version_ns), Some(content)) => {
                let write = Journaled {
                    name: request.name.as_str().to_owned(),
                    overwrite: request.overwrite,
                    version_ns,
                    blake3: root,
                    content,
                };
                Ok(Durable::Journaled(journal.write(&write)?))
            }
            _ => self.synced.sync().map(|()| Durable::Synced),
        }
    }

    /// A plugin whose own writes failed (its temp file, its record, its
    /// outboard) on a disk without a chunk's room left failed for want of
    /// room.
    fn for_want_of_room(&self, e: PluginError) -> PluginError {
        match e {
            PluginError::Refused { refusal: Refusal::Io | Refusal::Other, message, .. }
                if space::room_for(&self.store_root, self.limits.chunk_bytes as u64, 0).is_err() =>
            {
                PluginError::NoRoom(message)
            }
            e => e,
        }
    }

    /// Opens `name` through the download plugin; the handle carries its
    /// entry (size, hash) and its verified outboard, and streams any range
    /// of it, checked block by block.
    pub async fn download(self: &Arc<Self>, name: &FileName) -> Result<DownloadHandle, PluginError> {
        self.download_with(name, None).await
    }

    /// Opens `name` to read `range` of it (inclusive, within the file): the
    /// plugin's thread reads on as soon as the file is open and checked,
    /// without waiting to be told the range. The handle streams that
    /// range whatever [`DownloadHandle::stream`] is given.
    pub async fn download_range(
        self: &Arc<Self>,
        name: &FileName,
        range: RangeInclusive<u64>,
    ) -> Result<DownloadHandle, PluginError> {
        self.download_with(name, Some(range)).await
    }

    async fn download_with(
        self: &Arc<Self>,
        name: &FileName,
        preset: Option<RangeInclusive<u64>>,
    ) -> Result<DownloadHandle, PluginError> {
        let plugin = self.call(PluginKind::Download)?;
        let (tx, chunks) = mpsc::channel(CHANNEL_CHUNKS);
        let (opened_tx, opened) = oneshot::channel();
        let (range_tx, range_rx) = oneshot::channel();
        let range_tx = match preset {
            Some(range) => {
                let _ = range_tx.send(range);
                None
            }
            None => Some(range_tx),
        };
        let (host, name, rt) = (self.clone(), name.clone(), Handle::current());
        tokio::task::spawn_blocking(move || host.download_session(&rt, &plugin, &name, opened_tx, range_rx, tx));
        let (entry, outboard) = match opened.await {
            Ok(opened) => opened?,
            Err(_) => return Err(session_lost(PluginKind::Download).await),
        };
        Ok(DownloadHandle { entry, outboard, range: range_tx, chunks })
    }

    fn download_session(
        &self,
        rt: &Handle,
        plugin: &Call,
        name: &FileName,
        opened: oneshot::Sender<Result<Opened, PluginError>>,
        range: oneshot::Receiver<RangeInclusive<u64>>,
        tx: mpsc::Sender<Result<Bytes, PluginError>>,
    ) {
        let (mut store, instance) = match self.instantiate(plugin, |pre, s| pre.download()?.instantiate(s)) {
            Ok(started) => started,
            Err(e) => {
                let _ = opened.send(Err(e));
                return;
            }
        };
        let api = instance.ringshare_plugin_download();
        let mut attempt = 0;
        let (reader, entry, outboard) = loop {
            attempt += 1;
            let reader = match self.guarded(&mut store, plugin, |s| api.call_open(s, name.as_str())) {
                Ok(reader) => reader,
                Err(e) => {
                    let _ = opened.send(Err(e));
                    return;
                }
            };
            let checked = self.open_checked(rt, &mut store, plugin, &instance, reader, name);
            match checked {
                Ok((entry, outboard)) => break (reader, entry, outboard),
                Err(e) => {
                    self.release(&mut store, plugin, reader, &Err::<(), _>(e.clone()));
                    if attempt < OPEN_ATTEMPTS && matches!(e, PluginError::Corrupt(_)) {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        continue;
                    }
                    let _ = opened.send(Err(e));
                    return;
                }
            }
        };
        let mut result = Ok(());
        if opened.send(Ok((entry.clone(), outboard.clone()))).is_ok()
            && let Ok(range) = range.blocking_recv()
        {
            let content = |s: &mut Store<Sandbox>, offset| {
                let stream = self.guarded(s, plugin, |s| api.reader().call_content(s, reader, offset))?;
                take_resource(s, &plugin.file, stream)
            };
            result = match outboard {
                Some(outboard) => {
                    let first = range.start() / BLOCK;
                    content(&mut store, first * BLOCK)
                        .and_then(|stream| send_verified(rt, stream, outboard, first, &range, name, &tx))
                }
                None => content(&mut store, *range.start())
                    .and_then(|stream| send_unverified(rt, stream, &range, name, &tx)),
            };
            if let Err(e) = &result {
                let _ = tx.blocking_send(Err(e.clone()));
            }
        }
        self.release(&mut store, plugin, reader, &result);
    }

    /// The entry of an open reader and, when the store has a record of the
    /// file, its outboard, checked against the recorded hash.
    fn open_checked(
        &self,
        rt: &Handle,
        store: &mut Store<Sandbox>,
        plugin: &Loaded,
        instance: &super::bindings::download::DownloadPlugin,
        reader: ResourceAny,
        name: &FileName,
    ) -> Result<(FileEntry, Option<Arc<Outboard>>), PluginError> {
        let api = instance.ringshare_plugin_download().reader();
        let entry = self.guarded(store, plugin, |s| api.call_entry(s, reader).map(Ok))?;
        let entry = FileEntry::from_wit(entry).map_err(|why| broken(&plugin.file, why))?;
        if entry.name != name.as_str() {
            return Err(broken(&plugin.file, format!("asked to open {name}, it opened {}", entry.name)));
        }
        let reported = entry.blake3.is_some();
        let entry = self.with_record(entry);
        let Some(root) = entry.blake3 else {
            return Ok((entry, None));
        };
        if integrity::outboard_len(entry.size) == 0 {
            // One block: the hash is the whole check, there is no outboard
            // to read.
            let outboard =
                Outboard::verified(root, entry.size, &[]).map_err(|e| PluginError::Corrupt(format!("{name}: {e}")))?;
            return Ok((entry, Some(Arc::new(outboard))));
        }
        let stream = self.guarded(store, plugin, |s| api.call_outboard(s, reader))?;
        let mut stream = take_resource(store, &plugin.file, stream)?;
        // Read one byte more than it should have, to tell a longer one.
        let wanted = integrity::outboard_len(entry.size) as usize + 1;
        let mut bytes = Vec::with_capacity(wanted.min(1 << 20));
        while bytes.len() < wanted {
            match rt.block_on(stream.blocking_read(READ_PIECE.min(wanted - bytes.len()))) {
                Ok(piece) => bytes.extend_from_slice(&piece),
                Err(StreamError::Closed) => break,
                Err(e) => return Err(io_error(&plugin.file, name, e)),
            }
        }
        match Outboard::verified(root, entry.size, &bytes) {
            Ok(outboard) => Ok((entry, Some(Arc::new(outboard)))),
            // The host's record is of this content, but the outboard beside
            // it is of a version whose commit a crash cut between its two
            // renames (outboard, then content): the content is hashed again,
            // as if unrecorded, and written with its own outboard.
            Err(_) if !reported => {
                tracing::warn!(file = %name, "its outboard is not of the recorded version: hashing it again");
                Ok((FileEntry { blake3: None, ..entry }, None))
            }
            Err(e) => Err(PluginError::Corrupt(format!("{name}: {e}"))),
        }
    }

    /// Drops a guest resource, unless the instance is dead (after a trap
    /// nothing can run in it any more).
    fn release<T>(
        &self,
        store: &mut Store<Sandbox>,
        plugin: &Loaded,
        handle: ResourceAny,
        after: &Result<T, PluginError>,
    ) {
        if matches!(after, Err(e) if e.is_plugin_fault()) {
            return;
        }
        start_call(store, plugin.grant.call_timeout);
        if let Err(e) = handle.resource_drop(&mut *store) {
            tracing::warn!(plugin = %plugin.file, "releasing a plugin resource failed: {e:#}");
        }
    }
}

impl Pre {
    fn index(&self) -> wasmtime::Result<&super::bindings::index::IndexPluginPre<Sandbox>> {
        match self {
            Pre::Index(pre) => Ok(pre),
            _ => Err(wasmtime::format_err!("not an index plugin")),
        }
    }

    fn upload(&self) -> wasmtime::Result<&super::bindings::upload::UploadPluginPre<Sandbox>> {
        match self {
            Pre::Upload(pre) => Ok(pre),
            _ => Err(wasmtime::format_err!("not an upload plugin")),
        }
    }

    fn download(&self) -> wasmtime::Result<&super::bindings::download::DownloadPluginPre<Sandbox>> {
        match self {
            Pre::Download(pre) => Ok(pre),
            _ => Err(wasmtime::format_err!("not a download plugin")),
        }
    }
}

/// Arms `store` for a call of at most `timeout`: the epoch deadline for
/// the guest's code, and the same deadline for its sleeps.
fn start_call(store: &mut Store<Sandbox>, timeout: std::time::Duration) {
    store.set_epoch_deadline(ticks_for(timeout));
    store.data_mut().start_call(timeout);
}

/// Why a session's thread went away without a word: the node is stopping
/// (its runtime no longer runs blocking work, so the thread was cancelled,
/// or failed when its WASI calls were), or the session broke.
async fn session_lost(kind: PluginKind) -> PluginError {
    if stopping().await {
        return PluginError::Stopping;
    }
    PluginError::Trapped {
        plugin: Arc::from(format!("<{kind} session>")),
        detail: "the session ended unexpectedly".into(),
    }
}

/// Whether the runtime has stopped taking blocking work: the node is going
/// away. Asked only once something has already failed.
async fn stopping() -> bool {
    tokio::task::spawn_blocking(|| ()).await.is_err()
}

/// Runs a plugin call on a blocking thread. A call cut short because the
/// node is stopping ends as [`PluginError::Stopping`].
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PluginError> + Send + 'static,
) -> Result<T, PluginError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) if e.is_panic() && !stopping().await => std::panic::resume_unwind(e.into_panic()),
        Err(e) => {
            if e.is_panic() {
                tracing::warn!("a plugin call panicked while the node was stopping: {e}");
            }
            Err(PluginError::Stopping)
        }
    }
}

enum UploadMsg {
    /// The next bytes, and the outboard they completed, if a batch is due.
    Chunk { pieces: Vec<Bytes>, cvs: Option<Bytes> },
    /// The end: what was hashed, the rest of the outboard, and the hash the
    /// content must have.
    Finish { size: u64, root: Digest, cvs: Bytes, expected: Option<Digest>, small: Option<Bytes> },
}

/// How an upload's commit is made durable (see `PluginHost::make_durable`).
enum Durable<'a> {
    /// By a sync of the store after it.
    Synced,
    /// By the journal, which holds the write until a checkpoint.
    Journaled(Lease<'a>),
    /// By the replay it is part of.
    Later,
}

/// An upload in progress. Dropped without [`UploadHandle::finish`], the
/// upload is abandoned and leaves nothing behind.
pub struct UploadHandle {
    chunks: Option<mpsc::Sender<UploadMsg>>,
    done: oneshot::Receiver<Result<FileEntry, PluginError>>,
    /// Hashing happens here, on the caller's side, so that it overlaps the
    /// session's thread writing the previous chunk.
    tree: TreeHasher,
    cvs: Vec<u8>,
    /// The content so far, while it is small enough to be journaled.
    small: Option<Vec<Bytes>>,
}

impl UploadHandle {
    /// Hashes the next bytes (consecutive pieces) and hands them to the
    /// session's thread; waits while the writing is behind.
    pub async fn write(&mut self, pieces: Vec<Bytes>) -> Result<(), PluginError> {
        for piece in &pieces {
            self.tree.update(piece, &mut self.cvs);
        }
        if self.tree.size() > CONTENT_AT_MOST as u64 {
            self.small = None;
        } else if let Some(small) = &mut self.small {
            small.extend(pieces.iter().cloned());
        }
        let cvs = (self.cvs.len() >= OUTBOARD_BATCH).then(|| Bytes::from(std::mem::take(&mut self.cvs)));
        let sent = match &self.chunks {
            Some(chunks) => chunks.send(UploadMsg::Chunk { pieces, cvs }).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The session ended early: its result says why.
        self.chunks = None;
        match (&mut self.done).await {
            Ok(Err(e)) => Err(e),
            _ => Err(session_lost(PluginKind::Upload).await),
        }
    }

    /// Commits the upload and returns the stored file's entry, with its
    /// content when it is small. Durably: the content is synced before the
    /// plugin makes it visible and the commit before this answers (syncs
    /// shared with the uploads finishing at the same time), or, for a small
    /// file of a given version, the content is in the journal before the
    /// plugin makes it visible (see `store::journal`). With `expected`, a
    /// content whose hash differs is discarded instead
    /// ([`PluginError::Corrupt`]).
    pub async fn finish(mut self, expected: Option<Digest>) -> Result<Finished, PluginError> {
        let small = self.small.take().map(|pieces| match pieces.as_slice() {
            [one] => one.clone(),
            pieces => Bytes::from(pieces.concat()),
        });
        if let Some(chunks) = self.chunks.take() {
            let size = self.tree.size();
            let root = std::mem::take(&mut self.tree).finish(&mut self.cvs);
            let cvs = Bytes::from(std::mem::take(&mut self.cvs));
            let _ = chunks.send(UploadMsg::Finish { size, root, cvs, expected, small: small.clone() }).await;
        }
        match (&mut self.done).await {
            Ok(done) => done.map(|entry| Finished { entry, small }),
            Err(_) => Err(session_lost(PluginKind::Upload).await),
        }
    }

    /// Abandons the upload and waits until the plugin has cleaned up.
    pub async fn abort(mut self) {
        self.chunks = None;
        let _ = self.done.await;
    }
}

/// A finished upload.
pub struct Finished {
    /// The stored file's entry.
    pub entry: FileEntry,
    /// Its whole content, when it is small (at most `CONTENT_AT_MOST`).
    pub small: Option<Bytes>,
}

/// An open file on the download plugin.
pub struct DownloadHandle {
    entry: FileEntry,
    outboard: Option<Arc<Outboard>>,
    /// Where the range to read is sent; none when it was given at opening.
    range: Option<oneshot::Sender<RangeInclusive<u64>>>,
    chunks: mpsc::Receiver<Result<Bytes, PluginError>>,
}

impl DownloadHandle {
    /// The file's entry: size and hash of exactly what will be read.
    pub fn entry(&self) -> &FileEntry {
        &self.entry
    }

    /// The file's outboard, checked against its hash; none when the store
    /// has no record of the file.
    pub fn outboard(&self) -> Option<&Arc<Outboard>> {
        self.outboard.as_ref()
    }

    /// Streams the bytes of `range` (inclusive, within the file), each block
    /// checked before it is handed over; a block that does not match ends
    /// the stream with [`PluginError::Corrupt`]. Dropping the stream stops
    /// the reads. A handle opened with its range streams that one.
    pub fn stream(self, range: RangeInclusive<u64>) -> impl Stream<Item = Result<Bytes, PluginError>> + Send {
        if let Some(tx) = self.range {
            let _ = tx.send(range);
        }
        futures_util::stream::unfold(
            self.chunks,
            |mut chunks| async move { chunks.recv().await.map(|item| (item, chunks)) },
        )
    }
}

/// Sends `range` of the file read from `stream` (which starts at block
/// `first`), each block checked before any of its bytes is sent.
fn send_verified(
    rt: &Handle,
    mut stream: DynInputStream,
    outboard: Arc<Outboard>,
    first: u64,
    range: &RangeInclusive<u64>,
    name: &FileName,
    tx: &mpsc::Sender<Result<Bytes, PluginError>>,
) -> Result<(), PluginError> {
    let (start, end) = (*range.start(), *range.end() + 1);
    let mut verifier = Verifier::new(outboard, first);
    while verifier.checked() < end {
        let wanted = verifier.wanted().min(READ_PIECE as u64) as usize;
        let piece = match rt.block_on(stream.blocking_read(wanted)) {
            Ok(piece) => piece,
            Err(StreamError::Closed) => {
                return Err(PluginError::Corrupt(format!("{name} ended at {} bytes", verifier.offset())));
            }
            Err(e) => return Err(io_error(&Arc::from("download"), name, e)),
        };
        let at = verifier.checked();
        let checked = verifier.push(piece).map_err(|e| PluginError::Corrupt(format!("{name}: {e}")))?;
        for piece in trim(checked, at, start, end) {
            if tx.blocking_send(Ok(piece)).is_err() {
                return Ok(()); // the reader went away
            }
        }
    }
    Ok(())
}

/// Sends `range` of a file the store has no record of (the host is hashing
/// it to record it), reading no more than the range.
fn send_unverified(
    rt: &Handle,
    mut stream: DynInputStream,
    range: &RangeInclusive<u64>,
    name: &FileName,
    tx: &mpsc::Sender<Result<Bytes, PluginError>>,
) -> Result<(), PluginError> {
    let (mut offset, end) = (*range.start(), *range.end() + 1);
    while offset < end {
        let wanted = (end - offset).min(READ_PIECE as u64) as usize;
        let piece = match rt.block_on(stream.blocking_read(wanted)) {
            Ok(piece) => piece,
            Err(StreamError::Closed) => {
                return Err(PluginError::Corrupt(format!("{name} ended at {offset} bytes")));
            }
            Err(e) => return Err(io_error(&Arc::from("download"), name, e)),
        };
        offset += piece.len() as u64;
        if tx.blocking_send(Ok(piece)).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Takes a stream the plugin handed over out of its store: from here on the
/// host reads or writes it natively, without the guest.
fn take_resource<T: 'static>(
    store: &mut Store<Sandbox>,
    plugin: &Arc<str>,
    stream: Resource<T>,
) -> Result<T, PluginError> {
    store.data_mut().table().delete(stream).map_err(|e| broken(plugin, format!("handed over a bad resource: {e}")))
}

fn io_error(plugin: &Arc<str>, name: &FileName, e: StreamError) -> PluginError {
    PluginError::Refused { plugin: plugin.clone(), refusal: Refusal::Io, message: format!("reading {name}: {e}") }
}

/// The plugin answered something the contract does not allow.
fn broken(plugin: &Arc<str>, why: impl std::fmt::Display) -> PluginError {
    let error = PluginError::Trapped { plugin: plugin.clone(), detail: format!("broke the plugin contract: {why}") };
    tracing::error!(error = %error, "plugin call refused");
    error
}

struct UploadRequest<'a> {
    name: &'a FileName,
    overwrite: bool,
    modified_ns: Option<u64>,
    /// A journaled write written again after a crash.
    replay: bool,
}
