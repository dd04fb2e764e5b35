//! `PostgresSink` while its server stops mid-run (`ci/with-services` sets
//! `VINEQUEUE_TEST_POSTGRES_CTL`): the queue retries, keeps what comes meanwhile in its
//! log, and delivers everything, once, when the server is back. A file of its own, so
//! that no other test runs while the server is down.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::pg::{stored, table, url};
use common::{assert_exactly_once, events, service, Watched};
use vinequeue_core::{Config, Queue, SyncMode};
use vinequeue_sinks::postgres::PostgresSink;

#[test]
#[ignore = "needs PostgreSQL: run through ci/with-services"]
fn a_server_stopped_mid_run_gets_everything_once_it_is_back() {
    let t = table("vq_stopped");
    let ctl = service("VINEQUEUE_TEST_POSTGRES_CTL");
    let pg_ctl = |what: &str| {
        let out = std::process::Command::new(&ctl).arg(what).output().unwrap();
        assert!(out.status.success(), "{ctl} {what}: {out:?}");
    };
    let dir = tempfile::tempdir().unwrap();
    let sink = Watched::new(PostgresSink::builder(url()).table(&t).build().unwrap());
    let errors = Arc::clone(&sink.errors);
    let config = Config::default()
        .batch_size(100)
        .flush_timeout(Duration::from_millis(5))
        .retry_backoff(Duration::from_millis(5), Duration::from_millis(50))
        .wal_path(dir.path())
        .memory_size(100)
        .sync_mode(SyncMode::Immediate);
    let queue = Queue::new(config, sink).unwrap();
    queue.start().unwrap();
    for e in events(0..500) {
        queue.enqueue(e).unwrap();
    }
    queue.flush(Duration::from_secs(30)).unwrap();
    pg_ctl("stop");
    // While the server is down, items keep coming: more than the ring holds.
    for e in events(500..2_000) {
        queue.enqueue(e).unwrap();
    }
    while errors.lock().unwrap().is_empty() {
        std::thread::sleep(Duration::from_millis(20));
    }
    pg_ctl("start");
    let report = queue.flush(Duration::from_secs(60)).unwrap();
    assert_eq!(report.dead_lettered, 0);
    queue.stop().unwrap();
    assert_exactly_once("server stopped", &(0..2_000).collect(), &stored(&t));
}
