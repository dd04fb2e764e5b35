//! A segment of the log in memory: its file, its sparse index, the writer's position,
//! and the release of pages behind reads and writes.

use super::*;

/// A sparse index entry every this many records of a segment.
pub(super) const INDEX_EVERY: u64 = 256;

/// Bytes of a segment mapped in ahead of the writer at once.
pub(super) const PREPARE_CHUNK: u64 = 1 << 20;

/// A page of memory (and of the page cache).
pub(super) const PAGE: u64 = 4096;

/// Bytes a read passes before it releases the pages behind it (`Segment::release_read`).
pub(super) const READ_RELEASE_STEP: u64 = 1 << 20;

/// The kernel's `fault_around_bytes` default: a fault on a file mapping maps in the
/// pages of the page cache around it, in an aligned window of up to this many bytes.
pub(super) const FAULT_AROUND: u64 = 64 << 10;

pub(super) struct Segment<F: Fs> {
    pub(super) first_seq: u64,
    pub(super) path: PathBuf,
    pub(super) salt: u64,
    pub(super) file: F::File,
    /// Sequence number of the last record (`first_seq - 1` while empty). Written for
    /// every append: on a cache line of its own, away from the fields readers use.
    pub(super) last_seq: CachePadded<AtomicU64>,
    /// Bytes below this offset are durable.
    pub(super) synced_end: AtomicU64,
    /// Bytes below this offset (published) were released from the mapping (by syncs and
    /// the write-ahead thread, behind the writer).
    pub(super) released_end: AtomicU64,
    /// Where reads release the pages behind them from (see [`Segment::release_read`]).
    pub(super) read_released: AtomicU64,
    /// Where the last read in this segment stopped: the number it expected next and the
    /// offset of the frame that should hold it. A read that goes on from there (the
    /// queue's replay and spill read-back do, in pieces as small as one record) starts
    /// there, not at the sparse index entry before it, up to 255 frames back.
    pub(super) read_hint: Mutex<(u64, u64)>,
    /// `(seq, offset)` of every `INDEX_EVERY`-th record, ascending.
    pub(super) index: Mutex<Vec<(u64, u64)>>,
    /// The write-backs the write-ahead thread starts in this file
    /// (`FsFile::start_writeback`). One that fails as it starts
    /// may have dropped its range's dirty pages without leaving the error for the next
    /// sync to report: a sync of the segment with anything new to write looks here
    /// after its own call (`write_back_error`), waiting for a call under way over its
    /// range, and fails the log if an error is stored.
    pub(super) write_backs: Mutex<WriteBacks>,
    /// Signalled when a write-back call ends.
    pub(super) write_back_done: Condvar,
    /// Longest payload a frame of this segment is believed to have: what fits in the
    /// file as it was created ([`record_limit`]). Not the `max_record_size` in effect, which
    /// limits new appends only: a log reopened with lower limits still reads the larger
    /// records written before.
    pub(super) max_len: u32,
    /// The number and source position of the segment's last positioned record: written
    /// to the `source-position` file before the segment is deleted.
    pub(super) last_position: Mutex<Option<(u64, Vec<u8>)>>,
}

/// The write-back calls of the write-ahead thread in one segment: the range of the one
/// running, and the first error not yet reported.
#[derive(Debug, Default)]
pub(super) struct WriteBacks {
    pub(super) running: Option<(u64, u64)>,
    pub(super) error: Option<io::Error>,
}

impl<F: Fs> Segment<F> {
    /// Starts the write-back of `offset..offset + len` (on the write-ahead thread),
    /// storing its error for the next sync (`write_backs`).
    pub(super) fn start_writeback(&self, offset: u64, len: u64) {
        self.write_backs.lock().running = Some((offset, offset + len));
        let result = self.file.start_writeback(offset, len);
        let mut wb = self.write_backs.lock();
        wb.running = None;
        if let Err(e) = result {
            wb.error.get_or_insert(e);
        }
        drop(wb);
        self.write_back_done.notify_all();
    }

    /// For a sync of `from..end`, after its own call: the error of a write-back call
    /// that failed, once none is running over that range. A call running elsewhere (the
    /// chunk ahead of the writer) can drop no page this sync covers, and is not waited
    /// for: a later sync, of the records written there, sees its error.
    pub(super) fn write_back_error(&self, from: u64, end: u64) -> Option<io::Error> {
        let mut wb = self.write_backs.lock();
        while wb.running.is_some_and(|(lo, hi)| lo < end && from < hi) {
            self.write_back_done.wait(&mut wb);
        }
        wb.error.take()
    }
}

/// Longest payload a frame can have in a segment file of `file_len` bytes. A longer
/// length field is damage, never trusted: the frame could not fit.
pub(super) fn record_limit(file_len: u64) -> u32 {
    let fits = file_len.saturating_sub((SEGMENT_HEADER_LEN + FRAME_HEADER_LEN) as u64);
    u32::try_from(fits).unwrap_or(u32::MAX)
}

