//! The consumer side: [`Sink`], the [`Batch`] it receives, the [`SendError`] it returns, and
//! the [`DeadLetter`] it is handed when a batch cannot be delivered.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use std::ops::Deref;
use std::time::Instant;

/// Boxed error carried by [`SendError`].
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Where batches go: Kafka, a database, an HTTP API, anything.
///
/// The batcher thread calls [`send`](Sink::send) with one batch at a time, in sequence
/// order, and waits for its answer before it sends the next one. Closures are sinks:
///
/// ```
/// use vinequeue_core::{Batch, SendError, Sink};
///
/// fn takes_sink<S: Sink<String>>(_: S) {}
/// takes_sink(|batch: &Batch<String>| -> Result<(), SendError> {
///     for line in batch.iter() {
///         println!("{line}");
///     }
///     Ok(())
/// });
/// ```
///
/// A sink that panics is treated as a failed, retryable attempt; the queue keeps running.
pub trait Sink<T>: Send + 'static {
    /// Delivers `batch`, or says what went wrong and what to do next (see [`SendError`]).
    ///
    /// [`Batch::deadline`] is this attempt's deadline (`send_timeout` after it began):
    /// pass it on to the client library's own timeout. The batcher cannot interrupt a
    /// call that never returns; a sink that blocks past its deadline delays everything
    /// behind it.
    ///
    /// # Errors
    ///
    /// [`SendError::retry`] (or any `std::error::Error` through `?`), [`SendError::permanent`]
    /// or [`SendError::partial`].
    fn send(&mut self, batch: &Batch<T>) -> Result<(), SendError>;

    /// What the batcher calls: [`send`](Sink::send), with the batch lent mutably so that
    /// an adapter can move its items elsewhere (another thread, an async task) with
    /// `std::mem::take` and put them back before it returns. The default calls `send`.
    ///
    /// After a failure, an implementation must hand the batch back as it found it: the
    /// same items in the same order, since retries, partial failures and dead letters
    /// refer to them. After a success the batcher no longer needs the items, and the
    /// implementation may leave the batch empty (to free the items where it likes).
    ///
    /// # Errors
    ///
    /// As [`send`](Sink::send).
    fn send_mut(&mut self, batch: &mut Batch<T>) -> Result<(), SendError> {
        self.send(batch)
    }

    /// Receives a batch that will not be delivered: refused permanently, out of retries,
    /// or left over when `stop()` ran out of `shutdown_timeout`. The default does nothing
    /// (the items are still counted in `Metrics::dead_lettered_total` or `abandoned_total`).
    ///
    /// Closures can get a handler with [`SinkExt::with_dead_letter`]. A panic here is
    /// caught and ignored.
    fn on_dead_letter(&mut self, letter: DeadLetter<T>) {
        let _ = letter;
    }
}

impl<T, F> Sink<T> for F
where
    F: FnMut(&Batch<T>) -> Result<(), SendError> + Send + 'static,
{
    fn send(&mut self, batch: &Batch<T>) -> Result<(), SendError> {
        self(batch)
    }
}

/// A sink that accepts everything and does nothing: for docs, tests and benchmarks.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl<T> Sink<T> for NullSink {
    fn send(&mut self, _batch: &Batch<T>) -> Result<(), SendError> {
        Ok(())
    }
}

/// Adapters for any [`Sink`].
pub trait SinkExt<T>: Sink<T> + Sized {
    /// Adds a dead-letter handler to a sink (useful for closures, which cannot override
    /// [`Sink::on_dead_letter`]).
    ///
    /// ```
    /// use vinequeue_core::{Batch, DeadLetter, SendError, SinkExt};
    ///
    /// let sink = (|_: &Batch<u32>| Err::<(), _>(SendError::permanent("no such topic")))
    ///     .with_dead_letter(|letter: DeadLetter<u32>| {
    ///         eprintln!("giving up on {} item(s): {}", letter.len(), letter.error());
    ///     });
    /// # let _ = sink;
    /// ```
    fn with_dead_letter<F>(self, handler: F) -> WithDeadLetter<Self, F>
    where
        F: FnMut(DeadLetter<T>) + Send + 'static,
    {
        WithDeadLetter {
            sink: self,
            handler,
        }
    }
}

