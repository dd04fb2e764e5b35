//! Keyed records (a redriven dead letter keeps the number it first had) and the queue's
//! identity are kept in the log: a record's key comes back with it after a crash or a
//! power cut that its sync survived, and the directory keeps one identity for good.

mod support;

use std::path::Path;

use vinequeue_storage::{Error, QueueId, RecoveryMode, Storage};
use vinequeue_wal::sim::SimFs;
use vinequeue_wal::{Fs, SyncMode, Wal};

const DIR: &str = "/queue";

fn keyed(wal: &dyn Storage) -> Vec<(u64, Option<u64>, Vec<u8>)> {
    let mut out = Vec::new();
    wal.read_keyed(1, usize::MAX, &mut |seq, key, bytes| {
        out.push((seq, key, bytes.to_vec()));
        true
    })
    .unwrap();
    out
}

#[test]
fn a_records_key_comes_back_with_it_after_a_crash_and_a_power_cut() {
    let fs = SimFs::new(1);
    let opts = || support::small_segments(SyncMode::Immediate);
    let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
    assert!(wal.keeps_keys());
    assert_eq!(wal.append(b"plain").unwrap(), 1);
    assert_eq!(wal.append_keyed(b"redriven", 42).unwrap(), 2);
    assert_eq!(
        wal.append_keyed(b"", 7).unwrap(),
        3,
        "an empty record with a key"
    );
    // Enough keyed records to roll to more segments.
    for i in 0..200u64 {
        wal.append_keyed(&[i as u8; 700], 1_000 + i).unwrap();
    }
    wal.sync().unwrap();
    let before = keyed(&wal);
    assert_eq!(before[0], (1, None, b"plain".to_vec()));
    assert_eq!(before[1], (2, Some(42), b"redriven".to_vec()));
    assert_eq!(before[2], (3, Some(7), Vec::new()));
    // `read` hands the record without its key.
    let mut plain = Vec::new();
    wal.read(2, 1, &mut |_, b| {
        plain = b.to_vec();
        false
    })
    .unwrap();
    assert_eq!(plain, b"redriven");

    let fs = fs.power_cut();
    drop(wal);
    let wal = Wal::open_with(fs.clone(), DIR, opts().recovery_mode(RecoveryMode::Strict)).unwrap();
    assert_eq!(keyed(&wal), before, "after a power cut the sync covered");
    assert_eq!(wal.recovery().corrupt_records, 0);
    drop(wal);
    let wal = Wal::open_with(fs.process_crash(), DIR, opts()).unwrap();
    assert_eq!(keyed(&wal), before, "after a crash");
}

#[test]
fn a_keyed_record_must_fit_an_empty_segment_with_its_key() {
    let wal = Wal::open_with(SimFs::new(2), DIR, support::small_segments(SyncMode::Os)).unwrap();
    let room = 64 * 1024 - 40 - 16;
    assert!(
        wal.append(&vec![1; room]).is_ok(),
        "a plain record of the room"
    );
    match wal.append_keyed(&vec![1; room], 9) {
        Err(Error::RecordTooLarge { limit, .. }) => assert_eq!(limit, room as u64 - 8),
        other => panic!("{other:?}"),
    }
    assert!(wal.append_keyed(&vec![1; room - 8], 9).is_ok());
}

#[test]
fn the_directory_keeps_one_identity_and_another_directory_has_another() {
    let fs = SimFs::new(3);
    let opts = || support::small_segments(SyncMode::Immediate);
    let first = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
    let id = first.queue_id().unwrap();
    first.append(b"x").unwrap();
    drop(first);
    let fs = fs.power_cut();
    let again = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
    assert_eq!(
        again.queue_id(),
        Some(id),
        "kept across a power cut after the open"
    );
    let other = Wal::open_with(fs.clone(), "/other", opts()).unwrap();
    assert_ne!(other.queue_id(), Some(id));
    drop(again);
    // The file: the UUID form and a newline, nothing else.
    let text = fs
        .read_small(&Path::new(DIR).join("queue-id"), 100)
        .unwrap();
    assert_eq!(String::from_utf8(text).unwrap(), format!("{id}\n"));
}

#[test]
fn a_damaged_identity_is_refused_under_strict_and_replaced_otherwise() {
    let fs = SimFs::new(4);
    let opts = || support::small_segments(SyncMode::Immediate);
    let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
    let id = wal.queue_id().unwrap();
    drop(wal);
    let fs = fs.process_crash();
    fs.put_file(&Path::new(DIR).join("queue-id"), b"not an id at all\n");
    match Wal::open_with(fs.clone(), DIR, opts().recovery_mode(RecoveryMode::Strict)) {
        Err(Error::Corrupt { file, .. }) => assert!(file.ends_with("queue-id")),
        other => panic!("{other:?}"),
    }
    let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
    let new: QueueId = wal.queue_id().unwrap();
    assert_ne!(new, id);
    drop(wal);
    let wal = Wal::open_with(fs, DIR, opts()).unwrap();
    assert_eq!(wal.queue_id(), Some(new), "the replacement is kept");
}
