//! The host's record of each stored file's hash (`<data>/node/records`):
//! what lets a node that starts again serve its files without reading them
//! all. The host keeps it, so that an upload makes one new file in the
//! store, not two (plugin contract 0.6.0; the default plugins of 0.5.0 kept
//! a record in `meta/NAME` beside each file, which they still read).
//!
//! An append-only log, a line per change:
//!
//! ```text
//! + SIZE MODIFIED_NS BLAKE3 NAME     NAME was written (BLAKE3 in hex)
//! - NAME                             NAME was removed
//! ```
//!
//! loaded into memory at start (a name's last line wins) and written
//! again, without the lines later ones replaced, once it holds more than
//! twice the lines it needs. A record is used only while the file's size
//! and modification time still match it, so it only ever saves reading the
//! file: a line lost in a crash or cut short costs one hash, never a wrong
//! answer. Names hold no line breaks (`FileName`), and a line counts only
//! with its line break, so a cut line is never read as a shorter one.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::integrity::Digest;

/// Lines past twice the live records the log may hold before it is written
/// again: a small log is never rewritten.
const SLACK: u64 = 4096;

/// A name as the records keep it: its key in the ring (`chord::Id`, 64
/// bits of its SHA-256), not the name itself, which the host's index of the
/// store holds already. Two names of one key would only lose a record
/// (each record is checked against the file's size and time), never lend
/// one.
type Key = u64;

fn key(name: &str) -> Key {
    crate::chord::Id::hash(name).0
}

/// One file's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    size: u64,
    modified_ns: u64,
    blake3: Digest,
}

struct State {
    records: HashMap<Key, Record>,
    /// Versions being made visible now (see [`Records::pending`]), in
    /// memory only.
    pending: HashMap<Key, Vec<Record>>,
    /// Where new lines go (none: kept in memory only).
    log: Option<File>,
    /// Lines the log holds.
    lines: u64,
    /// A write to the log failed (said once; the records stay in memory).
    failed: bool,
}

/// The host's records of its store's files.
pub struct Records {
    path: Option<PathBuf>,
    state: Mutex<State>,
}

impl Records {
    /// The records kept in `path`, read now (a missing file is an empty
    /// log). Blocks: call it off the async runtime.
    pub fn open(path: &Path) -> io::Result<Self> {
        let (records, lines, cut) = match File::open(path) {
            Ok(file) => read_log(BufReader::new(file))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => (HashMap::new(), 0, false),
            Err(e) => return Err(e),
        };
        let records = Self {
            path: Some(path.to_path_buf()),
            state: Mutex::new(State { records, pending: HashMap::new(), log: None, lines, failed: false }),
        };
        {
            let mut state = records.lock();
            if state.lines > 2 * state.records.len() as u64 + SLACK {
                records.rewrite(&mut state)?;
            }
            if state.log.is_none() {
                let mut log = OpenOptions::new().create(true).append(true).open(path)?;
                if cut {
                    // New lines start on a line of their own.
                    log.write_all(b"\n")?;
                }
                state.log = Some(log);
            }
        }
        Ok(records)
    }

