//! The batcher thread: forms batches from the ring, delivers them to the sink with
//! retries and backoff, dead-letters what cannot be delivered, and drains on shutdown.
//!
//! Order: one batch at a time, in ordinal (sequence) order; a batch is resolved
//! (delivered, dead-lettered or abandoned) before the next one is formed, and a retry
//! resends the same items with the same sequence numbers.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::retry::Backoff;
use crate::shared::{Shared, NO_WAKE};
use crate::sink::{
    Batch, DeadLetter, DeadLetterReason, SendError, SendErrorKind, Sink, SinkPanicked,
};

/// Longest the batcher parks without re-checking its state; a backstop only, every
/// event that matters also unparks it.
const PARK_BACKSTOP: Duration = Duration::from_secs(1);

pub(crate) struct Batcher<T> {
    shared: Arc<Shared<T>>,
    sink: Box<dyn Sink<T>>,
    backoff: Backoff,
    /// Reused buffer for ring pops.
    scratch: Vec<(u64, T)>,
    /// When the batcher last looked at the ring: anything found there later arrived
    /// after this instant (or had been waiting while a batch was in flight).
    last_look: Instant,
    /// Items given up because the shutdown deadline passed.
    abandoned: u64,
}

impl<T: Send + 'static> Batcher<T> {
    pub(crate) fn new(shared: Arc<Shared<T>>, sink: Box<dyn Sink<T>>) -> Self {
        let c = &shared.config;
        Batcher {
            backoff: Backoff::new(c.retry_backoff_first, c.retry_backoff_max),
            scratch: Vec::with_capacity(c.batch_size),
            shared,
            sink,
            last_look: Instant::now(),
            abandoned: 0,
        }
    }

    /// Runs until the ring is closed and drained. Returns how many items it abandoned
    /// because the shutdown deadline passed.
    pub(crate) fn run(mut self) -> u64 {
        let _ = self.shared.batcher.set(thread::current());
        let batch_size = self.shared.config.batch_size;
        loop {
            let mut batch = Batch::with_capacity(batch_size);
            let looked_before = self.last_look;
            self.take(&mut batch, batch_size);
            if batch.is_empty() {
                self.publish_resolved(self.shared.ring.popped());
                if self.shared.ring.is_closed() && self.shared.ring.is_empty() {
                    break;
                }
                self.park_for_items();
                continue;
            }
            // The oldest item arrived after the previous look (or waited out the last
            // delivery); either way its flush deadline counts from there.
            let deadline = looked_before + self.shared.config.flush_timeout;
            self.fill(&mut batch, deadline);
            let resolved_upto = self.shared.ring.popped();
            self.deliver(batch);
            self.publish_resolved(resolved_upto);
        }
        self.abandoned
    }

    /// Pops up to `max - batch.len()` items into `batch`.
    fn take(&mut self, batch: &mut Batch<T>, max: usize) {
        let want = max - batch.len();
        self.last_look = Instant::now();
        if self.shared.ring.pop_into(&mut self.scratch, want) > 0 {
            for (ordinal, item) in self.scratch.drain(..) {
                batch.push(ordinal + 1, item);
            }
            self.shared.in_flight.store(batch.len() as u64, SeqCst);
            self.shared.space.notify();
        }
    }

    /// Whether a `flush` is waiting for items that are in the ring or the forming batch.
    fn flush_wanted(&self) -> bool {
        self.shared.flush_target.load(SeqCst) > self.shared.resolved.load(Relaxed)
    }

    /// Waits for `batch` to fill until `deadline`, unless a flush or stop wants it now.
    fn fill(&mut self, batch: &mut Batch<T>, deadline: Instant) {
        let batch_size = self.shared.config.batch_size;
        while batch.len() < batch_size {
            if self.shared.ring.is_closed() || self.flush_wanted() {
                // Take what is there, do not wait for more.
                self.take(batch, batch_size);
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            let need = (batch_size - batch.len()) as u64;
            let threshold = self.shared.ring.popped() + need;
            self.park_until(threshold, Some(deadline - now));
            self.take(batch, batch_size);
        }
    }

    /// Parks until the ring has an item (or a flush / stop wakes it).
    fn park_for_items(&mut self) {
        let threshold = self.shared.ring.popped() + 1;
        self.park_until(threshold, None);
        self.last_look = Instant::now();
    }

    /// Parks until `ring.pushed() >= threshold`, a timeout, or an unpark.
    fn park_until(&self, threshold: u64, timeout: Option<Duration>) {
        let s = &self.shared;
        s.wake_at.store(threshold, SeqCst);
        if s.ring.pushed() < threshold && !s.ring.is_closed() && !self.flush_wanted() {
            thread::park_timeout(timeout.map_or(PARK_BACKSTOP, |t| t.min(PARK_BACKSTOP)));
        }
        s.wake_at.store(NO_WAKE, SeqCst);
    }

    fn publish_resolved(&self, upto: u64) {
        self.shared.resolved.store(upto, SeqCst);
        self.shared.progress.notify();
    }

    fn shutdown_passed(&self) -> bool {
        self.shared
            .shutdown_deadline()
            .is_some_and(|d| Instant::now() >= d)
    }

    /// Delivers one batch: attempts, retries with backoff, partial failures, dead letters.
    fn deliver(&mut self, mut batch: Batch<T>) {
        let config = &self.shared.config;
        let (send_timeout, retry_limit) = (config.send_timeout, config.retry_limit);
        let counters = &self.shared.counters;
        let mut retry = 0u32;
        loop {
            if self.shutdown_passed() {
                self.abandon(batch);
                break;
            }
            let started = Instant::now();
            batch.attempt = retry;
            batch.deadline = started + send_timeout;
            let sink = &mut self.sink;
            let outcome = catch_unwind(AssertUnwindSafe(|| sink.send(&batch)));
            let error = match outcome {
                Ok(Ok(())) => {
                    counters.record_success(batch.len() as u64, started.elapsed());
                    break;
                }
                Ok(Err(e)) => e,
                Err(panic) => SendError::retry(SinkPanicked(panic_message(panic))),
            };
            counters.errors.fetch_add(1, Relaxed);
            match &error.kind {
                SendErrorKind::Permanent => {
                    self.dead_letter(batch, Some(error), DeadLetterReason::Permanent);
                    break;
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
                        batch.retain_indices(&failed);
                        self.shared.in_flight.store(batch.len() as u64, SeqCst);
                    }
                }
                SendErrorKind::Retry => {}
            }
            if retry >= retry_limit {
                self.dead_letter(batch, Some(error), DeadLetterReason::RetriesExhausted);
                break;
            }
            let pause = self.backoff.pause(retry);
            self.sleep(pause);
            retry += 1;
            counters.retries.fetch_add(1, Relaxed);
        }
        self.shared.in_flight.store(0, SeqCst);
    }

    /// Sleeps for `pause`, cut short by the shutdown deadline.
    fn sleep(&self, pause: Duration) {
        let until = Instant::now() + pause;
        loop {
            let limit = match self.shared.shutdown_deadline() {
                Some(d) => d.min(until),
                None => until,
            };
            let now = Instant::now();
            if now >= limit {
                return;
            }
            thread::park_timeout(limit - now);
        }
    }

    fn dead_letter(&mut self, batch: Batch<T>, error: Option<SendError>, reason: DeadLetterReason) {
        let n = batch.len() as u64;
        let counter = match reason {
            DeadLetterReason::Shutdown => &self.shared.counters.abandoned,
            _ => &self.shared.counters.dead_lettered,
        };
        counter.fetch_add(n, Relaxed);
        let letter = DeadLetter {
            batch,
            error,
            reason,
        };
        let sink = &mut self.sink;
        // A panicking handler must not take the batcher down; the items are counted.
        let _ = catch_unwind(AssertUnwindSafe(|| sink.on_dead_letter(letter)));
    }

    /// Gives up on `batch` and everything still in the ring: the shutdown deadline passed.
    fn abandon(&mut self, batch: Batch<T>) {
        let batch_size = self.shared.config.batch_size;
        self.abandoned += batch.len() as u64;
        self.dead_letter(batch, None, DeadLetterReason::Shutdown);
        loop {
            let mut rest = Batch::with_capacity(batch_size);
            self.take(&mut rest, batch_size);
            if rest.is_empty() {
                break;
            }
            self.abandoned += rest.len() as u64;
            self.dead_letter(rest, None, DeadLetterReason::Shutdown);
        }
    }
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> std::borrow::Cow<'static, str> {
    if let Some(s) = panic.downcast_ref::<&'static str>() {
        (*s).into()
    } else if let Ok(s) = panic.downcast::<String>() {
        (*s).into()
    } else {
        "non-string panic payload".into()
    }
}
