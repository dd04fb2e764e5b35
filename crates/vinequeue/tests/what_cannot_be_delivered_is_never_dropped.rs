//! Durable mode, the paths off the happy one: a dead-letter log that cannot take a
//! letter, records that do not decode, numbers the log lost, redriving letters that fail
//! again. In each case nothing an `enqueue` accepted may disappear, and the queue must
//! keep going.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, ok_recorder, recorder};
use vinequeue::{
    Batch, Config, EnqueueError, Error, MemStorage, Queue, RecoveryReport, SendError, Storage,
    SyncMode, Wal, WalOptions,
};

fn config() -> Config {
    Config::default()
        .memory_size(100)
        .batch_size(10)
        .flush_timeout(Duration::from_millis(5))
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(5))
        .shutdown_timeout(Duration::from_millis(500))
}

/// Largest record a `Faulty::full()` storage takes once it has room.
const LARGEST: usize = 1000;

/// An in-memory storage with a fault. (It keeps the trait's own `is_acked`, which knows
/// only the contiguous mark.)
struct Faulty {
    inner: MemStorage,
    fault: Fault,
}

enum Fault {
    /// Appends fail as on a full storage while this is set.
    Full(AtomicBool),
    /// It has lost this record (as a log does to damage): reads skip it.
    Lost(u64),
    /// Every read fails (an I/O error); counts the attempts.
    Unreadable(std::sync::atomic::AtomicU64),
    /// Reads fail while this is set; counts the reads that failed.
    ReadsFail(AtomicBool, std::sync::atomic::AtomicU64),
}

impl Faulty {
    /// Empty, and full until told otherwise.
    fn full() -> Self {
        Faulty::new(Fault::Full(AtomicBool::new(true)), [])
    }

    fn new(fault: Fault, records: impl IntoIterator<Item = u32>) -> Self {
        let inner = MemStorage::default();
        for v in records {
            inner.append(&encoded(v)).unwrap();
        }
        Faulty { inner, fault }
    }
}

impl Storage for Faulty {
    fn append(&self, record: &[u8]) -> Result<u64, Error> {
        if let Fault::Full(full) = &self.fault {
            if full.load(Ordering::SeqCst) {
                return Err(Error::LogFull { size: 0, limit: 0 });
            }
            if record.len() > LARGEST {
                return Err(Error::RecordTooLarge {
                    len: record.len() as u64,
                    limit: LARGEST as u64,
                });
            }
        }
        self.inner.append(record)
    }
    fn sync(&self) -> Result<(), Error> {
        self.inner.sync()
    }
    fn read(
        &self,
        from: u64,
        max: usize,
        visit: &mut dyn FnMut(u64, &[u8]) -> bool,
    ) -> Result<usize, Error> {
        let lost = match &self.fault {
            Fault::Lost(lost) => *lost,
            Fault::Unreadable(reads) => {
                reads.fetch_add(1, Ordering::SeqCst);
                return Err(Error::Io(std::io::Error::other("the disk is gone")));
            }
            Fault::ReadsFail(failing, failed) => {
                if failing.load(Ordering::SeqCst) {
                    failed.fetch_add(1, Ordering::SeqCst);
                    return Err(Error::Io(std::io::Error::other("a read error")));
                }
                return self.inner.read(from, max, visit);
            }
            Fault::Full(_) => return self.inner.read(from, max, visit),
        };
        let mut visited = 0;
        // Read one more than asked for, so that skipping the lost one still hands over
        // up to `max`.
        self.inner.read(from, max + 1, &mut |seq, bytes| {
            if seq == lost {
                return true;
            }
            if visited == max {
                return false;
            }
            visited += 1;
            visit(seq, bytes)
        })?;
        Ok(visited)
    }
    fn ack(&self, seq: u64) -> Result<(), Error> {
        self.inner.ack(seq)
    }
    fn acked_through(&self) -> u64 {
        self.inner.acked_through()
    }
    fn next_seq(&self) -> u64 {
        self.inner.next_seq()
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn recovery(&self) -> RecoveryReport {
        self.inner.recovery()
    }
}

fn encoded(v: u32) -> Vec<u8> {
    postcard::to_allocvec(&v).unwrap()
}

/// Not a `u32` in postcard: a varint longer than five bytes.
const NOT_A_U32: &[u8] = &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];

