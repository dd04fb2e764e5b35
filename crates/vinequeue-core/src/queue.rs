//! [`Queue`]: the handle producers use, and the lifecycle (start, flush, stop, drop).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::batcher::Batcher;
use crate::config::{Config, OverflowPolicy};
use crate::error::{EnqueueError, Error};
use crate::metrics::Metrics;
use crate::ring::PushError;
use crate::shared::Shared;
use crate::sink::Sink;

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
    /// Set by the batcher thread as it exits: how many items it abandoned.
    exited: Option<u64>,
}

struct Control<T> {
    life: Mutex<Lifecycle<T>>,
    /// Notified when the batcher exits and when a stop completes.
    changed: Condvar,
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
    /// Creates a queue that will deliver to `sink`. Nothing runs until
    /// [`start`](Queue::start), but items may be enqueued before (they wait in the ring).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the configuration is invalid (the message names the field);
    /// [`Error::Unsupported`] if `wal_path` is set, which needs the write-ahead log
    /// storage.
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
        if let Some(path) = &config.wal_path {
            return Err(Error::Unsupported(format!(
                "wal_path {} was set, but this build has no write-ahead log storage; \
                 leave wal_path unset for a memory-only queue",
                path.display()
            )));
        }
        Ok(Queue {
            shared: Arc::new(Shared::new(config)),
            control: Arc::new(Control {
                life: Mutex::new(Lifecycle {
                    stage: Stage::Created(Box::new(sink)),
                    handle: None,
                    exited: None,
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

    fn spawn(&self, life: &mut Lifecycle<T>) -> Result<(), Error> {
        let Stage::Created(sink) = std::mem::replace(&mut life.stage, Stage::Running) else {
            unreachable!("spawn is only called in the Created stage");
        };
        let batcher = Batcher::new(Arc::clone(&self.shared), sink);
        let control = Arc::clone(&self.control);
        let spawned = thread::Builder::new()
            .name("vinequeue-batcher".into())
            .spawn(move || {
                // The batcher catches sink panics itself; this is a last line of defence so
                // that `stop()` learns of the exit even if the batcher has a bug.
                let abandoned = catch_unwind(AssertUnwindSafe(|| batcher.run())).unwrap_or(0);
                let mut life = control.life.lock();
                life.exited = Some(abandoned);
                control.changed.notify_all();
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
    /// policy refuses it, [`EnqueueError::Closed`] after `stop()`.
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
        match self.shared.ring.push(item) {
            Ok(ordinal) => {
                self.shared.after_push(ordinal);
                Ok(())
            }
            Err(PushError::Full(item)) => self.overflow(item),
            Err(PushError::Closed(item)) => Err(EnqueueError::Closed(item)),
        }
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
                    match s.ring.push(item) {
                        Ok(ordinal) => {
                            s.after_push(ordinal);
                            return Ok(());
                        }
                        Err(PushError::Full(back)) => item = back,
                        Err(PushError::Closed(back)) => return Err(EnqueueError::Closed(back)),
                    }
                }
            }
            OverflowPolicy::Block(timeout) => self.block(item, Instant::now() + timeout),
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
            match s.ring.push(item) {
                Ok(ordinal) => {
                    outcome = Some(Ok(ordinal));
                    true
                }
                Err(PushError::Closed(back)) => {
                    outcome = Some(Err(EnqueueError::Closed(back)));
                    true
                }
                Err(PushError::Full(back)) => {
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

    /// Makes every item enqueued so far durable. In memory mode there is nothing to make
    /// durable, so this returns at once.
    ///
    /// # Errors
    ///
    /// None in memory mode; with a write-ahead log, the log's I/O error.
    pub fn sync(&self) -> Result<(), Error> {
        Ok(())
    }

    /// Waits until every item enqueued before this call has been delivered (or
    /// dead-lettered, or dropped), sending partial batches at once instead of waiting for
    /// `flush_timeout`. The queue keeps running.
    ///
    /// # Errors
    ///
    /// [`Error::NotStarted`] before `start()`, if there is anything to deliver;
    /// [`Error::FlushTimeout`] with the number still pending when `timeout` passes;
    /// [`Error::Closed`] if the queue was stopped with items left undelivered.
    pub fn flush(&self, timeout: Duration) -> Result<(), Error> {
        let s = &self.shared;
        let deadline = Instant::now() + timeout;
        let target = s.ring.pushed();
        let done = || s.resolved.load(SeqCst) >= target;
        if done() {
            return Ok(());
        }
        match self.control.life.lock().stage {
            Stage::Created(_) => return Err(Error::NotStarted),
            Stage::Stopped if !done() => return Err(Error::Closed),
            _ => {}
        }
        s.flush_target.fetch_max(target, SeqCst);
        s.unpark_batcher();
        if s.progress.wait_until(deadline, done) {
            Ok(())
        } else {
            Err(Error::FlushTimeout {
                pending: target.saturating_sub(s.resolved.load(SeqCst)),
            })
        }
    }

    /// Stops the queue: refuses new items, delivers what is buffered within
    /// `shutdown_timeout`, then ends the batcher thread. Idempotent: later calls (and
    /// concurrent ones, which wait for the first) return `Ok`.
    ///
    /// A queue that was never started is started for the drain, so that items enqueued
    /// before `start()` are delivered too.
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
        loop {
            match life.stage {
                Stage::Stopped => return Ok(()),
                Stage::Stopping => {
                    self.control.changed.wait(&mut life);
                }
                Stage::Created(_) if s.ring.is_empty() => {
                    life.stage = Stage::Stopped;
                    s.ring.close();
                    s.space.notify_always();
                    return Ok(());
                }
                Stage::Created(_) => {
                    self.spawn(&mut life)?;
                }
                Stage::Running => break,
            }
        }
        life.stage = Stage::Stopping;
        let deadline = Instant::now() + s.config.shutdown_timeout;
        *s.shutdown_deadline.lock() = Some(deadline);
        s.ring.close();
        s.space.notify_always();
        s.unpark_batcher();

        let give_up = deadline + EXIT_GRACE;
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
        result
    }

    /// A snapshot of the counters and gauges.
    pub fn metrics(&self) -> Metrics {
        let s = &self.shared;
        let mut m = Metrics::default();
        s.counters.fill(&mut m);
        m.enqueued_total = s.ring.pushed() + s.counters.dropped_newest.load(Relaxed);
        m.memory_queue_size = s.ring.len() as u64;
        m.pending = s.pending();
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
        0
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
