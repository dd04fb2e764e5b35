//! A directory image built from the input (from scratch, or a genuine log with mutations),
//! opened with `Wal::open_with` over a `SimFs` in both recovery modes: errors are fine,
//! panics are not; an opened log reads in order, appends, syncs and reopens.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vinequeue_fuzz::harness::check_recovery;

fuzz_target!(|data: &[u8]| check_recovery(data));
