//! Where async code gets its batches. Two ways, the same core semantics (batching,
//! retries, backoff, partial failures, dead letters, shutdown):
//!
//! * In memory mode the consumer runs the batcher itself, through the core's
//!   [`BatchDriver`]: polling [`Batches`] forms the next batch from the ring in the
//!   polling task, and answering a [`ReadyBatch`] resolves it there. No thread sits
//!   between producers and the sink, and every wake-up stays inside the executor.
//! * With a log the batcher keeps its thread (it reads the log back, acknowledges and
//!   syncs, which is file I/O), and its [`Sink`] is a [`BridgeSink`] that lends each
//!   batch to whoever polls [`Batches`] and waits (on its own thread, never an
//!   executor's) for the verdict.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use futures::Stream;
use parking_lot::{Condvar, Mutex};
use vinequeue_core::adapter::{BatchDriver, Next};
use vinequeue_core::{Batch, DeadLetter, SendError, Sink};

use crate::timer::Sleep;

/// Most dead letters waiting for the consumer. When it is reached the batcher waits (up
/// to `DEAD_LETTER_WAIT`) for the consumer to take some; only then, or with no consumer
/// left, is the oldest discarded (still counted in the metrics, and kept in the
/// dead-letter log of a durable queue).
const DEAD_LETTER_BACKLOG: usize = 1024;

/// Longest the batcher waits for room in the dead-letter backlog.
const DEAD_LETTER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

enum State<T> {
    /// No batch in hand.
    Idle,
    /// A batch waits for a consumer.
    Offered(Batch<T>),
    /// A consumer holds the batch.
    Taken,
    /// The consumer's verdict, for the batcher.
    Done(Batch<T>, Result<(), SendError>),
}

struct Slot<T> {
    state: State<T>,
    dead_letters: VecDeque<DeadLetter<T>>,
    /// The batcher is gone (the queue stopped, or was dropped): no more batches.
    closed: bool,
    /// The `Batches` end was dropped: nobody will take anything any more.
    consumer_gone: bool,
    consumer: Option<Waker>,
}

pub(crate) struct Channel<T> {
    slot: Mutex<Slot<T>>,
    /// The batcher waits here for a verdict, or for room in the dead-letter backlog.
    verdict: Condvar,
}

impl<T> Channel<T> {
    fn wake_consumer(mut slot: parking_lot::MutexGuard<'_, Slot<T>>) {
        let waker = slot.consumer.take();
        drop(slot);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn finish(&self, batch: Batch<T>, result: Result<(), SendError>) {
        let mut slot = self.slot.lock();
        slot.state = State::Done(batch, result);
        drop(slot);
        self.verdict.notify_all();
    }
}

/// Creates the two ends: the sink for the core queue and the stream for async code.
pub(crate) fn channel<T: Send + 'static>() -> (BridgeSink<T>, Batches<T>) {
    let chan = Arc::new(Channel {
        slot: Mutex::new(Slot {
            state: State::Idle,
            dead_letters: VecDeque::new(),
            closed: false,
            consumer_gone: false,
            consumer: None,
        }),
        verdict: Condvar::new(),
    });
    (
        BridgeSink {
            chan: Arc::clone(&chan),
        },
        Batches {
            src: Source::Bridge(chan),
            sleep: None,
        },
    )
}

/// For a queue whose batcher the consumer drives itself (memory mode): the queue's sink,
/// which keeps the dead letters for the consumer, and a `Batches` waiting for the
/// driver (see [`Batches::driven`]).
pub(crate) fn letter_box<T>() -> (LetterSink<T>, Arc<LetterBox<T>>) {
    let letters = Arc::new(LetterBox {
        letters: Mutex::new(VecDeque::new()),
        consumer_gone: AtomicBool::new(false),
    });
    (
        LetterSink {
            letters: Arc::clone(&letters),
        },
        letters,
    )
}

