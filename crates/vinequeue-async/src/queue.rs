//! [`AsyncQueue`]: the async handle producers use.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use vinequeue_core::{
    Config, EnqueueError, Error, FlushReport, Metrics, OverflowPolicy, Queue, RecoveryReport,
    Storage, SyncMode,
};

use crate::bridge::{self, Batches};
use crate::syncer::Syncer;
use crate::timer::Sleep;

/// How long an `enqueue` under `DropOldest` waits for the batch in flight to free log
/// space, as the blocking `enqueue` does.
const DROP_OLDEST_WAIT: Duration = Duration::from_secs(1);

struct AsyncQueueState<T: Send + 'static> {
    queue: Arc<Queue<T>>,
    /// Durable queues: runs the syncs async callers wait for.
    syncer: Option<Arc<Syncer>>,
    /// `SyncMode::Immediate` on a durable queue: `enqueue` waits for durability.
    immediate: bool,
}

impl<T: Send + 'static> Drop for AsyncQueueState<T> {
    fn drop(&mut self) {
        if let Some(syncer) = &self.syncer {
            syncer.shutdown();
        }
        if self.queue.is_started() || !self.queue.is_closed() {
            // Dropping the queue stops it, which may wait for deliveries that this very
            // executor thread drives: stop it on a thread of its own.
            let queue = Arc::clone(&self.queue);
            let _ = std::thread::Builder::new()
                .name("vinequeue-async-stop".into())
                .spawn(move || drop(queue));
        }
    }
}

/// The async face of a [`Queue`]: `enqueue(item).await` waits for room (and, under
/// `SyncMode::Immediate`, for durability) by registering wakers, never by blocking the
/// executor's thread. Works on any executor: it depends on no runtime.
///
/// Cloning is cheap and shares the queue; the last clone dropped stops it (on a
/// background thread). Prefer `stop().await`, which reports what could not be delivered.
///
/// ```
/// use std::time::Duration;
/// use vinequeue_async::AsyncQueue;
/// use vinequeue_core::{Batch, Config, SendError};
///
/// futures::executor::block_on(async {
///     let config = Config::default().flush_timeout(Duration::from_millis(10));
///     let (queue, batches) = AsyncQueue::<String>::new(config)?;
///     let delivery = batches.deliver_to(|batch: &Batch<String>| {
///         let lines = batch.len();
///         async move {
///             // await an HTTP POST, a database write...
///             assert!(lines > 0);
///             Ok::<(), SendError>(())
///         }
///     });
///     let pool = futures::executor::ThreadPool::new().unwrap();
///     pool.spawn_ok(delivery); // any executor: tokio::spawn, smol::spawn...
///     queue.start()?;
///     for i in 0..100 {
///         queue.enqueue(format!("event {i}")).await?;
///     }
///     queue.stop().await?;
///     assert_eq!(queue.metrics().sent_total, 100);
///     Ok::<(), vinequeue_core::Error>(())
/// })?;
/// # Ok::<(), vinequeue_core::Error>(())
/// ```
pub struct AsyncQueue<T: Send + 'static> {
    inner: Arc<AsyncQueueState<T>>,
}