#[test]
fn a_dead_letter_the_dead_letter_log_refuses_stays_in_the_main_log() {
    let dir = tempfile::tempdir().unwrap();
    let options = || WalOptions::default().segment_size(1 << 20);
    {
        let log: Arc<dyn Storage> = Arc::new(Wal::open(dir.path(), options()).unwrap());
        let (sink, record) = recorder(|_, _: &Batch<u32>| Err(SendError::permanent("rejected")));
        let queue = Queue::with_storage(
            config(),
            Arc::clone(&log),
            Some(Arc::new(Faulty::full())),
            sink,
        )
        .unwrap();
        queue.start().unwrap();
        queue.enqueue(7).unwrap();
        queue.flush(Duration::from_secs(10)).unwrap();
        let m = queue.metrics();
        assert_eq!(m.dead_lettered_total, 1);
        assert_eq!(m.dead_letters_unstored_total, 1);
        assert_eq!(
            record.lock().dead.len(),
            1,
            "the hook still sees the letter"
        );
        queue.stop().unwrap();
        assert_eq!(
            log.acked_through(),
            0,
            "the refused letter left the main log"
        );
    }
    // The next start delivers it again.
    let log: Arc<dyn Storage> = Arc::new(Wal::open(dir.path(), options()).unwrap());
    let (sink, record) = ok_recorder::<u32>();
    let queue = Queue::with_storage(config(), log, None, sink).unwrap();
    queue.start().unwrap();
    queue.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(record.lock().delivered, vec![(1, 7)]);
}

#[test]
fn a_record_that_does_not_decode_is_dead_lettered_and_the_rest_delivered() {
    let log = Arc::new(MemStorage::default());
    for v in [1u32, 2] {
        log.append(&encoded(v)).unwrap();
    }
    log.append(NOT_A_U32).unwrap(); // seq 3
    for v in [4u32, 5, 6, 7] {
        log.append(&encoded(v)).unwrap();
    }
    let dead = Arc::new(MemStorage::default());
    let (sink, record) = ok_recorder::<u32>();
    // Batches of 3: the first read-back takes 1, 2 and the bad 3, and fills the room it
    // was given with only two items.
    let queue = Queue::with_storage(
        config().batch_size(3),
        log.clone(),
        Some(dead.clone() as Arc<dyn Storage>),
        sink,
    )
    .unwrap();
    queue.start().unwrap();
    queue.flush(Duration::from_secs(10)).unwrap();
    let delivered: Vec<u32> = record.lock().delivered.iter().map(|d| d.1).collect();
    assert_eq!(
        delivered,
        vec![1, 2, 4, 5, 6, 7],
        "items after the bad one were skipped"
    );
    assert_eq!(
        log.acked_through(),
        7,
        "everything resolved is acknowledged"
    );
    let m = queue.metrics();
    assert_eq!(m.dead_lettered_total, 1);
    assert_eq!(m.dead_letters_unstored_total, 0);
    let letters = queue.dead_letters(10).unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].seq, 3);
    assert_eq!(letters[0].reason, "Undecodable");
    assert_eq!(letters[0].item, None);
    assert_eq!(letters[0].payload, NOT_A_U32);
    // Redriving leaves it (it cannot be enqueued: it moves to the back); it can be
    // removed by hand.
    assert_eq!(queue.redrive_dead_letters().unwrap(), 0);
    let left = queue.dead_letters(10).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!((left[0].seq, &left[0].payload[..]), (3, NOT_A_U32));
    queue.discard_dead_letter(left[0].dead_letter_seq).unwrap();
    assert!(queue.dead_letters(10).unwrap().is_empty());
}

#[test]
fn without_a_dead_letter_log_a_record_that_does_not_decode_stays_in_the_log() {
    let log = Arc::new(MemStorage::default());
    log.append(&encoded(1)).unwrap();
    log.append(NOT_A_U32).unwrap();
    log.append(&encoded(3)).unwrap();
    let (sink, record) = ok_recorder::<u32>();
    let queue = Queue::with_storage(config(), log.clone(), None, sink).unwrap();
    queue.start().unwrap();
    queue.flush(Duration::from_secs(10)).unwrap();
    let delivered: Vec<u32> = record.lock().delivered.iter().map(|d| d.1).collect();
    assert_eq!(delivered, vec![1, 3]);
    assert_eq!(queue.metrics().dead_letters_unstored_total, 1);
    assert_eq!(
        log.acked_through(),
        1,
        "the undecodable record was acknowledged"
    );
}

