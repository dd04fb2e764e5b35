//! The segments of a log checked two at a time before recovery walks them in order.
//!
//! Scanning a segment (reading every frame and checking its checksum) depends on nothing
//! but the segment's bytes, the checkpoint's mark and the next segment's name, so on a
//! machine of several cores two segments can be scanned at once. Recovery takes each
//! result as the scan it would have made itself, and scans again whatever the early
//! scan could not do (a header that does not check out, a read error): the outcome is
//! the same, only sooner. Only on file systems that allow reads from several threads
//! (`Fs::parallel_reads`): a simulated disk that injects faults by counting its calls
//! needs them in a fixed order.

use std::sync::atomic::AtomicUsize;

use super::scan::*;
use super::*;

/// The scan of one segment, and the salt of the header it was made with.
pub(super) struct Prescanned {
    pub(super) salt: u64,
    pub(super) scan: Scan,
}

/// Scans of the segments `names` (ascending, as recovery walks them), each `None` where
/// it was not made; all `None` for fewer than two segments, or a file system that does
/// not allow it, or if a second thread cannot be started.
pub(super) fn prescan<F: Fs>(
    fs: &F,
    dir: &Path,
    names: &[(u64, String)],
    acked: u64,
) -> Vec<Option<Prescanned>> {
    let n = names.len();
    if n < 2 || !fs.parallel_reads() {
        return (0..n).map(|_| None).collect();
    }
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Prescanned>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some((first_seq, name)) = names.get(i) else {
            return;
        };
        let ceiling = names.get(i + 1).map_or(MAX_SEQ, |n| n.0.saturating_sub(1));
        *slots[i].lock() = scan_one(fs, &dir.join(name), *first_seq, acked, ceiling);
    };
    std::thread::scope(|s| {
        // (Without the second thread, this one scans them all: no worse than before.)
        let helper = std::thread::Builder::new()
            .name("vinequeue-wal-open".into())
            .spawn_scoped(s, work);
        work();
        if let Ok(h) = helper {
            if let Err(panic) = h.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
    slots.into_iter().map(Mutex::into_inner).collect()
}

/// The scan recovery makes of a segment whose header checks out.
fn scan_one<F: Fs>(
    fs: &F,
    path: &Path,
    first_seq: u64,
    acked: u64,
    ceiling: u64,
) -> Option<Prescanned> {
    let file = fs.open(path).ok()?;
    let max_len = record_limit(file.len());
    let mut reader = Reader::new(&file);
    let head = reader.get(0, SEGMENT_HEADER_LEN).ok()?.to_vec();
    let header = SegmentHeader::decode(&head)
        .ok()
        .filter(|h| h.first_seq == first_seq)?;
    let scan = scan_segment(&mut reader, header, max_len, acked, ceiling).ok()?;
    Some(Prescanned {
        salt: header.salt,
        scan,
    })
}
