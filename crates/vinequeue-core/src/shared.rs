//! State shared by the queue handle, producers and the batcher thread, and the wake-up
//! protocols between them. Lifecycle (start / stop / join) lives in `lifecycle.rs` and
//! `queue/run.rs`; the delivery algorithm in `batcher.rs`; item encoding in `codec.rs`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use parking_lot::{Condvar, Mutex};

use crate::codec::Codec;
use crate::config::Config;
use crate::error::Error;
use crate::metrics::{Counters, Metrics};
use crate::ring::Ring;
use crate::wake::WakeAt;
use crate::Storage;

/// The write-ahead log side of a durable queue. The fields producers write for every
/// item (the append lock, `published`, `spilled`) and those the batcher takes (`cursor`)
/// sit on cache lines of their own: sharing one would move it between cores at every
/// item.
pub(crate) struct DurableState<T> {
    pub(crate) storage: Arc<dyn Storage>,
    /// Where dead-lettered items are kept, if anywhere.
    pub(crate) dead_letters: Option<Arc<dyn Storage>>,
    pub(crate) codec: Codec<T>,
    /// Held by a producer from its append to its ring push (or spill), so that the ring
    /// holds items in sequence order and every gap in it is a spilled item.
    pub(crate) append_lock: CachePadded<Mutex<()>>,
    /// Every item up to this sequence number is in the log and was pushed into the ring
    /// or spilled.
    pub(crate) published: CachePadded<AtomicU64>,
    /// Taken by the batcher while it takes items and by a producer shedding the oldest
    /// ones (`DropOldest` on a full log): `(taken_through, shed_through)`. Items up to
    /// `taken_through` are the batcher's; items up to `shed_through` were dropped.
    pub(crate) cursor: CachePadded<Mutex<(u64, u64)>>,
    /// The last sequence number at open: `published - base_seq` items were appended
    /// since (the storage numbers appends consecutively).
    pub(crate) base_seq: u64,
    /// Items that went to the log only because the ring was full.
    pub(crate) spilled: CachePadded<AtomicU64>,
    /// Records found by recovery.
    pub(crate) recovered: u64,
    /// Records lost to corruption (at recovery, or found damaged by a later read).
    pub(crate) corrupt: AtomicU64,
    /// Dead letters the dead-letter log could not take; they stay in the main log.
    pub(crate) unstored: AtomicU64,
    /// Dead letters dropped to make room (`DeadLetterFull::DropOldest`).
    pub(crate) dead_dropped: AtomicU64,
    /// Acknowledgements the log reported as failed.
    pub(crate) log_errors: AtomicU64,
    /// Whether an item has been checked to decode from its own encoding (done once,
    /// for the first item: a type whose encoding does not come back, which could never
    /// be replayed, is refused at its first `enqueue`).
    /// (On a cache line of its own: it is read by every `enqueue`, and written once.)
    pub(crate) decode_checked: CachePadded<std::sync::atomic::AtomicBool>,
    /// When items arrived, sampled: what `oldest_pending_age` is read from.
    pub(crate) arrivals: Mutex<Arrivals>,
    /// Time zero of `arrivals`: when the queue was created.
    pub(crate) epoch: Instant,
}

impl<T> DurableState<T> {
    /// Counts a failed acknowledgement (a checkpoint not written, a delivered segment
    /// not deleted: the log tries again at the next one, and until then the records or
    /// the space stay); whether it succeeded.
    pub(crate) fn acked(&self, result: Result<(), Error>) -> bool {
        match result {
            Ok(()) => true,
            Err(_e) => {
                event!(error, error = %_e, "the log failed to record an acknowledgement (it tries again with the next one)");
                self.log_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                false
            }
        }
    }
}

/// Samples of (the last sequence number published, when it was seen), in increasing
/// order of both, from which the age of the oldest pending item is read: it arrived no
/// later than the first sample above the resolved mark (and after the one before that).
///
/// Taken by the batcher at every step (also while it backs off from a failing sink) and
/// by every `metrics()` call, at most one per `interval`. Bounded: when full, every
/// other sample goes (the first, which dates the oldest pending item, stays) and the
/// interval doubles, so a long backlog is dated with a coarser grain (about a
/// thousandth of its span), never forgotten.
pub(crate) struct Arrivals {
    samples: std::collections::VecDeque<(u64, u64)>,
    /// Shortest time between two samples now (nanoseconds).
    interval: u64,
}