/// Dead letters of a driven queue, waiting for the consumer. They are produced while the
/// consumer polls (it runs the batcher), so they are not capped: a `Delivery` hands each
/// to `on_dead_letter` before its next batch, and a stream consumer takes them with
/// `take_dead_letters`.
pub(crate) struct LetterBox<T> {
    letters: Mutex<VecDeque<DeadLetter<T>>>,
    /// The consumer end is gone: nobody will ever take a letter.
    consumer_gone: AtomicBool,
}

/// The sink of a driven queue: the consumer sends the batches itself, so this only keeps
/// the dead letters for it. Its `send` is used only by a batcher left without a
/// consumer: every attempt fails at once.
pub(crate) struct LetterSink<T> {
    letters: Arc<LetterBox<T>>,
}

/// The `Batches` end of a queue was dropped: no task takes batches any more.
#[derive(Debug, thiserror::Error)]
#[error("the Batches end of the queue was dropped: nothing takes batches any more")]
struct ConsumerGone;

impl<T: Send + 'static> Sink<T> for LetterSink<T> {
    fn send(&mut self, _batch: &Batch<T>) -> Result<(), SendError> {
        Err(SendError::retry(ConsumerGone))
    }

    fn on_dead_letter(&mut self, letter: DeadLetter<T>) {
        // With no consumer left the letter has nowhere to go (it is counted in the
        // metrics all the same).
        if !self.letters.consumer_gone.load(SeqCst) {
            self.letters.letters.lock().push_back(letter);
        }
    }
}

/// The consumer end of a driven queue: the consumer runs the batcher itself.
pub(crate) struct Driven<T: Send + 'static> {
    driver: BatchDriver<T>,
    letters: Arc<LetterBox<T>>,
    /// A `ReadyBatch` is out, not answered yet.
    out: AtomicBool,
    /// Woken when that batch is answered (a stream consumer polling meanwhile).
    consumer: Mutex<Option<Waker>>,
}

impl<T: Send + 'static> Drop for Driven<T> {
    fn drop(&mut self) {
        // (Its `BatchDriver`, dropped next, moves the batcher to a thread of its own.)
        self.letters.consumer_gone.store(true, SeqCst);
        self.letters.letters.lock().clear();
    }
}

impl<T: Send + 'static> Driven<T> {
    fn answer(&self, batch: Batch<T>, result: Result<(), SendError>) {
        self.driver.sent(batch, result);
        self.out.store(false, SeqCst);
        let waker = self.consumer.lock().take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The sink the batcher thread calls; see the module documentation.
pub(crate) struct BridgeSink<T> {
    chan: Arc<Channel<T>>,
}

/// Rounds of spinning, then yielding, before the batcher thread sleeps waiting for a
/// verdict: a consumer that answers within microseconds then costs no thread wake-up.
const SPIN_BEFORE_WAIT: u32 = 40;

fn spin(step: u32) {
    if step < 8 {
        for _ in 0..(1u32 << step) {
            std::hint::spin_loop();
        }
    } else {
        std::thread::yield_now();
    }
}

/// Nobody took a batch within its `send_timeout`.
#[derive(Debug, thiserror::Error)]
#[error(
    "no consumer took the batch within send_timeout: spawn `Batches::deliver_to(sink)` \
         on an executor, or poll the `Batches` stream"
)]
struct NoConsumer;

