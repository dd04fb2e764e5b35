//! Exactly once from source to backend: a producer that reads a source (the items
//! `0, 1, 2...`) enqueues each with `enqueue_at` and its place in the source, and after a
//! restart resumes right after the position `recovery()` hands back. SIGKILLed at
//! random moments 50 times, it leaves the backend (SQLite, deduplicating on the key)
//! with every item of the source exactly once: none skipped, none enqueued twice.

mod common;

use common::{assert_source_to_backend_exactly_once, cycles, kill_and_restart, Event};
use rusqlite::Connection;
use vinequeue_sinks::sqlite::SqliteSink;

#[test]
fn crash_child() {
    common::positioned_child(|file| SqliteSink::builder(file).build().unwrap());
}

fn stored(file: &std::path::Path) -> Vec<Event> {
    let db = Connection::open(file).unwrap();
    let mut q = db.prepare("SELECT item FROM vinequeue_items").unwrap();
    q.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|json| serde_json::from_str(&json.unwrap()).unwrap())
        .collect()
}

fn exactly_once_from_the_source(sync: &str, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("db.sqlite");
    let acked = kill_and_restart(sync, file.to_str().unwrap(), cycles(), seed);
    assert_source_to_backend_exactly_once(
        &format!("source to SQLite, {sync}"),
        &acked,
        &stored(&file),
    );
}

#[test]
fn exactly_once_from_source_to_backend_through_sigkill_immediate() {
    exactly_once_from_the_source("immediate", 0x7137_449f);
}

#[test]
fn exactly_once_from_source_to_backend_through_sigkill_periodic() {
    exactly_once_from_the_source("periodic", 0xb5c0_fbcf);
}
