//! `PostgresSink` against a real PostgreSQL server (`ci/with-services` starts one on
//! loopback and sets `VINEQUEUE_TEST_POSTGRES_URL`): rows land once per key, in the
//! default table or the user's columns; a row breaking a constraint is dead-lettered
//! alone; a slow server is cut at the deadline; and SIGKILLed producers leave every
//! acknowledged item in the table exactly once. (The server stopped mid-run has a file of
//! its own, `postgres_server_stopped_mid_run.rs`: it must not stop under these.)
//!
//! These tests are ignored by a plain `cargo test` (no server there); asked for without
//! a server, they fail saying how to start one.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::pg::{db, stored, table, url};
use common::{assert_exactly_once, body, cycles, events, kill_and_restart, Event, Watched};
use vinequeue_core::{Config, Queue};
use vinequeue_sinks::postgres::{PostgresSink, Type, Values};

fn config() -> Config {
    Config::default()
        .batch_size(100)
        .flush_timeout(Duration::from_millis(5))
        .retry_backoff(Duration::from_millis(5), Duration::from_millis(50))
}

#[test]
#[ignore = "needs PostgreSQL: run through ci/with-services"]
fn items_written_twice_land_once_per_key_in_the_default_table() {
    let t = table("vq_default_table");
    let mut sink = Watched::new(PostgresSink::builder(url()).table(&t).build().unwrap());
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
    let rows = db()
        .query(
            &format!("SELECT queue_id::text, seq, item->>'id' FROM {t} ORDER BY seq"),
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 1_000);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.get::<_, String>(0), queue.id().to_string());
        assert_eq!(
            row.get::<_, i64>(1),
            i as i64 + 1,
            "keys are the sequence numbers"
        );
        assert_eq!(row.get::<_, String>(2), i.to_string());
    }
    assert_exactly_once("default table", &(0..1_000).collect(), &stored(&t));
}

#[test]
#[ignore = "needs PostgreSQL: run through ci/with-services"]
fn items_go_into_the_users_own_columns() {
    let t = table("vq_own_columns");
    db().batch_execute(&format!(
        "CREATE TABLE {t} (source uuid, n bigint, event_id bigint NOT NULL, text text, \
         PRIMARY KEY (source, n))"
    ))
    .unwrap();
    let sink = PostgresSink::builder(url())
        .table(&t)
        .key_columns("source", "n")
        .columns(
            [("event_id", Type::INT8), ("text", Type::TEXT)],
            |e: &Event| -> Values { vec![Box::new(e.id as i64), Box::new(e.body.clone())] },
        )
        .build()
        .unwrap();
    let queue = Queue::new(config(), sink).unwrap();
    for e in events(0..250) {
        queue.enqueue(e).unwrap();
    }
    queue.start().unwrap();
    queue.flush(Duration::from_secs(30)).unwrap();
    let rows = db()
        .query(
            &format!("SELECT n, event_id, text FROM {t} ORDER BY n"),
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 250);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.get::<_, i64>(0), i as i64 + 1);
        assert_eq!(row.get::<_, i64>(1), i as i64);
        assert_eq!(row.get::<_, String>(2), body(i as u64));
    }
}

#[test]
#[ignore = "needs PostgreSQL: run through ci/with-services"]
fn a_row_breaking_a_constraint_is_dead_lettered_and_the_others_delivered() {
    let t = table("vq_constraint");
    db().batch_execute(&format!(
        "CREATE TABLE {t} (queue_id uuid, seq bigint, item jsonb NOT NULL \
         CHECK (item->>'body' <> 'refused'), PRIMARY KEY (queue_id, seq))"
    ))
    .unwrap();
    let sink = Watched::new(PostgresSink::builder(url()).table(&t).build().unwrap());
    let (errors, dead) = (Arc::clone(&sink.errors), Arc::clone(&sink.dead));
    let queue = Queue::new(config().retry_limit(3), sink).unwrap();
    for mut e in events(0..300) {
        if e.id == 123 {
            e.body = "refused".into();
        }
        queue.enqueue(e).unwrap();
    }
    queue.start().unwrap();
    let report = queue.flush(Duration::from_secs(30)).unwrap();
    assert_eq!((report.delivered, report.dead_lettered), (299, 1));
    let dead = dead.lock().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, 123);
    let ids: Vec<u64> = stored(&t).iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 299);
    assert!(!ids.contains(&123));
    let errors = errors.lock().unwrap();
    assert!(
        errors.iter().all(|e| e.contains("23514")),
        "a check violation (23514) and nothing else: {errors:?}"
    );
}

