//! A large read from several holders at once: the range is cut into
//! pieces of [`PIECE`] bytes (whole blocks, so each piece is checked on
//! its own against the version's outboard, fetched once), and every holder
//! read takes the next piece as soon as it has room for one, so a fast
//! holder serves more pieces than a slow one. Pieces are handed on in
//! order; at most [`WINDOW`] pieces past the one being handed on are asked
//! for, which bounds what a read holds in memory.
//!
//! A holder that fails is read no more, and its pieces go to the others.
//! A holder that lags holds up the pieces after its own: once nothing else
//! is left to ask for (the window is full, or the range is all asked for),
//! an idle holder is asked for the oldest piece still on its way from one
//! other holder, and the first copy to arrive is kept (BitTorrent's
//! endgame). If every holder read fails, the rest is read one holder at a
//! time ([`Version::follow`]), which asks the ring for holders again.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::Notify;

use super::error::FileError;
use super::network::ByteStream;
use super::read::{Sink, Version};
use crate::chord::{Id, NodeRef};
use crate::integrity::{BLOCK, Outboard};

/// Bytes a piece spans: whole blocks, so that it is checked on its own.
pub const PIECE: u64 = 4 * BLOCK;

/// Pieces past the one being handed on that may be asked for: with the
/// pieces on their way, what one read holds in memory.
const WINDOW: u64 = 12;

/// Pieces asked of one holder at a time: the next is on its way while
/// the last arrives.
const DEPTH: usize = 2;

/// Whether a read of `range` is worth spreading over `sources` holders.
pub fn worth(sources: usize, range: &Range<u64>) -> bool {
    sources >= 2 && range.end.saturating_sub(range.start) > 2 * PIECE
}

/// Pieces `first..=last` (by offset / [`PIECE`]) of one read, and who has
/// which.
struct Pieces {
    range: Range<u64>,
    /// The next piece to hand on.
    handed: u64,
    /// The last piece of the range.
    last: u64,
    /// The first piece never asked for.
    next: u64,
    /// Pieces whose holder failed, to be asked of another.
    returned: BTreeSet<u64>,
    /// Pieces on their way, and the holder reads (by number) fetching each.
    flying: BTreeMap<u64, Vec<usize>>,
    /// Pieces arrived, checked, waiting for their turn.
    ready: BTreeMap<u64, Vec<Bytes>>,
    /// Holder reads still going.
    working: usize,
}

/// What the pump of a read is to do next.
enum Step {
    /// Hand on the next piece.
    Hand(Vec<Bytes>),
    /// Wait for the next piece.
    Wait,
    /// Every holder read has failed before the range was all fetched.
    Stuck,
    /// The range is all handed on.
    Done,
}

/// What a holder read is to do next.
enum Claim {
    Piece(u64),
    Wait,
    Done,
}

impl Pieces {
    /// The bytes piece `p` covers.
    fn span(&self, p: u64) -> Range<u64> {
        (p * PIECE).max(self.range.start)..((p + 1) * PIECE).min(self.range.end)
    }

    /// Whether piece `p` needs no more fetching: arrived, or handed on.
    fn settled(&self, p: u64) -> bool {
        p < self.handed || self.ready.contains_key(&p)
    }

    fn claim(&mut self, w: usize) -> Claim {
        if let Some(p) = self.returned.pop_first() {
            self.flying.entry(p).or_default().push(w);
            return Claim::Piece(p);
        }
        if self.next <= self.last && self.next < self.handed + WINDOW {
            let p = self.next;
            self.next += 1;
            self.flying.insert(p, vec![w]);
            return Claim::Piece(p);
        }
        // Nothing new to ask for: race another holder for a piece it alone
        // is fetching. While the window is full, only the piece holding it
        // up; once the range is all asked for, the oldest (endgame).
        let all_asked = self.next > self.last;
        let racing = self
            .flying
            .iter_mut()
            .find(|(p, ws)| ws.len() == 1 && !ws.contains(&w) && (all_asked || **p == self.handed));
        if let Some((&p, fetching)) = racing {
            fetching.push(w);
            return Claim::Piece(p);
        }
        if all_asked && self.returned.is_empty() && self.flying.is_empty() {
            return Claim::Done;
        }
        Claim::Wait
    }

    fn arrived(&mut self, p: u64, bytes: Vec<Bytes>) {
        self.flying.remove(&p);
        if !self.settled(p) {
            self.ready.insert(p, bytes);
        }
    }

