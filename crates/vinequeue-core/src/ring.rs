//! The bounded lock-free ring that sits between producers and the batcher.
//!
//! # Algorithm
//!
//! A fixed array of slots, each with an atomic *stamp*, and two atomic positions, `head`
//! (next slot to take from) and `tail` (next slot to fill). This is the array queue of
//! Dmitry Vyukov with one change: a position is not a plain counter but `lap * LAP + index`,
//! where `LAP` is the smallest power of two above the capacity. The capacity is therefore
//! exact (a `memory_size` of 10 000 holds 10 000 items, not 16 384) while finding a slot is
//! still a mask and a shift, never a division.
//!
//! # Invariants
//!
//! For the slot at `index`, in the lap whose first position is `base`, with `pos = base + index`:
//!
//! 1. `stamp == pos`: the slot is empty, and the push that claims position `pos` may fill it.
//! 2. `stamp == pos + 1`: the slot holds the initialised value pushed at `pos`, and the pop
//!    that claims position `pos` may take it.
//! 3. After that pop, `stamp == pos + LAP`: the slot is empty for the next lap (rule 1 again).
//!
//! A position is *claimed* by the one thread whose compare-exchange moves `tail` (push) or
//! `head` (pop) past it. Only the claimer touches the slot's value, and it publishes the
//! new stamp with `Release` once it is done; the next claimer reads the stamp with `Acquire`
//! before touching the value. So every access to a value is exclusive, and a value is read
//! exactly once after being written exactly once.
//!
//! `tail` also carries the `CLOSED` bit. Setting it (`close`) makes every later push fail,
//! atomically with respect to the pushes: a push either moved `tail` before the bit was set
//! (and its value will be drained) or it sees the bit and hands the value back.
//!
//! Positions are `u64`: at one push per nanosecond they would take centuries to reach the
//! `CLOSED` bit, so they never wrap.
//!
//! # Memory ordering used by the queue's wake-up protocol
//!
//! The compare-exchanges on `head` and `tail` are `SeqCst`, and so are the loads of them in
//! `len`, `pushed` and the empty / full checks. The queue relies on this: a producer that
//! moved `tail` and then reads the batcher's wake-up threshold, and a batcher that stores
//! the threshold and then reads `tail`, cannot both miss each other.

use std::mem::MaybeUninit;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};

use crossbeam_utils::CachePadded;

use crate::loom::{fence, spin_hint, AtomicU64, UnsafeCell};

/// Set in `tail` once the ring is closed to pushes.
const CLOSED: u64 = 1 << 63;

struct Slot<T> {
    /// See the invariants in the module docs.
    stamp: AtomicU64,
    /// Initialised exactly when `stamp == pos + 1` for the slot's current lap.
    value: UnsafeCell<MaybeUninit<T>>,
}

/// Why a push did not happen. The value is handed back.
pub(crate) enum PushError<T> {
    /// All `capacity` slots hold values.
    Full(T),
    /// `close` was called.
    Closed(T),
}

/// A bounded multi-producer, multi-consumer queue of `T`.
pub(crate) struct Ring<T> {
    /// Position of the next slot to pop. Only ever grows. (Head and tail on cache lines
    /// of their own: 128 bytes on x86-64, covering the adjacent-line prefetcher.)
    head: CachePadded<AtomicU64>,
    /// Position of the next slot to push, plus the `CLOSED` bit. Only ever grows.
    tail: CachePadded<AtomicU64>,
    /// `cap` slots; the slot of position `pos` is `slots[pos & (lap - 1)]`.
    slots: Box<[Slot<T>]>,
    /// Number of slots, at least 1.
    cap: u64,
    /// Smallest power of two strictly greater than `cap`.
    lap: u64,
    /// `lap.trailing_zeros()`.
    lap_shift: u32,
}

// SAFETY: the ring moves `T` values between threads (so it needs `T: Send`) and never hands
// out references to them; every access to a slot's value is exclusive to the thread that
// claimed its position (module invariants), so sharing the ring (`Sync`) needs no more than
// `T: Send`, exactly as for a channel.
unsafe impl<T: Send> Send for Ring<T> {}
// SAFETY: see the `Send` impl above.
unsafe impl<T: Send> Sync for Ring<T> {}

