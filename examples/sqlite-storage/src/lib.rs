//! [`SqliteStorage`]: VineQueue's [`Storage`] trait over one embedded SQLite database.
//!
//! This crate exists to show that the trait is pluggable: a few hundred lines turn an
//! off-the-shelf database into a queue log that passes the core's conformance suite
//! (`vinequeue_core::testing`). It is an example, not the recommended backend: the
//! segmented log in `vinequeue-wal` is the one the queue is built and tested around.
//!
//! # Design
//!
//! One database file (plus SQLite's `-wal` file next to it) with two tables:
//!
//! ```sql
//! CREATE TABLE records (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL);
//! CREATE TABLE meta (id INTEGER PRIMARY KEY CHECK (id = 0),  -- exactly one row
//!                    acked_through INTEGER NOT NULL,
//!                    next_seq INTEGER NOT NULL,
//!                    sync_count INTEGER NOT NULL);
//! ```
//!
//! * **One connection** behind a [`parking_lot::Mutex`]. Every append is its own
//!   transaction (one `INSERT`); the sequence number is assigned under the lock, so
//!   concurrent appends get dense numbers.
//! * **Acknowledging deletes the row.** `ack_all` deletes the acknowledged rows and
//!   updates `meta` in one transaction. The low-water mark is *derived*: every number
//!   below the smallest remaining row was acknowledged, so `acked_through` is
//!   `MIN(seq) - 1` (or `next_seq - 1` when the table is empty). Acknowledgements that
//!   arrive out of order are therefore as durable as in-order ones, and a reopened
//!   storage replays exactly the unacknowledged records. The flip side: an acknowledged
//!   record is never returned by [`read`](Storage::read), also not above the mark (the
//!   contract leaves that open below the mark; above it,
//!   [`MemStorage`](vinequeue_core::MemStorage) keeps them readable until the mark
//!   passes).
//! * **`meta.next_seq`** is written by every acknowledging transaction, so numbering
//!   continues after every record was acknowledged and deleted; at open the next number
//!   is the larger of it and `MAX(seq) + 1`.
//! * **Reads stream.** [`read`](Storage::read) fetches pages of at most 1024 rows (and
//!   about 4 MiB) with `LIMIT`, copies them out under the lock and calls the visitor
//!   after releasing it, so a visitor may call back into the storage (for example to
//!   acknowledge what it just read).
//! * **One opener.** The connection runs in `locking_mode=EXCLUSIVE`: it holds an
//!   exclusive lock on the file from open to drop, so a second [`SqliteStorage`] (in
//!   this or another process) over the same file fails with [`Error::Locked`] instead of
//!   handing out duplicate sequence numbers. (A side effect: no `-shm` file is used.)
//!
//! # Durability
//!
//! The database runs in WAL journal mode (`journal_mode=WAL`). What SQLite makes
//! durable depends on when the `-wal` file is fsynced:
//!
//! * **`append` and `ack`** commit with `synchronous=NORMAL`: the transaction is written
//!   to the `-wal` file but not fsynced. It survives the *process* crashing (the data is
//!   in the operating system's page cache, and SQLite replays the WAL at the next open),
//!   but not a power loss or kernel crash, which may roll back any of the commits made
//!   since the last fsync. The database is not corrupted either way (SQLite documents
//!   WAL + `NORMAL` as consistent); its automatic checkpoints also fsync, so some
//!   unsynced commits become durable early.
//! * **`sync` / `sync_through`** switch the connection to `synchronous=FULL`, commit a
//!   small write (`meta.sync_count += 1`) and switch back. A `FULL` commit in WAL mode
//!   fsyncs the `-wal` file after writing, and an fsync covers every frame in the file,
//!   so every transaction committed before it (every append and every acknowledgement)
//!   is on stable storage when `sync` returns `Ok`. This relies on the file system
//!   honouring fsync, like any database does; SQLite fsyncs the directory when it
//!   creates the `-wal` file, and this crate fsyncs the directory after creating the
//!   database file.
//! * **Group commit.** All operations share the one connection, so a sync holds the lock
//!   for the duration of the fsync. Callers that were waiting for the lock then find
//!   their records (and the acknowledgements) already covered and return without a
//!   second fsync.
//! * **Failures.** If a write or sync fails (a full disk included), what reached the
//!   disk is unknown, so the storage refuses every later append, acknowledgement and
//!   sync with [`Error::LogFailed`] (reads still work). Reopen it to recover what was
//!   committed.
//! * Opening commits with `synchronous=FULL`, so whatever an open finds is durable,
//!   also when the previous process crashed before syncing.
//!
//! Sequence numbers of records that a power loss rolled back (appended, never synced)
//! are handed out again after the reopen: from the database's point of view those
//! records never existed.
//!
//! # Size
//!
//! [`SqliteOptions::max_size`] limits the payload bytes of unacknowledged records
//! (appending past it is [`Error::LogFull`], with nothing written).
//! [`size`](Storage::size) reports the files on disk, which are larger (pages, the
//! B-tree, the WAL) and do not shrink when records are deleted: SQLite reuses the freed
//! pages for later appends.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};
use vinequeue_core::{Error, RecoveryReport, Storage};

