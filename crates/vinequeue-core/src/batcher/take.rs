//! Where a batch's items come from: the ring and, in durable mode, the log (the items
//! that spilled, and the backlog a restart replays), in sequence order.

use super::*;

impl<T: Send + 'static> Batcher<T> {
    /// Every item up to this sequence number has been taken into a batch (or dropped).
    pub(super) fn taken_through(&self) -> u64 {
        match &self.shared.durable {
            Some(_) => self.next_deliver - 1,
            None => self.shared.ring.popped(),
        }
    }

    /// Whether everything accepted so far has been taken.
    pub(super) fn drained(&self) -> bool {
        match &self.shared.durable {
            Some(d) => self.held.is_none() && d.published.load(SeqCst) < self.next_deliver,
            None => self.shared.ring.is_empty(),
        }
    }

    /// Takes up to `max - batch.len()` items into `batch`, in sequence order.
    pub(super) fn take(&mut self, batch: &mut Batch<T>, max: usize) {
        self.last_look = Instant::now();
        if self.shared.durable.is_some() {
            self.take_durable(batch, max);
        } else {
            let want = max - batch.len();
            if self.shared.ring.pop_into(&mut self.scratch, want) > 0 {
                for (ordinal, (_, item)) in self.scratch.drain(..) {
                    batch.push(ordinal + 1, item);
                }
                self.shared.space.notify();
                self.shared.wakers.wake();
            }
        }
        self.shared.in_flight.store(batch.len() as u64, SeqCst);
    }

    /// Durable mode: items come from the ring in sequence order; a gap before the ring's
    /// next item (or after its last) holds spilled or recovered items, read back from the
    /// log.
    pub(super) fn take_durable(&mut self, batch: &mut Batch<T>, max: usize) {
        let shared = Arc::clone(&self.shared);
        let d = shared.durable.as_ref().expect("durable mode");
        // Producers shedding the oldest items (DropOldest on a full log) and this take
        // must agree on who owns which item.
        self.spills_seen = d.spilled.load(SeqCst);
        let mut cursor = d.cursor.lock();
        if cursor.1 >= self.next_deliver {
            self.next_deliver = cursor.1 + 1; // dropped: acknowledged and counted already
        }
        while batch.len() < max {
            let entry = self
                .held
                .take()
                .or_else(|| self.shared.ring.pop().map(|e| e.1));
            let upto = match entry {
                Some((seq, _)) if seq < self.next_deliver => continue, // already read back
                Some((seq, item)) if seq == self.next_deliver => {
                    batch.push(seq, item);
                    self.next_deliver += 1;
                    continue;
                }
                Some((seq, item)) => {
                    self.held = Some((seq, item));
                    seq - 1
                }
                None => {
                    let published = d.published.load(SeqCst);
                    if published < self.next_deliver {
                        break;
                    }
                    published
                }
            };
            let room = max - batch.len();
            let Some(visited) = self.read_back(batch, max, upto) else {
                // The log could not be read: go with what we have, retry later.
                self.log_unreadable = true;
                break;
            };
            self.log_unreadable = false;
            if visited < room && self.next_deliver <= upto {
                // The log ran out before `upto`: the records up to there were lost to
                // corruption (counted when found). Move past them, and acknowledge their
                // numbers, or the log's low-water mark would stop below them for good.
                self.lost.push((self.next_deliver, upto));
                self.next_deliver = upto + 1;
            }
        }
        cursor.0 = self.next_deliver - 1;
        drop(cursor);
        self.settle_read_back();
    }

    /// Acknowledges the numbers the last take found lost and dead-letters the records
    /// it found undecodable (as bytes: to the dead-letter log, or, without one or if
    /// that fails, left unacknowledged in the log).
    pub(super) fn settle_read_back(&mut self) {
        let Some(d) = &self.shared.durable else {
            return;
        };
        for (from, to) in self.lost.drain(..) {
            // (An error leaves them for the next start, whose recovery finds no record
            // for them either.)
            d.acked(d.storage.ack_range(from, to));
        }
        if !self.undecodable.is_empty() {
            let undecodable = std::mem::take(&mut self.undecodable);
            let n = undecodable.len() as u64;
            self.shared.counters.dead_lettered.fetch_add(n, Relaxed);
            let stored = match &d.dead_letters {
                Some(dead) => store_dead_letters(dead.as_ref(), undecodable, self.room(d)),
                None => Vec::new(),
            };
            d.acked(d.storage.ack_all(&stored));
            d.unstored.fetch_add(n - stored.len() as u64, Relaxed);
        }
    }

    /// Reads records `next_deliver..=upto` back from the log into `batch`, up to its
    /// room. Returns how many records the log handed over (those that did not decode
    /// included), or `None` if the log could not be read.
    ///
    /// Numbers the log skipped (records lost to damage) are to be acknowledged, and a
    /// record that does not decode (its type does not come back from its own encoding,
    /// or changed since it was written) to be dead-lettered as it is: both once the take
    /// is done (`settle_read_back`).
    pub(super) fn read_back(
        &mut self,
        batch: &mut Batch<T>,
        max: usize,
        upto: u64,
    ) -> Option<usize> {
        // (Borrowed, not cloned: the `Arc`'s count shares a cache line with the fields
        // every `enqueue` reads, and this runs for every gap the spill read-back fills.)
        let d = self.shared.durable.as_ref().expect("durable mode");
        let room = max - batch.len();
        let mut next = self.next_deliver;
        let mut visited = 0;
        let decode = d.codec.decode;
        let (lost, undecodable) = (&mut self.lost, &mut self.undecodable);
        let result = d.storage.read_keyed(next, room, &mut |seq, key, bytes| {
            if seq > upto {
                return false;
            }
            if seq > next {
                lost.push((next, seq - 1));
            }
            match decode(bytes) {
                Ok(item) => batch.push_keyed(seq, key, item),
                Err(e) => undecodable.push(StoredRecord {
                    seq,
                    reason: UNDECODABLE.into(),
                    error: e.to_string(),
                    payload: bytes.to_vec(),
                    key,
                }),
            }
            visited += 1;
            next = seq + 1;
            true
        });
        self.next_deliver = self.next_deliver.max(next);
        result.ok().map(|_| visited)
    }
}
