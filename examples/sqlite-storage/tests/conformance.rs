//! The core's Storage conformance suite against SQLite, plus what the suite does not
//! check: persistence without a sync (clean drop and process crash), out-of-order
//! acknowledgements across a reopen, the size limits, the single-opener lock, visitors
//! that call back in, and refusing a foreign database.

use std::path::{Path, PathBuf};
use std::process::Command;

use vinequeue_core::testing::{storage_conformance, StorageHarness};
use vinequeue_core::{Error, Storage};
use vinequeue_sqlite_storage::{SqliteOptions, SqliteStorage};

struct Harness {
    root: tempfile::TempDir,
    n: u32,
}

impl Harness {
    fn file(&self) -> PathBuf {
        self.root.path().join(format!("queue-{}.db", self.n))
    }
}

impl StorageHarness for Harness {
    type Storage = SqliteStorage;
    fn create(&mut self) -> SqliteStorage {
        self.n += 1;
        SqliteStorage::open(self.file()).unwrap()
    }
    fn reopen(&mut self) -> Option<SqliteStorage> {
        if self.n == 0 {
            self.n = 1;
        }
        Some(SqliteStorage::open(self.file()).unwrap())
    }
}

#[test]
fn sqlite_storage_passes_the_suite() {
    storage_conformance(&mut Harness {
        root: tempfile::tempdir().unwrap(),
        n: 0,
    });
}

fn all(s: &SqliteStorage, from: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    s.read(from, usize::MAX, &mut |seq, b| {
        out.push((seq, b.to_vec()));
        true
    })
    .unwrap();
    out
}

fn wal_file(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push("-wal");
    s.into()
}

#[test]
fn records_and_acks_survive_a_clean_drop_without_sync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let s = SqliteStorage::open(&path).unwrap();
    for i in 0..200u32 {
        s.append(&i.to_le_bytes()).unwrap();
    }
    s.ack_all(&(1..=50).collect::<Vec<_>>()).unwrap();
    drop(s);

    let s = SqliteStorage::open(&path).unwrap();
    assert_eq!(s.acked_through(), 50);
    assert_eq!(s.next_seq(), 201);
    let report = s.recovery();
    assert_eq!((report.records, report.bytes), (150, 600));
    assert_eq!((report.acked_through, report.next_seq), (50, 201));
    let rows = all(&s, 1);
    assert_eq!(rows.len(), 150);
    for (seq, bytes) in rows {
        assert_eq!(bytes, ((seq - 1) as u32).to_le_bytes());
    }
}

/// Runs the ignored test `name` of this binary in a child process, with
/// `VQ_SQLITE_CHILD` set to `db`, and asserts that it passed.
fn run_child(name: &str, db: &Path) {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--ignored", "--test-threads=1"])
        .env("VQ_SQLITE_CHILD", db)
        .output()
        .unwrap();
    assert!(
        child.status.success(),
        "the child {name} failed: {}\n{}{}",
        child.status,
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
    assert!(
        String::from_utf8_lossy(&child.stdout).contains("running 1 test"),
        "the child {name} did not run"
    );
}

/// Run by [`records_and_acks_survive_a_process_crash_without_sync`] in a child process:
/// appends and acknowledges without syncing, then exits without dropping anything.
#[test]
#[ignore = "the child process of records_and_acks_survive_a_process_crash_without_sync"]
fn crash_child() {
    let Some(path) = std::env::var_os("VQ_SQLITE_CHILD") else {
        return; // only meaningful as the child of the test below
    };
    let s = SqliteStorage::open(PathBuf::from(path)).unwrap();
    for i in 0..1000u32 {
        s.append(&i.to_le_bytes()).unwrap();
    }
    s.ack_all(&[1, 2, 3, 500]).unwrap();
    // No sync, no drop: the connection is never closed and SQLite never checkpoints.
    std::process::exit(0);
}

#[test]
fn records_and_acks_survive_a_process_crash_without_sync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    run_child("crash_child", &path);
    let wal = std::fs::metadata(wal_file(&path))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(
        wal > 0,
        "the child should have left its commits in the -wal file"
    );

    let s = SqliteStorage::open(&path).unwrap();
    assert_eq!(s.acked_through(), 3);
    assert_eq!(s.next_seq(), 1001);
    assert_eq!(s.recovery().records, 996);
    let seqs: Vec<u64> = all(&s, 1).iter().map(|r| r.0).collect();
    assert_eq!(seqs.len(), 996);
    assert_eq!(seqs[0], 4);
    assert!(
        !seqs.contains(&500),
        "an out-of-order acknowledgement was lost"
    );
}

