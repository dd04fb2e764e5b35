//! A read of the segment being written, running while records are appended to it, sees
//! a prefix of what was appended and nothing else. The writer publishes a frame's bytes a
//! moment before it records the frame's sequence number as the segment's last: a frame
//! caught in between is the end of what that read sees, never damage (which `Strict`
//! would report as `Error::Corrupt`, and the lenient mode would count).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vinequeue_storage::{RecoveryMode, Storage};
use vinequeue_wal::sim::SimFs;
use vinequeue_wal::{SyncMode, Wal, WalOptions};

fn race(mode: RecoveryMode) {
    let wal = Arc::new(
        Wal::open_with(
            SimFs::new(3),
            "/wal",
            WalOptions::default()
                .segment_size(16 << 20)
                .max_size(1 << 30)
                .sync_mode(SyncMode::Os)
                .recovery_mode(mode),
        )
        .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let appender = {
        let (wal, stop) = (Arc::clone(&wal), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < 3_000_000 {
                wal.append(&n.to_le_bytes()).unwrap();
                n += 1;
            }
        })
    };
    // Read the tail over and over, as a spill read-back does.
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut reads = 0u64;
    while Instant::now() < deadline && !appender.is_finished() {
        let from = wal.next_seq().saturating_sub(2).max(1);
        let mut expect = from;
        let result = wal.read(from, usize::MAX, &mut |seq, bytes| {
            assert_eq!(seq, expect, "records out of order");
            assert_eq!(bytes, &(seq - 1).to_le_bytes());
            expect += 1;
            true
        });
        if let Err(e) = result {
            stop.store(true, Ordering::Relaxed);
            panic!("read from {from} failed after {reads} reads: {e}");
        }
        reads += 1;
    }
    stop.store(true, Ordering::Relaxed);
    appender.join().unwrap();
    assert_eq!(
        wal.corrupt_records_read(),
        0,
        "reads counted damage in a log that has none ({reads} reads)"
    );
}

#[test]
fn strict_reads_of_the_tail_never_report_corruption() {
    race(RecoveryMode::Strict);
}

#[test]
fn lenient_reads_of_the_tail_never_count_damage() {
    race(RecoveryMode::SkipCorrupt);
}
