//! Loom models of the ring: every interleaving of a few threads, checked exhaustively.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p vinequeue-core --release --lib loom_`
//! (the script `ci/loom` does exactly that).

use crate::ring::{PushError, Ring};
use loom::sync::Arc;
use loom::thread;

/// Two producers race for a one-slot ring while the consumer drains it: every value that a
/// push accepted comes out exactly once, and a refused value is handed back intact.
#[test]
fn loom_two_producers_one_slot() {
    loom::model(|| {
        let ring = Arc::new(Ring::new(1));
        let producers: Vec<_> = (0..2u32)
            .map(|p| {
                let ring = Arc::clone(&ring);
                thread::spawn(move || match ring.push(p) {
                    Ok(_) => None,
                    Err(PushError::Full(v)) => Some(v),
                    Err(PushError::Closed(_)) => unreachable!(),
                })
            })
            .collect();
        let mut got = Vec::new();
        if let Some((_, v)) = ring.pop() {
            got.push(v);
        }
        let mut refused = Vec::new();
        for p in producers {
            if let Some(v) = p.join().unwrap() {
                refused.push(v);
            }
        }
        while let Some((_, v)) = ring.pop() {
            got.push(v);
        }
        got.extend(refused);
        got.sort_unstable();
        assert_eq!(got, vec![0, 1]);
    });
}

/// Wrap-around: with two slots and a consumer running alongside, values cross the lap
/// boundary; order and exactly-once must hold.
#[test]
fn loom_fifo_across_lap_boundary() {
    loom::model(|| {
        let ring = Arc::new(Ring::new(2));
        ring.push(0u32).ok().unwrap();
        let producer = {
            let ring = Arc::clone(&ring);
            thread::spawn(move || {
                let mut accepted = Vec::new();
                for v in 1..3u32 {
                    if ring.push(v).is_ok() {
                        accepted.push(v);
                    }
                }
                accepted
            })
        };
        let mut got = Vec::new();
        for _ in 0..2 {
            if let Some((_, v)) = ring.pop() {
                got.push(v);
            }
        }
        let accepted = producer.join().unwrap();
        while let Some((_, v)) = ring.pop() {
            got.push(v);
        }
        let mut expected = vec![0];
        expected.extend(accepted);
        assert_eq!(got, expected);
    });
}

/// `close` races a push: the push either lands before the close (and is drained) or is
/// handed back as `Closed`; nothing is lost between the two.
#[test]
fn loom_close_races_push() {
    loom::model(|| {
        let ring = Arc::new(Ring::new(2));
        let producer = {
            let ring = Arc::clone(&ring);
            thread::spawn(move || ring.push(7u32).is_ok())
        };
        ring.close();
        let mut drained = Vec::new();
        let accepted = producer.join().unwrap();
        while let Some((_, v)) = ring.pop() {
            drained.push(v);
        }
        assert_eq!(drained, if accepted { vec![7] } else { vec![] });
        assert!(matches!(ring.push(8), Err(PushError::Closed(8))));
    });
}

/// Two consumers (the batcher and a `DropOldest` producer) race for the same value.
#[test]
fn loom_two_consumers_take_each_value_once() {
    loom::model(|| {
        let ring = Arc::new(Ring::new(2));
        ring.push(1u32).ok().unwrap();
        ring.push(2u32).ok().unwrap();
        let other = {
            let ring = Arc::clone(&ring);
            thread::spawn(move || ring.pop().map(|e| e.1))
        };
        let mine = ring.pop().map(|e| e.1);
        let theirs = other.join().unwrap();
        let mut got: Vec<_> = mine.into_iter().chain(theirs).collect();
        got.sort_unstable();
        assert_eq!(got, vec![1, 2]);
        assert!(ring.pop().is_none());
    });
}
