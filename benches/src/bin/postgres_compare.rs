//! `PostgresSink` against a plain COPY of the same rows, in the same run, on the same
//! server: prints the markdown report of docs/benchmarks.md ("PostgreSQL sink") to
//! stdout, every round to stderr.
//!
//! ```text
//! ci/with-services --only postgres \
//!     cargo run --release -p vinequeue-benches --bin postgres_compare -- [--rounds R] [--rows N]
//! ```
//!
//! The server comes from `VINEQUEUE_TEST_POSTGRES_URL` (or `--url`). Each round:
//!
//! * **plain COPY**: the rows `(queue_id uuid, seq bigint, item jsonb)` in batches of
//!   1,000, each batch one transaction with one binary `COPY` straight into a table with
//!   the same primary key: the fastest way to write these rows, without deduplication;
//! * **queue + PostgresSink**: the same items enqueued into a memory queue (batches of
//!   1,000) whose sink is `PostgresSink` (COPY into the table; when a key is there
//!   already, COPY into a staging table and `INSERT ... ON CONFLICT DO NOTHING`), until
//!   the queue has delivered them all;
//! * **durable queue + PostgresSink**: the same through a durable queue
//!   (`Periodic(100 ms)`), the log in `$TMPDIR`.
//!
//! Every table is emptied (`TRUNCATE`) before its round.

use std::time::{Duration, Instant};

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{Json, Type};
use postgres::{Client, NoTls};
use serde::{Deserialize, Serialize};
use vinequeue::sinks::postgres::PostgresSink;
use vinequeue::{Config, Queue, QueueId};
use vinequeue_benches::median;
use vinequeue_benches::report::{exit_with_usage, number, print_machine_facts};

const USAGE: &str = "usage: postgres_compare [--url URL] [--rounds R] [--rows N]\n\
                     defaults: --url $VINEQUEUE_TEST_POSTGRES_URL --rounds 5 --rows 200000";
const BATCH: usize = 1_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Event {
    id: u64,
    user: u64,
    page: String,
}

fn event(id: u64) -> Event {
    Event {
        id,
        user: id % 5_000,
        page: ["/", "/pricing", "/docs", "/blog", "/signup"][(id % 5) as usize].to_owned(),
    }
}

fn create(db: &mut Client, table: &str) {
    db.batch_execute(&format!(
        "DROP TABLE IF EXISTS {table};
         CREATE TABLE {table} (queue_id uuid NOT NULL, seq bigint NOT NULL, item jsonb NOT NULL,
                               PRIMARY KEY (queue_id, seq))"
    ))
    .expect("create the table");
}

fn count(db: &mut Client, table: &str) -> i64 {
    db.query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
        .expect("count the rows")
        .get(0)
}