/// The number after `seq`, never beyond `MAX_SEQ` (numbers read from disk may be as high
/// as `MAX_SEQ`; the log hands out numbers below it only, see `LogState::append`).
pub(super) fn after(seq: u64) -> u64 {
    seq.saturating_add(1).min(MAX_SEQ)
}

impl<F: Fs> Segment<F> {
    /// Drops this process's mapping of the whole published pages below `end` not
    /// released yet (their bytes stay in the page cache and the file; a later read maps
    /// them in again).
    pub(super) fn release_below(&self, end: u64) {
        let released = self.released_end.load(Ordering::Acquire);
        if released < end {
            let upto = self.file.release(released, end - released);
            self.released_end.fetch_max(upto, Ordering::AcqRel);
        }
    }

    /// A read looked at bytes `start..pos` of this segment: drops the mapping of the
    /// pages behind it, from where the reads' last release stopped (or from before
    /// `start`, for a read of something read before), once that is `READ_RELEASE_STEP`
    /// or more, or when the read went through to the segment's end. Reads go forward (a
    /// replay, a spill read-back), and what they passed need not stay mapped: a replayed
    /// backlog would otherwise sit in the process's memory until its segment is deleted.
    /// (Each release interrupts every other core running the process, the producers'
    /// included: hence a step of a megabyte, not a page.)
    ///
    /// The kernel maps pages in around a fault, in aligned windows of up to
    /// `FAULT_AROUND` bytes, so a read may have mapped pages before `start` too; those
    /// were published long ago, and releasing them is harmless.
    pub(super) fn release_read(&self, start: u64, pos: u64, read_to_the_end: bool) {
        let released = self.read_released.load(Ordering::Acquire);
        let from = released.min(start / FAULT_AROUND * FAULT_AROUND);
        if pos >= from + READ_RELEASE_STEP || (read_to_the_end && pos > from) {
            let upto = self.file.release(from, pos - from);
            self.read_released.store(upto, Ordering::Release);
        } else if from < released {
            // Reading again what was released: count the step from here.
            self.read_released.store(from, Ordering::Release);
        }
    }

    /// The indexed frame (offset, sequence number) a search for `seq` starts from.
    pub(super) fn index_before(&self, seq: u64) -> (u64, u64) {
        let index = self.index.lock();
        match index.partition_point(|&(s, _)| s <= seq) {
            0 => (SEGMENT_HEADER_LEN as u64, self.first_seq),
            i => (index[i - 1].1, index[i - 1].0),
        }
    }

    /// Offset of the first frame with a sequence number `>= seq` (or of the data end).
    pub(super) fn locate(&self, seq: u64) -> u64 {
        self.locate_expecting(seq).0
    }

    /// Offset of the first frame with a sequence number `>= seq` (or of the data end, or
    /// of damage met on the way), and the sequence number expected there.
    pub(super) fn locate_expecting(&self, seq: u64) -> (u64, u64) {
        let (_, pos, expect) = self.locate_walking(seq);
        (pos, expect)
    }

    /// As [`locate_expecting`](Segment::locate_expecting), with the offset the walk to
    /// it began at first (the last read's stop, or the sparse index entry before `seq`).
    pub(super) fn locate_walking(&self, seq: u64) -> (u64, u64, u64) {
        let (mut pos, mut expect) = self.index_before(seq);
        let (hint_seq, hint_pos) = *self.read_hint.lock();
        if hint_seq <= seq && hint_seq > expect {
            (pos, expect) = (hint_pos, hint_seq);
        }
        let began = pos;
        let end = self.file.published();
        while pos < end {
            let frame = self.file.read_with(pos, (end - pos) as usize, |b| {
                decode_frame(b, self.salt, self.max_len)
            });
            match frame {
                Frame::Record { seq: s, len, .. } if s == expect && s < seq => {
                    pos += FRAME_HEADER_LEN as u64 + len as u64;
                    expect += 1;
                }
                _ => break,
            }
        }
        (began, pos, expect)
    }
}

pub(super) struct Writer<F: Fs> {
    pub(super) next_seq: u64,
    /// `None` when no segment could be created (a full disk at open): the next append
    /// tries again.
    pub(super) active: Option<Arc<Segment<F>>>,
    /// Where the next frame goes in the active segment.
    pub(super) pos: u64,
    /// Numbers below this are reserved by a synced checkpoint and may be handed out;
    /// the append that reaches it reserves the next block first (`LogState::reserve`).
    pub(super) reserved: u64,
}

impl<F: Fs> Writer<F> {
    /// Whether a frame of `frame_len` bytes fits in the active segment.
    pub(super) fn fits(&self, frame_len: u64) -> bool {
        self.active
            .as_ref()
            .is_some_and(|a| self.pos + frame_len <= a.file.len())
    }
}
