//! [`PostgresSink`] and [`AsyncPostgresSink`]: each batch written into a PostgreSQL table
//! exactly once per key (tokio-postgres).
//!
//! [`PostgresSink`] is the blocking form, for [`Queue`](vinequeue_core::Queue): it runs
//! the client on a runtime of its own (one tokio worker thread).
//! [`AsyncPostgresSink`] (from [`build_async`](PostgresSinkBuilder::build_async)) is an
//! [`AsyncSink`](vinequeue_async::AsyncSink) for `AsyncQueue` on a tokio runtime.
//!
//! ```no_run
//! use vinequeue_core::{Config, Queue};
//! use vinequeue_sinks::postgres::PostgresSink;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Event { id: u64, kind: String }
//!
//! // Rows `(queue_id uuid, seq bigint, item jsonb)`, primary key `(queue_id, seq)`; the
//! // table is created when missing.
//! let sink = PostgresSink::builder("host=127.0.0.1 user=app dbname=app")
//!     .table("events")
//!     .build()?;
//! let queue = Queue::new(Config::default().wal_path("/var/lib/app/events"), sink)?;
//! queue.start()?;
//! queue.enqueue(Event { id: 1, kind: "signup".into() })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Items can go into columns of your own instead of one `jsonb` column:
//!
//! ```no_run
//! use vinequeue_sinks::postgres::{PostgresSink, Type, Values};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Click { user: i64, page: String }
//!
//! // CREATE TABLE clicks (queue_id uuid, seq bigint, user_id bigint, page text NOT NULL,
//! //                      PRIMARY KEY (queue_id, seq));
//! let sink = PostgresSink::builder("postgresql://app@127.0.0.1/app")
//!     .table("clicks")
//!     .columns(
//!         [("user_id", Type::INT8), ("page", Type::TEXT)],
//!         |c: &Click| -> Values { vec![Box::new(c.user), Box::new(c.page.clone())] },
//!     )
//!     .build()?;
//! # let _: PostgresSink<Click> = sink;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Exactly once
//!
//! Every row carries its item's key ([`Batch::key`]): the queue's identity and the
//! number the item was first enqueued with. The table must have a primary key or unique
//! constraint on the two key columns (the one this sink creates has; the sink checks at
//! connection time, and refuses to write otherwise).
//!
//! A batch is first copied (`COPY ... FORMAT binary`) straight into the table, in one
//! transaction: as fast as a plain COPY. When a key is already there (a batch delivered
//! before a crash whose acknowledgement was lost, a retry after a lost reply, a redriven
//! dead letter), the constraint fails the whole COPY and nothing is written; the batch
//! is then copied into a temporary staging table and moved with
//! `INSERT ... SELECT ... ON CONFLICT (queue_id, seq) DO NOTHING`, which skips the rows
//! already there. Either way, with a durable queue every item lands in the table exactly
//! once.
//!
//! # What the answers mean
//!
//! | the server answers | the sink returns |
//! |---|---|
//! | the transaction commits | `Ok`: the batch is delivered (rows already there are skipped) |
//! | a data exception or a constraint violation (SQLSTATE classes 22 and 23), or an item that does not serialize | the batch is written again row by row in one transaction, each row under a savepoint: the rows that pass are committed, the others come back as `SendError::partial`; when every row of the batch fails, `SendError::permanent` (the items are dead-lettered) |
//! | any other error: no connection, connection lost, `statement_timeout` (the batch's deadline), serialization failure, deadlock, missing table or privilege, server shutting down | `SendError::retry` (the connection is opened again at the next attempt when it was lost) |
//!
//! Only what is wrong with an item itself is permanent: everything else is a state of
//! the server or of its configuration that an operator can fix, and the batch waits for
//! it (with a durable queue, on disk).
//!
//! Each transaction runs under `SET LOCAL statement_timeout` set to what is left of the
//! batch's deadline (`send_timeout`), and the connection under a TCP user timeout of the
//! builder's [`timeout`](PostgresSinkBuilder::timeout), so that a slow or vanished server
//! cannot hold a batch past its deadline. Connections are made without TLS (loopback, a
//! private network or a Unix socket).

use std::fmt;
use std::time::{Duration, Instant};

use bytes::BufMut;
use serde::Serialize;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{IsNull, ToSql};
use tokio_postgres::{Client, NoTls};
use vinequeue_core::{Batch, SendError, Sink};

