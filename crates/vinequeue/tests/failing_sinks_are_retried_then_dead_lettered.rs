//! Retries, backoff, partial failures, permanent errors, panics and dead letters.

mod common;

use std::time::{Duration, Instant};

use common::recorder;
use vinequeue::{Batch, Config, DeadLetterReason, Queue, SendError};

fn fast_retries() -> Config {
    Config::default()
        .batch_size(4)
        .memory_size(64)
        .flush_timeout(Duration::from_millis(5))
        .retry_backoff(Duration::from_millis(2), Duration::from_millis(8))
}

#[test]
fn a_retryable_error_resends_the_same_batch_with_the_same_seqs() {
    let (sink, record) = recorder(|call, _: &Batch<u32>| {
        if call < 2 {
            Err(SendError::retry("broker unavailable"))
        } else {
            Ok(())
        }
    });
    let queue = Queue::new(fast_retries(), sink).unwrap();
    for i in 0..4 {
        queue.enqueue(i).unwrap();
    }
    queue.start().unwrap();
    queue.flush(Duration::from_secs(10)).unwrap();
    let r = record.lock();
    assert_eq!(r.calls.len(), 3);
    for (n, (seqs, items, attempt)) in r.calls.iter().enumerate() {
        assert_eq!(*attempt, n as u32);
        assert_eq!(seqs, &vec![1, 2, 3, 4]);
        assert_eq!(items, &vec![0, 1, 2, 3]);
    }
    assert_eq!(r.delivered.len(), 4);
    let m = queue.metrics();
    assert_eq!((m.errors_total, m.retries_total, m.sent_total), (2, 2, 4));
    assert_eq!(m.dead_lettered_total, 0);
}

#[test]
fn backoff_grows_between_attempts() {
    let stamps = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let s2 = std::sync::Arc::clone(&stamps);
    let (sink, _record) = recorder(move |call, _: &Batch<u8>| {
        s2.lock().push(Instant::now());
        if call < 4 {
            Err(SendError::retry("down"))
        } else {
            Ok(())
        }
    });
    let config = fast_retries()
        .retry_limit(10)
        .retry_backoff(Duration::from_millis(20), Duration::from_secs(1));
    let queue = Queue::new(config, sink).unwrap();
    queue.enqueue(1).unwrap();
    queue.start().unwrap();
    queue.flush(Duration::from_secs(10)).unwrap();
    let t = stamps.lock();
    let gaps: Vec<Duration> = t.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(
        gaps.len(),
        4,
        "four failed attempts, then the one that succeeds"
    );
    // Nominal pauses 20, 40, 80, 160 ms with jitter in [d/2, d]: each at least half its
    // nominal value, so a constant pause (of whatever length the first one has) fails.
    let floors = [10, 20, 40, 80];
    for (gap, floor) in gaps.iter().zip(floors) {
        assert!(*gap >= Duration::from_millis(floor), "gaps {gaps:?}");
    }
    assert!(
        gaps[3] > gaps[0] * 3 / 2,
        "the pauses did not grow: {gaps:?}"
    );
}

#[test]
fn a_partial_failure_retries_only_the_failed_items() {
    let (sink, record) = recorder(|call, _: &Batch<u32>| match call {
        0 => Err(SendError::partial([1, 3], "two rows rejected")),
        _ => Ok(()),
    });
    let queue = Queue::new(fast_retries(), sink).unwrap();
    for i in 10..14 {
        queue.enqueue(i).unwrap();
    }
    queue.start().unwrap();
    queue.flush(Duration::from_secs(10)).unwrap();
    let r = record.lock();
    assert_eq!(r.calls[1], (vec![2, 4], vec![11, 13], 1));
    let mut delivered: Vec<_> = r.delivered.iter().map(|d| d.1).collect();
    delivered.sort_unstable();
    assert_eq!(delivered, vec![10, 11, 12, 13]);
    assert_eq!(queue.metrics().sent_total, 4);
}

#[test]
fn a_partial_failure_with_only_bad_indices_retries_the_whole_batch() {
    let (sink, record) = recorder(|call, _: &Batch<u32>| match call {
        0 => Err(SendError::partial([99], "nonsense index")),
        _ => Ok(()),
    });
    let queue = Queue::new(fast_retries(), sink).unwrap();
    queue.enqueue_batch(vec![1, 2]).unwrap();
    queue.start().unwrap();
    queue.flush(Duration::from_secs(10)).unwrap();
    let r = record.lock();
    assert_eq!(r.calls[1].1, vec![1, 2]);
    assert_eq!(queue.metrics().sent_total, 2);
}