#[test]
#[ignore = "needs PostgreSQL: run through ci/with-services"]
fn a_table_without_a_unique_key_is_refused_rather_than_written_twice() {
    let t = table("vq_no_key");
    db().batch_execute(&format!(
        "CREATE TABLE {t} (queue_id uuid, seq bigint, item jsonb)"
    ))
    .unwrap();
    let sink = Watched::new(PostgresSink::builder(url()).table(&t).build().unwrap());
    let errors = Arc::clone(&sink.errors);
    let queue = Queue::new(config().retry_limit(2), sink).unwrap();
    queue.enqueue(events(0..1).next().unwrap()).unwrap();
    queue.start().unwrap();
    let report = queue.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(report.dead_lettered, 1, "never written");
    let errors = errors.lock().unwrap();
    assert!(errors.iter().all(|e| e.contains("42P10")), "{errors:?}");
    assert!(stored(&t).is_empty());
}

#[test]
#[ignore = "needs PostgreSQL: run through ci/with-services"]
fn a_slow_server_is_cut_at_the_send_timeout_and_the_batch_retried() {
    let t = table("vq_slow");
    let client = &mut db();
    client
        .batch_execute(&format!(
            "CREATE TABLE {t} (queue_id uuid, seq bigint, item jsonb, PRIMARY KEY (queue_id, seq));
             CREATE OR REPLACE FUNCTION vq_slow() RETURNS trigger AS
               $$ BEGIN PERFORM pg_sleep(5); RETURN NEW; END $$ LANGUAGE plpgsql;
             CREATE TRIGGER vq_slow BEFORE INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION vq_slow();"
        ))
        .unwrap();
    let sink = Watched::new(PostgresSink::builder(url()).table(&t).build().unwrap());
    let errors = Arc::clone(&sink.errors);
    let queue = Queue::new(config().send_timeout(Duration::from_millis(300)), sink).unwrap();
    for e in events(0..10) {
        queue.enqueue(e).unwrap();
    }
    queue.start().unwrap();
    while errors.lock().unwrap().len() < 2 {
        std::thread::sleep(Duration::from_millis(20));
    }
    client
        .batch_execute(&format!("DROP TRIGGER vq_slow ON {t}"))
        .unwrap();
    queue.flush(Duration::from_secs(30)).unwrap();
    let errors = errors.lock().unwrap();
    assert!(
        errors.iter().all(|e| e.contains("57014")),
        "each slow attempt ends at statement_timeout (57014): {errors:?}"
    );
    assert_exactly_once("slow server", &(0..10).collect(), &stored(&t));
}

#[test]
#[ignore = "needs PostgreSQL: run through ci/with-services"]
fn the_async_form_delivers_through_an_async_queue() {
    let t = table("vq_async");
    let sink = PostgresSink::builder(url())
        .table(&t)
        .build_async()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (queue, delivery) = vinequeue_async::AsyncQueue::with_sink(config(), sink).unwrap();
        tokio::spawn(delivery);
        queue.start().unwrap();
        for e in events(0..500) {
            queue.enqueue(e).await.unwrap();
        }
        assert_eq!(
            queue
                .flush(Duration::from_secs(30))
                .await
                .unwrap()
                .delivered,
            500
        );
        queue.stop().await.unwrap();
    });
    assert_exactly_once("PostgreSQL async", &(0..500).collect(), &stored(&t));
}

/// The crash child (see `common`): its sink writes into the table the parent named.
#[test]
fn crash_child() {
    common::child(|address| {
        let (table, url) = address.split_once(' ').unwrap();
        PostgresSink::builder(url).table(table).build().unwrap()
    });
}

fn exactly_once_through_sigkill(sync: &str, seed: u64) {
    let t = table(&format!("vq_crash_{sync}"));
    let acked = kill_and_restart(sync, &format!("{t} {}", url()), cycles(), seed);
    assert_exactly_once(&format!("PostgreSQL, {sync}"), &acked, &stored(&t));
}

#[test]
#[ignore = "needs PostgreSQL: run through ci/with-services"]
fn exactly_once_into_postgres_through_sigkill_immediate() {
    exactly_once_through_sigkill("immediate", 0x2545_f491);
}

#[test]
#[ignore = "needs PostgreSQL: run through ci/with-services"]
fn exactly_once_into_postgres_through_sigkill_periodic() {
    exactly_once_through_sigkill("periodic", 0x9e37_79b9);
}
