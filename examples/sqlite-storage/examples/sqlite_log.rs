//! Appends a few thousand records to a SQLite-backed log, acknowledges some (out of
//! order too), syncs, closes and reopens it, and prints what recovery found.
//!
//! `cargo run -p vinequeue-sqlite-storage --example sqlite_log [-- path/to/queue.db]`
//! (default: a file in a temporary directory, removed afterwards).

use vinequeue_core::Storage;
use vinequeue_sqlite_storage::SqliteStorage;

fn main() -> Result<(), vinequeue_core::Error> {
    let tmp = tempfile::tempdir()?;
    let path = match std::env::args_os().nth(1) {
        Some(p) => p.into(),
        None => tmp.path().join("queue.db"),
    };

    let log = SqliteStorage::open(&path)?;
    let first = log.next_seq();
    for i in 0..5000u32 {
        log.append(format!("event {i}").as_bytes())?;
    }
    let last = log.next_seq() - 1;
    // Deliver the first 3000 in order, plus every tenth one after that.
    let delivered: Vec<u64> = (first..first + 3000)
        .chain((first + 3000..=last).step_by(10))
        .collect();
    log.ack_all(&delivered)?;
    log.sync()?;
    println!(
        "{}: appended {first}..={last}, acknowledged {} (through {}), {} bytes on disk",
        path.display(),
        delivered.len(),
        log.acked_through(),
        log.size()
    );
    drop(log);

    let log = SqliteStorage::open(&path)?;
    println!("reopened: {:#?}", log.recovery());
    let mut head = Vec::new();
    log.read(log.acked_through() + 1, 3, &mut |seq, bytes| {
        head.push(format!("{seq}: {}", String::from_utf8_lossy(bytes)));
        true
    })?;
    println!("next to replay: {}", head.join(", "));
    Ok(())
}
