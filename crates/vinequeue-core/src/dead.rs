//! Dead letters kept in a log (durable mode): the record format and what
//! [`Queue::dead_letters`](crate::Queue::dead_letters) returns.

use serde::{Deserialize, Serialize};

/// Longest sink error text stored with a dead letter (bytes).
pub(crate) const MAX_DEAD_ERROR: usize = 4096;

/// Room a dead letter needs in the dead-letter log besides its item's bytes: the error
/// text (at most [`MAX_DEAD_ERROR`]), the reason, the sequence number and the lengths,
/// with room to spare. The main log refuses items larger than a letter can hold.
#[cfg_attr(not(feature = "wal"), allow(dead_code))]
pub(crate) const MAX_LETTER_OVERHEAD: u32 = 2 * MAX_DEAD_ERROR as u32;

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
    /// The item's key number, where it is not `seq` (an item enqueued again from an
    /// earlier letter keeps the number it first had). Absent from letters written before
    /// keys were kept: [`StoredRecord::decode`] reads both.
    pub(crate) key: Option<u64>,
}

/// A letter as written before keys were kept (the same fields, without `key`).
#[derive(Deserialize)]
struct StoredRecordV1 {
    seq: u64,
    reason: String,
    error: String,
    payload: Vec<u8>,
}

impl StoredRecord {
    /// Decodes a letter, of either layout. (postcard is not self-describing: a letter
    /// without its trailing `key` fails to decode as the current layout, for want of
    /// bytes, and is then read as the older one.)
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes::<StoredRecord>(bytes).or_else(|e| {
            postcard::from_bytes::<StoredRecordV1>(bytes)
                .map(|r| StoredRecord {
                    seq: r.seq,
                    reason: r.reason,
                    error: r.error,
                    payload: r.payload,
                    key: None,
                })
                .map_err(|_| e)
        })
    }

    /// The number the item is known by to sinks: its key.
    pub(crate) fn key_number(&self) -> u64 {
        self.key.unwrap_or(self.seq)
    }
}

/// A dead-lettered item read back from the dead-letter log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDeadLetter<T> {
    /// Sequence number of this record in the dead-letter log (for acknowledging it).
    pub dead_letter_seq: u64,
    /// The item's sequence number in the main log when it was dead-lettered.
    pub seq: u64,
    /// The number sinks know the item by ([`Batch::key`](crate::Batch::key)): `seq`, or,
    /// for an item dead-lettered again after a redrive, the number it first had. A
    /// redrive keeps it.
    pub key: u64,
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

impl<T> StoredDeadLetter<T> {
    /// A letter from its record's bytes in the dead-letter log, without decoding the
    /// item (`item` is `None`; `payload` holds its bytes): for tools that read the log
    /// without knowing the item type.
    ///
    /// # Errors
    ///
    /// [`Error::Codec`](crate::Error::Codec) if the bytes are not a dead-letter record.
    pub fn from_record(dead_letter_seq: u64, bytes: &[u8]) -> Result<Self, crate::Error> {
        let record = StoredRecord::decode(bytes).map_err(|e| {
            crate::Error::Codec(crate::CodecError::with_source(
                format!("dead letter {dead_letter_seq} is not a dead-letter record"),
                e,
            ))
        })?;
        Ok(StoredDeadLetter {
            dead_letter_seq,
            key: record.key_number(),
            seq: record.seq,
            reason: record.reason,
            error: record.error,
            item: None,
            payload: record.payload,
        })
    }
}

/// A record dead-lettered just before a crash can be in both logs: the letter is stored
/// and synced in the dead-letter log first, and only then is the record acknowledged in
/// the main log. At the next start, such a record would be delivered again while its
/// letter waits for a redrive. This acknowledges, in the main log, every record whose
/// letter is stored, so that each item ends up in exactly one log. It reads the letters'
/// main sequence numbers only (the first field of each).
///
/// # Errors
///
/// What reading the dead-letter log, or acknowledging and syncing the main log, failed
/// with.
pub(crate) fn settle_letters_stored_twice(
    main: &dyn crate::Storage,
    dead: &dyn crate::Storage,
) -> Result<(), crate::Error> {
    let mark = main.acked_through();
    let next = main.next_seq();
    let mut twice = Vec::new();
    let mut from = dead.acked_through() + 1;
    loop {
        let mut last = None;
        dead.read(from, 4096, &mut |dseq, bytes| {
            last = Some(dseq);
            if let Ok((seq, _)) = postcard::take_from_bytes::<u64>(bytes) {
                if seq > mark && seq < next && !main.is_acked(seq) {
                    twice.push(seq);
                }
            }
            true
        })?;
        match last {
            Some(l) => from = l + 1,
            None => break,
        }
    }
    if !twice.is_empty() {
        main.ack_all(&twice)?;
        main.sync()?;
    }
    Ok(())
}

/// A letter redriven just before a crash can be in both logs too: the redrive appends the
/// item to the main log (with its key) and syncs it, and only then removes the letter.
/// At the next start the item would be delivered and its letter still wait for another
/// redrive. This removes, from the dead-letter log, every letter whose key an
/// unacknowledged record of the main log carries (the redriven copy), so that each item
/// ends up in exactly one log. It reads the main log's backlog (keys only), and only when
/// the dead-letter log holds letters and the main log keeps keys.
///
/// # Errors
///
/// What reading either log, or acknowledging and syncing the dead-letter log, failed
/// with.
pub(crate) fn settle_letters_redriven_twice(
    main: &dyn crate::Storage,
    dead: &dyn crate::Storage,
) -> Result<(), crate::Error> {
    if dead.next_seq() <= dead.acked_through() + 1 || !main.keeps_keys() {
        return Ok(());
    }
    let mut keys = std::collections::HashSet::new();
    let mut from = main.acked_through() + 1;
    loop {
        let mut last = None;
        main.read_keyed(from, 4096, &mut |seq, key, _| {
            last = Some(seq);
            if let Some(key) = key {
                if !main.is_acked(seq) {
                    keys.insert(key);
                }
            }
            true
        })?;
        match last {
            Some(l) => from = l + 1,
            None => break,
        }
    }
    if keys.is_empty() {
        return Ok(());
    }
    let mut redriven = Vec::new();
    let mut from = dead.acked_through() + 1;
    loop {
        let mut last = None;
        dead.read(from, 4096, &mut |dseq, bytes| {
            last = Some(dseq);
            if !dead.is_acked(dseq) {
                if let Ok(letter) = StoredRecord::decode(bytes) {
                    if keys.contains(&letter.key_number()) {
                        redriven.push(dseq);
                    }
                }
            }
            true
        })?;
        match last {
            Some(l) => from = l + 1,
            None => break,
        }
    }
    if !redriven.is_empty() {
        dead.ack_all(&redriven)?;
        dead.sync()?;
    }
    Ok(())
}
