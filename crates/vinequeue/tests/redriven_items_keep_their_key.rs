//! The dedupe key of an item, `(queue id, the number it was first enqueued with)`: the
//! queue's identity is kept in its directory, and an item dead-lettered and enqueued
//! again keeps its key (it gets a new sequence number), also when dead-lettered a second
//! time; a power cut at any sync of a redrive leaves each item in exactly one log.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use vinequeue::wal::sim::{FaultOp, SimFs};
use vinequeue::{Batch, Config, Queue, QueueId, SendError, SyncMode, Wal, WalOptions};

const DIR: &str = "/queue";

/// Every delivery: (key number, sequence number, item), and the queue id it came with.
type Seen = Arc<Mutex<Vec<(QueueId, u64, u64, u32)>>>;

/// A queue over the log on `fs`; the sink refuses everything (permanently) while
/// `refuse` is set, and records what it takes.
fn queue_on(fs: &SimFs, refuse: Arc<AtomicBool>, seen: Seen) -> Queue<u32> {
    let opts = || {
        WalOptions::default()
            .segment_size(64 * 1024)
            .sync_mode(SyncMode::Immediate)
    };
    let main = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
    let dead = Wal::open_with(fs.clone(), format!("{DIR}/dead-letters"), opts()).unwrap();
    let config = Config::default()
        .sync_mode(SyncMode::Immediate)
        .batch_size(4)
        .flush_timeout(Duration::from_millis(1))
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(2))
        .shutdown_timeout(Duration::from_millis(200));
    let sink = move |b: &Batch<u32>| -> Result<(), SendError> {
        if refuse.load(Ordering::SeqCst) {
            return Err(SendError::permanent("constraint violated"));
        }
        let mut seen = seen.lock();
        for (i, (seq, &item)) in b.iter_with_seq().enumerate() {
            let (id, key) = b.key(i);
            seen.push((id, key, seq, item));
        }
        Ok(())
    };
    Queue::with_storage(config, Arc::new(main), Some(Arc::new(dead)), sink).unwrap()
}

#[test]
fn a_redriven_item_keeps_its_key_and_the_queue_its_identity() {
    let fs = SimFs::new(1);
    let refuse = Arc::new(AtomicBool::new(true));
    let seen: Seen = Arc::default();
    let queue = queue_on(&fs, Arc::clone(&refuse), Arc::clone(&seen));
    let id = queue.id();
    queue.start().unwrap();
    for i in 0..6 {
        queue.enqueue(i).unwrap();
    }
    let report = queue.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(report.dead_lettered, 6);
    let letters = queue.dead_letters(10).unwrap();
    let first: Vec<(u64, u64)> = letters.iter().map(|l| (l.seq, l.key)).collect();
    assert_eq!(first, (1..=6).map(|s| (s, s)).collect::<Vec<_>>());

    // Redriven, refused again: the second letters keep the first keys.
    assert_eq!(queue.redrive_dead_letters().unwrap(), 6);
    queue.flush(Duration::from_secs(10)).unwrap();
    let letters = queue.dead_letters(10).unwrap();
    assert_eq!(letters.len(), 6);
    for (l, n) in letters.iter().zip(1..) {
        assert!(l.seq > 6, "a new number: {l:?}");
        assert_eq!(l.key, n, "the first key: {l:?}");
    }
    queue.stop().unwrap();
    drop(queue);

    // After a restart (same directory, same identity), delivered with the first keys.
    refuse.store(false, Ordering::SeqCst);
    let queue = queue_on(&fs.process_crash(), refuse, Arc::clone(&seen));
    assert_eq!(queue.id(), id, "the identity is kept in the directory");
    queue.start().unwrap();
    assert_eq!(queue.redrive_dead_letters().unwrap(), 6);
    queue.flush(Duration::from_secs(10)).unwrap();
    queue.stop().unwrap();
    let seen = seen.lock();
    let keys: Vec<(QueueId, u64, u32)> = seen.iter().map(|&(q, k, _, i)| (q, k, i)).collect();
    assert_eq!(
        keys,
        (0..6).map(|i| (id, i as u64 + 1, i)).collect::<Vec<_>>()
    );
    assert!(
        seen.iter().all(|&(_, key, seq, _)| seq > key),
        "new numbers"
    );
}

