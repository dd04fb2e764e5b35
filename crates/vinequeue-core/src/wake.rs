//! The handshake that wakes a waiting batcher when producers fill the ring, at no cost to
//! a producer when nobody waits: [`WakeAt`].
//!
//! The batcher announces a threshold ("wake me once `pushed >= threshold`"), then looks at
//! the ring once more and waits only if it is still below. A producer moves the ring's
//! tail, then reads the threshold; if its push reached it, it takes the threshold back
//! (one swap, so that only one producer wakes the batcher) and wakes the batcher. All four
//! operations are `SeqCst`: in their single total order either the batcher's second look
//! comes after the push (and sees it), or the producer's read comes after the announce
//! (and wakes it). The loom model in `loom_wake.rs` runs this very code (with the fences
//! that stand in, under loom, for the `SeqCst` total order: see `crate::loom`).

use std::sync::atomic::Ordering::SeqCst;

use crate::loom::AtomicU64;

/// "No wake-up wanted".
const NO_WAKE: u64 = u64::MAX;

/// The threshold a waiting batcher asked to be woken at; `NO_WAKE` otherwise.
#[derive(Debug)]
pub(crate) struct WakeAt(AtomicU64);

impl WakeAt {
    pub(crate) fn new() -> Self {
        WakeAt(AtomicU64::new(NO_WAKE))
    }

    /// The waiting side: wake me once `pushed >= threshold`. Look at the ring again
    /// before waiting.
    pub(crate) fn announce(&self, threshold: u64) {
        self.0.store(threshold, SeqCst);
        crate::loom::order_like_seqcst();
    }

    /// The waiting side, done waiting (or deciding not to): no wake-up wanted.
    pub(crate) fn clear(&self) {
        self.0.store(NO_WAKE, SeqCst);
    }

    /// Whether the batcher waits for pushes (for producers whose item spilled to the
    /// log: any new item is news to a waiting batcher).
    pub(crate) fn is_waiting(&self) -> bool {
        self.0.load(SeqCst) != NO_WAKE
    }

    /// The producing side, after its push took ordinal `ordinal` (so that `pushed` is at
    /// least `ordinal + 1`): whether this producer must wake the batcher. One load on
    /// the fast path; at most one producer gets `true` per announced threshold.
    #[inline(always)]
    pub(crate) fn reached_by(&self, ordinal: u64) -> bool {
        crate::loom::order_like_seqcst();
        ordinal >= self.0.load(SeqCst).saturating_sub(1) && self.take()
    }

    #[cold]
    fn take(&self) -> bool {
        self.0.swap(NO_WAKE, SeqCst) != NO_WAKE
    }
}
