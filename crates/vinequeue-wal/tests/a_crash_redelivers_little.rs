//! The acknowledgement mark is persisted within `checkpoint_interval` of moving, not
//! only when a segment is deleted or the log closes: a crash then delivers again only
//! what was acknowledged in about the last interval.

use std::path::Path;
use std::time::{Duration, Instant};

use vinequeue_storage::Storage;
use vinequeue_wal::format::Checkpoint;
use vinequeue_wal::sim::SimFs;
use vinequeue_wal::{Reclaim, SyncMode, Wal, WalOptions};

const DIR: &str = "/wal";

fn opts(mode: SyncMode, background: bool) -> WalOptions {
    // One large segment: no deletion writes the checkpoint for the test.
    WalOptions::default()
        .segment_size(256 << 10)
        .max_size(1 << 30)
        .sync_mode(mode)
        .reclaim(if background {
            Reclaim::Background
        } else {
            Reclaim::Inline
        })
        .checkpoint_interval(Duration::from_millis(20))
}

/// The acknowledgement mark the checkpoint file on the disk holds.
fn persisted_mark(fs: &SimFs) -> u64 {
    let cp = Path::new(DIR).join("checkpoint");
    let bytes = fs.files().into_iter().find(|(p, _)| *p == cp).unwrap().1;
    Checkpoint::decode_file(&bytes).unwrap().acked_through
}

fn acknowledged_records_survive_a_power_cut(mode: SyncMode, background: bool) {
    let fs = SimFs::new(3);
    let wal = Wal::open_with(fs.clone(), DIR, opts(mode, background)).unwrap();
    let mut last = 0;
    for _ in 0..1_000 {
        last = wal.append(&[7; 100]).unwrap();
    }
    wal.sync().unwrap();
    let seqs: Vec<u64> = (1..last).collect();
    wal.ack_all(&seqs).unwrap();
    if background {
        wal.ack(last).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while persisted_mark(&fs) < last {
            assert!(
                Instant::now() < deadline,
                "{mode:?}: the log's thread never persisted the mark"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    } else {
        // Without the log's thread, the first acknowledgement that moves the mark an
        // interval after the last write persists it.
        std::thread::sleep(Duration::from_millis(40));
        wal.ack(last).unwrap();
        assert_eq!(persisted_mark(&fs), last);
    }
    let fs = fs.power_cut();
    drop(wal);
    let wal = Wal::open_with(fs, DIR, opts(mode, background)).unwrap();
    assert_eq!(wal.acked_through(), last);
    assert_eq!(wal.recovery().records, 0, "acknowledged records replayed");
}

#[test]
fn the_mark_is_persisted_without_a_deletion_in_every_mode() {
    for mode in [
        SyncMode::Immediate,
        SyncMode::Os,
        SyncMode::Periodic(Duration::from_secs(3600)),
    ] {
        acknowledged_records_survive_a_power_cut(mode, true);
    }
}

#[test]
fn without_the_logs_thread_the_acknowledgements_persist_the_mark() {
    acknowledged_records_survive_a_power_cut(SyncMode::Immediate, false);
}

#[test]
fn an_acknowledgement_does_not_wait_for_the_interval() {
    let fs = SimFs::new(4);
    let wal = Wal::open_with(
        fs.clone(),
        DIR,
        opts(SyncMode::Immediate, true).checkpoint_interval(Duration::from_secs(3600)),
    )
    .unwrap();
    let seq = wal.append(b"x").unwrap();
    let start = Instant::now();
    wal.ack(seq).unwrap();
    // Not persisted yet (an hour's interval), and the acknowledgement returned at once.
    assert_eq!(persisted_mark(&fs), 0);
    assert!(start.elapsed() < Duration::from_secs(60));
}

/// The ranges acknowledged above the mark the checkpoint file on the disk holds.
fn persisted_ranges(fs: &SimFs) -> Vec<(u64, u64)> {
    let cp = Path::new(DIR).join("checkpoint");
    let bytes = fs.files().into_iter().find(|(p, _)| *p == cp).unwrap().1;
    Checkpoint::decode_file(&bytes).unwrap().acked_above
}

#[test]
fn acknowledgements_above_the_mark_survive_a_power_cut_without_a_sync() {
    let fs = SimFs::new(5);
    let wal = Wal::open_with(fs.clone(), DIR, opts(SyncMode::Immediate, true)).unwrap();
    let mut last = 0;
    for _ in 0..100 {
        last = wal.append(&[7; 100]).unwrap();
    }
    wal.sync_through(last).unwrap();
    // Record 1 waits; everything after it is acknowledged, and nobody calls `sync`.
    let seqs: Vec<u64> = (2..=last).collect();
    wal.ack_all(&seqs).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while persisted_ranges(&fs) != vec![(2, last)] {
        assert!(
            Instant::now() < deadline,
            "the log's thread never persisted the ranges"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let fs = fs.power_cut();
    drop(wal);
    let wal = Wal::open_with(fs, DIR, opts(SyncMode::Immediate, true)).unwrap();
    assert_eq!(wal.acked_through(), 0);
    let mut again = Vec::new();
    wal.read(1, usize::MAX, &mut |seq, _| {
        again.push(seq);
        true
    })
    .unwrap();
    assert_eq!(
        again,
        vec![1],
        "records acknowledged above the mark came back"
    );
}