impl<T: Send + 'static> Clone for AsyncQueue<T> {
    fn clone(&self) -> Self {
        AsyncQueue {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> AsyncQueue<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    /// Creates a queue whose batches come out of the returned [`Batches`]: hand them to
    /// an [`AsyncSink`](crate::AsyncSink) with [`Batches::deliver_to`] and spawn the
    /// resulting future, or consume the stream yourself. With `wal_path` set (feature
    /// `wal`), opens and recovers the write-ahead log as [`Queue::new`] does.
    ///
    /// # Errors
    ///
    /// As [`Queue::new`]: [`Error::Config`], [`Error::Locked`],
    /// [`Error::Corrupt`] (strict recovery), [`Error::Io`].
    pub fn new(config: Config) -> Result<(Self, Batches<T>), Error> {
        if config.get_wal_path().is_some() {
            // With a log, the batcher reads it back, acknowledges and syncs: file I/O
            // that stays on the batcher thread, off the executor.
            let (sink, batches) = bridge::channel();
            let queue = Queue::new(config, sink)?;
            return Ok((Self::from_queue(queue)?, batches));
        }
        // In memory, whoever consumes the batches runs the batcher: no thread hop per
        // batch.
        let (sink, letters) = bridge::letter_box();
        let queue = Queue::new(config, sink)?;
        let driver = queue.drive_externally()?;
        Ok((Self::from_queue(queue)?, Batches::driven(driver, letters)))
    }

    /// [`new`](AsyncQueue::new) with the batches handed to `sink`: returns the queue and
    /// the [`Delivery`](crate::Delivery) future to spawn on any executor.
    ///
    /// # Errors
    ///
    /// As [`new`](AsyncQueue::new).
    ///
    /// ```
    /// use vinequeue_async::AsyncQueue;
    /// use vinequeue_core::{Batch, Config, SendError};
    ///
    /// let sink = |batch: &Batch<u32>| {
    ///     let n = batch.len();
    ///     async move { if n > 0 { Ok(()) } else { Err(SendError::permanent("empty")) } }
    /// };
    /// let (queue, delivery) = AsyncQueue::with_sink(Config::default(), sink)?;
    /// futures::executor::ThreadPool::new().unwrap().spawn_ok(delivery);
    /// queue.start()?;
    /// futures::executor::block_on(queue.enqueue(7))?;
    /// futures::executor::block_on(queue.stop())?;
    /// assert_eq!(queue.metrics().sent_total, 1);
    /// # Ok::<(), vinequeue_core::Error>(())
    /// ```
    pub fn with_sink<S: crate::AsyncSink<T>>(
        config: Config,
        sink: S,
    ) -> Result<(Self, crate::Delivery), Error>
    where
        T: Sync,
    {
        let (queue, batches) = Self::new(config)?;
        Ok((queue, batches.deliver_to(sink)))
    }

    /// As [`new`](AsyncQueue::new), over a [`Storage`] of your own; see
    /// [`Queue::with_storage`].
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid configuration.
    pub fn with_storage(
        config: Config,
        storage: Arc<dyn Storage>,
        dead_letters: Option<Arc<dyn Storage>>,
    ) -> Result<(Self, Batches<T>), Error> {
        let (sink, batches) = bridge::channel();
        let queue = Queue::with_storage(config, storage, dead_letters, sink)?;
        Ok((Self::from_queue(queue)?, batches))
    }

    /// Hands `item` to the queue; the future completes when `enqueue` would return.
    ///
    /// It waits (without blocking the thread) for room under `OverflowPolicy::Block`
    /// (up to its timeout), and under `SyncMode::Immediate` for the group commit that
    /// makes the item durable. The outcome is the blocking `enqueue`'s: on failure the
    /// item comes back inside the error.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes never leaves anything half-done: while it
    /// waits for room the item was not enqueued (it is dropped with the future; use
    /// [`Enqueue::cancel`] to get it back); once it waits for durability the item is
    /// enqueued and will be delivered, and only the confirmation is lost.
    pub fn enqueue(&self, item: T) -> Enqueue<'_, T> {
        Enqueue {
            queue: self,
            stage: Stage::Item(item, None),
            position: None,
            sleep: None,
            polled: false,
            registration: Registration::new(&self.inner.queue),
        }
    }

    /// Enqueues `item` with the producer's source position, as
    /// [`Queue::enqueue_at`](vinequeue_core::Queue::enqueue_at) does: written with the
    /// item's record, handed back after a restart by `recovery().source_position`.
    ///
    /// # Errors
    ///
    /// As [`enqueue`](AsyncQueue::enqueue) and
    /// [`Queue::enqueue_at`](vinequeue_core::Queue::enqueue_at).
    pub fn enqueue_at(&self, item: T, position: impl AsRef<[u8]>) -> Enqueue<'_, T> {
        Enqueue {
            position: Some(position.as_ref().to_vec()),
            ..self.enqueue(item)
        }
    }

    /// Enqueues the items in order.
    ///
    /// # Errors
    ///
    /// As [`enqueue`](AsyncQueue::enqueue); the error carries exactly the items that were
    /// not accepted (those before the failing one were).
    pub async fn enqueue_batch(&self, items: Vec<T>) -> Result<(), EnqueueError<Vec<T>>> {
        let mut rest = items.into_iter();
        while let Some(item) = rest.next() {
            if let Err(e) = self.enqueue(item).await {
                return Err(e.map(|failed| std::iter::once(failed).chain(rest).collect()));
            }
        }
        Ok(())
    }

    /// Makes every item enqueued so far durable with one group commit (run on the
    /// queue's sync thread). Ready at once in memory mode.
    ///
    /// # Errors
    ///
    /// The log's error (after which the log is failed).
    pub async fn sync(&self) -> Result<(), Error> {
        let Some(syncer) = &self.inner.syncer else {
            return Ok(());
        };
        let seq = self.inner.queue.last_seq();
        std::future::poll_fn(|cx| syncer.poll_synced(seq, cx)).await
    }
}

