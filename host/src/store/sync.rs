//! Group commit: one sync of the store's file system covers every write
//! that finished while the previous sync ran, as databases share one log
//! flush among the commits that arrive together (PostgreSQL's commit
//! delay, RocksDB's write groups).
//!
//! A writer calls [`GroupSync::sync`] once its bytes are written. If no
//! sync is running it starts one (`syncfs` of the store's file system, and
//! of the host's folder when that is another one) and answers when it
//! ends. If one is running, that sync may have begun before the writer's
//! bytes were written, so the writer waits for the next one, which the
//! first of the waiters starts as soon as the running one ends, for every
//! writer that arrived meanwhile. Nobody waits on a timer: under load the
//! batches grow by themselves, alone a writer pays for one sync.
//!
//! A failed sync fails every sync after it until the node restarts, as
//! PostgreSQL does since "fsyncgate": after a failed `syncfs` the kernel may
//! have dropped dirty pages of writes made by anyone before it, and no
//! later sync can tell which, so nothing written since can be called
//! durable. (`syncfs` reports write-back errors since Linux 5.8.)

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

use prometheus_client::metrics::counter::Counter;

/// Syncs what the group commit covers.
type SyncAll = Box<dyn Fn() -> io::Result<()> + Send + Sync>;

/// The group commit of one node's store.
pub struct GroupSync {
    sync_all: SyncAll,
    state: Mutex<State>,
    ended: Condvar,
    counted: OnceLock<Counted>,
}

#[derive(Default)]
struct State {
    /// Syncs begun so far; the running one, if any, is the last of them.
    begun: u64,
    /// Syncs ended so far.
    ended: u64,
    running: bool,
    /// Writers waiting for a sync to end.
    waiting: usize,
    /// Why the first sync that failed failed.
    failed: Option<String>,
}

/// Counters in the node's metrics.
struct Counted {
    syncs: Counter,
    writes: Counter,
}

impl GroupSync {
    /// The group commit of the file systems holding `folders` (each synced
    /// once when several are on the same one).
    pub fn open(folders: &[&Path]) -> io::Result<Self> {
        let mut opened: Vec<(u64, File)> = Vec::new();
        for folder in folders {
            let file = File::open(folder)?;
            let device = file.metadata()?.dev();
            if opened.iter().all(|(d, _)| *d != device) {
                opened.push((device, file));
            }
        }
        let folders: Vec<File> = opened.into_iter().map(|(_, f)| f).collect();
        Ok(Self::with(move || folders.iter().try_for_each(|f| rustix::fs::syncfs(f).map_err(io::Error::from))))
    }

    /// The group commit of what `sync_all` makes durable.
    pub fn with(sync_all: impl Fn() -> io::Result<()> + Send + Sync + 'static) -> Self {
        Self { sync_all: Box::new(sync_all), state: Mutex::default(), ended: Condvar::new(), counted: OnceLock::new() }
    }

    /// Counts syncs and the writes they covered in `syncs` and `writes`.
    pub fn count_in(&self, syncs: Counter, writes: Counter) {
        let _ = self.counted.set(Counted { syncs, writes });
    }

