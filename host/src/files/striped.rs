//! A large read from several holders at once: the range is cut into
//! pieces of [`PIECE`] bytes (whole blocks, so each piece is checked on
//! its own against the version's outboard, fetched once). A holder read
//! asks for a run of consecutive pieces in one fetch and hands each on as
//! it completes; the next run is asked as soon as it has room for one, so
//! a fast holder serves more than a slow one. Pieces go to the client in
//! order; at most [`WINDOW`] pieces past the one being handed on are asked
//! for, which bounds what a read holds in memory.
//!
//! How many holders are read at once adapts ([`Pace`]): one at first, one
//! more every [`EPOCH`] while each added holder makes the read at least
//! [`GAIN`] faster, one less when it does not (tried again after [`REST`]
//! epochs). An added holder is judged from its first bytes on (or after
//! [`START`], if none come): until then it has had nothing to ask for, or
//! its request is on its way, and the epoch says nothing about it. Where links are the limit, every holder ends up read at once;
//! where this machine's processors are (loopback, a busy node), the read
//! stays on one holder, in runs as long as the window allows, as fast as
//! a single stream.
//!
//! A holder that fails is read no more, and its pieces go to the others.
//! A holder that lags holds up the pieces after its own: once nothing new
//! is left to ask for (the window is full, or the range is all asked for),
//! an idle holder read also fetches the oldest piece still on its way from
//! one other holder alone, and the first copy to arrive is kept
//! (BitTorrent's endgame). If every holder read fails, [`Stripes::run`]
//! says from where, and the caller reads the rest one holder at a time.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::Notify;

use super::error::FileError;
use super::network::ByteStream;
use super::network::{Fetched, Fut};
use crate::chord::{Id, NodeRef};
use crate::integrity::{BLOCK, Outboard};

/// Bytes a piece spans: whole blocks, so that it is checked on its own.
pub const PIECE: u64 = 4 * BLOCK;

/// Pieces past the one being handed on that may be asked for: with the
/// pieces on their way, what one read holds in memory.
const WINDOW: u64 = 12;

/// Runs asked of one holder at a time: the next is on its way while the
/// last arrives.
const DEPTH: usize = 2;

/// How often the number of holders read at once is reconsidered.
const EPOCH: Duration = Duration::from_millis(100);

/// How much faster an epoch with one more holder must be to keep it.
const GAIN: f64 = 1.1;

/// Epochs before a holder that did not help is tried again.
const REST: u32 = 20;

/// How long an added holder may take to bring its first bytes before it
/// is judged all the same.
const START: Duration = Duration::from_secs(1);

/// Where a read's checked bytes go, in order; an error ends the read.
pub type Sink = tokio::sync::mpsc::Sender<Result<Bytes, FileError>>;

/// The version being read, as the holder reads need it: which file, and a
/// fetch of a range of that version from a holder (checked against `known`,
/// the version's outboard, if given; an error if the holder has another).
pub trait Pieceable: Send + Sync + 'static {
    /// The file's name, for the log.
    fn file(&self) -> &str;
    /// Fetches `range` of the version from `holder`.
    fn fetch<'a>(&'a self, holder: &'a NodeRef, range: Range<u64>, known: Option<Arc<Outboard>>) -> Fut<'a, Fetched>;
}

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
    /// Which holder reads are still going.
    live: Vec<bool>,
    /// When each holder read last brought a piece (or started asking).
    done_at: Vec<Instant>,
    /// How long a holder read usually takes per piece (a moving average).
    typical: Option<Duration>,
    /// Bytes arrived so far, from every holder, and from each.
    arrived: u64,
    brought: Vec<u64>,
    /// How many holders are read at once.
    pace: Pace,
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
    /// Fetch pieces `.0 .. .0 + .1`.
    Run(u64, u64),
    Wait,
    Done,
}

