//! The batcher thread: forms batches from the ring, delivers them to the sink with
//! retries and backoff, dead-letters what cannot be delivered, and drains on shutdown.
//!
//! Order: one batch at a time, in ordinal (sequence) order; a batch is resolved
//! (delivered, dead-lettered or abandoned) before the next one is formed, and a retry
//! resends the same items with the same sequence numbers.
//!
//! The algorithm is a state machine that never blocks: [`Batcher::step`] runs it until it
//! needs something from outside (a batch sent, items to arrive, a backoff to pass), and
//! [`Batcher::sent`] feeds a send's outcome back. [`Batcher::run`] drives it on the
//! batcher thread with the blocking [`Sink`]; an adapter can drive it from a future
//! instead (see `crate::driver`).

mod dead_letters;
mod take;

use dead_letters::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::dead::StoredRecord;
use crate::retry::Backoff;
use crate::shared::QueueState;
use crate::sink::{Batch, DeadLetter, DeadLetterReason, SendError, SendErrorKind, Sink};
use crate::Storage;

/// Longest the batcher parks without re-checking its state; a backstop only, every
/// event that matters also unparks it.
const PARK_BACKSTOP: Duration = Duration::from_secs(1);

/// Rounds of spinning, then yielding, before the batcher parks (some tens of microseconds).
const SPIN_BEFORE_PARK: u32 = 12;

pub(crate) struct Batcher<T> {
    pub(crate) shared: Arc<QueueState<T>>,
    sink: Box<dyn Sink<T>>,
    backoff: Backoff,
    /// Reused buffer for ring pops.
    scratch: Vec<(u64, (u64, T))>,
    /// The last delivered batch, emptied: the next one fills its buffers. (A fresh
    /// batch's buffers are large allocations, and with glibc each of those first
    /// merges every small block freed since, here the items of the batch before.)
    spare: Option<Batch<T>>,
    /// Durable mode: the next sequence number to deliver.
    next_deliver: u64,
    /// Durable mode: an entry popped from the ring ahead of a gap still to be read back
    /// from the log.
    held: Option<(u64, T)>,
    /// When the batcher last looked at the ring: anything found there later arrived
    /// after this instant (or had been waiting while a batch was in flight).
    last_look: Instant,
    /// Items given up because the shutdown deadline passed.
    abandoned: u64,
    /// Durable mode: the shutdown deadline passed; leave the rest in the log and exit.
    give_up: bool,
    /// Durable mode: the spill count when the batcher last looked at the log (read
    /// before it looks). Items that spill after that wake the batcher only if it waits
    /// (`wake_at` set), so before it parks it checks the count again.
    spills_seen: u64,
    /// Durable mode: the last read of the log failed. A flush then does not keep the
    /// batcher from parking (it would retry the read in a busy loop); it tries again
    /// when woken or after the backstop.
    log_unreadable: bool,
    /// Durable mode: dead letters the dead-letter log could not take (full, or failing),
    /// still unacknowledged in the main log: tried again now and then, so that room
    /// made later (a redrive) takes them without waiting for a restart.
    refused: Vec<Refused>,
    /// Memory `refused` holds (its entries and their share of the texts), at most
    /// `MAX_REFUSED_BYTES`.
    refused_bytes: usize,
    /// When to try `refused` again.
    refused_retry_at: Instant,
    /// Durable mode: what a take found to settle once it has let go of the cursor
    /// (writing to the dead-letter log and acknowledging can wait on the disk, and
    /// producers shedding the oldest items take the cursor too): numbers the log lost,
    /// and records that do not decode.
    lost: Vec<(u64, u64)>,
    undecodable: Vec<StoredRecord>,
    phase: Phase<T>,
    /// Durable mode, feature `tracing`: when the replay of the records found at open
    /// started, and when its progress was last reported (`None` once done).
    #[cfg(feature = "tracing")]
    replay: Option<(Instant, Instant, u64)>,
}

/// Where the state machine stands between two calls.
enum Phase<T> {
    /// No batch in hand. `waited`: it asked to wait for items, and is now resumed.
    Idle { waited: bool },
    /// A batch waits for more items until `deadline`. `waited`: as for `Idle`.
    Filling {
        batch: Batch<T>,
        deadline: Instant,
        waited: bool,
    },
    /// A batch is ready for attempt number `retry`.
    Ready { batch: Batch<T>, at: Attempt },
    /// The batch is out with the caller of `step`, for attempt `at.retry`.
    Sending {
        at: Attempt,
        started: Instant,
        sent: u64,
    },
    /// A failed attempt's backoff runs until `until`.
    Backoff {
        batch: Batch<T>,
        at: Attempt,
        until: Instant,
    },
    /// Finished: everything is resolved, or the shutdown deadline passed.
    Done,
}

