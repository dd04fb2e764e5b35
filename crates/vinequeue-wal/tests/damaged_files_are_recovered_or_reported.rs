//! Recovery over damaged directories: torn tails, bit flips, truncated and garbage
//! segments, stray files, a damaged checkpoint.

mod support;

use std::path::{Path, PathBuf};

use vinequeue_storage::{Error, RecoveryMode, Storage};
use vinequeue_wal::format::{
    frame_offset, Checkpoint, CHECKPOINT_SLOT_LEN, CHECKPOINT_SLOT_STRIDE, FRAME_HEADER_LEN,
};
use vinequeue_wal::sim::SimFs;
use vinequeue_wal::{Fs, SyncMode, Wal, WalOptions};

const DIR: &str = "/data/wal";

fn opts() -> WalOptions {
    support::small_segments(SyncMode::Immediate)
}

fn payload(i: u64) -> Vec<u8> {
    format!("record number {i:05} ")
        .repeat(1 + (i % 3) as usize)
        .into_bytes()
}

fn read_all<S: Storage>(s: &S) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut from = 1;
    loop {
        let n = s
            .read(from, 1000, &mut |seq, b| {
                out.push((seq, b.to_vec()));
                true
            })
            .unwrap();
        if n == 0 {
            return out;
        }
        from = out.last().unwrap().0 + 1;
    }
}

fn segments(fs: &SimFs) -> Vec<(PathBuf, Vec<u8>)> {
    fs.segment_files(Path::new(DIR))
}

/// Writes `n` records in one opening of the log and closes it cleanly; returns the file system.
fn written(n: u64) -> SimFs {
    let fs = SimFs::new(1);
    let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
    for i in 1..=n {
        assert_eq!(wal.append(&payload(i)).unwrap(), i);
    }
    wal.sync().unwrap();
    drop(wal);
    fs
}

/// Two openings: records 1..=a in the first segment, a+1..=a+b in a later one, so that
/// the first is sealed (not the newest) at the next recovery.
fn two_openings(a: u64, b: u64) -> SimFs {
    let fs = written(a);
    let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
    for i in a + 1..=a + b {
        assert_eq!(wal.append(&payload(i)).unwrap(), i);
    }
    wal.sync().unwrap();
    drop(wal);
    fs
}

/// Records 1..=4 synced, record 5 appended and never synced, then the process dies.
fn last_one_unsynced() -> SimFs {
    let fs = SimFs::new(1);
    let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
    for i in 1..=5 {
        assert_eq!(wal.append(&payload(i)).unwrap(), i);
        if i == 4 {
            wal.sync().unwrap();
        }
    }
    let crashed = fs.process_crash();
    drop(wal);
    crashed
}

#[test]
fn a_torn_last_record_is_cut_off_at_every_byte_offset() {
    let base = last_one_unsynced();
    let (path, image) = segments(&base).pop().unwrap();
    let last = frame_offset(&image, 1, 5);
    let next = frame_offset(&image, 1, 6);
    for cut in last..=next {
        for garbage in [false, true] {
            let fs = base.fork();
            let mut torn = image.clone();
            for (k, b) in torn[cut..next].iter_mut().enumerate() {
                *b = if garbage { 0xA5 ^ k as u8 } else { 0 };
            }
            fs.put_file(&path, &torn);
            let wal = Wal::open_with(fs.clone(), DIR, opts().recovery_mode(RecoveryMode::Strict))
                .unwrap_or_else(|e| panic!("cut at {cut} (garbage {garbage}) must open: {e}"));
            let got = read_all(&wal);
            let expect = if cut == next { 5 } else { 4 };
            assert_eq!(got.len(), expect, "cut at {cut}, garbage {garbage}");
            for (seq, bytes) in &got {
                assert_eq!(bytes, &payload(*seq));
            }
            let r = wal.recovery();
            assert_eq!(r.corrupt_records, 0, "a torn tail is not corruption");
            // Record 5 was handed out (a sink may have it) even where it was torn
            // off: its number is not handed out again (numbering goes on above the
            // block reserved before the crash).
            assert_eq!(r.next_seq, 1 + (1 << 20));
            // The log goes on, and the next recovery sees a clean, sealed segment.
            let seq = wal.append(b"after").unwrap();
            assert_eq!(seq, r.next_seq);
            wal.sync().unwrap();
            drop(wal);
            let wal = Wal::open_with(fs, DIR, opts().recovery_mode(RecoveryMode::Strict)).unwrap();
            assert_eq!(read_all(&wal).len(), expect + 1);
        }
    }
}