/// Plain COPY of `rows` rows, one transaction per batch: seconds.
fn plain_copy(db: &mut Client, rows: u64) -> f64 {
    db.batch_execute("TRUNCATE pg_bench_copy")
        .expect("truncate");
    let id = uuid::Uuid::from_bytes(QueueId::random().to_bytes());
    let types = [Type::UUID, Type::INT8, Type::JSONB];
    let started = Instant::now();
    let mut next = 0u64;
    while next < rows {
        let end = (next + BATCH as u64).min(rows);
        let mut tx = db.transaction().expect("begin");
        let sink = tx
            .copy_in("COPY pg_bench_copy (queue_id, seq, item) FROM STDIN (FORMAT binary)")
            .expect("copy");
        let mut writer = BinaryCopyInWriter::new(sink, &types);
        for n in next..end {
            let seq = n as i64 + 1;
            let item = Json(serde_json::to_value(event(n)).expect("json"));
            writer.write(&[&id, &seq, &item]).expect("write a row");
        }
        writer.finish().expect("finish the copy");
        tx.commit().expect("commit");
        next = end;
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(count(db, "pg_bench_copy"), rows as i64);
    secs
}

/// The same rows through a queue whose sink is `PostgresSink`: seconds from the first
/// enqueue until the queue has delivered them all.
fn through_queue(db: &mut Client, url: &str, table: &str, rows: u64, durable: bool) -> f64 {
    db.batch_execute(&format!("TRUNCATE {table}"))
        .expect("truncate");
    let dir = tempfile::tempdir().expect("a directory for the log");
    let mut config = Config::default()
        .memory_size(10 * BATCH)
        .batch_size(BATCH)
        .flush_timeout(Duration::from_millis(50));
    if durable {
        config = config.wal_path(dir.path());
    }
    let sink = PostgresSink::builder(url)
        .table(table)
        .build()
        .expect("the sink");
    let queue = Queue::new(config, sink).expect("the queue");
    queue.start().expect("start");
    let started = Instant::now();
    for n in 0..rows {
        queue.enqueue(event(n)).expect("enqueue");
    }
    let report = queue.flush(Duration::from_secs(600)).expect("flush");
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(report.dead_lettered, 0);
    queue.stop().expect("stop");
    assert_eq!(count(db, table), rows as i64);
    secs
}

fn main() {
    let mut url = std::env::var("VINEQUEUE_TEST_POSTGRES_URL").ok();
    let mut rounds = 5usize;
    let mut rows = 200_000u64;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| {
            exit_with_usage("postgres_compare", USAGE, &format!("{flag}: no value"))
        });
        let parsed = match flag.as_str() {
            "--url" => {
                url = Some(value);
                Ok(())
            }
            "--rounds" => number(&flag, &value).map(|n| rounds = n.max(1) as usize),
            "--rows" => number(&flag, &value).map(|n| rows = n.max(1)),
            _ => Err(format!("unknown flag {flag}")),
        };
        if let Err(problem) = parsed {
            exit_with_usage("postgres_compare", USAGE, &problem);
        }
    }
    let Some(url) = url else {
        exit_with_usage(
            "postgres_compare",
            USAGE,
            "no server: set VINEQUEUE_TEST_POSTGRES_URL (ci/with-services --only postgres does) or pass --url",
        );
    };
    let mut db = Client::connect(&url, NoTls).expect("connect to PostgreSQL");
    let version: String = db
        .query_one("SHOW server_version", &[])
        .expect("the server's version")
        .get(0);
    for table in ["pg_bench_copy", "pg_bench_sink", "pg_bench_durable"] {
        create(&mut db, table);
    }

    let (mut copy, mut sink, mut durable) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        eprintln!("round {round}/{rounds}: plain COPY");
        copy.push(rows as f64 / plain_copy(&mut db, rows));
        eprintln!("round {round}/{rounds}: queue + PostgresSink");
        sink.push(rows as f64 / through_queue(&mut db, &url, "pg_bench_sink", rows, false));
        eprintln!("round {round}/{rounds}: durable queue + PostgresSink");
        durable.push(rows as f64 / through_queue(&mut db, &url, "pg_bench_durable", rows, true));
        eprintln!(
            "  rows/s: copy {:.0}, sink {:.0}, durable {:.0}",
            copy[round - 1],
            sink[round - 1],
            durable[round - 1]
        );
    }

    print_machine_facts(&[("PostgreSQL", version)]);
    let base = median(&copy);
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        format!("{lo:.0} – {hi:.0}")
    };
    println!("\n## PostgreSQL sink\n");
    println!(
        "{rows} rows `(queue_id uuid, seq bigint, item jsonb)`, primary key `(queue_id, seq)`, \
         batches of {BATCH}, one transaction each; medians of {rounds} rounds.\n"
    );
    println!("| writer | rows/s (median) | min – max | vs plain COPY |\n|---|---|---|---|");
    for (name, v) in [
        ("plain COPY into the table (no deduplication)", &copy),
        (
            "memory queue + `PostgresSink` (COPY into the table; staging and `INSERT ... ON CONFLICT DO NOTHING` when a key is there already)",
            &sink,
        ),
        (
            "durable queue (`Periodic(100 ms)`) + `PostgresSink`",
            &durable,
        ),
    ] {
        let m = median(v);
        println!("| {name} | {m:.0} | {} | {:.2}x |", range(v), m / base);
    }
}