/// `PRAGMA application_id` of a database created by this crate ("VQsq").
const APPLICATION_ID: i64 = 0x5651_7371;
/// `PRAGMA user_version`: the schema version.
const SCHEMA_VERSION: i64 = 1;
/// The cap on [`SqliteOptions::max_record_size`], well inside SQLite's `SQLITE_MAX_LENGTH`.
const MAX_RECORD_SIZE: u64 = 512 * 1024 * 1024;
/// Most rows one read page copies out under the lock.
const PAGE_ROWS: usize = 1024;
/// A read page stops after the row that takes it past this many payload bytes.
const PAGE_BYTES: usize = 4 * 1024 * 1024;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS records (
        seq INTEGER PRIMARY KEY,
        payload BLOB NOT NULL
    );
    CREATE TABLE IF NOT EXISTS meta (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        acked_through INTEGER NOT NULL,
        next_seq INTEGER NOT NULL,
        sync_count INTEGER NOT NULL
    );
    INSERT OR IGNORE INTO meta (id, acked_through, next_seq, sync_count) VALUES (0, 0, 1, 0);
";

/// Options for [`SqliteStorage::open_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    max_size: u64,
    max_record_size: u64,
}

impl Default for SqliteOptions {
    /// No size limit; records of up to 16 MiB.
    fn default() -> Self {
        SqliteOptions {
            max_size: u64::MAX,
            max_record_size: 16 * 1024 * 1024,
        }
    }
}

impl SqliteOptions {
    /// The most payload bytes of unacknowledged records the storage holds; an append
    /// past it fails with [`Error::LogFull`]. Default: no limit.
    pub fn max_size(mut self, bytes: u64) -> Self {
        self.max_size = bytes;
        self
    }

    /// The largest record [`append`](Storage::append) accepts; larger ones fail with
    /// [`Error::RecordTooLarge`]. Default: 16 MiB; capped at 512 MiB (SQLite's own limit
    /// on a value is about 1 GB).
    pub fn max_record_size(mut self, bytes: u64) -> Self {
        self.max_record_size = bytes.min(MAX_RECORD_SIZE);
        self
    }
}

