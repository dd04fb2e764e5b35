//! Explains a `recovery` input: the directory image it builds (each segment's frames as the
//! decoder sees them), then what opening it in each recovery mode gives.
//!
//! `cargo run --example explain -- corpus/recovery/<file>` (from fuzz/)

use std::path::Path;

use vinequeue_fuzz::harness::{build_image, fuzz_options, DIR};
use vinequeue_storage::{RecoveryMode, Storage};
use vinequeue_wal::format::{decode_frame, Checkpoint, Frame, SegmentHeader, FRAME_HEADER_LEN};
use vinequeue_wal::sim::SimFs;
use vinequeue_wal::{Fs, Wal};

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: explain <recovery input>");
    let data = std::fs::read(&path).expect("the input");
    let image = build_image(&data);
    for (name, bytes) in &image {
        println!("{name}: {} bytes", bytes.len());
        if name == "checkpoint" {
            println!("  {:?}", Checkpoint::decode_file(bytes));
            for slot in bytes.chunks(64) {
                println!("  slot {:?}", Checkpoint::decode(slot));
            }
            continue;
        }
        let Ok(h) = SegmentHeader::decode(bytes) else {
            println!("  header: {:?}", SegmentHeader::decode(bytes));
            continue;
        };
        println!("  header: first_seq {} salt {:#x}", h.first_seq, h.salt);
        // Every offset where a valid frame starts (what a resync can land on).
        for pos in 40..bytes.len() {
            if let Frame::Record { seq, len, .. } = decode_frame(&bytes[pos..], h.salt, 1 << 24) {
                println!(
                    "  offset {pos}: record {seq}, {len} bytes, next frame at {}",
                    pos + FRAME_HEADER_LEN + len as usize
                );
            }
        }
    }
    for mode in [RecoveryMode::SkipCorrupt, RecoveryMode::Strict] {
        let fs = SimFs::new(7);
        fs.create_dir_all(Path::new(DIR)).expect("dir");
        for (name, bytes) in &image {
            fs.put_file(&Path::new(DIR).join(name), bytes);
        }
        let wal = match Wal::open_with(fs.clone(), DIR, fuzz_options(mode)) {
            Err(e) => {
                println!("{mode:?}: open failed: {e}");
                continue;
            }
            Ok(wal) => wal,
        };
        println!("{mode:?}: {:?}", wal.recovery());
        show_reads(&wal, mode);
        let appended = wal.append(b"appended by the fuzzer");
        let synced = appended.as_ref().ok().map(|_| wal.sync());
        println!("{mode:?}: append -> {appended:?}, sync -> {synced:?}");
        drop(wal);
        match Wal::open_with(fs.process_crash(), DIR, fuzz_options(mode)) {
            Err(e) => println!("{mode:?}: reopen failed: {e}"),
            Ok(wal) => {
                println!("{mode:?}: reopened: {:?}", wal.recovery());
                show_reads(&wal, mode);
            }
        }
    }
}

/// One read of everything from 1, then reads in batches of 64 as the harness does.
fn show_reads(wal: &Wal<SimFs>, mode: RecoveryMode) {
    let mut seqs = Vec::new();
    let r = wal.read(1, 1000, &mut |seq, _| {
        seqs.push(seq);
        true
    });
    println!("{mode:?}:   read(1, 1000) -> {r:?}, records {seqs:?}");
    let mut from = 1;
    let mut batches = Vec::new();
    for _ in 0..20 {
        let mut batch = Vec::new();
        let r = wal.read(from, 64, &mut |seq, _| {
            batch.push(seq);
            true
        });
        let last = batch.last().copied();
        batches.push((from, r.map_err(|e| e.to_string()), batch));
        match last {
            Some(l) if l >= from && l < u64::MAX => from = l + 1,
            _ => break,
        }
    }
    for (from, r, batch) in batches {
        println!("{mode:?}:   read({from}, 64) -> {r:?}, records {batch:?}");
    }
}
