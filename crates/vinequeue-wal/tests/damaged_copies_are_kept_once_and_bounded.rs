//! Recovery keeps one copy of each damaged file in `damaged/`, not one per open, and no
//! more than `max_damaged_size` bytes of copies; the size is reported.

use std::path::Path;

use vinequeue_storage::Storage;
use vinequeue_wal::format::frame_offset;
use vinequeue_wal::sim::SimFs;
use vinequeue_wal::{SyncMode, Wal, WalOptions};

const DIR: &str = "/data/wal";
const SEGMENT: u64 = 64 * 1024;

fn opts() -> WalOptions {
    WalOptions::default()
        .segment_size(SEGMENT)
        .max_size(1 << 30)
        .sync_mode(SyncMode::Immediate)
}

/// A log whose first (sealed) segment has a flipped bit in its second record, and the
/// length of that segment's file.
fn damaged_log() -> (SimFs, u64) {
    let fs = SimFs::new(1);
    for round in 0..2 {
        let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
        for _ in 0..5 {
            wal.append(&[round; 100]).unwrap();
        }
        wal.sync().unwrap();
    }
    let (path, image) = fs.segment_files(Path::new(DIR)).remove(0);
    let at = frame_offset(&image, 1, 2) + 20;
    fs.scribble(&path, at as u64, &[image[at] ^ 1]);
    (fs, image.len() as u64)
}

fn copies(fs: &SimFs) -> Vec<(String, usize)> {
    let aside = Path::new(DIR).join("damaged");
    fs.files()
        .into_iter()
        .filter(|(p, _)| p.parent() == Some(&aside))
        .map(|(p, b)| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                b.len(),
            )
        })
        .collect()
}

#[test]
fn reopening_over_the_same_damage_keeps_one_copy() {
    let (fs, len) = damaged_log();
    for open in 0..4 {
        let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
        let report = wal.recovery();
        assert_eq!(report.corrupt_records, 1, "open {open}");
        assert_eq!(report.damaged_bytes, len, "open {open}");
        assert_eq!(report.damaged_not_kept, 0);
        drop(wal);
        let kept = copies(&fs);
        assert_eq!(
            kept,
            vec![("00000000000000000001.seg".to_string(), len as usize)],
            "open {open}"
        );
    }
}

#[test]
fn a_copy_beyond_the_limit_is_not_made_and_is_counted() {
    let (fs, len) = damaged_log();
    let wal = Wal::open_with(fs.clone(), DIR, opts().max_damaged_size(len - 1)).unwrap();
    let report = wal.recovery();
    assert_eq!(report.corrupt_records, 1);
    assert_eq!(report.damaged_not_kept, 1);
    assert_eq!(report.damaged_bytes, 0);
    drop(wal);
    assert!(copies(&fs).is_empty(), "{:?}", copies(&fs));
}
