//! Reading frames back from a segment: the in-order scan and the search for valid
//! frames after damage.

use super::*;

/// Visits, in byte order, every offset at or after `from` holding a valid frame whose
/// sequence number lies in `min_seq..=max_seq`, with that number, in one pass over the
/// published bytes, until `visit` returns `false`.
pub(super) fn scan_valid<F: FsFile>(
    file: &F,
    from: u64,
    salt: u64,
    (min_seq, max_seq): (u64, u64),
    max_record: u32,
    mut visit: impl FnMut(u64, u64) -> bool,
) {
    let end = file.published();
    if from >= end || min_seq > max_seq {
        return;
    }
    file.read_with(from, (end - from) as usize, |b| {
        let candidates = b.len().saturating_sub(FRAME_HEADER_LEN - 1);
        let mut p = 0;
        while p < candidates {
            let seq = u64::from_le_bytes(b[p + 8..p + 16].try_into().expect("8 bytes"));
            if seq == 0 {
                // No frame has sequence number 0, nor does any whose sequence field lies
                // in the zeros that follow: skip them at once (a preallocated tail is
                // megabytes of zeros). The next candidate's field holds the next nonzero
                // byte, at most 15 bytes after the candidate's start.
                match first_nonzero(&b[p + 8..]) {
                    Some(z) => p = (p + 8 + z).saturating_sub(15).max(p + 1),
                    None => return,
                }
                continue;
            }
            let len = u32::from_le_bytes(b[p..p + 4].try_into().expect("4 bytes"));
            if seq >= min_seq && seq <= max_seq && len <= max_record {
                if let Frame::Record { seq, .. } = decode_frame(&b[p..], salt, max_record) {
                    if !visit(from + p as u64, seq) {
                        return;
                    }
                }
            }
            p += 1;
        }
    })
}

/// Index of the first byte of `b` that is not zero.
pub(super) fn first_nonzero(b: &[u8]) -> Option<usize> {
    let mut words = b.chunks_exact(8);
    let mut at = 0;
    for w in words.by_ref() {
        if u64::from_ne_bytes(w.try_into().expect("8 bytes")) != 0 {
            return w.iter().position(|&x| x != 0).map(|i| at + i);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&x| x != 0)
        .map(|i| at + i)
}

/// Whether a valid frame with a sequence number `>= min_seq` lies at or after `from`.
pub(super) fn any_valid_after<F: FsFile>(
    file: &F,
    from: u64,
    salt: u64,
    min_seq: u64,
    max_record: u32,
) -> bool {
    let mut found = false;
    scan_valid(file, from, salt, (min_seq, MAX_SEQ), max_record, |_, _| {
        found = true;
        false
    });
    found
}

/// Of the valid frames at or after `from` with a sequence number in `min_seq..=max_seq`,
/// the one with the lowest number. Resynchronising on the lowest (not the first in byte
/// order) makes the choice independent of the bounds, so recovery and every later read
/// (and every later recovery) pick the same frame.
pub(super) fn find_lowest_valid<F: FsFile>(
    file: &F,
    from: u64,
    salt: u64,
    min_seq: u64,
    max_seq: u64,
    max_record: u32,
) -> Option<(u64, u64)> {
    let mut best: Option<(u64, u64)> = None;
    scan_valid(
        file,
        from,
        salt,
        (min_seq, max_seq),
        max_record,
        |p, seq| {
            if best.is_none_or(|(_, s)| seq < s) {
                best = Some((p, seq));
            }
            true
        },
    );
    best
}

/// The highest sequence number of any valid frame at or after `from` (`>= min_seq`).
pub(super) fn highest_valid_seq<F: FsFile>(
    file: &F,
    from: u64,
    salt: u64,
    min_seq: u64,
    max_record: u32,
) -> Option<u64> {
    let mut highest = None;
    scan_valid(
        file,
        from,
        salt,
        (min_seq, MAX_SEQ),
        max_record,
        |_, seq| {
            highest = highest.max(Some(seq));
            true
        },
    );
    highest
}

pub(super) struct Scan {
    pub(super) data_end: u64,
    pub(super) last_seq: u64,
    pub(super) records: u64,
    pub(super) bytes: u64,
    pub(super) index: Vec<(u64, u64)>,
    /// Offset and reason of the first bad frame, if the scan stopped at one.
    pub(super) bad: Option<(u64, &'static str)>,
}

pub(super) fn scan_segment<F: FsFile>(
    file: &F,
    h: SegmentHeader,
    max_record: u32,
    acked: u64,
    ceiling: u64,
) -> Scan {
    let start = SEGMENT_HEADER_LEN as u64;
    scan_from(file, h, max_record, acked, start, h.first_seq, ceiling)
}

/// Scans frames from `pos`, expecting sequence number `expect` there, until the end of
/// the data or the first bad (or out-of-sequence) frame. Numbers above `ceiling` belong
/// to the next segment: a frame claiming one is out of sequence.
pub(super) fn scan_from<F: FsFile>(
    file: &F,
    h: SegmentHeader,
    max_record: u32,
    acked: u64,
    mut pos: u64,
    mut expect: u64,
    ceiling: u64,
) -> Scan {
    let end = file.published();
    let mut scan = Scan {
        data_end: pos,
        last_seq: expect - 1,
        records: 0,
        bytes: 0,
        index: Vec::new(),
        bad: None,
    };
    while pos < end {
        let frame = file.read_with(pos, (end - pos) as usize, |b| {
            decode_frame(b, h.salt, max_record)
        });
        match frame {
            Frame::Record { seq, len } if seq == expect && seq <= ceiling => {
                if (seq - h.first_seq).is_multiple_of(INDEX_EVERY) || scan.index.is_empty() {
                    scan.index.push((seq, pos));
                }
                if seq > acked {
                    scan.records += 1;
                    scan.bytes += len as u64;
                }
                scan.last_seq = seq;
                expect += 1;
                pos += FRAME_HEADER_LEN as u64 + len as u64;
            }
            Frame::End => {
                // The end of the data, unless intact records follow: then the zeros are
                // a block lost to a media error or a write that never reached the disk,
                // and what follows must not be dropped unnoticed (or, in the newest
                // segment, its numbers handed out again).
                if any_valid_after(file, pos + 1, h.salt, expect, max_record) {
                    scan.bad = Some((pos, "zeroed frame header before later records"));
                }
                break;
            }
            Frame::Record { .. } => {
                scan.bad = Some((pos, "frame out of sequence"));
                break;
            }
            Frame::Bad(reason) => {
                scan.bad = Some((pos, reason));
                break;
            }
        }
    }
    scan.data_end = pos;
    scan
}