impl Pieces {
    /// The pieces of `range`, the first asked of holder read 0, with
    /// `holders` holder reads.
    fn new(range: Range<u64>, holders: usize, now: Instant) -> Pieces {
        let (first, last) = (range.start / PIECE, (range.end - 1) / PIECE);
        let mut pieces = Pieces {
            range,
            handed: first,
            last,
            next: first + 1,
            returned: BTreeSet::new(),
            flying: BTreeMap::new(),
            ready: BTreeMap::new(),
            live: vec![true; holders],
            done_at: vec![now; holders],
            typical: None,
            arrived: 0,
            brought: vec![0; holders],
            pace: Pace::new(now),
        };
        pieces.flying.insert(first, vec![0]);
        pieces
    }

    /// The bytes piece `p` covers.
    fn span(&self, p: u64) -> Range<u64> {
        (p * PIECE).max(self.range.start)..((p + 1) * PIECE).min(self.range.end)
    }

    /// Whether piece `p` needs no more fetching: arrived, or handed on.
    fn settled(&self, p: u64) -> bool {
        p < self.handed || self.ready.contains_key(&p)
    }

    /// Holder reads still going.
    fn working(&self) -> usize {
        self.live.iter().filter(|&&l| l).count()
    }

    /// Whether holder read `w` is among those read at once now: the first
    /// `pace.active` of those still going.
    fn active(&self, w: usize) -> bool {
        self.live[..w].iter().filter(|&&l| l).count() < self.pace.active
    }

    fn claim(&mut self, w: usize, now: Instant) -> Claim {
        let all_asked = self.next > self.last;
        if all_asked && self.returned.is_empty() && self.flying.is_empty() {
            return Claim::Done;
        }
        if !self.active(w) {
            return Claim::Wait;
        }
        if !self.flying.values().any(|ws| ws.contains(&w)) {
            self.done_at[w] = now; // time idle is not time lagging
        }
        if let Some(p) = self.returned.pop_first() {
            self.flying.entry(p).or_default().push(w);
            return Claim::Run(p, 1);
        }
        let room = (self.handed + WINDOW).saturating_sub(self.next).min(self.last + 1 - self.next.min(self.last + 1));
        if room > 0 {
            // Runs as long as the window allows when one holder is read,
            // shorter as more share it.
            let run = (WINDOW / (self.pace.active as u64 * DEPTH as u64)).clamp(1, room);
            let p = self.next;
            self.next += run;
            for q in p..p + run {
                self.flying.insert(q, vec![w]);
            }
            return Claim::Run(p, run);
        }
        // Nothing new to ask for: race a lagging holder for the oldest piece
        // it alone is fetching.
        let lagging: Vec<bool> = (0..self.live.len()).map(|x| self.lagging(x, now)).collect();
        let race = self.flying.iter_mut().find(|(_, ws)| ws.len() == 1 && ws[0] != w && lagging[ws[0]]);
        if let Some((&p, fetching)) = race {
            fetching.push(w);
            return Claim::Run(p, 1);
        }
        Claim::Wait
    }

    /// Bytes `n` arrived from holder read `w`.
    fn brought(&mut self, w: usize, n: u64) {
        self.arrived += n;
        self.brought[w] += n;
    }

    /// Reconsiders how many holders are read at once (see [`Pace`]).
    fn pace(&mut self, now: Instant) {
        let working = self.working();
        // The last holder read of those read at once: the one on trial, if any.
        let newest = self.live.iter().enumerate().filter(|(_, l)| **l).nth(self.pace.active.max(1) - 1);
        let newest = newest.map_or(0, |(w, _)| self.brought[w]);
        self.pace.tick(now, self.arrived, working, newest);
    }

    /// Whether holder read `w` has gone three typical piece times without
    /// bringing one.
    fn lagging(&self, w: usize, now: Instant) -> bool {
        self.typical.is_some_and(|t| now.duration_since(self.done_at[w]) > 3 * t)
    }

