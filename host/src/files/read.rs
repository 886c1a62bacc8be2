//! [`Reader`]: reading a file wherever it is. [`Reader::open`] picks the
//! newest version among the holders, and a [`Source`] streams it. Every byte is checked
//! before it is handed on: this node's copy block by block against its
//! outboard as its plugin's stream is read, another node's block by block
//! against the outboard that node sends, itself checked against the hash
//! the holders agreed on. A holder that dies or serves a block that does
//! not match is replaced at the same offset by the next holder of the same
//! version; a local copy found damaged is dropped so the repair loop copies
//! a good one back.

use std::collections::HashSet;
use std::ops::{Range, RangeInclusive};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::mpsc;

use tokio_util::task::TaskTracker;

use super::cache;
use super::error::{ErrorKind, FileError};
use super::known::Known;
use super::lease::Leases;
use super::local::Local;
use super::network::{Fetched, Fut, Peers};
use super::placement::Placement;
use super::striped::{self, Pieceable, Sink, Stripes};
use crate::chord::{Id, NodeRef, RingError};
use crate::integrity::Outboard;
use crate::plugins::{FileEntry, PluginError, PluginKind};
use crate::store::FileName;

/// Reads of files across the ring.
pub struct Reader {
    placement: Arc<Placement>,
    local: Arc<Local>,
    peers: Arc<dyn Peers>,
    tasks: TaskTracker,
    /// Holders read at once by a large read (1: one at a time).
    sources: usize,
    /// Where reads whose holders the table named are counted.
    placed_by_table: std::sync::OnceLock<prometheus_client::metrics::counter::Counter>,
    /// Read leases, when they are on: a copy held under one is served
    /// without asking the other holders.
    leases: std::sync::OnceLock<Arc<Leases>>,
}

impl Reader {
    /// A reader of the placement's holders that reads a large range from
    /// up to `sources` of them at once; stream pumps go to `tasks`.
    pub fn new(
        placement: Arc<Placement>,
        local: Arc<Local>,
        peers: Arc<dyn Peers>,
        tasks: TaskTracker,
        sources: usize,
    ) -> Self {
        let (placed_by_table, leases) = Default::default();
        Self { placement, local, peers, tasks, sources: sources.max(1), placed_by_table, leases }
    }

    /// Serves copies held under `leases` without asking the other holders.
    pub fn use_leases(&self, leases: Arc<Leases>) {
        let _ = self.leases.set(leases);
    }

    /// Finds the newest version of `name`: asks every holder what it knows,
    /// and notes whether this node has that version (read here, then) and
    /// which holders do. A deletion newer than every copy is not found.
    /// Nothing is opened yet: a `HEAD`, a `304` or a `416` is answered from
    /// this alone.
    pub async fn open(self: &Arc<Self>, name: &FileName) -> Result<Source, FileError> {
        // Unless a holder elsewhere has it, a missing local plugin is the answer.
        let mut last = match self.local.plugins().serving(PluginKind::Download) {
            Some(_) => FileError::NotFound(name.to_string()),
            None => PluginError::Unavailable(PluginKind::Download).into(),
        };
        let local = match self.local.entry(name).await {
            Ok(entry) => entry,
            Err(FileError::Plugin(e @ PluginError::Unavailable(_))) => {
                last = e.into();
                None
            }
            Err(FileError::Plugin(PluginError::Corrupt(why))) => {
                tracing::warn!(file = %name, "this node's copy is damaged, reading another: {why}");
                None
            }
            Err(e) => return Err(e),
        };
        // A copy kept through a long absence counts only once a holder has
        // the same version (it is then served from here).
        let copy = local.clone().filter(|e| !self.local.unconfirmed(e));
        let here = Known::from_parts(copy, self.local.tombstones().get(name));
        // Under a read lease this node has every version the node that
        // coordinates the name's writes acknowledged: its copy is the newest.
        if let Known::File(entry) = &here
            && let Some(leases) = self.leases.get()
            && leases.serves(Id::hash(name.as_str()))
        {
            leases.served();
            let version =
                Version { reader: self.clone(), name: name.clone(), entry: entry.clone(), having: Vec::new() };
            return Ok(Source { version, here: true });
        }
        let (newest, having) = match self.survey(name, &here).await {
            Ok(found) => found,
            // Without the ring, this node's own copy is all there is; but a
            // node that has not joined its ring cannot tell what is current.
            Err(e)
                if local.is_none() || here == Known::Nothing || matches!(e, FileError::Ring(RingError::NotJoined)) =>
            {
                return Err(e);
            }
            Err(_) => (here.clone(), Vec::new()),
        };
        let Known::File(wanted) = newest else {
            return Err(last);
        };
        let here = local.is_some_and(|e| e.blake3 == wanted.blake3);
        if !here && having.is_empty() {
            return Err(last);
        }
        let version = Version { reader: self.clone(), name: name.clone(), entry: wanted, having };
        Ok(Source { version, here })
    }