use crate::table::{Quoted, Table};

pub use tokio_postgres::types::Type;

/// One item's values for the columns given to
/// [`columns`](PostgresSinkBuilder::columns), in their order.
pub type Values = Vec<Box<dyn ToSql + Sync + Send>>;

type MapFn<T> = Box<dyn Fn(&T) -> Values + Send + Sync>;

/// Builds a [`PostgresSink`].
#[must_use = "a builder does nothing until build()"]
pub struct PostgresSinkBuilder<T> {
    params: String,
    table: Table,
    types: Vec<Type>,
    map: Option<MapFn<T>>,
    timeout: Duration,
}

impl<T> fmt::Debug for PostgresSinkBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSinkBuilder")
            .field("table", &self.table)
            .field("types", &self.types)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<T> PostgresSinkBuilder<T> {
    /// The table, optionally schema-qualified (`"analytics.events"`). Default:
    /// `vinequeue_items`.
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table.name = table.into();
        self
    }

    /// The names of the two key columns (`uuid` and `bigint`). Default: `queue_id`, `seq`.
    pub fn key_columns(mut self, queue_id: impl Into<String>, seq: impl Into<String>) -> Self {
        self.table.key = (queue_id.into(), seq.into());
        self
    }

    /// Writes each item into columns of your own: `columns` names them with their types,
    /// `map` gives an item's values in the same order. The table is then yours (not
    /// created by the sink unless [`create_table`](Self::create_table) says so); it
    /// needs the two key columns and a unique constraint on them. Default: one `jsonb`
    /// column `item`, the item as JSON.
    pub fn columns<N: Into<String>>(
        mut self,
        columns: impl IntoIterator<Item = (N, Type)>,
        map: impl Fn(&T) -> Values + Send + Sync + 'static,
    ) -> Self {
        (self.table.columns, self.types) = columns.into_iter().map(|(n, t)| (n.into(), t)).unzip();
        self.map = Some(Box::new(map));
        self.table.create = false;
        self
    }

    /// Whether to `CREATE TABLE IF NOT EXISTS` at the first connection, with the key
    /// columns as primary key. Default: yes for the default columns, no with
    /// [`columns`](Self::columns).
    pub fn create_table(mut self, create: bool) -> Self {
        self.table.create = create;
        self
    }

    /// Longest to wait for a connection, and for the server to acknowledge what was
    /// sent (TCP user timeout). Default: 10 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The blocking sink, for `Queue`, with a runtime of its own (one tokio worker
    /// thread). It connects at its first batch (and again after a lost connection).
    ///
    /// # Errors
    ///
    /// As [`build_async`](Self::build_async), and when the runtime cannot start.
    pub fn build(self) -> Result<PostgresSink<T>, String> {
        let runtime = crate::runtime::blocking("postgres", "PostgreSQL")?;
        Ok(PostgresSink {
            inner: self.build_async()?,
            runtime,
        })
    }

    /// The async sink, for `AsyncQueue` on a tokio runtime (its connection runs as a
    /// task spawned there). It connects at its first batch.
    ///
    /// # Errors
    ///
    /// A message when the connection parameters do not parse, when there are no
    /// columns, or when a name is empty.
    pub fn build_async(self) -> Result<AsyncPostgresSink<T>, String> {
        let mut config: tokio_postgres::Config = self
            .params
            .parse()
            .map_err(|e| format!("PostgreSQL connection parameters: {e}"))?;
        config
            .connect_timeout(self.timeout)
            .tcp_user_timeout(self.timeout)
            .keepalives(true);
        self.table.check("PostgreSQL", self.map.is_some())?;
        let sql = Statements::new(&self);
        Ok(AsyncPostgresSink {
            config,
            client: None,
            sql,
            builder: self,
        })
    }
}

/// A [`Sink`] writing each batch into a PostgreSQL table, each item once per key; see
/// the [module](self) documentation. The blocking form of [`AsyncPostgresSink`].
pub struct PostgresSink<T> {
    inner: AsyncPostgresSink<T>,
    runtime: tokio::runtime::Runtime,
}

