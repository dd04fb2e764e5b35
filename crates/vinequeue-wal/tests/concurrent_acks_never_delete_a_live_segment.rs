//! Acknowledgements from many threads (the batcher, and producers shedding the oldest
//! records under `DropOldest`) reclaim segments concurrently with appends that roll to new
//! ones. Reclaim must never delete the segment being written (appends to an unlinked file
//! vanish at the next open), must not trip over a segment another reclaim deleted, and
//! must keep the size it reports equal to what is on disk.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use vinequeue_storage::Storage;
use vinequeue_wal::sim::SimFs;
use vinequeue_wal::{SyncMode, Wal, WalOptions};

const DIR: &str = "/wal";

fn opts() -> WalOptions {
    // Tiny segments (about 30 records each), so that rolls and reclaims are frequent.
    support::small_segments(SyncMode::Os)
}

fn payload(thread: u64, i: u64) -> Vec<u8> {
    let mut p = vec![(thread * 31 + i) as u8; 2000];
    p[..8].copy_from_slice(&thread.to_le_bytes());
    p[8..16].copy_from_slice(&i.to_le_bytes());
    p
}

/// Bytes of the log's files on the simulated disk.
fn bytes_on_disk(fs: &SimFs) -> u64 {
    fs.files()
        .iter()
        .filter(|(p, _)| p.parent() == Some(Path::new(DIR)))
        .map(|(_, b)| b.len() as u64)
        .sum()
}

fn run(seed: u64, threads: u64, per_thread: u64) {
    let fs = SimFs::new(seed);
    let wal = Arc::new(Wal::open_with(fs.clone(), DIR, opts()).unwrap());
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                let mut kept = BTreeMap::new();
                for i in 0..per_thread {
                    let p = payload(t, i);
                    let seq = wal.append(&p).unwrap();
                    // Unacknowledged, so its segment must still be listed and readable.
                    let mut seen = None;
                    wal.read(seq, 1, &mut |s, b| {
                        seen = Some((s, b == p.as_slice()));
                        false
                    })
                    .unwrap();
                    assert_eq!(seen, Some((seq, true)), "record {seq} unreadable");
                    // The last few stay unacknowledged; everything else is acknowledged
                    // at once (one at a time, or in pairs, as batches do).
                    if i + 8 >= per_thread {
                        kept.insert(seq, p);
                    } else if i % 2 == 0 {
                        wal.ack(seq).unwrap();
                    } else {
                        wal.ack_all(&[seq, seq]).unwrap();
                    }
                }
                kept
            })
        })
        .collect();
    let mut kept = BTreeMap::new();
    for w in workers {
        kept.extend(w.join().unwrap());
    }
    // (Deletions run on the log's thread: let it finish the one under way.)
    wal.reclaim().unwrap();
    assert_eq!(
        wal.size(),
        bytes_on_disk(&fs),
        "the size the log reports is not what it holds on disk"
    );
    assert_eq!(
        wal.segment_count() as u64,
        fs.files()
            .iter()
            .filter(|(p, _)| p.extension().is_some_and(|e| e == "seg"))
            .count() as u64,
        "segments listed and segment files differ"
    );
    drop(wal);

    let wal = Wal::open_with(fs.process_crash(), DIR, opts()).unwrap();
    let mut found = BTreeMap::new();
    wal.read(1, usize::MAX, &mut |s, b| {
        found.insert(s, b.to_vec());
        true
    })
    .unwrap();
    for (seq, p) in &kept {
        assert_eq!(
            found.get(seq),
            Some(p),
            "unacknowledged record {seq} lost (seed {seed})"
        );
    }
}

#[test]
fn concurrent_ackers_and_appenders_lose_nothing_unacknowledged() {
    for seed in 0..6 {
        run(seed, 6, 400);
    }
}