impl<T: Send + 'static> AsyncQueue<T> {
    /// Wraps a queue built elsewhere (for instance with a blocking [`Sink`](vinequeue_core::Sink),
    /// which then runs on the batcher thread as usual): producers get `enqueue().await`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if a durable queue's sync thread cannot be started.
    pub fn from_queue(queue: Queue<T>) -> Result<Self, Error> {
        let queue = Arc::new(queue);
        let durable = queue.is_durable();
        let syncer = if durable {
            Some(Syncer::start(&queue)?)
        } else {
            None
        };
        Ok(AsyncQueue {
            inner: Arc::new(AsyncQueueState {
                immediate: durable && queue.config().get_sync_mode() == SyncMode::Immediate,
                syncer,
                queue,
            }),
        })
    }

    /// Starts the batcher thread (which replays recovered records first); see
    /// [`Queue::start`]. Does not block.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `stop()`; [`Error::Io`] if the thread cannot be spawned.
    pub fn start(&self) -> Result<(), Error> {
        self.inner.queue.start()
    }

    /// Waits until every item enqueued before this call has been delivered (or
    /// dead-lettered, or dropped), sending partial batches at once, and says what became
    /// of them; see [`Queue::flush`].
    ///
    /// # Errors
    ///
    /// [`Error::NotStarted`], [`Error::FlushTimeout`], [`Error::Closed`], as the blocking
    /// `flush`.
    pub async fn flush(&self, timeout: Duration) -> Result<FlushReport, Error> {
        let queue = &self.inner.queue;
        let target = queue.request_flush()?;
        let mut sleep = Sleep::until(deadline_after(timeout));
        let mut registration = Registration::new(queue);
        std::future::poll_fn(|cx| {
            if queue.flushed(target)? {
                return Poll::Ready(Ok(queue.take_flush_report()));
            }
            registration.register(cx.waker());
            if queue.flushed(target)? {
                return Poll::Ready(Ok(queue.take_flush_report()));
            }
            match Pin::new(&mut sleep).poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(Error::FlushTimeout {
                    pending: target.saturating_sub(queue.delivered_through()),
                })),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Stops the queue as [`Queue::stop`] does (refuses new items, delivers what is
    /// buffered within `shutdown_timeout`, leaves the rest in the log), on a thread of
    /// its own: the executor keeps running, so a [`Delivery`](crate::Delivery) on it
    /// keeps delivering meanwhile. Pending `enqueue`s complete with `Closed`.
    ///
    /// # Errors
    ///
    /// [`Error::ShutdownTimeout`] with the number of items not delivered in time;
    /// [`Error::Io`] if the thread cannot be started.
    pub async fn stop(&self) -> Result<(), Error> {
        let queue = &self.inner.queue;
        if !queue.is_started() && queue.is_closed() {
            return Ok(());
        }
        let (tx, rx) = futures::channel::oneshot::channel();
        let stopping = Arc::clone(queue);
        std::thread::Builder::new()
            .name("vinequeue-async-stop".into())
            .spawn(move || {
                let _ = tx.send(stopping.stop());
            })?;
        rx.await
            .unwrap_or_else(|_| Err(Error::Unsupported("the stop thread panicked".into())))
    }

    /// A snapshot of the counters and gauges; see [`Queue::metrics`].
    pub fn metrics(&self) -> Metrics {
        self.inner.queue.metrics()
    }

    /// Whether `start()` has run (and `stop()` has not finished).
    pub fn is_started(&self) -> bool {
        self.inner.queue.is_started()
    }

    /// Whether `stop()` has been called: the queue accepts no more items.
    pub fn is_closed(&self) -> bool {
        self.inner.queue.is_closed()
    }

    /// Items accepted and not yet delivered, dead-lettered or dropped.
    pub fn queue_size(&self) -> usize {
        self.inner.queue.queue_size()
    }

    /// The sequence number of the last item accepted so far (0 if none): what
    /// [`sync`](AsyncQueue::sync) makes durable and [`flush`](AsyncQueue::flush)
    /// delivers.
    pub fn last_seq(&self) -> u64 {
        self.inner.queue.last_seq()
    }

    /// The queue's identity, half of every item's key ([`Batch::key`](vinequeue_core::Batch::key)); see
    /// [`Queue::id`].
    pub fn id(&self) -> vinequeue_core::QueueId {
        self.inner.queue.id()
    }

    /// Bytes of write-ahead log on disk; 0 in memory mode.
    pub fn wal_size(&self) -> u64 {
        self.inner.queue.wal_size()
    }

    /// What opening the log found (all zero in memory mode).
    pub fn recovery(&self) -> RecoveryReport {
        self.inner.queue.recovery()
    }

    /// The configuration this queue runs with.
    pub fn config(&self) -> &Config {
        self.inner.queue.config()
    }

    /// The underlying queue, for what has no async form here (`dead_letters`,
    /// `redrive_dead_letters`, `try_enqueue`). Its blocking methods (`enqueue` under
    /// `Block`, `flush`, `stop`, `sync`) block the calling thread: keep them off an
    /// executor's threads.
    pub fn blocking(&self) -> &Queue<T> {
        &self.inner.queue
    }
}

impl<T: Send + 'static> fmt::Debug for AsyncQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AsyncQueue")
            .field(&self.inner.queue)
            .finish()
    }
}

