//! `cargo bench -p vinequeue-benches --bench recovery`: `Wal::open` of a 64 MiB segment,
//! clean, ending in a torn frame, and with every other frame damaged. Recovery's work
//! over damage is meant to stay linear in the segment's size: the damaged cases within a
//! few times the clean one (compare the three medians of one run).
//!
//! The workload lives in the crate's library (`vinequeue_benches::damage`): each
//! iteration opens a fresh copy of the damaged directory (the copy is not timed).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use vinequeue_benches::damage::{self, DamagedLog};

fn reopen_after_damage(c: &mut Criterion) {
    let mut group = c.benchmark_group("reopen_after_damage");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    let dir = std::env::temp_dir();
    // Run as a test (`cargo test --benches`, no `--bench`): a small log, once.
    let records = if std::env::args().any(|a| a == "--bench") {
        damage::RECORDS
    } else {
        5_000
    };
    for kind in damage::Damage::ALL {
        let log = DamagedLog::new(&dir, kind, records);
        group.bench_function(kind.name(), |b| {
            b.iter_batched(
                || log.copy(),
                |path| {
                    let (took, report) = damage::reopen(&path);
                    log.check(&report);
                    took
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, reopen_after_damage);
criterion_main!(benches);
