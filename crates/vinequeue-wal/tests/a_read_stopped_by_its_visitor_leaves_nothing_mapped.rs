//! A read unmaps the pages it has passed, so that a replayed backlog never becomes the
//! process's memory. That holds for a read whose visitor stops it (the queue's replay
//! stops at a batch's end that way) as for one that runs to its `max`.
//!
//! A test binary of its own, with one test: the resident memory it measures is the whole
//! process's.
#![cfg(target_os = "linux")]

use vinequeue_core::{Storage, SyncMode};
use vinequeue_wal::{Wal, WalOptions};

/// Resident file-backed memory of this process, in KiB (`RssFile` of /proc/self/status).
fn rss_file_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("RssFile:"))
        .expect("RssFile in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn record(i: u64) -> Vec<u8> {
    let mut r = vec![(i % 251) as u8; 100];
    r[..8].copy_from_slice(&i.to_le_bytes());
    r
}

#[test]
fn reads_stopped_by_their_visitor_leave_the_backlog_unmapped() {
    const RECORDS: u64 = 200_000; // about 23 MiB of frames in two 16 MiB segments
    const BOUND_KIB: u64 = 4 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let options = || {
        WalOptions::default()
            .sync_mode(SyncMode::Os)
            .segment_size(16 << 20)
    };
    {
        let wal = Wal::open(dir.path(), options()).unwrap();
        for i in 0..RECORDS {
            wal.append(&record(i)).unwrap();
        }
    }
    let before = rss_file_kib();
    let wal = Wal::open(dir.path(), options()).unwrap();
    assert_eq!(wal.recovery().records, RECORDS);

    // No `max`: each read ends when its visitor has taken 1 000 records.
    let (mut next, mut peak) = (1, 0);
    while next <= RECORDS {
        let mut taken = 0;
        let read = wal
            .read(next, usize::MAX, &mut |seq, bytes| {
                assert_eq!(seq, next);
                assert_eq!(bytes, record(seq - 1));
                next += 1;
                taken += 1;
                taken < 1000
            })
            .unwrap();
        assert!(read > 0, "records after {} missing", next - 1);
        peak = peak.max(rss_file_kib().saturating_sub(before));
    }
    assert!(
        peak < BOUND_KIB,
        "reads stopped by their visitor kept up to {peak} KiB of the backlog mapped"
    );
}
