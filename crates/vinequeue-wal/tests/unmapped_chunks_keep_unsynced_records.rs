//! Under `Periodic` the log unmaps each chunk of a segment once the writer has filled
//! it, synced or not, and starts its write-back. Unsynced bytes must survive that: they
//! stay in the page cache, and the next sync (or the operating system) writes them. (A
//! destructive unmapping, `MADV_REMOVE` in place of `MADV_DONTNEED`, fails this test.)

use std::time::Duration;

use vinequeue_storage::{Storage, SyncMode};
use vinequeue_wal::{Wal, WalOptions};

/// A record that says which one it is, 100 bytes.
fn record(i: u64) -> Vec<u8> {
    let mut r = vec![(i % 251) as u8; 100];
    r[..8].copy_from_slice(&i.to_le_bytes());
    r
}

/// Appends records spanning several chunks and segments without a sync of its own
/// (under `Periodic` the segment rolls and the close sync, after the unmapping; under
/// `Os` nothing does), closes the log (which stops its prefetch thread after the
/// unmapping it was asked for), reopens it in the same process and reads every record
/// back.
fn appended_records_survive_unmapping(mode: SyncMode) {
    const RECORDS: u64 = 60_000; // about 7 MB: several 1 MiB chunks, two segments
    let dir = tempfile::tempdir().unwrap();
    let options = || WalOptions::default().sync_mode(mode).segment_size(4 << 20);
    {
        let wal = Wal::open(dir.path(), options()).unwrap();
        for i in 0..RECORDS {
            assert_eq!(wal.append(&record(i)).unwrap(), i + 1);
        }
    }
    let wal = Wal::open(dir.path(), options()).unwrap();
    assert_eq!(wal.recovery().corrupt_records, 0);
    let mut next = 1;
    while next <= RECORDS {
        let read = wal
            .read(next, 10_000, &mut |seq, bytes| {
                assert_eq!(seq, next);
                assert_eq!(bytes, record(seq - 1), "record {seq}");
                next += 1;
                true
            })
            .unwrap();
        assert!(read > 0, "records after {} missing", next - 1);
    }
}

#[test]
fn unmapped_unsynced_chunks_lose_nothing() {
    // A period no test outlives: only the segment rolls and the close sync.
    appended_records_survive_unmapping(SyncMode::Periodic(Duration::from_secs(3600)));
}

#[test]
fn the_same_under_os_where_nothing_is_unmapped_or_synced() {
    appended_records_survive_unmapping(SyncMode::Os);
}
