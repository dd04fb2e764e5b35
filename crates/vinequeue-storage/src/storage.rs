//! The [`Storage`] trait: the byte-level log under a durable queue, and [`MemStorage`].
//!
//! The queue encodes each item (postcard) and appends the bytes as one *record*; the
//! storage numbers records with consecutive sequence numbers, hands them back in order,
//! and forgets them once they are acknowledged. `vinequeue-wal` is the file-backed
//! implementation; anything else (an embedded database, a replicated store) can plug in
//! by implementing this trait and passing the conformance suite in
//! [`testing`](crate::testing) (feature `testing`).

use std::collections::{BTreeMap, BTreeSet};

use parking_lot::Mutex;

use crate::error::Error;

/// What a storage found when it was opened over existing data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Unacknowledged records found (they will be replayed).
    pub records: u64,
    /// Bytes of those records' payloads.
    pub bytes: u64,
    /// Records lost to corruption (skipped under the lenient recovery mode).
    pub corrupt_records: u64,
    /// Bytes cut off a torn tail (an incomplete last write, e.g. after a power cut).
    pub torn_bytes: u64,
    /// Files in the directory that the storage did not recognise and left alone.
    pub unknown_files: u64,
    /// Bytes held by the copies of damaged files kept for inspection (the file-backed
    /// log's `damaged/` directory).
    pub damaged_bytes: u64,
    /// Damaged files no copy was kept of, for lack of room under the storage's limit
    /// for such copies.
    pub damaged_not_kept: u64,
    /// Every sequence number up to this one had been acknowledged.
    pub acked_through: u64,
    /// The sequence number the next append gets.
    pub next_seq: u64,
    /// The source position of the last record appended with one
    /// ([`Storage::append_positioned`]) that survived, whether or not it was since
    /// acknowledged: where in its source (a file offset, a change stream's position) the
    /// producer had got to. Everything the producer enqueued up to there is in the
    /// storage or delivered; resuming right after it loses nothing and enqueues nothing
    /// twice. `None` when no record was ever appended with a position.
    pub source_position: Option<Vec<u8>>,
}

