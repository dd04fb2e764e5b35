//! An all-zero frame header normally marks the end of a segment's data. A block of zeros
//! with intact records after it (a media error, or a lost write reading back as zeros)
//! is damage: the records after it are recovered (sealed segment) or their numbers
//! reserved (newest segment), the loss is counted, a copy is kept, and `Strict` refuses
//! a damaged sealed segment. In the newest segment, zeros over records that were synced
//! are damage too (counted, refused by `Strict`, skipped by `SkipCorrupt`); only over
//! records never synced are they a torn tail.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vinequeue_storage::{Error, RecoveryMode, Storage};
use vinequeue_wal::format::Checkpoint;
use vinequeue_wal::sim::SimFs;
use vinequeue_wal::{SyncMode, Wal, WalOptions};

const DIR: &str = "/wal";
const PAGE: usize = 4096;

fn opts() -> WalOptions {
    support::small_segments(SyncMode::Immediate)
}

/// Record 1 fills the segment up to 8 KiB and every later frame is exactly one 4 KiB
/// page, so record `n >= 2` occupies page `n` of its segment (in the first opening of the log).
fn payload(seq: u64) -> Vec<u8> {
    let len = if seq == 1 {
        2 * PAGE - 40 - 16
    } else {
        PAGE - 16
    };
    let mut p = vec![(seq % 251) as u8 | 1; len];
    p[..8].copy_from_slice(&seq.to_le_bytes());
    p
}

/// Appends records up to `last` and closes the log (which syncs them).
fn append_through(fs: &SimFs, last: u64) {
    drop(append_open(fs, last));
}

/// Appends records up to `last`, none of them synced, and leaves the log open.
fn append_open(fs: &SimFs, last: u64) -> Wal<SimFs> {
    let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
    while wal.next_seq() <= last {
        let seq = wal.next_seq();
        wal.append(&payload(seq)).unwrap();
    }
    wal
}

fn segments(fs: &SimFs) -> Vec<PathBuf> {
    fs.segment_files(Path::new(DIR))
        .into_iter()
        .map(|(p, _)| p)
        .collect()
}

fn read_all(wal: &Wal<SimFs>) -> Vec<u64> {
    let mut seqs = Vec::new();
    wal.read(1, usize::MAX, &mut |seq, b| {
        assert_eq!(b, payload(seq), "record {seq}");
        seqs.push(seq);
        true
    })
    .unwrap();
    seqs
}

/// The synced frontier in the checkpoint file as it stands.
fn synced_through(fs: &SimFs) -> u64 {
    fs.files()
        .into_iter()
        .find(|(p, _)| p == &Path::new(DIR).join("checkpoint"))
        .and_then(|(_, b)| Checkpoint::decode_file(&b).ok())
        .map_or(0, |c| c.synced_through)
}

fn damaged_copies(fs: &SimFs) -> usize {
    fs.files()
        .iter()
        .filter(|(p, _)| p.starts_with(Path::new(DIR).join("damaged")))
        .count()
}

