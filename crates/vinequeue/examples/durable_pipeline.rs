//! A durable pipeline that survives being killed.
//!
//! It moves one million "order" events into a warehouse file through a queue with a
//! write-ahead log. Kill it at any moment (Ctrl-C, `kill -9`) and run it again: it
//! replays what the log holds, resumes producing where it had got to, and finishes the
//! job with every order in the warehouse exactly once (the warehouse deduplicates on the
//! order id, as a real sink would on the sequence number or a business key).
//!
//! ```sh
//! cargo run --release --example durable_pipeline            # kill it midway, then
//! cargo run --release --example durable_pipeline            # run it again
//! cargo run --release --example durable_pipeline -- --reset # start over
//! ```

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vinequeue::{Batch, Config, Queue, SendError, Sink, SyncMode};

const ORDERS: u64 = 1_000_000;

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: u64,
    customer: u32,
    cents: u64,
}

fn order(id: u64) -> Order {
    Order {
        id,
        customer: (id % 9973) as u32,
        cents: id * 37 % 100_000,
    }
}

/// Appends orders to a file and fsyncs, like a bulk insert into a warehouse table;
/// skips ids it already holds.
struct Warehouse {
    file: File,
    have: HashSet<u64>,
}

impl Sink<Order> for Warehouse {
    fn send(&mut self, batch: &Batch<Order>) -> Result<(), SendError> {
        let mut rows = String::new();
        for o in batch.iter().filter(|o| !self.have.contains(&o.id)) {
            rows.push_str(&format!("{} {} {}\n", o.id, o.customer, o.cents));
        }
        self.file.write_all(rows.as_bytes())?;
        self.file.sync_data()?;
        self.have.extend(batch.iter().map(|o| o.id));
        std::thread::sleep(Duration::from_millis(4)); // a remote round trip
        Ok(())
    }
}

fn read_ids(path: &Path) -> HashSet<u64> {
    let Ok(f) = File::open(path) else {
        return HashSet::new();
    };
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root: PathBuf = std::env::temp_dir().join("vinequeue-durable-pipeline");
    if std::env::args().any(|a| a == "--reset") {
        let _ = std::fs::remove_dir_all(&root);
    }
    std::fs::create_dir_all(&root)?;
    let warehouse_path = root.join("warehouse.txt");
    let progress_path = root.join("produced-up-to");

    let have = read_ids(&warehouse_path);
    let resume_from: u64 = std::fs::read_to_string(&progress_path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    println!(
        "warehouse holds {} orders; producing from order {resume_from}",
        have.len()
    );

    let warehouse = Warehouse {
        file: OpenOptions::new()
            .create(true)
            .append(true)
            .open(&warehouse_path)?,
        have,
    };
    let config = Config::default()
        .wal_path(root.join("wal"))
        .sync_mode(SyncMode::Periodic(Duration::from_millis(50)))
        .memory_size(20_000)
        .batch_size(1_000)
        .flush_timeout(Duration::from_millis(50));
    let queue = Arc::new(Queue::new(config, warehouse)?);
    let found = queue.recovery();
    println!(
        "log recovered {} undelivered orders ({} bytes){}",
        found.records,
        found.bytes,
        if found.torn_bytes > 0 {
            ", cut a torn tail"
        } else {
            ""
        }
    );
    queue.start()?;

    let started = Instant::now();
    let mut id = resume_from;
    while id < ORDERS {
        let end = (id + 10_000).min(ORDERS);
        for i in id..end {
            queue.enqueue(order(i))?;
        }
        // One group commit for the chunk, then remember how far we got: a restart
        // re-enqueues at most one chunk, and the warehouse skips the duplicates.
        queue.sync()?;
        std::fs::write(&progress_path, end.to_string())?;
        id = end;
        if id.is_multiple_of(100_000) {
            let m = queue.metrics();
            println!(
                "produced {id:>9}  delivered {:>9}  pending {:>7}  spilled {:>7}  log {:>5} KiB",
                m.sent_total,
                m.pending,
                m.spilled_total,
                m.wal_size / 1024
            );
        }
    }
    queue.flush(Duration::from_secs(120))?;
    queue.stop()?;
    let m = queue.metrics();
    println!(
        "done in {:.1?}: {} orders delivered this run, p99 send {:.1?}",
        started.elapsed(),
        m.sent_total,
        m.send_latency_p99
    );
    let ids = read_ids(&warehouse_path);
    let missing = (0..ORDERS).filter(|i| !ids.contains(i)).count();
    println!(
        "warehouse: {} distinct orders, {missing} missing",
        ids.len()
    );
    if missing > 0 {
        return Err(format!("{missing} orders missing").into());
    }
    Ok(())
}
