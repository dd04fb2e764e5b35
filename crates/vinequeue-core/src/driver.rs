//! Running the batcher without its thread: an adapter drives the same state machine
//! from a task of its own (the async adapter does, so that forming a batch and sending it
//! happen in one task, with no thread hop per batch).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::batcher::{Batcher, BatcherAction};
use crate::lifecycle::LifecycleControl;
use crate::shared::QueueState;
use crate::sink::{Batch, SendError};

pub(crate) enum DriverState<T> {
    /// `start()` has not run yet.
    NotStarted,
    Running(Box<Batcher<T>>),
    /// Taken over by another thread (`take_over`), still running: the driver waits for
    /// it to finish, so that it sees every dead letter that batcher still hands over.
    Elsewhere,
    /// Finished (the queue stopped and everything is resolved), or moved to a thread of
    /// its own because the driver went away.
    Finished,
}

/// What [`Queue::start`](crate::Queue::start) fills in for a driven queue.
pub(crate) struct DriverSlot<T> {
    pub(crate) state: Mutex<DriverState<T>>,
}

impl<T> DriverSlot<T> {
    pub(crate) fn new() -> Self {
        DriverSlot {
            state: Mutex::new(DriverState::NotStarted),
        }
    }
}

/// What a [`BatchDriver`] wants next; see [`BatchDriver::next`].
#[derive(Debug)]
pub enum Next<T> {
    /// Send this batch (its [`attempt`](Batch::attempt) and
    /// [`deadline`](Batch::deadline) are set), then report the outcome with
    /// [`BatchDriver::sent`].
    Send(Batch<T>),
    /// Nothing to do until the waker given to `next` is woken, or until this instant if
    /// there is one (a flush timeout or a retry backoff); call `next` again then.
    Wait(Option<Instant>),
    /// The queue has stopped and everything is resolved (delivered, dead-lettered or
    /// given up at the shutdown deadline). Later calls return `Done` again.
    Done,
}

/// The batcher of a queue built with [`Queue::drive_externally`](crate::Queue::drive_externally),
/// run by its caller instead of a thread: batching, `flush_timeout`, retries with
/// backoff, partial failures, dead letters and shutdown behave exactly as on the batcher
/// thread; only the sending is the caller's.
///
/// Call [`next`](BatchDriver::next) whenever the waker given to it is woken (or its
/// deadline passes), send each batch it returns and report the outcome with
/// [`sent`](BatchDriver::sent). Dead letters still go to the queue's
/// [`Sink::on_dead_letter`](crate::Sink::on_dead_letter), from inside these calls.
///
/// Dropped before [`Next::Done`] with no batch out, it hands the batcher to a thread of
/// its own, which carries on with the queue's sink (as if the queue had been started
/// without a driver). Dropped while a batch is out (no `sent` for it), the batcher can
/// no longer go on: the queue's `stop()` reports what is left as undelivered.
pub struct BatchDriver<T: Send + 'static> {
    pub(crate) slot: Arc<DriverSlot<T>>,
    pub(crate) shared: Arc<QueueState<T>>,
    pub(crate) control: Arc<LifecycleControl<T>>,
}

impl<T: Send + 'static> std::fmt::Debug for BatchDriver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchDriver").finish_non_exhaustive()
    }
}

