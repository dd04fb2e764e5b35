//! The dead-letter log has its own limit (`dead_letter_max_size`) and a policy for when
//! it is full: keep the record in the main log (the default, counted in
//! `dead_letters_unstored_total`), or drop the oldest letters (counted in
//! `dead_letters_dropped_total`) to store the new one.

mod common;

use std::time::Duration;

use common::{eventually, recorder};
use vinequeue::{Batch, Config, DeadLetterFull, Error, Queue, SendError, MIN_DEAD_LETTER_SIZE};

/// Items of a little under 1 MiB: about 16 fill the smallest dead-letter log.
const ITEM: usize = 1000 * 1000;
const ITEMS: u8 = 40;

fn config(dir: &std::path::Path, policy: DeadLetterFull) -> Config {
    Config::default()
        .wal_path(dir)
        .wal_max_size(1 << 30)
        .dead_letter_max_size(MIN_DEAD_LETTER_SIZE)
        .dead_letter_full(policy)
        .memory_size(10)
        .batch_size(1)
        .flush_timeout(Duration::from_millis(5))
        .retry_limit(0)
        .shutdown_timeout(Duration::from_secs(10))
}

fn rejecting_queue(dir: &std::path::Path, policy: DeadLetterFull) -> Queue<Vec<u8>> {
    let (sink, _) = recorder(|_, _: &Batch<Vec<u8>>| Err(SendError::permanent("refused")));
    let queue = Queue::new(config(dir, policy), sink).unwrap();
    queue.start().unwrap();
    for i in 0..ITEMS {
        queue.enqueue(vec![i; ITEM]).unwrap();
    }
    assert!(
        eventually(Duration::from_secs(60), || queue
            .metrics()
            .dead_lettered_total
            == u64::from(ITEMS)),
        "not every item was dead-lettered: {:?}",
        queue.metrics()
    );
    queue
}

#[test]
fn drop_oldest_makes_room_for_the_new_letters_and_counts_what_it_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let queue = rejecting_queue(dir.path(), DeadLetterFull::DropOldest);
    let m = queue.metrics();
    assert_eq!(m.dead_letters_unstored_total, 0, "{m:?}");
    assert!(m.dead_letters_dropped_total > 0, "{m:?}");
    let letters = queue.dead_letters(usize::MAX).unwrap();
    assert_eq!(
        letters.len() as u64 + m.dead_letters_dropped_total,
        u64::from(ITEMS),
        "every letter is either kept or counted as dropped"
    );
    // The newest ones are kept, the oldest dropped.
    let kept: Vec<u8> = letters
        .iter()
        .map(|l| l.item.as_ref().unwrap()[0])
        .collect();
    assert_eq!(*kept.last().unwrap(), ITEMS - 1);
    assert!(kept.windows(2).all(|w| w[0] < w[1]), "{kept:?}");
    assert!(kept[0] > 0, "{kept:?}");
    queue.stop().unwrap();
}

#[test]
fn keep_in_log_keeps_what_the_full_dead_letter_log_cannot_take_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let queue = rejecting_queue(dir.path(), DeadLetterFull::KeepInLog);
    let m = queue.metrics();
    assert!(m.dead_letters_unstored_total > 0, "{m:?}");
    assert_eq!(m.dead_letters_dropped_total, 0, "{m:?}");
    let letters = queue.dead_letters(usize::MAX).unwrap();
    assert_eq!(
        letters.len() as u64 + m.dead_letters_unstored_total,
        u64::from(ITEMS)
    );
    // The letters kept are the oldest; the rest wait in the main log.
    assert_eq!(letters[0].item.as_ref().unwrap()[0], 0);
    let kept = letters.len();
    let unstored = m.dead_letters_unstored_total;
    // (They stay unacknowledged: the stop reports them as undelivered.)
    assert!(matches!(
        queue.stop(),
        Ok(()) | Err(Error::ShutdownTimeout { .. })
    ));
    drop(queue);
    // At the next start, with a sink that takes them, exactly those come back: the
    // newest items, each once.
    let (sink, record) = recorder(|_, _: &Batch<Vec<u8>>| Ok(()));
    let queue = Queue::new(config(dir.path(), DeadLetterFull::KeepInLog), sink).unwrap();
    queue.start().unwrap();
    queue.flush(Duration::from_secs(60)).unwrap();
    queue.stop().unwrap();
    let back: Vec<u8> = record.lock().delivered.iter().map(|(_, v)| v[0]).collect();
    assert_eq!(back.len() as u64, unstored);
    assert_eq!(back, (kept as u8..ITEMS).collect::<Vec<_>>());
}

#[test]
fn a_dead_letter_limit_below_the_minimum_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .wal_path(dir.path())
        .dead_letter_max_size(MIN_DEAD_LETTER_SIZE - 1);
    match Queue::<u32>::new(config, vinequeue::NullSink) {
        Err(Error::Config(why)) => assert!(why.contains("dead_letter_max_size"), "{why}"),
        Err(e) => panic!("expected Error::Config, got {e}"),
        Ok(_) => panic!("a dead-letter log below the minimum was accepted"),
    }
}