/// What stays with a batch across its attempts.
struct Attempt {
    retry: u32,
    /// `taken_through()` when the batch was formed: published as resolved after it.
    resolved_upto: u64,
    /// Durable mode: the batch's sequence numbers, acknowledged once it is resolved.
    seqs: Option<Vec<u64>>,
}

/// What the state machine needs next; see [`Batcher::step`].
pub(crate) enum BatcherAction<T> {
    /// Send this batch (its `attempt` and `deadline` are set), then report the outcome
    /// with [`Batcher::sent`], handing the batch back.
    Send(Batch<T>),
    /// Wait until the ring has had `threshold` items pushed in all, until `until`, or
    /// until woken (a flush, `stop()`), whichever comes first; then call `step` again.
    Wait {
        threshold: u64,
        until: Option<Instant>,
    },
    /// Wait until `until` (a backoff) or until woken; then call `step` again.
    Sleep(Instant),
    /// Finished; the number of items abandoned because the shutdown deadline passed.
    Done(u64),
}

impl<T: Send + 'static> Batcher<T> {
    pub(crate) fn new(shared: Arc<QueueState<T>>, sink: Box<dyn Sink<T>>) -> Self {
        let c = &shared.config;
        let next_deliver = shared
            .durable
            .as_ref()
            .map_or(1, |d| d.storage.acked_through() + 1);
        Batcher {
            next_deliver,
            held: None,
            backoff: Backoff::new(c.retry_backoff_first, c.retry_backoff_max),
            scratch: Vec::with_capacity(c.batch_size),
            spare: None,
            shared,
            sink,
            last_look: Instant::now(),
            abandoned: 0,
            give_up: false,
            spills_seen: 0,
            log_unreadable: false,
            refused: Vec::new(),
            refused_bytes: 0,
            refused_retry_at: Instant::now(),
            lost: Vec::new(),
            undecodable: Vec::new(),
            phase: Phase::Idle { waited: false },
            #[cfg(feature = "tracing")]
            replay: None,
        }
    }

    /// Whether items spilled to the log since the batcher last looked at it: a wait
    /// must not start then (see `spills_seen`). Call after storing `wake_at`.
    pub(crate) fn spilled_since_look(&self) -> bool {
        self.shared
            .durable
            .as_ref()
            .is_some_and(|d| d.spilled.load(SeqCst) != self.spills_seen)
    }

    /// Runs until the ring is closed and drained, on the batcher thread, with the
    /// blocking sink. Returns how many items it abandoned because the shutdown deadline
    /// passed.
    pub(crate) fn run(self) -> u64 {
        let _ = self.shared.batcher.set(thread::current());
        self.drive_here()
    }

    /// [`run`](Batcher::run) on the calling thread without making it the batcher thread
    /// (nothing unparks it early: for a batcher past its shutdown deadline, which waits
    /// for nothing).
    pub(crate) fn drive_here(mut self) -> u64 {
        loop {
            match self.step() {
                BatcherAction::Send(mut batch) => {
                    #[cfg(feature = "tracing")]
                    let _span = tracing::info_span!(
                        target: "vinequeue",
                        "send",
                        queue = self.shared.config.get_metrics_label(),
                        batch_size = batch.len(),
                        first_seq = batch.first_seq(),
                        attempt = batch.attempt(),
                    )
                    .entered();
                    let sink = &mut self.sink;
                    let result = catch_unwind(AssertUnwindSafe(|| sink.send_mut(&mut batch)))
                        .unwrap_or_else(|panic| Err(SendError::from_panic(panic)));
                    self.sent(batch, result);
                }
                BatcherAction::Wait { threshold, until } => {
                    let timeout = until.map(|u| u.saturating_duration_since(Instant::now()));
                    self.park_until(threshold, timeout);
                }
                BatcherAction::Sleep(until) => {
                    let now = Instant::now();
                    if until > now {
                        thread::park_timeout(until - now);
                    }
                }
                BatcherAction::Done(abandoned) => return abandoned,
            }
        }
    }

    /// Feature `tracing`: the replay of the records found at open, as it goes: its start,
    /// its progress every few seconds, and its end with its rate.
    #[cfg(feature = "tracing")]
    fn report_replay(&mut self) {
        const EVERY: Duration = Duration::from_secs(5);
        let Some(d) = &self.shared.durable else {
            return;
        };
        if d.recovered == 0 {
            return;
        }
        let resolved = self.shared.resolved.load(SeqCst);
        let now = Instant::now();
        let label = self.shared.config.get_metrics_label();
        match self.replay {
            None if resolved < d.base_seq => {
                tracing::info!(
                    target: "vinequeue",
                    queue = label,
                    records = d.recovered,
                    "replaying the records found in the log"
                );
                self.replay = Some((now, now, resolved));
            }
            Some((started, _, _)) if resolved >= d.base_seq => {
                let took = now - started;
                tracing::info!(
                    target: "vinequeue",
                    queue = label,
                    records = d.recovered,
                    duration_ms = took.as_millis() as u64,
                    records_per_second = (d.recovered as f64 / took.as_secs_f64().max(1e-9)) as u64,
                    "replay done"
                );
                // (Done for good: the resolved mark only grows.)
                self.replay = None;
            }
            Some((started, last, from)) if now - last >= EVERY => {
                tracing::info!(
                    target: "vinequeue",
                    queue = label,
                    through_seq = resolved,
                    of_seq = d.base_seq,
                    resolved = resolved - from,
                    elapsed_ms = (now - started).as_millis() as u64,
                    "replaying"
                );
                self.replay = Some((started, now, from));
            }
            _ => {}
        }
    }

    /// Whether a batch is out with the caller of `step`, awaiting `sent`.
    pub(crate) fn is_sending(&self) -> bool {
        matches!(self.phase, Phase::Sending { .. })
    }

    /// Runs the state machine until it needs something from outside; see [`BatcherAction`].
    /// Never blocks (durable mode reads the log, and acknowledgements may sync it).
    pub(crate) fn step(&mut self) -> BatcherAction<T> {
        let batch_size = self.shared.config.batch_size;
        self.note_arrivals();
        self.retry_refused();
        self.shared.export_metrics(false);
        #[cfg(feature = "tracing")]
        self.report_replay();
        loop {
            match std::mem::replace(&mut self.phase, Phase::Done) {
                Phase::Idle { waited } => {
                    if waited {
                        self.last_look = Instant::now();
                    }
                    let mut batch = self
                        .spare
                        .take()
                        .unwrap_or_else(|| Batch::with_capacity(batch_size));
                    batch.queue_id = self.shared.queue_id;
                    let looked_before = self.last_look;
                    self.take(&mut batch, batch_size);
                    if batch.is_empty() {
                        self.publish_resolved(self.taken_through());
                        if (self.shared.ring.is_closed() && self.drained())
                            || self.shutdown_passed()
                        {
                            // (Durable mode with a stuck log read: nothing more can be done.)
                            self.shared.export_metrics(true);
                            return BatcherAction::Done(self.abandoned);
                        }
                        self.phase = Phase::Idle { waited: true };
                        return BatcherAction::Wait {
                            threshold: self.shared.ring.popped() + 1,
                            until: None,
                        };
                    }
                    // The oldest item arrived after the previous look (or waited out the
                    // last delivery); either way its flush deadline counts from there.
                    let deadline =
                        crate::config::after(looked_before, self.shared.config.flush_timeout);
                    self.phase = Phase::Filling {
                        batch,
                        deadline,
                        waited: false,
                    };
                }
                Phase::Filling {
                    mut batch,
                    deadline,
                    waited,
                } => {
                    if waited {
                        self.take(&mut batch, batch_size);
                    }
                    let mut ready = batch.len() >= batch_size;
                    if !ready && (self.shared.ring.is_closed() || self.flush_wanted()) {
                        // Take what is there, do not wait for more.
                        self.take(&mut batch, batch_size);
                        ready = true;
                    }
                    if !ready && Instant::now() < deadline {
                        let need = (batch_size - batch.len()) as u64;
                        let threshold = self.shared.ring.popped() + need;
                        self.phase = Phase::Filling {
                            batch,
                            deadline,
                            waited: true,
                        };
                        return BatcherAction::Wait {
                            threshold,
                            until: Some(deadline),
                        };
                    }
                    let at = Attempt {
                        retry: 0,
                        resolved_upto: self.taken_through(),
                        seqs: self.shared.durable.as_ref().map(|_| batch.seqs.clone()),
                    };
                    self.phase = Phase::Ready { batch, at };
                }
                Phase::Ready { mut batch, at } => {
                    let started = Instant::now();
                    let shutdown = self.shared.shutdown_deadline();
                    if shutdown.is_some_and(|d| started >= d) {
                        let kept = self.abandon(batch);
                        self.resolve(at, kept);
                        continue;
                    }
                    batch.attempt = at.retry;
                    batch.deadline = crate::config::after(started, self.shared.config.send_timeout);
                    if let Some(shutdown) = shutdown {
                        // `stop()` is running: the attempt has until then at most.
                        batch.deadline = batch.deadline.min(shutdown);
                    }
                    self.phase = Phase::Sending {
                        at,
                        started,
                        sent: batch.len() as u64,
                    };
                    return BatcherAction::Send(batch);
                }
                Phase::Backoff {
                    batch,
                    mut at,
                    until,
                } => {
                    // The pause is cut short by the shutdown deadline.
                    let limit = match self.shared.shutdown_deadline() {
                        Some(d) => d.min(until),
                        None => until,
                    };
                    if Instant::now() < limit {
                        self.phase = Phase::Backoff { batch, at, until };
                        return BatcherAction::Sleep(limit);
                    }
                    at.retry += 1;
                    self.shared.counters.retries.fetch_add(1, Relaxed);
                    self.phase = Phase::Ready { batch, at };
                }
                Phase::Sending { at, started, sent } => {
                    // `step` while the batch is out: nothing to do until `sent`.
                    self.phase = Phase::Sending { at, started, sent };
                    return BatcherAction::Sleep(Instant::now() + PARK_BACKSTOP);
                }
                Phase::Done => {
                    self.shared.export_metrics(true);
                    return BatcherAction::Done(self.abandoned);
                }
            }
        }
    }

    /// The outcome of the send `step` asked for, with the batch handed back (a delivered
    /// batch may come back emptied).
    pub(crate) fn sent(&mut self, mut batch: Batch<T>, result: Result<(), SendError>) {
        let Phase::Sending { at, started, sent } = std::mem::replace(&mut self.phase, Phase::Done)
        else {
            panic!("Batcher::sent without a batch out");
        };
        let counters = &self.shared.counters;
        let error = match result {
            Ok(()) => {
                let elapsed = started.elapsed();
                counters.record_success(sent, elapsed);
                #[cfg(feature = "metrics")]
                self.shared.export.record_send(elapsed);
                self.resolve(at, Vec::new());
                return self.recycle(batch);
            }
            Err(e) => e,
        };
        counters.errors.fetch_add(1, Relaxed);
        match &error.kind {
            SendErrorKind::Permanent => {
                let kept = self.dead_letter(batch, Some(error), DeadLetterReason::Permanent);
                return self.resolve(at, kept);
            }
            SendErrorKind::Partial(failed) => {
                let failed: Vec<usize> = failed
                    .iter()
                    .copied()
                    .filter(|&i| i < batch.len())
                    .collect();
                if !failed.is_empty() {
                    let delivered = (batch.len() - failed.len()) as u64;
                    counters.sent.fetch_add(delivered, Relaxed);
                    drop_quietly(batch.retain_indices(&failed));
                    self.shared.in_flight.store(batch.len() as u64, SeqCst);
                }
            }
            SendErrorKind::Retry => {}
        }
        if at.retry >= self.shared.retry_limit {
            let kept = self.dead_letter(batch, Some(error), DeadLetterReason::RetriesExhausted);
            return self.resolve(at, kept);
        }
        // The backoff's pause, or longer if the backend asked for it (`retry_after`).
        let pause = self
            .backoff
            .pause(at.retry)
            .max(error.not_before.unwrap_or_default());
        event!(
            warn,
            queue = self.shared.config.get_metrics_label(),
            items = batch.len(),
            first_seq = batch.first_seq(),
            retry = at.retry + 1,
            pause_ms = pause.as_millis() as u64,
            error = %error.describe(),
            "send failed; retrying after a pause"
        );
        let until = crate::config::after(Instant::now(), pause);
        self.phase = Phase::Backoff { batch, at, until };
    }

    /// The batch is resolved: acknowledges its records in the log (durable mode; all but
    /// `kept`, ascending: those shutdown left undelivered, or dead letters the
    /// dead-letter log could not take) and publishes the progress.
    fn resolve(&mut self, at: Attempt, kept: Vec<u64>) {
        if let (Some(d), Some(mut seqs)) = (&self.shared.durable, at.seqs) {
            // Everything resolved is acknowledged; what is kept stays for the next start.
            if !kept.is_empty() {
                seqs.retain(|s| kept.binary_search(s).is_err());
            }
            d.acked(d.storage.ack_all(&seqs));
        }
        self.shared.in_flight.store(0, SeqCst);
        if self.give_up {
            self.phase = Phase::Done;
            return;
        }
        self.publish_resolved(at.resolved_upto);
        self.phase = Phase::Idle { waited: false };
    }

    /// Durable mode: samples what has arrived, for `oldest_pending_age`.
    fn note_arrivals(&self) {
        if let Some(d) = &self.shared.durable {
            let now = d.epoch.elapsed().as_nanos() as u64;
            let resolved = self.shared.resolved.load(SeqCst);
            d.arrivals
                .lock()
                .note(d.published.load(SeqCst), resolved, now);
        }
    }

    /// Whether a `flush` is waiting for items that are in the ring or the forming batch.
    fn flush_wanted(&self) -> bool {
        self.shared.flush_target.load(SeqCst) > self.shared.resolved.load(Relaxed)
    }

    /// Parks until `ring.pushed() >= threshold`, a timeout, or an unpark.
    fn park_until(&self, threshold: u64, timeout: Option<Duration>) {
        let s = &self.shared;
        // Under load the items are microseconds away: wait a little before parking, so
        // that producers rarely pay for waking us (a futex call inside their enqueue).
        for step in 0..SPIN_BEFORE_PARK {
            if self.must_not_wait(threshold) {
                return;
            }
            crate::loom::spin_hint(step);
        }
        s.wake_at.announce(threshold);
        if !self.must_not_wait(threshold) {
            thread::park_timeout(timeout.map_or(PARK_BACKSTOP, |t| t.min(PARK_BACKSTOP)));
        }
        s.wake_at.clear();
    }

    /// Whether a wait for `threshold` pushes must not start (checked again after
    /// `wake_at` is stored): the items are there, items spilled, or a flush or the stop
    /// wants what there is now. Not for the last two while the log cannot be read:
    /// trying again at once would spin; the wait's timeout (or a wake-up) brings the next
    /// try.
    pub(crate) fn must_not_wait(&self, threshold: u64) -> bool {
        let s = &self.shared;
        s.ring.pushed() >= threshold
            || self.spilled_since_look()
            || ((s.ring.is_closed() || self.flush_wanted()) && !self.log_unreadable)
    }

    fn publish_resolved(&self, upto: u64) {
        self.shared.resolved.store(upto, SeqCst);
        self.shared.progress.notify();
        self.shared.wakers.wake();
    }

    fn shutdown_passed(&self) -> bool {
        self.shared
            .shutdown_deadline()
            .is_some_and(|d| Instant::now() >= d)
    }

    /// The shutdown deadline passed. Durable mode: the batch and everything behind it
    /// stay in the log for the next start (returns the batch's seqs). Memory mode: they
    /// go to the dead-letter hook.
    fn abandon(&mut self, batch: Batch<T>) -> Vec<u64> {
        if let Some(d) = &self.shared.durable {
            let left = d
                .published
                .load(SeqCst)
                .saturating_sub(self.next_deliver - 1);
            self.abandoned += batch.len() as u64 + left;
            self.give_up = true;
            let seqs = batch.seqs.clone();
            drop_quietly(batch);
            return seqs;
        }
        let batch_size = self.shared.config.batch_size;
        self.abandoned += batch.len() as u64;
        self.dead_letter(batch, None, DeadLetterReason::Shutdown);
        loop {
            let mut rest = Batch::with_capacity(batch_size);
            rest.queue_id = self.shared.queue_id;
            self.take(&mut rest, batch_size);
            if rest.is_empty() {
                break;
            }
            self.abandoned += rest.len() as u64;
            self.dead_letter(rest, None, DeadLetterReason::Shutdown);
        }
        Vec::new()
    }
}

/// Drops `value` (delivered items, typically) on the batcher's thread: a panic in an
/// item's `Drop` is the item's own, and must not end delivery for every other item.
impl<T> Batcher<T> {
    /// Empties a delivered batch (its items dropped here, as `drop_quietly` would) and
    /// keeps it for the next one, unless the sink took its buffers.
    fn recycle(&mut self, mut batch: Batch<T>) {
        // (`clear` sets the length first: after a panicking item the rest are still
        // dropped and the batch is empty.)
        let _ = catch_unwind(AssertUnwindSafe(|| batch.items.clear()));
        let room = self.shared.config.batch_size;
        if batch.items.capacity() >= room && batch.seqs.capacity() >= room {
            batch.seqs.clear();
            batch.keys.clear();
            batch.attempt = 0;
            self.spare = Some(batch);
        }
    }
}

fn drop_quietly<V>(value: V) {
    let _ = catch_unwind(AssertUnwindSafe(move || drop(value)));
}