impl<T> fmt::Debug for PostgresSink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSink")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// An [`AsyncSink`](vinequeue_async::AsyncSink) writing each batch into a PostgreSQL
/// table, each item once per key, for `AsyncQueue` on a tokio runtime; see the
/// [module](self) documentation.
pub struct AsyncPostgresSink<T> {
    config: tokio_postgres::Config,
    client: Option<Client>,
    sql: Statements,
    builder: PostgresSinkBuilder<T>,
}

impl<T> fmt::Debug for AsyncPostgresSink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncPostgresSink")
            .field("builder", &self.builder)
            .field("connected", &self.client.is_some())
            .finish_non_exhaustive()
    }
}

impl<T> PostgresSink<T> {
    /// A builder for a sink writing through a connection made from `params`: a
    /// `postgresql://` URL or `key=value` pairs (`host=... user=... dbname=...`).
    pub fn builder(params: impl Into<String>) -> PostgresSinkBuilder<T> {
        PostgresSinkBuilder {
            params: params.into(),
            table: Table::default(),
            types: Vec::new(),
            map: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// `"a"."b"` for `a.b`: names are quoted, so that any name works and none is SQL.
fn quote(name: &str) -> String {
    name.split('.')
        .map(|part| format!("\"{}\"", part.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

/// The SQL a sink runs, built once.
struct Statements {
    create: String,
    stage: String,
    /// COPY straight into the table: the fast path.
    direct: String,
    copy: String,
    merge: String,
    row: String,
    types: Vec<Type>,
}

impl Statements {
    fn new<T>(b: &PostgresSinkBuilder<T>) -> Self {
        let Quoted {
            table,
            queue_id: q,
            seq: s,
            list,
        } = b.table.quoted(quote);
        let mut types = vec![Type::UUID, Type::INT8];
        if b.map.is_some() {
            types.extend(b.types.iter().cloned());
        } else {
            types.push(Type::JSONB);
        }
        let params = (1..=list.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let list = list.join(", ");
        Statements {
            create: format!(
                "CREATE TABLE IF NOT EXISTS {table} ({q} uuid NOT NULL, {s} bigint NOT NULL, \
                 \"item\" jsonb NOT NULL, PRIMARY KEY ({q}, {s}))"
            ),
            stage: format!(
                "CREATE TEMPORARY TABLE IF NOT EXISTS vinequeue_stage ON COMMIT DELETE ROWS AS \
                 SELECT {list} FROM {table} WITH NO DATA"
            ),
            direct: format!("COPY {table} ({list}) FROM STDIN (FORMAT binary)"),
            copy: format!("COPY vinequeue_stage ({list}) FROM STDIN (FORMAT binary)"),
            merge: format!(
                "INSERT INTO {table} ({list}) SELECT {list} FROM vinequeue_stage \
                 ON CONFLICT ({q}, {s}) DO NOTHING"
            ),
            row: format!(
                "INSERT INTO {table} ({list}) VALUES ({params}) ON CONFLICT ({q}, {s}) DO NOTHING"
            ),
            types,
        }
    }
}

/// An item as `jsonb` (or `json`), serialized straight into the wire buffer.
struct JsonItem<'a, T>(&'a T);

impl<T> fmt::Debug for JsonItem<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JsonItem")
    }
}

impl<T: Serialize> ToSql for JsonItem<'_, T> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::JSONB {
            out.put_u8(1); // the jsonb binary format's version
        }
        serde_json::to_writer(out.writer(), self.0).map_err(|e| Box::new(ItemNotJson(e)))?;
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB || *ty == Type::JSON
    }

    tokio_postgres::types::to_sql_checked!();
}

/// An item that does not serialize to JSON: the item's fault, never retried.
#[derive(Debug)]
struct ItemNotJson(serde_json::Error);

impl fmt::Display for ItemNotJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an item does not serialize to JSON: {}", self.0)
    }
}

impl std::error::Error for ItemNotJson {}

/// Whether an error is the item's own fault (its data), so that retrying cannot help.
fn is_item_error(e: &tokio_postgres::Error) -> bool {
    if let Some(code) = e.code() {
        let class = &code.code()[..2];
        return class == "22" || class == "23";
    }
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if c.is::<ItemNotJson>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// An error's message with the server's detail, if any.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{}: {} ({detail})", db.code().code(), db.message()),
            None => format!("{}: {}", db.code().code(), db.message()),
        },
        None => e.to_string(),
    }
}