    /// Records kept in memory only (a tool's scratch store).
    pub fn in_memory() -> Self {
        Self {
            path: None,
            state: Mutex::new(State {
                records: HashMap::new(),
                pending: HashMap::new(),
                log: None,
                lines: 0,
                failed: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The recorded hash of `name`, if its record is of a file of `size`
    /// bytes modified at `modified_ns` (the file as it is now).
    pub fn hash_of(&self, name: &str, size: u64, modified_ns: u64) -> Option<Digest> {
        let key = key(name);
        let state = self.lock();
        let pending = state.pending.get(&key).into_iter().flatten();
        let mut records = state.records.get(&key).into_iter().chain(pending);
        records.find(|r| r.size == size && r.modified_ns == modified_ns).map(|r| r.blake3)
    }

    /// Answers for `name` at `size` bytes and `modified_ns` with `blake3`
    /// too, besides its record, until the guard is dropped: while an upload
    /// makes that version visible, a reader that finds it there before
    /// [`Records::record`] has its hash all the same (and one that finds
    /// the version before it, its own).
    pub fn pending(&self, name: &str, size: u64, modified_ns: u64, blake3: Digest) -> Pending<'_> {
        let record = Record { size, modified_ns, blake3 };
        let key = key(name);
        self.lock().pending.entry(key).or_default().push(record);
        Pending { records: self, key, record }
    }

    /// Records that `name` now holds `size` bytes modified at `modified_ns`
    /// whose hash is `blake3`. Blocks (a write to the log).
    pub fn record(&self, name: &str, size: u64, modified_ns: u64, blake3: Digest) {
        let record = Record { size, modified_ns, blake3 };
        let mut state = self.lock();
        if state.records.insert(key(name), record) == Some(record) {
            return;
        }
        self.append(&mut state, line(name, Some(&record)));
    }

    /// Records that `name` was removed. Blocks (a write to the log).
    pub fn forget(&self, name: &str) {
        let mut state = self.lock();
        if state.records.remove(&key(name)).is_some() {
            self.append(&mut state, line(name, None));
        }
    }

    /// Files recorded.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether no file is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn append(&self, state: &mut State, line: String) {
        let Some(log) = &mut state.log else { return };
        match log.write_all(line.as_bytes()) {
            Ok(()) => state.lines += 1,
            Err(e) => {
                if !std::mem::replace(&mut state.failed, true) {
                    tracing::warn!(path = ?self.path, "cannot write the host's records (files are hashed again at the next start): {e}");
                }
                return;
            }
        }
        if state.lines > 2 * state.records.len() as u64 + SLACK
            && let Err(e) = self.rewrite(state)
        {
            tracing::warn!(path = ?self.path, "cannot write the host's records again: {e}");
        }
    }

    /// Writes the log again with one line per record, the lines of the old
    /// log that still hold: to a new file, synced, then renamed over the old
    /// one (a crash leaves one or the other).
    fn rewrite(&self, state: &mut State) -> io::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let fresh = path.with_extension("new");
        let mut out = BufWriter::new(File::create(&fresh)?);
        let (mut reader, mut text, mut kept) = (BufReader::new(File::open(path)?), Vec::new(), HashSet::new());
        loop {
            text.clear();
            if reader.read_until(b'\n', &mut text)? == 0 {
                break;
            }
            let Some((name, Some(record))) = text.strip_suffix(b"\n").and_then(parse) else { continue };
            let key = key(name);
            if state.records.get(&key) == Some(&record) && kept.insert(key) {
                out.write_all(&text)?;
            }
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&fresh, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        state.log = Some(OpenOptions::new().append(true).open(path)?);
        state.lines = kept.len() as u64;
        Ok(())
    }
}

/// A version being made visible (see [`Records::pending`]).
pub struct Pending<'a> {
    records: &'a Records,
    key: Key,
    record: Record,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let mut state = self.records.lock();
        if let Some(versions) = state.pending.get_mut(&self.key) {
            if let Some(at) = versions.iter().position(|r| *r == self.record) {
                versions.swap_remove(at);
            }
            if versions.is_empty() {
                state.pending.remove(&self.key);
            }
        }
    }
}

/// The log's line for `name`: written as `record`, or removed.
fn line(name: &str, record: Option<&Record>) -> String {
    match record {
        Some(r) => format!("+ {} {} {} {name}\n", r.size, r.modified_ns, r.blake3.to_hex()),
        None => format!("- {name}\n"),
    }
}

/// The records a log holds, its lines, and whether it ends in a line cut
/// short (by a crash): that one is not read, nor are lines that do not
/// parse.
fn read_log(mut reader: impl BufRead) -> io::Result<(HashMap<Key, Record>, u64, bool)> {
    let (mut records, mut lines, mut text) = (HashMap::new(), 0, Vec::new());
    loop {
        text.clear();
        if reader.read_until(b'\n', &mut text)? == 0 {
            return Ok((records, lines, false));
        }
        let Some(whole) = text.strip_suffix(b"\n") else { return Ok((records, lines, true)) };
        lines += 1;
        match parse(whole) {
            Some((name, Some(record))) => {
                records.insert(key(name), record);
            }
            Some((name, None)) => {
                records.remove(&key(name));
            }
            None => {}
        }
    }
}