    /// Piece `p` arrived from holder read `w`.
    fn arrived(&mut self, w: usize, p: u64, bytes: Vec<Bytes>, now: Instant) {
        let took = now.duration_since(std::mem::replace(&mut self.done_at[w], now));
        self.typical = Some(self.typical.map_or(took, |t| (t * 4 + took) / 5));
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

    /// Holder read `w` has stopped: its pieces go back.
    fn retire(&mut self, w: usize) {
        let mine: Vec<u64> = self.flying.iter().filter(|(_, ws)| ws.contains(&w)).map(|(p, _)| *p).collect();
        for p in mine {
            self.dropped(w, p);
        }
        self.live[w] = false;
    }
}

/// How many holders a read reads at once: a hill climb on the bytes that
/// arrive per [`EPOCH`] (see the module's doc).
struct Pace {
    /// Holder reads read at once.
    active: usize,
    /// When the epoch began, and the bytes arrived by then.
    since: Instant,
    bytes_then: u64,
    /// The rate of the last epoch before the one on trial.
    base: f64,
    /// The holder read added last, while it is on trial.
    trial: Option<Trial>,
    /// Epochs to wait before trying one more again.
    rest: u32,
}

/// Where the trial of an added holder read is.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Trial {
    /// Added at `since`; `from`, the bytes it had brought by the first
    /// tick after (`None` before that tick).
    Starting { since: Instant, from: Option<u64> },
    /// Bringing bytes: the epoch running judges it.
    Judged,
}

impl Pace {
    fn new(now: Instant) -> Pace {
        Pace { active: 1, since: now, bytes_then: 0, base: 0.0, trial: None, rest: 0 }
    }

