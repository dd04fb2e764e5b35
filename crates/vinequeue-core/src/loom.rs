//! One place that decides whether the concurrency primitives come from `std` or from `loom`.
//!
//! The ring buffer imports everything it synchronises with from here, so that the model
//! tests (`cargo test` with `RUSTFLAGS="--cfg loom"`) explore every interleaving of the very
//! same code that ships. `UnsafeCell` is reached only through `with` / `with_mut`, which is
//! the shape loom's checked cell requires.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU64};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU64};

/// Under loom, a `SeqCst` fence; otherwise nothing.
///
/// Loom treats `SeqCst` loads and stores as acquire/release: it does not model the single
/// total order that the C++ memory model gives them, on which a Dekker-style handshake
/// (each side stores, then loads what the other stored) relies. For such a pair, a
/// `SeqCst` fence between each side's store and load gives the same guarantee, and loom
/// models fences. The shipped code has the `SeqCst` accesses (on x86 the producer's
/// compare-exchange is a full barrier already) and no fence on its hot path; the model
/// runs the same code with the fences that stand in for the total order.
#[inline(always)]
pub(crate) fn order_like_seqcst() {
    #[cfg(loom)]
    fence(std::sync::atomic::Ordering::SeqCst);
}

/// Tells the scheduler (or the loom model) that this thread waits for another one.
#[inline]
pub(crate) fn spin_hint(step: u32) {
    #[cfg(loom)]
    {
        let _ = step;
        loom::thread::yield_now();
    }
    #[cfg(not(loom))]
    {
        if step < 6 {
            for _ in 0..(1u32 << step) {
                std::hint::spin_loop();
            }
        } else {
            std::thread::yield_now();
        }
    }
}

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

/// `std`'s `UnsafeCell` with loom's closure-based access API.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}
