//! The hand-over between the batcher thread and async code: the batcher's [`Sink`] is a
//! [`BridgeSink`] that lends each batch to whoever polls [`Batches`] and waits (on its own
//! thread, never an executor's) for the verdict. Retries, backoff, partial failures and
//! dead letters stay with the batcher, so async delivery keeps the core semantics.

use std::collections::VecDeque;
use std::fmt;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use futures::Stream;
use parking_lot::{Condvar, Mutex};
use vinequeue_core::{Batch, DeadLetter, SendError, Sink};

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
pub(crate) fn channel<T>() -> (BridgeSink<T>, Batches<T>) {
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
        Batches { chan },
    )
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
#[derive(Debug)]
struct NoConsumer;

impl fmt::Display for NoConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "no consumer took the batch within send_timeout: spawn `Batches::deliver_to(sink)` \
             on an executor, or poll the `Batches` stream",
        )
    }
}

impl std::error::Error for NoConsumer {}

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
pub(crate) enum Event<T> {
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
pub struct Batches<T> {
    chan: Arc<Channel<T>>,
}

impl<T> Batches<T> {
    pub(crate) fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event<T>>> {
        self.poll_with(cx, true)
    }

    fn poll_with(&mut self, cx: &mut Context<'_>, letters: bool) -> Poll<Option<Event<T>>> {
        let mut slot = self.chan.slot.lock();
        if letters {
            if let Some(letter) = slot.dead_letters.pop_front() {
                drop(slot);
                self.chan.verdict.notify_all(); // room in the backlog
                return Poll::Ready(Some(Event::DeadLetter(letter)));
            }
        }
        if matches!(slot.state, State::Offered(_)) {
            let State::Offered(batch) = std::mem::replace(&mut slot.state, State::Taken) else {
                unreachable!("checked above");
            };
            return Poll::Ready(Some(Event::Batch(ReadyBatch {
                batch: Some(batch),
                chan: Arc::clone(&self.chan),
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
    /// time. At most 1024 wait here; beyond that the batcher waits up to 5 s for them to
    /// be taken, then discards the oldest (still counted in the metrics). A [`Delivery`](crate::Delivery) passes them to
    /// [`AsyncSink::on_dead_letter`](crate::AsyncSink::on_dead_letter) instead.
    pub fn take_dead_letters(&mut self) -> Vec<DeadLetter<T>> {
        let letters = self.chan.slot.lock().dead_letters.drain(..).collect();
        self.chan.verdict.notify_all(); // room in the backlog
        letters
    }
}

impl<T> Drop for Batches<T> {
    fn drop(&mut self) {
        self.chan.slot.lock().consumer_gone = true;
        self.chan.verdict.notify_all();
    }
}

impl<T> Stream for Batches<T> {
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

impl<T> fmt::Debug for Batches<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batches").finish_non_exhaustive()
    }
}

/// A batch taken from [`Batches`]: derefs to [`Batch`]. Say how it went with
/// [`ack`](ReadyBatch::ack) or [`fail`](ReadyBatch::fail); dropping it unanswered counts
/// as a retryable failure. The queue sends nothing else until then, and it does not time
/// out a batch held here: `send_timeout` is for the consumer to apply (see
/// [`Batch::deadline`]).
pub struct ReadyBatch<T> {
    batch: Option<Batch<T>>,
    chan: Arc<Channel<T>>,
}

/// The batch was dropped without an answer.
#[derive(Debug)]
struct DroppedUnanswered;

impl fmt::Display for DroppedUnanswered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the batch was dropped without ack() or fail() (a cancelled delivery?)")
    }
}

impl std::error::Error for DroppedUnanswered {}

impl<T> ReadyBatch<T> {
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
                self.chan.finish(Batch::default(), result);
                drop(batch);
            } else {
                self.chan.finish(batch, result);
            }
        }
    }
}

impl<T> Deref for ReadyBatch<T> {
    type Target = Batch<T>;

    fn deref(&self) -> &Batch<T> {
        self.batch.as_ref().expect("present until answered")
    }
}

impl<T> Drop for ReadyBatch<T> {
    fn drop(&mut self) {
        if let Some(batch) = self.batch.take() {
            self.chan
                .finish(batch, Err(SendError::retry(DroppedUnanswered)));
        }
    }
}

impl<T> fmt::Debug for ReadyBatch<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadyBatch")
            .field("len", &self.len())
            .field("seqs", &self.seqs())
            .field("attempt", &self.attempt())
            .finish()
    }
}