impl<T> Ring<T> {
    /// A ring of `capacity` slots.
    ///
    /// # Panics
    ///
    /// If `capacity` is 0 or above 2^40 (the queue's config validation rejects both first).
    pub(crate) fn new(capacity: usize) -> Self {
        assert!(
            capacity > 0 && (capacity as u64) <= 1 << 40,
            "ring capacity out of range"
        );
        let cap = capacity as u64;
        let lap = (cap + 1).next_power_of_two();
        let slots = (0..cap)
            .map(|i| Slot {
                stamp: AtomicU64::new(i),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            })
            .collect();
        Ring {
            head: CachePadded::new(AtomicU64::new(0)),
            tail: CachePadded::new(AtomicU64::new(0)),
            slots,
            cap,
            lap,
            lap_shift: lap.trailing_zeros(),
        }
    }

    #[inline(always)]
    fn slot(&self, pos: u64) -> &Slot<T> {
        let index = (pos & (self.lap - 1)) as usize;
        debug_assert!(index < self.slots.len());
        &self.slots[index]
    }

    /// The position after `pos`.
    #[inline(always)]
    fn next(&self, pos: u64) -> u64 {
        let index = pos & (self.lap - 1);
        debug_assert!(index < self.cap);
        if index + 1 < self.cap {
            pos + 1
        } else {
            (pos & !(self.lap - 1)) + self.lap
        }
    }

    /// How many positions come before `pos` (its 0-based ordinal).
    #[inline(always)]
    fn ordinal(&self, pos: u64) -> u64 {
        (pos >> self.lap_shift) * self.cap + (pos & (self.lap - 1))
    }

    /// Pushes `value` at the tail. On success returns the value's ordinal: the number of
    /// values pushed before it.
    #[inline(always)]
    pub(crate) fn push(&self, value: T) -> Result<u64, PushError<T>> {
        let mut step = 0;
        let mut tail = self.tail.load(Relaxed);
        loop {
            if tail & CLOSED != 0 {
                return Err(PushError::Closed(value));
            }
            let slot = self.slot(tail);
            let stamp = slot.stamp.load(Acquire);
            if stamp == tail {
                match self
                    .tail
                    .compare_exchange_weak(tail, self.next(tail), SeqCst, Relaxed)
                {
                    Ok(_) => {
                        // SAFETY: 1. our compare-exchange claimed position `tail`, so no
                        // other thread touches this slot until we store the new stamp;
                        // 2. `stamp == tail` (read with Acquire) means the previous value,
                        // if any, was read out and the slot holds no initialised value, so
                        // overwriting it leaks nothing.
                        slot.value
                            .with_mut(|p| unsafe { p.write(MaybeUninit::new(value)) });
                        slot.stamp.store(tail + 1, Release);
                        return Ok(self.ordinal(tail));
                    }
                    Err(current) => {
                        tail = current;
                        spin_hint(step.min(3));
                        step += 1;
                    }
                }
            } else if stamp.wrapping_add(self.lap) == tail + 1 {
                // The slot still holds the value pushed one lap ago: the ring may be full.
                fence(SeqCst);
                let head = self.head.load(SeqCst);
                if head.wrapping_add(self.lap) == tail {
                    return Err(PushError::Full(value));
                }
                // A pop has claimed that value but not yet released the slot.
                spin_hint(step);
                step += 1;
                tail = self.tail.load(Relaxed);
            } else {
                // Another producer claimed `tail` first.
                spin_hint(step.min(3));
                step += 1;
                tail = self.tail.load(Relaxed);
            }
        }
    }

    /// Pops the value at the head with its ordinal, or `None` if the ring is empty.
    ///
    /// If a producer has claimed the head position but not yet written it, this waits
    /// (spinning, then yielding) for that write: it never reports an item as missing.
    #[inline(always)]
    pub(crate) fn pop(&self) -> Option<(u64, T)> {
        let mut step = 0;
        let mut head = self.head.load(Relaxed);
        loop {
            let slot = self.slot(head);
            let stamp = slot.stamp.load(Acquire);
            if stamp == head + 1 {
                match self
                    .head
                    .compare_exchange_weak(head, self.next(head), SeqCst, Relaxed)
                {
                    Ok(_) => {
                        // SAFETY: 1. our compare-exchange claimed position `head`, so no
                        // other thread touches this slot until we store the new stamp;
                        // 2. `stamp == head + 1` (read with Acquire) means the push of
                        // `head` finished writing an initialised value, which we move out
                        // exactly once; the stamp we store marks the slot empty.
                        let value = slot.value.with_mut(|p| unsafe { p.read().assume_init() });
                        slot.stamp.store(head + self.lap, Release);
                        return Some((self.ordinal(head), value));
                    }
                    Err(current) => {
                        head = current;
                        spin_hint(step.min(3));
                        step += 1;
                    }
                }
            } else if stamp == head {
                // Nothing written here yet for this lap: empty, or a push is mid-way.
                fence(SeqCst);
                let tail = self.tail.load(SeqCst) & !CLOSED;
                if tail == head {
                    return None;
                }
                spin_hint(step);
                step += 1;
                head = self.head.load(Relaxed);
            } else {
                // Another consumer claimed `head` first, or is still releasing last lap.
                spin_hint(step.min(3));
                step += 1;
                head = self.head.load(Relaxed);
            }
        }
    }

