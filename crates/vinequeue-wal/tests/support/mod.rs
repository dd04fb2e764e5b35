//! What the log's tests share: the options most of them run with, reading a whole log
//! back, and the number of seeds the simulations run.
#![allow(dead_code)] // each test file uses some of these

use vinequeue_storage::Storage;
use vinequeue_wal::{SyncMode, WalOptions};

/// Small segments (64 KiB: a few dozen records of a few KiB, so that tests roll to new
/// segments and reclaim old ones often) in a log with room to spare, synced as `mode`.
pub fn small_segments(mode: SyncMode) -> WalOptions {
    WalOptions::default()
        .segment_size(64 * 1024)
        .max_size(1 << 30)
        .sync_mode(mode)
}

/// Every record the log hands back from number 1 on, in order.
pub fn read_all(wal: &dyn Storage) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    wal.read(1, usize::MAX, &mut |seq, bytes| {
        out.push((seq, bytes.to_vec()));
        true
    })
    .unwrap();
    out
}

/// Seeds a simulation runs: `VQ_SIM_SEEDS` if set, else `default` (what the test
/// affords in `cargo test`; docs/reliability.md gives the long runs).
pub fn seeds(default: u64) -> u64 {
    std::env::var("VQ_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
