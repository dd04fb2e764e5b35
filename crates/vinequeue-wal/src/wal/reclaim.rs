//! Reclaiming space: the background thread that deletes fully acknowledged segments (and
//! syncs sealed ones under `Os`), and the deletion itself.

use super::*;

/// Longest an `append` that finds the log full waits for a deletion under way (which
/// takes milliseconds, unless the disk is in trouble).
pub(super) const RECLAIM_WAIT: Duration = Duration::from_secs(1);

/// Deletes acknowledged segments on a thread of the log's own
/// ([`Reclaim::Background`](crate::Reclaim::Background)), so that an acknowledgement does not wait for the
/// checkpoint write, the unlink and the directory sync.
pub(super) struct Reclaimer {
    pub(super) state: Mutex<ReclaimState>,
    /// Wakes the thread (work, or closing) and those waiting for it to finish.
    pub(super) cond: Condvar,
    /// The thread runs: acknowledgements hand deletions to it.
    pub(super) running: AtomicBool,
}

pub(super) struct ReclaimState {
    /// A reclaim was asked for since the thread last started one.
    pub(super) wanted: bool,
    /// The thread is reclaiming.
    pub(super) busy: bool,
    /// The log is closing: the thread does what was asked, then exits.
    pub(super) closed: bool,
    /// An `append` waited `RECLAIM_WAIT` for the reclaim under way in vain: later
    /// appends do not wait for it (each would, one after another, behind the queue's
    /// append lock) until it ends.
    pub(super) stalled: bool,
    /// The last background reclaim failed with this; the next acknowledgement reports it.
    pub(super) error: Option<Error>,
    /// The acknowledgement mark or the synced frontier moved since the checkpoint was
    /// written: the thread persists them once `WalOptions::checkpoint_interval` has
    /// passed since that write.
    pub(super) stale: bool,
    /// Under `Os`: segments were sealed that the thread is to sync (`LogState::sealed`).
    pub(super) seals: bool,
}

impl Reclaimer {
    pub(super) fn new() -> Self {
        Reclaimer {
            state: Mutex::new(ReclaimState {
                wanted: false,
                busy: false,
                closed: false,
                stalled: false,
                error: None,
                stale: false,
                seals: false,
            }),
            cond: Condvar::new(),
            running: AtomicBool::new(false),
        }
    }

    pub(super) fn request(&self) {
        let mut st = self.state.lock();
        if !st.wanted {
            st.wanted = true;
            self.cond.notify_all();
        }
    }

    /// Under `Os`: a segment was sealed; have it synced.
    pub(super) fn sealed(&self) {
        let mut st = self.state.lock();
        st.seals = true;
        self.cond.notify_all();
    }

    /// The acknowledgement mark or the synced frontier moved: have them persisted in
    /// time.
    pub(super) fn checkpoint_stale(&self) {
        let mut st = self.state.lock();
        if !st.stale {
            st.stale = true;
            self.cond.notify_all();
        }
    }

    /// Whether a reclaim is asked for or running, and worth waiting for (not one an
    /// `append` already waited for in vain).
    pub(super) fn pending(&self) -> bool {
        let st = self.state.lock();
        (st.wanted || st.busy) && !st.stalled
    }

    /// Waits until no reclaim is asked for or running (or `RECLAIM_WAIT` has passed:
    /// then the reclaim under way counts as stalled until it ends).
    pub(super) fn wait_idle(&self) {
        let deadline = Instant::now() + RECLAIM_WAIT;
        let mut st = self.state.lock();
        while (st.wanted || st.busy) && self.running.load(Ordering::Acquire) {
            if self.cond.wait_until(&mut st, deadline).timed_out() {
                st.stalled = true;
                return;
            }
        }
    }

    pub(super) fn take_error(&self) -> Option<Error> {
        self.state.lock().error.take()
    }

    /// Stops the thread after the reclaim asked for, if any, and waits for it.
    pub(super) fn close(&self, thread: Option<JoinHandle<()>>) {
        self.state.lock().closed = true;
        self.cond.notify_all();
        if let Some(h) = thread {
            let _ = h.join();
        }
        self.running.store(false, Ordering::Release);
    }
}

impl<F: Fs> LogState<F> {
    /// Asks for a reclaim if one would delete something now: for a segment sealed
    /// after the acknowledgements that cover it (no later one may come to ask).
    pub(super) fn request_reclaim_if_due(&self) {
        if self.reclaimer.running.load(Ordering::Acquire) && self.reclaim_due() {
            self.reclaimer.request();
        }
    }

    /// Whether a background reclaim is asked for or running, asking for one first if
    /// one would delete something now; without the thread, whether one would.
    pub(super) fn reclaim_pending_or_due(&self) -> bool {
        if !self.reclaimer.running.load(Ordering::Acquire) {
            // Without the thread: whether a reclaim on this thread would delete
            // something (a segment sealed after the acknowledgements that cover it).
            return self.reclaim_due();
        }
        self.request_reclaim_if_due();
        self.reclaimer.pending()
    }

