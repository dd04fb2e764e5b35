//! A log reopened over a large backlog maps its segments to scan them, and a replay maps
//! them again to read them. Neither may leave the backlog mapped into the process: its
//! resident memory would grow with the backlog (file-backed, but counted as the process's
//! own and charged to its cgroup) until each segment is deleted. That holds for reads
//! that run to their `max` and for reads whose visitor stops them.
//!
//! A test binary of its own, with one test: the resident memory it measures is the whole
//! process's.
#![cfg(target_os = "linux")]

use vinequeue_storage::{Storage, SyncMode};
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
fn recovery_and_replay_leave_the_backlog_unmapped() {
    const RECORDS: u64 = 400_000; // about 46 MiB of frames in twelve 4 MiB segments
    const BOUND_KIB: u64 = 4 * 1024; // under a tenth of the backlog
    let dir = tempfile::tempdir().unwrap();
    // `Os`: the writer neither syncs nor unmaps what it wrote, and the pages stay in the
    // page cache, where a scan or a read finds them (and maps them) without a disk read.
    let options = || {
        WalOptions::default()
            .sync_mode(SyncMode::Os)
            .segment_size(4 << 20)
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
    let after_open = rss_file_kib().saturating_sub(before);
    assert!(
        after_open < BOUND_KIB,
        "the recovery scan left {after_open} KiB of the backlog mapped"
    );

    // Read back as the queue's replay does, 1 000 at a time, without acknowledging: the
    // segments stay, so nothing but the log's own release unmaps their pages.
    let peak = read_all(&wal, RECORDS, before, |next| (next, 1000, None));
    assert!(
        peak < BOUND_KIB,
        "reading the backlog back kept up to {peak} KiB of it mapped"
    );
    // Again from the start, each read ended by its visitor (as the queue's spill
    // read-back ends at a gap), not by its `max`: the pages read a second time are
    // released too.
    let peak = read_all(&wal, RECORDS, before, |next| (next, usize::MAX, Some(1000)));
    assert!(
        peak < BOUND_KIB,
        "reads stopped by their visitor kept up to {peak} KiB of the backlog mapped"
    );
}

/// Reads records `1..=records` back, each call as `call(next)` says: `(from, max, stop
/// the visitor after this many)`. Checks every record; returns the peak growth of
/// `RssFile` over `before`.
fn read_all(
    wal: &Wal,
    records: u64,
    before: u64,
    call: impl Fn(u64) -> (u64, usize, Option<u64>),
) -> u64 {
    let (mut next, mut peak) = (1, 0);
    while next <= records {
        let (from, max, stop_after) = call(next);
        let mut taken = 0;
        let read = wal
            .read(from, max, &mut |seq, bytes| {
                assert_eq!(seq, next);
                assert_eq!(bytes, record(seq - 1));
                next += 1;
                taken += 1;
                stop_after.is_none_or(|n| taken < n)
            })
            .unwrap();
        assert!(read > 0, "records after {} missing", next - 1);
        peak = peak.max(rss_file_kib().saturating_sub(before));
    }
    peak
}
