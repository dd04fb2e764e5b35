//! A sealed segment holds no file descriptor (its map keeps the file open), so a log of
//! hundreds of segments opens, reads and appends under a descriptor limit far below its
//! segment count: here 320 segments under `RLIMIT_NOFILE` = 64, in a child process
//! (before, each segment kept one descriptor, and the open failed with `EMFILE`).

use std::path::Path;
use std::process::Command;

use vinequeue_storage::Storage;
use vinequeue_wal::{SyncMode, Wal, WalOptions, MIN_SEGMENT_SIZE};

const CHILD: &str = "VQ_FD_LIMIT_CHILD_DIR";
const SEGMENTS: usize = 320;
const LIMIT: u64 = 64;

fn opts() -> WalOptions {
    WalOptions::default()
        .segment_size(MIN_SEGMENT_SIZE)
        .sync_mode(SyncMode::Os)
}

fn record(i: u64) -> Vec<u8> {
    vec![(i % 251) as u8; 10_000]
}

#[test]
fn a_log_of_320_segments_opens_with_64_descriptors() {
    if let Ok(dir) = std::env::var(CHILD) {
        child(Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut records = 0;
    {
        let wal = Wal::open(dir.path(), opts()).unwrap();
        while wal.segment_count() < SEGMENTS + 1 {
            wal.append(&record(records)).unwrap();
            records += 1;
        }
        wal.sync().unwrap();
    }
    let segments = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".seg")
        })
        .count();
    assert!(segments > SEGMENTS, "{segments} segments");
    // The child runs under `ulimit -n` (the shell's `setrlimit`), checked by the child.
    let out = Command::new("sh")
        .args([
            "-c",
            &format!("ulimit -n {LIMIT} && exec \"$0\" \"$@\""),
            std::env::current_exe().unwrap().to_str().unwrap(),
            "--exact",
            "a_log_of_320_segments_opens_with_64_descriptors",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, dir.path())
        .env("VQ_FD_LIMIT_RECORDS", records.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("child: done"),
        "the child failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn child(dir: &Path) {
    let records: u64 = std::env::var("VQ_FD_LIMIT_RECORDS")
        .unwrap()
        .parse()
        .unwrap();
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let soft: u64 = open_files
        .split_whitespace()
        .nth(3)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(soft, LIMIT, "{open_files}");
    let wal = Wal::open(dir, opts()).expect("the log opens under the descriptor limit");
    assert!(wal.segment_count() > SEGMENTS);
    let mut next = 0;
    let mut from = 1;
    loop {
        let n = wal
            .read(from, 1000, &mut |seq, bytes| {
                assert_eq!(bytes, record(seq - 1), "record {seq}");
                assert_eq!(seq, next + 1);
                next = seq;
                true
            })
            .expect("read");
        if n == 0 {
            break;
        }
        from = next + 1;
    }
    assert_eq!(next, records, "every record read back");
    // Appends roll to new segments, and acknowledgements delete the old ones.
    for i in 0..200 {
        wal.append(&record(i)).unwrap();
    }
    wal.sync().unwrap();
    wal.ack_range(1, records).unwrap();
    wal.reclaim().unwrap();
    // Only the segments of the 200 new records are left (about 40 of 64 KiB).
    assert!(
        wal.segment_count() < SEGMENTS / 4,
        "{} segments left",
        wal.segment_count()
    );
    println!("child: done");
}
