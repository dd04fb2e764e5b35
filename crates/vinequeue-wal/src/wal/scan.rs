//! Reading frames back from a segment: the in-order scan and the search for valid
//! frames after damage.

use super::*;

/// The frames of one segment, as a search for valid ones among damaged bytes sees them.
///
/// Frames lie back to back from the end of the header, at least `FRAME_HEADER_LEN`
/// bytes each, and each holds the number after the previous one's: the frame at offset
/// `p` holds a number at most `first_seq + (p - SEGMENT_HEADER_LEN) / FRAME_HEADER_LEN`.
/// A candidate claiming a higher one is not checked at all, which keeps the search
/// linear: without the bound, the bytes of intact records read at every offset claim
/// numbers and lengths by chance, and each such claim costs a checksum of up to the
/// whole segment.
#[derive(Clone, Copy)]
pub(super) struct Frames {
    pub(super) first_seq: u64,
    pub(super) salt: u64,
    pub(super) max_record: u32,
}

impl Frames {
    /// The frames of `seg`.
    pub(super) fn of<F: Fs>(seg: &Segment<F>) -> Self {
        Frames {
            first_seq: seg.first_seq,
            salt: seg.salt,
            max_record: seg.max_len,
        }
    }

    /// The highest number a frame of this segment at offset `pos` can hold.
    pub(super) fn highest_at(&self, pos: u64) -> u64 {
        self.first_seq
            .saturating_add(pos.saturating_sub(SEGMENT_HEADER_LEN as u64) / FRAME_HEADER_LEN as u64)
    }

    /// Visits, in byte order, every offset at or after `from` holding a valid frame
    /// whose sequence number lies in `min_seq..=max_seq`, with that number, in one pass
    /// over the published bytes (read through the file), until `visit` returns `false`.
    fn scan_valid<F: FsFile>(
        &self,
        reader: &mut Reader<'_, F>,
        from: u64,
        (min_seq, max_seq): (u64, u64),
        mut visit: impl FnMut(u64, u64) -> bool,
    ) -> io::Result<()> {
        let end = reader.end();
        let mut at = from.max(SEGMENT_HEADER_LEN as u64);
        if min_seq > max_seq {
            return Ok(());
        }
        // Bytes the next window must hold from `at`: a frame header, or a whole frame
        // that ran past the last window.
        let mut need = FRAME_HEADER_LEN;
        'windows: while at.saturating_add(FRAME_HEADER_LEN as u64) <= end {
            let b = reader.chunk(at, need)?;
            need = FRAME_HEADER_LEN;
            // Candidates whose header lies in this window; the next window starts at
            // the first candidate after them.
            let candidates = b.len() - (FRAME_HEADER_LEN - 1);
            let mut p = 0;
            while p < candidates {
                let seq = u64::from_le_bytes(b[p + 8..p + 16].try_into().expect("8 bytes"));
                if seq == 0 {
                    // No frame has sequence number 0, nor does any whose sequence field
                    // lies in the zeros that follow: skip them at once (a preallocated
                    // tail is megabytes of zeros). The next candidate's field holds the
                    // next nonzero byte, at most 15 bytes after the candidate's start.
                    match first_nonzero(&b[p + 8..]) {
                        Some(z) => p = (p + 8 + z).saturating_sub(15).max(p + 1),
                        None => p = candidates,
                    }
                    continue;
                }
                let pos = at + p as u64;
                let highest = self.highest_at(pos);
                let len = u32::from_le_bytes(b[p..p + 4].try_into().expect("4 bytes"));
                if seq >= min_seq && seq <= max_seq.min(highest) && len <= self.max_record {
                    let frame_len = FRAME_HEADER_LEN + len as usize;
                    if p + frame_len > b.len() && p > 0 && pos + (frame_len as u64) <= end {
                        // Runs past this window: the next one starts here and holds it
                        // whole (at most the record limit, which the file's size bounds).
                        at = pos;
                        need = frame_len;
                        continue 'windows;
                    }
                    let frame = decode_frame(
                        &b[p..(p + frame_len).min(b.len())],
                        self.salt,
                        self.max_record,
                    );
                    if let Frame::Record { seq, .. } = frame {
                        if !visit(pos, seq) {
                            return Ok(());
                        }
                    }
                }
                p += 1;
            }
            at += candidates as u64;
        }
        Ok(())
    }

    /// Whether a valid frame with a sequence number `>= min_seq` lies at or after `from`.
    pub(super) fn any_valid_after<F: FsFile>(
        &self,
        reader: &mut Reader<'_, F>,
        from: u64,
        min_seq: u64,
    ) -> io::Result<bool> {
        Ok(self
            .find_lowest_valid(reader, from, min_seq, MAX_SEQ)?
            .is_some())
    }

    /// The valid frame at or after `from` with the lowest sequence number in
    /// `min_seq..=max_seq`, and its offset.
    ///
    /// The first one in byte order is the lowest: a segment's frames are written in
    /// ascending order at ascending offsets, and it is never written again once sealed
    /// (recovery seals a segment where its data ends). So the search stops at the first
    /// one, and resumes after the next damage from there: skipping every damaged spot
    /// of a segment reads it once. Recovery and every later read find the same frame
    /// whatever their bounds, as long as it lies within them.
    pub(super) fn find_lowest_valid<F: FsFile>(
        &self,
        reader: &mut Reader<'_, F>,
        from: u64,
        min_seq: u64,
        max_seq: u64,
    ) -> io::Result<Option<(u64, u64)>> {
        let mut found = None;
        self.scan_valid(reader, from, (min_seq, max_seq), |p, seq| {
            found = Some((p, seq));
            false
        })?;
        Ok(found)
    }

    /// The highest sequence number of any valid frame at or after `from` (`>= min_seq`):
    /// reads the rest of the segment.
    pub(super) fn highest_valid_seq<F: FsFile>(
        &self,
        reader: &mut Reader<'_, F>,
        from: u64,
        min_seq: u64,
    ) -> io::Result<Option<u64>> {
        let mut highest = None;
        self.scan_valid(reader, from, (min_seq, MAX_SEQ), |_, seq| {
            highest = highest.max(Some(seq));
            true
        })?;
        Ok(highest)
    }
}