    /// Returns once everything written before the call is on disk: a sync
    /// that began after the call has ended. Blocks: call it off the async
    /// runtime.
    pub fn sync(&self) -> io::Result<()> {
        let mut state = self.lock();
        // A sync running now may have begun before this caller's writes.
        let needed = state.begun + 1;
        loop {
            if let Some(why) = &state.failed {
                return Err(io::Error::other(format!("the store could not be synced ({why}); restart the node")));
            }
            if state.ended >= needed {
                if let Some(counted) = self.counted.get() {
                    counted.writes.inc();
                }
                return Ok(());
            }
            if state.running {
                state.waiting += 1;
                state = self.ended.wait(state).unwrap_or_else(|p| p.into_inner());
                state.waiting -= 1;
                continue;
            }
            state.running = true;
            state.begun += 1;
            let this = state.begun;
            drop(state);
            let result = (self.sync_all)();
            state = self.lock();
            state.running = false;
            state.ended = this;
            if let Err(e) = result {
                tracing::error!("syncing the store failed, no write is acknowledged until a restart: {e}");
                state.failed.get_or_insert_with(|| e.to_string());
            }
            if let Some(counted) = self.counted.get() {
                counted.syncs.inc();
            }
            self.ended.notify_all();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn one_caller_alone_pays_for_one_sync() {
        let dir = tempfile::tempdir().unwrap();
        let sync = GroupSync::open(&[dir.path(), dir.path()]).unwrap();
        let (syncs, writes) = (Counter::default(), Counter::default());
        sync.count_in(syncs.clone(), writes.clone());
        sync.sync().unwrap();
        sync.sync().unwrap();
        assert_eq!((syncs.get(), writes.get()), (2, 2));
    }

    /// A group commit whose first sync holds until `release` is sent, and
    /// which counts the syncs begun; `entered` says when the first began.
    fn held_first(fail_first: bool) -> (Arc<GroupSync>, Arc<AtomicUsize>, mpsc::Receiver<()>, mpsc::Sender<()>) {
        let (entered_tx, entered) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let (entered_tx, release_rx) = (Mutex::new(entered_tx), Mutex::new(release_rx));
        let begun = Arc::new(AtomicUsize::new(0));
        let counting = begun.clone();
        let sync = GroupSync::with(move || {
            if counting.fetch_add(1, Ordering::SeqCst) == 0 {
                entered_tx.lock().unwrap().send(()).unwrap();
                release_rx.lock().unwrap().recv().unwrap();
                if fail_first {
                    return Err(io::Error::other("EIO"));
                }
            }
            Ok(())
        });
        (Arc::new(sync), begun, entered, release)
    }

    /// Waits until `n` callers wait for the running sync.
    fn until_waiting(sync: &GroupSync, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while sync.lock().waiting < n {
            assert!(Instant::now() < deadline, "no caller waited");
            std::thread::yield_now();
        }
    }

    #[test]
    fn callers_arriving_during_a_sync_share_the_next_one() {
        let (sync, begun, entered, release) = held_first(false);
        let first = std::thread::spawn({
            let sync = sync.clone();
            move || sync.sync()
        });
        entered.recv().unwrap();
        // Three callers arrive while the first sync runs: it may have begun
        // before their writes, so none may count on it.
        let later: Vec<_> = (0..3)
            .map(|_| {
                let (sync, begun) = (sync.clone(), begun.clone());
                std::thread::spawn(move || {
                    sync.sync().unwrap();
                    begun.load(Ordering::SeqCst)
                })
            })
            .collect();
        until_waiting(&sync, 3);
        release.send(()).unwrap();
        first.join().unwrap().unwrap();
        for caller in later {
            assert_eq!(caller.join().unwrap(), 2, "answered after a second sync, begun after it arrived");
        }
        assert_eq!(begun.load(Ordering::SeqCst), 2, "the three shared one sync");
    }

    #[test]
    fn a_failed_sync_fails_its_callers_and_every_later_one() {
        let (sync, begun, entered, release) = held_first(true);
        let first = std::thread::spawn({
            let sync = sync.clone();
            move || sync.sync()
        });
        entered.recv().unwrap();
        let during = std::thread::spawn({
            let sync = sync.clone();
            move || sync.sync()
        });
        until_waiting(&sync, 1);
        release.send(()).unwrap();
        let e = first.join().unwrap().unwrap_err();
        assert!(e.to_string().contains("could not be synced (EIO)"), "{e}");
        // Its writes may have been dropped by the failed sync: a later
        // success would prove nothing about them.
        assert!(during.join().unwrap().is_err());
        assert!(sync.sync().is_err(), "a caller after the failure is refused too");
        assert_eq!(begun.load(Ordering::SeqCst), 1, "no sync is tried after a failure");
    }

    #[test]
    fn a_real_sync_that_fails_says_so() {
        use rustix::fs::{Mode, OFlags};
        let dir = tempfile::tempdir().unwrap();
        // A descriptor opened only as a path cannot be synced (EBADF).
        let path_only =
            File::from(rustix::fs::open(dir.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap());
        let sync = GroupSync::with(move || rustix::fs::syncfs(&path_only).map_err(io::Error::from));
        assert!(sync.sync().unwrap_err().to_string().starts_with("the store could not be synced"));
    }
}
