//! [`Error`]: what went wrong in a queue or storage operation, one type for the library.

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
    /// The queue had no room (its overflow policy refused the item): the memory ring
    /// held `memory_size` items, or (durable mode) the log reached `wal_max_size`.
    #[error(
        "queue is full: the memory ring holds memory_size items, or in durable mode the log \
         reached wal_max_size; make the sink keep up, or raise the limit"
    )]
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
    /// An I/O operation failed; the operating system's error is the
    /// [`source`](std::error::Error::source).
    #[error("i/o error")]
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
    /// An item could not be encoded or decoded; the codec's own error, where there is
    /// one, is the [`CodecError`]'s source.
    #[error("codec error: {0}")]
    Codec(#[source] CodecError),
    /// `flush` gave up before every item enqueued before it was delivered.
    #[error("flush timed out with {pending} item(s) still undelivered")]
    FlushTimeout {
        /// Items enqueued before the flush that were still not delivered.
        pending: u64,
    },
    /// `stop` ran out of `shutdown_timeout` before it could deliver everything.
    ///
    /// In memory mode the items that were not delivered have been handed to the sink's
    /// `on_dead_letter` with `DeadLetterReason::Shutdown`, unless the sink was still
    /// blocked inside `send`, in which case they stay with the batcher thread. In durable
    /// mode they stay in the log for the next start.
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

/// Why an item could not be encoded or decoded: what was being done, and the codec's own
/// error as the [`source`](std::error::Error::source).
#[derive(Debug)]
pub struct CodecError {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl CodecError {
    /// An error with a message and no underlying cause.
    pub fn new(message: impl Into<String>) -> Self {
        CodecError {
            message: message.into(),
            source: None,
        }
    }

    /// An error with a message saying what was being done, caused by `source`.
    pub fn with_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        CodecError {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// The message (without the cause).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The message followed by the causes, `": "`-separated.
    pub fn describe(&self) -> String {
        let mut text = self.message.clone();
        let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(self);
        while let Some(e) = cause {
            text.push_str(": ");
            text.push_str(&e.to_string());
            cause = e.source();
        }
        text
    }
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CodecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<String> for CodecError {
    fn from(message: String) -> Self {
        CodecError::new(message)
    }
}

impl From<&str> for CodecError {
    fn from(message: &str) -> Self {
        CodecError::new(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_codec_error_keeps_its_cause_as_the_source() {
        let cause = std::io::Error::other("unexpected end of input");
        let e = Error::Codec(CodecError::with_source("the item does not decode", cause));
        assert_eq!(e.to_string(), "codec error: the item does not decode");
        let source = std::error::Error::source(&e).unwrap();
        assert_eq!(
            std::error::Error::source(source).unwrap().to_string(),
            "unexpected end of input"
        );
    }

    #[test]
    fn an_io_error_is_the_source_not_part_of_the_message() {
        let e = Error::from(std::io::Error::other("disk on fire"));
        assert_eq!(e.to_string(), "i/o error");
        let source = std::error::Error::source(&e).expect("the io error is the source");
        assert_eq!(source.to_string(), "disk on fire");
    }
}