impl<T, S: Sink<T>> SinkExt<T> for S {}

/// A sink with a dead-letter handler; see [`SinkExt::with_dead_letter`].
#[derive(Debug)]
pub struct WithDeadLetter<S, F> {
    sink: S,
    handler: F,
}

impl<T, S, F> Sink<T> for WithDeadLetter<S, F>
where
    S: Sink<T>,
    F: FnMut(DeadLetter<T>) + Send + 'static,
{
    fn send(&mut self, batch: &Batch<T>) -> Result<(), SendError> {
        self.sink.send(batch)
    }

    fn send_mut(&mut self, batch: &mut Batch<T>) -> Result<(), SendError> {
        self.sink.send_mut(batch)
    }

    fn on_dead_letter(&mut self, letter: DeadLetter<T>) {
        (self.handler)(letter)
    }
}

/// A group of items handed to [`Sink::send`]. Derefs to `[T]`.
///
/// Every item carries a sequence number: unique, increasing within a queue, and the same
/// on every retry of that item and, with a log, on every replay after a restart, so a
/// sink can deduplicate on it. With a log a number is never handed out twice, also not
/// after a crash or a power cut that lost records before they were synced (the log
/// reserves numbers ahead in a synced checkpoint); numbers may have gaps, after a crash
/// or where records were lost. After a partial failure the retried batch holds only
/// the failed items, so its sequence numbers may have gaps too.
///
/// The key a sink deduplicates on is [`key`](Batch::key): `(queue id, number)`, where the
/// number is the one the item had when it was first enqueued. It is its sequence number,
/// except for an item dead-lettered and enqueued again
/// ([`redrive_dead_letters`](crate::Queue::redrive_dead_letters)), which gets a new
/// sequence number and keeps its key, so that a backend that had taken it before (a
/// commit whose reply was lost) recognises it.
pub struct Batch<T> {
    pub(crate) items: Vec<T>,
    pub(crate) seqs: Vec<u64>,
    /// Each item's key number; empty while every item's key is its sequence number.
    pub(crate) keys: Vec<u64>,
    pub(crate) queue_id: crate::QueueId,
    pub(crate) attempt: u32,
    pub(crate) deadline: Instant,
}

