//! Dead letters on the batcher's side: storing them in the dead-letter log (or keeping
//! them in the main log when it refuses), the list of refused letters tried again, and
//! making room under `DeadLetterFull::DropOldest`.

use super::*;

impl<T: Send + 'static> Batcher<T> {
    /// The counter of dead letters dropped to make room, under
    /// `DeadLetterFull::DropOldest` (`None`: a full dead-letter log keeps them out).
    pub(super) fn room<'a>(&self, d: &'a crate::shared::DurableState<T>) -> Option<&'a AtomicU64> {
        (self.shared.config.get_dead_letter_full() == crate::config::DeadLetterFull::DropOldest)
            .then_some(&d.dead_dropped)
    }

    /// Durable mode: tries again to store the dead letters the dead-letter log refused
    /// (at most every `REFUSED_RETRY`), reading their records back from the main log;
    /// those it takes are acknowledged there.
    pub(super) fn retry_refused(&mut self) {
        if self.refused.is_empty() || Instant::now() < self.refused_retry_at {
            return;
        }
        self.refused_retry_at = Instant::now() + REFUSED_RETRY;
        let Some(d) = &self.shared.durable else {
            return;
        };
        let Some(dead) = &d.dead_letters else {
            return;
        };
        let take = self.refused.len().min(256);
        let mut records = Vec::with_capacity(take);
        let mut gone = Vec::new();
        for letter in &self.refused[..take] {
            let mut payload = None;
            let read = d.storage.read_keyed(letter.seq, 1, &mut |seq, key, bytes| {
                if seq == letter.seq {
                    payload = Some((key, bytes.to_vec()));
                }
                false
            });
            match (payload, read) {
                (Some((key, payload)), _) => records.push(StoredRecord {
                    seq: letter.seq,
                    reason: letter.reason.to_string(),
                    error: letter.error.to_string(),
                    payload,
                    key,
                }),
                // Not in the log any more (shed by `DropOldest`): nothing to keep.
                (None, Ok(_)) => gone.push(letter.seq),
                // The read failed: the record is still there for all that is known, and
                // the letter stays on the list for the next try.
                (None, Err(_)) => {}
            }
        }
        if records.is_empty() && gone.is_empty() {
            return;
        }
        let stored = store_dead_letters(dead.as_ref(), records, self.room(d));
        let acked = stored.is_empty() || d.acked(d.storage.ack_all(&stored));
        // A stored letter leaves the list once its record is acknowledged in the main
        // log: when the acknowledgement succeeded, or when it failed with the
        // acknowledgement recorded all the same (a log's failure to free space; offered
        // again, the letter would be stored twice).
        let mut freed = 0;
        self.refused.retain(|l| {
            let keep = !gone.contains(&l.seq)
                && (stored.binary_search(&l.seq).is_err() || !(acked || d.storage.is_acked(l.seq)));
            if !keep {
                freed += l.cost;
            }
            keep
        });
        self.refused_bytes = self.refused_bytes.saturating_sub(freed);
    }

    /// Hands `batch` to the dead-letter hook and, with a dead-letter log, stores it
    /// there first. Returns the sequence numbers that must stay unacknowledged in the
    /// main log (ascending): those the dead-letter log could not take.
    pub(super) fn dead_letter(
        &mut self,
        batch: Batch<T>,
        error: Option<SendError>,
        reason: DeadLetterReason,
    ) -> Vec<u64> {
        let n = batch.len() as u64;
        event!(
            warn,
            queue = self.shared.config.get_metrics_label(),
            items = n,
            first_seq = batch.first_seq(),
            reason = ?reason,
            error = %error.as_ref().map_or_else(|| "none".to_owned(), SendError::describe),
            "batch dead-lettered"
        );
        let mut kept = Vec::new();
        if let Some(d) = &self.shared.durable {
            if let Some(dead) = &d.dead_letters {
                let text = match &error {
                    Some(e) => truncated(e.describe(), crate::dead::MAX_DEAD_ERROR),
                    None => format!("{reason:?}"),
                };
                let mut records = Vec::with_capacity(batch.len());
                for (i, (seq, item)) in batch.iter_with_seq().enumerate() {
                    let (_, key) = batch.key(i);
                    match d.codec.encode(item) {
                        Ok(payload) => records.push(StoredRecord {
                            seq,
                            reason: format!("{reason:?}"),
                            error: text.clone(),
                            payload,
                            key: (key != seq).then_some(key),
                        }),
                        Err(_) => kept.push(seq),
                    }
                }
                let wanted: Vec<u64> = records.iter().map(|r| r.seq).collect();
                let stored = store_dead_letters(dead.as_ref(), records, self.room(d));
                let refused = wanted
                    .into_iter()
                    .filter(|s| stored.binary_search(s).is_err())
                    .collect::<Vec<u64>>();
                // The letters of one batch share its texts; each carries its share of
                // them and its own entry in the memory the list may hold.
                let (reason_text, error_text): (Arc<str>, Arc<str>) =
                    (format!("{reason:?}").into(), text.as_str().into());
                let texts = reason_text.len() + error_text.len();
                let cost = std::mem::size_of::<Refused>() + texts / refused.len().max(1) + 1;
                if self.refused.len() + refused.len() <= MAX_REFUSED_TRACKED
                    && self.refused_bytes + cost * refused.len() <= MAX_REFUSED_BYTES
                {
                    self.refused.extend(refused.iter().map(|&seq| Refused {
                        seq,
                        reason: Arc::clone(&reason_text),
                        error: Arc::clone(&error_text),
                        cost,
                    }));
                    self.refused_bytes += cost * refused.len();
                    self.refused_retry_at = Instant::now() + REFUSED_RETRY;
                }
                kept.extend(refused);
                kept.sort_unstable();
                d.unstored.fetch_add(kept.len() as u64, Relaxed);
            }
        }
        let counter = match reason {
            DeadLetterReason::Shutdown => &self.shared.counters.abandoned,
            _ => &self.shared.counters.dead_lettered,
        };
        counter.fetch_add(n, Relaxed);
        let letter = DeadLetter {
            batch,
            error,
            reason,
        };
        let sink = &mut self.sink;
        // A panicking handler must not take the batcher down; the items are counted.
        let _ = catch_unwind(AssertUnwindSafe(|| sink.on_dead_letter(letter)));
        kept
    }
}

