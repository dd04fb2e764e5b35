//! [`Queue`]: the handle producers use, and the lifecycle (start, flush, stop, drop).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use parking_lot::{Condvar, Mutex, MutexGuard};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::batcher::Batcher;
use crate::config::{after, SyncMode};
use crate::config::{Config, OverflowPolicy};
use crate::dead::{StoredDeadLetter, StoredRecord};
use crate::driver::{BatchDriver, DriverSlot, DriverState};
use crate::error::{EnqueueError, Error};
use crate::metrics::Metrics;
use crate::ring::PushError;
use crate::shared::{Codec, Durable, Shared};
use crate::sink::Sink;
use crate::Storage;

/// Extra time `stop()` waits past the shutdown deadline for the batcher to hand leftover
/// items to the dead-letter hook and exit.
const EXIT_GRACE: Duration = Duration::from_millis(200);

enum Stage<T> {
    /// Created; the sink waits here for `start()`.
    Created(Box<dyn Sink<T>>),
    Running,
    Stopping,
    Stopped,
}

struct Lifecycle<T> {
    stage: Stage<T>,
    handle: Option<JoinHandle<()>>,
    /// Set by the batcher as it exits: how many items it abandoned.
    exited: Option<u64>,
    /// Set by `drive_externally`: `start()` hands the batcher to this slot instead of a
    /// thread.
    driven: Option<Arc<DriverSlot<T>>>,
    /// `stop()` was called on the batcher thread itself and did not wait: the batcher
    /// completes the stop as it exits.
    stop_on_exit: bool,
    /// The thread on which `stop()` runs a driven batcher nobody drove to its end: a
    /// `stop()` from its dead-letter handler must not wait for that very call.
    finishing: Option<thread::ThreadId>,
}

pub(crate) struct Control<T> {
    life: Mutex<Lifecycle<T>>,
    /// Notified when the batcher exits and when a stop completes.
    changed: Condvar,
}

impl<T> Control<T> {
    /// The batcher has finished, having abandoned `abandoned` items. If `stop()` was
    /// called on the batcher's own thread and nobody has waited for it since, this
    /// completes the stop.
    pub(crate) fn batcher_exited(&self, abandoned: u64, shared: &Shared<T>) {
        let mut life = self.life.lock();
        life.exited = Some(abandoned);
        if life.stop_on_exit {
            life.stop_on_exit = false;
            life.stage = Stage::Stopped;
            life.handle = None; // the exiting thread itself: nobody joins it
            drop(life);
            shared.progress.notify_always();
            shared.wakers.wake();
        } else {
            drop(life);
        }
        self.changed.notify_all();
    }
}

/// A batching queue: many producers call [`enqueue`](Queue::enqueue), one batcher thread
/// hands batches to a [`Sink`].
///
/// `Queue<T>` is `Send + Sync`; share it between threads with an `Arc`. Dropping it stops
/// it (see [`stop`](Queue::stop)), waiting at most `shutdown_timeout`.
///
/// # Shutdown and flushing
///
/// [`flush`](Queue::flush) waits until everything enqueued before it has been delivered
/// (or dead-lettered); the queue keeps running. [`stop`](Queue::stop) refuses new items,
/// delivers what is buffered within `shutdown_timeout`, and hands what it could not
/// deliver to [`Sink::on_dead_letter`] with [`DeadLetterReason::Shutdown`](crate::DeadLetterReason::Shutdown),
/// reporting the count in [`Error::ShutdownTimeout`].
///
/// # Backpressure
///
/// The memory ring holds `memory_size` items. When it is full, `enqueue` follows the
/// [`OverflowPolicy`]: wait (`Block`), refuse (`Reject`), or discard (`DropOldest`,
/// `DropNewest`, each counted in [`Metrics::dropped_total`]).
pub struct Queue<T: Send + 'static> {
    shared: Arc<Shared<T>>,
    control: Arc<Control<T>>,
}

