//! A directory written with the version 1 checkpoint (two adjacent 64-byte slots) opens
//! with its mark and its reserved numbers, and the file is replaced by a version 2 one
//! (slots in separate 4 KiB blocks) at that open.

mod support;

use std::path::Path;

use vinequeue_storage::{RecoveryMode, Storage};
use vinequeue_wal::format::{Checkpoint, CHECKPOINT_LEN, CHECKPOINT_V1_LEN};
use vinequeue_wal::sim::SimFs;
use vinequeue_wal::{SyncMode, Wal, WalOptions};

const DIR: &str = "/wal";

fn opts() -> WalOptions {
    support::small_segments(SyncMode::Immediate).recovery_mode(RecoveryMode::Strict)
}

fn checkpoint_bytes(fs: &SimFs) -> Vec<u8> {
    fs.files()
        .into_iter()
        .find(|(p, _)| p == &Path::new(DIR).join("checkpoint"))
        .expect("a checkpoint")
        .1
}

#[test]
fn a_version_1_checkpoint_is_read_and_replaced() {
    let fs = SimFs::new(7);
    let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
    for i in 1..=10u64 {
        wal.append(&i.to_le_bytes()).unwrap();
    }
    wal.sync().unwrap();
    drop(wal);
    let fs = fs.process_crash();
    // The directory as version 1 left it: records 1..=10, 1..=4 acknowledged, numbers
    // up to 99 reserved; record 5 at the offset the records' sizes give.
    let file = Checkpoint {
        generation: 6,
        acked_through: 4,
        next_seq: 100,
        segment: 1,
        offset: 40 + 4 * (16 + 8),
        synced_through: 0,
        acked_above: Vec::new(),
    }
    .encode_file_v1();
    assert_eq!(file.len(), CHECKPOINT_V1_LEN);
    fs.put_file(&Path::new(DIR).join("checkpoint"), &file);

    let wal = Wal::open_with(fs.clone(), DIR, opts()).expect("a version 1 checkpoint opens");
    assert_eq!(wal.acked_through(), 4);
    assert_eq!(wal.next_seq(), 100, "the reservation it holds is kept");
    let mut seqs = Vec::new();
    wal.read(5, 100, &mut |seq, _| {
        seqs.push(seq);
        true
    })
    .unwrap();
    assert_eq!(seqs, (5..=10).collect::<Vec<_>>());
    let bytes = checkpoint_bytes(&fs);
    assert_eq!(bytes.len(), CHECKPOINT_LEN, "replaced by a version 2 file");
    let c = Checkpoint::decode_file(&bytes).unwrap();
    assert_eq!((c.acked_through, c.next_seq), (4, 100));
    assert!(c.generation > 6);
    drop(wal);
    // And the next open reads the new file.
    let wal = Wal::open_with(fs.process_crash(), DIR, opts()).unwrap();
    assert_eq!(wal.acked_through(), 4);
}
