//! [`Queue`]: the handle producers use: construction, flush and sync, metrics. Its
//! lifecycle (start, stop) is in `run.rs`, enqueueing and overflow in `enqueue.rs`, the
//! dead-letter administration in `dead_letters.rs`.

mod dead_letters;
mod enqueue;
mod run;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use parking_lot::{Condvar, Mutex, MutexGuard};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::batcher::Batcher;
use crate::codec::Codec;
use crate::config::{after, SyncMode};
use crate::config::{Config, OverflowPolicy};
use crate::dead::{StoredDeadLetter, StoredRecord};
use crate::driver::{BatchDriver, DriverSlot, DriverState};
use crate::error::{EnqueueError, Error};
use crate::lifecycle::*;
use crate::metrics::{FlushReport, Metrics};
use crate::ring::PushError;
use crate::shared::{DurableState, QueueState};
use crate::sink::Sink;
use crate::Storage;

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
/// delivers what is buffered within `shutdown_timeout`, and reports what it could not
/// deliver in [`Error::ShutdownTimeout`]: in durable mode those items stay in the log for
/// the next start; in memory mode they go to [`Sink::on_dead_letter`] with
/// [`DeadLetterReason::Shutdown`](crate::DeadLetterReason::Shutdown).
///
/// # Backpressure
///
/// The memory ring holds `memory_size` items. When it is full, `enqueue` follows the
/// [`OverflowPolicy`]: wait (`Block`), refuse (`Reject`), or discard (`DropOldest`,
/// `DropNewest`, each counted in [`Metrics::dropped_total`]).
pub struct Queue<T: Send + 'static> {
    shared: Arc<QueueState<T>>,
    control: Arc<LifecycleControl<T>>,
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
            let stored = crate::dead::settle_letters_stored_twice(storage.as_ref(), dead.as_ref());
            let redriven =
                crate::dead::settle_letters_redriven_twice(storage.as_ref(), dead.as_ref());
            stored.is_err() || redriven.is_err()
        });
        let mark = storage.acked_through();
        let durable = DurableState {
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
        durable: Option<DurableState<T>>,
        sink: S,
    ) -> Result<Self, Error> {
        Ok(Queue {
            shared: Arc::new(QueueState::new(config, durable)),
            control: Arc::new(LifecycleControl {
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
    /// `flush_timeout`. The queue keeps running. The [`FlushReport`] says what became of
    /// the items since the previous flush returned (or since the queue was built): check
    /// [`FlushReport::all_delivered`] where a dead letter matters.
    ///
    /// # Errors
    ///
    /// [`Error::NotStarted`] before `start()`, if there is anything to deliver;
    /// [`Error::FlushTimeout`] with the number still pending when `timeout` passes;
    /// [`Error::Closed`] if the queue was stopped with items left undelivered;
    /// [`Error::Unsupported`] on the batcher thread (inside the sink or a dead-letter
    /// handler) with anything left to deliver: the flush would wait for itself.
    pub fn flush(&self, timeout: Duration) -> Result<FlushReport, Error> {
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
            self.flushed(target)?;
            Ok(self.take_flush_report())
        } else {
            Err(Error::FlushTimeout {
                pending: target.saturating_sub(self.delivered_through()),
            })
        }
    }

    #[doc(hidden)] // adapter plumbing: see the `adapter` module
    /// What became of the items since the last report: what a completed flush returns.
    pub fn take_flush_report(&self) -> FlushReport {
        let now = self.shared.counters.outcomes();
        let mut last = self.shared.reported.lock();
        let report = FlushReport::between(*last, now);
        *last = now;
        report
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

    /// This queue's identity: kept in its log directory (durable mode), so the same
    /// across restarts; fresh per process in memory mode (or over a storage that keeps
    /// none). `(queue id, key)` names an item uniquely across every queue writing into one
    /// backend (see [`Batch::key`](crate::Batch::key)).
    pub fn id(&self) -> crate::QueueId {
        self.shared.queue_id
    }

    /// Whether this queue keeps its items in a [`Storage`] (a write-ahead log).
    pub fn is_durable(&self) -> bool {
        self.shared.durable.is_some()
    }

    /// A snapshot of the counters and gauges.
    pub fn metrics(&self) -> Metrics {
        self.shared.snapshot()
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