    /// Asks the other holders of `name` what they know of it: the newest
    /// state among theirs and `here` (this node's), and the other holders
    /// that have that state. Fails if none knows the name and one did not
    /// answer.
    ///
    /// While views of the ring differ (a node joined, left or came back), a
    /// file may sit on nodes further along than the placement says: when
    /// none of the holders knows the name, the rest of the responsible
    /// node's successor list is asked before the answer is "not found".
    async fn survey(&self, name: &FileName, here: &Known) -> Result<(Known, Vec<NodeRef>), FileError> {
        // The holders this node's table names are asked first, without the
        // lookup's calls (one to find the responsible node, one for its
        // successors): while the table and a lookup name the same holders,
        // the answers are the same. A file found with every holder
        // answering is the answer; anything else (nothing found, a
        // deletion, a holder that did not answer) is asked again through a
        // lookup, as if the table had not been read.
        if let Some(placed) = self.placement.holders_by_table(name) {
            let (holders, theirs) = self.ask(name, placed).await;
            let newest = newest_of(&theirs, here);
            if matches!(newest, Known::File(_)) && theirs.iter().all(Result::is_ok) {
                if let Some(counter) = self.placed_by_table.get() {
                    counter.inc();
                }
                return Ok(Self::having(newest, holders, theirs));
            }
        }
        let (placed, further) = self.placement.holders_and_beyond(name).await?;
        let lost_holder = self.placement.lost_holder(name, &placed);
        let (mut holders, mut theirs) = self.ask(name, placed).await;
        let mut newest = newest_of(&theirs, here);
        if newest == Known::Nothing {
            let (further, more) = self.ask(name, further).await;
            newest = newest_of(&more, here);
            holders.extend(further);
            theirs.extend(more);
        }
        if newest == Known::Nothing
            && let Some(Err(e)) = theirs.iter().find(|k| k.is_err())
        {
            // Nobody that answered knows the name, and a holder did not answer.
            return Err(e.clone());
        }
        if newest == Known::Nothing
            && let Some(lost) = lost_holder
        {
            // Nobody here knows the name, but a member that would hold it
            // stopped answering (crashed, or beyond a split): it may be there.
            return Err(FileError::remote(
                &lost.addr,
                ErrorKind::PeerUnavailable,
                format!("{name} is on no node that answers, and {} may hold it but does not answer", lost.addr),
            ));
        }
        Ok(Self::having(newest, holders, theirs))
    }

    /// Asks `nodes`, this one left out, what they know of `name`: the nodes
    /// asked, and their answers in the same order.
    async fn ask(&self, name: &FileName, nodes: Vec<NodeRef>) -> (Vec<NodeRef>, Vec<Result<Known, FileError>>) {
        let holders: Vec<NodeRef> = nodes.into_iter().filter(|h| !self.placement.is_me(h)).collect();
        let theirs = futures_util::future::join_all(holders.iter().map(|h| self.peers.stat(&h.addr, name))).await;
        (holders, theirs)
    }

    /// `newest`, with the holders among `holders` whose answer is that state.
    fn having(newest: Known, holders: Vec<NodeRef>, theirs: Vec<Result<Known, FileError>>) -> (Known, Vec<NodeRef>) {
        let having = holders
            .into_iter()
            .zip(theirs)
            .filter(|(_, k)| k.as_ref().is_ok_and(|k| k.same(&newest)))
            .map(|(h, _)| h)
            .collect();
        (newest, having)
    }

    /// Counts reads whose holders this node's table named in `counter`.
    pub fn count_placed_by_table(&self, counter: prometheus_client::metrics::counter::Counter) {
        let _ = self.placed_by_table.set(counter);
    }

    /// A node that serves the newest version of `name`: this one if it has
    /// it, else the first other holder that does.
    pub async fn locate(&self, name: &FileName) -> Result<(String, FileEntry), FileError> {
        let here = self.local.known(name).await?;
        let (newest, having) = self.survey(name, &here).await?;
        let Known::File(entry) = &newest else {
            return Err(FileError::NotFound(name.to_string()));
        };
        let node = if here.same(&newest) {
            self.placement.me().addr
        } else {
            having.into_iter().next().map(|h| h.addr).ok_or_else(|| FileError::NoHolder(name.to_string()))?
        };
        Ok((node, entry.clone()))
    }