/// `timeout` from now, or a century from now for timeouts beyond what an `Instant` holds
/// (`Duration::MAX` meaning "no limit").
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// A waker registered with the queue ([`Queue::register_waker`]), removed when dropped:
/// a future dropped while it waits leaves nothing behind.
struct Registration<'a, T: Send + 'static> {
    queue: &'a Queue<T>,
    key: Option<u64>,
}

impl<'a, T: Send + 'static> Registration<'a, T> {
    fn new(queue: &'a Queue<T>) -> Self {
        Registration { queue, key: None }
    }

    fn register(&mut self, waker: &std::task::Waker) {
        self.queue.register_waker(waker, &mut self.key);
    }
}

impl<T: Send + 'static> Drop for Registration<'_, T> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.queue.unregister_waker(key);
        }
    }
}

enum Stage<T> {
    /// Not enqueued yet; with a copy once one is needed (durability waits).
    Item(T, Option<T>),
    /// Enqueued as `seq`; waiting for the sync. Keeps a copy (made through the log's
    /// encoding) to hand back if the sync fails.
    Syncing(u64, T),
    Done,
}

/// The future of [`AsyncQueue::enqueue`].
#[must_use = "futures do nothing unless awaited"]
pub struct Enqueue<'a, T: Send + 'static> {
    queue: &'a AsyncQueue<T>,
    stage: Stage<T>,
    /// The source position to store with the item (`enqueue_at`).
    position: Option<Vec<u8>>,
    /// Ends the wait for room (`Block` timeout), from the first time there was none.
    sleep: Option<Sleep>,
    /// Polled before (the cooperative yield happens on a first poll only).
    polled: bool,
    /// The wait for room.
    registration: Registration<'a, T>,
}

/// Enqueues a task may complete in a row before it yields to its executor once, so that
/// a producer that always finds room does not starve the tasks beside it (the delivery
/// task, on a single-threaded executor).
const ENQUEUE_BUDGET: u32 = 128;