#[test]
fn a_bit_flip_in_any_field_of_a_sealed_segment_is_skipped_and_counted_or_refused() {
    let base = two_openings(6, 4);
    let (path, image) = segments(&base).remove(0);
    let target = frame_offset(&image, 1, 3);
    let len = u32::from_le_bytes(image[target..target + 4].try_into().unwrap()) as usize;
    let fields = [
        ("len", 0),
        ("crc", 5),
        ("seq", 9),
        ("payload", FRAME_HEADER_LEN + len / 2),
    ];
    for (field, at) in fields {
        let fs = base.fork();
        let mut bad = image.clone();
        bad[target + at] ^= 0x04;
        fs.put_file(&path, &bad);

        match Wal::open_with(fs.clone(), DIR, opts().recovery_mode(RecoveryMode::Strict)) {
            Err(Error::Corrupt {
                file,
                offset,
                reason,
            }) => {
                assert_eq!(file, path, "{field}");
                assert_eq!(offset, target as u64, "{field}: {reason}");
            }
            Err(e) => panic!("{field}: expected Corrupt, got {e}"),
            Ok(_) => panic!("{field}: strict recovery accepted a damaged record"),
        }

        let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
        let got: Vec<u64> = read_all(&wal).iter().map(|r| r.0).collect();
        assert_eq!(got, vec![1, 2, 4, 5, 6, 7, 8, 9, 10], "{field}");
        assert_eq!(wal.recovery().corrupt_records, 1, "{field}");
        for (seq, bytes) in read_all(&wal) {
            assert_eq!(bytes, payload(seq));
        }
        let damaged: Vec<_> = fs
            .files()
            .into_iter()
            .filter(|(p, _)| p.starts_with(Path::new(DIR).join("damaged")))
            .collect();
        assert_eq!(
            damaged.len(),
            1,
            "{field}: a copy of the damaged segment is kept"
        );
    }
}

#[test]
fn a_truncated_sealed_segment_loses_only_its_missing_records() {
    let base = two_openings(6, 4);
    let (path, image) = segments(&base).remove(0);
    let cut = frame_offset(&image, 1, 5) + 7;
    let fs = base.fork();
    fs.put_file(&path, &image[..cut]);
    let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
    let got: Vec<u64> = read_all(&wal).iter().map(|r| r.0).collect();
    assert_eq!(got, vec![1, 2, 3, 4, 7, 8, 9, 10]);
    assert_eq!(wal.recovery().corrupt_records, 2);
    drop(wal);
    assert!(matches!(
        Wal::open_with(
            fs.process_crash(),
            DIR,
            opts().recovery_mode(RecoveryMode::Strict)
        ),
        Err(Error::Corrupt { .. })
    ));
}

#[test]
fn a_garbage_segment_is_set_aside_and_its_records_counted() {
    let base = two_openings(6, 4);
    let (path, image) = segments(&base).remove(0);
    let fs = base.fork();
    let garbage: Vec<u8> = (0..image.len()).map(|i| (i * 7 + 3) as u8).collect();
    fs.put_file(&path, &garbage);
    assert!(matches!(
        Wal::open_with(fs.clone(), DIR, opts().recovery_mode(RecoveryMode::Strict)),
        Err(Error::Corrupt { offset: 0, .. })
    ));
    let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
    let got: Vec<u64> = read_all(&wal).iter().map(|r| r.0).collect();
    assert_eq!(got, vec![7, 8, 9, 10]);
    assert_eq!(wal.recovery().corrupt_records, 6);
    assert_eq!(wal.append(b"x").unwrap(), 11);
}