    /// Holder read `w` no longer fetches piece `p`: it goes back to be asked
    /// of another holder unless one is fetching it or it arrived.
    fn dropped(&mut self, w: usize, p: u64) {
        if let Some(fetching) = self.flying.get_mut(&p) {
            fetching.retain(|&x| x != w);
            if fetching.is_empty() {
                self.flying.remove(&p);
                if !self.settled(p) {
                    self.returned.insert(p);
                }
            }
        }
    }
}

/// The pieces of one read, shared by its holder reads and its pump.
struct Board {
    pieces: Mutex<Pieces>,
    changed: Notify,
}

impl Board {
    fn lock(&self) -> MutexGuard<'_, Pieces> {
        self.pieces.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the pieces with `f` and wakes every waiter.
    fn update<T>(&self, f: impl FnOnce(&mut Pieces) -> T) -> T {
        let out = f(&mut self.lock());
        self.changed.notify_waiters();
        out
    }

    /// The next piece for holder read `w`, waiting while there is none;
    /// `None` once the range is all fetched. (A claim wakes nobody: no one
    /// waits for a piece to be asked for.)
    async fn next_for(&self, w: usize) -> Option<u64> {
        loop {
            let changed = self.changed.notified();
            let claim = self.lock().claim(w);
            match claim {
                Claim::Piece(p) => return Some(p),
                Claim::Done => return None,
                Claim::Wait => changed.await,
            }
        }
    }
}

impl Board {
    /// The pump's next step; handing a piece on moves the window, which
    /// wakes the holder reads.
    fn hand_on(&self) -> Step {
        let mut pieces = self.lock();
        if pieces.handed > pieces.last {
            return Step::Done;
        }
        let handed = pieces.handed;
        match pieces.ready.remove(&handed) {
            Some(bytes) => {
                pieces.handed += 1;
                drop(pieces);
                self.changed.notify_waiters();
                Step::Hand(bytes)
            }
            None if pieces.working == 0 => Step::Stuck,
            None => Step::Wait,
        }
    }
}

/// A read spread over several holders (see the module's doc).
pub struct Stripes {
    board: Arc<Board>,
    outboard: Arc<Outboard>,
    /// Holders to read, and the first piece's stream, open on the first.
    holders: Vec<NodeRef>,
    first: Option<(u64, ByteStream)>,
    /// Holders that could not serve the first piece.
    failed: HashSet<Id>,
}

impl Stripes {
    /// Opens the first piece of `range` on the first of the version's
    /// holders that serves it (this also brings the outboard, which every
    /// later piece is checked against); up to `sources` holders from it on
    /// are read. No holder serves: the last one's error, and the holders
    /// tried.
    pub async fn open(
        version: &Version,
        range: Range<u64>,
        sources: usize,
    ) -> Result<Stripes, (FileError, HashSet<Id>)> {
        let (first, last) = (range.start / PIECE, (range.end - 1) / PIECE);
        let pieces = Pieces {
            handed: first,
            last,
            next: first + 1,
            returned: BTreeSet::new(),
            flying: BTreeMap::new(),
            ready: BTreeMap::new(),
            working: 0,
            range,
        };
        let span = pieces.span(first);
        let Version { reader, name, entry, having } = version;
        let mut failed = HashSet::new();
        let mut error = FileError::NoHolder(name.to_string());
        for (i, holder) in having.iter().enumerate() {
            match reader.fetch_from(holder, name, entry, span.clone(), None).await {
                Ok(fetched) => {
                    let holders: Vec<NodeRef> = having[i..].iter().take(sources).cloned().collect();
                    let mut pieces = pieces;
                    pieces.flying.insert(first, vec![0]);
                    pieces.working = holders.len();
                    let board = Arc::new(Board { pieces: Mutex::new(pieces), changed: Notify::new() });
                    let first = Some((first, fetched.bytes));
                    return Ok(Stripes { board, outboard: fetched.outboard, holders, first, failed });
                }
                Err(e) => {
                    tracing::debug!(file = %name, holder = %holder.addr, "cannot serve the first piece: {e}");
                    failed.insert(holder.id);
                    error = e;
                }
            }
        }
        Err((error, failed))
    }

