//! Under `Immediate` the log writes each next MiB of a segment to the disk before any
//! record lands there (the blocks it preallocated are then initialized once, not by every
//! group commit), and keeps the segment's page-cache pages small. Neither may change a
//! byte: records of all sizes, some written across whole chunks in one append, synced one
//! at a time and in groups, must read back as appended from the open log and after
//! reopening it, and the files on the disk (read around the page cache) must hold what
//! the page cache holds. (The prefetch thread usually writes a chunk ahead before the
//! writer gets there; the unit test `writing_ahead_and_small_pages_change_no_byte` in
//! `fs.rs` writes ahead over bytes already written, which a write-ahead that wrote zeros
//! of its own fails.)

use vinequeue_storage::{Storage, SyncMode};
use vinequeue_wal::{Wal, WalOptions};

/// Record `i`: says which one it is, and varies in length from 40 bytes to 3 MiB, so
/// that the writer sometimes writes across whole chunks in one append, through the chunk
/// whose write-ahead was asked for a moment before.
fn record(i: u64) -> Vec<u8> {
    let len = match i % 50 {
        0 if i % 500 == 250 => 3 << 20,
        0 => 160 * 1024,
        7 | 31 => 24 * 1024,
        n => 40 + (n as usize * 37) % 900,
    };
    let mut r: Vec<u8> = (0..len).map(|k| (i as usize * 31 + k) as u8).collect();
    r[..8].copy_from_slice(&i.to_le_bytes());
    r
}

/// Reads `path` with `O_DIRECT` (from the disk, around the page cache) and compares it
/// with a normal read. A file system without `O_DIRECT` (tmpfs) skips the check.
fn disk_holds_what_the_cache_holds(path: &std::path::Path) {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    const ALIGN: usize = 4096;
    let cached = std::fs::read(path).unwrap();
    let mut direct = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("skipped the check around the page cache: {e}");
            return;
        }
    };
    // An aligned buffer in safe code: a larger vector, used from its first aligned byte.
    let mut storage = vec![0u8; cached.len() + ALIGN];
    let start = storage.as_ptr().align_offset(ALIGN);
    let buf = &mut storage[start..start + cached.len()];
    let mut read = 0;
    while read < buf.len() {
        match direct.read(&mut buf[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && read == 0 => {
                eprintln!("skipped the check around the page cache: {e}");
                return;
            }
            Err(e) => panic!("reading {} around the page cache: {e}", path.display()),
        }
    }
    assert_eq!(read, cached.len());
    assert!(
        buf == &cached[..],
        "{} on the disk differs from the page cache",
        path.display()
    );
}

fn read_all(wal: &Wal, records: u64) {
    let mut next = 1;
    while next <= records {
        let read = wal
            .read(next, 1_000, &mut |seq, bytes| {
                assert_eq!(seq, next);
                assert!(bytes == record(seq - 1), "record {seq} changed");
                next += 1;
                true
            })
            .unwrap();
        assert!(read > 0, "records after {} missing", next - 1);
    }
}

#[test]
fn records_in_chunks_written_ahead_read_back_unchanged() {
    const RECORDS: u64 = 6_000; // about 64 MB: many 1 MiB chunks, several 8 MiB segments
    let dir = tempfile::tempdir().unwrap();
    let options = || {
        WalOptions::default()
            .sync_mode(SyncMode::Immediate)
            .segment_size(8 << 20)
            .max_size(1 << 30)
    };
    {
        let wal = Wal::open(dir.path(), options()).unwrap();
        for i in 0..RECORDS {
            let seq = wal.append(&record(i)).unwrap();
            assert_eq!(seq, i + 1);
            // One sync per record for a while, then one per group of 25.
            if i < 1_000 || i % 25 == 24 {
                wal.sync_through(seq).unwrap();
            }
        }
        wal.sync().unwrap();
        assert!(wal.segment_count() > 2, "the records span several segments");
        read_all(&wal, RECORDS);
    }
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "seg") {
            disk_holds_what_the_cache_holds(&path);
        }
    }
    let wal = Wal::open(dir.path(), options()).unwrap();
    let report = wal.recovery();
    assert_eq!(report.corrupt_records, 0);
    assert_eq!(report.records, RECORDS);
    read_all(&wal, RECORDS);
}
