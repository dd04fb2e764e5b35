//! The core of VineQueue: a batching queue between many producers and one [`Sink`].
//!
//! Producers on any thread call [`Queue::enqueue`]; items wait in a lock-free bounded ring;
//! a batcher thread groups them into [`Batch`]es of at most `batch_size` (or fewer once
//! `flush_timeout` has passed since the oldest arrived) and hands each to the sink, with
//! retries, exponential backoff with jitter, partial failures and dead letters.
//!
//! Most users depend on the facade crate `vinequeue`, which re-exports everything here.
//!
//! ```
//! use std::time::Duration;
//! use vinequeue_core::{Batch, Config, Queue, SendError};
//!
//! let config = Config::default().batch_size(100).flush_timeout(Duration::from_millis(50));
//! let queue = Queue::new(config, |batch: &Batch<String>| -> Result<(), SendError> {
//!     // write the batch to Kafka, a database, an HTTP API...
//!     assert!(batch.len() <= 100);
//!     Ok(())
//! })?;
//! queue.start()?;
//! for i in 0..1_000 {
//!     queue.enqueue(format!("event {i}"))?;
//! }
//! queue.stop()?; // delivers everything still buffered
//! assert_eq!(queue.metrics().sent_total, 1_000);
//! # Ok::<(), vinequeue_core::Error>(())
//! ```
//!
//! # Delivery guarantees
//!
//! * Every item accepted by `enqueue` is handed to the sink until it succeeds, or to
//!   [`Sink::on_dead_letter`] (permanent error, retries exhausted, or `stop()` out of
//!   time), or counted as dropped under `DropOldest` / `DropNewest`. Nothing disappears
//!   without a trace in [`Metrics`].
//! * Batches are sent one at a time, in sequence order. A retry resends the same items
//!   with the same sequence numbers.
//! * A sink that panics counts as a failed attempt; the queue keeps going.
//!
//! In memory mode (no `wal_path`) items live only in the process: a crash loses what is
//! buffered. Durability comes with the write-ahead log.
#![warn(missing_debug_implementations)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

/// A `tracing` event (feature `tracing`); without the feature, nothing, its arguments
/// not even evaluated.
macro_rules! event {
    ($level:ident, $($arg:tt)+) => {
        #[cfg(feature = "tracing")]
        {
            tracing::$level!(target: "vinequeue", $($arg)+);
        }
    };
}

mod batcher;
mod codec;
mod config;
#[cfg(feature = "serde")]
mod config_file;
mod dead;
mod driver;
mod error;
#[cfg(feature = "metrics")]
mod export;
mod lifecycle;
#[cfg(feature = "wal")]
mod logs;
mod loom;
mod metrics;
mod queue;
mod retry;
mod ring;
mod shared;
mod sink;
mod wake;

/// The conformance suite for [`Storage`] implementations (feature `testing`): see
/// `vinequeue_storage::testing`.
#[cfg(feature = "testing")]
pub mod testing {
    pub use vinequeue_storage::testing::*;
}

#[cfg(all(test, loom))]
mod loom_ring;
#[cfg(all(test, loom))]
mod loom_wake;

pub use crate::config::{
    Config, DeadLetterFull, OverflowPolicy, RecoveryMode, SyncMode, MAX_MEMORY_SIZE,
    MIN_DEAD_LETTER_SIZE,
};
pub use crate::dead::StoredDeadLetter;

/// Hooks for adapter authors: what an adapter such as `vinequeue-async` needs to run the
/// queue without threads of its own. Using the queue never needs them, and they may
/// change between minor versions.
///
/// * [`BatchDriver`](adapter::BatchDriver) and [`Next`](adapter::Next): take the batcher's work out of its thread
///   (`Queue::drive_externally`), so that whoever consumes the batches runs it.
/// * `Queue::try_enqueue` (never waits; returns the sequence number),
///   `Queue::register_waker` / `Queue::unregister_waker` (wake a task when room, progress
///   or a stop happens), `Queue::request_flush` / `Queue::flushed` (a flush in two steps),
///   `Queue::encoded_copy` (an item as it comes back from the log), and
///   `SendError::from_panic`.
///
/// These methods are hidden from the queue's documentation page; their own docs are in
/// the source.
pub mod adapter {
    pub use crate::driver::{BatchDriver, Next};
}
pub use crate::error::{EnqueueError, Error};
#[cfg(feature = "wal")]
pub use crate::logs::DEAD_LETTER_DIR;
pub use crate::metrics::{FlushReport, Metrics};
pub use crate::queue::Queue;
pub use crate::sink::{
    Batch, BoxError, DeadLetter, DeadLetterReason, NullSink, SendError, Sink, SinkExt,
    WithDeadLetter,
};
pub use vinequeue_storage::{
    CodecError, MemStorage, ParseQueueIdError, QueueId, RecoveryReport, Storage,
};

#[cfg(test)]
mod static_checks {
    fn assert_send_sync<X: Send + Sync>() {}

    #[test]
    fn queue_is_send_and_sync() {
        assert_send_sync::<crate::Queue<String>>();
        assert_send_sync::<crate::Queue<Vec<u8>>>();
    }
}