/// A log of byte records with sequence numbers: the persistence layer of a durable queue.
///
/// # Contract
///
/// * **Numbering.** `append` gives each record a sequence number above every number
///   handed out before: one more than the previous record's within one opening,
///   starting at 1 for a new storage. A number is never handed out twice, also not
///   across crashes and power loss, and also not when the record that had it was lost
///   before it was synced: sinks deduplicate on these numbers, so a reused one would
///   make them drop a new record. Numbers may have gaps (after a crash, the file-backed
///   log skips the numbers it had reserved ahead and not used).
/// * **Visibility.** A record is readable by [`read`](Storage::read) as soon as `append`
///   returned, from any thread.
/// * **Durability.** After [`sync`](Storage::sync) returns `Ok`, every record appended
///   before the call, and the acknowledged low-water mark as it was, survive a crash or
///   power loss (acknowledgements above a gap may be forgotten: at-least-once). `sync_through(seq)` makes record `seq` durable; concurrent callers
///   should share one physical sync (group commit). What is durable without a sync is
///   implementation-defined.
/// * **Acknowledgement.** [`ack`](Storage::ack) may arrive in any order; the storage
///   tracks the contiguous low-water mark ([`acked_through`](Storage::acked_through)) and
///   may reclaim space below it. Reading may or may not return acknowledged records
///   (below the mark, or acknowledged above it). A storage that also persists
///   acknowledgements above the mark (the write-ahead log keeps the lowest 250 ranges
///   of them in its checkpoint) reports them through [`is_acked`](Storage::is_acked)
///   after a restart and need not read them back, so that a restart neither delivers
///   again what was delivered after a record that still waits nor brings back a dead
///   letter removed out of order. Acknowledging a number twice, or one not yet appended, is a
///   no-op (an error for the latter is also allowed).
/// * **Failure.** After a failed sync the storage must refuse every later append and
///   sync with an error (the page cache state is unknown: retrying and reporting success
///   would lie). Reaching the size limit is [`Error::LogFull`], with nothing written.
/// * **Threads.** All methods take `&self` and may be called concurrently, also from
///   inside a `read` visitor (which therefore must not run under a lock `ack` needs).
pub trait Storage: Send + Sync + 'static {
    /// Appends one record and returns its sequence number.
    ///
    /// # Errors
    ///
    /// [`Error::LogFull`] at the size limit (nothing was written); [`Error::RecordTooLarge`];
    /// [`Error::Io`] or [`Error::LogFailed`] when the storage cannot write.
    fn append(&self, record: &[u8]) -> Result<u64, Error>;

    /// Makes every record appended and every acknowledgement made before this call
    /// durable.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] or [`Error::LogFailed`]; after a failure the storage refuses writes.
    fn sync(&self) -> Result<(), Error>;

    /// Returns once record `seq` is durable. The default calls [`sync`](Storage::sync).
    ///
    /// # Errors
    ///
    /// As [`sync`](Storage::sync).
    fn sync_through(&self, seq: u64) -> Result<(), Error> {
        let _ = seq;
        self.sync()
    }

    /// Visits up to `max` records with sequence numbers `>= from`, in increasing order,
    /// stopping early if `visit` returns `false`. Returns how many were visited. Numbers
    /// may have gaps where records were lost to corruption.
    ///
    /// # Errors
    ///
    /// [`Error::Io`], or [`Error::Corrupt`] under a strict recovery mode.
    fn read(
        &self,
        from: u64,
        max: usize,
        visit: &mut dyn FnMut(u64, &[u8]) -> bool,
    ) -> Result<usize, Error>;

    /// Appends a record that keeps a key of its own: the sequence number the item had
    /// when it was first appended (a dead letter enqueued again keeps it, so that a sink
    /// deduplicating on `(queue id, key)` recognises the item). [`read_keyed`](Storage::read_keyed)
    /// hands the key back with the record, across restarts.
    ///
    /// The default appends the record without its key ([`keeps_keys`](Storage::keeps_keys)
    /// is `false`): the item then comes back under its new number only.
    ///
    /// # Errors
    ///
    /// As [`append`](Storage::append).
    fn append_keyed(&self, record: &[u8], key: u64) -> Result<u64, Error> {
        let _ = key;
        self.append(record)
    }

    /// Whether [`append_keyed`](Storage::append_keyed) keeps the key. The default: no.
    fn keeps_keys(&self) -> bool {
        false
    }

    /// As [`read`](Storage::read), also handing each record's key: `Some` for a record
    /// appended with [`append_keyed`](Storage::append_keyed) by a storage that keeps
    /// keys, `None` otherwise. The default reads without keys.
    ///
    /// # Errors
    ///
    /// As [`read`](Storage::read).
    fn read_keyed(
        &self,
        from: u64,
        max: usize,
        visit: &mut KeyedVisit<'_>,
    ) -> Result<usize, Error> {
        self.read(from, max, &mut |seq, bytes| visit(seq, None, bytes))
    }

    /// Appends a record with the producer's source position (at most 255 bytes): where
    /// in its source the producer was when it read what the record holds. The position
    /// is stored atomically with the record, and outlives the record's acknowledgement
    /// and reclaim: [`RecoveryReport::source_position`] hands back, after a restart, the
    /// position of the last such record that survived.
    ///
    /// The default refuses with [`Error::Config`]: a storage that would drop the
    /// position would make a producer resume from the wrong place.
    ///
    /// # Errors
    ///
    /// As [`append`](Storage::append); [`Error::Config`] for a position longer than 255
    /// bytes, or from a storage that keeps no positions.
    fn append_positioned(&self, record: &[u8], position: &[u8]) -> Result<u64, Error> {
        let _ = (record, position);
        Err(Error::Config(
            "this storage keeps no source positions (append_positioned)".into(),
        ))
    }

    /// Whether [`append_positioned`](Storage::append_positioned) keeps positions. The
    /// default: no.
    fn keeps_positions(&self) -> bool {
        false
    }

    /// The identity of the queue whose records this storage keeps, kept with them so
    /// that it survives restarts. The default, `None`: a storage that keeps none (the
    /// queue then takes a fresh identity per process, and `(queue id, sequence number)`
    /// stays unique, but a sink no longer recognises an item replayed after a restart by
    /// its queue id).
    fn queue_id(&self) -> Option<crate::QueueId> {
        None
    }

    /// Acknowledges record `seq` (delivered, or moved to a dead-letter store).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if reclaiming space failed: the acknowledgement itself is recorded.
    /// A storage that reclaims in the background may report here a failure of an
    /// earlier acknowledgement's reclaim.
    fn ack(&self, seq: u64) -> Result<(), Error>;

    /// Acknowledges every record in `seqs`. The default calls [`ack`](Storage::ack) for
    /// each.
    ///
    /// # Errors
    ///
    /// As [`ack`](Storage::ack).
    fn ack_all(&self, seqs: &[u64]) -> Result<(), Error> {
        seqs.iter().try_for_each(|&s| self.ack(s))
    }

    /// Acknowledges every number in `from..=to`, however many: the queue uses it for
    /// numbers that hold no record (lost to damage). The default acknowledges them a
    /// bounded slice at a time with [`ack_all`](Storage::ack_all); a storage that keeps
    /// acknowledged ranges should take the range at once.
    ///
    /// # Errors
    ///
    /// As [`ack`](Storage::ack).
    fn ack_range(&self, from: u64, to: u64) -> Result<(), Error> {
        const SLICE: u64 = 64 * 1024;
        let to = to.min(self.next_seq().saturating_sub(1));
        let mut at = from.max(self.acked_through() + 1);
        while at <= to {
            let end = to.min(at.saturating_add(SLICE - 1));
            self.ack_all(&(at..=end).collect::<Vec<u64>>())?;
            at = end + 1;
        }
        Ok(())
    }

    /// Whether record `seq` is acknowledged. The default knows only the low-water mark
    /// (`seq <= acked_through()`); a storage that tracks acknowledgements above it
    /// should say so for those too (the queue's dead-letter listing uses it to leave out
    /// letters removed out of order).
    fn is_acked(&self, seq: u64) -> bool {
        seq <= self.acked_through()
    }

    /// How many of the numbers `from..=to` are acknowledged: what the queue's count of
    /// pending items leaves out between its delivery mark and the last number handed
    /// out (numbers skipped after a crash, which hold no record, and records
    /// acknowledged out of order). The default counts those up to
    /// [`acked_through`](Storage::acked_through); a storage that tracks
    /// acknowledgements above it should count those too.
    fn acked_within(&self, from: u64, to: u64) -> u64 {
        let upto = to.min(self.acked_through());
        if upto < from {
            0
        } else {
            upto - from + 1
        }
    }

    /// Every record up to and including this number is acknowledged (0: none).
    fn acked_through(&self) -> u64;

    /// The sequence number the next append will get.
    fn next_seq(&self) -> u64;

    /// Bytes the storage occupies (files on disk, for a file-backed one).
    fn size(&self) -> u64;

    /// What opening found.
    fn recovery(&self) -> RecoveryReport;

    /// If acknowledging every record up to the returned sequence number would free space
    /// (for the log: the last record of its oldest segment), that number. The queue's
    /// `DropOldest` policy uses it to make room when the storage is full. The default,
    /// `None`, makes `DropOldest` refuse like `Reject` on a full storage.
    fn reclaim_hint(&self) -> Option<u64> {
        None
    }
}

