//! The journal of small writes: a small upload is made durable by one
//! sequential write and a sync of one file, instead of a sync of the file
//! system holding its new inodes.
//!
//! Measured on the 2-core machine of docs/benchmarks.md: eight new 1 KiB
//! files and a `syncfs` cost 6-8 ms (each new inode, directory entry and
//! data block is a write of its own); the same bytes appended to a file
//! written in advance and `fdatasync`ed cost 0.1 ms. So, as databases do
//! with their write-ahead log, the content of a small write is appended
//! here and the journal synced (group commit, shared with every write
//! arriving meanwhile) *before* the upload plugin makes the file visible.
//! The file, its record and its directory entry reach the disk with the
//! next checkpoint, within about a second. After a crash, every write
//! still in the journal is written again through the upload plugin before
//! the node serves (see `files::Local::replay`), unless something newer
//! replaced it: whatever the crash left of the file (nothing, zeros, the
//! old version) gives way to what was acknowledged.
//!
//! On disk, `<data>/node/journal/segment-N`: files of [`SEGMENT_BYTES`],
//! written with zeros once and then used again and again, so that a commit
//! writes data blocks only (no size or extent to sync with them). A record
//! is `length u32 | generation u64 | check u64 | payload`, little-endian;
//! `check` is the start of BLAKE3 over the generation and the payload. A
//! segment is read up to its first record that is empty, torn, or of
//! another generation (what is left of an earlier use of the file), so a
//! crash in the middle of an append loses only writes that were never
//! acknowledged. Names of the files do not matter: generations order them.
//!
//! A segment taken into use gets a generation larger than any on disk, and
//! its header says so (synced) before any record of it is written. A
//! checkpoint seals the segment being written (new writes go to a spare),
//! waits until the plugin has committed every write the sealed one holds,
//! syncs the store, and then clears the sealed segment's first record
//! (keeping its generation) and syncs that, so that it is never read again;
//! it becomes a spare. A write the plugin refused after it was journaled is
//! voided by a record naming its place, synced.
//!
//! A sync of the store that fails fails the journal too: it takes no write
//! until the node restarts, as the store's group commit does (fsyncgate).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::sync::GroupSync;
use crate::integrity::Digest;

/// Size of a segment file: about a second of small uploads at the rate
/// this machine takes them (docs/benchmarks.md), so that a node under load
/// seldom waits for a new one.
pub const SEGMENT_BYTES: u64 = 4 << 20;
/// Largest content journaled; larger writes are synced in place.
pub const CONTENT_AT_MOST: usize = 64 << 10;
/// How long a segment takes writes before it is sealed and checkpointed:
/// what a restart after a crash writes again is at most about this much.
const SEAL_AFTER: Duration = Duration::from_secs(1);
/// Spare segments kept; more are deleted.
const SPARES_AT_MOST: usize = 3;
const HEADER: usize = 4 + 8 + 8;
/// Held locked by the node using the journal.
const LOCK: &str = "lock";
/// How long a node waits for the journal's lock at start.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// A segment being made (written with zeros); removed at opening.
const PARTIAL: &str = ".partial-segment-";
const KIND_WRITE: u8 = 1;
const KIND_VOID: u8 = 2;

/// A write held by the journal: a version of a small file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journaled {
    /// The file's name.
    pub name: String,
    /// Whether it was to replace an existing file of that name.
    pub overwrite: bool,
    /// The version (modification time, ns).
    pub version_ns: u64,
    /// The content's hash.
    pub blake3: Digest,
    /// The content.
    pub content: Bytes,
}

/// Where a record is: its segment's generation and its offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Place {
    generation: u64,
    offset: u64,
}

/// The journal of one node.
pub struct Journal {
    dir: PathBuf,
    /// Locked while the journal is open: one node per data folder.
    _lock: File,
    /// Syncs the store at a checkpoint.
    store: Arc<GroupSync>,
    appending: Mutex<Appending>,
    /// The segment being written, for the group commit.
    current: Arc<Mutex<Option<Arc<File>>>>,
    committed: GroupSync,
    /// Writes not yet committed by the plugin, by segment generation.
    held: Mutex<HashMap<u64, usize>>,
    released: Condvar,
    /// Why a checkpoint could not sync the store, if one could not.
    failed: Mutex<Option<String>>,
}

struct Appending {
    /// None until the first write after opening.
    segment: Option<Segment>,
    sealed: Vec<Segment>,
    spares: Vec<Segment>,
    /// Segments read at opening, until their writes are replayed.
    replaying: Vec<Segment>,
    next_generation: u64,
    next_file: usize,
}

