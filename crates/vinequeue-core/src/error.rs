//! Error types: [`Error`] for queue operations, [`EnqueueError`] that hands the item back.

use std::fmt;
use std::path::PathBuf;

/// What went wrong in a queue operation.
///
/// Every message says what happened and, where there is one, what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid; the message names the field and the reason.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The queue had no room (its overflow policy refused the item).
    #[error("queue is full: raise memory_size, or make the sink keep up")]
    Full,
    /// The queue was stopped.
    #[error("queue is closed: it was stopped and accepts no more items")]
    Closed,
    /// The operation needs a started queue; call `start()` first.
    #[error("queue is not started: call start() first")]
    NotStarted,
    /// Another queue (in this or another process) holds the log directory.
    #[error("{0} is locked by another queue; stop that one or use another path")]
    Locked(PathBuf),
    /// An I/O operation failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Stored data failed its checks.
    #[error("corrupt data in {file} at offset {offset}: {reason}")]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damage within the file.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// An item could not be encoded or decoded.
    #[error("codec error: {0}")]
    Codec(String),
    /// `flush` gave up before every item enqueued before it was delivered.
    #[error("flush timed out with {pending} item(s) still undelivered")]
    FlushTimeout {
        /// Items enqueued before the flush that were still not delivered.
        pending: u64,
    },
    /// `stop` ran out of `shutdown_timeout` before it could deliver everything.
    ///
    /// In memory mode the items that were not delivered have been handed to
    /// [`Sink::on_dead_letter`](crate::Sink::on_dead_letter) with
    /// [`DeadLetterReason::Shutdown`](crate::DeadLetterReason::Shutdown), unless the sink
    /// was still blocked inside `send`, in which case they stay with the batcher thread.
    #[error("stop timed out: {undelivered} item(s) were not delivered within shutdown_timeout")]
    ShutdownTimeout {
        /// How many items were not delivered.
        undelivered: u64,
    },
    /// The log reached its size limit (`wal_max_size`); nothing was written.
    #[error("log is full: {size} of {limit} bytes used; deliver (acknowledge) records or raise wal_max_size")]
    LogFull {
        /// Bytes in use.
        size: u64,
        /// The configured limit.
        limit: u64,
    },
    /// A record is larger than the log accepts.
    #[error("record of {len} bytes is larger than the limit of {limit} bytes")]
    RecordTooLarge {
        /// Encoded length of the record.
        len: u64,
        /// The limit (`max_record_size`).
        limit: u64,
    },
    /// A sync failed earlier; the log refuses every write since, because what reached the
    /// disk is unknown. Reopen the log (after fixing the disk) to recover what was synced.
    #[error("log failed and refuses writes: {0}; reopen it to recover")]
    LogFailed(String),
    /// The feature needed by the configuration is not available in this build.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

/// Why `enqueue` did not take an item; the item is handed back inside.
///
/// `Debug` does not require `T: Debug`. [`into_inner`](EnqueueError::into_inner) recovers
/// the item, and `?` converts this into [`Error`] (dropping the item) in functions that
/// return `vinequeue::Error`.
pub enum EnqueueError<T> {
    /// The overflow policy said no (`Reject`, or `Block` timed out).
    Full(T),
    /// The queue was stopped.
    Closed(T),
    /// The queue refuses items before `start()`. (This queue buffers items before start,
    /// so it does not return this today; it is part of the contract for other flavors.)
    NotStarted(T),
    /// An I/O or encoding failure; the `Error` describes the queue's state.
    Failed(T, Error),
}

impl<T> EnqueueError<T> {
    /// The item that was not enqueued.
    pub fn into_inner(self) -> T {
        match self {
            EnqueueError::Full(t)
            | EnqueueError::Closed(t)
            | EnqueueError::NotStarted(t)
            | EnqueueError::Failed(t, _) => t,
        }
    }

    /// A reference to the item that was not enqueued.
    pub fn item(&self) -> &T {
        match self {
            EnqueueError::Full(t)
            | EnqueueError::Closed(t)
            | EnqueueError::NotStarted(t)
            | EnqueueError::Failed(t, _) => t,
        }
    }

    /// Whether this is `Full`.
    pub fn is_full(&self) -> bool {
        matches!(self, EnqueueError::Full(_))
    }

    /// Whether this is `Closed`.
    pub fn is_closed(&self) -> bool {
        matches!(self, EnqueueError::Closed(_))
    }

    /// Applies `f` to the carried item, keeping the reason.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> EnqueueError<U> {
        match self {
            EnqueueError::Full(t) => EnqueueError::Full(f(t)),
            EnqueueError::Closed(t) => EnqueueError::Closed(f(t)),
            EnqueueError::NotStarted(t) => EnqueueError::NotStarted(f(t)),
            EnqueueError::Failed(t, e) => EnqueueError::Failed(f(t), e),
        }
    }
}

impl<T> fmt::Debug for EnqueueError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnqueueError::Full(_) => f.write_str("Full(..)"),
            EnqueueError::Closed(_) => f.write_str("Closed(..)"),
            EnqueueError::NotStarted(_) => f.write_str("NotStarted(..)"),
            EnqueueError::Failed(_, e) => write!(f, "Failed(.., {e:?})"),
        }
    }
}

impl<T> fmt::Display for EnqueueError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnqueueError::Full(_) => f.write_str("enqueue refused: queue is full"),
            EnqueueError::Closed(_) => f.write_str("enqueue refused: queue is closed"),
            EnqueueError::NotStarted(_) => f.write_str("enqueue refused: queue is not started"),
            EnqueueError::Failed(_, e) => write!(f, "enqueue failed: {e}"),
        }
    }
}

impl<T> std::error::Error for EnqueueError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EnqueueError::Failed(_, e) => Some(e),
            _ => None,
        }
    }
}

impl<T> From<EnqueueError<T>> for Error {
    fn from(e: EnqueueError<T>) -> Self {
        match e {
            EnqueueError::Full(_) => Error::Full,
            EnqueueError::Closed(_) => Error::Closed,
            EnqueueError::NotStarted(_) => Error::NotStarted,
            EnqueueError::Failed(_, e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoDebug(u8);

    #[test]
    fn enqueue_error_gives_the_item_back_and_converts() {
        let e = EnqueueError::Full(NoDebug(3));
        assert_eq!(format!("{e:?}"), "Full(..)");
        assert_eq!(e.item().0, 3);
        assert!(e.is_full());
        let e = e.map(|n| n.0 + 1);
        assert_eq!(e.into_inner(), 4);
        let err: Error = EnqueueError::Closed(1).into();
        assert!(matches!(err, Error::Closed));
        let err: Error = EnqueueError::Failed(1, Error::Codec("x".into())).into();
        assert!(matches!(err, Error::Codec(_)));
    }

    #[test]
    fn messages_are_lowercase_and_specific() {
        let e = Error::Corrupt {
            file: "a.seg".into(),
            offset: 12,
            reason: "crc mismatch".into(),
        };
        assert_eq!(
            e.to_string(),
            "corrupt data in a.seg at offset 12: crc mismatch"
        );
        assert!(Error::ShutdownTimeout { undelivered: 5 }
            .to_string()
            .contains('5'));
    }
}