#[test]
fn a_permanent_error_dead_letters_the_batch_without_retrying() {
    let (sink, record) = recorder(|_, _: &Batch<u32>| Err(SendError::permanent("schema mismatch")));
    let queue = Queue::new(fast_retries(), sink).unwrap();
    queue.enqueue_batch(vec![1, 2, 3]).unwrap();
    queue.start().unwrap();
    queue.flush(Duration::from_secs(10)).unwrap();
    let r = record.lock();
    assert_eq!(r.calls.len(), 1);
    assert_eq!(r.dead.len(), 1);
    assert_eq!(
        r.dead[0],
        (vec![1, 2, 3], vec![1, 2, 3], DeadLetterReason::Permanent)
    );
    let m = queue.metrics();
    assert_eq!(
        (m.dead_lettered_total, m.sent_total, m.retries_total),
        (3, 0, 0)
    );
}

#[test]
fn exhausted_retries_dead_letter_the_batch_and_the_queue_moves_on() {
    let (sink, record) = recorder(|_, b: &Batch<u32>| {
        if b[0] == 0 {
            Err(SendError::retry("always fails"))
        } else {
            Ok(())
        }
    });
    let queue = Queue::new(fast_retries().batch_size(1).retry_limit(2), sink).unwrap();
    queue.enqueue_batch(vec![0, 1]).unwrap();
    queue.start().unwrap();
    queue.flush(Duration::from_secs(10)).unwrap();
    let r = record.lock();
    assert_eq!(r.calls.iter().filter(|c| c.1 == vec![0]).count(), 3);
    assert_eq!(
        r.dead,
        vec![(vec![1], vec![0], DeadLetterReason::RetriesExhausted)]
    );
    assert_eq!(r.delivered, vec![(2, 1)]);
    let m = queue.metrics();
    assert_eq!(m.enqueued_total, m.sent_total + m.dead_lettered_total);
}

#[test]
fn a_panicking_sink_is_a_failed_attempt_not_a_dead_queue() {
    let (sink, record) = recorder(|call, _: &Batch<u32>| {
        if call == 0 {
            panic!("bug in the sink");
        }
        Ok(())
    });
    let queue = Queue::new(fast_retries(), sink).unwrap();
    queue.enqueue(7).unwrap();
    queue.start().unwrap();
    queue.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(record.lock().delivered, vec![(1, 7)]);
    queue.enqueue(8).unwrap();
    queue.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(record.lock().delivered.len(), 2);
    let m = queue.metrics();
    assert_eq!((m.errors_total, m.retries_total), (1, 1));
}

#[test]
fn a_sink_that_always_panics_is_dead_lettered_with_the_panic_message() {
    use vinequeue::SinkExt;
    let letters = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let l2 = std::sync::Arc::clone(&letters);
    let sink = (|_: &Batch<u32>| -> Result<(), SendError> { panic!("kaboom") }).with_dead_letter(
        move |letter: vinequeue::DeadLetter<u32>| {
            l2.lock()
                .push((letter.to_vec(), letter.error(), letter.reason()));
        },
    );
    let queue = Queue::new(fast_retries().retry_limit(1), sink).unwrap();
    queue.enqueue(5).unwrap();
    queue.start().unwrap();
    queue.flush(Duration::from_secs(10)).unwrap();
    let letters = letters.lock();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].0, vec![5]);
    assert!(letters[0].1.contains("kaboom"), "{}", letters[0].1);
    assert_eq!(letters[0].2, DeadLetterReason::RetriesExhausted);
}

#[test]
fn a_panicking_dead_letter_handler_does_not_stop_delivery() {
    use vinequeue::SinkExt;
    let sink = (|b: &Batch<u32>| {
        if b[0] == 0 {
            Err(SendError::permanent("no"))
        } else {
            Ok(())
        }
    })
    .with_dead_letter(|_| panic!("handler bug"));
    let queue = Queue::new(fast_retries().batch_size(1), sink).unwrap();
    queue.enqueue_batch(vec![0, 1, 2]).unwrap();
    queue.start().unwrap();
    queue.flush(Duration::from_secs(10)).unwrap();
    let m = queue.metrics();
    assert_eq!((m.dead_lettered_total, m.sent_total), (1, 2));
}