#[test]
fn out_of_order_acks_survive_reopen_and_the_mark_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let s = SqliteStorage::open(&path).unwrap();
    for i in 0..10u8 {
        s.append(&[i]).unwrap();
    }
    s.ack_all(&[5, 6, 10]).unwrap();
    s.ack(42).unwrap(); // not appended: a no-op
    assert_eq!(s.acked_through(), 0);
    s.sync().unwrap();
    drop(s);

    let s = SqliteStorage::open(&path).unwrap();
    assert_eq!(s.acked_through(), 0);
    assert_eq!(
        s.next_seq(),
        11,
        "acking the last record must not free its number"
    );
    assert_eq!(s.recovery().records, 7);
    let seqs: Vec<u64> = all(&s, 1).iter().map(|r| r.0).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 7, 8, 9]);
    s.ack_all(&[1, 2, 3, 4]).unwrap();
    assert_eq!(s.acked_through(), 6);
    s.ack_all(&[9, 8, 7]).unwrap();
    assert_eq!(s.acked_through(), 10);
    assert_eq!(s.append(b"x").unwrap(), 11);
}

#[test]
fn a_visitor_may_acknowledge_while_reading_and_reads_span_pages() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStorage::open(dir.path().join("q.db")).unwrap();
    for i in 0..3000u32 {
        s.append(&i.to_le_bytes()).unwrap();
    }
    let mut seen = 0u64;
    let n = s
        .read(1, 5000, &mut |seq, _| {
            seen += 1;
            s.ack(seq).unwrap();
            true
        })
        .unwrap();
    assert_eq!(
        (n, seen),
        (3000, 3000),
        "one read visits past the 1024-row page"
    );
    assert_eq!(s.acked_through(), 3000);
    assert_eq!(s.read(1, 10, &mut |_, _| true).unwrap(), 0);
}

#[test]
fn size_limits_are_enforced_and_acks_make_room() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SqliteOptions::default().max_size(100).max_record_size(64);
    let s = SqliteStorage::open_with(dir.path().join("q.db"), opts).unwrap();
    assert!(matches!(
        s.append(&[0; 65]),
        Err(Error::RecordTooLarge { len: 65, limit: 64 })
    ));
    s.append(&[1; 60]).unwrap();
    assert!(matches!(
        s.append(&[2; 41]),
        Err(Error::LogFull {
            size: 60,
            limit: 100
        })
    ));
    assert_eq!(s.next_seq(), 2, "a refused append takes no number");
    s.append(&[2; 40]).unwrap();
    s.ack(1).unwrap();
    assert_eq!(s.append(&[3; 60]).unwrap(), 3);
    assert!(s.size() > 0);
}

#[test]
fn a_second_opener_is_locked_out_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let first = SqliteStorage::open(&path).unwrap();
    first.append(b"a").unwrap();
    match SqliteStorage::open(&path) {
        Err(Error::Locked(p)) => assert_eq!(p, path),
        other => panic!("expected Error::Locked, got {other:?}"),
    }
    run_child("lock_child", &path); // and from another process
    first.append(b"b").unwrap();
    drop(first);
    let second = SqliteStorage::open(&path).unwrap();
    assert_eq!(second.next_seq(), 3);
}

/// Run by [`a_second_opener_is_locked_out_until_the_first_is_dropped`] in a child
/// process while the parent has the database open.
#[test]
#[ignore = "the child process of a_second_opener_is_locked_out_until_the_first_is_dropped"]
fn lock_child() {
    let Some(path) = std::env::var_os("VQ_SQLITE_CHILD") else {
        return; // only meaningful as the child of the test above
    };
    match SqliteStorage::open(PathBuf::from(&path)) {
        Err(Error::Locked(p)) => assert_eq!(p, PathBuf::from(path)),
        other => panic!("expected Error::Locked in another process, got {other:?}"),
    }
}

#[test]
fn a_foreign_database_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE users (name TEXT); INSERT INTO users VALUES ('x');")
            .unwrap();
    }
    match SqliteStorage::open(&path) {
        Err(Error::Config(msg)) => assert!(msg.contains("not one of"), "{msg}"),
        other => panic!("expected Error::Config, got {other:?}"),
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    let tables: i64 = conn
        .query_row("SELECT COUNT(*) FROM sqlite_schema", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 1, "no table was added to the foreign database");

    std::fs::write(dir.path().join("junk.db"), vec![0x55; 8192]).unwrap();
    assert!(matches!(
        SqliteStorage::open(dir.path().join("junk.db")),
        Err(Error::Corrupt { .. })
    ));
}
