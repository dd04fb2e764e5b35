//! [`AsyncSink`] and the [`Delivery`] future that drives one on the user's executor.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::{select, Either, FutureExt};
use vinequeue_core::{Batch, DeadLetter, SendError};

use crate::bridge::{Batches, Outgoing};
use crate::timer::Sleep;

/// Where batches go, asynchronously: an HTTP API, a database client, a Kafka producer.
///
/// A [`Delivery`] future (from [`Batches::deliver_to`]) calls [`send`](AsyncSink::send)
/// with one batch at a time, in sequence order, and awaits it before the next. The
/// batcher's semantics are the same as for a blocking [`Sink`](vinequeue_core::Sink):
/// a `send` that does not complete within `send_timeout` is dropped and counts as a
/// retryable failure; [`SendError`] says whether to retry, give up, or retry only some
/// items; a panic in `send` counts as a retryable failure.
///
/// ```
/// use vinequeue_async::AsyncSink;
/// use vinequeue_core::{Batch, SendError};
///
/// struct Printer;
///
/// impl AsyncSink<String> for Printer {
///     async fn send(&mut self, batch: &Batch<String>) -> Result<(), SendError> {
///         for line in batch.iter() {
///             println!("{line}");
///         }
///         Ok(())
///     }
/// }
/// ```
///
/// Closures returning a `'static` future are sinks too (they cannot borrow the batch
/// across the `.await`: take what the request needs first).
pub trait AsyncSink<T>: Send + 'static {
    /// Delivers `batch`, or says what went wrong and what to do next.
    fn send(&mut self, batch: &Batch<T>) -> impl Future<Output = Result<(), SendError>> + Send;

    /// Receives a batch that will not be delivered (refused permanently, out of retries,
    /// or left over when `stop()` ran out of time). The default does nothing.
    ///
    /// The delivery future calls it before it takes the next batch. (With a log, the
    /// batcher thread hands dead letters over without waiting for this call, up to 1024
    /// at a time; beyond that it waits up to 5 s for the delivery future to catch up.)
    fn on_dead_letter(&mut self, letter: DeadLetter<T>) -> impl Future<Output = ()> + Send {
        drop(letter);
        std::future::ready(())
    }
}

impl<T, F, Fut> AsyncSink<T> for F
where
    F: FnMut(&Batch<T>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), SendError>> + Send + 'static,
{
    fn send(&mut self, batch: &Batch<T>) -> impl Future<Output = Result<(), SendError>> + Send {
        self(batch)
    }
}

/// Times the delivery task yields and looks for the next batch again before it sleeps,
/// when batches come from the batcher thread (durable mode). When the task runs the
/// batcher itself (memory mode), it sleeps at once: producers wake it from inside the
/// executor, which runs it next on their own worker thread (where the items they
/// allocated are then freed), where a task that kept itself awake would stay on another.
const LOOKS_BEFORE_SLEEP: u32 = 64;

/// `send` did not complete within `send_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the sink's send did not complete within send_timeout")]
struct SendTimedOut;

impl<T: Send + Sync + 'static> Batches<T> {
    /// A future that delivers every batch to `sink`: spawn it on any executor. It ends
    /// once the queue has stopped and its batcher has finished with the last batch.
    ///
    /// If it is dropped before that, the batch it was sending counts as a retryable
    /// failure, and so does every later attempt, at once (nobody can take a batch any
    /// more): batches are dead-lettered once out of retries (with a log, into the
    /// dead-letter log, where `redrive_dead_letters` finds them).
    ///
    /// `T: Sync` because the batch is lent to `send` across `.await`s of a future that
    /// may move between threads.
    pub fn deliver_to<S: AsyncSink<T>>(self, sink: S) -> Delivery {
        Delivery {
            inner: Box::pin(run(self, sink)),
        }
    }
}

async fn run<T: Send + Sync + 'static, S: AsyncSink<T>>(mut batches: Batches<T>, mut sink: S) {
    let max_looks = if batches.is_driven() {
        0
    } else {
        LOOKS_BEFORE_SLEEP
    };
    loop {
        // Under load the next batch is microseconds away: look again a few times (giving
        // the executor back in between) before sleeping, so that the batcher thread
        // rarely has to wake this task from another thread.
        let mut looks = 0;
        let event = std::future::poll_fn(|cx| match batches.poll_event(cx) {
            Poll::Pending if looks < max_looks => {
                looks += 1;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            ready => ready,
        })
        .await;
        match event {
            None => return,
            Some(Outgoing::DeadLetter(letter)) => {
                // A panic in the handler is ignored, as with a blocking sink.
                // (Inside `async`, so that a panic while creating the future is caught too.)
                let _ = AssertUnwindSafe(async { sink.on_dead_letter(letter).await })
                    .catch_unwind()
                    .await;
            }
            Some(Outgoing::Batch(ready)) => {
                let deadline = ready.deadline();
                // A panic while `send` builds its future counts like one while it runs.
                let sending = AssertUnwindSafe(async { sink.send(&ready).await }).catch_unwind();
                let result = match select(Box::pin(sending), Sleep::until(deadline)).await {
                    Either::Left((Ok(result), _)) => result,
                    Either::Left((Err(panic), _)) => Err(SendError::from_panic(panic)),
                    Either::Right(((), _)) => Err(SendError::retry(SendTimedOut)),
                };
                ready.finish(result);
            }
        }
    }
}

/// The future that drives an [`AsyncSink`]; see [`Batches::deliver_to`]. `Send`, so it
/// can be spawned on a multi-threaded executor; it completes when the queue has stopped.
#[must_use = "a Delivery does nothing unless spawned or awaited"]
pub struct Delivery {
    inner: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Future for Delivery {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery").finish_non_exhaustive()
    }
}