/// Six records, of which the log has lost `lost`; the rest are delivered and the mark
/// reaches the last number.
fn lost_record_is_acknowledged(lost: u32) {
    let log = Arc::new(Faulty::new(Fault::Lost(lost as u64), 1..=6));
    let (sink, record) = ok_recorder::<u32>();
    let queue = Queue::with_storage(config(), log.clone(), None, sink).unwrap();
    queue.start().unwrap();
    queue.flush(Duration::from_secs(10)).unwrap();
    let delivered: Vec<u32> = record.lock().delivered.iter().map(|d| d.1).collect();
    let expected: Vec<u32> = (1..=6).filter(|&v| v != lost).collect();
    assert_eq!(delivered, expected);
    assert_eq!(
        log.acked_through(),
        6,
        "the low-water mark stopped below the lost record"
    );
}

#[test]
fn numbers_the_log_lost_are_acknowledged_so_the_mark_moves_on() {
    lost_record_is_acknowledged(3);
}

#[test]
fn the_same_for_the_last_number_the_log_lost() {
    lost_record_is_acknowledged(6);
}

#[test]
fn redriving_letters_that_fail_again_returns() {
    let dir = tempfile::tempdir().unwrap();
    let failing = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&failing);
    let (sink, record) = recorder(move |_, _: &Batch<u32>| {
        if flag.load(Ordering::SeqCst) {
            Err(SendError::permanent("still broken"))
        } else {
            Ok(())
        }
    });
    let queue = Arc::new(Queue::new(config().wal_path(dir.path()).batch_size(1), sink).unwrap());
    queue.start().unwrap();
    queue.enqueue(1).unwrap();
    queue.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(queue.dead_letters(10).unwrap().len(), 1);
    // The sink still fails: each redriven item is dead-lettered again at once. The call
    // must redrive what was there and return, not chase its own new letters.
    let (tx, rx) = std::sync::mpsc::channel();
    let q = Arc::clone(&queue);
    std::thread::spawn(move || {
        let _ = tx.send(q.redrive_dead_letters());
    });
    let moved = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("redrive_dead_letters did not return")
        .unwrap();
    assert_eq!(moved, 1);
    assert!(eventually(Duration::from_secs(10), || queue
        .metrics()
        .dead_lettered_total
        == 2));
    failing.store(false, Ordering::SeqCst);
    assert!(eventually(Duration::from_secs(10), || queue
        .dead_letters(10)
        .unwrap()
        .len()
        == 1));
    assert_eq!(queue.redrive_dead_letters().unwrap(), 1);
    queue.flush(Duration::from_secs(10)).unwrap();
    let delivered: Vec<u32> = record.lock().delivered.iter().map(|d| d.1).collect();
    assert_eq!(delivered, vec![1]);
    assert!(queue.dead_letters(10).unwrap().is_empty());
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum Untagged {
    Number(u32),
}

#[test]
fn a_type_that_does_not_come_back_from_its_encoding_is_refused_at_the_first_enqueue() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::new(
        config()
            .wal_path(dir.path())
            .sync_mode(SyncMode::Periodic(Duration::from_millis(50))),
        vinequeue::NullSink,
    )
    .unwrap();
    match queue.enqueue(Untagged::Number(1)) {
        Err(EnqueueError::Failed(Untagged::Number(1), Error::Codec(why))) => {
            assert!(why.message().contains("does not decode"), "{why}")
        }
        other => panic!("accepted an item that could never be replayed: {other:?}"),
    }
    assert_eq!(queue.metrics().enqueued_total, 0);
}