    /// Reads the range from every holder at once and sends it to `tx` in
    /// order; if every holder read fails, the rest comes from one holder
    /// at a time.
    pub async fn run(self, version: Version, tx: Sink) {
        let Stripes { board, outboard, holders, mut first, mut failed } = self;
        let version = Arc::new(version);
        let reads = holders.iter().enumerate().map(|(w, holder)| {
            let read = HolderRead { board: board.clone(), version: version.clone(), holder: holder.clone(), w };
            tokio::spawn(crate::trace::carried(read.run(outboard.clone(), first.take())))
        });
        let _stop = AbortOnDrop(reads.collect());
        loop {
            let changed = board.changed.notified();
            let step = board.hand_on();
            match step {
                Step::Hand(bytes) => {
                    for chunk in bytes {
                        if tx.send(Ok(chunk)).await.is_err() {
                            return; // the client went away
                        }
                    }
                }
                Step::Done => return,
                Step::Wait => changed.await,
                Step::Stuck => break,
            }
        }
        // Every holder read failed: one holder at a time from here, the ring
        // asked again for holders.
        let from = {
            let pieces = board.lock();
            pieces.span(pieces.handed).start..pieces.range.end
        };
        failed.extend(holders.iter().map(|h| h.id));
        tracing::warn!(file = %version.name, offset = from.start, "every holder read failed; reading one at a time");
        Version::clone(&version).follow(from, None, failed, tx).await;
    }
}

/// Stops the holder reads when the read ends (done, or its client gone).
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for read in &self.0 {
            read.abort();
        }
    }
}

/// A piece fetched: its bytes, none if another holder's copy came first,
/// or why the holder failed.
type Got = (u64, Result<Option<Vec<Bytes>>, FileError>);

/// One holder's part of a read: number `w`.
struct HolderRead {
    board: Arc<Board>,
    version: Arc<Version>,
    holder: NodeRef,
    w: usize,
}

impl HolderRead {
    /// Fetches pieces from the holder, [`DEPTH`] at a time, until the range
    /// is all fetched or the holder fails; `first` is a piece already open.
    async fn run(self, outboard: Arc<Outboard>, first: Option<(u64, ByteStream)>) {
        let mut arriving = FuturesUnordered::new();
        if let Some((p, bytes)) = first {
            arriving.push(self.collect(p, bytes).boxed());
        }
        let mut all_asked = false;
        loop {
            let room = !all_asked && arriving.len() < DEPTH;
            tokio::select! {
                // (Cancel-safe: a piece is claimed only as `next_for` returns.)
                claim = self.board.next_for(self.w), if room => match claim {
                    Some(p) => arriving.push(self.fetch(p, outboard.clone())),
                    None => all_asked = true,
                },
                Some((p, result)) = arriving.next(), if !arriving.is_empty() => match result {
                    Ok(Some(bytes)) => self.board.update(|pieces| pieces.arrived(p, bytes)),
                    Ok(None) => {} // another holder's copy came first
                    Err(e) => {
                        tracing::warn!(file = %self.version.name, holder = %self.holder.addr, piece = p,
                            "holder read failed, its pieces go to the others: {e}");
                        break;
                    }
                },
                else => break,
            }
        }
        drop(arriving);
        self.board.update(|pieces| {
            let mine: Vec<u64> = pieces.flying.iter().filter(|(_, ws)| ws.contains(&self.w)).map(|(p, _)| *p).collect();
            for p in mine {
                pieces.dropped(self.w, p);
            }
            pieces.working -= 1;
        });
    }

