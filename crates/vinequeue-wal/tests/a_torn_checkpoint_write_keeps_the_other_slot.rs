//! A checkpoint write torn by a power cut (some leading sectors of the slot written, the
//! next one garbage) damages only the slot being written: the log opens under `Strict`
//! from the other slot, with its mark, and nothing appended is lost.

mod support;

use std::io::ErrorKind;

use vinequeue_storage::{RecoveryMode, Storage};
use vinequeue_wal::sim::{FaultOp, SimFs};
use vinequeue_wal::{Reclaim, SyncMode, Wal, WalOptions};

const DIR: &str = "/wal";

fn opts() -> WalOptions {
    support::small_segments(SyncMode::Immediate)
        .reclaim(Reclaim::Inline)
        .recovery_mode(RecoveryMode::Strict)
}

#[test]
fn a_torn_checkpoint_write_keeps_the_other_slot() {
    let mut torn = 0;
    for seed in 1..=30 {
        let fs = SimFs::new(seed);
        let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
        for i in 1..=10u64 {
            wal.append(&i.to_le_bytes()).unwrap();
        }
        wal.ack_all(&[1, 2, 3]).unwrap();
        wal.sync().unwrap(); // a checkpoint with the mark at 3
        fs.fail_nth(FaultOp::TornWrite, 1, ErrorKind::Other);
        wal.ack_all(&[4, 5, 6]).unwrap();
        assert!(
            wal.sync().is_err(),
            "seed {seed}: the torn checkpoint write was reported as done"
        );
        let fs = fs.power_cut();
        drop(wal);
        let wal = Wal::open_with(fs, DIR, opts())
            .unwrap_or_else(|e| panic!("seed {seed}: Strict refused a torn checkpoint: {e}"));
        // The older slot's mark; or the new one's, where the cut happened to let the
        // whole slot through.
        let mark = wal.acked_through();
        match mark {
            3 => torn += 1,
            6 => {}
            other => panic!("seed {seed}: mark {other}"),
        }
        let mut seqs = Vec::new();
        wal.read(mark + 1, usize::MAX, &mut |seq, bytes| {
            assert_eq!(bytes, seq.to_le_bytes(), "seed {seed}");
            seqs.push(seq);
            true
        })
        .unwrap();
        assert_eq!(seqs, (mark + 1..=10).collect::<Vec<_>>(), "seed {seed}");
    }
    assert!(torn >= 10, "only {torn} of 30 cuts tore the slot");
}