    /// Pops up to `max` values into `out`, returning how many it moved. Each value comes
    /// with its ordinal; ordinals are increasing but may have gaps if other threads pop too.
    pub(crate) fn pop_into(&self, out: &mut Vec<(u64, T)>, max: usize) -> usize {
        let mut moved = 0;
        while moved < max {
            match self.pop() {
                Some(entry) => {
                    out.push(entry);
                    moved += 1;
                }
                None => break,
            }
        }
        moved
    }

    /// Number of values pushed so far (successful pushes only).
    #[inline]
    pub(crate) fn pushed(&self) -> u64 {
        self.ordinal(self.tail.load(SeqCst) & !CLOSED)
    }

    /// Number of values popped so far.
    #[inline]
    pub(crate) fn popped(&self) -> u64 {
        self.ordinal(self.head.load(SeqCst))
    }

    /// Number of values in the ring. Racy by nature: a snapshot of a moving target.
    pub(crate) fn len(&self) -> usize {
        loop {
            let tail = self.tail.load(SeqCst);
            let head = self.head.load(SeqCst);
            if self.tail.load(SeqCst) == tail {
                let len = self
                    .ordinal(tail & !CLOSED)
                    .saturating_sub(self.ordinal(head));
                return len as usize;
            }
        }
    }

    /// Whether the ring holds no values (a racy snapshot, like `len`).
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses every later push. Returns `true` for the call that closed it.
    pub(crate) fn close(&self) -> bool {
        self.tail.fetch_or(CLOSED, SeqCst) & CLOSED == 0
    }

