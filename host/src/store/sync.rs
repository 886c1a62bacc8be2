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
//! A sync that fails fails every writer it was to cover, and every later
//! writer whose sync began before the failure was reported: after a
//! failed `syncfs` the kernel may have dropped the dirty pages, so a later
//! success proves nothing about them.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

use prometheus_client::metrics::counter::Counter;

/// The group commit of one node's store.
pub struct GroupSync {
    /// One open folder per file system to sync.
    folders: Vec<File>,
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
    /// The last sync that failed, and why.
    failed: Option<(u64, String)>,
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
        Ok(Self {
            folders: opened.into_iter().map(|(_, f)| f).collect(),
            state: Mutex::new(State::default()),
            ended: Condvar::new(),
            counted: OnceLock::new(),
        })
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
            if state.ended >= needed {
                if let Some(counted) = self.counted.get() {
                    counted.writes.inc();
                }
                return match &state.failed {
                    Some((at, why)) if *at >= needed => Err(io::Error::other(format!("syncing the store: {why}"))),
                    _ => Ok(()),
                };
            }
            if state.running {
                state = self.ended.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            state.running = true;
            state.begun += 1;
            let this = state.begun;
            drop(state);
            let result = self.sync_all();
            state = self.lock();
            state.running = false;
            state.ended = this;
            if let Err(e) = result {
                tracing::error!("syncing the store failed: {e}");
                state.failed = Some((this, e.to_string()));
            }
            if let Some(counted) = self.counted.get() {
                counted.syncs.inc();
            }
            self.ended.notify_all();
        }
    }

    fn sync_all(&self) -> io::Result<()> {
        for folder in &self.folders {
            rustix::fs::syncfs(folder)?;
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn one_caller_alone_pays_for_one_sync() {
        let dir = tempfile::tempdir().unwrap();
        let sync = GroupSync::open(&[dir.path(), dir.path()]).unwrap();
        assert_eq!(sync.folders.len(), 1, "one file system is synced once");
        let (syncs, writes) = (Counter::default(), Counter::default());
        sync.count_in(syncs.clone(), writes.clone());
        sync.sync().unwrap();
        sync.sync().unwrap();
        assert_eq!((syncs.get(), writes.get()), (2, 2));
    }

    #[test]
    fn callers_that_arrive_together_share_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let sync = Arc::new(GroupSync::open(&[dir.path()]).unwrap());
        let (syncs, writes) = (Counter::default(), Counter::default());
        sync.count_in(syncs.clone(), writes.clone());
        let done = Arc::new(AtomicUsize::new(0));
        let callers: Vec<_> = (0..16)
            .map(|_| {
                let (sync, done) = (sync.clone(), done.clone());
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        sync.sync().unwrap();
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for caller in callers {
            caller.join().unwrap();
        }
        assert_eq!(done.load(Ordering::Relaxed), 320);
        assert_eq!(writes.get(), 320);
        // Each caller needs a sync begun after it arrived, so at most one
        // sync per call; sharing makes it far fewer.
        assert!(syncs.get() < 320, "{} syncs for 320 calls", syncs.get());
    }

    #[test]
    fn a_failed_sync_fails_its_callers_and_a_later_one_is_tried_again() {
        use rustix::fs::{Mode, OFlags};
        let dir = tempfile::tempdir().unwrap();
        // A descriptor opened only as a path cannot be synced (EBADF).
        let path_only =
            File::from(rustix::fs::open(dir.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap());
        let sync = GroupSync {
            folders: vec![path_only],
            state: Mutex::new(State::default()),
            ended: Condvar::new(),
            counted: OnceLock::new(),
        };
        let e = sync.sync().unwrap_err();
        assert!(e.to_string().starts_with("syncing the store"), "{e}");
        assert_eq!(sync.lock().failed.as_ref().map(|(at, _)| *at), Some(1));
        // The next caller needs a sync of its own, which is tried again.
        assert!(sync.sync().is_err());
        assert_eq!(sync.lock().ended, 2);
    }
}