#[test]
fn a_zeroed_block_in_a_sealed_segment_loses_only_the_records_in_it() {
    let fs = SimFs::new(1);
    append_through(&fs, 10); // segment 1: records 1..=10
    append_through(&fs, 15); // segment 11: records 11..=15
    let fs = fs.process_crash();
    let sealed = segments(&fs).remove(0);
    fs.scribble(&sealed, 3 * PAGE as u64, &[0; PAGE]); // record 3

    match Wal::open_with(fs.fork(), DIR, opts().recovery_mode(RecoveryMode::Strict)) {
        Err(Error::Corrupt { file, offset, .. }) => {
            assert_eq!((file, offset), (sealed.clone(), 3 * PAGE as u64));
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("strict recovery accepted a sealed segment with a zeroed block"),
    }

    let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
    let r = wal.recovery();
    assert_eq!(r.corrupt_records, 1, "{r:?}");
    assert_eq!(r.records, 14, "{r:?}");
    let mut expect: Vec<u64> = (1..=15).collect();
    expect.retain(|&s| s != 3);
    assert_eq!(read_all(&wal), expect);
    assert_eq!(
        wal.corrupt_records_read(),
        1,
        "a read steps over the damage too"
    );
    assert_eq!(
        damaged_copies(&fs),
        1,
        "a copy of the damaged segment is kept"
    );
    assert_eq!(wal.next_seq(), 16);
}

#[test]
fn a_zeroed_block_in_the_newest_segment_never_lets_its_later_numbers_be_reused() {
    let fs = SimFs::new(2);
    let wal = append_open(&fs, 10);
    // Nothing was synced; the pages of records 3 and 4 never reached the disk, those of
    // 5..=10 did (written back out of order before the crash).
    let fs = fs.process_crash();
    drop(wal);
    let newest = segments(&fs).pop().unwrap();
    fs.scribble(&newest, 3 * PAGE as u64, &[0; 2 * PAGE]);

    let wal = Wal::open_with(fs.clone(), DIR, opts().recovery_mode(RecoveryMode::Strict))
        .expect("damage in the newest segment is a torn tail: strict opens");
    assert_eq!(read_all(&wal), vec![1, 2]);
    assert!(
        wal.next_seq() > 10,
        "next_seq {} hands out numbers that intact records hold",
        wal.next_seq()
    );
    assert_eq!(
        damaged_copies(&fs),
        1,
        "a copy of the damaged segment is kept"
    );
    let seq = wal.append(b"after").unwrap();
    wal.sync().unwrap();
    drop(wal);
    let wal = Wal::open_with(
        fs.process_crash(),
        DIR,
        opts().recovery_mode(RecoveryMode::Strict),
    )
    .unwrap();
    assert_eq!(wal.next_seq(), seq + 1);
}

#[test]
fn zeros_over_synced_records_of_the_newest_segment_are_corruption() {
    let fs = SimFs::new(3);
    // Closed cleanly: every record was synced, and the checkpoint says so.
    append_through(&fs, 10);
    let fs = fs.process_crash();
    let newest = segments(&fs).pop().unwrap();
    fs.scribble(&newest, 3 * PAGE as u64, &[0; 2 * PAGE]); // records 3 and 4

    match Wal::open_with(fs.fork(), DIR, opts().recovery_mode(RecoveryMode::Strict)) {
        Err(Error::Corrupt { file, offset, .. }) => {
            assert_eq!((file, offset), (newest.clone(), 3 * PAGE as u64));
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("strict recovery took damage to synced records for a torn tail"),
    }

    let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
    let r = wal.recovery();
    assert_eq!(r.corrupt_records, 2, "{r:?}");
    assert_eq!(r.records, 8, "{r:?}");
    assert_eq!(r.torn_bytes, 0, "{r:?}");
    let mut expect: Vec<u64> = (1..=10).collect();
    expect.retain(|&s| s != 3 && s != 4);
    assert_eq!(
        read_all(&wal),
        expect,
        "the intact records after it are delivered"
    );
    assert_eq!(
        damaged_copies(&fs),
        1,
        "a copy of the damaged segment is kept"
    );
    assert_eq!(wal.next_seq(), 11);
}

#[test]
fn a_flipped_bit_in_a_synced_record_of_the_newest_segment_is_corruption() {
    let fs = SimFs::new(4);
    let wal = append_open(&fs, 12);
    wal.sync().unwrap();
    // The log's thread writes the synced frontier to the checkpoint within
    // `checkpoint_interval` (200 ms) of the sync.
    let deadline = Instant::now() + Duration::from_secs(20);
    while synced_through(&fs) < 12 {
        assert!(
            Instant::now() < deadline,
            "the frontier was never checkpointed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Records 13 and 14 are appended and never synced; the power goes.
    wal.append(&payload(13)).unwrap();
    wal.append(&payload(14)).unwrap();
    let fs = fs.power_cut();
    drop(wal);
    let newest = segments(&fs).pop().unwrap();
    // One bit of record 6's payload flips on the disk.
    let mut byte = [0u8; 1];
    byte[0] = fs
        .files()
        .into_iter()
        .find(|(p, _)| p == &newest)
        .map(|(_, b)| b[6 * PAGE + 100])
        .unwrap()
        ^ 0x04;
    fs.scribble(&newest, 6 * PAGE as u64 + 100, &byte);

    assert!(
        matches!(
            Wal::open_with(fs.fork(), DIR, opts().recovery_mode(RecoveryMode::Strict)),
            Err(Error::Corrupt { .. })
        ),
        "strict recovery took a flipped bit in a synced record for a torn tail"
    );
    let wal = Wal::open_with(fs.fork(), DIR, opts()).unwrap();
    let r = wal.recovery();
    assert_eq!(r.corrupt_records, 1, "{r:?}");
    let mut expect: Vec<u64> = (1..=12).collect();
    expect.retain(|&s| s != 6);
    // Records 13 and 14 were never synced: the cut may have kept them or not.
    let mut got = read_all(&wal);
    got.retain(|&s| s <= 12);
    assert_eq!(
        got, expect,
        "the intact records after the damage are delivered"
    );
}
