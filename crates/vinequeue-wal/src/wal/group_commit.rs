//! Group commit: one thread (the leader) syncs for everyone waiting; the others sleep on
//! `round` until it completes, then return without taking any lock, so that waking N
//! waiters costs one system call rather than a chain of N lock hand-offs.
//!
//! The protocol is written against [`Log`], so that the loom models below explore every
//! interleaving of this very code over a log that only counts (`ci/loom`).

use std::time::{Duration, Instant};

use vinequeue_storage::Error;

#[cfg(loom)]
use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Rounds of polling `round` (16 spins, then yields of the core) before a follower sleeps
/// on it. A sync takes a few hundred microseconds: a follower that sees the round end
/// without having slept needs no wake-up call and appends again at once, in time to join
/// the next group. (Under loom, one: each poll is a branch of the model.)
const FOLLOWER_SPINS: u32 = if cfg!(loom) { 1 } else { 200 };

/// Times a new leader yields its core at least before syncing when other threads are
/// syncing too, so that they can append first and share its sync (a `commit_delay`;
/// `gather` decides how long beyond that). With followers polling the round, blind
/// yields beyond one only delay the sync.
const GATHER_YIELDS: u32 = 1;

/// Longest a leader waits for the appenders of the last round (`gather`).
const MAX_GATHER: Duration = Duration::from_micros(200);

/// What the group commit needs from the log.
pub(super) trait Log {
    /// The last number appended (0 before any).
    fn appended(&self) -> u64;
    /// `Err` once the log is in its failed state (a sync failed).
    fn check_failed(&self) -> Result<(), Error>;
    /// Syncs every appended byte; returns the last number the sync covers.
    fn sync_all(&self) -> Result<u64, Error>;
    /// A round made every record up to `upto` durable.
    fn synced(&self, upto: u64);
}

/// The group commit's state.
pub(super) struct GroupCommit {
    /// Every record up to here is durable.
    synced: AtomicU64,
    /// A leader is syncing.
    leading: AtomicBool,
    /// Bumped when a leader finishes a round; followers sleep on it (a futex word).
    round: AtomicU32,
    /// Threads inside `sync_through`.
    callers: AtomicUsize,
    /// Records the last sync covered that the one before had not: how many appenders
    /// took part in the last round, which the next leader waits for (see `gather`).
    last_group: AtomicU64,
    /// How long the last sync took, in nanoseconds.
    last_sync_ns: AtomicU64,
}

impl GroupCommit {
    /// Every record up to `synced` is durable already.
    pub(super) fn new(synced: u64) -> Self {
        GroupCommit {
            synced: AtomicU64::new(synced),
            leading: AtomicBool::new(false),
            round: AtomicU32::new(0),
            callers: AtomicUsize::new(0),
            last_group: AtomicU64::new(0),
            last_sync_ns: AtomicU64::new(0),
        }
    }

    /// Every record up to here is durable.
    pub(super) fn synced(&self) -> u64 {
        self.synced.load(Ordering::Acquire)
    }

    /// Records that a sync outside the group commit (the close's) made every record up
    /// to `upto` durable.
    pub(super) fn advance(&self, upto: u64) {
        self.synced.fetch_max(upto, Ordering::AcqRel);
    }

    /// Returns once record `seq` is durable; concurrent callers share one sync.
    ///
    /// A number not appended yet is taken as the last one appended: waiting for it could
    /// take forever (no sync makes it durable before it is appended).
    pub(super) fn sync_through(&self, seq: u64, log: &impl Log) -> Result<(), Error> {
        let seq = seq.min(log.appended());
        self.callers.fetch_add(1, Ordering::SeqCst);
        let result = self.sync_through_counted(seq, log);
        self.callers.fetch_sub(1, Ordering::SeqCst);
        result
    }

    fn sync_through_counted(&self, seq: u64, log: &impl Log) -> Result<(), Error> {
        loop {
            log.check_failed()?;
            let round = self.round.load(Ordering::Acquire);
            if self.synced.load(Ordering::Acquire) >= seq {
                return Ok(());
            }
            if self
                .leading
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                // Other threads syncing too: let them append first and share this sync
                // (a `commit_delay`).
                if self.callers.load(Ordering::SeqCst) > 1 {
                    self.gather(log);
                }
                let before = self.synced.load(Ordering::Acquire);
                let started = Instant::now();
                // (The failed state is checked once more at the end: a sync that
                // failed while this round ran, a full segment's, fails the round too.)
                let result = log
                    .sync_all()
                    .and_then(|upto| log.check_failed().map(|()| upto));
                if let Ok(upto) = result {
                    self.synced.fetch_max(upto, Ordering::AcqRel);
                    log.synced(upto);
                    self.last_group
                        .store(upto.saturating_sub(before), Ordering::Relaxed);
                    self.last_sync_ns
                        .store(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                }
                self.leading.store(false, Ordering::Release);
                self.round.fetch_add(1, Ordering::Release);
                wake_all(&self.round);
                result?;
                continue;
            }
            // Follow: wait for the leader's round to end (`wait` returns at once if it
            // already has), then look again.
            let mut spins = 0;
            while self.round.load(Ordering::Acquire) == round && spins < FOLLOWER_SPINS {
                spin(spins);
                spins += 1;
            }
            if self.round.load(Ordering::Acquire) == round {
                wait(&self.round, round);
            }
        }
    }