    /// Whether the oldest segment is sealed and all its records are acknowledged: the
    /// cheap test of whether a reclaim would delete anything.
    pub(super) fn reclaim_due(&self) -> bool {
        let through = self.acks.lock().through;
        let segs = self.segments.read();
        segs.first().is_some_and(|s| {
            s.first_seq != self.active_first.load(Ordering::Acquire)
                && s.last_seq.load(Ordering::Acquire) <= through
        })
    }

    /// The reclaim thread: reclaims each time one is asked for, until the log closes.
    pub(super) fn reclaim_loop(&self) {
        /// However the thread ends (closing, or a panic in a file-system call), the
        /// acknowledgements go back to deleting inline, and nobody waits for it.
        struct Exit<'a>(&'a Reclaimer);
        impl Drop for Exit<'_> {
            fn drop(&mut self) {
                self.0.running.store(false, Ordering::Release);
                self.0.state.lock().busy = false;
                self.0.cond.notify_all();
            }
        }
        let r = &self.reclaimer;
        let _exit = Exit(r);
        let mut st = r.state.lock();
        loop {
            if st.wanted {
                st.wanted = false;
                st = self.busy_with(st, || self.reclaim());
                st.stalled = false;
                continue;
            }
            if st.seals {
                st.seals = false;
                drop(st);
                let sealed = std::mem::take(&mut *self.sealed.lock());
                for seg in sealed {
                    // A failure fails the log (`sync_segment`): appends report it.
                    if self
                        .sync_segment(&seg, seg.file.published(), "syncing a sealed segment")
                        .is_err()
                    {
                        break;
                    }
                }
                st = r.state.lock();
                continue;
            }
            if st.closed {
                return;
            }
            if st.stale {
                // Persist the mark an interval after the last checkpoint write, so that
                // a crash delivers again only about an interval's worth of records; and
                // the synced frontier, so that damage to synced records is never taken
                // for a torn tail.
                let due = self.checkpoint_due();
                if Instant::now() < due {
                    r.cond.wait_until(&mut st, due);
                    continue;
                }
                st.stale = false;
                st = self.busy_with(st, || self.checkpoint_if_stale());
                continue;
            }
            r.cond.wait(&mut st);
        }
    }

    /// Runs `job` on the reclaim thread, busy (an `append` on a full log waits for it),
    /// and keeps its failure for the next acknowledgement to report: kept even if a
    /// later job succeeds, so that a failure is never lost to a retry that happened to
    /// run first.
    pub(super) fn busy_with<'a>(
        &'a self,
        mut st: parking_lot::MutexGuard<'a, ReclaimState>,
        job: impl FnOnce() -> Result<(), Error>,
    ) -> parking_lot::MutexGuard<'a, ReclaimState> {
        let r = &self.reclaimer;
        st.busy = true;
        drop(st);
        let result = job();
        let mut st = r.state.lock();
        st.busy = false;
        if let Err(e) = result {
            st.error = Some(e);
        }
        r.cond.notify_all();
        st
    }

    /// Deletes the sealed segments whose records are all acknowledged, after persisting
    /// the checkpoint that says so.
    ///
    /// Reclaims run one at a time (`reclaiming`), and decide what to delete under the
    /// writer's lock: the active segment is then the one the writer uses, and every
    /// segment listed before it is sealed for good (the active one only ever moves to a
    /// newer segment). Deciding from an older idea of the active segment could delete the
    /// one being written, whose later records would then vanish at the next open.
    pub(super) fn reclaim(&self) -> Result<(), Error> {
        let _one = self.reclaiming.lock();
        let through = self.acks.lock().through;
        let doomed: Vec<Arc<Segment<F>>> = {
            let w = self.writer.lock();
            let segs = self.segments.read();
            segs.iter()
                .take_while(|s| {
                    !w.active.as_ref().is_some_and(|a| Arc::ptr_eq(a, s))
                        && s.last_seq.load(Ordering::Acquire) <= through
                })
                .cloned()
                .collect()
        };
        if doomed.is_empty() {
            return Ok(());
        }
        self.write_checkpoint(Numbers::Keep)?;
        // The last source position in what goes outlives it (see `position`).
        if let Some(p) = doomed
            .iter()
            .rev()
            .find_map(|s| s.last_position.lock().clone())
        {
            let mut retired = self.retired_position.lock();
            if retired.as_ref() != Some(&p.1) {
                super::position::store(&self.fs, &self.dir, &p.1)?;
                *retired = Some(p.1);
            }
        }
        let mut result = Ok(());
        for seg in &doomed {
            match self.fs.remove(&seg.path) {
                // Gone already is as good as deleted.
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    // The rest stay listed (and counted), and the next reclaim tries again.
                    result = Err(io_err(e));
                    break;
                }
            }
            // Unlisted (and uncounted) once its file is gone, not before.
            self.segments.write().retain(|s| !Arc::ptr_eq(s, seg));
            self.size.fetch_sub(seg.file.len(), Ordering::AcqRel);
        }
        result.and(self.fs.sync_dir(&self.dir).map_err(io_err))
    }
}
