//! The main job: four "request handler" threads emit a million click events into a
//! durable queue, whose sink writes them into a database, each exactly once: every row
//! carries its item's key `(queue id, seq)`, and a row whose key is already there is
//! skipped, so that a batch delivered again after a crash adds nothing.
//!
//! By default the database is an SQLite file in a fresh temporary directory beside the
//! queue's log: nothing to set up. With `--postgres URL` (or `VINEQUEUE_POSTGRES_URL`
//! set) the rows go into PostgreSQL instead, table `vinequeue_quickstart`.
//!
//! At the end it prints the queue's metrics and the rows in the database, checked
//! against what was enqueued: every event once, none missing, none twice.
//!
//! Run with `cargo run --release --example quickstart`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vinequeue::sinks::postgres::PostgresSink;
use vinequeue::sinks::sqlite::SqliteSink;
use vinequeue::{Config, Queue, Sink};

const HANDLERS: u64 = 4;
const EVENTS_EACH: u64 = 250_000;
const PAGES: [&str; 5] = ["/", "/pricing", "/docs", "/blog", "/signup"];

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClickEvent {
    event_id: u64,
    user_id: u64,
    page: String,
    at_ms: u64,
}

/// What the database holds for this queue.
struct Rows {
    total: u64,
    distinct_events: u64,
    by_page: BTreeMap<String, u64>,
    sample: Vec<(i64, String)>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let postgres = std::env::args()
        .skip_while(|a| a != "--postgres")
        .nth(1)
        .or_else(|| std::env::var("VINEQUEUE_POSTGRES_URL").ok());
    let dir = tempfile::tempdir()?;
    let config = Config::default()
        .wal_path(dir.path().join("log"))
        .memory_size(20_000)
        .batch_size(2_000)
        .flush_timeout(Duration::from_millis(100))
        .retry_backoff(Duration::from_millis(5), Duration::from_millis(500));
    match postgres {
        Some(url) => {
            println!("delivering into PostgreSQL, table vinequeue_quickstart");
            let sink = PostgresSink::builder(url.as_str())
                .table("vinequeue_quickstart")
                .build()?;
            run(config, sink, |queue_id| postgres_rows(&url, queue_id))
        }
        None => {
            let file = dir.path().join("clicks.db");
            println!("delivering into SQLite, {}", file.display());
            let sink = SqliteSink::builder(&file).table("clicks").build()?;
            run(config, sink, |_| sqlite_rows(&file))
        }
    }
}