/// Shortest interval between two arrival samples (1 ms).
const ARRIVAL_SAMPLE_NS: u64 = 1_000_000;
/// Most arrival samples kept.
const ARRIVAL_SAMPLES: usize = 2048;

impl Arrivals {
    /// Starts with what the log holds at open (`published`), dated at the open.
    pub(crate) fn new(published: u64) -> Self {
        let mut samples = std::collections::VecDeque::with_capacity(ARRIVAL_SAMPLES + 1);
        samples.push_back((published, 0));
        Arrivals {
            samples,
            interval: ARRIVAL_SAMPLE_NS,
        }
    }

    /// Everything up to `published` had arrived `now` (nanoseconds since the epoch), and
    /// everything up to `resolved` is resolved.
    pub(crate) fn note(&mut self, published: u64, resolved: u64, now: u64) {
        self.forget_through(resolved);
        if let Some(&(seq, at)) = self.samples.back() {
            if published <= seq || now < at.saturating_add(self.interval) {
                return;
            }
        }
        self.samples.push_back((published, now));
        if self.samples.len() > ARRIVAL_SAMPLES {
            let mut i = 0;
            self.samples.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.interval = self.interval.saturating_mul(2);
        }
    }

    /// When the oldest item above `resolved` had arrived at the latest: the first
    /// sample above it.
    pub(crate) fn oldest_after(&mut self, resolved: u64) -> Option<u64> {
        self.forget_through(resolved);
        self.samples.front().map(|&(_, at)| at)
    }

    /// Drops the samples of items all resolved, so that the first one left (which
    /// thinning keeps) dates the oldest pending item.
    fn forget_through(&mut self, resolved: u64) {
        while self
            .samples
            .front()
            .is_some_and(|&(seq, _)| seq <= resolved)
        {
            self.samples.pop_front();
        }
        // A backlog draining: a finer grain again for what arrives now.
        if self.samples.len() < ARRIVAL_SAMPLES / 4 && self.interval > ARRIVAL_SAMPLE_NS {
            self.interval /= 2;
        }
    }
}

/// Threads waiting for something the batcher produces (room in the ring, or delivery
/// progress), with a counter so the batcher pays for a lock only when someone waits.
///
/// Protocol (no lost wake-ups): a waiter increments `waiters` (SeqCst), takes `lock`,
/// checks its condition, and waits on `cond` (which releases `lock`). The batcher changes
/// the condition with a SeqCst operation, then reads `waiters`; if non-zero it takes `lock`
/// and notifies. Either the waiter's check sees the change, or the batcher sees the waiter
/// and its notification, taken under the lock, cannot fall between check and wait.
pub(crate) struct Waiters {
    pub(crate) waiters: AtomicUsize,
    pub(crate) lock: Mutex<()>,
    pub(crate) cond: Condvar,
}

impl Waiters {
    fn new() -> Self {
        Waiters {
            waiters: AtomicUsize::new(0),
            lock: Mutex::new(()),
            cond: Condvar::new(),
        }
    }

    /// Wakes every waiter, if there is any.
    #[inline]
    pub(crate) fn notify(&self) {
        if self.waiters.load(SeqCst) > 0 {
            let _guard = self.lock.lock();
            self.cond.notify_all();
        }
    }

    /// Wakes every waiter unconditionally (used when closing).
    pub(crate) fn notify_always(&self) {
        let _guard = self.lock.lock();
        self.cond.notify_all();
    }

    /// Waits until `ready()` holds or `deadline` passes; returns the last `ready()`.
    pub(crate) fn wait_until(&self, deadline: Instant, mut ready: impl FnMut() -> bool) -> bool {
        self.waiters.fetch_add(1, SeqCst);
        let mut guard = self.lock.lock();
        let ok = loop {
            if ready() {
                break true;
            }
            if self.cond.wait_until(&mut guard, deadline).timed_out() {
                break ready();
            }
        };
        drop(guard);
        self.waiters.fetch_sub(1, SeqCst);
        ok
    }
}