struct Segment {
    file: Arc<File>,
    path: PathBuf,
    generation: u64,
    end: u64,
    /// When the first record went in, if any did.
    first: Option<Instant>,
}

/// Held while the plugin commits a journaled write: a checkpoint of its
/// segment waits for it.
pub struct Lease<'a> {
    journal: &'a Journal,
    at: Place,
}

impl Lease<'_> {
    /// The plugin did not commit the write: it is not replayed after a
    /// crash. Synced; a failure is logged (the write would then be
    /// replayed under the usual rules).
    pub fn void(self) {
        let mut payload = vec![KIND_VOID];
        payload.extend_from_slice(&self.at.generation.to_le_bytes());
        payload.extend_from_slice(&self.at.offset.to_le_bytes());
        let voided = self.journal.append(&payload).and_then(|at| {
            drop(Lease { journal: self.journal, at });
            self.journal.committed.sync()
        });
        if let Err(e) = voided {
            tracing::warn!("could not void a journaled write the plugin refused: {e}");
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut held = self.journal.lock_held();
        if let Some(count) = held.get_mut(&self.at.generation) {
            *count -= 1;
            // Only the last write of a segment can end a checkpoint's wait
            // (a wake-up costs a system call, waiters or not).
            if *count == 0 {
                held.remove(&self.at.generation);
                self.journal.released.notify_all();
            }
        }
    }
}

