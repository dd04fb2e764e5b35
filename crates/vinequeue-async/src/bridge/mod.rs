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

mod bridged;
mod driven;

pub(crate) use bridged::channel;
use bridged::*;
pub(crate) use driven::letter_box;
use driven::*;

/// What the consumer end yields.
pub(crate) enum Outgoing<T: Send + 'static> {
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
#[must_use = "nothing is delivered unless the batches are consumed (deliver_to, or the Stream)"]
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

    pub(crate) fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Outgoing<T>>> {
        self.poll_with(cx, true)
    }

    fn poll_with(&mut self, cx: &mut Context<'_>, letters: bool) -> Poll<Option<Outgoing<T>>> {
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
                return Poll::Ready(Some(Outgoing::DeadLetter(letter)));
            }
        }
        if matches!(slot.state, State::Offered(_)) {
            let State::Offered(batch) = std::mem::replace(&mut slot.state, State::Taken) else {
                unreachable!("checked above");
            };
            return Poll::Ready(Some(Outgoing::Batch(ReadyBatch {
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
    ) -> Poll<Option<Outgoing<T>>> {
        loop {
            if letters {
                if let Some(letter) = d.letters.letters.lock().pop_front() {
                    return Poll::Ready(Some(Outgoing::DeadLetter(letter)));
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
                    return Poll::Ready(Some(Outgoing::Batch(ReadyBatch {
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
            Poll::Ready(Some(Outgoing::Batch(batch))) => Poll::Ready(Some(batch)),
            Poll::Ready(Some(Outgoing::DeadLetter(_))) => unreachable!("not asked for"),
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
#[must_use = "answer the batch with ack or fail; dropped unanswered it counts as a failed attempt"]
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