/// Tasks of async producers and flushers waiting for the batcher (room in the ring,
/// delivery progress, or the close), woken once and then forgotten. Each registration has
/// a key, so that a future dropped while waiting removes its waker (and a future polled
/// again replaces it) instead of leaving it behind.
///
/// Protocol (no lost wake-ups), as for [`Waiters`]: a task stores its waker and bumps
/// `count` under `list`'s lock, then re-checks its condition. The batcher changes the
/// condition with a SeqCst operation, then reads `count` (SeqCst); if non-zero it takes
/// the wakers under the lock and wakes them.
pub(crate) struct AsyncWakers {
    count: AtomicUsize,
    list: Mutex<WakerList>,
}

#[derive(Default)]
struct WakerList {
    wakers: std::collections::HashMap<u64, std::task::Waker>,
    last_key: u64,
}

impl AsyncWakers {
    fn new() -> Self {
        AsyncWakers {
            count: AtomicUsize::new(0),
            list: Mutex::new(WakerList::default()),
        }
    }

    /// Registers `waker` for the next [`wake`](AsyncWakers::wake), under `key` if that
    /// registration is still pending (replacing its waker), else under a new key stored
    /// in `key`.
    pub(crate) fn register(&self, waker: &std::task::Waker, key: &mut Option<u64>) {
        let mut list = self.list.lock();
        if let Some(existing) = key.and_then(|k| list.wakers.get_mut(&k)) {
            existing.clone_from(waker);
            return;
        }
        list.last_key += 1;
        let new = list.last_key;
        list.wakers.insert(new, waker.clone());
        *key = Some(new);
        self.count.store(list.wakers.len(), SeqCst);
    }

    /// Removes the registration under `key`, if it is still pending.
    pub(crate) fn unregister(&self, key: u64) {
        let mut list = self.list.lock();
        if list.wakers.remove(&key).is_some() {
            self.count.store(list.wakers.len(), SeqCst);
        }
    }

    /// Wakes every registered task, if there is any.
    #[inline]
    pub(crate) fn wake(&self) {
        if self.count.load(SeqCst) > 0 {
            self.wake_all();
        }
    }

    #[cold]
    fn wake_all(&self) {
        let taken = {
            let mut list = self.list.lock();
            self.count.store(0, SeqCst);
            std::mem::take(&mut list.wakers)
        };
        for (_, waker) in taken {
            waker.wake();
        }
    }
}

/// A ring entry: the item and its sequence number (0 in memory mode, where the sequence
/// number is the ring ordinal + 1).
pub(crate) type Entry<T> = (u64, T);

pub(crate) struct QueueState<T> {
    /// (On cache lines of its own: every `enqueue` reads it, and the fields the batcher
    /// writes at every batch must not share its line.)
    pub(crate) config: CachePadded<Config>,
    /// Retries before a batch is dead-lettered (the config's, or its kind's default).
    pub(crate) retry_limit: u32,
    pub(crate) ring: Ring<Entry<T>>,
    /// Present in durable mode.
    pub(crate) durable: Option<DurableState<T>>,
    pub(crate) counters: Counters,
    /// The outcome counts the last flush report ended at (`Counters::outcomes`).
    pub(crate) reported: Mutex<(u64, u64, u64)>,
    /// The queue's identity: the storage's, or a fresh one (memory mode, or a storage
    /// that keeps none).
    pub(crate) queue_id: crate::QueueId,
    /// This queue's series in the `metrics` facade.
    #[cfg(feature = "metrics")]
    pub(crate) export: crate::export::Exporter,

    /// The batcher thread, set by the batcher itself before it first asks for a wake-up.
    pub(crate) batcher: OnceLock<Thread>,
    /// The task driving the batcher when no thread runs it (`crate::driver`), registered
    /// before it waits; woken, and cleared, wherever the batcher thread is unparked.
    pub(crate) driver_waker: Mutex<Option<std::task::Waker>>,
    /// Whether `driver_waker` holds a waker; written under its lock, read without it so
    /// that unparking costs no lock when no task is registered. SeqCst, like `wake_at`:
    /// the task sets it before it stores `wake_at` and re-checks the ring.
    pub(crate) driver_registered: AtomicBool,
    /// The threshold of pushes the waiting batcher wants to be woken at (see
    /// `crate::wake` for the protocol).
    pub(crate) wake_at: WakeAt,

