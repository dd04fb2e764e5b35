//! Loom models of the wake-up handshake (`crate::wake`) between producers and a waiting
//! batcher, over the real ring: every interleaving, with a wait that has no timeout, so
//! that a lost wake-up shows up as a deadlock rather than a backstop's delay.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p vinequeue-core --release --lib loom_`
//! (the script `ci/loom` does exactly that).

use crate::ring::Ring;
use crate::wake::WakeAt;
use loom::sync::Arc;
use loom::thread;

/// The batcher's side, as `Batcher::park_until` does it: announce, look again, wait only
/// if still short, clear. Returns once `threshold` items were pushed.
fn wait_for(ring: &Ring<u32>, wake: &WakeAt, threshold: u64) {
    while ring.pushed() < threshold {
        wake.announce(threshold);
        if ring.pushed() < threshold {
            thread::park();
        }
        wake.clear();
    }
}

/// The producer's side, as `QueueState::after_push` does it.
fn push(ring: &Ring<u32>, wake: &WakeAt, batcher: &thread::Thread, value: u32) {
    let ordinal = ring.push(value).ok().expect("room in the ring");
    if wake.reached_by(ordinal) {
        batcher.unpark();
    }
}

/// One producer pushes the item a batcher waits for: the batcher always wakes.
#[test]
fn loom_a_push_wakes_the_waiting_batcher() {
    loom::model(|| {
        let ring = Arc::new(Ring::new(2));
        let wake = Arc::new(WakeAt::new());
        let batcher = thread::current();
        let producer = {
            let (ring, wake) = (Arc::clone(&ring), Arc::clone(&wake));
            thread::spawn(move || push(&ring, &wake, &batcher, 1))
        };
        wait_for(&ring, &wake, 1);
        assert_eq!(ring.pop().map(|e| e.1), Some(1));
        producer.join().unwrap();
    });
}

/// Two producers, a batcher waiting for both items (a batch to fill): whichever push
/// reaches the threshold wakes it, and only one of them pays for the wake-up.
#[test]
fn loom_the_push_that_fills_the_batch_wakes_the_batcher() {
    loom::model(|| {
        let ring = Arc::new(Ring::new(2));
        let wake = Arc::new(WakeAt::new());
        let producers: Vec<_> = (0..2u32)
            .map(|v| {
                let (ring, wake) = (Arc::clone(&ring), Arc::clone(&wake));
                let batcher = thread::current();
                thread::spawn(move || push(&ring, &wake, &batcher, v))
            })
            .collect();
        wait_for(&ring, &wake, 2);
        let mut got = vec![ring.pop().unwrap().1, ring.pop().unwrap().1];
        got.sort_unstable();
        assert_eq!(got, vec![0, 1]);
        for p in producers {
            p.join().unwrap();
        }
    });
}