/// What [`Storage::read_keyed`] calls for each record: its sequence number, its key
/// (`None` for a record appended without one) and its bytes; `false` stops the read.
pub type KeyedVisit<'a> = dyn FnMut(u64, Option<u64>, &[u8]) -> bool + 'a;

/// An in-memory [`Storage`]: for tests, for the conformance suite, and as a model of the
/// contract. Nothing survives the process; `sync` is a no-op.
#[derive(Debug)]
pub struct MemStorage {
    inner: Mutex<MemInner>,
    max_size: u64,
    id: crate::QueueId,
}

#[derive(Debug, Default)]
struct MemInner {
    /// Each record with its key (`append_keyed`).
    records: BTreeMap<u64, (Option<u64>, Vec<u8>)>,
    next_seq: u64,
    acked_through: u64,
    acked_above: BTreeSet<u64>,
    bytes: u64,
    /// The position of the last record appended with one.
    position: Option<Vec<u8>>,
}

/// Longest source position a storage must keep ([`Storage::append_positioned`]).
pub const MAX_SOURCE_POSITION: usize = 255;

/// Refuses a source position longer than [`MAX_SOURCE_POSITION`].
///
/// # Errors
///
/// [`Error::Config`] naming the length.
pub fn check_position(position: &[u8]) -> Result<(), Error> {
    if position.len() > MAX_SOURCE_POSITION {
        return Err(Error::Config(format!(
            "a source position of {} bytes: at most {MAX_SOURCE_POSITION}",
            position.len()
        )));
    }
    Ok(())
}

