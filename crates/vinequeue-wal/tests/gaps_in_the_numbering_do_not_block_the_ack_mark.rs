//! Numbers that hold no record (lost to a power cut before they were synced, reserved by
//! recovery, skipped as damaged, or between segments) are acknowledged by nobody: no
//! record with that number will ever be delivered. They must not hold the acknowledged
//! mark below them, or no segment is ever deleted again and the log fills up.

use std::path::{Path, PathBuf};
use std::time::Duration;

use vinequeue_storage::Storage;
use vinequeue_wal::format::{frame_offset, FRAME_HEADER_LEN};
use vinequeue_wal::sim::SimFs;
use vinequeue_wal::{SyncMode, Wal, WalOptions};

const DIR: &str = "/wal";

fn opts(mode: SyncMode) -> WalOptions {
    WalOptions::default()
        .segment_size(64 * 1024)
        .max_size(1 << 30)
        .sync_mode(mode)
}

fn payload(seq: u64) -> Vec<u8> {
    let mut p = vec![(seq % 251) as u8; 200];
    p[..8].copy_from_slice(&seq.to_le_bytes());
    p
}

/// Every record readable from `from` on.
fn read_all(wal: &Wal<SimFs>, from: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    wal.read(from, usize::MAX, &mut |seq, b| {
        assert_eq!(b, payload(seq), "record {seq}");
        seqs.push(seq);
        true
    })
    .unwrap();
    seqs
}

/// Delivers (acknowledges) every record found, then keeps appending and acknowledging
/// several segments' worth: the mark must follow, and the old segments must go.
fn deliver_everything_and_go_on(wal: &Wal<SimFs>) {
    let found = read_all(wal, wal.acked_through() + 1);
    wal.ack_all(&found).unwrap();
    assert_eq!(
        wal.acked_through(),
        wal.next_seq() - 1,
        "every record found was acknowledged, yet the mark stops below next_seq {} \
         (found {:?}..={:?})",
        wal.next_seq(),
        found.first(),
        found.last()
    );
    for _ in 0..1000 {
        let seq = wal.next_seq();
        assert_eq!(wal.append(&payload(seq)).unwrap(), seq);
        wal.ack(seq).unwrap();
    }
    wal.reclaim().unwrap();
    assert_eq!(wal.acked_through(), wal.next_seq() - 1);
    assert_eq!(
        wal.segment_count(),
        1,
        "fully acknowledged segments must be deleted"
    );
}

#[test]
fn records_lost_to_a_power_cut_under_the_checkpoints_next_seq_do_not_block_the_mark() {
    let mut gaps_seen = 0;
    for seed in 0..8 {
        let fs = SimFs::new(seed);
        // Periodic, but never within the test: only the explicit sync makes data durable.
        let wal = Wal::open_with(
            fs.clone(),
            DIR,
            opts(SyncMode::Periodic(Duration::from_secs(3600))),
        )
        .unwrap();
        for seq in 1..=899 {
            assert_eq!(wal.append(&payload(seq)).unwrap(), seq);
        }
        wal.sync().unwrap();
        for seq in 900..=1000 {
            assert_eq!(wal.append(&payload(seq)).unwrap(), seq);
        }
        // The first append reserved numbers up to 1 + 2^20 in the checkpoint, synced;
        // acknowledging 1..=500 deletes the first segment. Records 900..=1000 are not
        // synced.
        let acks: Vec<u64> = (1..=500).collect();
        wal.ack_all(&acks).unwrap();
        wal.reclaim().unwrap();
        let fs = fs.power_cut();
        drop(wal);

        let wal = Wal::open_with(fs, DIR, opts(SyncMode::Immediate)).unwrap();
        assert_eq!(
            wal.next_seq(),
            1 + (1 << 20),
            "numbers reserved before the cut are not handed out again"
        );
        let found = read_all(&wal, 501);
        assert!(
            (501..=899).all(|s| found.contains(&s)),
            "synced records lost"
        );
        if found.len() < 500 {
            gaps_seen += 1;
        }
        deliver_everything_and_go_on(&wal);
    }
    assert!(
        gaps_seen > 0,
        "no seed lost an unsynced record: the test tests nothing"
    );
}

fn segments(fs: &SimFs) -> Vec<(PathBuf, Vec<u8>)> {
    fs.segment_files(Path::new(DIR))
}

/// `openings` openings of the log, of `n` records each, closed cleanly: as many sealed segments at the
/// next open.
fn openings(openings: usize, n: u64) -> SimFs {
    let fs = SimFs::new(1);
    for _ in 0..openings {
        let wal = Wal::open_with(fs.clone(), DIR, opts(SyncMode::Immediate)).unwrap();
        for _ in 0..n {
            let seq = wal.next_seq();
            wal.append(&payload(seq)).unwrap();
        }
        drop(wal);
    }
    fs.process_crash()
}

#[test]
fn records_skipped_as_damaged_at_recovery_do_not_block_the_mark() {
    let fs = openings(2, 20);
    let (path, image) = segments(&fs).remove(0);
    let mut bad = image.clone();
    bad[frame_offset(&image, 1, 7) + FRAME_HEADER_LEN + 50] ^= 0x40;
    fs.put_file(&path, &bad);
    let wal = Wal::open_with(fs, DIR, opts(SyncMode::Immediate)).unwrap();
    assert_eq!(wal.recovery().corrupt_records, 1);
    deliver_everything_and_go_on(&wal);
}

#[test]
fn numbers_between_segments_do_not_block_the_mark() {
    // The middle segment is garbage and set aside: numbers 21..=40 lie between the first
    // segment's last record and the third one's first.
    let fs = openings(3, 20);
    let (path, _) = segments(&fs).remove(1);
    let garbage: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 + 3) as u8).collect();
    fs.put_file(&path, &garbage);
    let wal = Wal::open_with(fs.clone(), DIR, opts(SyncMode::Immediate)).unwrap();
    assert_eq!(wal.recovery().corrupt_records, 20);
    deliver_everything_and_go_on(&wal);
}

#[test]
fn numbers_reserved_for_a_damaged_newest_segment_do_not_block_the_mark() {
    // The newest segment is garbage: the checkpoint's reservation keeps its numbers from
    // being handed out again, and its frontier tells how many synced records were lost.
    let fs = openings(2, 20);
    let (path, _) = segments(&fs).remove(1);
    let garbage: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 + 3) as u8).collect();
    fs.put_file(&path, &garbage);
    let wal = Wal::open_with(fs.clone(), DIR, opts(SyncMode::Immediate)).unwrap();
    assert_eq!(wal.next_seq(), 41);
    assert_eq!(wal.recovery().corrupt_records, 20);
    deliver_everything_and_go_on(&wal);
}

#[test]
fn records_found_damaged_by_a_later_read_do_not_block_the_mark() {
    let fs = openings(2, 20);
    let wal = Wal::open_with(fs.clone(), DIR, opts(SyncMode::Immediate)).unwrap();
    assert_eq!(wal.recovery().corrupt_records, 0);
    // Damage appears after the open (a media error): the read steps over record 7.
    let (path, image) = segments(&fs).remove(0);
    fs.scribble(
        &path,
        (frame_offset(&image, 1, 7) + FRAME_HEADER_LEN + 50) as u64,
        &[0xEE],
    );
    let found = read_all(&wal, 1);
    assert!(!found.contains(&7) && found.len() == 39, "{found:?}");
    assert_eq!(wal.corrupt_records_read(), 1);
    deliver_everything_and_go_on(&wal);
}