#[test]
fn a_memory_queue_has_an_identity_of_its_own() {
    let a: Queue<u32> = Queue::new(Config::default(), vinequeue::NullSink).unwrap();
    let b: Queue<u32> = Queue::new(Config::default(), vinequeue::NullSink).unwrap();
    assert_ne!(a.id(), b.id());
    assert_eq!(a.id().to_string().parse::<QueueId>(), Ok(a.id()));
}

/// A power cut at the `n`-th sync of a file, or the `n`-th checkpoint write, during a
/// redrive (the main log's appends, the dead-letter log's acknowledgements): after the
/// restart,
/// each item is in exactly one log (a pending record of the main log, or a letter), and
/// once everything is redriven and delivered, every key arrives, each once.
#[test]
fn a_power_cut_at_any_sync_of_a_redrive_leaves_each_item_in_one_log() {
    let mut cuts = 0;
    for op in [FaultOp::Sync, FaultOp::WriteSmall] {
        for n in 1..=40u64 {
            if !cut_a_redrive(op, n) {
                break;
            }
            cuts += 1;
        }
    }
    assert!(cuts >= 3, "the redrive was cut at {cuts} points only");
}

/// One cut at the `n`-th call of `op` in a redrive; `false` if the redrive makes fewer.
fn cut_a_redrive(op: FaultOp, n: u64) -> bool {
    {
        let fs = SimFs::new(n);
        let refuse = Arc::new(AtomicBool::new(true));
        let seen: Seen = Arc::default();
        let queue = queue_on(&fs, Arc::clone(&refuse), Arc::clone(&seen));
        queue.start().unwrap();
        for i in 0..5 {
            queue.enqueue(i).unwrap();
        }
        queue.flush(Duration::from_secs(10)).unwrap();
        assert_eq!(queue.dead_letters(10).unwrap().len(), 5);
        // The redriven items wait in the main log (nothing delivers meanwhile).
        queue.stop().unwrap();
        drop(queue);
        let fs = fs.process_crash();
        let queue = Arc::new(queue_on(&fs, Arc::clone(&refuse), Arc::clone(&seen)));
        let pause = fs.pause_nth(op, n);
        let redrive = {
            let queue = Arc::clone(&queue);
            std::thread::spawn(move || queue.redrive_dead_letters())
        };
        if !pause.wait_reached(Duration::from_secs(5)) {
            // The redrive makes fewer than `n` such calls: every point has been tried.
            assert!(redrive.join().unwrap().is_ok());
            return false;
        }
        let after = fs.power_cut();
        pause.release();
        let _ = redrive.join().unwrap();
        assert_eq!(Arc::strong_count(&queue), 1, "the only handle");
        drop(queue);

        // Restart on what the cut left: count the copies of each item.
        let queue = queue_on(&after, Arc::clone(&refuse), Arc::clone(&seen));
        let mut copies: BTreeMap<u32, usize> = BTreeMap::new();
        for l in queue.dead_letters(100).unwrap() {
            *copies.entry(l.item.unwrap()).or_default() += 1;
        }
        // The redriven records that survived wait in the main log.
        let pending = queue.recovery().records;
        for item in 0..5 {
            let letters = copies.get(&item).copied().unwrap_or(0);
            assert!(
                letters <= 1,
                "cut {op:?} {n}: item {item} has {letters} letters"
            );
        }
        let letters: u64 = copies.values().map(|&c| c as u64).sum();
        assert_eq!(
            letters + pending,
            5,
            "cut {op:?} {n}: {letters} letters and {pending} redriven records for 5 items"
        );
        // Everything delivered in the end: each key once.
        refuse.store(false, Ordering::SeqCst);
        queue.start().unwrap();
        queue.redrive_dead_letters().unwrap();
        queue.flush(Duration::from_secs(10)).unwrap();
        queue.stop().unwrap();
        let mut keys: Vec<u64> = seen.lock().iter().map(|&(_, k, _, _)| k).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            vec![1, 2, 3, 4, 5],
            "cut {op:?} {n}: each key delivered once"
        );
    }
    true
}