thread_local! {
    static BUDGET: std::cell::Cell<u32> = const { std::cell::Cell::new(ENQUEUE_BUDGET) };
}

/// Spends one unit of this thread's enqueue budget; false (and a refill) when it is out.
fn spend_budget() -> bool {
    BUDGET.with(|b| match b.get() {
        0 => {
            b.set(ENQUEUE_BUDGET);
            false
        }
        n => {
            b.set(n - 1);
            true
        }
    })
}

// The item is never pinned: it is moved in and out of `stage` freely.
impl<T: Send + 'static> Unpin for Enqueue<'_, T> {}

impl<T: Send + 'static> Enqueue<'_, T> {
    /// Gives up: returns the item if it was not enqueued yet, `None` if it was (it will
    /// be delivered) or the future already completed.
    pub fn cancel(mut self) -> Option<T> {
        match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::Item(item, _) => Some(item),
            _ => None,
        }
    }
}

impl<T> Future for Enqueue<'_, T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    type Output = Result<(), EnqueueError<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if !std::mem::replace(&mut this.polled, true) && !spend_budget() {
            // Nothing enqueued yet: yielding here keeps the future cancel-safe.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let inner = &this.queue.inner;
        let queue = &inner.queue;
        let mut registered = false;
        loop {
            match std::mem::replace(&mut this.stage, Stage::Done) {
                Stage::Item(item, copy) => {
                    let copy = match copy {
                        Some(copy) => Some(copy),
                        None if inner.immediate => match queue.encoded_copy(&item) {
                            Ok(copy) => Some(copy),
                            Err(e) => return Poll::Ready(Err(EnqueueError::Failed(item, e))),
                        },
                        None => None,
                    };
                    let tried = match &this.position {
                        None => queue.try_enqueue(item),
                        Some(position) => queue.try_enqueue_at(item, position),
                    };
                    match tried {
                        Ok(seq) => match copy {
                            Some(copy) if seq > 0 => this.stage = Stage::Syncing(seq, copy),
                            _ => return Poll::Ready(Ok(())),
                        },
                        Err(EnqueueError::Full(item)) => {
                            let wait = match queue.config().get_overflow() {
                                OverflowPolicy::Block(timeout) => timeout,
                                OverflowPolicy::DropOldest => DROP_OLDEST_WAIT,
                                _ => return Poll::Ready(Err(EnqueueError::Full(item))),
                            };
                            this.stage = Stage::Item(item, copy);
                            if !registered {
                                // Register, then try once more: room made in between
                                // wakes this task.
                                this.registration.register(cx.waker());
                                registered = true;
                                continue;
                            }
                            let sleep = this
                                .sleep
                                .get_or_insert_with(|| Sleep::until(deadline_after(wait)));
                            if Pin::new(sleep).poll(cx).is_ready() {
                                let Stage::Item(item, _) =
                                    std::mem::replace(&mut this.stage, Stage::Done)
                                else {
                                    unreachable!("set above");
                                };
                                return Poll::Ready(Err(EnqueueError::Full(item)));
                            }
                            return Poll::Pending;
                        }
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
                Stage::Syncing(seq, copy) => {
                    let syncer = inner.syncer.as_ref().expect("durable queues have a syncer");
                    return match syncer.poll_synced(seq, cx) {
                        Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
                        Poll::Ready(Err(e)) => {
                            // Enqueued but not known durable: a copy goes back with the
                            // error, as from the blocking `enqueue`.
                            Poll::Ready(Err(EnqueueError::Failed(copy, e)))
                        }
                        Poll::Pending => {
                            this.stage = Stage::Syncing(seq, copy);
                            Poll::Pending
                        }
                    };
                }
                Stage::Done => panic!("Enqueue polled after it completed"),
            }
        }
    }
}

impl<T: Send + 'static> fmt::Debug for Enqueue<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stage = match self.stage {
            Stage::Item(..) => "waiting for room",
            Stage::Syncing(..) => "waiting for durability",
            Stage::Done => "done",
        };
        f.debug_struct("Enqueue").field("stage", &stage).finish()
    }
}