#[test]
fn stray_files_and_directories_are_left_alone() {
    let fs = written(3);
    let fs = fs.process_crash();
    fs.put_file(&Path::new(DIR).join("notes.txt"), b"hello");
    fs.put_file(&Path::new(DIR).join("123.seg"), b"not a segment name");
    fs.put_file(
        &Path::new(DIR).join("00000000000000000000.seg"),
        b"zero is not a seq",
    );
    fs.create_dir_all(&Path::new(DIR).join("backup")).unwrap();
    let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
    assert_eq!(read_all(&wal).len(), 3);
    assert_eq!(
        wal.recovery().unknown_files,
        3,
        "files only: directories are not ours to count"
    );
    drop(wal);
    assert!(fs
        .files()
        .iter()
        .any(|(p, b)| p.ends_with("notes.txt") && b == b"hello"));
}

#[test]
fn a_length_field_beyond_the_limit_is_corruption_not_an_allocation() {
    let base = two_openings(3, 2);
    let (path, image) = segments(&base).remove(0);
    let at = frame_offset(&image, 1, 2);
    let fs = base.fork();
    let mut bad = image.clone();
    bad[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    fs.put_file(&path, &bad);
    let wal = Wal::open_with(fs, DIR, opts()).unwrap();
    let got: Vec<u64> = read_all(&wal).iter().map(|r| r.0).collect();
    assert_eq!(got, vec![1, 3, 4, 5]);
}

#[test]
fn a_damaged_checkpoint_replays_everything_or_is_refused() {
    let fs = SimFs::new(3);
    let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
    for i in 1..=10 {
        wal.append(&payload(i)).unwrap();
    }
    for s in 1..=4 {
        wal.ack(s).unwrap();
    }
    wal.sync().unwrap();
    drop(wal);
    let fs = fs.process_crash();
    let cp = Path::new(DIR).join("checkpoint");
    let mut bytes = fs.files().into_iter().find(|(p, _)| *p == cp).unwrap().1;
    let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
    assert_eq!(wal.acked_through(), 4);
    assert_eq!(
        read_all(&wal).len(),
        10,
        "acknowledged records may still be readable"
    );
    drop(wal);
    let fs = fs.process_crash();
    // One damaged slot is a torn write of the newer one: the older slot still holds a
    // checkpoint, and it is the one used.
    let slots = [0, CHECKPOINT_SLOT_STRIDE].map(|at| {
        Checkpoint::decode(&bytes[at..at + CHECKPOINT_SLOT_LEN]).expect("both slots intact")
    });
    let (newer, older) = if slots[0].generation > slots[1].generation {
        (0, slots[1].clone())
    } else {
        (CHECKPOINT_SLOT_STRIDE, slots[0].clone())
    };
    assert_eq!(
        older.acked_through, 4,
        "the sync wrote the mark before the close"
    );
    bytes[newer + 30] ^= 1;
    fs.put_file(&cp, &bytes);
    let wal = Wal::open_with(fs.clone(), DIR, opts().recovery_mode(RecoveryMode::Strict)).unwrap();
    assert_eq!(wal.acked_through(), older.acked_through);
    drop(wal);
    let fs = fs.process_crash();
    let mut bytes = fs.files().into_iter().find(|(p, _)| *p == cp).unwrap().1;
    bytes[29] ^= 1;
    bytes[CHECKPOINT_SLOT_STRIDE + 29] ^= 1;
    fs.put_file(&cp, &bytes);
    assert!(matches!(
        Wal::open_with(fs.clone(), DIR, opts().recovery_mode(RecoveryMode::Strict)),
        Err(Error::Corrupt { .. })
    ));
    let wal = Wal::open_with(fs, DIR, opts()).unwrap();
    assert_eq!(
        wal.acked_through(),
        0,
        "without a checkpoint everything is replayed"
    );
    assert_eq!(read_all(&wal).len(), 10);
    // Numbering goes on above every record and every segment found (the reservation
    // the lost checkpoint held is gone with it).
    assert!(wal.append(b"x").unwrap() > 10);
}

#[test]
fn fully_acknowledged_segments_are_deleted_and_numbering_continues() {
    let fs = SimFs::new(5);
    let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
    let big = vec![1u8; 3000];
    for _ in 0..100 {
        wal.append(&big).unwrap();
    }
    assert!(wal.segment_count() >= 4);
    let before = wal.size();
    for s in 1..=100 {
        wal.ack(s).unwrap();
    }
    wal.reclaim().unwrap();
    assert_eq!(wal.segment_count(), 1, "only the active segment remains");
    assert!(wal.size() < before);
    drop(wal);
    let wal = Wal::open_with(fs.process_crash(), DIR, opts()).unwrap();
    assert_eq!(wal.acked_through(), 100);
    assert_eq!(read_all(&wal).len(), 0);
    assert_eq!(wal.append(b"x").unwrap(), 101);
}

/// Recovery scans the segments of a log two at a time where the file system allows it
/// (`Fs::parallel_reads`, as the real one does), and must come to exactly what a scan
/// of one segment after the other does, whatever the damage: the same report, the same
/// records, the same refusal under `Strict`, the same next number.
#[test]
fn segments_scanned_two_at_a_time_recover_exactly_as_one_at_a_time() {
    let base = written(7000);
    let files = segments(&base);
    assert!(files.len() >= 6, "{} segments", files.len());
    let (p1, i1) = files[1].clone();
    let (p2, i2) = files[2].clone();
    let (p3, i3) = files[3].clone();
    let (pn, in_) = files.last().unwrap().clone();
    // The `nth` frame of a segment image, with bit 4 of its byte `at` flipped.
    let flip = |image: &[u8], nth: u64, at: usize| {
        let mut bad = image.to_vec();
        bad[frame_offset(image, 1, nth) + at] ^= 0x10;
        bad
    };
    type Damage = Box<dyn Fn(&SimFs)>;
    let damages: Vec<(&str, Damage)> = vec![
        ("none", Box::new(|_| {})),
        (
            "a flipped payload byte",
            Box::new({
                let (p, i) = (p2.clone(), i2.clone());
                move |fs| fs.put_file(&p, &flip(&i, 10, FRAME_HEADER_LEN + 3))
            }),
        ),
        (
            "a flipped length",
            Box::new({
                let (p, i) = (p1.clone(), i1.clone());
                move |fs| fs.put_file(&p, &flip(&i, 20, 1))
            }),
        ),
        (
            "a truncated sealed segment",
            Box::new({
                let (p, i) = (p3.clone(), i3.clone());
                move |fs| fs.put_file(&p, &i[..frame_offset(&i, 1, 30) + 5])
            }),
        ),
        (
            "a zeroed segment header",
            Box::new({
                let (p, i) = (p2.clone(), i2.clone());
                move |fs| {
                    let mut bad = i.clone();
                    bad[..8].fill(0);
                    fs.put_file(&p, &bad)
                }
            }),
        ),
        (
            "a torn newest segment",
            Box::new({
                let (p, i) = (pn.clone(), in_.clone());
                move |fs| fs.put_file(&p, &i[..frame_offset(&i, 1, 3) + 9])
            }),
        ),
        (
            "damage in three segments",
            Box::new({
                let (a, ia, b, ib, c, ic) = (
                    p1.clone(),
                    i1.clone(),
                    p2.clone(),
                    i2.clone(),
                    p3.clone(),
                    i3.clone(),
                );
                move |fs| {
                    fs.put_file(&a, &flip(&ia, 5, FRAME_HEADER_LEN));
                    fs.put_file(&b, &flip(&ib, 7, 9));
                    fs.put_file(&c, &ic[..ic.len() / 2]);
                }
            }),
        ),
    ];
    for (what, damage) in &damages {
        for mode in [RecoveryMode::SkipCorrupt, RecoveryMode::Strict] {
            let outcome = |fs: SimFs| {
                damage(&fs);
                match Wal::open_with(fs, DIR, opts().recovery_mode(mode)) {
                    Err(e) => format!("refused: {e}"),
                    Ok(wal) => {
                        let records = read_all(&wal);
                        let next = wal.append(b"next").unwrap();
                        format!("{:?}\n{records:?}\nnext {next}", wal.recovery())
                    }
                }
            };
            let one_by_one = outcome(base.fork());
            let two_at_once = outcome(base.fork().with_parallel_reads());
            assert_eq!(one_by_one, two_at_once, "{what}, {mode:?}");
        }
    }
}
