//! Acknowledgements made out of order are kept in the log's checkpoint (its lowest ranges
//! above the mark), so that a restart neither brings back a dead letter discarded out of
//! order nor delivers again what was delivered after a record that still waits.

mod common;

use std::time::Duration;

use common::{eventually, recorder};
use vinequeue::wal::format::Checkpoint;
use vinequeue::{Batch, Config, Queue, SendError, Storage, SyncMode, Wal, WalOptions};

fn config(dir: &std::path::Path) -> Config {
    Config::default()
        .wal_path(dir)
        .memory_size(100)
        .batch_size(1)
        .flush_timeout(Duration::from_millis(5))
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(5))
        .retry_limit(0)
        .shutdown_timeout(Duration::from_secs(5))
}

#[test]
fn a_dead_letter_discarded_out_of_order_stays_discarded_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        // Every item fails for good: each becomes a dead letter.
        let (sink, _) = recorder(|_, _: &Batch<u32>| Err(SendError::permanent("refused")));
        let queue = Queue::new(config(dir.path()), sink).unwrap();
        queue.start().unwrap();
        for v in [7, 8, 9] {
            queue.enqueue(v).unwrap();
        }
        assert!(eventually(Duration::from_secs(20), || queue
            .dead_letters(10)
            .unwrap()
            .len()
            == 3));
        let letters = queue.dead_letters(10).unwrap();
        let middle = letters.iter().find(|l| l.item == Some(8)).unwrap();
        queue.discard_dead_letter(middle.dead_letter_seq).unwrap();
        queue.stop().unwrap();
    }
    // Reopened: the discarded letter is not listed, and a redrive does not bring it back.
    let (sink, record) = recorder(|_, _: &Batch<u32>| Ok(()));
    let queue = Queue::new(config(dir.path()), sink).unwrap();
    let items: Vec<Option<u32>> = queue
        .dead_letters(10)
        .unwrap()
        .into_iter()
        .map(|l| l.item)
        .collect();
    assert_eq!(
        items,
        vec![Some(7), Some(9)],
        "a discarded letter came back"
    );
    queue.start().unwrap();
    assert_eq!(queue.redrive_dead_letters().unwrap(), 2);
    assert!(eventually(Duration::from_secs(20), || record
        .lock()
        .delivered
        .len()
        == 2));
    queue.stop().unwrap();
    let mut delivered: Vec<u32> = record.lock().delivered.iter().map(|&(_, v)| v).collect();
    delivered.sort();
    assert_eq!(delivered, vec![7, 9]);
}

fn wal(dir: &std::path::Path) -> Wal {
    Wal::open(
        dir,
        WalOptions::default()
            .segment_size(1 << 20)
            .sync_mode(SyncMode::Immediate),
    )
    .unwrap()
}

/// What a restarted queue reads: everything above the mark.
fn read_all(wal: &Wal) -> Vec<u64> {
    let mut seqs = Vec::new();
    wal.read(wal.acked_through() + 1, usize::MAX, &mut |seq, _| {
        seqs.push(seq);
        true
    })
    .unwrap();
    seqs
}

#[test]
fn records_acknowledged_above_a_hole_are_not_delivered_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = wal(dir.path());
        for i in 0..10u8 {
            wal.append(&[i]).unwrap();
        }
        // Record 2 waits (a dead letter the dead-letter log could not take); everything
        // after it was delivered and acknowledged, out of order.
        wal.ack(1).unwrap();
        wal.ack_all(&[5, 3, 4, 9, 10, 7]).unwrap();
        wal.sync().unwrap();
        assert_eq!(wal.acked_through(), 1);
    }
    let wal = wal(dir.path());
    assert_eq!(wal.acked_through(), 1);
    for s in [3, 4, 5, 7, 9, 10] {
        assert!(wal.is_acked(s), "{s}");
    }
    assert!(!wal.is_acked(2) && !wal.is_acked(6) && !wal.is_acked(8));
    assert_eq!(
        read_all(&wal),
        vec![2, 6, 8],
        "acknowledged records came back"
    );
    // The hole closes: the mark moves over everything acknowledged before the restart.
    wal.ack_all(&[2, 6, 8]).unwrap();
    assert_eq!(wal.acked_through(), 10);
}

/// A crash between storing a dead letter (synced first) and acknowledging its record in
/// the main log leaves the item in both logs. The next start acknowledges such records,
/// so that the item is neither delivered again nor lost: it stays a letter, once.
#[test]
fn an_item_dead_lettered_just_before_a_crash_ends_in_exactly_one_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (sink, _) = recorder(|_, _: &Batch<u32>| Err(SendError::permanent("refused")));
        let queue = Queue::new(config(dir.path()), sink).unwrap();
        queue.start().unwrap();
        for v in [7, 8, 9] {
            queue.enqueue(v).unwrap();
        }
        assert!(eventually(Duration::from_secs(20), || queue
            .dead_letters(10)
            .unwrap()
            .len()
            == 3));
        queue.stop().unwrap();
    }
    // The state the crash leaves: the main log's checkpoint without those
    // acknowledgements (as if they never reached the disk).
    let path = dir.path().join("checkpoint");
    let mut cp = Checkpoint::decode_file(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        cp.acked_through, 3,
        "the letters' records were acknowledged"
    );
    cp.generation += 1;
    cp.acked_through = 0;
    cp.acked_above.clear();
    cp.segment = 1;
    cp.offset = 40;
    std::fs::write(&path, cp.encode_file()).unwrap();

    let (sink, record) = recorder(|_, _: &Batch<u32>| Ok(()));
    let queue = Queue::new(config(dir.path()), sink).unwrap();
    queue.start().unwrap();
    queue.enqueue(10).unwrap();
    queue.flush(Duration::from_secs(20)).unwrap();
    let delivered: Vec<u32> = record.lock().delivered.iter().map(|&(_, v)| v).collect();
    assert_eq!(
        delivered,
        vec![10],
        "items already dead-lettered were delivered again"
    );
    let letters: Vec<Option<u32>> = queue
        .dead_letters(10)
        .unwrap()
        .into_iter()
        .map(|l| l.item)
        .collect();
    assert_eq!(letters, vec![Some(7), Some(8), Some(9)]);
    queue.stop().unwrap();
}