    /// Producers blocked by `OverflowPolicy::Block`, waiting for room.
    pub(crate) space: Waiters,
    /// Callers of `flush`, waiting for `resolved` to pass their target.
    pub(crate) progress: Waiters,
    /// Async tasks waiting for room, progress or the close (woken with both of the above).
    pub(crate) wakers: AsyncWakers,
    /// Every item with a sequence number up to this has been resolved: delivered,
    /// dead-lettered, dropped or abandoned. Written only by the batcher, never decreases.
    pub(crate) resolved: AtomicU64,
    /// Largest sequence-number target of a pending `flush`: while `resolved` is below it,
    /// the batcher sends partial batches at once instead of waiting for `flush_timeout`.
    pub(crate) flush_target: AtomicU64,
    /// Items taken out of the ring by the batcher and not yet resolved.
    pub(crate) in_flight: AtomicU64,
    /// Set by `stop()`: the batcher stops trying to deliver at this instant.
    pub(crate) shutdown_deadline: Mutex<Option<Instant>>,
}

impl<T> QueueState<T> {
    /// Publishes the metrics through the `metrics` facade if a second has passed since
    /// the last time (`force`: now). Called by the batcher as it goes.
    #[inline]
    pub(crate) fn export_metrics(&self, force: bool) {
        #[cfg(feature = "metrics")]
        if force || self.export.due() {
            self.export.publish(&self.snapshot());
        }
        #[cfg(not(feature = "metrics"))]
        let _ = force;
    }

    /// A snapshot of the counters and gauges (`Queue::metrics`).
    pub(crate) fn snapshot(&self) -> Metrics {
        let s = self;
        let mut m = Metrics::default();
        s.counters.fill(&mut m);
        m.enqueued_total = s.counters.dropped_newest.load(Relaxed)
            + match &s.durable {
                Some(d) => d.published.load(SeqCst) - d.base_seq,
                None => s.ring.pushed(),
            };
        m.memory_queue_size = s.ring.len() as u64;
        m.pending = s.pending();
        if let Some(d) = &s.durable {
            m.wal_size = d.storage.size();
            m.wal_damaged_bytes = d.storage.recovery().damaged_bytes;
            m.spilled_total = d.spilled.load(Relaxed);
            m.recovered_total = d.recovered;
            m.corrupt_records_total = d.corrupt.load(Relaxed);
            m.dead_letters_unstored_total = d.unstored.load(Relaxed);
            m.dead_letters_dropped_total = d.dead_dropped.load(Relaxed);
            m.log_errors_total = d.log_errors.load(Relaxed);
            let now = d.epoch.elapsed().as_nanos() as u64;
            let mut arrivals = d.arrivals.lock();
            let resolved = s.resolved.load(SeqCst);
            arrivals.note(d.published.load(SeqCst), resolved, now);
            if m.pending > 0 {
                if let Some(since) = arrivals.oldest_after(resolved) {
                    m.oldest_pending_age = Duration::from_nanos(now.saturating_sub(since));
                }
            }
        }
        m
    }

    pub(crate) fn new(config: Config, durable: Option<DurableState<T>>) -> Self {
        let resolved = durable.as_ref().map_or(0, |d| d.storage.acked_through());
        QueueState {
            retry_limit: config.effective_retry_limit(durable.is_some()),
            queue_id: durable
                .as_ref()
                .and_then(|d| d.storage.queue_id())
                .unwrap_or_else(crate::QueueId::random),
            ring: Ring::new(config.memory_size),
            durable,
            counters: Counters::new(config.enable_metrics),
            reported: Mutex::new((0, 0, 0)),
            #[cfg(feature = "metrics")]
            export: crate::export::Exporter::new(config.get_metrics_label()),
            config: CachePadded::new(config),
            batcher: OnceLock::new(),
            driver_waker: Mutex::new(None),
            driver_registered: AtomicBool::new(false),
            wake_at: WakeAt::new(),
            space: Waiters::new(),
            progress: Waiters::new(),
            wakers: AsyncWakers::new(),
            resolved: AtomicU64::new(resolved),
            flush_target: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            shutdown_deadline: Mutex::new(None),
        }
    }