/// `DeadLetterFull::DropOldest`: drops (acknowledges) the letters of the dead-letter
/// log's oldest segment, counting those not removed already. Returns whether it dropped
/// any (an `append` after it then waits for the deletion under way).
pub(super) fn make_room(dead: &dyn Storage, dropped: &AtomicU64) -> bool {
    let Some(through) = dead.reclaim_hint() else {
        return false;
    };
    let from = dead.acked_through() + 1;
    if through < from {
        return false;
    }
    let letters = (from..=through).filter(|&s| !dead.is_acked(s)).count() as u64;
    if dead.ack_range(from, through).is_err() && !dead.is_acked(through) {
        return false;
    }
    dropped.fetch_add(letters, Relaxed);
    true
}

/// A dead letter the dead-letter log refused, to be tried again.
pub(super) struct Refused {
    seq: u64,
    reason: Arc<str>,
    error: Arc<str>,
    /// Bytes it accounts for in `Batcher::refused_bytes`.
    cost: usize,
}

/// How often refused dead letters are tried again.
pub(super) const REFUSED_RETRY: Duration = Duration::from_secs(1);

/// Most refused dead letters kept for another try (beyond that they wait in the main
/// log for the next start).
pub(super) const MAX_REFUSED_TRACKED: usize = 100_000;

/// Most memory the list of refused dead letters holds, texts included (beyond that they
/// wait in the main log for the next start): a batch's error text is kept once for all
/// its letters, so letters refused one at a time with long errors cannot take
/// `MAX_REFUSED_TRACKED` times `dead::MAX_DEAD_ERROR` bytes.
pub(super) const MAX_REFUSED_BYTES: usize = 16 << 20;

/// `reason` of a record stored because it did not decode.
pub(crate) const UNDECODABLE: &str = "Undecodable";

/// `text` cut to at most `max` bytes, at a character boundary.
pub(super) fn truncated(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Appends `records` to the dead-letter log and syncs it. Returns the main-log sequence
/// numbers of those now durable there (ascending): only those may leave the main log.
pub(super) fn store_dead_letters(
    dead: &dyn Storage,
    records: Vec<StoredRecord>,
    drop_oldest: Option<&AtomicU64>,
) -> Vec<u64> {
    let mut stored = Vec::with_capacity(records.len());
    for record in records {
        let Ok(bytes) = postcard::to_allocvec(&record) else {
            continue;
        };
        let mut appended = dead.append(&bytes);
        if let (Err(crate::Error::LogFull { .. }), Some(dropped)) = (&appended, drop_oldest) {
            if make_room(dead, dropped) {
                appended = dead.append(&bytes);
            }
        }
        if appended.is_ok() {
            stored.push(record.seq);
        }
    }
    if !stored.is_empty() && dead.sync().is_err() {
        stored.clear();
    }
    stored.sort_unstable();
    stored
}