/// A [`Storage`] over one SQLite database file. See the [crate docs](crate) for the
/// design and the durability guarantees.
///
/// ```
/// use vinequeue_core::Storage;
/// use vinequeue_sqlite_storage::SqliteStorage;
///
/// # fn main() -> Result<(), vinequeue_core::Error> {
/// let dir = std::env::temp_dir().join(format!("vq-sqlite-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let log = SqliteStorage::open(dir.join("queue.db"))?;
/// let seq = log.append(b"hello")?;
/// log.sync_through(seq)?;
/// log.ack(seq)?;
/// assert_eq!(log.acked_through(), seq);
/// # drop(log);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct SqliteStorage {
    path: PathBuf,
    opts: SqliteOptions,
    inner: Mutex<Inner>,
    /// Mirrors of `Inner`'s fields, readable without waiting for a sync to finish.
    next_seq: AtomicU64,
    acked_through: AtomicU64,
    recovery: RecoveryReport,
}

#[derive(Debug)]
struct Inner {
    conn: Connection,
    next_seq: u64,
    acked_through: u64,
    /// Payload bytes of the rows in `records`.
    live_bytes: u64,
    /// Bumped by every committed append or acknowledgement.
    write_gen: u64,
    /// `write_gen` as of the last successful sync.
    synced_gen: u64,
    /// Every record up to here is durable.
    synced_seq: u64,
    /// Set when a write failed: the storage refuses writes from then on.
    failed: Option<String>,
}

impl SqliteStorage {
    /// Opens (creating if needed) the database at `path` with default options.
    ///
    /// # Errors
    ///
    /// As [`open_with`](SqliteStorage::open_with).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// Opens (creating if needed) the database at `path`.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] if another storage (in this or another process) has the file
    /// open; [`Error::Config`] if the file is a SQLite database of something else;
    /// [`Error::Corrupt`] if it is not a database; [`Error::Io`] otherwise.
    pub fn open_with(path: impl AsRef<Path>, opts: SqliteOptions) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        let open_err = |e: rusqlite::Error| open_error(&path, e);
        let created = !path.exists();