    /// Called by a producer after its push took ordinal `ordinal`: wakes the batcher if
    /// it asked to be woken at this fill level. One atomic load on the fast path.
    #[inline(always)]
    pub(crate) fn after_push(&self, ordinal: u64) {
        if self.wake_at.reached_by(ordinal) {
            self.unpark_batcher();
        }
    }

    /// Whether the caller is the batcher thread: inside the sink's `send` or a
    /// dead-letter handler, where waiting for the batcher would wait for itself.
    pub(crate) fn on_batcher_thread(&self) -> bool {
        self.batcher
            .get()
            .is_some_and(|t| t.id() == std::thread::current().id())
    }

    /// Wakes the batcher whatever it waits for (flush, stop).
    pub(crate) fn unpark_batcher(&self) {
        if let Some(thread) = self.batcher.get() {
            thread.unpark();
        }
        if self.driver_registered.load(SeqCst) {
            let waker = {
                let mut slot = self.driver_waker.lock();
                self.driver_registered.store(false, SeqCst);
                slot.take()
            };
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    /// Registers the task driving the batcher, to be woken by the next unpark.
    pub(crate) fn register_driver(&self, waker: &std::task::Waker) {
        let mut slot = self.driver_waker.lock();
        match &mut *slot {
            Some(w) => w.clone_from(waker),
            None => *slot = Some(waker.clone()),
        }
        self.driver_registered.store(true, SeqCst);
    }

    /// The sequence number of the last accepted item.
    pub(crate) fn last_seq(&self) -> u64 {
        match &self.durable {
            Some(d) => d.published.load(SeqCst),
            None => self.ring.pushed(),
        }
    }

    /// Items accepted and not yet resolved.
    pub(crate) fn pending(&self) -> u64 {
        match &self.durable {
            Some(d) => {
                // The numbers above the delivery mark, less those acknowledged already:
                // numbers that hold no record (skipped after a crash, above the block
                // reserved before it) and records resolved out of order.
                let from = self.resolved.load(SeqCst) + 1;
                let to = self.last_seq();
                (to + 1)
                    .saturating_sub(from)
                    .saturating_sub(d.storage.acked_within(from, to))
            }
            None => self.ring.len() as u64 + self.in_flight.load(SeqCst),
        }
    }

    pub(crate) fn shutdown_deadline(&self) -> Option<Instant> {
        *self.shutdown_deadline.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::{Arrivals, ARRIVAL_SAMPLES, ARRIVAL_SAMPLE_NS};

    const MS: u64 = ARRIVAL_SAMPLE_NS;

    #[test]
    fn the_oldest_pending_item_is_dated_by_the_first_sample_above_the_mark() {
        let mut a = Arrivals::new(10); // ten records found at open, time 0
        a.note(20, 0, 5 * MS);
        a.note(25, 0, 5 * MS + 1); // too soon after the last sample: skipped
        a.note(30, 0, 9 * MS);
        assert_eq!(a.oldest_after(0), Some(0), "the recovered records");
        assert_eq!(a.oldest_after(10), Some(5 * MS));
        assert_eq!(a.oldest_after(22), Some(9 * MS));
        assert_eq!(a.oldest_after(30), None, "nothing above the mark");
        // The mark never goes back, so what lies below it is forgotten.
        a.note(40, 30, 12 * MS);
        assert_eq!(a.oldest_after(30), Some(12 * MS));
    }

    #[test]
    fn a_long_backlog_keeps_its_first_sample_exact_and_memory_bounded() {
        let mut a = Arrivals::new(0);
        a.note(1, 0, MS); // the oldest pending item arrives at 1 ms
        for i in 2..100_000u64 {
            a.note(i, 0, i * MS);
        }
        assert!(a.samples.len() <= ARRIVAL_SAMPLES);
        assert_eq!(a.oldest_after(0), Some(MS));
        // Deeper into the backlog the date is coarser, but never later than the truth
        // by more than a small fraction of the backlog's age.
        let truth = 60_000 * MS;
        let dated = a.oldest_after(59_999).unwrap();
        assert!(dated >= truth, "dated before it arrived");
        assert!(
            dated - truth <= 100_000 * MS / 500,
            "{} ms late",
            (dated - truth) / MS
        );
    }
}
