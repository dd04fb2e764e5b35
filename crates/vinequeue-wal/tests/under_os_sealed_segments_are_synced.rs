//! Under `SyncMode::Os` nothing is synced on request, but a segment is synced once it is
//! sealed (in the background): a power cut can then tear only the newest segment, and
//! `Strict` recovery opens the log after one.

use std::time::{Duration, Instant};

use vinequeue_storage::{RecoveryMode, Storage};
use vinequeue_wal::sim::SimFs;
use vinequeue_wal::{Reclaim, SyncMode, Wal, WalOptions};

const DIR: &str = "/wal";

fn opts(background: bool) -> WalOptions {
    WalOptions::default()
        .segment_size(64 * 1024)
        .max_size(1 << 30)
        .sync_mode(SyncMode::Os)
        .reclaim(if background {
            Reclaim::Background
        } else {
            Reclaim::Inline
        })
        .recovery_mode(RecoveryMode::Strict)
}

fn sealed_segments_survive(background: bool) {
    for seed in 0..20 {
        let fs = SimFs::new(seed);
        let wal = Wal::open_with(fs.clone(), DIR, opts(background)).unwrap();
        let mut last = 0;
        while wal.segment_count() < 4 {
            last = wal.append(&[seed as u8; 1000]).unwrap();
        }
        // Three segments sealed: wait for their syncs (the thread's), then the power goes.
        let deadline = Instant::now() + Duration::from_secs(30);
        while fs.sync_count() < 3 {
            assert!(Instant::now() < deadline, "sealed segments never synced");
            std::thread::sleep(Duration::from_millis(1));
        }
        let fs = fs.power_cut();
        drop(wal);
        let wal = Wal::open_with(fs, DIR, opts(background))
            .unwrap_or_else(|e| panic!("seed {seed}: Strict refused the log after a cut: {e}"));
        let report = wal.recovery();
        assert_eq!(report.corrupt_records, 0, "seed {seed}");
        // Every record of the sealed segments is there; some of the newest may not be.
        let mut seen = Vec::new();
        wal.read(1, usize::MAX, &mut |seq, _| {
            seen.push(seq);
            true
        })
        .unwrap();
        let sealed_records = 3 * ((64 * 1024 - 40) / 1016);
        assert!(
            seen.len() as u64 >= sealed_records && seen.len() as u64 <= last,
            "seed {seed}: {} records",
            seen.len()
        );
        assert!(
            seen.iter().copied().eq(1..=seen.len() as u64),
            "seed {seed}"
        );
    }
}

#[test]
fn sealed_segments_are_synced_in_the_background() {
    sealed_segments_survive(true);
}

#[test]
fn without_the_logs_thread_the_roll_syncs_the_sealed_segment() {
    sealed_segments_survive(false);
}