    /// This node's copy of `name` failed its check: drop it when another
    /// holder has the same version, so the repair loop copies a good one
    /// back (a damaged only copy is kept, for whatever can be saved).
    pub fn damaged(self: &Arc<Self>, name: &FileName, version: FileEntry) {
        let (reader, name) = (self.clone(), name.clone());
        self.tasks.spawn(crate::trace::carried(async move {
            let blake3 = version.blake3;
            let Ok((_, having)) = reader.survey(&name, &Known::File(version)).await else { return };
            if having.is_empty() {
                tracing::error!(file = %name, "this node's copy is damaged and no other holder has it");
                return;
            }
            // Replaced meanwhile: not the damaged copy.
            if !matches!(reader.local.entry(&name).await, Ok(Some(e)) if e.blake3 == blake3) {
                return;
            }
            match reader.local.remove(&name).await {
                Ok(_) => tracing::warn!(file = %name, "removed this node's damaged copy; repair will restore it"),
                Err(e) => tracing::warn!(file = %name, "could not remove this node's damaged copy: {e}"),
            }
        }));
    }
}

/// The newest of the states the holders that answered told, and `here`.
fn newest_of(theirs: &[Result<Known, FileError>], here: &Known) -> Known {
    Known::newest(theirs.iter().filter_map(|k| k.as_ref().ok()).chain([here]))
}

/// A holder being read (`None`: this node) and its stream of checked bytes.
pub(super) type Reading = (Option<Id>, BoxStream<'static, Result<Bytes, FileError>>);

/// A file found somewhere in the network, ready to be read.
pub struct Source {
    version: Version,
    /// This node has the version: it is read here first.
    here: bool,
}

/// The version of a file being read, and the other holders that had it
/// when it was opened.
#[derive(Clone)]
pub(super) struct Version {
    pub(super) reader: Arc<Reader>,
    pub(super) name: FileName,
    pub(super) entry: FileEntry,
    pub(super) having: Vec<NodeRef>,
}

impl Source {
    /// The file's entry (size and hash of what is served).
    pub fn entry(&self) -> &FileEntry {
        &self.version.entry
    }

    /// Streams `range` of the file, checked block by block. A range of more
    /// than a few blocks that only other nodes hold is read from several of
    /// them at once (see [`super::striped`]); else from one holder at a
    /// time. If the holder being read dies or sends a block that does not
    /// match, reading goes on from another holder of the same version.
    ///
    /// The first holder is opened before this returns, so that a file no
    /// holder can serve fails with that holder's own error (a status the
    /// client sees) rather than a broken body. A small range this node
    /// holds is read whole before this returns, and so cannot break either.
    pub async fn start(
        self,
        range: RangeInclusive<u64>,
    ) -> Result<BoxStream<'static, Result<Bytes, FileError>>, FileError> {
        let range = *range.start()..*range.end() + 1;
        let Source { version, here } = self;
        let reader = version.reader.clone();
        let mut failed = HashSet::new();
        let mut local_error = None;
        if here {
            match reader.read_here(&version, range.clone()).await {
                Ok(Here::Whole(bytes)) => return Ok(futures_util::stream::iter([Ok(bytes)]).boxed()),
                Ok(Here::Streaming(first)) => return Ok(version.followed(range, first, failed)),
                Err(e) => {
                    if let FileError::Plugin(PluginError::Corrupt(why)) = &e {
                        tracing::warn!(file = %version.name, "this node's copy is damaged, reading another: {why}");
                    }
                    failed.insert(reader.placement.me().id);
                    local_error = Some(e);
                }
            }
        }
        let remote = Self::start_remote(version, range, failed).await;
        match (remote, local_error) {
            (Err(FileError::NoHolder(_)), Some(e)) => Err(e),
            (remote, _) => remote,
        }
    }

    /// Streams `range` from the other holders (none of `failed`).
    async fn start_remote(
        version: Version,
        range: Range<u64>,
        mut failed: HashSet<Id>,
    ) -> Result<BoxStream<'static, Result<Bytes, FileError>>, FileError> {
        let sources = version.reader.sources.min(version.having.len());
        if !striped::worth(sources, &range) {
            let first = version.reader.reopen(&version, range.clone(), &failed).await?;
            return Ok(version.followed(range, first, failed));
        }
        let stripes = match Stripes::open(&version, &version.having, range.clone(), sources).await {
            Ok(stripes) => stripes,
            // None of the holders it had served: the ring is asked for
            // others, and the first one's error stands if none.
            Err((error, tried)) => {
                failed.extend(tried);
                let first = match version.reader.reopen(&version, range.clone(), &failed).await {
                    Ok(first) => first,
                    Err(FileError::NoHolder(_)) => return Err(error),
                    Err(e) => return Err(e),
                };
                return Ok(version.followed(range, first, failed));
            }
        };
        failed.extend(stripes.failed());
        let (tx, rx) = mpsc::channel::<Result<Bytes, FileError>>(4);
        version.reader.tasks.clone().spawn(crate::trace::carried(async move {
            let version = Arc::new(version);
            if let Some(rest) = stripes.run(version.clone(), &tx).await {
                Version::clone(&version).follow(rest, None, failed, tx).await;
            }
        }));
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
    }
}