impl<T: Send + 'static> Sink<T> for BridgeSink<T> {
    fn send(&mut self, _batch: &Batch<T>) -> Result<(), SendError> {
        // The batcher calls `send_mut`; a batch lent immutably cannot be handed over.
        Err(SendError::retry(NoConsumer))
    }

    fn send_mut(&mut self, batch: &mut Batch<T>) -> Result<(), SendError> {
        let deadline = batch.deadline();
        let mut slot = self.chan.slot.lock();
        slot.state = State::Offered(std::mem::take(batch));
        Channel::wake_consumer(slot);
        self.wait_verdict(batch, deadline)
    }

    fn on_dead_letter(&mut self, letter: DeadLetter<T>) {
        let mut slot = self.chan.slot.lock();
        let give_up = Instant::now() + DEAD_LETTER_WAIT;
        while slot.dead_letters.len() >= DEAD_LETTER_BACKLOG && !slot.consumer_gone {
            if self.chan.verdict.wait_until(&mut slot, give_up).timed_out() {
                break;
            }
        }
        if slot.dead_letters.len() >= DEAD_LETTER_BACKLOG {
            slot.dead_letters.pop_front();
        }
        slot.dead_letters.push_back(letter);
        Channel::wake_consumer(slot);
    }
}

impl<T> BridgeSink<T> {
    /// Waits for the consumer's verdict on the offered batch and puts the batch back.
    /// A batch nobody took by its deadline is taken back as a retryable failure; one a
    /// consumer holds is waited for (the consumer applies `send_timeout`).
    fn wait_verdict(&self, batch: &mut Batch<T>, deadline: Instant) -> Result<(), SendError> {
        let mut slot = self.chan.slot.lock();
        let mut step = 0;
        loop {
            match std::mem::replace(&mut slot.state, State::Idle) {
                State::Done(back, result) => {
                    *batch = back;
                    return result;
                }
                State::Offered(back) if slot.consumer_gone || Instant::now() >= deadline => {
                    // Out of time, or the `Batches` end is gone and nobody can ever
                    // take it: a failed attempt.
                    *batch = back;
                    return Err(SendError::retry(NoConsumer));
                }
                state => {
                    let taken = matches!(state, State::Taken);
                    slot.state = state;
                    if step < SPIN_BEFORE_WAIT {
                        step += 1;
                        parking_lot::MutexGuard::unlocked(&mut slot, || spin(step));
                    } else if taken {
                        self.chan.verdict.wait(&mut slot);
                    } else {
                        self.chan.verdict.wait_until(&mut slot, deadline);
                    }
                }
            }
        }
    }
}

impl<T> Drop for BridgeSink<T> {
    fn drop(&mut self) {
        let mut slot = self.chan.slot.lock();
        slot.closed = true;
        Channel::wake_consumer(slot);
    }
}

/// What the consumer end yields.
pub(crate) enum Event<T: Send + 'static> {
    Batch(ReadyBatch<T>),
    DeadLetter(DeadLetter<T>),
}

/// The batches of an [`AsyncQueue`](crate::AsyncQueue), ready to send: a
/// [`Stream`] of [`ReadyBatch`]es for code that drives sending itself, or, through
/// [`deliver_to`](Batches::deliver_to), the input of a [`Delivery`](crate::Delivery)
/// future that hands them to an [`AsyncSink`](crate::AsyncSink).
///
/// One batch is out at a time: the next comes once the current one is acknowledged,
/// failed or dropped. The stream ends when the queue has stopped and delivered (or given
/// up on) everything.
pub struct Batches<T: Send + 'static> {
    src: Source<T>,
    /// A driven queue's wait for its flush timeout or a retry's backoff.
    sleep: Option<Sleep>,
}

enum Source<T: Send + 'static> {
    /// Batches come from the batcher thread through the hand-over.
    Bridge(Arc<Channel<T>>),
    /// The consumer runs the batcher.
    Driven(Arc<Driven<T>>),
}