/// What is left of the batch's deadline, in whole milliseconds, at least 1.
fn millis_left(deadline: Instant) -> u128 {
    deadline
        .saturating_duration_since(Instant::now())
        .as_millis()
        .max(1)
}

impl<T: Serialize + Sync> AsyncPostgresSink<T> {
    async fn connect(&mut self) -> Result<&mut Client, SendError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        if self.client.is_none() {
            let retry = |e: tokio_postgres::Error| {
                SendError::retry(format!("PostgreSQL: {}", describe(&e)))
            };
            let (client, connection) = self.config.connect(NoTls).await.map_err(retry)?;
            // The connection runs as a task; it ends (and the client reports itself
            // closed) when the server goes away.
            tokio::spawn(connection);
            // The merge of the empty staging table inserts nothing, but fails unless the
            // table has a unique constraint on the key columns (42P10): the fast path,
            // COPY straight into the table, relies on it to refuse a second copy.
            let setup = if self.builder.table.create {
                format!(
                    "{}; {}; {}",
                    self.sql.create, self.sql.stage, self.sql.merge
                )
            } else {
                format!("{}; {}", self.sql.stage, self.sql.merge)
            };
            client.batch_execute(&setup).await.map_err(retry)?;
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected just above"))
    }

    /// The whole batch in one COPY, straight into the table (`staged`: false) or into
    /// the staging table and merged with `INSERT ... ON CONFLICT DO NOTHING`.
    async fn write_batch(
        &mut self,
        batch: &Batch<T>,
        staged: bool,
    ) -> Result<(), tokio_postgres::Error> {
        let map = self.builder.map.as_ref();
        let sql = &self.sql;
        let client = self.client.as_mut().expect("connected before writing");
        let tx = client.transaction().await?;
        tx.batch_execute(&format!(
            "SET LOCAL statement_timeout = {}",
            millis_left(batch.deadline())
        ))
        .await?;
        let sink = tx
            .copy_in(if staged { &sql.copy } else { &sql.direct })
            .await?;
        let writer = BinaryCopyInWriter::new(sink, &sql.types);
        let mut writer = std::pin::pin!(writer);
        for i in 0..batch.len() {
            let row = Row::of(map, batch, i);
            writer.as_mut().write(&row.values()).await?;
        }
        writer.finish().await?;
        if staged {
            tx.execute(&sql.merge, &[]).await?;
        }
        tx.commit().await
    }

    /// The slow path, after an item's error: row by row, each under a savepoint.
    /// Returns the failed positions with the first failure's message.
    async fn write_rows(
        &mut self,
        batch: &Batch<T>,
    ) -> Result<(Vec<usize>, String), tokio_postgres::Error> {
        let map = self.builder.map.as_ref();
        let sql = &self.sql;
        let client = self.client.as_mut().expect("connected before writing");
        let mut tx = client.transaction().await?;
        tx.batch_execute(&format!(
            "SET LOCAL statement_timeout = {}",
            millis_left(batch.deadline())
        ))
        .await?;
        let statement = tx.prepare_typed(&sql.row, &sql.types).await?;
        let mut failed = Vec::new();
        let mut first = String::new();
        for i in 0..batch.len() {
            let savepoint = tx.savepoint("vinequeue_row").await?;
            let row = Row::of(map, batch, i);
            let result = savepoint.execute(&statement, &row.values()).await;
            match result {
                Ok(_) => savepoint.commit().await?,
                Err(e) if is_item_error(&e) => {
                    if failed.is_empty() {
                        first = format!("item {i} (key {}): {}", batch.key(i).1, describe(&e));
                    }
                    failed.push(i);
                    savepoint.rollback().await?;
                }
                Err(e) => return Err(e),
            }
        }
        tx.commit().await?;
        Ok((failed, first))
    }