/// One line, without its line break.
fn parse(text: &[u8]) -> Option<(&str, Option<Record>)> {
    let text = std::str::from_utf8(text).ok()?;
    if let Some(name) = text.strip_prefix("- ") {
        return crate::store::FileName::parse(name).is_ok().then_some((name, None));
    }
    let mut fields = text.strip_prefix("+ ")?.splitn(4, ' ');
    let size = fields.next()?.parse().ok()?;
    let modified_ns = fields.next()?.parse().ok()?;
    let blake3 = Digest::parse(fields.next()?)?;
    let name = fields.next()?;
    crate::store::FileName::parse(name).ok()?;
    Some((name, Some(Record { size, modified_ns, blake3 })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest([n; 32])
    }

    #[test]
    fn records_come_back_after_a_restart_and_match_only_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records");
        let records = Records::open(&path).unwrap();
        records.record("a b.txt", 10, 100, digest(1));
        records.record("gone", 5, 50, digest(2));
        records.record("a b.txt", 11, 101, digest(3));
        records.forget("gone");
        records.forget("never there");
        drop(records);
        let records = Records::open(&path).unwrap();
        assert_eq!(records.hash_of("a b.txt", 11, 101), Some(digest(3)), "the last line wins");
        assert_eq!(records.hash_of("a b.txt", 10, 100), None, "an older version does not match");
        assert_eq!(records.hash_of("a b.txt", 11, 102), None, "nor a file touched since");
        assert_eq!(records.hash_of("gone", 5, 50), None);
        assert_eq!(records.len(), 1);
    }

    #[test]
    fn a_cut_or_damaged_line_is_skipped_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records");
        let whole = line("kept", Some(&Record { size: 3, modified_ns: 7, blake3: digest(4) }));
        let cut = line("cut-name-is-longer", Some(&Record { size: 3, modified_ns: 7, blake3: digest(5) }));
        let garbage = "+ 3 x 00 bad\n- a/b\n\0\0\0\n";
        std::fs::write(&path, format!("{whole}{garbage}{}", &cut[..cut.len() - 6])).unwrap();
        let records = Records::open(&path).unwrap();
        assert_eq!(records.hash_of("kept", 3, 7), Some(digest(4)));
        assert_eq!(records.hash_of("cut-name-is-l", 3, 7), None, "a line cut short is not read as a shorter name");
        assert_eq!(records.len(), 1);
        // Appends after the cut line start on a line of their own.
        records.record("after", 1, 1, digest(6));
        drop(records);
        let records = Records::open(&path).unwrap();
        assert_eq!(records.hash_of("after", 1, 1), Some(digest(6)));
        assert_eq!(records.hash_of("kept", 3, 7), Some(digest(4)));
    }

    #[test]
    fn a_log_of_mostly_replaced_lines_is_written_again_smaller() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records");
        let records = Records::open(&path).unwrap();
        let rounds = SLACK + 100;
        for i in 0..rounds {
            records.record("same", i, i, digest(7));
        }
        records.record("other", 1, 2, digest(8));
        let lines = std::fs::read_to_string(&path).unwrap().lines().count() as u64;
        assert!(lines < rounds, "{lines} lines for 2 records after {rounds} writes");
        drop(records);
        let records = Records::open(&path).unwrap();
        assert_eq!(records.hash_of("same", rounds - 1, rounds - 1), Some(digest(7)));
        assert_eq!(records.hash_of("other", 1, 2), Some(digest(8)));
        assert!(!path.with_extension("new").exists());
    }

    #[test]
    fn a_pending_version_answers_beside_the_record_until_its_guard_goes() {
        let records = Records::in_memory();
        records.record("f", 1, 10, digest(1));
        let pending = records.pending("f", 2, 20, digest(2));
        assert_eq!(records.hash_of("f", 1, 10), Some(digest(1)), "the version still visible");
        assert_eq!(records.hash_of("f", 2, 20), Some(digest(2)), "the one becoming visible");
        records.record("f", 2, 20, digest(2));
        drop(pending);
        assert_eq!(records.hash_of("f", 2, 20), Some(digest(2)));
        assert_eq!(records.hash_of("f", 1, 10), None);
        drop(records.pending("g", 3, 30, digest(3)));
        assert_eq!(records.hash_of("g", 3, 30), None, "a version that never became visible is gone");
        assert!(records.lock().pending.is_empty());
        assert_eq!(records.len(), 1);
    }

    #[test]
    fn in_memory_records_answer_without_a_file() {
        let records = Records::in_memory();
        records.record("x", 1, 2, digest(9));
        assert_eq!(records.hash_of("x", 1, 2), Some(digest(9)));
        records.forget("x");
        assert!(records.is_empty());
    }
}