impl<T: Send + 'static> Batches<T> {
    /// The consumer end of a queue whose batcher it drives (`Queue::drive_externally`).
    pub(crate) fn driven(driver: BatchDriver<T>, letters: Arc<LetterBox<T>>) -> Self {
        Batches {
            src: Source::Driven(Arc::new(Driven {
                driver,
                letters,
                out: AtomicBool::new(false),
                consumer: Mutex::new(None),
            })),
            sleep: None,
        }
    }

    /// Whether the consumer runs the batcher (no batcher thread).
    pub(crate) fn is_driven(&self) -> bool {
        matches!(self.src, Source::Driven(_))
    }

    pub(crate) fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event<T>>> {
        self.poll_with(cx, true)
    }

    fn poll_with(&mut self, cx: &mut Context<'_>, letters: bool) -> Poll<Option<Event<T>>> {
        let chan = match &self.src {
            Source::Bridge(chan) => chan,
            Source::Driven(d) => {
                let d = Arc::clone(d);
                return self.poll_driven(&d, cx, letters);
            }
        };
        let mut slot = chan.slot.lock();
        if letters {
            if let Some(letter) = slot.dead_letters.pop_front() {
                drop(slot);
                chan.verdict.notify_all(); // room in the backlog
                return Poll::Ready(Some(Event::DeadLetter(letter)));
            }
        }
        if matches!(slot.state, State::Offered(_)) {
            let State::Offered(batch) = std::mem::replace(&mut slot.state, State::Taken) else {
                unreachable!("checked above");
            };
            return Poll::Ready(Some(Event::Batch(ReadyBatch {
                batch: Some(batch),
                to: Answer::Bridge(Arc::clone(chan)),
            })));
        }
        if slot.closed && !matches!(slot.state, State::Taken) {
            return Poll::Ready(None);
        }
        match &mut slot.consumer {
            Some(w) => w.clone_from(cx.waker()),
            None => slot.consumer = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Dead letters handed over by the batcher since the last call: batches refused
    /// permanently, out of retries, or (memory mode) left over when `stop()` ran out of
    /// time. A [`Delivery`](crate::Delivery) passes them to
    /// [`AsyncSink::on_dead_letter`](crate::AsyncSink::on_dead_letter) instead.
    ///
    /// In memory mode they are produced while this end is polled (its owner runs the
    /// batcher) and wait here until taken. With a log, at most 1024 wait here; beyond
    /// that the batcher waits up to 5 s for them to be taken, then discards the oldest
    /// (still counted in the metrics, and kept in the dead-letter log).
    pub fn take_dead_letters(&mut self) -> Vec<DeadLetter<T>> {
        match &self.src {
            Source::Bridge(chan) => {
                let letters = chan.slot.lock().dead_letters.drain(..).collect();
                chan.verdict.notify_all(); // room in the backlog
                letters
            }
            Source::Driven(d) => d.letters.letters.lock().drain(..).collect(),
        }
    }

    /// Runs the batcher until it has a batch (or a dead letter) for the consumer, or must
    /// wait.
    fn poll_driven(
        &mut self,
        d: &Arc<Driven<T>>,
        cx: &mut Context<'_>,
        letters: bool,
    ) -> Poll<Option<Event<T>>> {
        loop {
            if letters {
                if let Some(letter) = d.letters.letters.lock().pop_front() {
                    return Poll::Ready(Some(Event::DeadLetter(letter)));
                }
            }
            if d.out.load(SeqCst) {
                // The batch out must be answered first.
                *d.consumer.lock() = Some(cx.waker().clone());
                if d.out.load(SeqCst) {
                    return Poll::Pending;
                }
            }
            let letters_waiting = || letters && !d.letters.letters.lock().is_empty();
            match d.driver.next(cx.waker()) {
                Next::Send(batch) => {
                    d.out.store(true, SeqCst);
                    return Poll::Ready(Some(Event::Batch(ReadyBatch {
                        batch: Some(batch),
                        to: Answer::Driven(Arc::clone(d)),
                    })));
                }
                Next::Wait(_) | Next::Done if letters_waiting() => continue,
                Next::Wait(None) => {
                    self.sleep = None;
                    return Poll::Pending;
                }
                Next::Wait(Some(until)) => {
                    let sleep = match &mut self.sleep {
                        Some(s) if s.deadline() == until => s,
                        other => other.insert(Sleep::until(until)),
                    };
                    if Pin::new(sleep).poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    self.sleep = None;
                }
                Next::Done => return Poll::Ready(None),
            }
        }
    }
}

impl<T: Send + 'static> Drop for Batches<T> {
    fn drop(&mut self) {
        // (A driven queue's batcher moves to a thread of its own once the last handle to
        // its driver, this or a batch out, is gone.)
        if let Source::Bridge(chan) = &self.src {
            chan.slot.lock().consumer_gone = true;
            chan.verdict.notify_all();
        }
    }
}