impl Journal {
    /// Opens the journal in `dir` (made if missing), whose checkpoints sync
    /// the store through `store`, and reads the writes it still holds,
    /// oldest first, without those voided: the caller writes them again,
    /// makes them durable, then calls [`Journal::replayed`]. Blocks (it
    /// waits a while for a node process that used the folder to end).
    pub fn open(dir: &Path, store: Arc<GroupSync>) -> io::Result<(Arc<Self>, Vec<Journaled>)> {
        std::fs::create_dir_all(dir)?;
        let lock = lock(dir, LOCK_WAIT)?;
        let (mut found, mut spares, mut next_file, mut next_generation) = (Vec::new(), Vec::new(), 0, 1u64);
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.starts_with(PARTIAL) {
                std::fs::remove_file(&path)?;
                continue;
            }
            let Some(number) = segment_number(name) else { continue };
            next_file = next_file.max(number + 1);
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            let mut bytes = Vec::new();
            io::Read::read_to_end(&mut &file, &mut bytes)?;
            if bytes.len() as u64 != SEGMENT_BYTES {
                // What a crash left of its making.
                std::fs::remove_file(&path)?;
                continue;
            }
            // Generations only grow: a segment's header keeps its own,
            // even cleared, so its leftovers are never taken for new records.
            let had = u64::from_le_bytes(bytes[4..12].try_into().expect("8 bytes"));
            next_generation = next_generation.max(had.saturating_add(1));
            let (generation, records) = read_segment(&bytes);
            let segment =
                Segment { file: Arc::new(file), path, generation: generation.unwrap_or(0), end: 0, first: None };
            match generation {
                Some(generation) => found.push((generation, segment, records)),
                None => spares.push(segment),
            }
        }
        found.sort_by_key(|(generation, ..)| *generation);
        let mut records = Vec::new();
        let mut replaying = Vec::new();
        for (_, segment, found) in found {
            replaying.push(segment);
            records.extend(found);
        }
        let appending = Appending { segment: None, sealed: Vec::new(), spares, replaying, next_generation, next_file };
        let current: Arc<Mutex<Option<Arc<File>>>> = Arc::default();
        let syncing = current.clone();
        let committed = GroupSync::with(move || {
            let file = syncing.lock().unwrap_or_else(|p| p.into_inner()).clone();
            file.map_or(Ok(()), |file| rustix::fs::fdatasync(&*file).map_err(io::Error::from))
        });
        let journal = Self {
            dir: dir.to_path_buf(),
            _lock: lock,
            store,
            appending: Mutex::new(appending),
            current,
            committed,
            held: Mutex::default(),
            released: Condvar::new(),
            failed: Mutex::default(),
        };
        Ok((Arc::new(journal), without_voided(records)))
    }

    /// Counts journal syncs and the writes they covered.
    pub fn count_in(
        &self,
        syncs: prometheus_client::metrics::counter::Counter,
        writes: prometheus_client::metrics::counter::Counter,
    ) {
        self.committed.count_in(syncs, writes);
    }

    /// Appends `write` and returns once it is on disk (one sync shared with
    /// every write appended meanwhile). Hold the lease until the plugin has
    /// committed the file, or void it if the plugin did not.
    pub fn write(&self, write: &Journaled) -> io::Result<Lease<'_>> {
        if let Some(why) = &*self.failed.lock().unwrap_or_else(|p| p.into_inner()) {
            return Err(io::Error::other(format!("the store could not be synced ({why}); restart the node")));
        }
        let length = u16::try_from(write.name.len())
            .map_err(|_| io::Error::other(format!("name too long to journal: {:?}", write.name)))?;
        let mut payload = Vec::with_capacity(1 + 1 + 8 + 2 + write.name.len() + 32 + write.content.len());
        payload.push(KIND_WRITE);
        payload.push(u8::from(write.overwrite));
        payload.extend_from_slice(&write.version_ns.to_le_bytes());
        payload.extend_from_slice(&length.to_le_bytes());
        payload.extend_from_slice(write.name.as_bytes());
        payload.extend_from_slice(&write.blake3.0);
        payload.extend_from_slice(&write.content);
        let lease = Lease { journal: self, at: self.append(&payload)? };
        self.committed.sync()?;
        Ok(lease)
    }

    /// Appends one record to the current segment, sealing it first if the
    /// record does not fit; counts a hold on the segment.
    fn append(&self, payload: &[u8]) -> io::Result<Place> {
        let mut appending = self.lock_appending();
        let full = |s: &Segment| s.end + (HEADER + payload.len()) as u64 > SEGMENT_BYTES;
        if appending.segment.as_ref().is_none_or(full) {
            self.seal(&mut appending)?;
        }
        let segment = appending.segment.as_mut().expect("a segment after sealing");
        let mut record = Vec::with_capacity(HEADER + payload.len());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&segment.generation.to_le_bytes());
        record.extend_from_slice(&check(segment.generation, payload).to_le_bytes());
        record.extend_from_slice(payload);
        let at = Place { generation: segment.generation, offset: segment.end };
        if let Err(e) = segment.file.write_all_at(&record, segment.end) {
            // What follows a torn record is never read: nothing more goes
            // into this segment.
            let _ = self.seal(&mut appending);
            return Err(e);
        }
        segment.end += record.len() as u64;
        segment.first.get_or_insert_with(Instant::now);
        *self.lock_held().entry(at.generation).or_default() += 1;
        Ok(at)
    }

    /// Takes a new segment into use (its generation on disk first); the one
    /// written so far, synced through the group commit (whose failure then
    /// fails every later write), waits for its checkpoint.
    fn seal(&self, appending: &mut Appending) -> io::Result<()> {
        let mut next = take_spare(&mut appending.spares, &mut appending.next_file, &self.dir)?;
        next.generation = appending.next_generation;
        appending.next_generation += 1;
        if let Err(e) = next.mark_empty() {
            appending.spares.push(next);
            return Err(e);
        }
        // A writer whose sync falls on the new segment finds its record,
        // appended to this one, already on disk.
        if appending.segment.is_some() {
            self.committed.sync()?;
        }
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(next.file.clone());
        if let Some(sealed) = appending.segment.replace(next) {
            appending.sealed.push(sealed);
        }
        Ok(())
    }

    /// Seals the current segment once it has held writes for a while, and
    /// checkpoints the sealed ones: waits until their writes are committed,
    /// syncs the store, then clears them. A failed sync of the store fails
    /// every later write of the journal.
    pub fn checkpoint(&self) -> io::Result<()> {
        let sealed = {
            let mut appending = self.lock_appending();
            let due =
                appending.segment.as_ref().and_then(|s| s.first).is_some_and(|first| first.elapsed() >= SEAL_AFTER);
            if due {
                self.seal(&mut appending)?;
            }
            std::mem::take(&mut appending.sealed)
        };
        if sealed.is_empty() {
            return Ok(());
        }
        let mut held = self.lock_held();
        while sealed.iter().any(|s| held.contains_key(&s.generation)) {
            held = self.released.wait(held).unwrap_or_else(|p| p.into_inner());
        }
        drop(held);
        let synced = self.store.sync();
        let mut appending = self.lock_appending();
        match synced {
            Ok(()) => appending.retire(sealed),
            Err(e) => {
                self.failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(|| e.to_string());
                // Kept: replayed after the restart a failed sync calls for.
                appending.sealed.extend(sealed);
                Err(e)
            }
        }
    }

    /// The writes read at opening were written again and are durable:
    /// their segments are cleared and become spares. Blocks.
    pub fn replayed(&self) -> io::Result<()> {
        {
            let mut appending = self.lock_appending();
            let replayed = std::mem::take(&mut appending.replaying);
            appending.sealed.extend(replayed);
        }
        self.checkpoint()
    }

    /// Checkpoints every half `SEAL_AFTER` on a thread of its own, until
    /// the journal is dropped.
    pub fn start_checkpoints(self: &Arc<Self>) -> io::Result<()> {
        let journal: Weak<Self> = Arc::downgrade(self);
        std::thread::Builder::new().name("ringshare-journal".into()).spawn(move || {
            let mut failing = false;
            loop {
                std::thread::sleep(SEAL_AFTER / 2);
                let Some(journal) = journal.upgrade() else { return };
                match journal.checkpoint() {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        tracing::error!("a checkpoint of the journal failed; its writes stay in it: {e}");
                        failing = true;
                    }
                    Err(_) => {}
                }
            }
        })?;
        Ok(())
    }

    fn lock_appending(&self) -> MutexGuard<'_, Appending> {
        self.appending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_held(&self) -> MutexGuard<'_, HashMap<u64, usize>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Appending {
    /// Clears the first record of each of `segments` (keeping their
    /// generations) so that none is read again, and keeps them as spares,
    /// deleting those past the spares kept. One that cannot be cleared
    /// waits for the next checkpoint.
    fn retire(&mut self, segments: Vec<Segment>) -> io::Result<()> {
        let mut first_error = None;
        for segment in segments {
            match segment.mark_empty() {
                Err(e) => {
                    first_error.get_or_insert(e);
                    self.sealed.push(segment);
                }
                Ok(()) if self.spares.len() < SPARES_AT_MOST => self.spares.push(segment),
                Ok(()) => std::fs::remove_file(&segment.path)?,
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Segment {
    /// Writes an empty first record holding the segment's generation, and
    /// syncs it: nothing of the segment is read, and its generation is on
    /// disk (generations only grow across restarts).
    fn mark_empty(&self) -> io::Result<()> {
        let mut empty = [0u8; HEADER];
        empty[4..12].copy_from_slice(&self.generation.to_le_bytes());
        self.file.write_all_at(&empty, 0)?;
        rustix::fs::fdatasync(&*self.file).map_err(io::Error::from)
    }
}

/// Locks the journal in `dir`, waiting up to `wait` for a node process that
/// used it and is ending (a restart) to let it go.
fn lock(dir: &Path, wait: Duration) -> io::Result<File> {
    let lock = OpenOptions::new().write(true).create(true).truncate(false).open(dir.join(LOCK))?;
    let since = Instant::now();
    loop {
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(lock),
            Err(rustix::io::Errno::WOULDBLOCK) if since.elapsed() < wait => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                let why = format!("{} is in use by another node ({e}): one node per data folder", dir.display());
                return Err(io::Error::other(why));
            }
        }
    }
}

/// A spare segment, or a new one written with zeros.
fn take_spare(spares: &mut Vec<Segment>, next_file: &mut usize, dir: &Path) -> io::Result<Segment> {
    if let Some(mut spare) = spares.pop() {
        (spare.end, spare.first) = (0, None);
        return Ok(spare);
    }
    let (path, partial) = (dir.join(format!("segment-{next_file}")), dir.join(format!("{PARTIAL}{next_file}")));
    let made = (|| {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&partial)?;
        let zeros = vec![0u8; 1 << 20];
        for block in 0..SEGMENT_BYTES / zeros.len() as u64 {
            file.write_all_at(&zeros, block * zeros.len() as u64)?;
        }
        file.sync_all()?;
        std::fs::rename(&partial, &path)?;
        File::open(dir)?.sync_all()?;
        Ok(file)
    })();
    match made {
        Ok(file) => {
            *next_file += 1;
            Ok(Segment { file: Arc::new(file), path, generation: 0, end: 0, first: None })
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

fn segment_number(name: &str) -> Option<usize> {
    name.strip_prefix("segment-")?.parse().ok()
}

fn check(generation: u64, payload: &[u8]) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&generation.to_le_bytes());
    hasher.update(payload);
    u64::from_le_bytes(hasher.finalize().as_bytes()[..8].try_into().expect("8 bytes"))
}

/// A record read back.
#[derive(Debug, PartialEq, Eq)]
enum Record {
    Write(Journaled),
    Void(Place),
}

/// The generation of a segment's records and the records with their
/// places, up to the first that is empty, torn, of another generation, or
/// not understood.
fn read_segment(bytes: &[u8]) -> (Option<u64>, Vec<(Place, Record)>) {
    let (mut at, mut generation, mut records) = (0usize, None, Vec::new());
    while let Some(header) = bytes.get(at..at + HEADER) {
        let length = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let of = u64::from_le_bytes(header[4..12].try_into().expect("8 bytes"));
        let sum = u64::from_le_bytes(header[12..].try_into().expect("8 bytes"));
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + length) else { break };
        if length == 0 || generation.is_some_and(|g| g != of) || check(of, payload) != sum {
            break;
        }
        let Some(record) = decode(payload) else { break };
        generation = Some(of);
        records.push((Place { generation: of, offset: at as u64 }, record));
        at += HEADER + length;
    }
    (generation, records)
}

