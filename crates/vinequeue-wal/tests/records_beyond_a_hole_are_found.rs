//! A hole in a segment file (blocks the file system dropped, or a device lost: they
//! read as zeros) in the middle of synced records is damage, not the end of the data:
//! recovery reads on through megabytes of zeros to the records after it, `Strict`
//! refuses, the default keeps every intact record and counts what the hole took.

#![expect(unsafe_code, reason = "fallocate to punch a hole into a segment file")]

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

use vinequeue_storage::{RecoveryMode, Storage};
use vinequeue_wal::format::frame_offset;
use vinequeue_wal::{SyncMode, Wal, WalOptions};

fn opts() -> WalOptions {
    WalOptions::default()
        .segment_size(8 << 20)
        .sync_mode(SyncMode::Immediate)
}

/// Records written: about 3.6 MB of them, in one segment.
const LAST: u64 = 1000;

fn record(i: u64) -> Vec<u8> {
    format!("record {i:04} ").repeat(300).into_bytes()
}

fn only_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    assert_eq!(segs.len(), 1, "{segs:?}");
    segs.pop().unwrap()
}

#[test]
fn records_beyond_a_punched_hole_are_found_and_the_hole_counted() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), opts()).unwrap();
    for i in 1..=LAST {
        assert_eq!(wal.append(&record(i)).unwrap(), i);
    }
    wal.sync().unwrap();
    drop(wal);
    let path = only_segment(dir.path());
    let image = std::fs::read(&path).unwrap();
    // A hole of whole blocks from inside record 6 to inside record 900, megabytes
    // (longer than a scan reads at once): what a lost stretch of a device, or a file
    // system that dropped blocks, looks like.
    let from = (frame_offset(&image, 1, 6) as u64).next_multiple_of(4096);
    let to = (frame_offset(&image, 1, 900) as u64) / 4096 * 4096;
    assert!(to > from + (2 << 20), "the hole spans megabytes");
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    // SAFETY: `fallocate` on a descriptor owned by `file` for its whole call.
    let punched = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            from as libc::off_t,
            (to - from) as libc::off_t,
        )
    };
    assert_eq!(
        punched,
        0,
        "punching a hole failed ({}): point TMPDIR at ext4, xfs, btrfs or tmpfs",
        std::io::Error::last_os_error()
    );
    drop(file);

    // Synced records lie beyond the hole: `Strict` refuses, at the hole.
    match Wal::open(dir.path(), opts().recovery_mode(RecoveryMode::Strict)) {
        Err(vinequeue_storage::Error::Corrupt { offset, .. }) => {
            // (The first record the hole reaches into.)
            let first_hit = frame_offset(&image, 1, 6) as u64;
            assert!(offset >= first_hit && offset < to, "{offset}");
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("strict recovery took a hole in synced records for the end"),
    }
    // The default keeps every intact record after it and counts what the hole took.
    let wal = Wal::open(dir.path(), opts()).unwrap();
    let mut got = Vec::new();
    wal.read(1, usize::MAX, &mut |seq, bytes| {
        assert_eq!(bytes, record(seq));
        got.push(seq);
        true
    })
    .unwrap();
    assert_eq!(got.first(), Some(&1));
    assert_eq!(
        got.last(),
        Some(&LAST),
        "the records after the hole are kept"
    );
    assert!(got.contains(&901), "{got:?}");
    let lost = LAST - got.len() as u64;
    assert!(lost >= 890, "{lost}");
    assert_eq!(wal.recovery().corrupt_records, lost);
}