#[test]
fn a_flush_over_an_unreadable_log_times_out_without_spinning() {
    // A backlog to replay, which only the log has.
    let log = Arc::new(Faulty::new(
        Fault::Unreadable(std::sync::atomic::AtomicU64::new(0)),
        1..=3,
    ));
    let (sink, record) = ok_recorder::<u32>();
    let queue = Queue::with_storage(config(), log.clone(), None, sink).unwrap();
    queue.start().unwrap();
    let flushed = queue.flush(Duration::from_millis(500));
    assert!(
        matches!(flushed, Err(Error::FlushTimeout { pending: 3 })),
        "{flushed:?}"
    );
    let Fault::Unreadable(reads) = &log.fault else {
        unreachable!()
    };
    let reads = reads.load(Ordering::SeqCst);
    assert!(
        reads < 50,
        "the batcher retried the failing read {reads} times in half a second"
    );
    assert!(record.lock().delivered.is_empty());
    // Nor does a stop: it waits out its deadline with the log still unreadable.
    let stopped = queue.stop();
    assert!(
        matches!(stopped, Err(Error::ShutdownTimeout { .. })),
        "{stopped:?}"
    );
    let Fault::Unreadable(reads_now) = &log.fault else {
        unreachable!()
    };
    let during_stop = reads_now.load(Ordering::SeqCst) - reads;
    assert!(
        during_stop < 50,
        "the stopping batcher retried the failing read {during_stop} times"
    );
}

/// A dead-letter record as the queue stores it (postcard: the same fields in order).
#[derive(serde::Serialize)]
struct Letter<'a> {
    seq: u64,
    reason: &'a str,
    error: &'a str,
    payload: &'a [u8],
}

/// A dead-letter log holding a letter for each payload, in order.
fn dead_letter_log(payloads: &[&[u8]]) -> Arc<MemStorage> {
    let dead = Arc::new(MemStorage::default());
    for (i, payload) in payloads.iter().enumerate() {
        let letter = Letter {
            seq: i as u64 + 1,
            reason: "Permanent",
            error: "rejected",
            payload,
        };
        dead.append(&postcard::to_allocvec(&letter).unwrap())
            .unwrap();
    }
    dead
}

#[test]
fn redriving_past_a_letter_that_does_not_decode_enqueues_each_item_once() {
    let dead = dead_letter_log(&[NOT_A_U32, &encoded(5), &encoded(6)]);
    let (sink, record) = ok_recorder::<u32>();
    let queue = Queue::with_storage(
        config(),
        Arc::new(MemStorage::default()),
        Some(dead.clone() as Arc<dyn Storage>),
        sink,
    )
    .unwrap();
    queue.start().unwrap();
    assert_eq!(queue.redrive_dead_letters().unwrap(), 2);
    assert_eq!(queue.redrive_dead_letters().unwrap(), 0);
    queue.flush(Duration::from_secs(10)).unwrap();
    let delivered: Vec<u32> = record.lock().delivered.iter().map(|d| d.1).collect();
    assert_eq!(delivered, vec![5, 6], "a redriven letter came back");
    let left = queue.dead_letters(10).unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].item, None);
    assert_eq!(left[0].payload, NOT_A_U32);
    // It moved to the back each time: the removed letters before it are a contiguous
    // run, which the log can reclaim and still knows after a restart.
    assert_eq!(dead.acked_through(), left[0].dead_letter_seq - 1);
    queue.discard_dead_letter(left[0].dead_letter_seq).unwrap();
    assert!(queue.dead_letters(10).unwrap().is_empty());
}

#[test]
fn a_letter_discarded_out_of_order_is_no_longer_listed() {
    let dead = dead_letter_log(&[&encoded(7), &encoded(8), &encoded(9)]);
    let (sink, _) = ok_recorder::<u32>();
    let queue = Queue::with_storage(
        config(),
        Arc::new(MemStorage::default()),
        Some(dead as Arc<dyn Storage>),
        sink,
    )
    .unwrap();
    queue.discard_dead_letter(2).unwrap();
    let items: Vec<Option<u32>> = queue
        .dead_letters(10)
        .unwrap()
        .into_iter()
        .map(|l| l.item)
        .collect();
    assert_eq!(items, vec![Some(7), Some(9)]);
}

#[test]
fn redrive_into_a_full_log_under_drop_newest_keeps_the_letter() {
    let dead = dead_letter_log(&[&encoded(42)]);
    let log = Arc::new(MemStorage::new(8)); // room for a few one-byte items
    let (sink, _) = ok_recorder::<u32>();
    let queue = Queue::with_storage(
        config().overflow(vinequeue::OverflowPolicy::DropNewest),
        log,
        Some(dead as Arc<dyn Storage>),
        sink,
    )
    .unwrap();
    while queue.metrics().dropped_total == 0 {
        queue.enqueue(1).unwrap(); // not started: the log fills
    }
    assert!(
        matches!(queue.redrive_dead_letters(), Err(Error::Full)),
        "redrive let DropNewest discard the item"
    );
    let left = queue.dead_letters(10).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].item, Some(42));
}