impl<T> Queue<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    /// Creates a queue that will deliver to `sink`: memory only, or durable when
    /// [`Config::wal_path`] is set (feature `wal`, on by default). A durable queue opens
    /// the write-ahead log in `wal_path` (and a dead-letter log in
    /// `wal_path/dead-letters`), recovers what is there, and delivers its unacknowledged
    /// records first on [`start`](Queue::start), with their original sequence numbers.
    /// Nothing runs until `start`, but items may be enqueued before (they wait in the
    /// ring, or in the log).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the configuration is invalid (the message names the field);
    /// with a log, [`Error::Locked`] if another queue holds the directory,
    /// [`Error::Corrupt`] under [`RecoveryMode::Strict`](crate::RecoveryMode::Strict),
    /// [`Error::Io`]; [`Error::Unsupported`] for a `wal_path` in a build without the
    /// feature `wal`.
    ///
    /// ```
    /// use vinequeue_core::{Config, NullSink, Queue};
    ///
    /// let queue: Queue<u64> = Queue::new(Config::default(), NullSink)?;
    /// assert!(Queue::<u64>::new(Config::default().batch_size(0), NullSink).is_err());
    /// # Ok::<(), vinequeue_core::Error>(())
    /// ```
    pub fn new<S: Sink<T>>(config: Config, sink: S) -> Result<Self, Error> {
        config.validate()?;
        #[cfg(feature = "wal")]
        if let Some(logs) = crate::logs::Logs::open(&config)? {
            return Self::with_storage(config, logs.log, Some(logs.dead_letters), sink);
        }
        #[cfg(not(feature = "wal"))]
        if let Some(path) = &config.wal_path {
            return Err(Error::Unsupported(format!(
                "wal_path {} was set, but this build has no write-ahead log: enable the \
                 feature \"wal\" of vinequeue-core (on by default), or use \
                 `Queue::with_storage`",
                path.display()
            )));
        }
        Self::build(config, None, sink)
    }

    /// Creates a durable queue over `storage` (the write-ahead log, or any other
    /// [`Storage`]): items are encoded with postcard and appended on the producer's
    /// thread, unacknowledged records found in the storage are delivered first on
    /// `start()` with their original sequence numbers, and `dead_letters`, if given,
    /// keeps dead-lettered items. `config.wal_path` is not used here.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the configuration is invalid.
    pub fn with_storage<S: Sink<T>>(
        config: Config,
        storage: Arc<dyn Storage>,
        dead_letters: Option<Arc<dyn Storage>>,
        sink: S,
    ) -> Result<Self, Error> {
        config.validate()?;
        let report = storage.recovery();
        let published = storage.next_seq() - 1;
        // Best effort: if it fails, such a record is delivered again (at least once),
        // and the failure is counted.
        let settle_failed = dead_letters.as_ref().is_some_and(|dead| {
            crate::dead::settle_letters_stored_twice(storage.as_ref(), dead.as_ref()).is_err()
        });
        let mark = storage.acked_through();
        let durable = Durable {
            corrupt: std::sync::atomic::AtomicU64::new(report.corrupt_records),
            unstored: std::sync::atomic::AtomicU64::new(0),
            dead_dropped: std::sync::atomic::AtomicU64::new(0),
            log_errors: std::sync::atomic::AtomicU64::new(u64::from(settle_failed)),
            decode_checked: CachePadded::new(std::sync::atomic::AtomicBool::new(false)),
            recovered: report.records,
            published: CachePadded::new(std::sync::atomic::AtomicU64::new(published)),
            storage,
            dead_letters,
            codec: Codec::postcard(),
            append_lock: CachePadded::new(Mutex::new(())),
            // (The mark as it stands now: settling letters stored twice may have moved it.)
            cursor: CachePadded::new(Mutex::new((published.min(mark), 0))),
            base_seq: published,
            spilled: CachePadded::new(std::sync::atomic::AtomicU64::new(0)),
            arrivals: Mutex::new(crate::shared::Arrivals::new(published)),
            epoch: Instant::now(),
        };
        Self::build(config, Some(durable), sink)
    }

    fn build<S: Sink<T>>(
        config: Config,
        durable: Option<Durable<T>>,
        sink: S,
    ) -> Result<Self, Error> {
        Ok(Queue {
            shared: Arc::new(Shared::new(config, durable)),
            control: Arc::new(Control {
                life: Mutex::new(Lifecycle {
                    stage: Stage::Created(Box::new(sink)),
                    handle: None,
                    exited: None,
                    stop_on_exit: false,
                    finishing: None,
                    driven: None,
                }),
                changed: Condvar::new(),
            }),
        })
    }
}

