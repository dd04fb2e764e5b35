//! The built `vinequeue` binary, run as an operator runs it, against real directories:
//! clean with records pending, with a flipped bit, with a torn tail, held by a live
//! queue (read without changing a byte; the changing commands refuse), and the
//! dead-letter administration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use vinequeue::{Batch, Config, Queue, SendError, SyncMode};

fn vinequeue(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vinequeue"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn config(dir: &Path) -> Config {
    Config::default()
        .wal_path(dir)
        .sync_mode(SyncMode::Immediate)
        .batch_size(10)
        .flush_timeout(Duration::from_millis(5))
        .shutdown_timeout(Duration::from_millis(200))
}

/// A directory left by a queue whose sink was down: `n` records pending.
fn pending(n: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::new(
        config(dir.path()),
        |_: &Batch<u32>| -> Result<(), SendError> { Err(SendError::retry("down")) },
    )
    .unwrap();
    for i in 0..n {
        queue.enqueue(i).unwrap();
    }
    drop(queue);
    dir
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// Every file under `dir` and its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// The files that differ between two snapshots.
fn changed(a: &BTreeMap<PathBuf, Vec<u8>>, b: &BTreeMap<PathBuf, Vec<u8>>) -> Vec<PathBuf> {
    a.keys()
        .chain(b.keys())
        .filter(|p| a.get(*p) != b.get(*p))
        .cloned()
        .collect()
}

#[test]
fn inspect_verify_and_dump_a_clean_directory_with_records_pending() {
    let dir = pending(25);
    let path = dir.path().to_str().unwrap();
    let o = vinequeue(&["inspect", path]);
    assert!(o.status.success(), "{o:?}");
    let text = stdout(&o);
    assert!(text.contains("pending         25 record(s)"), "{text}");
    assert!(text.contains("queue id"), "{text}");

    let o = vinequeue(&["inspect", path, "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["records_pending"], 25);
    assert_eq!(json["segments"][0]["records"], 25);
    let id = json["queue_id"].as_str().unwrap().to_owned();
    let queue = Queue::<u32>::new(config(dir.path()), vinequeue::NullSink).unwrap();
    assert_eq!(
        queue.id().to_string(),
        id,
        "the same identity the queue has"
    );
    drop(queue);

    let o = vinequeue(&["verify", path]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("clean"));

    // With the queue's configuration, the sizes against its limits.
    let config = dir.path().join("queue.toml");
    std::fs::write(&config, "wal_max_size = \"1GiB\"\n").unwrap();
    let o = vinequeue(&["inspect", path, "--config", config.to_str().unwrap()]);
    assert!(
        stdout(&o).contains("of wal_max_size 1073741824"),
        "{}",
        stdout(&o)
    );
    let o = vinequeue(&[
        "inspect",
        path,
        "--json",
        "--config",
        config.to_str().unwrap(),
    ]);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["limits"]["wal_max_size"], 1u64 << 30);

    let o = vinequeue(&["dump", path, "--from", "3", "--limit", "2"]);
    assert!(o.status.success());
    // postcard encodes a u32 below 128 as one byte: items 2 and 3 at numbers 3 and 4.
    assert_eq!(stdout(&o), "3 02\n4 03\n");
    let o = vinequeue(&["dump", path, "--limit", "1", "--format", "base64"]);
    assert_eq!(stdout(&o), "1 AA==\n");
}

#[test]
fn verify_finds_a_flipped_bit_and_names_where() {
    let dir = pending(25);
    let seg = segments(dir.path()).into_iter().next().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[40 + 5 * 17 + 16] ^= 0x10; // the payload of the sixth record
    std::fs::write(&seg, bytes).unwrap();
    let o = vinequeue(&["verify", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    let text = stdout(&o);
    assert!(
        text.contains("DAMAGE") && text.contains("offset 125"),
        "{text}"
    );
}

#[test]
fn a_torn_tail_is_reported_and_is_not_damage() {
    let dir = pending(25);
    // Records beyond what the checkpoint knows synced, the last one cut short: the
    // frontier is written at a clean close, so write the torn frame after the data.
    let seg = segments(dir.path()).into_iter().last().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let end = 40 + 25 * 17;
    // A checkpoint frontier at 25: make the tail look like record 26 begun and cut.
    bytes[end..end + 6].copy_from_slice(&[1, 0, 0, 0, 0xAB, 0xCD]);
    std::fs::write(&seg, bytes).unwrap();
    let o = vinequeue(&["verify", dir.path().to_str().unwrap()]);
    let text = stdout(&o);
    assert!(text.contains("torn tail"), "{text}");
    assert_eq!(o.status.code(), Some(0), "{text}");
}

#[test]
fn a_directory_held_by_a_live_queue_is_read_unchanged_and_not_changed() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::new(
        config(dir.path()),
        |_: &Batch<u32>| -> Result<(), SendError> { Err(SendError::permanent("no")) },
    )
    .unwrap();
    queue.start().unwrap();
    for i in 0..30 {
        queue.enqueue(i).unwrap();
    }
    queue.flush(Duration::from_secs(10)).unwrap();
    let path = dir.path().to_str().unwrap();
    // The queue settles (its last checkpoint written), then nothing of it writes.
    let mut before = snapshot(dir.path());
    loop {
        std::thread::sleep(Duration::from_millis(400));
        let now = snapshot(dir.path());
        if now == before {
            break;
        }
        before = now;
    }
    for args in [
        vec!["inspect", path],
        vec!["inspect", path, "--json"],
        vec!["verify", path],
        vec!["dump", path],
        vec!["dump", path, "--dead-letters"],
        vec!["dead-letters", path, "list"],
    ] {
        let o = vinequeue(&args);
        assert!(o.status.success(), "{args:?}: {o:?}");
    }
    assert!(
        snapshot(dir.path()) == before,
        "a reading command changed a file: {:?}",
        changed(&before, &snapshot(dir.path()))
    );
    let o = vinequeue(&["dead-letters", path, "list"]);
    assert!(stdout(&o).starts_with("30 letter(s)"), "{}", stdout(&o));
    for args in [
        vec!["dead-letters", path, "redrive"],
        vec!["dead-letters", path, "discard", "1"],
    ] {
        let o = vinequeue(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("held by a running queue"), "{err}");
    }
    assert!(
        snapshot(dir.path()) == before,
        "a refused command changed a file: {:?}",
        changed(&before, &snapshot(dir.path()))
    );
    queue.stop().unwrap();
}

#[test]
fn dead_letters_are_listed_discarded_and_redriven_with_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::new(
        config(dir.path()),
        |_: &Batch<u32>| -> Result<(), SendError> {
            Err(SendError::permanent("constraint violated"))
        },
    )
    .unwrap();
    queue.start().unwrap();
    for i in 0..5 {
        queue.enqueue(i).unwrap();
    }
    queue.flush(Duration::from_secs(10)).unwrap();
    queue.stop().unwrap();
    drop(queue);
    let path = dir.path().to_str().unwrap();
    let o = vinequeue(&["dead-letters", path, "list", "--json"]);
    let letters: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(letters.as_array().unwrap().len(), 5);
    assert_eq!(letters[0]["reason"], "Permanent");
    assert!(letters[0]["error"]
        .as_str()
        .unwrap()
        .contains("constraint violated"));

    let o = vinequeue(&["dead-letters", path, "discard", "2"]);
    assert!(o.status.success(), "{o:?}");
    let o = vinequeue(&["dead-letters", path, "redrive"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&o), "redrove 4 letter(s)\n");

    // The queue delivers the four, with their first keys.
    let seen = std::sync::Arc::new(parking_lot_free::Seen::default());
    let s = std::sync::Arc::clone(&seen);
    let queue = Queue::new(
        config(dir.path()),
        move |b: &Batch<u32>| -> Result<(), SendError> {
            for (i, &item) in b.iter().enumerate() {
                s.0.lock().unwrap().push((b.key(i).1, item));
            }
            Ok(())
        },
    )
    .unwrap();
    queue.start().unwrap();
    queue.flush(Duration::from_secs(10)).unwrap();
    queue.stop().unwrap();
    assert_eq!(
        *seen.0.lock().unwrap(),
        vec![(1, 0), (3, 2), (4, 3), (5, 4)]
    );
    assert!(queue.dead_letters(10).unwrap().is_empty());
}

mod parking_lot_free {
    #[derive(Default)]
    pub struct Seen(pub std::sync::Mutex<Vec<(u64, u32)>>);
}

#[test]
fn dump_prints_json_items_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::new(
        config(dir.path()),
        |_: &Batch<String>| -> Result<(), SendError> { Err(SendError::retry("down")) },
    )
    .unwrap();
    queue
        .enqueue(r#"{"order": 7, "total": 12.5}"#.to_owned())
        .unwrap();
    queue.enqueue("not json".to_owned()).unwrap();
    drop(queue);
    let o = vinequeue(&["dump", dir.path().to_str().unwrap(), "--format", "json"]);
    assert!(o.status.success());
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], r#"1 {"order":7,"total":12.5}"#);
    assert!(lines[1].starts_with("2 !"), "{text}");
}

/// Records delivered before the stop stay in their segment until it is deleted whole:
/// `inspect` counts them as records, not as pending.
#[test]
fn inspect_counts_delivered_records_apart_from_pending_ones() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::new(
        config(dir.path()),
        |b: &Batch<u32>| -> Result<(), SendError> {
            if b.iter().all(|&i| i < 10) {
                Ok(())
            } else {
                Err(SendError::retry("down"))
            }
        },
    )
    .unwrap();
    queue.start().unwrap();
    for i in 0..10 {
        queue.enqueue(i).unwrap();
    }
    queue.flush(Duration::from_secs(10)).unwrap();
    for i in 10..25 {
        queue.enqueue(i).unwrap();
    }
    let _ = queue.stop(); // (gives up on the fifteen: they stay in the log)
    drop(queue);

    let o = vinequeue(&["inspect", dir.path().to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{o:?}");
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["segments"][0]["records"], 25, "{json}");
    assert_eq!(json["records_pending"], 15, "{json}");
}