/// A started queue over `log` and `dead` whose sink rejects everything for good.
fn rejecting_queue(log: Arc<dyn Storage>, dead: Arc<dyn Storage>) -> Queue<u32> {
    let (sink, _) = recorder(|_, _: &Batch<u32>| Err(SendError::permanent("rejected")));
    let queue = Queue::with_storage(config(), log, Some(dead), sink).unwrap();
    queue.start().unwrap();
    queue
}

#[test]
fn a_dead_letter_refused_for_lack_of_room_is_stored_once_there_is_room() {
    let dead = Arc::new(Faulty::full());
    let log = Arc::new(MemStorage::default());
    let queue = rejecting_queue(log.clone(), dead.clone());
    queue.enqueue(7).unwrap();
    queue.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(queue.metrics().dead_letters_unstored_total, 1);
    assert_eq!(log.acked_through(), 0, "kept in the main log");
    // Room comes (a redrive elsewhere, say): the letter moves over without a restart.
    let Fault::Full(full) = &dead.fault else {
        unreachable!()
    };
    full.store(false, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(10), || log.acked_through() == 1),
        "the refused letter stayed in the main log"
    );
    let letters = queue.dead_letters(10).unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!((letters[0].seq, letters[0].item), (1, Some(7)));
    assert!(
        letters[0].error.contains("rejected"),
        "{}",
        letters[0].error
    );
}

/// A letter stored after a retry leaves the retry list even when the main log's mark
/// stays below it (an earlier letter the dead-letter log can never take holds it) and
/// the log cannot say that the number is acknowledged (the trait's default `is_acked`
/// knows only the mark): it is stored once, not again every second.
#[test]
fn a_letter_stored_on_a_retry_is_stored_once_while_an_earlier_one_holds_the_mark() {
    let log = Arc::new(Faulty::new(Fault::Full(AtomicBool::new(false)), []));
    // Record 1: does not decode, and its letter is over the dead-letter log's limit.
    let mut blob = NOT_A_U32.to_vec();
    blob.resize(2 * LARGEST, 0xFF);
    log.inner.append(&blob).unwrap(); // (past the limit, which is for the dead-letter log)
    let dead = Arc::new(Faulty::full());
    let queue = rejecting_queue(log.clone(), dead.clone());
    queue.enqueue(7).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || {
            queue.metrics().dead_letters_unstored_total == 2
        }),
        "both letters are refused while the dead-letter log is full"
    );
    let Fault::Full(full) = &dead.fault else {
        unreachable!()
    };
    full.store(false, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(10), || dead.next_seq() > 1),
        "the letter that fits was never stored"
    );
    // Several retry periods (about a second each).
    std::thread::sleep(Duration::from_millis(3500));
    let letters = queue.dead_letters(10).unwrap();
    let sevens = letters.iter().filter(|l| l.item == Some(7)).count();
    assert_eq!(sevens, 1, "the letter was stored {sevens} times");
    assert_eq!(log.acked_through(), 0, "record 1 holds the mark");
    queue.stop().unwrap();
}

/// The main log fails the read of a refused letter's record (a transient I/O error) when
/// the letter is tried again: the letter stays on the retry list, and moves over once
/// the dead-letter log has room (it was dropped from the list as if the record were
/// gone, and stayed in the main log until the next start).
#[test]
fn a_failed_read_of_a_refused_letter_keeps_it_for_the_next_try() {
    let log = Arc::new(Faulty::new(
        Fault::ReadsFail(AtomicBool::new(false), Default::default()),
        [],
    ));
    let dead = Arc::new(Faulty::full());
    let queue = rejecting_queue(log.clone(), dead.clone());
    queue.enqueue(7).unwrap();
    queue.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(queue.metrics().dead_letters_unstored_total, 1);
    let Fault::ReadsFail(failing, failed) = &log.fault else {
        unreachable!()
    };
    failing.store(true, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(10), || failed.load(Ordering::SeqCst)
            > 0),
        "the letter was never tried again"
    );
    failing.store(false, Ordering::SeqCst);
    let Fault::Full(full) = &dead.fault else {
        unreachable!()
    };
    full.store(false, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(10), || log.acked_through() == 1),
        "the letter whose read failed was dropped from the retry list"
    );
    let letters = queue.dead_letters(10).unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].item, Some(7));
    queue.stop().unwrap();
}
