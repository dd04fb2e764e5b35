//! `cargo bench -p vinequeue-benches`: end-to-end throughput of VineQueue (memory mode),
//! crossbeam-channel and flume with 1, 2 and 4 producer threads and one consumer.
//!
//! The workloads live in the crate's library (`vinequeue_benches::Contender`), shared with
//! the `compare` binary that produces `docs/benchmarks.md`. Each iteration moves
//! [`ITEMS`] items and is timed from the first hand-over until the consumer has all of
//! them (setup and teardown are not timed), so criterion reports items per second.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vinequeue_benches::Contender;

/// Items moved per iteration (a multiple of `BATCH_SIZE`).
const ITEMS: u64 = 200_000;

fn end_to_end(c: &mut Criterion) {
    let mut group = c.benchmark_group("end_to_end");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(ITEMS));
    for producers in [1usize, 2, 4] {
        for contender in Contender::ALL {
            group.bench_with_input(
                BenchmarkId::new(contender.name(), producers),
                &producers,
                |b, &producers| {
                    b.iter_custom(|iters| {
                        (0..iters)
                            .map(|_| contender.throughput(ITEMS, producers))
                            .sum()
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, end_to_end);
criterion_main!(benches);