/// This node's copy being read: whole already, or streaming.
enum Here {
    Whole(Bytes),
    Streaming(Reading),
}

/// Ranges up to this size that this node holds are read whole before the
/// answer starts: one hand-off from the plugin's thread, no pump task. The
/// cache's bound, itself the size an upload hands over whole, so that the
/// files a write keeps in memory are those a read would.
const READ_WHOLE_AT_MOST: u64 = cache::FILE_AT_MOST;

impl Pieceable for Version {
    fn file(&self) -> &str {
        self.name.as_str()
    }

    fn fetch<'a>(&'a self, holder: &'a NodeRef, range: Range<u64>, known: Option<Arc<Outboard>>) -> Fut<'a, Fetched> {
        self.reader.fetch_from(holder, &self.name, &self.entry, range, known).boxed()
    }
}

impl Version {
    /// Streams `range` from `first` on, going on from the next holder not
    /// `failed` if it fails (see [`Version::follow`]), through a pump task.
    fn followed(
        self,
        range: Range<u64>,
        first: Reading,
        failed: HashSet<Id>,
    ) -> BoxStream<'static, Result<Bytes, FileError>> {
        let (tx, rx) = mpsc::channel::<Result<Bytes, FileError>>(4);
        let tasks = self.reader.tasks.clone();
        tasks.spawn(crate::trace::carried(self.follow(range, Some(first), failed, tx)));
        tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
    }

    /// Sends `range` to `tx` from one holder at a time: `first` if open,
    /// then the next holder not `failed` from where the last one stopped.
    pub(super) async fn follow(
        self,
        range: std::ops::Range<u64>,
        first: Option<Reading>,
        mut failed: HashSet<Id>,
        tx: Sink,
    ) {
        let Version { reader, name, entry, .. } = &self;
        let me = reader.placement.me().id;
        let (mut offset, end) = (range.start, range.end);
        let mut current = first;
        while offset < end {
            let (holder, mut stream) = match current.take() {
                Some(open) => open,
                None => match reader.reopen(&self, offset..end, &failed).await {
                    Ok(open) => open,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                },
            };
            while let Some(item) = stream.next().await {
                match item {
                    Ok(bytes) => {
                        let bytes = bytes.slice(..bytes.len().min((end - offset) as usize));
                        offset += bytes.len() as u64;
                        if tx.send(Ok(bytes)).await.is_err() {
                            return; // the client went away
                        }
                        if offset >= end {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(file = %name, offset, "holder failed mid-stream, trying the next: {e}");
                        if holder.is_none() && matches!(e, FileError::Plugin(PluginError::Corrupt(_))) {
                            reader.damaged(name, entry.clone());
                        }
                        failed.insert(holder.unwrap_or(me));
                        break;
                    }
                }
            }
            if offset < end {
                // The holder failed or ended early: it is not asked again
                // (the local copy included: only remote holders are left).
                failed.insert(holder.unwrap_or(me));
            }
        }
    }
}

