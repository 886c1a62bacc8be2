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
//! A checkpoint seals the segment being written (new writes go to a spare),
//! waits until the plugin has committed every write the sealed one holds,
//! syncs the store, and then clears the sealed segment's first record and
//! syncs that, so that it is never read again; it becomes a spare. The
//! cleared header keeps the segment's generation, and a new one is always
//! larger than any on disk.

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

/// The journal of one node.
pub struct Journal {
    dir: PathBuf,
    /// Locked while the journal is open: one node per data folder.
    _lock: File,
    appending: Mutex<Appending>,
    /// The segment being written, for the group commit.
    current: Arc<Mutex<Arc<File>>>,
    committed: GroupSync,
    /// Writes not yet committed by the plugin, by segment generation.
    held: Mutex<HashMap<u64, usize>>,
    released: Condvar,
}

struct Appending {
    segment: Segment,
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
    generation: u64,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut held = self.journal.lock_held();
        if let Some(count) = held.get_mut(&self.generation) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.generation);
            }
        }
        self.journal.released.notify_all();
    }
}

impl Journal {
    /// Opens the journal in `dir` (made if missing) and reads the writes it
    /// still holds, oldest first, without those voided: the caller writes
    /// them again, makes them durable, then calls [`Journal::replayed`].
    pub fn open(dir: &Path) -> io::Result<(Arc<Self>, Vec<Journaled>)> {
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
            let (generation, records) = read_segment(&bytes);
            // A cleared segment keeps the generation it had: generations
            // only grow, so its leftovers are never taken for new records.
            let had = bytes.get(4..12).map_or(0, |g| u64::from_le_bytes(g.try_into().expect("8 bytes")));
            next_generation = next_generation.max(had.saturating_add(1));
            let segment = Segment { file: Arc::new(file), path, generation: 0, end: 0, first: None };
            match generation {
                Some(generation) if bytes.len() as u64 == SEGMENT_BYTES => found.push((generation, segment, records)),
                // A file not of full size is what a crash left of its making.
                _ if bytes.len() as u64 != SEGMENT_BYTES => std::fs::remove_file(&segment.path)?,
                _ => spares.push(segment),
            }
        }
        found.sort_by_key(|(generation, ..)| *generation);
        let mut records = Vec::new();
        let mut replaying = Vec::new();
        for (generation, mut segment, found) in found {
            segment.generation = generation;
            replaying.push(segment);
            records.extend(found);
        }
        let writes = without_voided(records);
        let mut segment = take_spare(&mut spares, &mut next_file, dir)?;
        segment.generation = next_generation;
        let current = Arc::new(Mutex::new(segment.file.clone()));
        let appending = Appending {
            segment,
            sealed: Vec::new(),
            spares,
            replaying,
            next_generation: next_generation + 1,
            next_file,
        };
        let syncing = current.clone();
        let committed = GroupSync::with(move || {
            let file = syncing.lock().unwrap_or_else(|p| p.into_inner()).clone();
            rustix::fs::fdatasync(&*file).map_err(io::Error::from)
        });
        let journal = Self {
            dir: dir.to_path_buf(),
            _lock: lock,
            appending: Mutex::new(appending),
            current,
            committed,
            held: Mutex::default(),
            released: Condvar::new(),
        };
        Ok((Arc::new(journal), writes))
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
    /// committed the file (or failed to: then [`Journal::void`] it).
    pub fn write(&self, write: &Journaled) -> io::Result<Lease<'_>> {
        let mut payload = Vec::with_capacity(1 + 1 + 8 + 2 + write.name.len() + 32 + write.content.len());
        encode_head(&mut payload, KIND_WRITE, write.overwrite, write.version_ns, &write.name)?;
        payload.extend_from_slice(&write.blake3.0);
        payload.extend_from_slice(&write.content);
        let generation = self.append(&payload)?;
        let lease = Lease { journal: self, generation };
        self.committed.sync()?;
        Ok(lease)
    }

    /// Records that the journaled write of `name` at `version_ns` was not
    /// committed (the plugin refused it): it is not replayed. Not synced:
    /// lost in a crash, the write is replayed under the usual rules.
    pub fn void(&self, name: &str, version_ns: u64) {
        let mut payload = Vec::new();
        let appended =
            encode_head(&mut payload, KIND_VOID, false, version_ns, name).and_then(|()| self.append(&payload));
        match appended {
            Ok(generation) => drop(Lease { journal: self, generation }),
            Err(e) => tracing::warn!(file = name, "could not void its journaled write: {e}"),
        }
    }

    /// Appends one record to the current segment, sealing it first if the
    /// record does not fit; counts a hold on the segment.
    fn append(&self, payload: &[u8]) -> io::Result<u64> {
        let mut record = Vec::with_capacity(HEADER + payload.len());
        let mut appending = self.lock_appending();
        if appending.segment.end + (HEADER + payload.len()) as u64 > SEGMENT_BYTES {
            self.seal(&mut appending)?;
        }
        let segment = &mut appending.segment;
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&segment.generation.to_le_bytes());
        record.extend_from_slice(&check(segment.generation, payload).to_le_bytes());
        record.extend_from_slice(payload);
        if let Err(e) = segment.file.write_all_at(&record, segment.end) {
            // What follows a torn record is never read: nothing more goes
            // into this segment.
            let _ = self.seal(&mut appending);
            return Err(e);
        }
        segment.end += record.len() as u64;
        segment.first.get_or_insert_with(Instant::now);
        *self.lock_held().entry(segment.generation).or_default() += 1;
        Ok(segment.generation)
    }

    /// Starts a new segment; the one written so far, synced, waits for its
    /// checkpoint.
    fn seal(&self, appending: &mut Appending) -> io::Result<()> {
        let mut next = take_spare(&mut appending.spares, &mut appending.next_file, &self.dir)?;
        // A writer whose sync falls on the new segment finds its record,
        // appended to this one, already on disk.
        rustix::fs::fdatasync(&*appending.segment.file)?;
        next.generation = appending.next_generation;
        appending.next_generation += 1;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = next.file.clone();
        let sealed = std::mem::replace(&mut appending.segment, next);
        appending.sealed.push(sealed);
        Ok(())
    }

    /// Seals the current segment once it has held writes for a while, and
    /// checkpoints the sealed ones: waits until their writes are committed,
    /// syncs the store through `store`, then clears them.
    pub fn checkpoint(&self, store: &GroupSync) -> io::Result<()> {
        let sealed = {
            let mut appending = self.lock_appending();
            if appending.segment.first.is_some_and(|first| first.elapsed() >= SEAL_AFTER) {
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
        let synced = store.sync();
        let mut appending = self.lock_appending();
        match synced {
            Ok(()) => appending.retire(sealed),
            Err(e) => {
                // Kept: replayed after the restart a failed sync calls for.
                appending.sealed.extend(sealed);
                Err(e)
            }
        }
    }

    /// The writes read at opening were written again and are durable:
    /// their segments become spares.
    pub fn replayed(&self) -> io::Result<()> {
        let mut appending = self.lock_appending();
        let replayed = std::mem::take(&mut appending.replaying);
        appending.retire(replayed)
    }

    /// Checkpoints every `SEAL_AFTER` on a thread of its own, syncing the
    /// store through `store`, until the journal is dropped.
    pub fn start_checkpoints(self: &Arc<Self>, store: Arc<GroupSync>) -> io::Result<()> {
        let journal: Weak<Self> = Arc::downgrade(self);
        std::thread::Builder::new().name("ringshare-journal".into()).spawn(move || {
            let mut failing = false;
            loop {
                std::thread::sleep(SEAL_AFTER / 2);
                let Some(journal) = journal.upgrade() else { return };
                match journal.checkpoint(&store) {
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
    /// Clears the first record of each of `segments` (so that none is read
    /// again) and keeps them as spares, deleting those past the spares kept.
    fn retire(&mut self, segments: Vec<Segment>) -> io::Result<()> {
        for segment in segments {
            let mut cleared = [0u8; HEADER];
            cleared[4..12].copy_from_slice(&segment.generation.to_le_bytes());
            segment.file.write_all_at(&cleared, 0)?;
            rustix::fs::fdatasync(&*segment.file)?;
            if self.spares.len() < SPARES_AT_MOST {
                self.spares.push(segment);
            } else {
                std::fs::remove_file(&segment.path)?;
            }
        }
        Ok(())
    }
}

/// Locks the journal in `dir`, waiting a while for a node process that
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
    *next_file += 1;
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&partial)?;
    let zeros = vec![0u8; 1 << 20];
    for block in 0..SEGMENT_BYTES / zeros.len() as u64 {
        file.write_all_at(&zeros, block * zeros.len() as u64)?;
    }
    file.sync_all()?;
    std::fs::rename(&partial, &path)?;
    File::open(dir)?.sync_all()?;
    Ok(Segment { file: Arc::new(file), path, generation: 0, end: 0, first: None })
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

fn encode_head(payload: &mut Vec<u8>, kind: u8, overwrite: bool, version_ns: u64, name: &str) -> io::Result<()> {
    let length =
        u16::try_from(name.len()).map_err(|_| io::Error::other(format!("name too long to journal: {name:?}")))?;
    payload.push(kind);
    payload.push(u8::from(overwrite));
    payload.extend_from_slice(&version_ns.to_le_bytes());
    payload.extend_from_slice(&length.to_le_bytes());
    payload.extend_from_slice(name.as_bytes());
    Ok(())
}

/// A record read back.
#[derive(Debug, PartialEq, Eq)]
enum Record {
    Write(Journaled),
    Void { name: String, version_ns: u64 },
}

/// The generation of a segment's records and the records, up to the first
/// that is empty, torn, of another generation, or not understood.
fn read_segment(bytes: &[u8]) -> (Option<u64>, Vec<Record>) {
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
        records.push(record);
        at += HEADER + length;
    }
    (generation, records)
}

fn decode(payload: &[u8]) -> Option<Record> {
    let (&kind, rest) = payload.split_first()?;
    let (&overwrite, rest) = rest.split_first()?;
    let version_ns = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
    let length = u16::from_le_bytes(rest.get(8..10)?.try_into().ok()?) as usize;
    let name = String::from_utf8(rest.get(10..10 + length)?.to_vec()).ok()?;
    let rest = &rest[10 + length..];
    match kind {
        KIND_WRITE => {
            let blake3 = Digest(rest.get(..32)?.try_into().ok()?);
            let content = Bytes::copy_from_slice(&rest[32..]);
            Some(Record::Write(Journaled { name, overwrite: overwrite == 1, version_ns, blake3, content }))
        }
        KIND_VOID => Some(Record::Void { name, version_ns }),
        _ => None,
    }
}

/// The writes of `records` in order, without those a later void names.
fn without_voided(records: Vec<Record>) -> Vec<Journaled> {
    let mut writes: Vec<Option<Journaled>> = Vec::new();
    let mut at: HashMap<(String, u64), usize> = HashMap::new();
    for record in records {
        match record {
            Record::Write(write) => {
                at.insert((write.name.clone(), write.version_ns), writes.len());
                writes.push(Some(write));
            }
            Record::Void { name, version_ns } => {
                if let Some(index) = at.remove(&(name, version_ns)) {
                    writes[index] = None;
                }
            }
        }
    }
    writes.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, version_ns: u64, content: &'static [u8]) -> Journaled {
        let blake3 = Digest(*blake3::hash(content).as_bytes());
        Journaled { name: name.into(), overwrite: true, version_ns, blake3, content: Bytes::from_static(content) }
    }

    fn store_sync(dir: &Path) -> GroupSync {
        GroupSync::open(&[dir]).unwrap()
    }

    #[test]
    fn a_second_opening_of_the_same_journal_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path()).unwrap();
        let refused = lock(dir.path(), Duration::from_millis(50)).expect_err("refused").to_string();
        assert!(refused.contains("in use by another node"), "{refused}");
        drop(journal);
        Journal::open(dir.path()).unwrap();
    }

    #[test]
    fn writes_not_checkpointed_are_read_back_in_order_without_the_voided() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, found) = Journal::open(dir.path()).unwrap();
        assert!(found.is_empty());
        let (a, b, c) = (write("a", 1, b"first"), write("b", 2, b""), write("a", 3, b"second"));
        for w in [&a, &b, &c] {
            drop(journal.write(w).unwrap());
        }
        journal.void("b", 2);
        journal.void("a", 99); // names no write
        drop(journal);
        let (_, found) = Journal::open(dir.path()).unwrap();
        assert_eq!(found, vec![a, c]);
    }

    #[test]
    fn a_torn_record_ends_the_segment_and_loses_only_what_follows() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path()).unwrap();
        let (a, b) = (write("a", 1, b"kept"), write("b", 2, b"torn in the middle of its append"));
        drop(journal.write(&a).unwrap());
        drop(journal.write(&b).unwrap());
        drop(journal);
        let path = dir.path().join("segment-0");
        let mut bytes = std::fs::read(&path).unwrap();
        let (_, records) = read_segment(&bytes);
        assert_eq!(records.len(), 2);
        // Flip one byte of b's content: its check fails.
        let last = bytes.iter().rposition(|&x| x == b'd').unwrap();
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (_, found) = Journal::open(dir.path()).unwrap();
        assert_eq!(found, vec![a]);
    }

    #[test]
    fn a_checkpoint_waits_for_the_plugin_and_then_nothing_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path()).unwrap();
        let store = store_sync(dir.path());
        let lease = journal.write(&write("a", 1, b"x")).unwrap();
        journal.lock_appending().segment.first = Some(Instant::now() - SEAL_AFTER);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| tx.send(journal.checkpoint(&store).map_err(|e| e.to_string())).unwrap());
            // The segment is sealed, but its write is not committed yet.
            assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
            drop(lease);
            assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), Ok(()));
        });
        // A later write goes to the new segment; the sealed one is a spare.
        let later = write("b", 2, b"y");
        drop(journal.write(&later).unwrap());
        drop(journal);
        let (_, found) = Journal::open(dir.path()).unwrap();
        assert_eq!(found, vec![later]);
    }

    #[test]
    fn writes_past_a_segment_go_on_in_the_next_and_spares_are_used_again() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path()).unwrap();
        let store = store_sync(dir.path());
        static BIG: [u8; CONTENT_AT_MOST] = [5u8; CONTENT_AT_MOST];
        let per_segment = SEGMENT_BYTES as usize / (CONTENT_AT_MOST + 100);
        let writes: Vec<_> = (0..per_segment as u64 + 3).map(|i| write(&format!("f{i}"), i + 1, &BIG)).collect();
        for w in &writes {
            drop(journal.write(w).unwrap());
        }
        assert_eq!(journal.lock_appending().sealed.len(), 1);
        drop(journal);
        let (journal, found) = Journal::open(dir.path()).unwrap();
        assert_eq!(found, writes, "both segments are read, in order");
        journal.replayed().unwrap();
        journal.checkpoint(&store).unwrap();
        drop(journal);
        let (_, found) = Journal::open(dir.path()).unwrap();
        assert!(found.is_empty(), "replayed segments are not read again");
        let files = std::fs::read_dir(dir.path()).unwrap().filter(|e| e.as_ref().unwrap().file_name() != LOCK).count();
        assert!(files <= 1 + SPARES_AT_MOST, "{files} segment files");
    }

    #[test]
    fn the_leftover_of_an_earlier_use_is_not_read_after_a_shorter_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path()).unwrap();
        let store = store_sync(dir.path());
        for i in 0..5 {
            drop(journal.write(&write(&format!("old{i}"), i + 1, b"old")).unwrap());
        }
        journal.lock_appending().segment.first = Some(Instant::now() - SEAL_AFTER);
        journal.checkpoint(&store).unwrap();
        // Only the spare (the first segment, cleared) is left to be used
        // again after a restart: the new write, as long as each old one,
        // lands on the old ones, and the next of them is of another
        // generation.
        drop(journal);
        std::fs::remove_file(dir.path().join("segment-1")).unwrap();
        let (journal, found) = Journal::open(dir.path()).unwrap();
        assert!(found.is_empty());
        let new = write("new0", 10, b"new");
        drop(journal.write(&new).unwrap());
        drop(journal);
        let (_, found) = Journal::open(dir.path()).unwrap();
        assert_eq!(found, vec![new]);
    }
}
