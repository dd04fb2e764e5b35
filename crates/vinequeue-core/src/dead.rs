//! Dead letters kept in a log (durable mode): the record format and what
//! [`Queue::dead_letters`](crate::Queue::dead_letters) returns.

use serde::{Deserialize, Serialize};

/// One dead-lettered item as stored in the dead-letter log (postcard-encoded).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredRecord {
    /// The item's sequence number in the main log.
    pub(crate) seq: u64,
    /// Why it was dead-lettered (`DeadLetterReason` as text).
    pub(crate) reason: String,
    /// The last error the sink returned.
    pub(crate) error: String,
    /// The item, encoded as in the main log.
    pub(crate) payload: Vec<u8>,
}

/// A dead-lettered item read back from the dead-letter log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDeadLetter<T> {
    /// Sequence number of this record in the dead-letter log (for acknowledging it).
    pub dead_letter_seq: u64,
    /// The item's sequence number in the main log when it was dead-lettered.
    pub seq: u64,
    /// Why it was dead-lettered.
    pub reason: String,
    /// The last error the sink returned (for an undecodable record: why it did not
    /// decode).
    pub error: String,
    /// The item, or `None` if `payload` does not decode as `T`.
    pub item: Option<T>,
    /// The item's bytes, encoded as in the main log.
    pub payload: Vec<u8>,
}