impl<T: Send + 'static> BatchDriver<T> {
    /// Advances the batcher until it needs something: a batch to send, or a wait.
    /// `waker` is woken when items arrive, a flush is requested, or the queue stops.
    pub fn next(&self, waker: &Waker) -> Next<T> {
        let shared = &self.shared;
        // A threshold asked for by an earlier wait is stale now (the thread clears it
        // after each park): producers crossing it would wake this task for nothing.
        shared.wake_at.clear();
        // Registered before looking, so that whatever changes after the look wakes it.
        shared.register_driver(waker);
        let mut state = self.slot.state.lock();
        let batcher = match &mut *state {
            // Closed before it ever started (`stop()` of a queue never started, with
            // nothing in it): it never will.
            DriverState::NotStarted if shared.ring.is_closed() => {
                *state = DriverState::Finished;
                return Next::Done;
            }
            // (Woken when that batcher finishes.)
            DriverState::NotStarted | DriverState::Elsewhere => return Next::Wait(None),
            DriverState::Finished => return Next::Done,
            DriverState::Running(b) => b,
        };
        // In durable mode, look again within a second at the latest, as the batcher
        // thread does (a backstop: spills and pushes wake the task).
        let backstop = shared
            .durable
            .is_some()
            .then(|| Instant::now() + Duration::from_secs(1));
        loop {
            let step = catch_unwind(AssertUnwindSafe(|| batcher.step()));
            match step {
                Ok(BatcherAction::Send(batch)) => return Next::Send(batch),
                Ok(BatcherAction::Wait { threshold, until }) => {
                    shared.wake_at.announce(threshold);
                    if batcher.must_not_wait(threshold) {
                        shared.wake_at.clear();
                        continue;
                    }
                    return Next::Wait(until.or(backstop));
                }
                Ok(BatcherAction::Sleep(until)) => return Next::Wait(Some(until)),
                Ok(BatcherAction::Done(abandoned)) => {
                    *state = DriverState::Finished;
                    drop(state);
                    self.control.batcher_exited(abandoned, shared);
                    return Next::Done;
                }
                Err(_) => {
                    // A bug in the batcher: what is still pending is undelivered.
                    *state = DriverState::Finished;
                    drop(state);
                    self.control.batcher_exited(shared.pending().max(1), shared);
                    return Next::Done;
                }
            }
        }
    }

    /// The outcome of sending the batch [`next`](BatchDriver::next) returned, with the
    /// batch handed back (it may come back emptied after a success).
    ///
    /// # Panics
    ///
    /// If no batch is out.
    pub fn sent(&self, batch: Batch<T>, result: Result<(), SendError>) {
        let mut state = self.slot.state.lock();
        match &mut *state {
            DriverState::Running(b) if b.is_sending() => b.sent(batch, result),
            _ => panic!("BatchDriver::sent without a batch out"),
        }
    }
}

impl<T: Send + 'static> Drop for BatchDriver<T> {
    fn drop(&mut self) {
        take_over(&self.slot, &self.control, true);
    }
}

/// Moves a driven batcher that is not sending to a thread of its own (`spawn`), or runs
/// it to the end on this thread. Returns whether it did.
pub(crate) fn take_over<T: Send + 'static>(
    slot: &Arc<DriverSlot<T>>,
    control: &Arc<LifecycleControl<T>>,
    spawn: bool,
) -> bool {
    let batcher = {
        // `stop()` may be called from inside the driver's own call (a dead-letter
        // handler): then the state is locked on this very thread, and waiting for it
        // would never end.
        let Some(mut state) = (if spawn {
            Some(slot.state.lock())
        } else {
            slot.state.try_lock()
        }) else {
            return false;
        };
        match &*state {
            DriverState::Running(b) if !b.is_sending() => {
                // Finished only once it has run to the end: a driver that saw it finished
                // earlier would stop looking for the dead letters it hands over.
                let next = if spawn {
                    DriverState::Finished
                } else {
                    DriverState::Elsewhere
                };
                match std::mem::replace(&mut *state, next) {
                    DriverState::Running(b) => b,
                    _ => unreachable!("matched above"),
                }
            }
            DriverState::NotStarted if spawn => {
                // The driver went away before `start()`: that will start a thread.
                *state = DriverState::Finished;
                return true;
            }
            _ => return false,
        }
    };
    let control = Arc::clone(control);
    let shared = Arc::clone(&batcher.shared);
    let slot = Arc::clone(slot);
    // As on the batcher thread: a batcher that panics (a bug) leaves everything still
    // pending undelivered, and `stop()` still learns that it has finished.
    let finish = move |batcher: Box<Batcher<T>>, here: bool| {
        let ran = catch_unwind(AssertUnwindSafe(move || {
            if here {
                (*batcher).drive_here()
            } else {
                (*batcher).run()
            }
        }));
        *slot.state.lock() = DriverState::Finished;
        // A driver still polling learns it (after the last dead letter is handed over).
        shared.unpark_batcher();
        control.batcher_exited(ran.unwrap_or_else(|_| shared.pending().max(1)), &shared);
    };
    if !spawn {
        finish(batcher, true);
        return true;
    }
    std::thread::Builder::new()
        .name("vinequeue-batcher".into())
        .spawn(move || finish(batcher, false))
        .is_ok()
}
