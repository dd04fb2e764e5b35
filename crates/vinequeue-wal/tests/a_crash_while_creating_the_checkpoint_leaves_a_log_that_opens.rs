//! The checkpoint file is created once, when a log is first opened (or at the first
//! acknowledgement if that failed), and overwritten in place after that. A crash part-way
//! through its creation must not leave an empty or short checkpoint behind: `Strict`
//! would then refuse to open a log that holds nothing damaged.

mod support;

use std::io::ErrorKind;
use std::path::Path;

use vinequeue_storage::{RecoveryMode, Storage};
use vinequeue_wal::sim::{FaultOp, SimFs};
use vinequeue_wal::{SyncMode, Wal, WalOptions};

const DIR: &str = "/wal";

fn opts() -> WalOptions {
    support::small_segments(SyncMode::Immediate).recovery_mode(RecoveryMode::Strict)
}

#[test]
fn a_checkpoint_creation_cut_short_leaves_no_checkpoint_behind() {
    let fs = SimFs::new(5);
    // The first open's checkpoint write is cut short (best effort: the open goes on).
    // (The first small write of a new log is its queue id; the checkpoint's comes next.)
    fs.fail_nth(FaultOp::WriteSmall, 2, ErrorKind::Other);
    let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
    // Enough records to roll to a second segment: the roll syncs the directory, so
    // whatever entry the cut-short write left is now durable.
    let mut last = 0;
    while wal.segment_count() < 2 {
        last = wal.append(&[3; 1000]).unwrap();
    }
    wal.sync_through(last).unwrap();

    let fs = fs.power_cut();
    drop(wal);
    let wal = Wal::open_with(fs.fork(), DIR, opts())
        .unwrap_or_else(|e| panic!("strict recovery refused an undamaged log: {e}"));
    assert_eq!(wal.recovery().records, last);
    // Numbering goes on above the block reserved before the cut (the first append
    // reserved it), never from the last record found.
    assert_eq!(wal.next_seq(), 1 + (1 << 20));
    drop(wal);
    // What the cut-short creation left is gone or whole.
    if let Some((_, bytes)) = fs
        .files()
        .into_iter()
        .find(|(p, _)| p == &Path::new(DIR).join("checkpoint"))
    {
        assert_eq!(
            bytes.len(),
            vinequeue_wal::format::CHECKPOINT_LEN,
            "a short checkpoint was left behind"
        );
    }
}
