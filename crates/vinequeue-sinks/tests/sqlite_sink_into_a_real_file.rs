//! `SqliteSink` into a real database file: rows land once per key, in the default table
//! or the user's columns; a row breaking a constraint is dead-lettered alone; a database
//! locked by another connection makes the batch wait; and SIGKILLed producers leave
//! every acknowledged item in the table exactly once.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{assert_exactly_once, body, cycles, events, kill_and_restart, Event, Watched};
use rusqlite::types::Value;
use rusqlite::Connection;
use vinequeue_core::{Config, Queue};
use vinequeue_sinks::sqlite::SqliteSink;

/// The events in a default-columns table, as many times as each is stored.
fn stored(file: &Path, table: &str) -> Vec<Event> {
    let db = Connection::open(file).unwrap();
    let mut q = db.prepare(&format!("SELECT item FROM {table}")).unwrap();
    q.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|json| serde_json::from_str(&json.unwrap()).unwrap())
        .collect()
}

fn config() -> Config {
    Config::default()
        .batch_size(100)
        .flush_timeout(Duration::from_millis(5))
        .retry_backoff(Duration::from_millis(5), Duration::from_millis(50))
}

#[test]
fn items_written_twice_land_once_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("db.sqlite");
    let mut sink = Watched::new(SqliteSink::builder(&file).build().unwrap());
    sink.twice = true;
    let queue = Queue::new(config(), sink).unwrap();
    for e in events(0..1_000) {
        queue.enqueue(e).unwrap();
    }
    queue.start().unwrap();
    assert_eq!(
        queue.flush(Duration::from_secs(30)).unwrap().delivered,
        1_000
    );
    let db = Connection::open(&file).unwrap();
    let (id, low, high): (String, i64, i64) = db
        .query_row(
            "SELECT MIN(queue_id), MIN(seq), MAX(seq) FROM vinequeue_items",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((id, low, high), (queue.id().to_string(), 1, 1_000));
    assert_exactly_once(
        "SQLite",
        &(0..1_000).collect(),
        &stored(&file, "vinequeue_items"),
    );
}

#[test]
fn items_go_into_the_users_own_columns_and_a_row_breaking_a_constraint_is_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("db.sqlite");
    Connection::open(&file)
        .unwrap()
        .execute_batch(
            "CREATE TABLE own (source TEXT, n INTEGER, event_id INTEGER NOT NULL, \
             text TEXT CHECK (text <> 'refused'), PRIMARY KEY (source, n))",
        )
        .unwrap();
    let sink = Watched::new(
        SqliteSink::builder(&file)
            .table("own")
            .key_columns("source", "n")
            .columns(["event_id", "text"], |e: &Event| {
                vec![Value::Integer(e.id as i64), Value::Text(e.body.clone())]
            })
            .build()
            .unwrap(),
    );
    let (errors, dead) = (Arc::clone(&sink.errors), Arc::clone(&sink.dead));
    let queue = Queue::new(config().retry_limit(3), sink).unwrap();
    for mut e in events(0..300) {
        if e.id == 77 {
            e.body = "refused".into();
        }
        queue.enqueue(e).unwrap();
    }
    queue.start().unwrap();
    let report = queue.flush(Duration::from_secs(30)).unwrap();
    assert_eq!((report.delivered, report.dead_lettered), (299, 1));
    assert_eq!(dead.lock().unwrap()[0].id, 77);
    let errors = errors.lock().unwrap();
    assert!(
        errors.iter().all(|e| e.contains("CHECK constraint failed")),
        "{errors:?}"
    );
    let db = Connection::open(&file).unwrap();
    let mut q = db
        .prepare("SELECT n, event_id, text FROM own ORDER BY event_id")
        .unwrap();
    let rows: Vec<(i64, i64, String)> = q
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 299);
    for (n, id, text) in rows {
        assert_eq!(n, id + 1, "the key is the item's sequence number");
        assert_eq!(text, body(id as u64));
    }
}

#[test]
fn a_database_locked_by_another_connection_makes_the_batch_wait() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("db.sqlite");
    let sink = Watched::new(
        SqliteSink::builder(&file)
            .busy_timeout(Duration::from_millis(20))
            .build()
            .unwrap(),
    );
    let errors = Arc::clone(&sink.errors);
    let queue = Queue::new(config(), sink).unwrap();
    queue.enqueue(events(0..1).next().unwrap()).unwrap();
    queue.start().unwrap();
    queue.flush(Duration::from_secs(10)).unwrap(); // the table exists
    let other = Connection::open(&file).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    for e in events(1..50) {
        queue.enqueue(e).unwrap();
    }
    while errors.lock().unwrap().len() < 2 {
        std::thread::sleep(Duration::from_millis(5));
    }
    other.execute_batch("COMMIT").unwrap();
    let report = queue.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(report.dead_lettered, 0);
    assert!(
        errors.lock().unwrap().iter().all(|e| e.contains("locked")),
        "{:?}",
        errors.lock().unwrap()
    );
    assert_exactly_once(
        "SQLite locked",
        &(0..50).collect(),
        &stored(&file, "vinequeue_items"),
    );
}

/// The crash child (see `common`): its sink writes into the file the parent named.
#[test]
fn crash_child() {
    common::child(|file| SqliteSink::builder(file).build().unwrap());
}

fn exactly_once_through_sigkill(sync: &str, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("db.sqlite");
    let acked = kill_and_restart(sync, file.to_str().unwrap(), cycles(), seed);
    assert_exactly_once(
        &format!("SQLite, {sync}"),
        &acked,
        &stored(&file, "vinequeue_items"),
    );
}

#[test]
fn exactly_once_into_sqlite_through_sigkill_immediate() {
    exactly_once_through_sigkill("immediate", 0x6c07_8965);
}

#[test]
fn exactly_once_into_sqlite_through_sigkill_periodic() {
    exactly_once_through_sigkill("periodic", 0x5851_f42d);
}
