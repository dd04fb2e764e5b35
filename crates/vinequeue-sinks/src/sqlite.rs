//! [`SqliteSink`]: each batch written into an SQLite database file exactly once per key
//! (rusqlite, with SQLite built in: nothing to install).
//!
//! ```no_run
//! use vinequeue_core::{Config, Queue};
//! use vinequeue_sinks::sqlite::SqliteSink;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Event { id: u64, kind: String }
//!
//! // Rows `(queue_id TEXT, seq INTEGER, item TEXT)` (the item as JSON), primary key
//! // `(queue_id, seq)`; the table is created when missing.
//! let sink = SqliteSink::builder("events.db").table("events").build()?;
//! let queue = Queue::new(Config::default().wal_path("events-log"), sink)?;
//! queue.start()?;
//! queue.enqueue(Event { id: 1, kind: "signup".into() })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Exactly once
//!
//! Every row carries its item's key ([`Batch::key`]): the queue's identity (as text) and
//! the number the item was first enqueued with. A batch is written in one transaction
//! with `INSERT ... ON CONFLICT (queue_id, seq) DO NOTHING`, so that a batch written
//! again (its acknowledgement lost in a crash, a redriven dead letter) adds nothing: with
//! a durable queue every item lands in the table exactly once. A table of your own (with
//! [`columns`](SqliteSinkBuilder::columns)) needs a primary key or unique index on the two
//! key columns.
//!
//! # What the answers mean
//!
//! | SQLite answers | the sink returns |
//! |---|---|
//! | the transaction commits | `Ok` (rows already there are skipped) |
//! | a constraint fails for some rows (`CHECK`, `NOT NULL`, another unique index), or an item does not serialize to JSON | the other rows are committed; `SendError::partial` naming the failed rows, or `SendError::permanent` when every row failed |
//! | the database is busy or locked past the busy timeout, the disk is full, an I/O error, the file cannot be opened | `SendError::retry` (the file is opened again at the next attempt) |
//! | any other error (a missing table or column in a table of your own...) | `SendError::retry`: a configuration an operator fixes while the batch waits |

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{Connection, ErrorCode};
use serde::Serialize;
use vinequeue_core::{Batch, SendError, Sink};

use crate::table::{Quoted, Table};

type MapFn<T> = Box<dyn Fn(&T) -> Vec<Value> + Send>;

/// Builds an [`SqliteSink`].
#[must_use = "a builder does nothing until build()"]
pub struct SqliteSinkBuilder<T> {
    path: PathBuf,
    table: Table,
    map: Option<MapFn<T>>,
    busy_timeout: Duration,
}

impl<T> fmt::Debug for SqliteSinkBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteSinkBuilder")
            .field("path", &self.path)
            .field("table", &self.table)
            .field("busy_timeout", &self.busy_timeout)
            .finish_non_exhaustive()
    }
}

impl<T> SqliteSinkBuilder<T> {
    /// The table. Default: `vinequeue_items`.
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table.name = table.into();
        self
    }

    /// The names of the two key columns. Default: `queue_id`, `seq`.
    pub fn key_columns(mut self, queue_id: impl Into<String>, seq: impl Into<String>) -> Self {
        self.table.key = (queue_id.into(), seq.into());
        self
    }

    /// Writes each item into columns of your own: `columns` names them, `map` gives an
    /// item's values in the same order. The table is then yours (not created unless
    /// [`create_table`](Self::create_table) says so). Default: one column `item`, the
    /// item as JSON text.
    pub fn columns<N: Into<String>>(
        mut self,
        columns: impl IntoIterator<Item = N>,
        map: impl Fn(&T) -> Vec<Value> + Send + 'static,
    ) -> Self {
        self.table.columns = columns.into_iter().map(Into::into).collect();
        self.map = Some(Box::new(map));
        self.table.create = false;
        self
    }

    /// Whether to `CREATE TABLE IF NOT EXISTS` when the file is opened. Default: yes for
    /// the default columns, no with [`columns`](Self::columns).
    pub fn create_table(mut self, create: bool) -> Self {
        self.table.create = create;
        self
    }

    /// How long a write waits for another connection's lock before the batch is
    /// retried. Default: 5 s (and never past the batch's deadline).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// The sink. It opens the file at its first batch (and again after an error).
    ///
    /// # Errors
    ///
    /// A message when a name is empty or `columns` names none.
    pub fn build(self) -> Result<SqliteSink<T>, String> {
        self.table.check("SQLite", self.map.is_some())?;
        let Quoted {
            table,
            queue_id: q,
            seq: s,
            list,
        } = self.table.quoted(quote);
        let params = vec!["?"; list.len()].join(", ");
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {table} ({q} TEXT NOT NULL, {s} INTEGER NOT NULL, \
             \"item\" TEXT NOT NULL, PRIMARY KEY ({q}, {s}))"
        );
        let insert = format!(
            "INSERT INTO {table} ({}) VALUES ({params}) ON CONFLICT ({q}, {s}) DO NOTHING",
            list.join(", ")
        );
        Ok(SqliteSink {
            connection: None,
            create,
            insert,
            builder: self,
        })
    }
}

