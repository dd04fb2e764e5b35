//! Enqueueing: memory and durable paths, encoding, the overflow policies, and the
//! non-blocking entry points adapters use.

use super::*;

impl<T: Send + 'static> Queue<T> {
    /// Hands `item` to the queue.
    ///
    /// When it returns `Ok`, the item will reach the sink at least once, or be handed to
    /// the dead-letter hook, or (under `DropOldest` / `DropNewest`) be counted as dropped.
    ///
    /// # Errors
    ///
    /// The item comes back inside the error: [`EnqueueError::Full`] when the overflow
    /// policy refuses it (on the batcher thread, inside the sink or a dead-letter
    /// handler, `Block` refuses at once: the room it would wait for is made by that very
    /// thread), [`EnqueueError::Closed`] after `stop()`.
    ///
    /// ```
    /// use vinequeue_core::{Config, EnqueueError, NullSink, OverflowPolicy, Queue};
    ///
    /// let config = Config::default().memory_size(1).batch_size(1).overflow(OverflowPolicy::Reject);
    /// let queue = Queue::new(config, NullSink)?; // not started: nothing drains the ring
    /// queue.enqueue(1u32)?;
    /// match queue.enqueue(2) {
    ///     Err(EnqueueError::Full(item)) => assert_eq!(item, 2),
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), vinequeue_core::Error>(())
    /// ```
    #[inline]
    pub fn enqueue(&self, item: T) -> Result<(), EnqueueError<T>> {
        if let Some(d) = &self.shared.durable {
            return self.enqueue_durable(d, item, None);
        }
        self.enqueue_memory(item)
    }

    /// Hands `item` to the queue as [`enqueue`](Queue::enqueue) does, with the
    /// producer's *source position*: where in its source (a file it tails, a change
    /// stream, a partition) it was once it had read the item, as bytes of its own
    /// choosing (at most 255). The position is written to the log with the item's
    /// record, atomically, and outlives the record's delivery; after a restart,
    /// [`recovery`](Queue::recovery)`().source_position` is the position of the last
    /// item enqueued with one that the log kept. A producer that resumes reading right
    /// after it enqueues nothing twice and skips nothing: with a sink that deduplicates
    /// on [`Batch::key`](crate::Batch::key), source, queue and backend hold each item
    /// exactly once.
    ///
    /// What "kept" means follows the sync mode: under `Immediate` the position is
    /// durable when this returns `Ok`; under `Periodic` and `Os` a power cut can lose
    /// the last positions with their items (a process crash loses nothing).
    ///
    /// ```
    /// use vinequeue_core::{Config, NullSink, Queue};
    ///
    /// # let dir = std::env::temp_dir().join(format!("vq-enqueue-at-{}", std::process::id()));
    /// let config = || Config::default().wal_path(&dir);
    /// {
    ///     let queue = Queue::new(config(), NullSink)?;
    ///     for (offset, line) in ["a", "b", "c"].iter().enumerate() {
    ///         queue.enqueue_at(line.to_string(), (offset as u64 + 1).to_le_bytes())?;
    ///     }
    /// } // a crash here would do the same
    /// let queue = Queue::<String>::new(config(), NullSink)?;
    /// let resume = queue.recovery().source_position.expect("a position was stored");
    /// assert_eq!(resume, 3u64.to_le_bytes());
    /// # drop(queue);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`enqueue`](Queue::enqueue); [`EnqueueError::Failed`] with
    /// [`Error::Unsupported`] on a memory-only queue (it has nothing to resume from),
    /// with [`Error::Config`] for a position longer than 255 bytes or a storage of your
    /// own that keeps no positions.
    pub fn enqueue_at(&self, item: T, position: impl AsRef<[u8]>) -> Result<(), EnqueueError<T>> {
        match &self.shared.durable {
            Some(d) => self.enqueue_durable(d, item, Some(position.as_ref())),
            None => Err(EnqueueError::Failed(item, no_positions())),
        }
    }

    #[inline(always)]
    pub(super) fn enqueue_memory(&self, item: T) -> Result<(), EnqueueError<T>> {
        match self.shared.ring.push((0, item)) {
            Ok(ordinal) => {
                self.shared.after_push(ordinal);
                Ok(())
            }
            Err(PushError::Full((_, item))) => self.overflow(item),
            Err(PushError::Closed((_, item))) => Err(EnqueueError::Closed(item)),
        }
    }

    /// Durable mode: encode here, append under the append lock, push into the ring if
    /// there is room (else the item lives in the log only: spilled), then wait for the
    /// sync under `Immediate`.
    #[inline(never)]
    pub(super) fn enqueue_durable(
        &self,
        d: &DurableState<T>,
        item: T,
        position: Option<&[u8]>,
    ) -> Result<(), EnqueueError<T>> {
        self.with_encoded(d, item, |buf, item| {
            if self.shared.config.sync_mode != SyncMode::Immediate {
                if !d.decode_checked.load(Relaxed) {
                    return self.check_decodes_then_append(d, buf, item, position);
                }
                return self.append_or_overflow(d, buf, item, true, position);
            }
            // Under `Immediate` a failed sync hands back a copy of an item that is queued
            // but not known durable; decoding it now (cheap next to the sync) also refuses
            // an item whose type does not come back from its encoding, which could never
            // be replayed.
            let copy = match (d.codec.decode)(buf) {
                Ok(copy) => copy,
                Err(e) => return Err(EnqueueError::Failed(item, undecodable(e))),
            };
            let seq = self.append_or_overflow(d, buf, item, true, position)?;
            if seq > 0 {
                if let Err(e) = d.storage.sync_through(seq) {
                    return Err(EnqueueError::Failed(copy, e));
                }
            }
            Ok(seq)
        })
        .map(|_| ())
    }

    /// The first item of a queue under `Os` or `Periodic`: refused if it does not decode
    /// from its own encoding. Its type could then never come back from the log (a
    /// spilled or replayed item would have to be dead-lettered as bytes), and saying so
    /// at the first `enqueue` beats finding out in an outage. (Under `Immediate` every
    /// item is checked.)
    #[cold]
    pub(super) fn check_decodes_then_append(
        &self,
        d: &DurableState<T>,
        buf: &[u8],
        item: T,
        position: Option<&[u8]>,
    ) -> Result<u64, EnqueueError<T>> {
        if let Err(e) = (d.codec.decode)(buf) {
            return Err(EnqueueError::Failed(item, undecodable(e)));
        }
        d.decode_checked.store(true, Relaxed);
        self.append_or_overflow(d, buf, item, true, position)
    }

    /// Encodes `item` into this thread's reusable buffer (a fresh one if it is in use,
    /// which only a re-entrant call from inside a sink could cause) and runs `then`.
    ///
    /// Inlined, with `then` called from one place: each call level the item passes
    /// through by value is a copy of it.
    #[inline(always)]
    pub(super) fn with_encoded(
        &self,
        d: &DurableState<T>,
        item: T,
        then: impl FnOnce(&[u8], T) -> Result<u64, EnqueueError<T>>,
    ) -> Result<u64, EnqueueError<T>> {
        crate::codec::ENCODE_BUF.with(|cell| {
            let mut fresh = Vec::new();
            let mut shared = cell.try_borrow_mut().ok();
            let buf = match shared.as_deref_mut() {
                Some(buf) => {
                    buf.clear();
                    buf
                }
                None => &mut fresh,
            };
            match (d.codec.encode_into)(&item, buf) {
                Ok(()) => then(buf, item),
                Err(e) => Err(EnqueueError::Failed(item, e)),
            }
        })
    }

    /// Appends the encoded item (with its source position, if any) and queues it; on a
    /// full log applies the overflow policy, waiting (for `Block` and `DropOldest`) only
    /// if `wait`. Returns the item's sequence number, 0 if `DropNewest` dropped it.
    #[inline(always)]
    pub(super) fn append_or_overflow(
        &self,
        d: &DurableState<T>,
        bytes: &[u8],
        item: T,
        wait: bool,
        position: Option<&[u8]>,
    ) -> Result<u64, EnqueueError<T>> {
        match self.append_and_queue(d, bytes, item, position) {
            Ok(seq) => Ok(seq),
            Err(refused) => self.append_refused(d, bytes, refused, wait, position),
        }
    }

    /// [`append_or_overflow`](Self::append_or_overflow) once the append was refused with
    /// `first`: the overflow policy on a full log, the error otherwise.
    #[cold]
    #[inline(never)]
    pub(super) fn append_refused(
        &self,
        d: &DurableState<T>,
        bytes: &[u8],
        first: (Error, T),
        wait: bool,
        position: Option<&[u8]>,
    ) -> Result<u64, EnqueueError<T>> {
        let mut outcome = Err(first);
        let mut deadline = None;
        loop {
            let item = match outcome {
                Ok(seq) => return Ok(seq),
                Err((Error::LogFull { .. }, item)) => item,
                Err((Error::Closed, back)) => return Err(EnqueueError::Closed(back)),
                Err((e, back)) => {
                    event!(error, error = %e, "enqueue failed: the log refused the item");
                    return Err(EnqueueError::Failed(back, e));
                }
            };
            match self.shared.config.overflow {
                OverflowPolicy::Reject => return Err(EnqueueError::Full(item)),
                OverflowPolicy::DropOldest => {
                    if !self.shed_oldest(d) {
                        if !wait || self.shared.on_batcher_thread() {
                            return Err(EnqueueError::Full(item));
                        }
                        let end = *deadline
                            .get_or_insert_with(|| Instant::now() + Duration::from_secs(1));
                        if Instant::now() >= end {
                            return Err(EnqueueError::Full(item));
                        }
                        // Room comes once the batch in flight is acknowledged.
                        self.wait_for_progress(end.min(Instant::now() + Duration::from_millis(10)));
                    }
                }
                OverflowPolicy::DropNewest => {
                    self.shared.counters.dropped_newest.fetch_add(1, Relaxed);
                    event!(
                        debug,
                        policy = "DropNewest",
                        "the log is full: item dropped"
                    );
                    return Ok(0);
                }
                OverflowPolicy::Block(timeout) => {
                    // (Room comes from the batcher: on its own thread, no wait.)
                    if !wait || self.shared.on_batcher_thread() {
                        return Err(EnqueueError::Full(item));
                    }
                    let end = *deadline.get_or_insert_with(|| after(Instant::now(), timeout));
                    if Instant::now() >= end {
                        return Err(EnqueueError::Full(item));
                    }
                    // Acknowledgements free space; wait for progress, then retry.
                    self.wait_for_progress(end.min(Instant::now() + Duration::from_millis(50)));
                }
            }
            outcome = self.append_and_queue(d, bytes, item, position);
        }
    }

    /// Waits until the batcher resolves something, or `until`.
    pub(super) fn wait_for_progress(&self, until: Instant) {
        let seen = self.shared.resolved.load(SeqCst);
        self.shared
            .progress
            .wait_until(until, || self.shared.resolved.load(SeqCst) != seen);
    }

    #[doc(hidden)] // adapter plumbing: see the `adapter` module
    /// Hands `item` to the queue without ever blocking: for adapters (the async one) and
    /// for producers that must not wait.
    ///
    /// Where [`enqueue`](Queue::enqueue) would wait for room (`OverflowPolicy::Block`, or
    /// `DropOldest` on a full log while the oldest records are in flight), this returns
    /// [`EnqueueError::Full`] at once; call [`register_waker`](Queue::register_waker) and
    /// try again when woken. Under `SyncMode::Immediate` it does not wait for the sync
    /// either: the item is in the log but not yet known durable; [`sync`](Queue::sync)
    /// makes it so. (One wait remains, inside the log: an append that finds the log full
    /// while the deletion of delivered segments is under way waits for that deletion,
    /// milliseconds normally and at most a second, rather than report space missing
    /// that is being freed.)
    ///
    /// Returns the item's sequence number (0 if `DropNewest` dropped it).
    ///
    /// # Errors
    ///
    /// As [`enqueue`](Queue::enqueue), with `Full` for "no room now".
    ///
    /// ```
    /// use vinequeue_core::{Config, EnqueueError, NullSink, Queue};
    ///
    /// let queue = Queue::new(Config::default().memory_size(1).batch_size(1), NullSink)?;
    /// assert_eq!(queue.try_enqueue(7u32)?, 1);
    /// assert!(matches!(queue.try_enqueue(8), Err(EnqueueError::Full(8))));
    /// # Ok::<(), vinequeue_core::Error>(())
    /// ```
    pub fn try_enqueue(&self, item: T) -> Result<u64, EnqueueError<T>> {
        let s = &self.shared;
        if let Some(d) = &s.durable {
            return self.with_encoded(d, item, |buf, item| {
                self.append_or_overflow(d, buf, item, false, None)
            });
        }
        match s.ring.push((0, item)) {
            Ok(ordinal) => {
                s.after_push(ordinal);
                Ok(ordinal + 1)
            }
            Err(PushError::Full((_, item))) => match s.config.overflow {
                OverflowPolicy::Block(_) => Err(EnqueueError::Full(item)),
                _ => self.overflow(item).map(|()| 0),
            },
            Err(PushError::Closed((_, item))) => Err(EnqueueError::Closed(item)),
        }
    }

    #[doc(hidden)] // adapter plumbing: see the `adapter` module
    /// [`try_enqueue`](Queue::try_enqueue) with a source position, as
    /// [`enqueue_at`](Queue::enqueue_at) takes it: for adapters.
    ///
    /// # Errors
    ///
    /// As [`try_enqueue`](Queue::try_enqueue) and [`enqueue_at`](Queue::enqueue_at).
    pub fn try_enqueue_at(&self, item: T, position: &[u8]) -> Result<u64, EnqueueError<T>> {
        match &self.shared.durable {
            Some(d) => self.with_encoded(d, item, |buf, item| {
                self.append_or_overflow(d, buf, item, false, Some(position))
            }),
            None => Err(EnqueueError::Failed(item, no_positions())),
        }
    }

    #[doc(hidden)] // adapter plumbing: see the `adapter` module
    /// Encodes `item` as the log does and decodes it again: the copy an adapter hands back
    /// when an `Immediate` sync fails after the item was queued (what the blocking
    /// `enqueue` does itself).
    ///
    /// # Errors
    ///
    /// [`Error::Codec`] if the item does not encode, or does not decode from its own
    /// encoding (then it could never be replayed from the log); [`Error::Unsupported`] in
    /// memory mode.
    pub fn encoded_copy(&self, item: &T) -> Result<T, Error> {
        let d = self.shared.durable.as_ref().ok_or_else(|| {
            Error::Unsupported("a memory-only queue does not encode its items".into())
        })?;
        let bytes = d.codec.encode(item)?;
        (d.codec.decode)(&bytes).map_err(undecodable)
    }

    #[doc(hidden)] // adapter plumbing: see the `adapter` module
    /// Registers `waker` to be woken once, the next time the batcher makes room (takes
    /// items out of the ring) or progress (resolves a batch), or the queue closes: for
    /// async adapters waiting after [`try_enqueue`](Queue::try_enqueue) returned `Full`,
    /// or for [`delivered_through`](Queue::delivered_through) to pass a flush target.
    ///
    /// `key` identifies the registration: pass the same `Option` on every poll (it
    /// starts as `None`) so that a pending registration has its waker replaced rather
    /// than a second one added, and call [`unregister_waker`](Queue::unregister_waker)
    /// with it when the waiting future is dropped. Register first, then check the
    /// condition again: a change that happens in between wakes the waker.
    pub fn register_waker(&self, waker: &std::task::Waker, key: &mut Option<u64>) {
        self.shared.wakers.register(waker, key);
    }

    #[doc(hidden)] // adapter plumbing: see the `adapter` module
    /// Removes a registration made by [`register_waker`](Queue::register_waker) that has
    /// not fired yet (nothing happens if it has).
    pub fn unregister_waker(&self, key: u64) {
        self.shared.wakers.unregister(key);
    }

    /// `DropOldest` on a full log: drops (acknowledges and counts) the records of the
    /// oldest segment that the batcher has not taken yet. Returns whether it dropped any.
    pub(super) fn shed_oldest(&self, d: &DurableState<T>) -> bool {
        let Some(through) = d.storage.reclaim_hint() else {
            return false;
        };
        let mut cursor = d.cursor.lock();
        let from = cursor.0.max(cursor.1) + 1;
        let through = through.min(d.published.load(SeqCst));
        if through < from {
            return false;
        }
        cursor.1 = through;
        drop(cursor);
        d.acked(d.storage.ack_all(&(from..=through).collect::<Vec<_>>()));
        self.shared
            .counters
            .dropped_oldest
            .fetch_add(through - from + 1, Relaxed);
        event!(
            debug,
            policy = "DropOldest",
            from,
            through,
            "the log is full: oldest records dropped"
        );
        true
    }

    #[inline(always)]
    pub(super) fn append_and_queue(
        &self,
        d: &DurableState<T>,
        bytes: &[u8],
        item: T,
        position: Option<&[u8]>,
    ) -> Result<u64, (Error, T)> {
        let appended = self.append_locked(
            d,
            || match position {
                None => d.storage.append(bytes),
                Some(position) => d.storage.append_positioned(bytes, position),
            },
            Some(item),
        );
        appended.map_err(|(e, item)| (e, item.expect("a refused item comes back")))
    }

    /// Appends a redriven dead letter's item (its encoded bytes) with its key, straight to
    /// the log: not through the ring, so that the batcher reads it back with its key, as
    /// it reads a spilled item.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `stop()`; [`Error::Full`] on a full log; the log's error.
    pub(super) fn append_redriven(
        &self,
        d: &DurableState<T>,
        bytes: &[u8],
        key: u64,
    ) -> Result<u64, Error> {
        match self.append_locked(d, || d.storage.append_keyed(bytes, key), None) {
            Ok(seq) => Ok(seq),
            Err((Error::LogFull { .. }, _)) => Err(Error::Full),
            Err((e, _)) => Err(e),
        }
    }

    /// Under the append lock (records, ring and `published` in one order): `append`s a
    /// record, hands `item` to the ring if there is one and room (else the record lives
    /// in the log only: spilled, and the batcher reads it back), publishes its number
    /// and wakes the batcher as needed. A refused record hands `item` back.
    #[inline(always)]
    fn append_locked(
        &self,
        d: &DurableState<T>,
        append: impl FnOnce() -> Result<u64, Error>,
        item: Option<T>,
    ) -> Result<u64, (Error, Option<T>)> {
        let s = &self.shared;
        let guard = d.append_lock.lock();
        if s.ring.is_closed() {
            return Err((Error::Closed, item));
        }
        let seq = match append() {
            Ok(seq) => seq,
            Err(e) => return Err((e, item)),
        };
        // (Full: closed cannot happen under the lock. The item then lives in the log.)
        let pushed = item.and_then(|item| s.ring.push((seq, item)).ok());
        // Release is enough: the batcher only reads `published` when the ring is empty,
        // and an item that spilled found the ring full (and is counted below).
        d.published.store(seq, std::sync::atomic::Ordering::Release);
        if pushed.is_none() {
            // After `published`: a batcher that sees this count also sees the record.
            d.spilled.fetch_add(1, SeqCst);
        }
        drop(guard);
        match pushed {
            Some(ordinal) => s.after_push(ordinal),
            // Only a batcher waiting for items needs waking (one that is sending or
            // backing off looks at the log when it is done): it re-checks the spill
            // count after it stores `wake_at`, so one of the two sees the other.
            None if s.wake_at.is_waiting() => s.unpark_batcher(),
            None => {}
        }
        Ok(seq)
    }

    #[cold]
    pub(super) fn overflow(&self, item: T) -> Result<(), EnqueueError<T>> {
        let s = &self.shared;
        match s.config.overflow {
            OverflowPolicy::Reject => Err(EnqueueError::Full(item)),
            OverflowPolicy::DropNewest => {
                s.counters.dropped_newest.fetch_add(1, Relaxed);
                event!(
                    debug,
                    policy = "DropNewest",
                    "the ring is full: item dropped"
                );
                Ok(())
            }
            OverflowPolicy::DropOldest => {
                let mut item = item;
                loop {
                    if s.ring.pop().is_some() {
                        s.counters.dropped_oldest.fetch_add(1, Relaxed);
                        event!(
                            debug,
                            policy = "DropOldest",
                            "the ring is full: oldest item dropped"
                        );
                    }
                    match s.ring.push((0, item)) {
                        Ok(ordinal) => {
                            s.after_push(ordinal);
                            return Ok(());
                        }
                        Err(PushError::Full((_, back))) => item = back,
                        Err(PushError::Closed((_, back))) => {
                            return Err(EnqueueError::Closed(back))
                        }
                    }
                }
            }
            // Room comes from the batcher: on its own thread, waiting would wait for itself.
            OverflowPolicy::Block(_) if s.on_batcher_thread() => Err(EnqueueError::Full(item)),
            OverflowPolicy::Block(timeout) => self.block(item, after(Instant::now(), timeout)),
        }
    }

    pub(super) fn block(&self, item: T, deadline: Instant) -> Result<(), EnqueueError<T>> {
        let s = &self.shared;
        let mut slot = Some(item);
        let mut outcome = None;
        s.space.wait_until(deadline, || {
            let item = slot
                .take()
                .expect("the item is put back on every failed try");
            match s.ring.push((0, item)) {
                Ok(ordinal) => {
                    outcome = Some(Ok(ordinal));
                    true
                }
                Err(PushError::Closed((_, back))) => {
                    outcome = Some(Err(EnqueueError::Closed(back)));
                    true
                }
                Err(PushError::Full((_, back))) => {
                    slot = Some(back);
                    false
                }
            }
        });
        match outcome {
            Some(Ok(ordinal)) => {
                s.after_push(ordinal);
                Ok(())
            }
            Some(Err(e)) => Err(e),
            None => Err(EnqueueError::Full(
                slot.take().expect("still held after a timeout"),
            )),
        }
    }

    /// Hands every item of `items` to the queue, in order.
    ///
    /// # Errors
    ///
    /// As [`enqueue`](Queue::enqueue); the error carries exactly the items that were not
    /// accepted: the one that failed and all after it (those before it were accepted).
    pub fn enqueue_batch(&self, items: Vec<T>) -> Result<(), EnqueueError<Vec<T>>> {
        let mut rest = items.into_iter();
        while let Some(item) = rest.next() {
            if let Err(e) = self.enqueue(item) {
                return Err(e.map(|failed| std::iter::once(failed).chain(rest).collect()));
            }
        }
        Ok(())
    }
}

/// The error of `enqueue_at` on a memory-only queue.
fn no_positions() -> Error {
    Error::Unsupported(
        "a memory-only queue keeps no source positions (enqueue_at needs a wal_path)".into(),
    )
}

/// The error for an item that does not decode from its own encoding.
pub(super) fn undecodable(e: Error) -> Error {
    let message = "the item does not decode from its own encoding: types that need a \
                   self-describing format (deserialize_any: untagged or flattened enums, \
                   serde_json::Value) cannot go through the log";
    match e {
        Error::Codec(cause) => {
            Error::Codec(vinequeue_storage::CodecError::with_source(message, cause))
        }
        other => Error::Codec(vinequeue_storage::CodecError::with_source(message, other)),
    }
}
