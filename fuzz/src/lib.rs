//! Fuzz targets for `vinequeue-wal` (see README.md). The checks live in `harness/`, which
//! `crates/vinequeue-wal/tests/fuzz_corpus_replays_cleanly.rs` includes as well.

pub mod harness;