fn run<S: Sink<ClickEvent> + 'static>(
    config: Config,
    sink: S,
    rows: impl FnOnce(&str) -> Result<Rows, Box<dyn std::error::Error>>,
) -> Result<(), Box<dyn std::error::Error>> {
    let queue = Arc::new(Queue::new(config, sink)?);
    queue.start()?;

    let started = Instant::now();
    let handlers: Vec<_> = (0..HANDLERS)
        .map(|worker| {
            let queue = Arc::clone(&queue);
            std::thread::spawn(move || -> Result<[u64; 5], vinequeue::Error> {
                let mut per_page = [0u64; 5];
                for i in 0..EVENTS_EACH {
                    let page = (i * 7 + worker) as usize % PAGES.len();
                    queue.enqueue(ClickEvent {
                        event_id: worker * EVENTS_EACH + i,
                        user_id: worker * 1_000_000 + i % 5_000,
                        page: PAGES[page].to_owned(),
                        at_ms: started.elapsed().as_millis() as u64,
                    })?;
                    per_page[page] += 1;
                }
                Ok(per_page)
            })
        })
        .collect();
    let mut enqueued_by_page = BTreeMap::new();
    for h in handlers {
        let counts = h.join().expect("handler thread panicked")?;
        for (page, n) in PAGES.iter().zip(counts) {
            *enqueued_by_page.entry(page.to_string()).or_insert(0) += n;
        }
    }
    let enqueued_in = started.elapsed();
    queue.flush(Duration::from_secs(60))?;
    let delivered_in = started.elapsed();
    queue.stop()?;

    let m = queue.metrics();
    println!("events enqueued      {:>10}", m.enqueued_total);
    println!("events delivered     {:>10}", m.sent_total);
    println!("dead-lettered        {:>10}", m.dead_lettered_total);
    println!("batches sent         {:>10}", m.batches_sent_total);
    println!("failed attempts      {:>10}", m.errors_total);
    println!("send latency p50     {:>10.1?}", m.send_latency_p50);
    println!("send latency p99     {:>10.1?}", m.send_latency_p99);
    println!(
        "enqueue rate         {:>10.0} events/s ({} events in {:.1?}; all in the database after {:.1?})",
        m.enqueued_total as f64 / enqueued_in.as_secs_f64(),
        m.enqueued_total,
        enqueued_in,
        delivered_in
    );

    let rows = rows(&queue.id().to_string())?;
    println!();
    println!("rows in the database {:>10}", rows.total);
    println!("distinct events      {:>10}", rows.distinct_events);
    println!("{:<12} {:>10} {:>10}", "page", "enqueued", "rows");
    for (page, &enqueued) in &enqueued_by_page {
        let stored = rows.by_page.get(page).copied().unwrap_or(0);
        println!("{page:<12} {enqueued:>10} {stored:>10}");
    }
    println!("first rows (seq, item):");
    for (seq, item) in &rows.sample {
        println!("  {seq:>3}  {item}");
    }

    let total = HANDLERS * EVENTS_EACH;
    if rows.total != total || rows.distinct_events != total || rows.by_page != enqueued_by_page {
        return Err(format!(
            "the database does not hold every event exactly once: {} rows, {} distinct, {total} enqueued",
            rows.total, rows.distinct_events
        )
        .into());
    }
    println!("every event enqueued is in the database exactly once");
    Ok(())
}

fn sqlite_rows(file: &std::path::Path) -> Result<Rows, Box<dyn std::error::Error>> {
    let db = rusqlite::Connection::open(file)?;
    let (total, distinct_events) = db.query_row(
        "SELECT COUNT(*), COUNT(DISTINCT json_extract(item, '$.event_id')) FROM clicks",
        [],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
    )?;
    let mut by_page = BTreeMap::new();
    let mut q =
        db.prepare("SELECT json_extract(item, '$.page'), COUNT(*) FROM clicks GROUP BY 1")?;
    for row in q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (page, n) = row?;
        by_page.insert(page, n as u64);
    }
    let mut q = db.prepare("SELECT seq, item FROM clicks ORDER BY seq LIMIT 3")?;
    let sample = q
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(Rows {
        total,
        distinct_events,
        by_page,
        sample,
    })
}

fn postgres_rows(url: &str, queue_id: &str) -> Result<Rows, Box<dyn std::error::Error>> {
    let mut db = postgres::Client::connect(url, postgres::NoTls)?;
    let row = db.query_one(
        "SELECT COUNT(*), COUNT(DISTINCT item->>'event_id') FROM vinequeue_quickstart \
         WHERE queue_id = $1::text::uuid",
        &[&queue_id],
    )?;
    let (total, distinct_events) = (row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64);
    let mut by_page = BTreeMap::new();
    for row in db.query(
        "SELECT item->>'page', COUNT(*) FROM vinequeue_quickstart \
         WHERE queue_id = $1::text::uuid GROUP BY 1",
        &[&queue_id],
    )? {
        by_page.insert(row.get::<_, String>(0), row.get::<_, i64>(1) as u64);
    }
    let sample = db
        .query(
            "SELECT seq, item::text FROM vinequeue_quickstart WHERE queue_id = $1::text::uuid \
             ORDER BY seq LIMIT 3",
            &[&queue_id],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Ok(Rows {
        total,
        distinct_events,
        by_page,
        sample,
    })
}
