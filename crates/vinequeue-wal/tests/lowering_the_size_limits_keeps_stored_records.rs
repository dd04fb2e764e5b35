//! `max_record_size` and `max_size` (which caps the segment size, and with it the record
//! size) limit new appends only. Reopening a log with lower limits than it was written
//! with must find every record it holds, intact, in sealed and newest segments alike.

use vinequeue_storage::{RecoveryMode, Storage};
use vinequeue_wal::sim::SimFs;
use vinequeue_wal::{SyncMode, Wal, WalOptions};

const DIR: &str = "/wal";

fn big(seq: u64) -> Vec<u8> {
    (0..600_000u64).map(|i| (i * 7 + seq) as u8).collect()
}

fn small(seq: u64) -> Vec<u8> {
    seq.to_le_bytes().to_vec()
}

/// Two openings of the log, each a large record between small ones: records 1..=3 in a segment
/// that is sealed at the next open, 4..=6 in the newest.
fn written() -> SimFs {
    let fs = SimFs::new(4);
    let generous = WalOptions::default()
        .segment_size(4 << 20)
        .max_size(1 << 30)
        .max_record_size(1 << 20)
        .sync_mode(SyncMode::Immediate);
    for first in [1, 4] {
        let wal = Wal::open_with(fs.clone(), DIR, generous.clone()).unwrap();
        assert_eq!(wal.append(&small(first)).unwrap(), first);
        assert_eq!(wal.append(&big(first + 1)).unwrap(), first + 1);
        assert_eq!(wal.append(&small(first + 2)).unwrap(), first + 2);
        drop(wal);
    }
    fs.process_crash()
}

fn check(fs: SimFs, opts: WalOptions) {
    for mode in [RecoveryMode::Strict, RecoveryMode::SkipCorrupt] {
        let fs = fs.fork();
        let wal = Wal::open_with(fs, DIR, opts.clone().recovery_mode(mode))
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        let r = wal.recovery();
        assert_eq!(
            (r.records, r.corrupt_records, r.torn_bytes),
            (6, 0, 0),
            "{r:?}"
        );
        let mut seen = Vec::new();
        wal.read(1, usize::MAX, &mut |seq, b| {
            let expect = if seq % 3 == 2 { big(seq) } else { small(seq) };
            assert!(b == expect.as_slice(), "record {seq} changed");
            seen.push(seq);
            true
        })
        .unwrap();
        assert_eq!(seen, vec![1, 2, 3, 4, 5, 6], "{mode:?}");
        assert_eq!(wal.next_seq(), 7);
        // New appends obey the new limit.
        assert!(wal.append(&big(7)).is_err());
        assert_eq!(wal.append(&small(7)).unwrap(), 7);
    }
}

#[test]
fn a_lower_max_record_size_keeps_larger_records_already_stored() {
    check(
        written(),
        WalOptions::default()
            .segment_size(4 << 20)
            .max_size(1 << 30)
            .max_record_size(1024)
            .sync_mode(SyncMode::Immediate),
    );
}

#[test]
fn a_lower_max_size_keeps_records_larger_than_its_segments() {
    check(
        written(),
        WalOptions::default()
            .segment_size(4 << 20)
            .max_size(4 * 64 * 1024) // segments of 64 KiB from now on
            .sync_mode(SyncMode::Immediate),
    );
}
