//! The kernel reports a failed write-back once: to whichever sync of the file comes
//! first, after which the lost pages look clean and the next sync succeeds. When a segment
//! fills up, the append that rolls it syncs it while a group-commit leader may be syncing
//! the same range. Whatever the interleaving, a sync that returns `Ok` must mean that its
//! records are durable. And a write-back the log starts ahead of a sync (the chunk just
//! filled under `Periodic`, the chunk ahead under `Immediate`) that fails as it starts
//! may drop its pages with no error left for the sync: the log must fail all the same.

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vinequeue_storage::Storage;
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

/// A 1000-byte record; 1100 of them run past the first MiB of a segment, so that the
/// writer enters its second chunk (which asks the prefetch thread for a write-back).
const PAST_THE_FIRST_CHUNK: u64 = 1100;

fn log_of_4mib_segments(fs: &SimFs, mode: SyncMode) -> Wal<SimFs> {
    Wal::open_with(
        fs.clone(),
        DIR,
        WalOptions::default()
            .segment_size(4 << 20)
            .max_size(1 << 30)
            .sync_mode(mode),
    )
    .unwrap()
}

#[test]
fn a_write_back_of_a_filled_chunk_that_fails_as_it_starts_fails_the_next_sync() {
    // Under `Periodic` the prefetch thread starts the write-back of each chunk the
    // writer has filled. Here it fails as it starts and drops the chunk's dirty pages
    // (ext4 does, when it cannot map the blocks) without leaving the error for the
    // next sync, which then finds nothing to write in that range.
    let fs = SimFs::new(22);
    let wal = log_of_4mib_segments(&fs, SyncMode::Periodic(Duration::from_secs(3600)));
    let failure = fs.fail_nth_and_hold(FaultOp::WriteBack, 1, ErrorKind::Other);
    let rec = [7u8; 1000];
    for _ in 0..PAST_THE_FIRST_CHUNK {
        wal.append(&rec).unwrap();
    }
    assert!(
        failure.wait_reached(Duration::from_secs(10)),
        "the filled chunk's write-back was started"
    );
    failure.release();
    match wal.sync() {
        Err(vinequeue_storage::Error::LogFailed(why)) => {
            assert!(why.contains("write-back"), "{why}")
        }
        other => panic!("a sync over records whose pages were dropped returned {other:?}"),
    }
    assert!(wal.is_failed());
}

#[test]
fn a_write_ahead_that_fails_as_it_starts_fails_the_next_sync() {
    // Under `Immediate` the prefetch thread writes the next chunk ahead of the writer.
    // Here that call is held as it starts while the writer appends records into the
    // chunk, then fails and drops the chunk's dirty pages, the new records' included.
    let fs = SimFs::new(23);
    let wal = log_of_4mib_segments(&fs, SyncMode::Immediate);
    let held = fs.pause_nth(FaultOp::WriteBack, 1);
    fs.fail_nth(FaultOp::WriteBack, 1, ErrorKind::Other);
    let rec = [9u8; 1000];
    // Synced one by one; past the first MiB the write-ahead of the third starts and is
    // held: syncs of the second MiB must not wait for it.
    for _ in 0..PAST_THE_FIRST_CHUNK {
        let seq = wal.append(&rec).unwrap();
        wal.sync_through(seq).unwrap();
    }
    assert!(
        held.wait_reached(Duration::from_secs(10)),
        "the third MiB is being written ahead"
    );
    // Into the third MiB, without a sync.
    let mut last = 0;
    for _ in 0..PAST_THE_FIRST_CHUNK {
        last = wal.append(&rec).unwrap();
    }
    held.release();
    // The failed call returns its error (held or not: the sync waits for a call still
    // running over its range).
    match wal.sync_through(last) {
        Err(vinequeue_storage::Error::LogFailed(why)) => {
            assert!(why.contains("write-back"), "{why}")
        }
        other => panic!("a sync over records whose pages were dropped returned {other:?}"),
    }
    assert!(matches!(
        wal.append(&rec),
        Err(vinequeue_storage::Error::LogFailed(_))
    ));
}
