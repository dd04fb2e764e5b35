//! `Config` from a configuration file (feature `serde`): the example in
//! docs/operations.md loads as documented, a file round-trips, and bad files are errors
//! that name the field.

use std::time::Duration;

use vinequeue::{Config, DeadLetterFull, OverflowPolicy, RecoveryMode, SyncMode};

/// The TOML example of docs/operations.md.
fn documented_example() -> String {
    let doc = include_str!("../../../docs/operations.md");
    let start = doc.find("```toml\n").expect("a TOML example") + "```toml\n".len();
    let end = start + doc[start..].find("```").unwrap();
    doc[start..end].to_owned()
}

#[test]
fn the_documented_example_loads_with_every_field_as_written() {
    let c: Config = toml::from_str(&documented_example()).unwrap();
    assert_eq!(c.get_memory_size(), 50_000);
    assert_eq!(c.get_batch_size(), 1_000);
    assert_eq!(c.get_flush_timeout(), Duration::from_millis(200));
    assert_eq!(
        c.get_wal_path(),
        Some(std::path::Path::new("/var/lib/shipper/queue"))
    );
    assert_eq!(c.get_wal_max_size(), 1 << 30);
    assert_eq!(
        c.get_sync_mode(),
        SyncMode::Periodic(Duration::from_millis(100))
    );
    assert_eq!(c.get_send_timeout(), Duration::from_secs(30));
    assert_eq!(c.get_retry_limit(), Some(Config::RETRY_UNTIL_STOPPED));
    assert_eq!(
        c.get_retry_backoff(),
        (Duration::from_millis(100), Duration::from_secs(10))
    );
    assert_eq!(c.get_shutdown_timeout(), Duration::from_secs(30));
    assert!(c.get_enable_metrics());
    assert_eq!(
        c.get_overflow(),
        OverflowPolicy::Block(Duration::from_secs(1))
    );
    assert_eq!(c.get_recovery_mode(), RecoveryMode::SkipCorrupt);
    assert_eq!(c.get_dead_letter_max_size(), 256 << 20);
    assert_eq!(c.get_dead_letter_full(), DeadLetterFull::KeepInLog);
}

#[test]
fn an_empty_file_is_the_default_and_a_config_round_trips() {
    let c: Config = toml::from_str("").unwrap();
    assert_eq!(format!("{c:?}"), format!("{:?}", Config::default()));

    let c = Config::default()
        .batch_size(7)
        .memory_size(70)
        .sync_mode(SyncMode::Immediate)
        .overflow(OverflowPolicy::DropOldest)
        .retry_limit(5)
        .retry_backoff(Duration::from_micros(1500), Duration::from_secs(90))
        .recovery_mode(RecoveryMode::Strict)
        .dead_letter_full(DeadLetterFull::DropOldest)
        .wal_max_size(3 << 20);
    let text = toml::to_string(&c).unwrap();
    assert!(text.contains("sync_mode = \"immediate\""), "{text}");
    assert!(text.contains("wal_max_size = \"3MiB\""), "{text}");
    let back: Config = toml::from_str(&text).unwrap();
    assert_eq!(format!("{back:?}"), format!("{c:?}"));
}

fn error_of(text: &str) -> String {
    match toml::from_str::<Config>(text) {
        Ok(c) => panic!("{text:?} was accepted: {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_files_are_errors_that_name_the_field() {
    let e = error_of("batch_sise = 10");
    assert!(e.contains("batch_sise"), "an unknown field is named: {e}");
    let e = error_of("batch_size = 0");
    assert!(e.contains("batch_size"), "{e}");
    let e = error_of("flush_timeout = \"10\"");
    assert!(e.contains("flush_timeout") && e.contains("unit"), "{e}");
    let e = error_of("wal_max_size = \"1 parsec\"");
    assert!(e.contains("wal_max_size"), "{e}");
    let e = error_of("sync_mode = \"sometimes\"");
    assert!(e.contains("sync_mode") && e.contains("periodic"), "{e}");
    let e = error_of("overflow = \"block(forever)\"");
    assert!(e.contains("overflow"), "{e}");
    let e = error_of("retry_backoff = { first = \"1s\" }");
    assert!(e.contains("max"), "{e}");
    let e = error_of("memory_size = 10\nbatch_size = 100");
    assert!(e.contains("memory_size"), "{e}");
}
