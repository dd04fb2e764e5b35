//! The kernel reports a failed write-back once: to whichever sync of the file comes
//! first, after which the lost pages look clean and the next sync succeeds. When a segment
//! fills up, the append that rolls it syncs it while a group-commit leader may be syncing
//! the same range. Whatever the interleaving, a sync that returns `Ok` must mean that its
//! records are durable.

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vinequeue_core::Storage;
use vinequeue_wal::sim::{FaultOp, SimFs};
use vinequeue_wal::{SyncMode, Wal, WalOptions};

const DIR: &str = "/wal";

#[test]
fn a_roll_whose_sync_fails_never_lets_a_concurrent_sync_report_success() {
    let fs = SimFs::new(21);
    let wal = Arc::new(
        Wal::open_with(
            fs.clone(),
            DIR,
            WalOptions::default()
                .segment_size(64 * 1024)
                .max_size(1 << 30)
                .sync_mode(SyncMode::Immediate),
        )
        .unwrap(),
    );
    let rec = [5u8; 1000];
    // 64 frames of 1016 bytes fill the first segment: the next append rolls.
    let mut last = 0;
    for _ in 0..64 {
        last = wal.append(&rec).unwrap();
    }
    assert_eq!(wal.segment_count(), 1);

    // A group-commit leader's sync of the first segment is held at its start. Meanwhile
    // the append that rolls the segment syncs it too: the write-back fails (the kernel
    // drops the dirty pages and marks them clean), and that call is held before it
    // returns, so that the leader's sync, released now, comes after the failure.
    let leader_held = fs.pause_nth(FaultOp::Sync, 1);
    let failure_held = fs.fail_nth_and_hold(FaultOp::Sync, 1, ErrorKind::Other);
    let leader = {
        let wal = Arc::clone(&wal);
        std::thread::spawn(move || wal.sync_through(last))
    };
    assert!(leader_held.wait_reached(Duration::from_secs(10)));
    let roller = {
        let wal = Arc::clone(&wal);
        std::thread::spawn(move || wal.append(&rec))
    };
    // (A log that serialises its syncs makes the roll wait for the leader instead.)
    failure_held.wait_reached(Duration::from_millis(300));
    leader_held.release();
    // Whichever sync failed, let it return once the other had its chance.
    let start = Instant::now();
    while !leader.is_finished() && start.elapsed() < Duration::from_millis(300) {
        std::thread::sleep(Duration::from_millis(1));
    }
    failure_held.release();
    let synced = leader.join().unwrap();
    let rolled = roller.join().unwrap();
    assert!(
        synced.is_err() || rolled.is_err(),
        "one of the two syncs failed: someone must say so"
    );
    assert!(wal.is_failed(), "a failed sync fails the log");

    let after = fs.power_cut();
    drop(wal);
    if synced.is_ok() {
        let wal = Wal::open_with(after, DIR, WalOptions::default()).unwrap();
        let mut n = 0;
        wal.read(1, usize::MAX, &mut |_, _| {
            n += 1;
            true
        })
        .unwrap();
        assert_eq!(
            n, last,
            "sync_through({last}) returned Ok, but records were lost at the power cut"
        );
    }
}