impl<T> Batch<T> {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Batch {
            items: Vec::with_capacity(capacity),
            seqs: Vec::with_capacity(capacity),
            keys: Vec::new(),
            queue_id: crate::QueueId::from_u128(0),
            attempt: 0,
            deadline: Instant::now(),
        }
    }

    pub(crate) fn push(&mut self, seq: u64, item: T) {
        debug_assert!(self.seqs.last().is_none_or(|&last| last < seq));
        self.seqs.push(seq);
        self.items.push(item);
        if !self.keys.is_empty() {
            self.keys.push(seq);
        }
    }

    /// Adds an item whose key number is `key` (`None`: its sequence number).
    pub(crate) fn push_keyed(&mut self, seq: u64, key: Option<u64>, item: T) {
        match key {
            Some(key) if key != seq => {
                debug_assert!(self.seqs.last().is_none_or(|&last| last < seq));
                if self.keys.is_empty() {
                    self.keys = self.seqs.clone();
                }
                self.seqs.push(seq);
                self.items.push(item);
                self.keys.push(key);
            }
            _ => self.push(seq, item),
        }
    }

    /// Keeps only the items at `indices` (sorted, deduplicated, in range).
    /// Keeps the items at `indices` (ascending) and returns the others, for the caller to
    /// drop (an item's `Drop` may panic: the batch stays whole whatever happens then).
    pub(crate) fn retain_indices(&mut self, indices: &[usize]) -> Vec<T> {
        let items = std::mem::take(&mut self.items);
        let seqs = std::mem::take(&mut self.seqs);
        let keys = std::mem::take(&mut self.keys);
        let mut keep = indices.iter().peekable();
        let mut removed = Vec::with_capacity(items.len().saturating_sub(indices.len()));
        for (i, (item, seq)) in items.into_iter().zip(seqs).enumerate() {
            if keep.next_if(|&&k| k == i).is_some() {
                self.items.push(item);
                self.seqs.push(seq);
                if let Some(&key) = keys.get(i) {
                    self.keys.push(key);
                }
            } else {
                removed.push(item);
            }
        }
        removed
    }

    /// Sequence number of the first item.
    ///
    /// # Panics
    ///
    /// Never for a batch handed to a sink (those are never empty).
    pub fn first_seq(&self) -> u64 {
        self.seqs[0]
    }

    /// Sequence number of the last item.
    ///
    /// # Panics
    ///
    /// Never for a batch handed to a sink (those are never empty).
    pub fn last_seq(&self) -> u64 {
        self.seqs[self.seqs.len() - 1]
    }

    /// Sequence number of item `i`.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`.
    pub fn seq(&self, i: usize) -> u64 {
        self.seqs[i]
    }

    /// All sequence numbers, in item order.
    pub fn seqs(&self) -> &[u64] {
        &self.seqs
    }

    /// The identity of the queue this batch comes from: with [`key`](Batch::key), what
    /// names an item uniquely across every queue writing into one backend. A durable
    /// queue's identity is kept in its log directory, so it survives restarts; a
    /// memory-only queue gets a fresh one per process.
    pub fn queue_id(&self) -> crate::QueueId {
        self.queue_id
    }

    /// The key a sink deduplicates item `i` on: `(queue id, the number the item had when
    /// it was first enqueued)`. The same on every retry, every replay after a restart,
    /// and after a dead letter is enqueued again (which gives it a new sequence number).
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`.
    pub fn key(&self, i: usize) -> (crate::QueueId, u64) {
        let number = self.keys.get(i).copied().unwrap_or(self.seqs[i]);
        (self.queue_id, number)
    }

    /// Items with their sequence numbers.
    pub fn iter_with_seq(&self) -> impl Iterator<Item = (u64, &T)> {
        self.seqs.iter().copied().zip(self.items.iter())
    }

    /// 0 for the first attempt at this batch, 1 for the first retry, and so on.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// When this attempt should give up: `send_timeout` after it began, or the end of
    /// `shutdown_timeout` if `stop()` is running and that comes first.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The items, giving up the sequence numbers.
    pub fn into_items(self) -> Vec<T> {
        self.items
    }
}

/// An empty batch (what `std::mem::take` leaves behind in [`Sink::send_mut`]).
impl<T> Default for Batch<T> {
    fn default() -> Self {
        Batch::with_capacity(0)
    }
}

impl<T> Deref for Batch<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.items
    }
}

impl<T: fmt::Debug> fmt::Debug for Batch<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("queue_id", &self.queue_id)
            .field("seqs", &self.seqs)
            .field("attempt", &self.attempt)
            .field("items", &self.items)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SendErrorKind {
    Retry,
    Permanent,
    Partial(Vec<usize>),
}

/// Why a send failed, and what the queue should do next.
///
/// Any `std::error::Error + Send + Sync` converts into a retryable `SendError`, so `?`
/// works inside a sink. `SendError` itself deliberately does not implement
/// `std::error::Error` (that would make the blanket conversion impossible); its
/// [`error`](SendError::error) is the underlying error.
pub struct SendError {
    pub(crate) kind: SendErrorKind,
    error: BoxError,
    /// The backend asked for no retry before this much time (`retry_after`).
    pub(crate) not_before: Option<std::time::Duration>,
}

impl SendError {
    /// What a panicking sink's attempt counts as: a retryable failure whose message
    /// carries the panic's message. `payload` is what `catch_unwind` returned.
    #[doc(hidden)] // adapter plumbing: see the `adapter` module
    pub fn from_panic(payload: Box<dyn std::any::Any + Send>) -> Self {
        let message: Cow<'static, str> = if let Some(s) = payload.downcast_ref::<&'static str>() {
            (*s).into()
        } else if let Ok(s) = payload.downcast::<String>() {
            (*s).into()
        } else {
            "non-string panic payload".into()
        };
        SendError::retry(SinkPanicked(message))
    }

    /// A transient failure: retry the whole batch after a backoff.
    pub fn retry(error: impl Into<BoxError>) -> Self {
        SendError {
            kind: SendErrorKind::Retry,
            error: error.into(),
            not_before: None,
        }
    }

    /// A transient failure the backend asked to retry no sooner than `wait` from now (an
    /// HTTP `Retry-After`, a broker's throttling hint): the next attempt waits for the
    /// longer of `wait` and the backoff's pause (and still at most until `stop()`'s
    /// deadline).
    pub fn retry_after(wait: std::time::Duration, error: impl Into<BoxError>) -> Self {
        let mut e = SendError::retry(error);
        e.not_before = Some(wait);
        e
    }

    /// The wait the backend asked for before the next attempt, if any (see
    /// [`retry_after`](SendError::retry_after)).
    pub fn not_before(&self) -> Option<std::time::Duration> {
        self.not_before
    }

    /// A failure that retrying cannot fix: dead-letter the batch at once.
    pub fn permanent(error: impl Into<BoxError>) -> Self {
        SendError {
            kind: SendErrorKind::Permanent,
            error: error.into(),
            not_before: None,
        }
    }

    /// Only the items at `failed_indices` (positions in the batch) failed: the others
    /// count as delivered, and only the failed ones are retried.
    ///
    /// Indices out of range are ignored; if none is left, the whole batch is retried
    /// (the queue never guesses that an item was delivered).
    pub fn partial(
        failed_indices: impl IntoIterator<Item = usize>,
        error: impl Into<BoxError>,
    ) -> Self {
        let mut failed: Vec<usize> = failed_indices.into_iter().collect();
        failed.sort_unstable();
        failed.dedup();
        SendError {
            kind: SendErrorKind::Partial(failed),
            error: error.into(),
            not_before: None,
        }
    }

    /// Whether this error asks for no retry.
    pub fn is_permanent(&self) -> bool {
        self.kind == SendErrorKind::Permanent
    }

    /// The failed positions of a partial failure.
    pub fn failed_indices(&self) -> Option<&[usize]> {
        match &self.kind {
            SendErrorKind::Partial(v) => Some(v),
            _ => None,
        }
    }

    /// The underlying error.
    pub fn error(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.error
    }

    /// The underlying error's message followed by its causes (each `source()`, joined
    /// with `": "`): what a dead letter reports.
    pub fn describe(&self) -> String {
        let mut text = self.error.to_string();
        let mut cause = self.error.source();
        while let Some(e) = cause {
            let next = e.to_string();
            // (Some errors repeat their source's message in their own.)
            if !text.ends_with(&next) {
                text.push_str(": ");
                text.push_str(&next);
            }
            cause = e.source();
        }
        text
    }

    /// The underlying error, owned.
    pub fn into_error(self) -> BoxError {
        self.error
    }
}

impl<E: StdError + Send + Sync + 'static> From<E> for SendError {
    fn from(error: E) -> Self {
        SendError::retry(error)
    }
}

impl fmt::Debug for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendError")
            .field("kind", &self.kind)
            .field("error", &self.error)
            .finish()
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            SendErrorKind::Retry => write!(f, "send failed (will retry): {}", self.error),
            SendErrorKind::Permanent => write!(f, "send failed permanently: {}", self.error),
            SendErrorKind::Partial(v) => {
                write!(f, "send failed for {} item(s): {}", v.len(), self.error)
            }
        }
    }
}

/// The error recorded when a sink panics.
#[derive(Debug)]
pub(crate) struct SinkPanicked(pub(crate) Cow<'static, str>);

impl fmt::Display for SinkPanicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sink panicked: {}", self.0)
    }
}

impl StdError for SinkPanicked {}

/// Why a batch was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// The sink returned [`SendError::permanent`].
    Permanent,
    /// The sink kept failing through `retry_limit` retries.
    RetriesExhausted,
    /// `stop()` ran out of `shutdown_timeout` before this batch was delivered (memory
    /// mode; with a write-ahead log such items stay in the log instead).
    Shutdown,
}

/// A batch the queue gave up on, handed to [`Sink::on_dead_letter`]. Derefs to the
/// [`Batch`], so the items and their sequence numbers are all there.
pub struct DeadLetter<T> {
    pub(crate) batch: Batch<T>,
    pub(crate) error: Option<SendError>,
    pub(crate) reason: DeadLetterReason,
}

impl<T> DeadLetter<T> {
    /// Why the batch was given up.
    pub fn reason(&self) -> DeadLetterReason {
        self.reason
    }

    /// The last error the sink returned, with its causes (see [`SendError::describe`]);
    /// for a batch given up at shutdown, why.
    pub fn error(&self) -> String {
        match &self.error {
            Some(e) => e.describe(),
            None => "shutdown_timeout ran out before delivery".to_owned(),
        }
    }

    /// The last error the sink returned, if there was one.
    pub fn send_error(&self) -> Option<&SendError> {
        self.error.as_ref()
    }

    /// The batch.
    pub fn batch(&self) -> &Batch<T> {
        &self.batch
    }

    /// The batch, owned.
    pub fn into_batch(self) -> Batch<T> {
        self.batch
    }
}

impl<T> Deref for DeadLetter<T> {
    type Target = Batch<T>;

    fn deref(&self) -> &Batch<T> {
        &self.batch
    }
}

impl<T: fmt::Debug> fmt::Debug for DeadLetter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetter")
            .field("reason", &self.reason)
            .field("error", &self.error)
            .field("batch", &self.batch)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_mark_makes_a_retryable_error() {
        fn sink_body() -> Result<(), SendError> {
            let n: u32 = "x".parse()?;
            let _ = n;
            Ok(())
        }
        let e = sink_body().unwrap_err();
        assert_eq!(e.kind, SendErrorKind::Retry);
        assert!(e.to_string().contains("will retry"));
    }

    #[test]
    fn a_dead_letter_reports_the_cause_chain_without_the_retry_wording() {
        #[derive(Debug)]
        struct Refused(std::io::Error);
        impl fmt::Display for Refused {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("insert into events failed")
            }
        }
        impl StdError for Refused {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let e = SendError::retry(Refused(std::io::Error::other("connection refused")));
        let letter = DeadLetter {
            batch: Batch::<u8>::with_capacity(0),
            error: Some(e),
            reason: DeadLetterReason::RetriesExhausted,
        };
        assert_eq!(
            letter.error(),
            "insert into events failed: connection refused"
        );
    }

    #[test]
    fn partial_sorts_and_dedups() {
        let e = SendError::partial([3, 1, 3], "two failed");
        assert_eq!(e.failed_indices(), Some(&[1, 3][..]));
        assert!(!e.is_permanent());
        assert!(SendError::permanent("nope").is_permanent());
    }

    #[test]
    fn retain_indices_keeps_items_and_seqs_together() {
        let mut b = Batch::with_capacity(4);
        for (seq, item) in [(10, 'a'), (11, 'b'), (12, 'c'), (13, 'd')] {
            b.push(seq, item);
        }
        b.retain_indices(&[1, 3]);
        assert_eq!(&*b, &['b', 'd']);
        assert_eq!(b.seqs(), &[11, 13]);
        assert_eq!((b.first_seq(), b.last_seq(), b.seq(1)), (11, 13, 13));
    }
}