impl<T: Send + 'static> Queue<T> {
    /// Starts the batcher thread. Calling it again while running does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `stop()`; [`Error::Io`] if the thread cannot be spawned.
    pub fn start(&self) -> Result<(), Error> {
        let mut life = self.control.life.lock();
        match life.stage {
            Stage::Running => Ok(()),
            Stage::Stopping | Stage::Stopped => Err(Error::Closed),
            Stage::Created(_) => self.spawn(&mut life),
        }
    }

    #[doc(hidden)] // adapter plumbing: see the `adapter` module
    /// Makes the caller run this queue's batcher through the returned [`BatchDriver`]
    /// instead of a thread: for adapters that form and send batches in a task of their
    /// own (the async adapter does). Call it before [`start`](Queue::start); `start()`
    /// then hands the batcher to the driver. The queue's sink still receives the dead
    /// letters; its `send` is used only if the driver is dropped before the end (see
    /// [`BatchDriver`]).
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] once started, or if a driver was already taken.
    pub fn drive_externally(&self) -> Result<BatchDriver<T>, Error> {
        let mut life = self.control.life.lock();
        if !matches!(life.stage, Stage::Created(_)) || life.driven.is_some() {
            return Err(Error::Unsupported(
                "drive_externally must come before start(), once".into(),
            ));
        }
        let slot = Arc::new(DriverSlot::new());
        life.driven = Some(Arc::clone(&slot));
        Ok(BatchDriver {
            slot,
            shared: Arc::clone(&self.shared),
            control: Arc::clone(&self.control),
        })
    }

    fn spawn(&self, life: &mut Lifecycle<T>) -> Result<(), Error> {
        let Stage::Created(sink) = std::mem::replace(&mut life.stage, Stage::Running) else {
            unreachable!("spawn is only called in the Created stage");
        };
        let batcher = Batcher::new(Arc::clone(&self.shared), sink);
        if let Some(slot) = &life.driven {
            let mut state = slot.state.lock();
            if matches!(*state, DriverState::NotStarted) {
                *state = DriverState::Running(Box::new(batcher));
                drop(state);
                self.shared.unpark_batcher();
                return Ok(());
            }
            // The driver is gone already: run the batcher on a thread after all.
            drop(state);
            life.driven = None;
        }
        let control = Arc::clone(&self.control);
        let shared = Arc::clone(&self.shared);
        let spawned = thread::Builder::new()
            .name("vinequeue-batcher".into())
            .spawn(move || {
                // The batcher catches sink panics itself; this is a last line of defence so
                // that `stop()` learns of the exit even if the batcher has a bug.
                // A batcher that died leaves everything still pending undelivered.
                let abandoned = catch_unwind(AssertUnwindSafe(|| batcher.run()))
                    .unwrap_or_else(|_| shared.pending().max(1));
                control.batcher_exited(abandoned, &shared);
            });
        match spawned {
            Ok(handle) => {
                life.handle = Some(handle);
                Ok(())
            }
            Err(e) => {
                // The sink went into the closure that failed to spawn; it is gone, so this
                // queue can no longer start.
                life.stage = Stage::Stopped;
                self.shared.ring.close();
                Err(Error::Io(e))
            }
        }
    }

    /// Hands `item` to the queue.
    ///
    /// When it returns `Ok`, the item will reach the sink at least once, or be handed to
    /// the dead-letter hook, or (under `DropOldest` / `DropNewest`) be counted as dropped.
    ///
    /// # Errors
    ///
    /// The item comes back inside the error: [`EnqueueError::Full`] when the overflow
    /// policy refuses it (on the batcher thread, inside the sink or a dead-letter
    /// handler, `Block` refuses at once: the room it would wait for is made by that very
    /// thread), [`EnqueueError::Closed`] after `stop()`.
    ///
    /// ```
    /// use vinequeue_core::{Config, EnqueueError, NullSink, OverflowPolicy, Queue};
    ///
    /// let config = Config::default().memory_size(1).batch_size(1).overflow(OverflowPolicy::Reject);
    /// let queue = Queue::new(config, NullSink)?; // not started: nothing drains the ring
    /// queue.enqueue(1u32)?;
    /// match queue.enqueue(2) {
    ///     Err(EnqueueError::Full(item)) => assert_eq!(item, 2),
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), vinequeue_core::Error>(())
    /// ```
    #[inline]
    pub fn enqueue(&self, item: T) -> Result<(), EnqueueError<T>> {
        if let Some(d) = &self.shared.durable {
            return self.enqueue_durable(d, item);
        }
        self.enqueue_memory(item)
    }

    #[inline(always)]
    fn enqueue_memory(&self, item: T) -> Result<(), EnqueueError<T>> {
        match self.shared.ring.push((0, item)) {
            Ok(ordinal) => {
                self.shared.after_push(ordinal);
                Ok(())
            }
            Err(PushError::Full((_, item))) => self.overflow(item),
            Err(PushError::Closed((_, item))) => Err(EnqueueError::Closed(item)),
        }
    }

    /// Durable mode: encode here, append under the append lock, push into the ring if
    /// there is room (else the item lives in the log only: spilled), then wait for the
    /// sync under `Immediate`.
    #[inline(never)]
    fn enqueue_durable(&self, d: &Durable<T>, item: T) -> Result<(), EnqueueError<T>> {
        self.with_encoded(d, item, |buf, item| {
            if self.shared.config.sync_mode != SyncMode::Immediate {
                if !d.decode_checked.load(Relaxed) {
                    return self.check_decodes_then_append(d, buf, item);
                }
                return self.append_or_overflow(d, buf, item, true);
            }
            // Under `Immediate` a failed sync hands back a copy of an item that is queued
            // but not known durable; decoding it now (cheap next to the sync) also refuses
            // an item whose type does not come back from its encoding, which could never
            // be replayed.
            let copy = match (d.codec.decode)(buf) {
                Ok(copy) => copy,
                Err(e) => return Err(EnqueueError::Failed(item, undecodable(e))),
            };
            let seq = self.append_or_overflow(d, buf, item, true)?;
            if seq > 0 {
                if let Err(e) = d.storage.sync_through(seq) {
                    return Err(EnqueueError::Failed(copy, e));
                }
            }
            Ok(seq)
        })
        .map(|_| ())
    }

    /// The first item of a queue under `Os` or `Periodic`: refused if it does not decode
    /// from its own encoding. Its type could then never come back from the log (a
    /// spilled or replayed item would have to be dead-lettered as bytes), and saying so
    /// at the first `enqueue` beats finding out in an outage. (Under `Immediate` every
    /// item is checked.)
    #[cold]
    fn check_decodes_then_append(
        &self,
        d: &Durable<T>,
        buf: &[u8],
        item: T,
    ) -> Result<u64, EnqueueError<T>> {
        if let Err(e) = (d.codec.decode)(buf) {
            return Err(EnqueueError::Failed(item, undecodable(e)));
        }
        d.decode_checked.store(true, Relaxed);
        self.append_or_overflow(d, buf, item, true)
    }

    /// Encodes `item` into this thread's reusable buffer (a fresh one if it is in use,
    /// which only a re-entrant call from inside a sink could cause) and runs `then`.
    ///
    /// Inlined, with `then` called from one place: each call level the item passes
    /// through by value is a copy of it.
    #[inline(always)]
    fn with_encoded(
        &self,
        d: &Durable<T>,
        item: T,
        then: impl FnOnce(&[u8], T) -> Result<u64, EnqueueError<T>>,
    ) -> Result<u64, EnqueueError<T>> {
        crate::shared::ENCODE_BUF.with(|cell| {
            let mut fresh = Vec::new();
            let mut shared = cell.try_borrow_mut().ok();
            let buf = match shared.as_deref_mut() {
                Some(buf) => {
                    buf.clear();
                    buf
                }
                None => &mut fresh,
            };
            match (d.codec.encode_into)(&item, buf) {
                Ok(()) => then(buf, item),
                Err(e) => Err(EnqueueError::Failed(item, e)),
            }
        })
    }

    /// Appends the encoded item and queues it; on a full log applies the overflow policy,
    /// waiting (for `Block` and `DropOldest`) only if `wait`. Returns the item's sequence
    /// number, 0 if `DropNewest` dropped it.
    #[inline(always)]
    fn append_or_overflow(
        &self,
        d: &Durable<T>,
        bytes: &[u8],
        item: T,
        wait: bool,
    ) -> Result<u64, EnqueueError<T>> {
        match self.append_and_queue(d, bytes, item) {
            Ok(seq) => Ok(seq),
            Err(refused) => self.append_refused(d, bytes, refused, wait),
        }
    }

    /// [`append_or_overflow`](Self::append_or_overflow) once the append was refused with
    /// `first`: the overflow policy on a full log, the error otherwise.
    #[cold]
    #[inline(never)]
    fn append_refused(
        &self,
        d: &Durable<T>,
        bytes: &[u8],
        first: (Error, T),
        wait: bool,
    ) -> Result<u64, EnqueueError<T>> {
        let mut outcome = Err(first);
        let mut deadline = None;
        loop {
            let item = match outcome {
                Ok(seq) => return Ok(seq),
                Err((Error::LogFull { .. }, item)) => item,
                Err((Error::Closed, back)) => return Err(EnqueueError::Closed(back)),
                Err((e, back)) => return Err(EnqueueError::Failed(back, e)),
            };
            match self.shared.config.overflow {
                OverflowPolicy::Reject => return Err(EnqueueError::Full(item)),
                OverflowPolicy::DropOldest => {
                    if !self.shed_oldest(d) {
                        if !wait || self.shared.on_batcher_thread() {
                            return Err(EnqueueError::Full(item));
                        }
                        let end = *deadline
                            .get_or_insert_with(|| Instant::now() + Duration::from_secs(1));
                        if Instant::now() >= end {
                            return Err(EnqueueError::Full(item));
                        }
                        // Room comes once the batch in flight is acknowledged.
                        self.wait_for_progress(end.min(Instant::now() + Duration::from_millis(10)));
                    }
                }
                OverflowPolicy::DropNewest => {
                    self.shared.counters.dropped_newest.fetch_add(1, Relaxed);
                    return Ok(0);
                }
                OverflowPolicy::Block(timeout) => {
                    // (Room comes from the batcher: on its own thread, no wait.)
                    if !wait || self.shared.on_batcher_thread() {
                        return Err(EnqueueError::Full(item));
                    }
                    let end = *deadline.get_or_insert_with(|| after(Instant::now(), timeout));
                    if Instant::now() >= end {
                        return Err(EnqueueError::Full(item));
                    }
                    // Acknowledgements free space; wait for progress, then retry.
                    self.wait_for_progress(end.min(Instant::now() + Duration::from_millis(50)));
                }
            }
            outcome = self.append_and_queue(d, bytes, item);
        }
    }

    /// Waits until the batcher resolves something, or `until`.
    fn wait_for_progress(&self, until: Instant) {
        let seen = self.shared.resolved.load(SeqCst);
        self.shared
            .progress
            .wait_until(until, || self.shared.resolved.load(SeqCst) != seen);
    }

    #[doc(hidden)] // adapter plumbing: see the `adapter` module
    /// Hands `item` to the queue without ever blocking: for adapters (the async one) and
    /// for producers that must not wait.
    ///
    /// Where [`enqueue`](Queue::enqueue) would wait for room (`OverflowPolicy::Block`, or
    /// `DropOldest` on a full log while the oldest records are in flight), this returns
    /// [`EnqueueError::Full`] at once; call [`register_waker`](Queue::register_waker) and
    /// try again when woken. Under `SyncMode::Immediate` it does not wait for the sync
    /// either: the item is in the log but not yet known durable; [`sync`](Queue::sync)
    /// makes it so. (One wait remains, inside the log: an append that finds the log full
    /// while the deletion of delivered segments is under way waits for that deletion,
    /// milliseconds normally and at most a second, rather than report space missing
    /// that is being freed.)
    ///
    /// Returns the item's sequence number (0 if `DropNewest` dropped it).
    ///
    /// # Errors
    ///
    /// As [`enqueue`](Queue::enqueue), with `Full` for "no room now".
    ///
    /// ```
    /// use vinequeue_core::{Config, EnqueueError, NullSink, Queue};
    ///
    /// let queue = Queue::new(Config::default().memory_size(1).batch_size(1), NullSink)?;
    /// assert_eq!(queue.try_enqueue(7u32)?, 1);
    /// assert!(matches!(queue.try_enqueue(8), Err(EnqueueError::Full(8))));
    /// # Ok::<(), vinequeue_core::Error>(())
    /// ```
    pub fn try_enqueue(&self, item: T) -> Result<u64, EnqueueError<T>> {
        let s = &self.shared;
        if let Some(d) = &s.durable {
            return self.with_encoded(d, item, |buf, item| {
                self.append_or_overflow(d, buf, item, false)
            });
        }
        match s.ring.push((0, item)) {
            Ok(ordinal) => {
                s.after_push(ordinal);
                Ok(ordinal + 1)
            }
            Err(PushError::Full((_, item))) => match s.config.overflow {
                OverflowPolicy::Block(_) => Err(EnqueueError::Full(item)),
                _ => self.overflow(item).map(|()| 0),
            },
            Err(PushError::Closed((_, item))) => Err(EnqueueError::Closed(item)),
        }
    }

    #[doc(hidden)] // adapter plumbing: see the `adapter` module
    /// Encodes `item` as the log does and decodes it again: the copy an adapter hands back
    /// when an `Immediate` sync fails after the item was queued (what the blocking
    /// `enqueue` does itself).
    ///
    /// # Errors
    ///
    /// [`Error::Codec`] if the item does not encode, or does not decode from its own
    /// encoding (then it could never be replayed from the log); [`Error::Unsupported`] in
    /// memory mode.
    pub fn encoded_copy(&self, item: &T) -> Result<T, Error> {
        let d = self.shared.durable.as_ref().ok_or_else(|| {
            Error::Unsupported("a memory-only queue does not encode its items".into())
        })?;
        let bytes = d.codec.encode(item)?;
        (d.codec.decode)(&bytes).map_err(undecodable)
    }

    #[doc(hidden)] // adapter plumbing: see the `adapter` module
    /// Registers `waker` to be woken once, the next time the batcher makes room (takes
    /// items out of the ring) or progress (resolves a batch), or the queue closes: for
    /// async adapters waiting after [`try_enqueue`](Queue::try_enqueue) returned `Full`,
    /// or for [`delivered_through`](Queue::delivered_through) to pass a flush target.
    ///
    /// `key` identifies the registration: pass the same `Option` on every poll (it
    /// starts as `None`) so that a pending registration has its waker replaced rather
    /// than a second one added, and call [`unregister_waker`](Queue::unregister_waker)
    /// with it when the waiting future is dropped. Register first, then check the
    /// condition again: a change that happens in between wakes the waker.
    pub fn register_waker(&self, waker: &std::task::Waker, key: &mut Option<u64>) {
        self.shared.wakers.register(waker, key);
    }

    #[doc(hidden)] // adapter plumbing: see the `adapter` module
    /// Removes a registration made by [`register_waker`](Queue::register_waker) that has
    /// not fired yet (nothing happens if it has).
    pub fn unregister_waker(&self, key: u64) {
        self.shared.wakers.unregister(key);
    }

    /// `DropOldest` on a full log: drops (acknowledges and counts) the records of the
    /// oldest segment that the batcher has not taken yet. Returns whether it dropped any.
    fn shed_oldest(&self, d: &Durable<T>) -> bool {
        let Some(through) = d.storage.reclaim_hint() else {
            return false;
        };
        let mut cursor = d.cursor.lock();
        let from = cursor.0.max(cursor.1) + 1;
        let through = through.min(d.published.load(SeqCst));
        if through < from {
            return false;
        }
        cursor.1 = through;
        drop(cursor);
        d.acked(d.storage.ack_all(&(from..=through).collect::<Vec<_>>()));
        self.shared
            .counters
            .dropped_oldest
            .fetch_add(through - from + 1, Relaxed);
        true
    }

    #[inline(always)]
    fn append_and_queue(&self, d: &Durable<T>, bytes: &[u8], item: T) -> Result<u64, (Error, T)> {
        let s = &self.shared;
        let guard = d.append_lock.lock();
        if s.ring.is_closed() {
            return Err((Error::Closed, item));
        }
        let seq = match d.storage.append(bytes) {
            Ok(seq) => seq,
            Err(e) => return Err((e, item)),
        };
        // (Full: closed cannot happen under the lock. The item then lives in the log.)
        let pushed = s.ring.push((seq, item)).ok();
        // Release is enough: the batcher only reads `published` when the ring is empty,
        // and an item that spilled found the ring full (and is counted below).
        d.published.store(seq, std::sync::atomic::Ordering::Release);
        if pushed.is_none() {
            // After `published`: a batcher that sees this count also sees the record.
            d.spilled.fetch_add(1, SeqCst);
        }
        drop(guard);
        match pushed {
            Some(ordinal) => s.after_push(ordinal),
            // Only a batcher waiting for items needs waking (one that is sending or
            // backing off looks at the log when it is done): it re-checks the spill
            // count after it stores `wake_at`, so one of the two sees the other.
            None if s.wake_at.load(SeqCst) != crate::shared::NO_WAKE => s.unpark_batcher(),
            None => {}
        }
        Ok(seq)
    }

    #[cold]
    fn overflow(&self, item: T) -> Result<(), EnqueueError<T>> {
        let s = &self.shared;
        match s.config.overflow {
            OverflowPolicy::Reject => Err(EnqueueError::Full(item)),
            OverflowPolicy::DropNewest => {
                s.counters.dropped_newest.fetch_add(1, Relaxed);
                Ok(())
            }
            OverflowPolicy::DropOldest => {
                let mut item = item;
                loop {
                    if s.ring.pop().is_some() {
                        s.counters.dropped_oldest.fetch_add(1, Relaxed);
                    }
                    match s.ring.push((0, item)) {
                        Ok(ordinal) => {
                            s.after_push(ordinal);
                            return Ok(());
                        }
                        Err(PushError::Full((_, back))) => item = back,
                        Err(PushError::Closed((_, back))) => {
                            return Err(EnqueueError::Closed(back))
                        }
                    }
                }
            }
            // Room comes from the batcher: on its own thread, waiting would wait for itself.
            OverflowPolicy::Block(_) if s.on_batcher_thread() => Err(EnqueueError::Full(item)),
            OverflowPolicy::Block(timeout) => self.block(item, after(Instant::now(), timeout)),
        }
    }

    fn block(&self, item: T, deadline: Instant) -> Result<(), EnqueueError<T>> {
        let s = &self.shared;
        let mut slot = Some(item);
        let mut outcome = None;
        s.space.wait_until(deadline, || {
            let item = slot
                .take()
                .expect("the item is put back on every failed try");
            match s.ring.push((0, item)) {
                Ok(ordinal) => {
                    outcome = Some(Ok(ordinal));
                    true
                }
                Err(PushError::Closed((_, back))) => {
                    outcome = Some(Err(EnqueueError::Closed(back)));
                    true
                }
                Err(PushError::Full((_, back))) => {
                    slot = Some(back);
                    false
                }
            }
        });
        match outcome {
            Some(Ok(ordinal)) => {
                s.after_push(ordinal);
                Ok(())
            }
            Some(Err(e)) => Err(e),
            None => Err(EnqueueError::Full(
                slot.take().expect("still held after a timeout"),
            )),
        }
    }

    /// Hands every item of `items` to the queue, in order.
    ///
    /// # Errors
    ///
    /// As [`enqueue`](Queue::enqueue); the error carries exactly the items that were not
    /// accepted: the one that failed and all after it (those before it were accepted).
    pub fn enqueue_batch(&self, items: Vec<T>) -> Result<(), EnqueueError<Vec<T>>> {
        let mut rest = items.into_iter();
        while let Some(item) = rest.next() {
            if let Err(e) = self.enqueue(item) {
                return Err(e.map(|failed| std::iter::once(failed).chain(rest).collect()));
            }
        }
        Ok(())
    }

    /// Makes every item enqueued so far durable, with one group commit: enqueue many
    /// under `Periodic`, then `sync()` once. In memory mode there is nothing to make
    /// durable, so this returns at once.
    ///
    /// # Errors
    ///
    /// With a write-ahead log, the log's error (after which the log is failed).
    pub fn sync(&self) -> Result<(), Error> {
        match &self.shared.durable {
            Some(d) => d.storage.sync_through(d.published.load(SeqCst)),
            None => Ok(()),
        }
    }

    /// Waits until every item enqueued before this call has been delivered (or
    /// dead-lettered, or dropped), sending partial batches at once instead of waiting for
    /// `flush_timeout`. The queue keeps running.
    ///
    /// # Errors
    ///
    /// [`Error::NotStarted`] before `start()`, if there is anything to deliver;
    /// [`Error::FlushTimeout`] with the number still pending when `timeout` passes;
    /// [`Error::Closed`] if the queue was stopped with items left undelivered;
    /// [`Error::Unsupported`] on the batcher thread (inside the sink or a dead-letter
    /// handler) with anything left to deliver: the flush would wait for itself.
    pub fn flush(&self, timeout: Duration) -> Result<(), Error> {
        let s = &self.shared;
        let deadline = after(Instant::now(), timeout);
        let target = self.request_flush()?;
        if s.on_batcher_thread() && !self.flushed(target)? {
            return Err(Error::Unsupported(
                "flush() on the batcher thread (inside the sink or a dead-letter handler) \
                 would wait for itself"
                    .into(),
            ));
        }
        if s.progress
            .wait_until(deadline, || !matches!(self.flushed(target), Ok(false)))
        {
            self.flushed(target).map(|_| ())
        } else {
            Err(Error::FlushTimeout {
                pending: target.saturating_sub(self.delivered_through()),
            })
        }
    }

    #[doc(hidden)] // adapter plumbing: see the `adapter` module
    /// Starts a flush without waiting for it (for async adapters): the batcher sends
    /// partial batches at once until everything enqueued before this call is resolved.
    /// Returns the target to pass to [`flushed`](Queue::flushed).
    ///
    /// # Errors
    ///
    /// As [`flush`](Queue::flush): `NotStarted` before `start()` and `Closed` after
    /// `stop()`, if there is anything left to deliver.
    pub fn request_flush(&self) -> Result<u64, Error> {
        let s = &self.shared;
        let target = s.last_seq();
        if self.delivered_through() >= target {
            return Ok(target);
        }
        match self.control.life.lock().stage {
            Stage::Created(_) => return Err(Error::NotStarted),
            Stage::Stopped if self.delivered_through() < target => return Err(Error::Closed),
            _ => {}
        }
        s.flush_target.fetch_max(target, SeqCst);
        s.unpark_batcher();
        Ok(target)
    }

    #[doc(hidden)] // adapter plumbing: see the `adapter` module
    /// Whether a flush to `target` (from [`request_flush`](Queue::request_flush)) is
    /// complete: `Ok(true)` when done, `Ok(false)` while in progress.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the queue stopped before it was done.
    pub fn flushed(&self, target: u64) -> Result<bool, Error> {
        if self.delivered_through() >= target {
            Ok(true)
        } else if matches!(self.control.life.lock().stage, Stage::Stopped) {
            Err(Error::Closed)
        } else {
            Ok(false)
        }
    }

    /// Every item with a sequence number up to this one has been resolved: delivered,
    /// dead-lettered, dropped or abandoned.
    pub fn delivered_through(&self) -> u64 {
        self.shared.resolved.load(SeqCst)
    }

    /// The sequence number of the last item accepted so far (0 if none): what
    /// [`sync`](Queue::sync) makes durable and [`flush`](Queue::flush) delivers.
    pub fn last_seq(&self) -> u64 {
        self.shared.last_seq()
    }

    /// Whether this queue keeps its items in a [`Storage`] (a write-ahead log).
    pub fn is_durable(&self) -> bool {
        self.shared.durable.is_some()
    }

    /// Stops the queue: refuses new items, delivers what is buffered within
    /// `shutdown_timeout`, then ends the batcher thread. Idempotent: later calls (and
    /// concurrent ones, which wait for the first) return `Ok`.
    ///
    /// A queue that was never started is started for the drain, so that items enqueued
    /// before `start()` are delivered too.
    ///
    /// Called on the batcher thread (from inside [`Sink::send`] or a dead-letter
    /// handler), it closes the queue and returns `Ok` at once: the batcher drains after
    /// the call returns, within `shutdown_timeout`; the metrics tell the outcome.
    ///
    /// # Errors
    ///
    /// [`Error::ShutdownTimeout`] with the number of items not delivered in time; those
    /// were handed to [`Sink::on_dead_letter`] with
    /// [`DeadLetterReason::Shutdown`](crate::DeadLetterReason::Shutdown), unless the sink
    /// was stuck inside `send`.
    pub fn stop(&self) -> Result<(), Error> {
        let s = &self.shared;
        let mut life = self.control.life.lock();
        // A stop begun on the batcher thread, which did not wait: this call waits for it.
        let mut adopted = false;
        loop {
            match life.stage {
                Stage::Stopped => return Ok(()),
                // (On the batcher thread the stop is under way and completes as the
                // batcher exits; waiting here would wait for itself.)
                Stage::Stopping
                    if s.on_batcher_thread() || life.finishing == Some(thread::current().id()) =>
                {
                    return Ok(())
                }
                Stage::Stopping if life.stop_on_exit => {
                    life.stop_on_exit = false;
                    adopted = true;
                    break;
                }
                Stage::Stopping => {
                    self.control.changed.wait(&mut life);
                }
                Stage::Created(_) if s.ring.is_empty() => {
                    life.stage = Stage::Stopped;
                    self.close_ring();
                    s.space.notify_always();
                    s.wakers.wake();
                    // A driver waiting for the start learns that it will not come.
                    s.unpark_batcher();
                    return Ok(());
                }
                Stage::Created(_) => {
                    self.spawn(&mut life)?;
                }
                Stage::Running => break,
            }
        }
        let deadline = match s.shutdown_deadline() {
            Some(deadline) if adopted => deadline,
            _ => {
                life.stage = Stage::Stopping;
                let deadline = after(Instant::now(), s.config.shutdown_timeout);
                *s.shutdown_deadline.lock() = Some(deadline);
                self.close_ring();
                s.space.notify_always();
                s.wakers.wake();
                s.unpark_batcher();
                if s.on_batcher_thread() {
                    // From inside the sink or a dead-letter handler: the batcher drains
                    // once this call is back, within the deadline, and completes the stop
                    // as it exits (or a later `stop()` elsewhere waits for it).
                    life.stop_on_exit = true;
                    return Ok(());
                }
                deadline
            }
        };

        let give_up = after(deadline, EXIT_GRACE);
        while life.exited.is_none() {
            if self
                .control
                .changed
                .wait_until(&mut life, give_up)
                .timed_out()
            {
                break;
            }
        }
        if let (None, Some(slot)) = (life.exited, life.driven.clone()) {
            // Nobody drove the batcher to the end: past its deadline it has nothing left
            // to wait for, so finish it here (unless a batch is out with the driver).
            life.finishing = Some(thread::current().id());
            MutexGuard::unlocked(&mut life, || {
                crate::driver::take_over(&slot, &self.control, false)
            });
            life.finishing = None;
        }
        let result = match life.exited {
            Some(0) => Ok(()),
            Some(abandoned) => Err(Error::ShutdownTimeout {
                undelivered: abandoned,
            }),
            // The sink is stuck inside `send`: leave the thread behind.
            None => Err(Error::ShutdownTimeout {
                undelivered: s.pending().max(1),
            }),
        };
        if let (Some(handle), Some(_)) = (life.handle.take(), life.exited) {
            let _ = handle.join();
        }
        life.stage = Stage::Stopped;
        self.control.changed.notify_all();
        drop(life);
        // Wake flushers so they see the final state.
        s.progress.notify_always();
        s.wakers.wake();
        result
    }

    /// Refuses every later item. In durable mode under the append lock: a producer that
    /// checked the ring open before appending has pushed (or spilled) by then, and no
    /// append slips in after the close.
    fn close_ring(&self) {
        let s = &self.shared;
        let _guard = s.durable.as_ref().map(|d| d.append_lock.lock());
        s.ring.close();
    }

    /// A snapshot of the counters and gauges.
    pub fn metrics(&self) -> Metrics {
        let s = &self.shared;
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

    /// Whether `start()` has run (and `stop()` has not finished).
    pub fn is_started(&self) -> bool {
        matches!(
            self.control.life.lock().stage,
            Stage::Running | Stage::Stopping
        )
    }

    /// Whether `stop()` has been called: the queue accepts no more items.
    pub fn is_closed(&self) -> bool {
        self.shared.ring.is_closed()
    }

    /// Items accepted and not yet delivered, dead-lettered or dropped. Racy by nature.
    pub fn queue_size(&self) -> usize {
        self.shared.pending() as usize
    }

    /// Bytes of write-ahead log on disk; 0 in memory mode.
    pub fn wal_size(&self) -> u64 {
        self.shared.durable.as_ref().map_or(0, |d| d.storage.size())
    }

    /// What opening the log found (all zero in memory mode).
    pub fn recovery(&self) -> crate::RecoveryReport {
        self.shared
            .durable
            .as_ref()
            .map(|d| d.storage.recovery())
            .unwrap_or_default()
    }

    /// Reads up to `max` dead-lettered items from the dead-letter log, oldest first.
    ///
    /// A letter whose bytes do not decode as `T` (a record the log handed back that
    /// never decoded, reason `"Undecodable"`, or an item whose type changed since) comes
    /// with `item: None` and its bytes in `payload`; remove it with
    /// [`discard_dead_letter`](Queue::discard_dead_letter) once dealt with.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] without a dead-letter log; the log's read error;
    /// [`Error::Codec`] for a dead-letter record that is not one.
    pub fn dead_letters(&self, max: usize) -> Result<Vec<StoredDeadLetter<T>>, Error> {
        let (d, dead) = self.dead_letter_log()?;
        read_dead_letters(d, dead.as_ref(), dead.acked_through() + 1, u64::MAX, max)
    }

    /// Enqueues every dead-lettered item again (with new sequence numbers) and removes it
    /// from the dead-letter log. Returns how many were re-enqueued.
    ///
    /// Only the letters there when the call starts: an item that fails again while this
    /// runs is dead-lettered anew and waits for the next call. A letter that does not
    /// decode (`item: None` in [`dead_letters`](Queue::dead_letters)) cannot be enqueued:
    /// it moves to the back of the dead-letter log (a new `dead_letter_seq`, the rest
    /// unchanged) and stays until [`discard_dead_letter`](Queue::discard_dead_letter).
    /// The re-enqueued items (and moved letters) are durable before their letters are
    /// removed.
    ///
    /// # Errors
    ///
    /// As [`dead_letters`](Queue::dead_letters); the first enqueue error, with
    /// [`Error::Full`] also for an item `DropNewest` would discard; a sync error. The
    /// letters of the round of 256 it happened in stay, so their items may be delivered
    /// twice, never lost.
    pub fn redrive_dead_letters(&self) -> Result<u64, Error> {
        let (d, dead) = self.dead_letter_log()?;
        let end = dead.next_seq();
        let mut from = dead.acked_through() + 1;
        let mut moved = 0;
        while from < end {
            let letters = read_dead_letters(d, dead.as_ref(), from, end - 1, 256)?;
            let Some(last) = letters.last() else {
                return Ok(moved);
            };
            from = last.dead_letter_seq + 1;
            let mut done = Vec::with_capacity(letters.len());
            let mut requeued = 0;
            for letter in letters {
                match letter.item {
                    Some(item) => {
                        let seq = self.with_encoded(d, item, |buf, item| {
                            self.append_or_overflow(d, buf, item, true)
                        })?;
                        if seq == 0 {
                            return Err(Error::Full); // `DropNewest` would drop it
                        }
                        requeued += 1;
                    }
                    None => {
                        // To the back: the letters removed around it stay a contiguous
                        // run, which the log reclaims and remembers across restarts.
                        let record = StoredRecord {
                            seq: letter.seq,
                            reason: letter.reason,
                            error: letter.error,
                            payload: letter.payload,
                        };
                        let bytes = postcard::to_allocvec(&record)
                            .map_err(|e| Error::Codec(e.to_string()))?;
                        dead.append(&bytes)?;
                    }
                }
                done.push(letter.dead_letter_seq);
            }
            self.sync()?;
            dead.sync()?;
            remove_letters(d, dead.as_ref(), &done)?;
            moved += requeued;
        }
        Ok(moved)
    }

    /// Removes one letter from the dead-letter log for good (after dealing with it some
    /// other way, or for a letter that does not decode). Removing one that is not there
    /// does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] without a dead-letter log; the log's error.
    pub fn discard_dead_letter(&self, dead_letter_seq: u64) -> Result<(), Error> {
        let (d, dead) = self.dead_letter_log()?;
        if dead_letter_seq == 0 || dead_letter_seq >= dead.next_seq() {
            return Ok(());
        }
        remove_letters(d, dead.as_ref(), &[dead_letter_seq])
    }

    fn dead_letter_log(&self) -> Result<(&Durable<T>, &Arc<dyn Storage>), Error> {
        let d = self.shared.durable.as_ref().ok_or_else(|| {
            Error::Unsupported("dead letters are kept in a log only in durable mode".into())
        })?;
        let dead = d.dead_letters.as_ref().ok_or_else(|| {
            Error::Unsupported("this queue was created without a dead-letter log".into())
        })?;
        Ok((d, dead))
    }

    /// The configuration this queue runs with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }
}