    /// Whether `close` was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.tail.load(SeqCst) & CLOSED != 0
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        if !std::mem::needs_drop::<T>() {
            return;
        }
        // `&mut self`: no push or pop is in progress, so every position in head..tail holds
        // an initialised value (a claimed position is always written before its claimer
        // returns, and writing cannot panic).
        let mut pos = self.head.load(Relaxed);
        let tail = self.tail.load(Relaxed) & !CLOSED;
        while pos != tail {
            let slot = self.slot(pos);
            // SAFETY: by the comment above, `pos` holds an initialised value that nobody
            // else can reach any more; it is dropped exactly once because `pos` advances.
            slot.value
                .with_mut(|p| unsafe { std::ptr::drop_in_place((*p).as_mut_ptr()) });
            pos = self.next(pos);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn exact_capacity_and_fifo_across_many_laps() {
        for cap in [1usize, 2, 3, 7, 8, 9, 100] {
            let ring = Ring::new(cap);
            let mut next_in = 0u64;
            let mut next_out = 0u64;
            for _round in 0..5 {
                while let Ok(ordinal) = ring.push(next_in) {
                    assert_eq!(ordinal, next_in);
                    next_in += 1;
                }
                assert_eq!(ring.len(), cap, "capacity {cap}");
                assert!(matches!(ring.push(0), Err(PushError::Full(0))));
                // take a few out, so the next round wraps at a different index
                for _ in 0..(cap / 2 + 1) {
                    let (ordinal, v) = ring.pop().unwrap();
                    assert_eq!((ordinal, v), (next_out, next_out));
                    next_out += 1;
                }
            }
            while let Some((ordinal, v)) = ring.pop() {
                assert_eq!((ordinal, v), (next_out, next_out));
                next_out += 1;
            }
            assert_eq!(next_out, next_in);
            assert!(ring.is_empty());
            assert_eq!(ring.pushed(), next_in);
            assert_eq!(ring.popped(), next_out);
        }
    }

    #[test]
    fn close_refuses_pushes_but_keeps_values() {
        let ring = Ring::new(4);
        ring.push(1).ok().unwrap();
        assert!(ring.close());
        assert!(!ring.close());
        assert!(ring.is_closed());
        assert!(matches!(ring.push(2), Err(PushError::Closed(2))));
        assert_eq!(ring.pop().map(|e| e.1), Some(1));
        assert!(ring.pop().is_none());
    }

    #[test]
    fn drop_releases_values_still_inside() {
        let marker = Arc::new(());
        {
            let ring = Ring::new(8);
            for _ in 0..5 {
                ring.push(Arc::clone(&marker)).ok().unwrap();
            }
            ring.pop();
            assert_eq!(Arc::strong_count(&marker), 5);
        }
        assert_eq!(Arc::strong_count(&marker), 1);
    }

    #[test]
    fn pop_into_moves_at_most_max() {
        let ring = Ring::new(16);
        for i in 0..10 {
            ring.push(i).ok().unwrap();
        }
        let mut out = Vec::new();
        assert_eq!(ring.pop_into(&mut out, 4), 4);
        assert_eq!(ring.pop_into(&mut out, 100), 6);
        let values: Vec<_> = out.iter().map(|e| e.1).collect();
        assert_eq!(values, (0..10).collect::<Vec<_>>());
    }

    /// Producers and consumers hammer a small ring (so it wraps and fills constantly);
    /// every value must come out exactly once, and each producer's values in its order.
    #[test]
    fn stress_many_producers_many_consumers() {
        let producers = 4u64;
        let per_producer: u64 = if cfg!(miri) { 200 } else { 200_000 };
        let ring = Arc::new(Ring::new(64));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut handles = Vec::new();
        for p in 0..producers {
            let ring = Arc::clone(&ring);
            handles.push(std::thread::spawn(move || {
                for i in 0..per_producer {
                    let mut v = (p << 32) | i;
                    loop {
                        match ring.push(v) {
                            Ok(_) => break,
                            Err(PushError::Full(back)) => {
                                v = back;
                                std::thread::yield_now();
                            }
                            Err(PushError::Closed(_)) => unreachable!(),
                        }
                    }
                }
            }));
        }
        let mut consumers = Vec::new();
        for _ in 0..2 {
            let ring = Arc::clone(&ring);
            let done = Arc::clone(&done);
            consumers.push(std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut last_ordinal = None;
                loop {
                    match ring.pop() {
                        Some((ordinal, v)) => {
                            if let Some(last) = last_ordinal {
                                assert!(ordinal > last, "ordinals must increase per consumer");
                            }
                            last_ordinal = Some(ordinal);
                            seen.push(v);
                        }
                        None if done.load(SeqCst) && ring.is_empty() => break,
                        None => std::thread::yield_now(),
                    }
                }
                seen
            }));
        }
        for h in handles {
            h.join().unwrap();
        }
        done.store(true, SeqCst);
        let mut per = vec![Vec::new(); producers as usize];
        let mut all = Vec::new();
        for c in consumers {
            let seen = c.join().unwrap();
            // within one consumer, each producer's values must be increasing
            let mut last = vec![None; producers as usize];
            for &v in &seen {
                let (p, i) = ((v >> 32) as usize, v & 0xffff_ffff);
                if let Some(prev) = last[p] {
                    assert!(i > prev, "producer {p}: {i} after {prev}");
                }
                last[p] = Some(i);
                per[p].push(i);
            }
            all.extend(seen);
        }
        assert_eq!(all.len() as u64, producers * per_producer);
        for (p, mut values) in per.into_iter().enumerate() {
            values.sort_unstable();
            assert_eq!(
                values,
                (0..per_producer).collect::<Vec<_>>(),
                "producer {p} lost or duplicated values"
            );
        }
        assert_eq!(ring.pushed(), producers * per_producer);
        assert_eq!(ring.popped(), producers * per_producer);
    }

    /// One consumer (the batcher's situation): a global FIFO by ordinal.
    #[test]
    fn single_consumer_sees_ordinals_in_order_without_gaps() {
        let ring = Arc::new(Ring::new(32));
        let total = if cfg!(miri) { 300 } else { 300_000u64 };
        let producers: Vec<_> = (0..3)
            .map(|_| {
                let ring = Arc::clone(&ring);
                std::thread::spawn(move || {
                    for i in 0..total / 3 {
                        let mut v = i;
                        while let Err(PushError::Full(back)) = ring.push(v) {
                            v = back;
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let mut expected = 0;
        while expected < total {
            match ring.pop() {
                Some((ordinal, _)) => {
                    assert_eq!(ordinal, expected);
                    expected += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        for p in producers {
            p.join().unwrap();
        }
    }
}