impl Default for MemStorage {
    fn default() -> Self {
        Self::new(u64::MAX)
    }
}

impl MemStorage {
    /// An empty storage holding at most `max_size` bytes of unacknowledged payload.
    pub fn new(max_size: u64) -> Self {
        MemStorage {
            inner: Mutex::new(MemInner {
                next_seq: 1,
                ..MemInner::default()
            }),
            max_size,
            id: crate::QueueId::random(),
        }
    }

    fn push(&self, record: &[u8], key: Option<u64>) -> Result<u64, Error> {
        let mut s = self.inner.lock();
        if s.bytes + record.len() as u64 > self.max_size {
            return Err(Error::LogFull {
                size: s.bytes,
                limit: self.max_size,
            });
        }
        let seq = s.next_seq;
        s.next_seq += 1;
        s.bytes += record.len() as u64;
        s.records.insert(seq, (key, record.to_vec()));
        Ok(seq)
    }
}

impl Storage for MemStorage {
    fn append(&self, record: &[u8]) -> Result<u64, Error> {
        self.push(record, None)
    }

    fn append_keyed(&self, record: &[u8], key: u64) -> Result<u64, Error> {
        self.push(record, Some(key))
    }

    fn keeps_keys(&self) -> bool {
        true
    }

    fn append_positioned(&self, record: &[u8], position: &[u8]) -> Result<u64, Error> {
        check_position(position)?;
        let seq = self.push(record, None)?;
        self.inner.lock().position = Some(position.to_vec());
        Ok(seq)
    }

    fn keeps_positions(&self) -> bool {
        true
    }

    fn queue_id(&self) -> Option<crate::QueueId> {
        Some(self.id)
    }

    fn sync(&self) -> Result<(), Error> {
        Ok(())
    }

    fn read(
        &self,
        from: u64,
        max: usize,
        visit: &mut dyn FnMut(u64, &[u8]) -> bool,
    ) -> Result<usize, Error> {
        self.read_keyed(from, max, &mut |seq, _, bytes| visit(seq, bytes))
    }

    fn read_keyed(
        &self,
        from: u64,
        max: usize,
        visit: &mut KeyedVisit<'_>,
    ) -> Result<usize, Error> {
        // Copy out under the lock, visit without it (the visitor may call back in).
        let batch: Vec<(u64, Option<u64>, Vec<u8>)> = {
            let s = self.inner.lock();
            s.records
                .range(from..)
                .take(max)
                .map(|(k, (key, v))| (*k, *key, v.clone()))
                .collect()
        };
        let mut n = 0;
        for (seq, key, bytes) in &batch {
            n += 1;
            if !visit(*seq, *key, bytes) {
                break;
            }
        }
        Ok(n)
    }

    fn ack(&self, seq: u64) -> Result<(), Error> {
        let mut s = self.inner.lock();
        if seq <= s.acked_through || seq >= s.next_seq {
            return Ok(());
        }
        s.acked_above.insert(seq);
        loop {
            let next = s.acked_through + 1;
            if !s.acked_above.remove(&next) {
                break;
            }
            s.acked_through = next;
            if let Some((_, r)) = s.records.remove(&next) {
                s.bytes -= r.len() as u64;
            }
        }
        Ok(())
    }

    fn is_acked(&self, seq: u64) -> bool {
        let s = self.inner.lock();
        seq <= s.acked_through || s.acked_above.contains(&seq)
    }

    fn acked_within(&self, from: u64, to: u64) -> u64 {
        let s = self.inner.lock();
        let below = to
            .min(s.acked_through)
            .saturating_add(1)
            .saturating_sub(from);
        let start = from.max(s.acked_through + 1);
        let above = if start <= to {
            s.acked_above.range(start..=to).count() as u64
        } else {
            0
        };
        below + above
    }

    fn acked_through(&self) -> u64 {
        self.inner.lock().acked_through
    }

    fn next_seq(&self) -> u64 {
        self.inner.lock().next_seq
    }

    fn size(&self) -> u64 {
        self.inner.lock().bytes
    }

    fn recovery(&self) -> RecoveryReport {
        let s = self.inner.lock();
        RecoveryReport {
            acked_through: s.acked_through,
            next_seq: s.next_seq,
            source_position: s.position.clone(),
            ..RecoveryReport::default()
        }
    }
}
