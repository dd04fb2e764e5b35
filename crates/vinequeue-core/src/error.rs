//! [`EnqueueError`]: why `enqueue` did not take an item, with the item handed back.

use std::fmt;

pub use vinequeue_storage::Error;

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
            EnqueueError::Full(_) => f.write_str(
                "enqueue refused: queue is full (the memory ring at memory_size; in durable \
                 mode, the log at wal_max_size)",
            ),
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
}