fn decode(payload: &[u8]) -> Option<Record> {
    let (&kind, rest) = payload.split_first()?;
    let u64_at =
        |rest: &[u8], at: usize| rest.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    match kind {
        KIND_WRITE => {
            let (&overwrite, rest) = rest.split_first()?;
            let version_ns = u64_at(rest, 0)?;
            let length = u16::from_le_bytes(rest.get(8..10)?.try_into().ok()?) as usize;
            let name = String::from_utf8(rest.get(10..10 + length)?.to_vec()).ok()?;
            let rest = &rest[10 + length..];
            let blake3 = Digest(rest.get(..32)?.try_into().ok()?);
            let content = Bytes::copy_from_slice(&rest[32..]);
            Some(Record::Write(Journaled { name, overwrite: overwrite == 1, version_ns, blake3, content }))
        }
        KIND_VOID => Some(Record::Void(Place { generation: u64_at(rest, 0)?, offset: u64_at(rest, 8)? })),
        _ => None,
    }
}

/// The writes of `records` in order, without those a void names.
fn without_voided(records: Vec<(Place, Record)>) -> Vec<Journaled> {
    let voided: std::collections::HashSet<Place> = records
        .iter()
        .filter_map(|(_, record)| match record {
            Record::Void(place) => Some(*place),
            Record::Write(_) => None,
        })
        .collect();
    records
        .into_iter()
        .filter_map(|(place, record)| match record {
            Record::Write(write) if !voided.contains(&place) => Some(write),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, version_ns: u64, content: &'static [u8]) -> Journaled {
        let blake3 = Digest(*blake3::hash(content).as_bytes());
        Journaled { name: name.into(), overwrite: true, version_ns, blake3, content: Bytes::from_static(content) }
    }

    fn open(dir: &Path) -> (Arc<Journal>, Vec<Journaled>) {
        Journal::open(dir, Arc::new(GroupSync::open(&[dir]).unwrap())).unwrap()
    }

    /// Makes the current segment due for sealing at the next checkpoint.
    fn age(journal: &Journal) {
        if let Some(segment) = journal.lock_appending().segment.as_mut() {
            segment.first = Some(Instant::now() - SEAL_AFTER);
        }
    }

    #[test]
    fn a_second_opening_of_the_same_journal_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = open(dir.path());
        let refused = lock(dir.path(), Duration::from_millis(50)).expect_err("refused").to_string();
        assert!(refused.contains("in use by another node"), "{refused}");
        drop(journal);
        open(dir.path());
    }

    #[test]
    fn writes_not_checkpointed_are_read_back_in_order_without_the_voided() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, found) = open(dir.path());
        assert!(found.is_empty());
        let (a, b, c) = (write("a", 1, b"first"), write("b", 2, b""), write("a", 3, b"second"));
        drop(journal.write(&a).unwrap());
        // Two writes of the same version (copies arriving together): the
        // void names the one refused, not the other.
        let refused = journal.write(&b).unwrap();
        drop(journal.write(&b).unwrap());
        refused.void();
        drop(journal.write(&c).unwrap());
        drop(journal);
        let (_, found) = open(dir.path());
        assert_eq!(found, vec![a, b, c]);
    }

    #[test]
    fn a_torn_record_ends_the_segment_and_loses_only_what_follows() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = open(dir.path());
        let (a, b) = (write("a", 1, b"kept"), write("b", 2, b"torn in the middle of its append"));
        drop(journal.write(&a).unwrap());
        drop(journal.write(&b).unwrap());
        drop(journal);
        let path = dir.path().join("segment-0");
        let mut bytes = std::fs::read(&path).unwrap();
        assert_eq!(read_segment(&bytes).1.len(), 2);
        // Flip one byte of b's content: its check fails.
        let last = bytes.iter().rposition(|&x| x == b'd').unwrap();
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (_, found) = open(dir.path());
        assert_eq!(found, vec![a]);
    }

    #[test]
    fn a_checkpoint_waits_for_the_plugin_and_then_nothing_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = open(dir.path());
        let lease = journal.write(&write("a", 1, b"x")).unwrap();
        age(&journal);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| tx.send(journal.checkpoint().map_err(|e| e.to_string())).unwrap());
            // The segment is sealed, but its write is not committed yet.
            assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
            drop(lease);
            assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), Ok(()));
        });
        // A later write goes to the new segment; the sealed one is a spare.
        let later = write("b", 2, b"y");
        drop(journal.write(&later).unwrap());
        drop(journal);
        let (_, found) = open(dir.path());
        assert_eq!(found, vec![later]);
    }

    #[test]
    fn writes_past_a_segment_go_on_in_the_next_and_spares_are_used_again() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = open(dir.path());
        static BIG: [u8; CONTENT_AT_MOST] = [5u8; CONTENT_AT_MOST];
        let per_segment = SEGMENT_BYTES as usize / (CONTENT_AT_MOST + 100);
        let writes: Vec<_> = (0..per_segment as u64 + 3).map(|i| write(&format!("f{i}"), i + 1, &BIG)).collect();
        for w in &writes {
            drop(journal.write(w).unwrap());
        }
        assert_eq!(journal.lock_appending().sealed.len(), 1);
        drop(journal);
        let (journal, found) = open(dir.path());
        assert_eq!(found, writes, "both segments are read, in order");
        journal.replayed().unwrap();
        drop(journal);
        let (_, found) = open(dir.path());
        assert!(found.is_empty(), "replayed segments are not read again");
        let files = std::fs::read_dir(dir.path()).unwrap().filter(|e| e.as_ref().unwrap().file_name() != LOCK).count();
        assert!(files <= 1 + SPARES_AT_MOST, "{files} segment files");
    }

    #[test]
    fn the_leftover_of_an_earlier_use_is_not_read_after_a_shorter_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = open(dir.path());
        for i in 0..5 {
            drop(journal.write(&write(&format!("old{i}"), i + 1, b"old")).unwrap());
        }
        age(&journal);
        journal.checkpoint().unwrap();
        // Only the first segment, cleared, is left to be used again after a
        // restart: the new write, as long as each old one, lands on the old
        // ones, and the next of them is of an older generation.
        drop(journal);
        std::fs::remove_file(dir.path().join("segment-1")).unwrap();
        let (journal, found) = open(dir.path());
        assert!(found.is_empty());
        let new = write("new0", 10, b"new");
        drop(journal.write(&new).unwrap());
        drop(journal);
        let (_, found) = open(dir.path());
        assert_eq!(found, vec![new]);
    }

    #[test]
    fn a_generation_taken_is_on_disk_before_its_first_record() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = open(dir.path());
        // Taken into use, nothing written yet (a crash would lose any
        // record not synced): the header already holds the generation.
        journal.seal(&mut journal.lock_appending()).unwrap();
        let generation = journal.lock_appending().segment.as_ref().unwrap().generation;
        let bytes = std::fs::read(dir.path().join("segment-0")).unwrap();
        assert_eq!(u64::from_le_bytes(bytes[4..12].try_into().unwrap()), generation);
        drop(journal);
        let (journal, found) = open(dir.path());
        assert!(found.is_empty());
        drop(journal.write(&write("b", 2, b"y")).unwrap());
        assert!(journal.lock_appending().segment.as_ref().unwrap().generation > generation);
    }

    #[test]
    fn a_failed_sync_of_the_store_fails_every_later_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(GroupSync::with(|| Err(io::Error::other("disk on fire"))));
        let (journal, _) = Journal::open(dir.path(), store).unwrap();
        drop(journal.write(&write("a", 1, b"x")).unwrap());
        age(&journal);
        assert!(journal.checkpoint().is_err());
        let refused = journal.write(&write("b", 2, b"y")).err().expect("refused").to_string();
        assert!(refused.contains("disk on fire") && refused.contains("restart"), "{refused}");
        drop(journal);
        let (_, found) = open(dir.path());
        assert_eq!(found, vec![write("a", 1, b"x")], "kept for the restart");
    }
}