impl<T: Send + 'static> Stream for Batches<T> {
    type Item = ReadyBatch<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ReadyBatch<T>>> {
        match self.get_mut().poll_with(cx, false) {
            Poll::Ready(Some(Event::Batch(batch))) => Poll::Ready(Some(batch)),
            Poll::Ready(Some(Event::DeadLetter(_))) => unreachable!("not asked for"),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: Send + 'static> fmt::Debug for Batches<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batches").finish_non_exhaustive()
    }
}

/// A batch taken from [`Batches`]: derefs to [`Batch`]. Say how it went with
/// [`ack`](ReadyBatch::ack) or [`fail`](ReadyBatch::fail); dropping it unanswered counts
/// as a retryable failure. The queue sends nothing else until then, and it does not time
/// out a batch held here: `send_timeout` is for the consumer to apply (see
/// [`Batch::deadline`]).
pub struct ReadyBatch<T: Send + 'static> {
    batch: Option<Batch<T>>,
    to: Answer<T>,
}

/// Where a batch's verdict goes.
enum Answer<T: Send + 'static> {
    Bridge(Arc<Channel<T>>),
    Driven(Arc<Driven<T>>),
}

impl<T: Send + 'static> Answer<T> {
    fn finish(&self, batch: Batch<T>, result: Result<(), SendError>) {
        match self {
            Answer::Bridge(chan) => chan.finish(batch, result),
            Answer::Driven(d) => d.answer(batch, result),
        }
    }
}

/// The batch was dropped without an answer.
#[derive(Debug, thiserror::Error)]
#[error("the batch was dropped without ack() or fail() (a cancelled delivery?)")]
struct DroppedUnanswered;

impl<T: Send + 'static> ReadyBatch<T> {
    /// The batch was delivered: its records are acknowledged (and trimmed from the log).
    pub fn ack(self) {
        self.finish(Ok(()));
    }

    /// The batch was not delivered: [`SendError::retry`], [`SendError::permanent`] or
    /// [`SendError::partial`] say what the queue does next, as for a [`Sink`].
    pub fn fail(self, error: SendError) {
        self.finish(Err(error));
    }

    /// [`ack`](ReadyBatch::ack) or [`fail`](ReadyBatch::fail) from a result.
    pub fn finish(mut self, result: Result<(), SendError>) {
        if let Some(batch) = self.batch.take() {
            if result.is_ok() {
                // The batcher needs the items back only to retry them: delivered ones
                // are freed here, on the consumer's thread, after the batcher has its
                // answer.
                self.to.finish(Batch::default(), result);
                drop(batch);
            } else {
                self.to.finish(batch, result);
            }
        }
    }
}

impl<T: Send + 'static> Deref for ReadyBatch<T> {
    type Target = Batch<T>;

    fn deref(&self) -> &Batch<T> {
        self.batch.as_ref().expect("present until answered")
    }
}

impl<T: Send + 'static> Drop for ReadyBatch<T> {
    fn drop(&mut self) {
        if let Some(batch) = self.batch.take() {
            self.to
                .finish(batch, Err(SendError::retry(DroppedUnanswered)));
        }
    }
}

impl<T: Send + 'static> fmt::Debug for ReadyBatch<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadyBatch")
            .field("len", &self.len())
            .field("seqs", &self.seqs())
            .field("attempt", &self.attempt())
            .finish()
    }
}