        let mut conn = Connection::open(&path).map_err(open_err)?;
        // Fail at once if another connection holds the file, rather than waiting.
        conn.busy_timeout(Duration::ZERO).map_err(open_err)?;
        conn.pragma_update_and_check(None, "locking_mode", "EXCLUSIVE", |_| Ok(()))
            .map_err(open_err)?;
        // Refuse someone else's database before switching it to WAL mode.
        check_schema(&conn, &path).map_err(|e| init_error(&path, e))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Io(std::io::Error::other(format!(
                "{}: SQLite refused WAL journal mode (got {mode:?})",
                path.display()
            ))));
        }
        // Open's own transaction is synced: what it finds is durable from here on.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;

        let state = initialise(&mut conn, &path).map_err(|e| init_error(&path, e))?;
        if created {
            sync_parent_dir(&path)?;
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;

        let mut recovery = RecoveryReport::default();
        recovery.records = state.records;
        recovery.bytes = state.bytes;
        recovery.acked_through = state.acked_through;
        recovery.next_seq = state.next_seq;

        Ok(SqliteStorage {
            path,
            opts,
            next_seq: AtomicU64::new(state.next_seq),
            acked_through: AtomicU64::new(state.acked_through),
            recovery,
            inner: Mutex::new(Inner {
                conn,
                next_seq: state.next_seq,
                acked_through: state.acked_through,
                live_bytes: state.bytes,
                write_gen: 0,
                synced_gen: 0,
                synced_seq: state.next_seq - 1,
                failed: None,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database file and SQLite's companions (`-wal`, `-shm`) next to it.
    fn files(&self) -> [PathBuf; 3] {
        let with = |suffix: &str| {
            let mut s: OsString = self.path.clone().into_os_string();
            s.push(suffix);
            PathBuf::from(s)
        };
        [self.path.clone(), with("-wal"), with("-shm")]
    }
}

impl Inner {
    fn check_usable(&self) -> Result<(), Error> {
        match &self.failed {
            Some(msg) => Err(Error::LogFailed(msg.clone())),
            None => Ok(()),
        }
    }

    /// Records a failed write: the storage refuses writes from now on.
    fn fail(&mut self, what: &str, e: rusqlite::Error) -> Error {
        let msg = format!("{what} failed: {e}");
        self.failed = Some(msg.clone());
        Error::Io(std::io::Error::other(msg))
    }

    /// Makes every committed transaction durable (see the crate docs).
    fn sync_now(&mut self) -> Result<(), Error> {
        let (gen, last) = (self.write_gen, self.next_seq - 1);
        match full_sync(&self.conn) {
            Ok(()) => {
                self.synced_gen = gen;
                self.synced_seq = last;
                Ok(())
            }
            Err(e) => Err(self.fail("sync", e)),
        }
    }
}

impl Storage for SqliteStorage {
    fn append(&self, record: &[u8]) -> Result<u64, Error> {
        let len = record.len() as u64;
        if len > self.opts.max_record_size {
            return Err(Error::RecordTooLarge {
                len,
                limit: self.opts.max_record_size,
            });
        }
        let mut inner = self.inner.lock();
        inner.check_usable()?;
        if inner.live_bytes.saturating_add(len) > self.opts.max_size {
            return Err(Error::LogFull {
                size: inner.live_bytes,
                limit: self.opts.max_size,
            });
        }
        let seq = inner.next_seq;
        if let Err(e) = insert(&inner.conn, seq, record) {
            return Err(inner.fail("append", e));
        }
        inner.next_seq += 1;
        inner.live_bytes += len;
        inner.write_gen += 1;
        self.next_seq.store(inner.next_seq, Ordering::Release);
        Ok(seq)
    }

    fn sync(&self) -> Result<(), Error> {
        let mut inner = self.inner.lock();
        inner.check_usable()?;
        if inner.synced_gen == inner.write_gen {
            return Ok(()); // nothing new, or another caller's sync covered it
        }
        inner.sync_now()
    }

    fn sync_through(&self, seq: u64) -> Result<(), Error> {
        let mut inner = self.inner.lock();
        inner.check_usable()?;
        if seq <= inner.synced_seq {
            return Ok(());
        }
        inner.sync_now()
    }

    fn read(
        &self,
        from: u64,
        max: usize,
        visit: &mut dyn FnMut(u64, &[u8]) -> bool,
    ) -> Result<usize, Error> {
        let mut visited = 0;
        let mut next = from;
        while visited < max {
            let want = (max - visited).min(PAGE_ROWS);
            // Copy one page out under the lock; visit it without (the visitor may call
            // back in, e.g. to acknowledge).
            let (page, more) = {
                let inner = self.inner.lock();
                read_page(&inner.conn, next, want).map_err(sql_err)?
            };
            for (seq, bytes) in &page {
                visited += 1;
                if !visit(*seq, bytes) {
                    return Ok(visited);
                }
            }
            match page.last() {
                Some((last, _)) if more => next = last + 1,
                _ => break,
            }
        }
        Ok(visited)
    }

    fn ack(&self, seq: u64) -> Result<(), Error> {
        self.ack_all(&[seq])
    }

    fn ack_all(&self, seqs: &[u64]) -> Result<(), Error> {
        let mut inner = self.inner.lock();
        inner.check_usable()?;
        let (mark, next) = (inner.acked_through, inner.next_seq);
        // Below the mark: already acknowledged; at or above next_seq: not appended.
        let mut wanted: Vec<u64> = seqs
            .iter()
            .copied()
            .filter(|&s| s > mark && s < next)
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        wanted.sort_unstable();
        wanted.dedup();
        match delete_acked(&mut inner.conn, &wanted, mark, next) {
            Ok(None) => Ok(()), // every one of them was acknowledged before
            Ok(Some((freed, new_mark))) => {
                inner.live_bytes = inner.live_bytes.saturating_sub(freed);
                inner.acked_through = new_mark;
                inner.write_gen += 1;
                self.acked_through.store(new_mark, Ordering::Release);
                Ok(())
            }
            Err(e) => Err(inner.fail("acknowledgement", e)),
        }
    }

    fn acked_through(&self) -> u64 {
        self.acked_through.load(Ordering::Acquire)
    }

    fn next_seq(&self) -> u64 {
        self.next_seq.load(Ordering::Acquire)
    }

    fn size(&self) -> u64 {
        self.files()
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    fn recovery(&self) -> RecoveryReport {
        self.recovery.clone()
    }
}

/// What [`initialise`] found.
struct OpenState {
    records: u64,
    bytes: u64,
    acked_through: u64,
    next_seq: u64,
}

enum InitError {
    Sql(rusqlite::Error),
    Foreign(String),
}

impl From<rusqlite::Error> for InitError {
    fn from(e: rusqlite::Error) -> Self {
        InitError::Sql(e)
    }
}

/// Creates or checks the schema and works out the state, in one exclusive transaction.
fn initialise(conn: &mut Connection, path: &Path) -> Result<OpenState, InitError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    if check_schema(&tx, path)? {
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    tx.execute_batch(SCHEMA)?;

    let (stored_mark, stored_next): (i64, i64) = tx.query_row(
        "SELECT acked_through, next_seq FROM meta WHERE id = 0",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let (_, _, min_seq, max_seq) = record_stats(&tx)?;
    let next_seq = to_u64(stored_next)
        .max(max_seq.map_or(1, |m| to_u64(m) + 1))
        .max(to_u64(stored_mark) + 1);
    // Every number below the smallest row was acknowledged (its row deleted).
    let derived = min_seq.map_or(next_seq - 1, |m| to_u64(m).saturating_sub(1));
    let acked_through = derived.max(to_u64(stored_mark));
    // Never true for a database this crate wrote; restores the invariant otherwise.
    tx.execute(
        "DELETE FROM records WHERE seq <= ?1",
        params![to_i64(acked_through)],
    )?;
    let (records, bytes, _, _) = record_stats(&tx)?;
    // Also a write, so that the FULL commit fsyncs whatever the WAL already held.
    tx.execute(
        "UPDATE meta SET acked_through = ?1, next_seq = ?2, sync_count = sync_count + 1 \
         WHERE id = 0",
        params![to_i64(acked_through), to_i64(next_seq)],
    )?;
    tx.commit()?;
    Ok(OpenState {
        records,
        bytes,
        acked_through,
        next_seq,
    })
}

/// Whether the database is empty (`true`: ours to set up) or ours (`false`); an error
/// if it belongs to something else.
fn check_schema(conn: &Connection, path: &Path) -> Result<bool, InitError> {
    let app: i64 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let tables: i64 = conn.query_row("SELECT COUNT(*) FROM sqlite_schema", [], |r| r.get(0))?;
    if app == 0 && version == 0 && tables == 0 {
        Ok(true)
    } else if app == APPLICATION_ID && version == SCHEMA_VERSION {
        Ok(false)
    } else {
        Err(InitError::Foreign(format!(
            "{} is a SQLite database, but not one of vinequeue-sqlite-storage schema \
             version {SCHEMA_VERSION} (application_id {app:#x}, user_version {version}); \
             use another path",
            path.display()
        )))
    }
}

fn init_error(path: &Path, e: InitError) -> Error {
    match e {
        InitError::Sql(e) => open_error(path, e),
        InitError::Foreign(msg) => Error::Config(msg),
    }
}

/// Row count, payload bytes, smallest and largest sequence number of `records`.
fn record_stats(conn: &Connection) -> rusqlite::Result<(u64, u64, Option<i64>, Option<i64>)> {
    conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(length(payload)), 0), MIN(seq), MAX(seq) FROM records",
        [],
        |r| Ok((to_u64(r.get(0)?), to_u64(r.get(1)?), r.get(2)?, r.get(3)?)),
    )
}

fn insert(conn: &Connection, seq: u64, record: &[u8]) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO records (seq, payload) VALUES (?1, ?2)")?
        .execute(params![to_i64(seq), record])?;
    Ok(())
}

/// Deletes the rows of `seqs` (ascending, all in `mark + 1..next`) and persists the new
/// mark and `next`, in one transaction. Returns the freed payload bytes and the new
/// mark, or `None` if no row was left to delete.
fn delete_acked(
    conn: &mut Connection,
    seqs: &[u64],
    mark: u64,
    next: u64,
) -> rusqlite::Result<Option<(u64, u64)>> {
    let tx = conn.transaction()?;
    let (mut freed, mut deleted) = (0u64, 0u64);
    let mut mark_moves = false;
    {
        let mut delete =
            tx.prepare_cached("DELETE FROM records WHERE seq = ?1 RETURNING length(payload)")?;
        for &seq in seqs {
            let len: Option<i64> = delete
                .query_row(params![to_i64(seq)], |r| r.get(0))
                .optional()?;
            if let Some(len) = len {
                freed += to_u64(len);
                deleted += 1;
                mark_moves |= seq == mark + 1;
            }
        }
    }
    if deleted == 0 {
        return Ok(None); // dropping `tx` rolls back the empty transaction
    }
    let new_mark = if mark_moves {
        let min: Option<i64> = tx.query_row("SELECT MIN(seq) FROM records", [], |r| r.get(0))?;
        min.map_or(next - 1, |m| to_u64(m) - 1)
    } else {
        mark
    };
    tx.prepare_cached("UPDATE meta SET acked_through = ?1, next_seq = ?2 WHERE id = 0")?
        .execute(params![to_i64(new_mark), to_i64(next)])?;
    tx.commit()?;
    Ok(Some((freed, new_mark)))
}

/// Rows copied out of `records`: sequence number and payload.
type Page = Vec<(u64, Vec<u8>)>;

/// Up to `want` rows from `from` on (fewer if they pass [`PAGE_BYTES`]), and whether
/// there may be more after them.
fn read_page(conn: &Connection, from: u64, want: usize) -> rusqlite::Result<(Page, bool)> {
    let mut stmt = conn
        .prepare_cached("SELECT seq, payload FROM records WHERE seq >= ?1 ORDER BY seq LIMIT ?2")?;
    let limit = i64::try_from(want).unwrap_or(i64::MAX);
    let mut rows = stmt.query(params![to_i64(from), limit])?;
    let mut page = Vec::new();
    let mut bytes = 0;
    while let Some(row) = rows.next()? {
        let seq = to_u64(row.get(0)?);
        let payload = row.get_ref(1)?.as_blob_or_null()?.unwrap_or_default();
        bytes += payload.len();
        page.push((seq, payload.to_vec()));
        if bytes >= PAGE_BYTES {
            return Ok((page, true));
        }
    }
    let more = page.len() == want;
    Ok((page, more))
}

/// Commits a small write with `synchronous=FULL`, which fsyncs the WAL file and with it
/// every transaction committed before.
fn full_sync(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "synchronous", "FULL")?;
    let written = conn
        .prepare_cached("UPDATE meta SET sync_count = sync_count + 1 WHERE id = 0")
        .and_then(|mut s| s.execute([]));
    let restored = conn.pragma_update(None, "synchronous", "NORMAL");
    written?;
    restored
}

/// Makes a newly created database file's directory entry durable.
fn sync_parent_dir(path: &Path) -> Result<(), Error> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn sql_err(e: rusqlite::Error) -> Error {
    Error::Io(std::io::Error::other(e))
}

fn open_error(path: &Path, e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            Error::Locked(path.to_path_buf())
        }
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => Error::Corrupt {
            file: path.to_path_buf(),
            offset: 0,
            reason: e.to_string(),
        },
        _ => Error::Io(std::io::Error::other(format!("{}: {e}", path.display()))),
    }
}

/// Sequence numbers are stored as SQLite integers (`i64`); they never get near `2^63`.
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
