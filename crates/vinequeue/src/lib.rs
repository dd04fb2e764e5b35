#![doc = include_str!("../../../README.md")]
#![deny(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::ops::Deref;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use vinequeue_core::*;

/// The write-ahead log: segment files of CRC32C-framed records behind [`Storage`]
/// (feature `wal`, on by default). See the `vinequeue-wal` crate.
#[cfg(feature = "wal")]
pub mod wal {
    pub use vinequeue_wal::*;
}

#[cfg(feature = "wal")]
pub use vinequeue_wal::{Wal, WalOptions};

#[cfg(feature = "wal")]
pub use vinequeue_wal::{QueueLogs, DEAD_LETTER_DIR};

/// The runtime-agnostic async adapter (feature `async`): [`AsyncQueue`], [`AsyncSink`],
/// the [`Batches`](vinequeue_async::Batches) stream. See the `vinequeue-async` crate.
#[cfg(feature = "async")]
pub mod r#async {
    pub use vinequeue_async::*;
}

#[cfg(feature = "async")]
pub use vinequeue_async::{AsyncQueue, AsyncSink};

/// A batching queue; see [`vinequeue_core::Queue`] for every method (this type derefs to
/// it). The difference is [`Queue::new`]: with `wal_path` set it opens the write-ahead
/// log (and a dead-letter log beside it) and recovers what is there.
pub struct Queue<T: Send + 'static>(vinequeue_core::Queue<T>);

impl<T> Queue<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    /// Creates a queue delivering to `sink`: memory only, or durable when
    /// [`Config::wal_path`] is set (feature `wal`). A durable queue recovers the log in
    /// `wal_path` and delivers its unacknowledged records first on `start()`, with their
    /// original sequence numbers; dead-lettered items are kept in `wal_path/dead-letters`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid configuration; with a log, [`Error::Locked`] if
    /// another queue holds the directory, [`Error::Corrupt`] under
    /// [`RecoveryMode::Strict`], [`Error::Io`].
    pub fn new<S: Sink<T>>(config: Config, sink: S) -> Result<Self, Error> {
        #[cfg(feature = "wal")]
        if let Some(logs) = QueueLogs::open(&config)? {
            return vinequeue_core::Queue::with_storage(
                config,
                logs.log,
                Some(logs.dead_letters),
                sink,
            )
            .map(Queue);
        }
        vinequeue_core::Queue::new(config, sink).map(Queue)
    }

    /// A durable queue over a storage of your own (any [`Storage`]: the log on another
    /// file system, an embedded database, the in-memory [`MemStorage`]); see
    /// [`vinequeue_core::Queue::with_storage`].
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid configuration.
    pub fn with_storage<S: Sink<T>>(
        config: Config,
        storage: std::sync::Arc<dyn Storage>,
        dead_letters: Option<std::sync::Arc<dyn Storage>>,
        sink: S,
    ) -> Result<Self, Error> {
        vinequeue_core::Queue::with_storage(config, storage, dead_letters, sink).map(Queue)
    }
}

impl<T: Send + 'static> Queue<T> {
    /// Wraps a queue built with [`vinequeue_core::Queue::with_storage`] (a custom
    /// [`Storage`]).
    pub fn from_core(queue: vinequeue_core::Queue<T>) -> Self {
        Queue(queue)
    }

    /// The core queue.
    pub fn into_core(self) -> vinequeue_core::Queue<T> {
        self.0
    }
}

impl<T: Send + 'static> Deref for Queue<T> {
    type Target = vinequeue_core::Queue<T>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<T: Send + 'static> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