/// `"name"`: names are quoted, so that any name works and none is SQL.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A [`Sink`] writing each batch into an SQLite table, each item once per key; see the
/// [module](self) documentation.
pub struct SqliteSink<T> {
    connection: Option<Connection>,
    create: String,
    insert: String,
    builder: SqliteSinkBuilder<T>,
}

impl<T> fmt::Debug for SqliteSink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteSink")
            .field("builder", &self.builder)
            .field("open", &self.connection.is_some())
            .finish_non_exhaustive()
    }
}

impl<T> SqliteSink<T> {
    /// A builder for a sink writing into the database file at `path` (created when
    /// missing).
    pub fn builder(path: impl Into<PathBuf>) -> SqliteSinkBuilder<T> {
        SqliteSinkBuilder {
            path: path.into(),
            table: Table::default(),
            map: None,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// The open connection in `slot`, opened (and the table created) when there is none.
fn open<'a, T>(
    slot: &'a mut Option<Connection>,
    builder: &SqliteSinkBuilder<T>,
    create: &str,
) -> Result<&'a mut Connection, rusqlite::Error> {
    if slot.is_none() {
        let connection = Connection::open(&builder.path)?;
        // WAL journal: readers do not block the sink, and a commit costs one sync.
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        if builder.table.create {
            connection.execute_batch(create)?;
        }
        *slot = Some(connection);
    }
    Ok(slot.as_mut().expect("opened just above"))
}

/// Whether an error is the row's own fault (its data), so that retrying cannot help.
fn is_row_error(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation
    ) || matches!(e, rusqlite::Error::ToSqlConversionFailure(_))
}

impl<T: Serialize> SqliteSink<T> {
    /// Writes the batch in one transaction; returns the rows that failed with the first
    /// failure's message.
    fn write(&mut self, batch: &Batch<T>) -> Result<(Vec<usize>, String), rusqlite::Error> {
        let left = batch
            .deadline()
            .saturating_duration_since(std::time::Instant::now());
        let busy = self.builder.busy_timeout.min(left);
        let SqliteSink {
            connection,
            create,
            insert,
            builder,
        } = self;
        let map = &builder.map;
        let connection = open(connection, builder, create)?;
        connection.busy_timeout(busy)?;
        let tx = connection.transaction()?;
        let mut failed = Vec::new();
        let mut first = String::new();
        {
            let mut statement = tx.prepare_cached(insert)?;
            let id = batch.queue_id().to_string();
            for i in 0..batch.len() {
                let (_, number) = batch.key(i);
                // Sequence numbers stay far below i64::MAX.
                let mut row = vec![Value::Text(id.clone()), Value::Integer(number as i64)];
                let outcome = match map {
                    Some(map) => {
                        row.extend(map(&batch[i]));
                        statement.execute(rusqlite::params_from_iter(row))
                    }
                    None => match serde_json::to_string(&batch[i]) {
                        Ok(json) => {
                            row.push(Value::Text(json));
                            statement.execute(rusqlite::params_from_iter(row))
                        }
                        Err(e) => Err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))),
                    },
                };
                match outcome {
                    Ok(_) => {}
                    Err(e) if is_row_error(&e) => {
                        if failed.is_empty() {
                            first = format!("item {i} (key {number}): {e}");
                        }
                        failed.push(i);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        tx.commit()?;
        Ok((failed, first))
    }
}

impl<T: Serialize + Send + 'static> Sink<T> for SqliteSink<T> {
    fn send(&mut self, batch: &Batch<T>) -> Result<(), SendError> {
        if batch.is_empty() {
            return Ok(());
        }
        match self.write(batch) {
            Ok((failed, _)) if failed.is_empty() => Ok(()),
            Ok((failed, why)) if failed.len() == batch.len() => {
                Err(SendError::permanent(format!("SQLite: {why}")))
            }
            Ok((failed, why)) => Err(SendError::partial(failed, format!("SQLite: {why}"))),
            Err(e) => {
                self.connection = None; // opened again at the next attempt
                Err(SendError::retry(format!(
                    "SQLite ({}): {e}",
                    self.builder.path.display()
                )))
            }
        }
    }
}