/// Index of the first byte of `b` that is not zero.
fn first_nonzero(b: &[u8]) -> Option<usize> {
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

pub(super) struct Scan {
    pub(super) data_end: u64,
    pub(super) last_seq: u64,
    pub(super) records: u64,
    pub(super) bytes: u64,
    pub(super) index: Vec<(u64, u64)>,
    /// Offset and reason of the first bad frame, if the scan stopped at one.
    pub(super) bad: Option<(u64, &'static str)>,
    /// The number and source position of the last positioned record scanned.
    pub(super) last_position: Option<(u64, Vec<u8>)>,
}

pub(super) fn scan_segment<F: FsFile>(
    reader: &mut Reader<'_, F>,
    h: SegmentHeader,
    max_record: u32,
    acked: u64,
    ceiling: u64,
) -> io::Result<Scan> {
    let start = SEGMENT_HEADER_LEN as u64;
    scan_from(reader, h, max_record, acked, start, h.first_seq, ceiling)
}

/// Scans frames from `pos`, expecting sequence number `expect` there, until the end of
/// the data or the first bad (or out-of-sequence) frame. Numbers above `ceiling` belong
/// to the next segment: a frame claiming one is out of sequence.
pub(super) fn scan_from<F: FsFile>(
    reader: &mut Reader<'_, F>,
    h: SegmentHeader,
    max_record: u32,
    acked: u64,
    mut pos: u64,
    mut expect: u64,
    ceiling: u64,
) -> io::Result<Scan> {
    let end = reader.end();
    let mut scan = Scan {
        data_end: pos,
        last_seq: expect - 1,
        records: 0,
        bytes: 0,
        index: Vec::new(),
        bad: None,
        last_position: None,
    };
    while pos < end {
        let head = reader.get(pos, FRAME_HEADER_LEN)?;
        let claimed = match head.get(0..4) {
            Some(b) => u32::from_le_bytes(b.try_into().expect("4 bytes")).min(max_record),
            None => 0,
        };
        let frame = decode_frame(
            reader.get(pos, FRAME_HEADER_LEN + claimed as usize)?,
            h.salt,
            max_record,
        );
        match frame {
            Frame::Record {
                seq,
                len,
                keyed,
                positioned,
            } if seq == expect && seq <= ceiling => {
                if positioned {
                    let body = reader.get(pos + FRAME_HEADER_LEN as u64, len as usize)?;
                    let position = split_payload(body, keyed, positioned).position;
                    scan.last_position = position.map(|p| (seq, p.to_vec()));
                }
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
                let frames = Frames {
                    first_seq: h.first_seq,
                    salt: h.salt,
                    max_record,
                };
                if frames.any_valid_after(reader, pos + 1, expect)? {
                    scan.bad = Some((pos, "zeroed frame header before later records"));
                }
                break;
            }
            Frame::Record { .. } => {
                scan.bad = Some((pos, OUT_OF_SEQUENCE));
                break;
            }
            Frame::Bad(reason) => {
                scan.bad = Some((pos, reason));
                break;
            }
        }
    }
    scan.data_end = pos;
    Ok(scan)
}

/// Why a scan stopped at an intact frame holding another number than the next one.
pub(super) const OUT_OF_SEQUENCE: &str = "frame out of sequence";

/// Most bytes read through the file at once by a [`Reader`].
pub(super) const WINDOW: usize = 1 << 20;

/// Bytes a [`Reader`] reads at its first read; each later one reads twice as many, up to
/// `WINDOW`: a scan that stops after a frame or two (stepping over damage, frame by
/// frame) reads little, a long one reads large windows.
const FIRST_WINDOW: usize = 4096;

/// Reads a file's published bytes through the file ([`FsFile::read_at`]), a window at
/// a time, so that recovery meets a read error or a file shrunk under it as an error,
/// never as `SIGBUS` from the map.
pub(super) struct Reader<'a, F: FsFile> {
    file: &'a F,
    end: u64,
    /// The window: `buf` holds the bytes at `start..start + buf.len()`.
    start: u64,
    buf: Vec<u8>,
    /// Bytes the next read takes at least.
    window: usize,
}

impl<'a, F: FsFile> Reader<'a, F> {
    pub(super) fn new(file: &'a F) -> Self {
        Reader {
            file,
            end: file.published(),
            start: 0,
            buf: Vec::new(),
            window: FIRST_WINDOW,
        }
    }

    /// End of the bytes it reads.
    pub(super) fn end(&self) -> u64 {
        self.end
    }

    /// The bytes at `at..at + len`, fewer where the data ends.
    pub(super) fn get(&mut self, at: u64, len: usize) -> io::Result<&[u8]> {
        let stop = at.saturating_add(len as u64).min(self.end);
        if at >= stop {
            return Ok(&[]);
        }
        self.hold(at, stop)?;
        let from = (at - self.start) as usize;
        Ok(&self.buf[from..from + (stop - at) as usize])
    }

    /// The bytes from `at` to the end of what it holds, at least `min` of them (fewer
    /// only where the data ends).
    pub(super) fn chunk(&mut self, at: u64, min: usize) -> io::Result<&[u8]> {
        let stop = at.saturating_add(min as u64).min(self.end);
        if at >= stop {
            return Ok(&[]);
        }
        self.hold(at, stop)?;
        Ok(&self.buf[(at - self.start) as usize..])
    }

    /// Makes `at..stop` (within the data) held, reading a window from `at` if it is not.
    fn hold(&mut self, at: u64, stop: u64) -> io::Result<()> {
        let held = self.start + self.buf.len() as u64;
        if at >= self.start && stop <= held {
            return Ok(());
        }
        // At least a window, within the file: never more than it holds, whatever a
        // length field claims.
        let n = (stop - at).max(self.window as u64).min(self.end - at) as usize;
        self.window = (self.window * 2).min(WINDOW);
        self.buf.clear();
        self.buf.resize(n, 0);
        if let Err(e) = self.file.read_at(at, &mut self.buf) {
            self.buf.clear();
            return Err(e);
        }
        self.start = at;
        Ok(())
    }
}