    /// A new leader's wait before it syncs, while other threads sync too: it yields its
    /// core until three quarters as many records wait for a sync as the last round
    /// covered (the appenders of that round, appending again), or for half as long as
    /// the last sync took (at most `MAX_GATHER`), whichever comes first; and at least
    /// `GATHER_YIELDS` times. With more appenders than cores, a leader that syncs as
    /// soon as it can covers only the threads that happened to run first, and the
    /// others wait for a whole extra sync; waiting for the whole last group, or for a
    /// whole sync's time, makes many appenders slower.
    fn gather(&self, log: &impl Log) {
        // Under loom, time is not part of the model (it must be deterministic): the
        // leader yields once, which lets the other threads append first or not.
        #[cfg(loom)]
        {
            let _ = log;
            yield_now();
            return;
        }
        #[cfg(not(loom))]
        self.gather_for_a_while(log);
    }

    #[cfg(not(loom))]
    fn gather_for_a_while(&self, log: &impl Log) {
        let synced = self.synced.load(Ordering::Acquire);
        let target = self.last_group.load(Ordering::Relaxed) * 3 / 4;
        let cap =
            Duration::from_nanos(self.last_sync_ns.load(Ordering::Relaxed) / 2).min(MAX_GATHER);
        let start = Instant::now();
        let mut yields = 0;
        loop {
            yield_now();
            yields += 1;
            if yields < GATHER_YIELDS {
                continue;
            }
            let waiting = log.appended().saturating_sub(synced);
            if waiting >= target || start.elapsed() >= cap {
                return;
            }
        }
    }
}

#[cfg(not(loom))]
fn spin(step: u32) {
    if step < 16 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

#[cfg(not(loom))]
fn yield_now() {
    std::thread::yield_now();
}

#[cfg(not(loom))]
fn wait(round: &AtomicU32, value: u32) {
    atomic_wait::wait(round, value);
}

#[cfg(not(loom))]
fn wake_all(round: &AtomicU32) {
    atomic_wait::wake_all(round);
}

// Under loom there is no futex: a follower yields until the round moves (loom schedules
// the other threads meanwhile), and waking is nothing.
#[cfg(loom)]
fn spin(_step: u32) {
    loom::thread::yield_now();
}

#[cfg(loom)]
fn yield_now() {
    loom::thread::yield_now();
}

#[cfg(loom)]
fn wait(round: &AtomicU32, value: u32) {
    while round.load(Ordering::Acquire) == value {
        loom::thread::yield_now();
    }
}

#[cfg(loom)]
fn wake_all(_round: &AtomicU32) {}

/// Loom models of the protocol: `ci/loom` runs them (`--cfg loom`).
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::sync::Arc;

    /// A log that only counts: appending takes the next number; a sync makes everything
    /// appended durable (or, if told so, fails once and puts the log in its failed
    /// state for good).
    struct Counting {
        appended: AtomicU64,
        durable: AtomicU64,
        fail_next_sync: AtomicBool,
        failed: AtomicBool,
    }

    impl Counting {
        fn new(fail: bool) -> Self {
            Counting {
                appended: AtomicU64::new(0),
                durable: AtomicU64::new(0),
                fail_next_sync: AtomicBool::new(fail),
                failed: AtomicBool::new(false),
            }
        }

        fn append(&self) -> u64 {
            self.appended.fetch_add(1, Ordering::SeqCst) + 1
        }
    }

    impl Log for Counting {
        fn appended(&self) -> u64 {
            self.appended.load(Ordering::SeqCst)
        }
        fn check_failed(&self) -> Result<(), Error> {
            if self.failed.load(Ordering::SeqCst) {
                Err(Error::LogFailed("a sync failed".into()))
            } else {
                Ok(())
            }
        }
        fn sync_all(&self) -> Result<u64, Error> {
            let upto = self.appended.load(Ordering::SeqCst);
            if self.fail_next_sync.swap(false, Ordering::SeqCst) {
                self.failed.store(true, Ordering::SeqCst);
                return Err(Error::LogFailed("a sync failed".into()));
            }
            self.durable.fetch_max(upto, Ordering::SeqCst);
            Ok(upto)
        }
        fn synced(&self, _upto: u64) {}
    }

    /// Each of `threads` appends one record and waits for it with `sync_through`: `Ok`
    /// only once a sync covered it; with a failing sync, `Err` for whoever it did not.
    fn model(threads: usize, fail: bool) {
        let mut builder = loom::model::Builder::new();
        if threads > 2 {
            // Three threads, each with a wait loop: bound the preemptions the model
            // explores, and allow it the branches that takes.
            builder.preemption_bound = Some(1);
            builder.max_branches = 100_000;
        }
        builder.check(move || {
            let g = Arc::new(GroupCommit::new(0));
            let log = Arc::new(Counting::new(fail));
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let (g, log) = (Arc::clone(&g), Arc::clone(&log));
                    loom::thread::spawn(move || {
                        let seq = log.append();
                        match g.sync_through(seq, &*log) {
                            Ok(()) => assert!(
                                log.durable.load(Ordering::SeqCst) >= seq,
                                "sync_through({seq}) returned Ok before a sync covered it"
                            ),
                            Err(_) => assert!(fail, "an error without a failed sync"),
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            assert!(g.synced() <= log.durable.load(Ordering::SeqCst));
        });
    }

    #[test]
    fn loom_group_commit_two_appenders() {
        model(2, false);
    }

    #[test]
    fn loom_group_commit_three_appenders() {
        model(3, false);
    }

    #[test]
    fn loom_group_commit_a_failed_sync_is_never_success() {
        model(2, true);
    }
}
