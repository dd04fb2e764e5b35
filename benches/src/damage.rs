//! Reopening a log after damage, for the `recovery` criterion bench: how much longer than
//! a clean open recovery takes over a torn tail, and over a segment in which every other
//! frame is damaged.
//!
//! One segment of the default size (64 MiB) is filled with [`RECORDS`] records of
//! [`RECORD_LEN`](crate::wal::RECORD_LEN) bytes by the log itself and closed cleanly; [`Damage`] is then done to
//! the files directly. Each measurement opens a fresh copy of that directory (copying is
//! not timed): recovery changes what it opens (it cuts a torn tail off and keeps a copy
//! of a damaged segment in `damaged/`), so every open starts from the same bytes. What is
//! timed is `Wal::open`, which includes the copy into `damaged/` where there is damage.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vinequeue::wal::format::{segment_name, Checkpoint};
use vinequeue::{RecoveryReport, Storage, SyncMode, Wal};

use crate::wal::{payload, wal_options, Scratch, FRAME_LEN};

/// Records in the segment: as many as fit in 64 MiB with room to spare.
pub const RECORDS: u64 = 570_000;

/// What is done to the log before it is opened again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// Nothing: the clean open every other case is compared with.
    None,
    /// The last frame's header is garbage, and the checkpoint's synced frontier lies
    /// below it: the state a power cut during the last append leaves.
    TornTail,
    /// One payload byte of every other frame is flipped, all of them synced: each is
    /// corruption, skipped (the default recovery mode) and counted.
    EveryOtherFrame,
}

impl Damage {
    /// Every case, clean first.
    pub const ALL: [Damage; 3] = [Damage::None, Damage::TornTail, Damage::EveryOtherFrame];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Damage::None => "clean",
            Damage::TornTail => "torn tail",
            Damage::EveryOtherFrame => "every other frame damaged",
        }
    }
}

/// A damaged log directory kept as the original every open starts from.
#[derive(Debug)]
pub struct DamagedLog {
    scratch: Scratch,
    original: PathBuf,
    damage: Damage,
    records: u64,
}

impl DamagedLog {
    /// Writes a log of `records` records (at most [`RECORDS`]) under `dir` and damages
    /// it.
    ///
    /// # Panics
    ///
    /// On any I/O or log error.
    pub fn new(dir: &Path, damage: Damage, records: u64) -> DamagedLog {
        let records = records.min(RECORDS);
        let scratch = Scratch::new(dir, "damaged-reopen");
        let original = scratch.path().join("original");
        let wal = Wal::open(&original, wal_options(SyncMode::Os)).expect("open the log");
        for i in 0..records {
            wal.append(&payload(i)).expect("append");
        }
        wal.sync().expect("sync");
        drop(wal);
        let seg = original.join(segment_name(1));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&seg)
            .expect("open the segment");
        let frame_at = |i: u64| 40 + i * FRAME_LEN as u64;
        match damage {
            Damage::None => {}
            Damage::TornTail => {
                let last = frame_at(records - 1);
                file.write_all_at(&[0xA5; 16], last).expect("tear the tail");
                let path = original.join("checkpoint");
                let bytes = fs::read(&path).expect("read the checkpoint");
                let mut cp = Checkpoint::decode_file(&bytes).expect("a checkpoint");
                cp.generation += 1;
                cp.synced_through = 0;
                fs::write(&path, cp.encode_file()).expect("write the checkpoint");
            }
            Damage::EveryOtherFrame => {
                for i in (0..records).step_by(2) {
                    let at = frame_at(i) + 16 + 50;
                    let mut b = [0u8; 1];
                    file.read_exact_at(&mut b, at).expect("read");
                    file.write_all_at(&[b[0] ^ 0x10], at).expect("flip");
                }
            }
        }
        file.sync_all().expect("sync the segment");
        DamagedLog {
            scratch,
            original,
            damage,
            records,
        }
    }

    /// The damage done.
    pub fn damage(&self) -> Damage {
        self.damage
    }

    /// What recovery must report for this log.
    ///
    /// # Panics
    ///
    /// If `report` says otherwise.
    pub fn check(&self, report: &RecoveryReport) {
        let n = self.records;
        let (records, corrupt) = match self.damage {
            Damage::None => (n, 0),
            Damage::TornTail => (n - 1, 0),
            Damage::EveryOtherFrame => (n / 2, n.div_ceil(2)),
        };
        assert_eq!((report.records, report.corrupt_records), (records, corrupt));
    }

    /// A fresh copy of the damaged directory, to be opened once.
    ///
    /// # Panics
    ///
    /// On an I/O error.
    pub fn copy(&self) -> PathBuf {
        let to = self.scratch.path().join("open");
        let _ = fs::remove_dir_all(&to);
        fs::create_dir_all(&to).expect("create the copy");
        for entry in fs::read_dir(&self.original).expect("list") {
            let entry = entry.expect("entry");
            if entry.file_type().expect("type").is_file() && entry.file_name() != "LOCK" {
                fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
            }
        }
        to
    }
}

/// Opens the log at `dir` (one fresh copy of a [`DamagedLog`]) and returns how long
/// `Wal::open` took and what recovery reported.
///
/// # Panics
///
/// If the log does not open.
pub fn reopen(dir: &Path) -> (Duration, RecoveryReport) {
    let start = Instant::now();
    let wal = Wal::open(dir, wal_options(SyncMode::Os)).expect("recovery opens the log");
    let took = start.elapsed();
    let report = wal.recovery();
    drop(wal);
    (took, report)
}
