//! The dead-letter log's administration: listing, redriving and discarding letters.

use super::*;

impl<T: Send + 'static> Queue<T> {
    /// Reads up to `max` dead-lettered items from the dead-letter log, oldest first.
    ///
    /// A letter whose bytes do not decode as `T` (a record the log handed back that
    /// never decoded, reason `"Undecodable"`, or an item whose type changed since) comes
    /// with `item: None` and its bytes in `payload`; remove it with
    /// [`discard_dead_letter`](Queue::discard_dead_letter) once dealt with.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] without a dead-letter log; the log's read error;
    /// [`Error::Codec`] for a dead-letter record that is not one.
    pub fn dead_letters(&self, max: usize) -> Result<Vec<StoredDeadLetter<T>>, Error> {
        let (d, dead) = self.dead_letter_log()?;
        read_dead_letters(d, dead.as_ref(), dead.acked_through() + 1, u64::MAX, max)
    }

    /// Enqueues every dead-lettered item again (with new sequence numbers) and removes it
    /// from the dead-letter log. Returns how many were re-enqueued.
    ///
    /// Only the letters there when the call starts: an item that fails again while this
    /// runs is dead-lettered anew and waits for the next call. A letter that does not
    /// decode (`item: None` in [`dead_letters`](Queue::dead_letters)) cannot be enqueued:
    /// it moves to the back of the dead-letter log (a new `dead_letter_seq`, the rest
    /// unchanged) and stays until [`discard_dead_letter`](Queue::discard_dead_letter).
    /// The re-enqueued items (and moved letters) are durable before their letters are
    /// removed.
    ///
    /// # Errors
    ///
    /// As [`dead_letters`](Queue::dead_letters); the first enqueue error, with
    /// [`Error::Full`] also for an item `DropNewest` would discard; a sync error. The
    /// letters of the round of 256 it happened in stay, so their items may be delivered
    /// twice, never lost.
    pub fn redrive_dead_letters(&self) -> Result<u64, Error> {
        let (d, dead) = self.dead_letter_log()?;
        let end = dead.next_seq();
        let mut from = dead.acked_through() + 1;
        let mut moved = 0;
        while from < end {
            let letters = read_dead_letters(d, dead.as_ref(), from, end - 1, 256)?;
            let Some(last) = letters.last() else {
                return Ok(moved);
            };
            from = last.dead_letter_seq + 1;
            let mut done = Vec::with_capacity(letters.len());
            let mut requeued = 0;
            for letter in letters {
                match letter.item {
                    Some(_) => {
                        // The item's bytes as they were, with the number sinks know it by.
                        self.append_redriven(d, &letter.payload, letter.key)?;
                        requeued += 1;
                    }
                    None => {
                        // To the back: the letters removed around it stay a contiguous
                        // run, which the log reclaims and remembers across restarts.
                        let record = StoredRecord {
                            key: (letter.key != letter.seq).then_some(letter.key),
                            seq: letter.seq,
                            reason: letter.reason,
                            error: letter.error,
                            payload: letter.payload,
                        };
                        let bytes = postcard::to_allocvec(&record).map_err(|e| {
                            Error::Codec(vinequeue_storage::CodecError::with_source(
                                "a dead-letter record does not encode",
                                e,
                            ))
                        })?;
                        dead.append(&bytes)?;
                    }
                }
                done.push(letter.dead_letter_seq);
            }
            self.sync()?;
            dead.sync()?;
            remove_letters(d, dead.as_ref(), &done)?;
            moved += requeued;
        }
        Ok(moved)
    }

    /// Removes one letter from the dead-letter log for good (after dealing with it some
    /// other way, or for a letter that does not decode). Removing one that is not there
    /// does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] without a dead-letter log; the log's error.
    pub fn discard_dead_letter(&self, dead_letter_seq: u64) -> Result<(), Error> {
        let (d, dead) = self.dead_letter_log()?;
        if dead_letter_seq == 0 || dead_letter_seq >= dead.next_seq() {
            return Ok(());
        }
        remove_letters(d, dead.as_ref(), &[dead_letter_seq])
    }

    pub(super) fn dead_letter_log(&self) -> Result<(&DurableState<T>, &Arc<dyn Storage>), Error> {
        let d = self.shared.durable.as_ref().ok_or_else(|| {
            Error::Unsupported("dead letters are kept in a log only in durable mode".into())
        })?;
        let dead = d.dead_letters.as_ref().ok_or_else(|| {
            Error::Unsupported("this queue was created without a dead-letter log".into())
        })?;
        Ok((d, dead))
    }
}

/// Up to `max` letters of the dead-letter log numbered `from..=to`, oldest first, leaving
/// out those removed out of order.
fn read_dead_letters<T>(
    d: &DurableState<T>,
    dead: &dyn Storage,
    from: u64,
    to: u64,
    max: usize,
) -> Result<Vec<StoredDeadLetter<T>>, Error> {
    let mut out = Vec::new();
    let mut at = from;
    while out.len() < max && at <= to {
        let mut failure = None;
        let mut last = None;
        dead.read(at, max - out.len(), &mut |dseq, bytes| {
            if dseq > to {
                return false;
            }
            last = Some(dseq);
            if dead.is_acked(dseq) {
                return true; // removed out of order (`discard_dead_letter`)
            }
            match StoredRecord::decode(bytes) {
                Ok(record) => out.push(StoredDeadLetter {
                    dead_letter_seq: dseq,
                    key: record.key_number(),
                    seq: record.seq,
                    reason: record.reason,
                    error: record.error,
                    item: (d.codec.decode)(&record.payload).ok(),
                    payload: record.payload,
                }),
                Err(e) => {
                    failure = Some(Error::Codec(vinequeue_storage::CodecError::with_source(
                        format!("dead letter {dseq} is not a dead-letter record"),
                        e,
                    )));
                    return false;
                }
            }
            true
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        match last {
            Some(l) => at = l + 1,
            None => break,
        }
    }
    Ok(out)
}

/// Acknowledges `seqs` in the dead-letter log and syncs it. An error from a log that
/// recorded the acknowledgements all the same (a failed deletion of space, possibly an
/// earlier one's, reported now) is counted in `log_errors_total` rather than returned:
/// the letters are gone, and the caller's work is done.
fn remove_letters<T>(d: &DurableState<T>, dead: &dyn Storage, seqs: &[u64]) -> Result<(), Error> {
    let acked = dead.ack_all(seqs);
    let synced = dead.sync();
    match acked {
        Ok(()) => synced,
        Err(e) if seqs.iter().all(|&s| dead.is_acked(s)) => {
            d.acked(Err(e));
            synced
        }
        Err(e) => Err(e),
    }
}