    /// Ends the epoch if it has run its time: `arrived` bytes so far,
    /// `working` holder reads still going, `newest` the bytes brought by
    /// the last of those read at once.
    fn tick(&mut self, now: Instant, arrived: u64, working: usize, newest: u64) {
        self.active = self.active.min(working.max(1));
        if let Some(Trial::Starting { since, from }) = &mut self.trial {
            let from = *from.get_or_insert(newest);
            if newest > from {
                // Its first bytes: the epoch that judges it starts now.
                (self.trial, self.since, self.bytes_then) = (Some(Trial::Judged), now, arrived);
                return;
            }
            if now.duration_since(*since) < START {
                return;
            }
            self.trial = Some(Trial::Judged); // judged on the time it took
        }
        let elapsed = now.duration_since(self.since);
        if elapsed < EPOCH {
            return;
        }
        let rate = (arrived - self.bytes_then) as f64 / elapsed.as_secs_f64();
        (self.since, self.bytes_then) = (now, arrived);
        if self.trial.take().is_some() && rate < self.base * GAIN {
            // The holder added did not help: back to the last number.
            self.active -= 1;
            self.rest = REST;
            return;
        }
        self.base = rate;
        if self.rest > 0 {
            self.rest -= 1;
        } else if self.active < working {
            self.active += 1;
            self.trial = Some(Trial::Starting { since: now, from: None });
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

    /// The next run for holder read `w` (first piece, pieces), waiting
    /// while there is none; `None` once the range is all fetched. (A claim
    /// wakes nobody: no one waits for a piece to be asked for.)
    async fn next_for(&self, w: usize) -> Option<(u64, u64)> {
        loop {
            let changed = self.changed.notified();
            let claim = self.lock().claim(w, Instant::now());
            match claim {
                Claim::Run(p, n) => return Some((p, n)),
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
        let active = pieces.pace.active;
        pieces.pace(Instant::now());
        if pieces.pace.active != active {
            // One more holder read may claim, or one fewer.
            self.changed.notify_waiters();
        }
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
            None if pieces.working() == 0 => Step::Stuck,
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
    /// Opens the first piece of `range` on the first of `having` that
    /// serves it (this also brings the outboard, which every later piece
    /// is checked against); up to `sources` holders from it on are read.
    /// No holder serves: the last one's error, and the holders tried.
    pub async fn open(
        version: &impl Pieceable,
        having: &[NodeRef],
        range: Range<u64>,
        sources: usize,
    ) -> Result<Stripes, (FileError, HashSet<Id>)> {
        let first = range.start / PIECE;
        let span = (first * PIECE).max(range.start)..((first + 1) * PIECE).min(range.end);
        let mut failed = HashSet::new();
        let mut error = FileError::NoHolder(version.file().to_owned());
        for (i, holder) in having.iter().enumerate() {
            match version.fetch(holder, span.clone(), None).await {
                Ok(fetched) => {
                    let holders: Vec<NodeRef> = having[i..].iter().take(sources).cloned().collect();
                    let pieces = Pieces::new(range, holders.len(), Instant::now());
                    let board = Arc::new(Board { pieces: Mutex::new(pieces), changed: Notify::new() });
                    let first = Some((first, fetched.bytes));
                    return Ok(Stripes { board, outboard: fetched.outboard, holders, first, failed });
                }
                Err(e) => {
                    tracing::debug!(file = version.file(), holder = %holder.addr, "cannot serve the first piece: {e}");
                    failed.insert(holder.id);
                    error = e;
                }
            }
        }
        Err((error, failed))
    }

    /// The holders that could not serve the first piece.
    pub fn failed(&self) -> HashSet<Id> {
        self.failed.clone()
    }

    /// Reads the range from the holders and sends it to `tx` in order. If
    /// every holder read fails first, answers the rest of the range, for
    /// the caller to read one holder at a time (each holder asked again: a
    /// read can fail on a holder that is only slow to answer).
    pub async fn run<V: Pieceable>(self, version: Arc<V>, tx: &Sink) -> Option<Range<u64>> {
        let Stripes { board, outboard, holders, mut first, .. } = self;
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
                            return None; // the client went away
                        }
                    }
                }
                Step::Done => return None,
                // Woken by a piece, or at the next epoch to reconsider the
                // pace (a holder read may have stalled).
                Step::Wait => {
                    if tokio::time::timeout(EPOCH, changed).await.is_err() {
                        // Nothing for an epoch: the holder reads look again
                        // for a lagging holder to race.
                        board.changed.notify_waiters();
                    }
                }
                Step::Stuck => break,
            }
        }
        let pieces = board.lock();
        let from = pieces.span(pieces.handed).start..pieces.range.end;
        tracing::warn!(file = version.file(), offset = from.start, "every holder read failed; reading one at a time");
        Some(from)
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

/// One holder's part of a read: number `w`.
struct HolderRead<V> {
    board: Arc<Board>,
    version: Arc<V>,
    holder: NodeRef,
    w: usize,
}

impl<V: Pieceable> HolderRead<V> {
    /// Fetches runs of pieces from the holder, [`DEPTH`] at a time, until
    /// the range is all fetched or the holder fails; `first` is a piece
    /// already open.
    async fn run(self, outboard: Arc<Outboard>, first: Option<(u64, ByteStream)>) {
        let mut arriving = FuturesUnordered::new();
        if let Some((p, bytes)) = first {
            arriving.push(self.collect(p, 1, bytes).boxed());
        }
        let mut all_asked = false;
        loop {
            let room = !all_asked && arriving.len() < DEPTH;
            tokio::select! {
                // (Cancel-safe: a run is claimed only as `next_for` returns.)
                claim = self.board.next_for(self.w), if room => match claim {
                    Some((p, n)) => arriving.push(self.fetch(p, n, outboard.clone())),
                    None => all_asked = true,
                },
                Some(result) = arriving.next(), if !arriving.is_empty() => {
                    if let Err(e) = result {
                        tracing::warn!(file = self.version.file(), holder = %self.holder.addr,
                            "holder read failed, its pieces go to the others: {e}");
                        break;
                    }
                },
                else => break,
            }
        }
        drop(arriving);
        self.board.update(|pieces| pieces.retire(self.w));
    }

    fn fetch(&self, p: u64, n: u64, outboard: Arc<Outboard>) -> BoxFuture<'_, Result<(), FileError>> {
        async move {
            let span = {
                let pieces = self.board.lock();
                pieces.span(p).start..pieces.span(p + n - 1).end
            };
            let fetched = self.version.fetch(&self.holder, span, Some(outboard)).await?;
            self.collect(p, n, fetched.bytes).await
        }
        .boxed()
    }

    /// Gathers pieces `p..p + n` from `bytes`, handing each to the board as
    /// it completes. Once another holder's copy of the piece being gathered
    /// arrives first, the fetch is dropped and the rest of the run goes
    /// back to be asked again.
    async fn collect(&self, p: u64, n: u64, mut bytes: ByteStream) -> Result<(), FileError> {
        for piece in p..p + n {
            let want = {
                let span = self.board.lock().span(piece);
                span.end - span.start
            };
            let (mut got, mut len) = (Vec::new(), 0u64);
            while len < want {
                let Some(chunk) = bytes.next().await else {
                    let why = format!("piece {piece} ended after {len} of {want} bytes");
                    return Err(FileError::remote(&self.holder.addr, super::ErrorKind::PeerFailed, why));
                };
                let mut chunk = chunk?;
                // A chunk may run on into the next piece.
                let rest = chunk.split_off((want - len).min(chunk.len() as u64) as usize);
                len += chunk.len() as u64;
                got.push(chunk);
                let mut pieces = self.board.lock();
                pieces.brought(self.w, got.last().map_or(0, |c| c.len() as u64));
                if pieces.settled(piece) {
                    // Another holder's copy came first: this one is the
                    // slower, and the rest of its run goes back.
                    for q in piece..p + n {
                        pieces.dropped(self.w, q);
                    }
                    drop(pieces);
                    self.board.changed.notify_waiters();
                    return Ok(());
                }
                drop(pieces);
                if !rest.is_empty() {
                    bytes = futures_util::stream::once(std::future::ready(Ok(rest))).chain(bytes).boxed();
                }
            }
            self.board.update(|pieces| pieces.arrived(self.w, piece, got, Instant::now()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(claim: Claim) -> Option<(u64, u64)> {
        match claim {
            Claim::Run(p, n) => Some((p, n)),
            Claim::Wait | Claim::Done => None,
        }
    }

    #[test]
    fn spans_are_whole_blocks_within_the_range() {
        let pieces = Pieces::new(100..3 * PIECE + 5, 1, Instant::now());
        assert_eq!(pieces.span(0), 100..PIECE);
        assert_eq!(pieces.span(1), PIECE..2 * PIECE);
        assert_eq!(pieces.span(3), 3 * PIECE..3 * PIECE + 5);
        assert!(worth(2, &(0..2 * PIECE + 1)) && !worth(2, &(0..2 * PIECE)) && !worth(1, &(0..100 * PIECE)));
    }

    #[test]
    fn one_holder_reads_runs_as_long_as_the_window_and_more_holders_share_it() {
        let now = Instant::now();
        let mut pieces = Pieces::new(0..100 * PIECE, 2, now);
        // One holder read at once: runs of half the window (two on their way).
        assert_eq!(run(pieces.claim(0, now)), Some((1, WINDOW / 2)));
        assert_eq!(run(pieces.claim(0, now)), Some((1 + WINDOW / 2, WINDOW / 2 - 1)));
        assert_eq!(run(pieces.claim(0, now)), None, "the window is full and every piece its own");
        assert_eq!(run(pieces.claim(1, now)), None, "holder read 1 is not read yet");
        // Two at once: the second races the first for the oldest piece it
        // has alone, once the first lags (three typical piece times).
        pieces.pace.active = 2;
        pieces.typical = Some(Duration::from_millis(10));
        assert_eq!(run(pieces.claim(1, now + Duration::from_millis(20))), None, "not lagging yet");
        let later = now + Duration::from_millis(40);
        assert_eq!(run(pieces.claim(1, later)), Some((0, 1)));
        assert_eq!(run(pieces.claim(1, later)), Some((1, 1)));
        // Piece 0 arrives and is handed on: the window moves by one, and new
        // runs are as long as a quarter of the window would be, within it.
        pieces.arrived(0, 0, vec![Bytes::from_static(b"x")], now);
        assert!(!pieces.flying.contains_key(&0) && pieces.ready.contains_key(&0));
        pieces.ready.remove(&0);
        pieces.handed = 1;
        assert_eq!(run(pieces.claim(1, later)), Some((WINDOW, 1)));
        // A copy arriving late is dropped: the piece was handed on.
        pieces.arrived(0, 0, vec![Bytes::from_static(b"late")], now);
        assert!(pieces.ready.is_empty());
    }

    #[test]
    fn a_failed_holders_pieces_go_to_another_unless_someone_has_them() {
        let now = Instant::now();
        let mut pieces = Pieces::new(0..10 * PIECE, 2, now);
        assert_eq!(run(pieces.claim(0, now)), Some((1, 6)));
        pieces.arrived(0, 1, vec![Bytes::from_static(b"one")], now);
        // Read 0 fails: what it had not brought goes back, and read 1, now
        // the first still going, is read in its place.
        pieces.retire(0);
        assert_eq!(pieces.returned.iter().copied().collect::<Vec<_>>(), vec![0, 2, 3, 4, 5, 6]);
        assert_eq!(run(pieces.claim(1, now)), Some((0, 1)), "the returned pieces first");
        assert_eq!(run(pieces.claim(1, now)), Some((2, 1)));
        assert_eq!(pieces.working(), 1);
    }

    #[test]
    fn the_read_is_done_once_every_piece_has_arrived() {
        let now = Instant::now();
        let mut pieces = Pieces::new(0..3 * PIECE, 2, now);
        assert_eq!(run(pieces.claim(0, now)), Some((1, 2)));
        pieces.pace.active = 2;
        // All asked for: read 1 races read 0, lagging, for its oldest piece.
        pieces.typical = Some(Duration::from_millis(10));
        assert_eq!(run(pieces.claim(1, now + Duration::from_millis(40))), Some((0, 1)));
        for p in 0..3 {
            pieces.arrived(0, p, Vec::new(), now);
        }
        assert!(matches!(pieces.claim(0, now), Claim::Done));
    }

    #[test]
    fn the_pace_adds_holders_while_each_helps_and_backs_off_when_one_does_not() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let starting = |pace: &Pace| matches!(pace.trial, Some(Trial::Starting { .. }));
        let mut pace = Pace::new(start);
        pace.tick(at(50), 500, 3, 500);
        assert_eq!(pace.active, 1, "an epoch is not over");
        pace.tick(at(100), 1_000, 3, 1_000);
        assert!(pace.active == 2 && starting(&pace), "one more is tried");
        // The holder added brings nothing at first (nothing to ask for, or
        // its request on its way): no epoch judges it yet.
        pace.tick(at(110), 1_100, 3, 0);
        pace.tick(at(400), 4_000, 3, 0);
        assert!(pace.active == 2 && starting(&pace), "not judged before its first bytes");
        pace.tick(at(410), 4_100, 3, 64);
        assert_eq!((pace.active, pace.trial), (2, Some(Trial::Judged)), "judged from its first bytes");
        pace.tick(at(510), 6_100, 3, 1_000); // twice as fast: kept
        assert!(pace.active == 3 && starting(&pace));
        pace.tick(at(520), 6_200, 3, 0);
        pace.tick(at(530), 6_300, 3, 10);
        pace.tick(at(630), 8_300, 3, 500); // no faster: back to two
        assert_eq!((pace.active, pace.trial), (2, None));
        for epoch in 0..REST as u64 {
            pace.tick(at(730 + 100 * epoch), 10_300 + 2_000 * epoch, 3, 0);
            assert_eq!(pace.active, 2, "resting");
        }
        pace.tick(at(730 + 100 * REST as u64), 10_300 + 2_000 * REST as u64, 3, 0);
        assert!(pace.active == 3 && starting(&pace), "tried again after its rest");
        // One that never brings a byte is judged after START, on the time
        // it took: no faster, so back to two.
        let (after, bytes) = (730 + 100 * REST as u64, 10_300 + 2_000 * REST as u64);
        pace.tick(at(after + 10), bytes + 200, 3, 0);
        pace.tick(at(after + START.as_millis() as u64), bytes + 20_000, 3, 0);
        assert_eq!((pace.active, pace.trial), (2, None), "judged after START all the same");
        pace.tick(at(after + 2_000), bytes + 40_000, 1, 0);
        assert_eq!(pace.active, 1, "never more than the holder reads still going");
    }
}
