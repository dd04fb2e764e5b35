//! Source positions (`append_positioned`: where in its source the producer was) are kept
//! with their records: after a crash or a power cut, `recovery().source_position` is
//! the position of the last positioned record that survived, also once its segment was
//! acknowledged and deleted. A position is durable exactly when its record is.

mod support;

use std::path::Path;

use vinequeue_storage::{Error, RecoveryMode, Storage};
use vinequeue_wal::sim::SimFs;
use vinequeue_wal::{Fs, Reclaim, SyncMode, Wal, WalOptions};

const DIR: &str = "/queue";

fn position(wal: &Wal<SimFs>) -> Option<Vec<u8>> {
    wal.recovery().source_position
}

#[test]
fn a_position_comes_back_with_its_record_and_is_lost_only_with_it() {
    let fs = SimFs::new(7);
    let opts = || support::small_segments(SyncMode::Periodic(std::time::Duration::from_secs(3600)));
    let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
    assert!(wal.keeps_positions());
    assert_eq!(position(&wal), None, "a new log has none");
    wal.append(b"plain").unwrap();
    wal.append_positioned(b"first", b"offset 10").unwrap();
    wal.append_positioned(b"second", b"offset 20").unwrap();
    wal.append(b"after").unwrap();
    wal.sync().unwrap();
    // Unsynced: lost with its record at the power cut.
    wal.append_positioned(b"third", b"offset 30").unwrap();

    let fs = fs.power_cut();
    drop(wal);
    let wal = Wal::open_with(fs.clone(), DIR, opts().recovery_mode(RecoveryMode::Strict)).unwrap();
    assert_eq!(position(&wal).as_deref(), Some(&b"offset 20"[..]));
    let records: Vec<Vec<u8>> = support::read_all(&wal).into_iter().map(|r| r.1).collect();
    assert_eq!(
        records,
        [&b"plain"[..], b"first", b"second", b"after"],
        "records are read without their positions"
    );

    // A crash (the page cache survives) keeps the unsynced one.
    wal.append_positioned(b"fourth", b"offset 40").unwrap();
    drop(wal);
    let wal = Wal::open_with(fs, DIR, opts()).unwrap();
    assert_eq!(position(&wal).as_deref(), Some(&b"offset 40"[..]));
}

#[test]
fn a_position_outlives_its_records_once_they_are_acknowledged_and_deleted() {
    let fs = SimFs::new(8);
    let opts = || support::small_segments(SyncMode::Immediate).reclaim(Reclaim::Inline);
    let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
    // Enough records to fill several segments, each with its position; then records
    // without one, more than a segment holds, that stay unacknowledged.
    let mut last = 0;
    for i in 0..300u32 {
        last = wal
            .append_positioned(&[i as u8; 700], &i.to_le_bytes())
            .unwrap();
    }
    for _ in 0..150 {
        wal.append(&[0; 700]).unwrap();
    }
    wal.sync().unwrap();
    // Up to 100 of the others too, so that the segment of the last positioned record
    // (90 records to a segment) is all acknowledged.
    for seq in 1..=last + 100 {
        wal.ack(seq).unwrap();
    }
    wal.sync().unwrap();
    let segments = || {
        fs.list(Path::new(DIR))
            .unwrap()
            .iter()
            .filter(|e| e.name.ends_with(".seg"))
            .count()
    };
    assert!(
        segments() <= 3,
        "the segments of positioned records were deleted: {} left",
        segments()
    );
    drop(wal);

    let fs = fs.power_cut();
    let wal = Wal::open_with(fs.clone(), DIR, opts().recovery_mode(RecoveryMode::Strict)).unwrap();
    assert_eq!(position(&wal), Some(299u32.to_le_bytes().to_vec()));
    assert_eq!(wal.recovery().records, 50);
    // A record after the reopen brings a newer position; it wins over the kept one.
    wal.append_positioned(b"new", b"later").unwrap();
    wal.sync().unwrap();
    drop(wal);
    let wal = Wal::open_with(fs, DIR, opts()).unwrap();
    assert_eq!(position(&wal).as_deref(), Some(&b"later"[..]));
}

/// A log whose records were all acknowledged and deleted, its position in the file: the
/// reclaim deletes the full segments, the next open the last one (all acknowledged).
fn log_with_only_the_position_file(fs: &SimFs) {
    let opts = || support::small_segments(SyncMode::Immediate).reclaim(Reclaim::Inline);
    let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
    for i in 0..200u32 {
        let seq = wal.append_positioned(&[0; 700], &i.to_le_bytes()).unwrap();
        wal.ack(seq).unwrap();
    }
    wal.sync().unwrap();
    drop(wal);
    let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
    assert_eq!(position(&wal), Some(199u32.to_le_bytes().to_vec()));
    drop(wal);
    let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
    assert_eq!(
        position(&wal),
        Some(199u32.to_le_bytes().to_vec()),
        "from the file alone"
    );
}

#[test]
fn a_damaged_position_file_is_refused_by_strict_and_ignored_otherwise() {
    let fs = SimFs::new(9);
    log_with_only_the_position_file(&fs);
    let file = Path::new(DIR).join("source-position");
    let mut bytes = fs.read_small(&file, 4096).unwrap();
    bytes[9] ^= 0x40;
    fs.write_small(&file, &bytes).unwrap();
    let opts = || support::small_segments(SyncMode::Immediate);
    match Wal::open_with(fs.clone(), DIR, opts().recovery_mode(RecoveryMode::Strict)) {
        Err(Error::Corrupt { file: f, .. }) => assert_eq!(f, file),
        other => panic!("expected Error::Corrupt, got {other:?}"),
    }
    let wal = Wal::open_with(fs, DIR, opts()).unwrap();
    assert_eq!(position(&wal), None);
}

#[test]
fn a_position_longer_than_255_bytes_is_refused_and_nothing_is_written() {
    let fs = SimFs::new(10);
    let wal = Wal::open_with(fs, DIR, WalOptions::default()).unwrap();
    wal.append_positioned(b"ok", &[1; 255]).unwrap();
    match wal.append_positioned(b"too long", &[1; 256]) {
        Err(Error::Config(why)) => assert!(why.contains("256"), "{why}"),
        other => panic!("expected Error::Config, got {other:?}"),
    }
    assert_eq!(wal.next_seq(), 2);
    assert_eq!(support::read_all(&wal).len(), 1);
}
