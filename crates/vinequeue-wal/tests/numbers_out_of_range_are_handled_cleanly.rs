//! Sequence numbers beyond what the log holds, from a caller or from a damaged or crafted
//! file, neither hang, nor panic, nor push the numbering past `MAX_SEQ` (where the log's
//! own files and checkpoint could no longer name it).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use vinequeue_storage::{Error, RecoveryMode, Storage};
use vinequeue_wal::format::{
    frame_header, Checkpoint, FRAME_HEADER_LEN, MAX_SEQ, SEGMENT_HEADER_LEN,
};
use vinequeue_wal::sim::SimFs;
use vinequeue_wal::{Fs, SyncMode, Wal, WalOptions};

const DIR: &str = "/wal";

fn opts() -> WalOptions {
    support::small_segments(SyncMode::Immediate)
}

#[test]
fn sync_through_a_number_not_appended_yet_returns() {
    let wal = std::sync::Arc::new(Wal::open_with(SimFs::new(1), DIR, opts()).unwrap());
    for _ in 0..3 {
        wal.append(b"x").unwrap();
    }
    let syncer = {
        let wal = std::sync::Arc::clone(&wal);
        std::thread::spawn(move || wal.sync_through(1_000))
    };
    let start = Instant::now();
    while !syncer.is_finished() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "sync_through(1000) with 3 records appended never returns"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    syncer.join().unwrap().unwrap();
}

#[test]
fn acknowledging_the_largest_numbers_neither_panics_nor_moves_the_mark() {
    let wal = Wal::open_with(SimFs::new(2), DIR, opts()).unwrap();
    wal.append(b"x").unwrap();
    wal.ack_all(&[u64::MAX, u64::MAX, MAX_SEQ, u64::MAX - 1])
        .unwrap();
    wal.ack(u64::MAX).unwrap();
    assert_eq!(wal.acked_through(), 0);
    wal.ack_all(&[1, u64::MAX]).unwrap();
    assert_eq!(wal.acked_through(), 1);
}

#[test]
fn a_log_whose_numbers_are_used_up_stays_readable() {
    let fs = log_with_its_numbers_used_up();
    let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
    assert!(
        wal.next_seq() <= MAX_SEQ,
        "next_seq {} is beyond MAX_SEQ",
        wal.next_seq()
    );
    // The numbers are used up: a clear error, and MAX_SEQ is not handed out again.
    assert!(matches!(wal.append(b"y"), Err(Error::LogFailed(_))));
    let mut seen = Vec::new();
    wal.read(1, usize::MAX, &mut |s, _| {
        seen.push(s);
        true
    })
    .unwrap();
    assert_eq!(seen, vec![1, 2, 3]);
    for s in 1..=3 {
        wal.ack(s).unwrap();
    }
    wal.sync().unwrap();
    drop(wal);
    // What the log wrote (checkpoint, segment names) is still its own to read.
    let wal = Wal::open_with(
        fs.process_crash(),
        DIR,
        opts().recovery_mode(RecoveryMode::Strict),
    )
    .unwrap();
    assert!(wal.next_seq() <= MAX_SEQ);
    assert_eq!(wal.recovery().unknown_files, 0);
}

/// A log of three six-byte records, closed cleanly.
fn three_records(seed: u64) -> SimFs {
    let fs = SimFs::new(seed);
    let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
    for _ in 0..3 {
        wal.append(b"record").unwrap();
    }
    drop(wal);
    fs.process_crash()
}

/// A log of three records whose checkpoint reserved every number there is (`next_seq`
/// = `MAX_SEQ`).
fn log_with_its_numbers_used_up() -> SimFs {
    let fs = three_records(3);
    let cp = Checkpoint {
        generation: 9,
        acked_through: 0,
        next_seq: MAX_SEQ,
        segment: 1,
        offset: SEGMENT_HEADER_LEN as u64,
        synced_through: 3,
        acked_above: Vec::new(),
    };
    fs.put_file(&Path::new(DIR).join("checkpoint"), &cp.encode_file());
    fs
}

#[test]
fn a_frame_claiming_a_number_its_offset_cannot_hold_changes_no_numbering() {
    // After three records: a few damaged bytes, then an intact frame (this segment's
    // salt, a correct checksum) claiming the largest number there is, a few bytes into
    // the segment, where no frame of a real log could hold it. With or without the
    // checkpoint, recovery neither believes it nor hands out numbers beyond it.
    for keep_checkpoint in [true, false] {
        let fs = three_records(4);
        let (path, mut image) = fs
            .files()
            .into_iter()
            .find(|(p, _)| {
                p.parent() == Some(Path::new(DIR)) && p.extension().is_some_and(|e| e == "seg")
            })
            .unwrap();
        let salt = u64::from_le_bytes(image[24..32].try_into().unwrap());
        let data_end = SEGMENT_HEADER_LEN + 3 * (FRAME_HEADER_LEN + 6);
        image[data_end..data_end + 5].copy_from_slice(&[0xAB; 5]);
        let at = data_end + 64;
        let payload = b"crafted";
        let header = frame_header(crc32c::crc32c(payload), salt, MAX_SEQ, payload.len() as u32);
        image[at..at + FRAME_HEADER_LEN].copy_from_slice(&header);
        image[at + FRAME_HEADER_LEN..at + FRAME_HEADER_LEN + payload.len()]
            .copy_from_slice(payload);
        fs.put_file(&path, &image);
        if !keep_checkpoint {
            fs.remove(&Path::new(DIR).join("checkpoint")).unwrap();
        }
        let wal = Wal::open_with(fs, DIR, opts()).unwrap();
        assert_eq!(wal.next_seq(), 4, "checkpoint kept: {keep_checkpoint}");
        let mut seen = Vec::new();
        wal.read(1, usize::MAX, &mut |s, _| {
            seen.push(s);
            true
        })
        .unwrap();
        assert_eq!(seen, vec![1, 2, 3]);
        assert_eq!(wal.append(b"y").unwrap(), 4);
    }
}