impl<T: Send + 'static> Drop for Queue<T> {
    /// Stops the queue as [`stop`](Queue::stop) does, waiting at most `shutdown_timeout`
    /// (plus a short grace period); errors are ignored here, call `stop()` to see them.
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

impl<T: Send + 'static> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("started", &self.is_started())
            .field("closed", &self.is_closed())
            .field("queue_size", &self.queue_size())
            .finish()
    }
}

/// The error for an item that does not decode from its own encoding.
fn undecodable(e: Error) -> Error {
    Error::Codec(format!(
        "the item does not decode from its own encoding ({e}): types that need a \
         self-describing format (deserialize_any: untagged or flattened enums, \
         serde_json::Value) cannot go through the log"
    ))
}

/// Up to `max` letters of the dead-letter log numbered `from..=to`, oldest first, leaving
/// out those removed out of order.
fn read_dead_letters<T>(
    d: &Durable<T>,
    dead: &dyn Storage,
    from: u64,
    to: u64,
    max: usize,
) -> Result<Vec<StoredDeadLetter<T>>, Error> {
    let mut out = Vec::new();
    let mut at = from;
    while out.len() < max && at <= to {
        let mut failure = None;
        let mut last = None;
        dead.read(at, max - out.len(), &mut |dseq, bytes| {
            if dseq > to {
                return false;
            }
            last = Some(dseq);
            if dead.is_acked(dseq) {
                return true; // removed out of order (`discard_dead_letter`)
            }
            match postcard::from_bytes::<StoredRecord>(bytes) {
                Ok(record) => out.push(StoredDeadLetter {
                    dead_letter_seq: dseq,
                    seq: record.seq,
                    reason: record.reason,
                    error: record.error,
                    item: (d.codec.decode)(&record.payload).ok(),
                    payload: record.payload,
                }),
                Err(e) => {
                    failure = Some(Error::Codec(format!(
                        "dead letter {dseq} is not a dead-letter record: {e}"
                    )));
                    return false;
                }
            }
            true
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        match last {
            Some(l) => at = l + 1,
            None => break,
        }
    }
    Ok(out)
}

/// Acknowledges `seqs` in the dead-letter log and syncs it. An error from a log that
/// recorded the acknowledgements all the same (a failed deletion of space, possibly an
/// earlier one's, reported now) is counted in `log_errors_total` rather than returned:
/// the letters are gone, and the caller's work is done.
fn remove_letters<T>(d: &Durable<T>, dead: &dyn Storage, seqs: &[u64]) -> Result<(), Error> {
    let acked = dead.ack_all(seqs);
    let synced = dead.sync();
    match acked {
        Ok(()) => synced,
        Err(e) if seqs.iter().all(|&s| dead.is_acked(s)) => {
            d.acked(Err(e));
            synced
        }
        Err(e) => Err(e),
    }
}