impl Reader {
    /// Opens `range` of the version on the next of its holders not yet
    /// `failed`: the holders that had it when the file was opened, then any
    /// holder the ring names now. None left: the last one's error.
    async fn reopen(
        &self,
        version: &Version,
        range: std::ops::Range<u64>,
        failed: &HashSet<Id>,
    ) -> Result<Reading, FileError> {
        let Version { name, entry, having, .. } = version;
        let mut last = FileError::NoHolder(name.to_string());
        let mut tried: HashSet<Id> = failed.clone();
        // The holders that had the version when it was opened; only when
        // none of them serves is the ring asked again (a second lookup).
        for round in 0..2 {
            let candidates = if round == 0 { having.to_vec() } else { self.placement.holders(name).await? };
            for holder in candidates {
                if !tried.insert(holder.id) {
                    continue;
                }
                match self.open_on(&holder, name, entry, range.clone()).await {
                    Ok(reading) => return Ok(reading),
                    Err(e) => last = e,
                }
            }
        }
        Err(last)
    }

    /// Reads `range` of the version from this node's copy: whole when it
    /// is small, else the open stream.
    async fn read_here(&self, version: &Version, range: Range<u64>) -> Result<Here, FileError> {
        let small = range.end - range.start <= READ_WHOLE_AT_MOST;
        // Kept in memory: the same bytes, checked when they went in. Only
        // while a download plugin serves, so that a node without one
        // answers the same whatever it keeps.
        if let Some(digest) = version.entry.blake3
            && version.entry.size <= cache::FILE_AT_MOST
            && self.local.plugins().serving(PluginKind::Download).is_some()
            && let Some(content) = self.local.cache().get(&digest)
            && range.end <= content.len() as u64
        {
            return Ok(Here::Whole(content.slice(range.start as usize..range.end as usize)));
        }
        let whole_file = range.start == 0 && range.end == version.entry.size;
        let me = self.placement.me();
        let (_, mut stream) = self.open_on(&me, &version.name, &version.entry, range.clone()).await?;
        if !small {
            return Ok(Here::Streaming((None, stream)));
        }
        let mut whole = bytes::BytesMut::with_capacity((range.end - range.start) as usize);
        while let Some(piece) = stream.next().await {
            // Bytes that fail their check: the copy is damaged (a mismatch
            // on opening may be an overwrite half done, and is only skipped).
            let piece = piece.inspect_err(|e| {
                if matches!(e, FileError::Plugin(PluginError::Corrupt(_))) {
                    version.reader.damaged(&version.name, version.entry.clone());
                }
            })?;
            if whole.is_empty() && piece.len() as u64 == range.end - range.start {
                return Ok(Here::Whole(self.checked_whole(version, whole_file, piece)));
            }
            whole.extend_from_slice(&piece);
        }
        if whole.len() as u64 != range.end - range.start {
            let why =
                format!("{} ended {} bytes into a read of {}", version.name, whole.len(), range.end - range.start);
            return Err(PluginError::Corrupt(why).into());
        }
        Ok(Here::Whole(self.checked_whole(version, whole_file, whole.freeze())))
    }

    /// `content`, read here and checked; kept in memory when it is the
    /// `whole_file` (see [`cache`]).
    fn checked_whole(&self, version: &Version, whole_file: bool, content: Bytes) -> Bytes {
        if whole_file && let Some(digest) = version.entry.blake3 {
            self.local.cache().keep(digest, content.clone());
        }
        content
    }

    /// Opens `range` of the version `entry` of `name` on `holder`.
    async fn open_on(
        &self,
        holder: &NodeRef,
        name: &FileName,
        entry: &FileEntry,
        range: std::ops::Range<u64>,
    ) -> Result<Reading, FileError> {
        if self.placement.is_me(holder) {
            match self.local.open_range(name, range.start..=range.end - 1).await? {
                Some(handle) if handle.entry().blake3 == entry.blake3 => {
                    let stream = handle.stream(range.start..=range.end - 1).map(|r| r.map_err(FileError::from));
                    Ok((None, stream.boxed()))
                }
                _ => Err(FileError::NoHolder(name.to_string())),
            }
        } else {
            let fetched = self.fetch_from(holder, name, entry, range, None).await?;
            Ok((Some(holder.id), fetched.bytes))
        }
    }

    /// Fetches `range` of the version `entry` of `name` from `holder`,
    /// checked against `known` (the version's outboard) or the one the
    /// holder sends. A holder that has another version by now is an error.
    pub(super) async fn fetch_from(
        &self,
        holder: &NodeRef,
        name: &FileName,
        entry: &FileEntry,
        range: std::ops::Range<u64>,
        known: Option<Arc<Outboard>>,
    ) -> Result<Fetched, FileError> {
        let fetched = self.peers.fetch(&holder.addr, name, range, known).await?;
        if fetched.entry.blake3 != entry.blake3 {
            return Err(FileError::NoHolder(name.to_string())); // changed since it was asked
        }
        Ok(fetched)
    }
}