    async fn write(&mut self, batch: &Batch<T>) -> Result<(), SendError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.connect().await?;
        // First straight into the table: a key already there (a batch delivered before a
        // crash, whose acknowledgement was lost) makes the whole COPY fail with a unique
        // violation, nothing written; then through the staging table, which skips it.
        let first = match self.write_batch(batch, false).await {
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                self.write_batch(batch, true).await
            }
            other => other,
        };
        let outcome = match first {
            Ok(()) => return Ok(()),
            Err(e) if is_item_error(&e) => match self.write_rows(batch).await {
                Ok((failed, _)) if failed.is_empty() => return Ok(()),
                Ok((failed, why)) if failed.len() == batch.len() => {
                    return Err(SendError::permanent(format!("PostgreSQL: {why}")))
                }
                Ok((failed, why)) => {
                    return Err(SendError::partial(failed, format!("PostgreSQL: {why}")))
                }
                Err(e) => e,
            },
            Err(e) => e,
        };
        if outcome.is_closed() || outcome.as_db_error().is_none() {
            self.client = None; // opened again at the next attempt
        }
        Err(SendError::retry(format!(
            "PostgreSQL: {}",
            describe(&outcome)
        )))
    }
}

/// One item's values, key first, owned for the time of one write.
struct Row<'a, T> {
    id: uuid::Uuid,
    number: i64,
    json: JsonItem<'a, T>,
    mapped: Option<Values>,
}

impl<'a, T: Serialize + Sync> Row<'a, T> {
    fn of(map: Option<&MapFn<T>>, batch: &'a Batch<T>, i: usize) -> Self {
        let (id, number) = batch.key(i);
        Row {
            id: uuid::Uuid::from_bytes(id.to_bytes()),
            // Sequence numbers stay far below i64::MAX; the cast keeps their order.
            number: number as i64,
            json: JsonItem(&batch[i]),
            mapped: map.map(|map| map(&batch[i])),
        }
    }

    fn values(&self) -> Vec<&(dyn ToSql + Sync)> {
        let mut row: Vec<&(dyn ToSql + Sync)> = vec![&self.id, &self.number];
        match &self.mapped {
            Some(mapped) => row.extend(mapped.iter().map(|v| &**v as &(dyn ToSql + Sync))),
            None => row.push(&self.json),
        }
        row
    }
}

impl<T: Serialize + Send + Sync + 'static> vinequeue_async::AsyncSink<T> for AsyncPostgresSink<T> {
    fn send(
        &mut self,
        batch: &Batch<T>,
    ) -> impl std::future::Future<Output = Result<(), SendError>> + Send {
        self.write(batch)
    }
}

impl<T: Serialize + Send + Sync + 'static> Sink<T> for PostgresSink<T> {
    fn send(&mut self, batch: &Batch<T>) -> Result<(), SendError> {
        self.runtime.block_on(self.inner.write(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_so_that_none_is_sql() {
        assert_eq!(quote("events"), "\"events\"");
        assert_eq!(quote("analytics.events"), "\"analytics\".\"events\"");
        assert_eq!(
            quote("a\"; DROP TABLE x; --"),
            "\"a\"\"; DROP TABLE x; --\""
        );
    }

    #[test]
    fn bad_parameters_and_empty_names_are_refused_at_build() {
        let e = PostgresSink::<u32>::builder("port=notanumber")
            .build()
            .unwrap_err();
        assert!(e.contains("connection parameters"), "{e}");
        let e = PostgresSink::<u32>::builder("host=localhost")
            .table("")
            .build()
            .unwrap_err();
        assert!(e.contains("empty"), "{e}");
        let e = PostgresSink::<u32>::builder("host=localhost")
            .columns(Vec::<(&str, Type)>::new(), |_| Vec::new())
            .build()
            .unwrap_err();
        assert!(e.contains("names no column"), "{e}");
    }

    #[test]
    fn statements_name_every_column_in_order() {
        let b = PostgresSink::<u32>::builder("host=localhost")
            .table("s.t")
            .key_columns("q", "n")
            .columns([("a", Type::INT8), ("b", Type::TEXT)], |_| Vec::new());
        let sql = Statements::new(&b);
        assert_eq!(
            sql.merge,
            "INSERT INTO \"s\".\"t\" (\"q\", \"n\", \"a\", \"b\") SELECT \"q\", \"n\", \"a\", \"b\" \
             FROM vinequeue_stage ON CONFLICT (\"q\", \"n\") DO NOTHING"
        );
        assert_eq!(
            sql.row,
            "INSERT INTO \"s\".\"t\" (\"q\", \"n\", \"a\", \"b\") VALUES ($1, $2, $3, $4) \
             ON CONFLICT (\"q\", \"n\") DO NOTHING"
        );
        assert_eq!(sql.types, [Type::UUID, Type::INT8, Type::INT8, Type::TEXT]);
    }
}