#[test]
fn each_attempt_gets_send_timeout_as_its_deadline() {
    let (sink, _) = recorder(|_, b: &Batch<u8>| {
        let left = b.deadline().saturating_duration_since(Instant::now());
        assert!(left > Duration::from_secs(1) && left <= Duration::from_secs(2));
        Ok(())
    });
    let queue = Queue::new(fast_retries().send_timeout(Duration::from_secs(2)), sink).unwrap();
    queue.enqueue(1).unwrap();
    queue.start().unwrap();
    queue.flush(Duration::from_secs(10)).unwrap();
    // the assertion inside the sink would have panicked -> retried -> counted as an error
    assert_eq!(queue.metrics().errors_total, 0);
}

#[test]
fn question_mark_on_any_error_is_retryable() {
    let (sink, record) = recorder(|call, _: &Batch<u8>| {
        if call == 0 {
            let _n: u8 = "not a number".parse()?;
        }
        Ok(())
    });
    let queue = Queue::new(fast_retries(), sink).unwrap();
    queue.enqueue(1).unwrap();
    queue.start().unwrap();
    queue.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(record.lock().calls.len(), 2);
    assert_eq!(record.lock().delivered.len(), 1);
}

#[test]
fn a_durable_queue_retries_through_an_outage_by_default_and_a_memory_queue_gives_up() {
    // A backend down for 20 attempts (a database restart): the durable queue keeps
    // the batch and delivers it when the backend is back; nothing is dead-lettered.
    let down_for = 20;
    let failing = move |call: usize, _: &Batch<u32>| {
        if call < down_for {
            Err(SendError::retry("connection refused"))
        } else {
            Ok(())
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let (sink, record) = recorder(failing);
    let queue = Queue::new(fast_retries().wal_path(dir.path()), sink).unwrap();
    assert_eq!(queue.config().get_retry_limit(), None);
    for i in 0..4 {
        queue.enqueue(i).unwrap();
    }
    queue.start().unwrap();
    let report = queue.flush(Duration::from_secs(30)).unwrap();
    assert_eq!((report.delivered, report.dead_lettered), (4, 0));
    assert!(report.all_delivered());
    queue.stop().unwrap();
    assert_eq!(record.lock().calls.len(), down_for + 1);
    assert_eq!(record.lock().delivered.len(), 4);
    let m = queue.metrics();
    assert_eq!(
        (m.dead_lettered_total, m.retries_total),
        (0, down_for as u64)
    );

    // In memory, the default is 3 retries: the fourth failure dead-letters the batch.
    let (sink, record) = recorder(failing);
    let queue = Queue::new(fast_retries(), sink).unwrap();
    for i in 0..4 {
        queue.enqueue(i).unwrap();
    }
    queue.start().unwrap();
    // The flush returns once the batch is resolved, and says it was dead-lettered.
    let report = queue.flush(Duration::from_secs(30)).unwrap();
    assert_eq!((report.delivered, report.dead_lettered), (0, 4));
    assert!(!report.all_delivered());
    assert_eq!(record.lock().calls.len(), 4);
    assert_eq!(queue.metrics().dead_lettered_total, 4);
    // And `retry_until_stopped` keeps a memory queue retrying as well.
    let (sink, record) = recorder(failing);
    let queue = Queue::new(fast_retries().retry_until_stopped(), sink).unwrap();
    for i in 0..4 {
        queue.enqueue(i).unwrap();
    }
    queue.start().unwrap();
    queue.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(record.lock().calls.len(), down_for + 1);
    assert_eq!(queue.metrics().dead_lettered_total, 0);
}

#[test]
fn retry_after_holds_the_next_attempt_back_for_as_long_as_the_backend_asked() {
    let stamps = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let s2 = std::sync::Arc::clone(&stamps);
    let (sink, record) = recorder(move |call, _: &Batch<u8>| {
        s2.lock().push(Instant::now());
        if call == 0 {
            Err(SendError::retry_after(
                Duration::from_millis(300),
                "429 Too Many Requests",
            ))
        } else {
            Ok(())
        }
    });
    // The backoff alone would retry within 8 ms.
    let queue = Queue::new(fast_retries(), sink).unwrap();
    queue.enqueue(1).unwrap();
    queue.start().unwrap();
    queue.flush(Duration::from_secs(10)).unwrap();
    let stamps = stamps.lock();
    assert_eq!(stamps.len(), 2);
    let waited = stamps[1] - stamps[0];
    assert!(
        waited >= Duration::from_millis(300),
        "retried after {waited:?}"
    );
    assert_eq!(record.lock().delivered.len(), 1);
}