    fn fetch(&self, p: u64, outboard: Arc<Outboard>) -> BoxFuture<'_, Got> {
        async move {
            let span = self.board.lock().span(p);
            let Version { reader, name, entry, .. } = &*self.version;
            match reader.fetch_from(&self.holder, name, entry, span, Some(outboard)).await {
                Ok(fetched) => self.collect(p, fetched.bytes).await,
                Err(e) => (p, Err(e)),
            }
        }
        .boxed()
    }

    /// Gathers piece `p` from `bytes`; `None` if another holder's copy
    /// arrived meanwhile (this one is dropped unfinished).
    async fn collect(&self, p: u64, mut bytes: ByteStream) -> Got {
        let span = self.board.lock().span(p);
        let (mut got, mut len) = (Vec::new(), 0u64);
        while let Some(chunk) = bytes.next().await {
            match chunk {
                Ok(chunk) => {
                    len += chunk.len() as u64;
                    got.push(chunk);
                }
                Err(e) => return (p, Err(e)),
            }
            if self.board.lock().settled(p) {
                return (p, Ok(None));
            }
        }
        if len != span.end - span.start {
            let why = format!("piece {p} ended after {len} of {} bytes", span.end - span.start);
            return (p, Err(FileError::remote(&self.holder.addr, super::ErrorKind::PeerFailed, why)));
        }
        (p, Ok(Some(got)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pieces of a read of `len` bytes from offset 0, the first asked
    /// of holder read 0 (as [`Stripes::open`] leaves them).
    fn pieces(len: u64) -> Pieces {
        let mut pieces = Pieces {
            range: 0..len,
            handed: 0,
            last: (len - 1) / PIECE,
            next: 1,
            returned: BTreeSet::new(),
            flying: BTreeMap::new(),
            ready: BTreeMap::new(),
            working: 2,
        };
        pieces.flying.insert(0, vec![0]);
        pieces
    }

    fn claimed(claim: Claim) -> Option<u64> {
        match claim {
            Claim::Piece(p) => Some(p),
            Claim::Wait | Claim::Done => None,
        }
    }

    #[test]
    fn spans_are_whole_blocks_within_the_range() {
        let pieces = Pieces { range: 100..3 * PIECE + 5, ..pieces(1) };
        assert_eq!(pieces.span(0), 100..PIECE);
        assert_eq!(pieces.span(1), PIECE..2 * PIECE);
        assert_eq!(pieces.span(3), 3 * PIECE..3 * PIECE + 5);
        assert!(worth(2, &(0..2 * PIECE + 1)) && !worth(2, &(0..2 * PIECE)) && !worth(1, &(0..100 * PIECE)));
    }

    #[test]
    fn pieces_are_asked_in_order_and_no_further_than_the_window() {
        let mut pieces = pieces(100 * PIECE);
        let asked: Vec<u64> = (0..WINDOW + 3).filter_map(|i| claimed(pieces.claim(i as usize % 2))).collect();
        // Pieces 1..WINDOW, then the piece holding the window up (piece 0,
        // from read 0) is raced by read 1; then nothing.
        let mut expected: Vec<u64> = (1..WINDOW).collect();
        expected.push(0);
        assert_eq!(asked, expected);
        assert!(matches!(pieces.claim(0), Claim::Wait) && matches!(pieces.claim(1), Claim::Wait));
        // Piece 0 arrives and is handed on: the window moves by one.
        pieces.arrived(0, vec![Bytes::from_static(b"x")]);
        assert!(!pieces.flying.contains_key(&0) && pieces.ready.contains_key(&0));
        pieces.ready.remove(&0);
        pieces.handed = 1;
        assert_eq!(claimed(pieces.claim(0)), Some(WINDOW));
        // A copy arriving late is dropped: the piece was handed on.
        pieces.arrived(0, vec![Bytes::from_static(b"late")]);
        assert!(pieces.ready.is_empty());
    }

    #[test]
    fn a_failed_holders_pieces_go_to_another_unless_someone_has_them() {
        let mut pieces = pieces(10 * PIECE);
        assert_eq!(claimed(pieces.claim(0)), Some(1));
        assert_eq!(claimed(pieces.claim(1)), Some(2));
        pieces.arrived(1, vec![Bytes::from_static(b"one")]);
        // Read 0 fails with pieces 0 and 1: 1 has arrived, 0 goes back.
        pieces.dropped(0, 0);
        pieces.dropped(0, 1);
        assert_eq!(pieces.returned.iter().copied().collect::<Vec<_>>(), vec![0]);
        assert_eq!(claimed(pieces.claim(1)), Some(0), "the returned piece first");
        assert_eq!(claimed(pieces.claim(1)), Some(3));
    }

    #[test]
    fn the_read_is_done_once_every_piece_has_arrived() {
        let mut pieces = pieces(3 * PIECE);
        assert_eq!(claimed(pieces.claim(0)), Some(1));
        assert_eq!(claimed(pieces.claim(1)), Some(2));
        // All asked for: read 1 races read 0 for its oldest piece.
        assert_eq!(claimed(pieces.claim(1)), Some(0));
        for p in 0..3 {
            pieces.arrived(p, Vec::new());
        }
        assert!(matches!(pieces.claim(0), Claim::Done));
    }
}
