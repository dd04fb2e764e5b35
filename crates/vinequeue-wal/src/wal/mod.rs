//! [`Wal`]: the segmented log, its recovery, group commit, acknowledgement and reclaim.

use crossbeam_utils::CachePadded;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex, RwLock};
use vinequeue_storage::{Error, RecoveryMode, RecoveryReport, Storage, SyncMode};

use crate::format::{
    decode_frame, frame_header, parse_segment_name, segment_name, Checkpoint, Frame, SegmentHeader,
    CHECKPOINT_LEN, FRAME_HEADER_LEN, MAX_CHECKPOINT_RANGES, MAX_SEQ, SEGMENT_HEADER_LEN,
};
use crate::fs::{Fs, FsFile, RealFs};
use crate::options::WalOptions;

mod group_commit;
mod recovery;
mod scan;

use group_commit::GroupCommit;

use recovery::Recovery;
use scan::{Frames, Reader, OUT_OF_SEQUENCE};

/// A sparse index entry every this many records of a segment.
const INDEX_EVERY: u64 = 256;
const CHECKPOINT: &str = "checkpoint";
const CHECKPOINT_TMP: &str = "checkpoint.tmp";
const DAMAGED: &str = "damaged";

struct Segment<F: Fs> {
    first_seq: u64,
    path: PathBuf,
    salt: u64,
    file: F::File,
    /// Sequence number of the last record (`first_seq - 1` while empty). Written for
    /// every append: on a cache line of its own, away from the fields readers use.
    last_seq: CachePadded<AtomicU64>,
    /// Bytes below this offset are durable.
    synced_end: AtomicU64,
    /// Bytes below this offset (published) were released from the mapping (by syncs and
    /// the prefetch thread, behind the writer).
    released_end: AtomicU64,
    /// Where reads release the pages behind them from (see [`Segment::release_read`]).
    read_released: AtomicU64,
    /// Where the last read in this segment stopped: the number it expected next and the
    /// offset of the frame that should hold it. A read that goes on from there (the
    /// queue's replay and spill read-back do, in pieces as small as one record) starts
    /// there, not at the sparse index entry before it, up to 255 frames back.
    read_hint: Mutex<(u64, u64)>,
    /// `(seq, offset)` of every `INDEX_EVERY`-th record, ascending.
    index: Mutex<Vec<(u64, u64)>>,
    /// The write-backs the prefetch thread starts in this file
    /// (`FsFile::start_writeback`). One that fails as it starts
    /// may have dropped its range's dirty pages without leaving the error for the next
    /// sync to report: a sync of the segment with anything new to write looks here
    /// after its own call (`write_back_error`), waiting for a call under way over its
    /// range, and fails the log if an error is stored.
    write_backs: Mutex<WriteBacks>,
    /// Signalled when a write-back call ends.
    write_back_done: Condvar,
    /// Longest payload a frame of this segment is believed to have: what fits in the
    /// file as it was created ([`record_limit`]). Not the `max_record_size` in effect, which
    /// limits new appends only: a log reopened with lower limits still reads the larger
    /// records written before.
    max_len: u32,
}

/// The write-back calls of the prefetch thread in one segment: the range of the one
/// running, and the first error not yet reported.
#[derive(Debug, Default)]
struct WriteBacks {
    running: Option<(u64, u64)>,
    error: Option<io::Error>,
}

impl<F: Fs> Segment<F> {
    /// Starts the write-back of `offset..offset + len` (on the prefetch thread),
    /// storing its error for the next sync (`write_backs`).
    fn start_writeback(&self, offset: u64, len: u64) {
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
    fn write_back_error(&self, from: u64, end: u64) -> Option<io::Error> {
        let mut wb = self.write_backs.lock();
        while wb.running.is_some_and(|(lo, hi)| lo < end && from < hi) {
            self.write_back_done.wait(&mut wb);
        }
        wb.error.take()
    }
}

/// Longest payload a frame can have in a segment file of `file_len` bytes. A longer
/// length field is damage, never trusted: the frame could not fit.
fn record_limit(file_len: u64) -> u32 {
    let fits = file_len.saturating_sub((SEGMENT_HEADER_LEN + FRAME_HEADER_LEN) as u64);
    u32::try_from(fits).unwrap_or(u32::MAX)
}

/// The number after `seq`, never beyond `MAX_SEQ` (numbers read from disk may be as high
/// as `MAX_SEQ`; the log hands out numbers below it only, see `Inner::append`).
fn after(seq: u64) -> u64 {
    seq.saturating_add(1).min(MAX_SEQ)
}

impl<F: Fs> Segment<F> {
    /// Drops this process's mapping of the whole published pages below `end` not
    /// released yet (their bytes stay in the page cache and the file; a later read maps
    /// them in again).
    fn release_below(&self, end: u64) {
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
    fn release_read(&self, start: u64, pos: u64, read_to_the_end: bool) {
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
    fn index_before(&self, seq: u64) -> (u64, u64) {
        let index = self.index.lock();
        match index.partition_point(|&(s, _)| s <= seq) {
            0 => (SEGMENT_HEADER_LEN as u64, self.first_seq),
            i => (index[i - 1].1, index[i - 1].0),
        }
    }

    /// Offset of the first frame with a sequence number `>= seq` (or of the data end).
    fn locate(&self, seq: u64) -> u64 {
        self.locate_expecting(seq).0
    }

    /// Offset of the first frame with a sequence number `>= seq` (or of the data end, or
    /// of damage met on the way), and the sequence number expected there.
    fn locate_expecting(&self, seq: u64) -> (u64, u64) {
        let (_, pos, expect) = self.locate_walking(seq);
        (pos, expect)
    }

    /// As [`locate_expecting`](Segment::locate_expecting), with the offset the walk to
    /// it began at first (the last read's stop, or the sparse index entry before `seq`).
    fn locate_walking(&self, seq: u64) -> (u64, u64, u64) {
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
                Frame::Record { seq: s, len } if s == expect && s < seq => {
                    pos += FRAME_HEADER_LEN as u64 + len as u64;
                    expect += 1;
                }
                _ => break,
            }
        }
        (began, pos, expect)
    }
}

struct Writer<F: Fs> {
    next_seq: u64,
    /// `None` when no segment could be created (a full disk at open): the next append
    /// tries again.
    active: Option<Arc<Segment<F>>>,
    /// Where the next frame goes in the active segment.
    pos: u64,
    /// Numbers below this are reserved by a synced checkpoint and may be handed out;
    /// the append that reaches it reserves the next block first (`Inner::reserve`).
    reserved: u64,
}

impl<F: Fs> Writer<F> {
    /// Whether a frame of `frame_len` bytes fits in the active segment.
    fn fits(&self, frame_len: u64) -> bool {
        self.active
            .as_ref()
            .is_some_and(|a| self.pos + frame_len <= a.file.len())
    }
}

#[derive(Default)]
struct Acks {
    /// Every number up to here is acknowledged, or holds no record.
    through: u64,
    /// Ranges above `through` that are acknowledged or hold no record (numbers recovery
    /// found no record for, records reads found damaged): start -> end (inclusive),
    /// disjoint and never adjacent. Right after open a range may start at `through + 1`:
    /// the mark moves over it with the next acknowledgement ([`Acks::add`]), so that the
    /// mark a log reports at open is the one its checkpoint holds.
    above: BTreeMap<u64, u64>,
    /// `through` as last persisted in the checkpoint.
    checkpointed: u64,
    /// Bumped by every acknowledgement that leaves `above` changed (one that only moves
    /// the mark over an empty `above` does not): the checkpoint holds the lowest ranges
    /// of `above`, so that out-of-order acknowledgements survive a restart.
    above_version: u64,
    /// `above_version` as last persisted in the checkpoint.
    above_checkpointed: u64,
}

impl Acks {
    /// Acknowledges `lo..=hi`, and moves the mark over every range that now reaches it.
    fn add(&mut self, lo: u64, hi: u64) {
        let had_ranges = !self.above.is_empty();
        self.insert(lo, hi);
        while let Some((&s, &e)) = self.above.first_key_value() {
            if s > self.through + 1 {
                break;
            }
            self.above.remove(&s);
            self.through = self.through.max(e);
        }
        if had_ranges || !self.above.is_empty() {
            self.above_version += 1;
        }
    }

    /// Whether the checkpoint lags behind the mark or the ranges above it.
    fn changed(&self) -> bool {
        self.through > self.checkpointed || self.above_version != self.above_checkpointed
    }

    /// The lowest ranges above the mark, as many as a checkpoint holds.
    fn ranges_to_keep(&self) -> Vec<(u64, u64)> {
        self.above
            .iter()
            .take(MAX_CHECKPOINT_RANGES)
            .map(|(&lo, &hi)| (lo, hi))
            .collect()
    }

    /// The ranges above the mark that end at or after `from` (at most `max`), ascending.
    fn ranges_from(&self, from: u64, max: usize) -> Vec<(u64, u64)> {
        if self.above.is_empty() {
            return Vec::new();
        }
        let first = self.above.range(..=from).next_back();
        first
            .into_iter()
            .chain(self.above.range(from.saturating_add(1)..))
            .filter(|(_, &hi)| hi >= from)
            .take(max)
            .map(|(&lo, &hi)| (lo, hi))
            .collect()
    }

    /// Whether `seq` is acknowledged (or holds no record).
    fn covers(&self, seq: u64) -> bool {
        seq <= self.through
            || self
                .above
                .range(..=seq)
                .next_back()
                .is_some_and(|(_, &end)| seq <= end)
    }

    /// Records `lo..=hi` as acknowledged without moving the mark: merged with the ranges
    /// it overlaps or touches, in time logarithmic in the number of ranges (plus those
    /// merged), however long the range.
    fn insert(&mut self, lo: u64, hi: u64) {
        let (mut lo, mut hi) = (lo.max(self.through + 1), hi);
        if lo > hi {
            return;
        }
        // The ranges overlapping or touching `lo..=hi` are consecutive: walk back from the
        // last one starting at or before `hi + 1` while they reach `lo - 1` (the ranges
        // are disjoint, so their ends ascend with their starts).
        while let Some((&s, &e)) = self.above.range(..=hi.saturating_add(1)).next_back() {
            if e.saturating_add(1) < lo {
                break;
            }
            self.above.remove(&s);
            lo = lo.min(s);
            hi = hi.max(e);
        }
        self.above.insert(lo, hi);
    }
}

/// Most ranges of acknowledged records one read steps over (beyond them, records already
/// acknowledged may be handed out again, which the contract allows).
const READ_SKIP_RANGES: usize = 1024;

/// Bytes of a segment mapped in ahead of the writer at once.
const PREPARE_CHUNK: u64 = 1 << 20;

/// A page of memory (and of the page cache).
const PAGE: u64 = 4096;

/// Bytes a read passes before it releases the pages behind it (`Segment::release_read`).
const READ_RELEASE_STEP: u64 = 1 << 20;

/// The kernel's `fault_around_bytes` default: a fault on a file mapping maps in the
/// pages of the page cache around it, in an aligned window of up to this many bytes.
const FAULT_AROUND: u64 = 64 << 10;

/// Bytes the prefetch thread maps in per call.
const PREFETCH_PIECE: u64 = 256 << 10;

/// Maps chunks of the active segment in ahead of the writer (and, under `Periodic`,
/// unmaps those it has filled and starts writing them back), on a thread of its own
/// (started by the first request): populating a chunk costs as much as writing the records that
/// fill it, and paid inside `append` it would be paid by a producer, with a stall of a
/// few hundred microseconds once per chunk.
struct Prefetch<F: Fs> {
    state: Mutex<PrefetchState<F>>,
}

/// Work for the prefetch thread in a segment, each range `(offset, len)`: one to map in
/// (and, under `Immediate`, to write ahead: its zeros written back), and (`Periodic`
/// mode) one filled and published, to unmap and start writing back.
struct PrefetchRequest<F: Fs> {
    seg: Arc<Segment<F>>,
    map_in: (u64, u64),
    write_ahead: bool,
    behind: Option<(u64, u64)>,
}

struct PrefetchState<F: Fs> {
    requests: Option<std::sync::mpsc::SyncSender<PrefetchRequest<F>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The log is closing, or the thread could not be started: no (new) thread.
    closed: bool,
}

impl<F: Fs> Prefetch<F> {
    fn new() -> Self {
        Prefetch {
            state: Mutex::new(PrefetchState {
                requests: None,
                thread: None,
                closed: false,
            }),
        }
    }

    /// Asks for `map_in` (`(offset, len)`) of `seg` to be mapped in soon (then written
    /// ahead if `write_ahead`), and for `behind` to be unmapped and its write-back
    /// started.
    fn request(
        &self,
        seg: Arc<Segment<F>>,
        map_in: (u64, u64),
        write_ahead: bool,
        behind: Option<(u64, u64)>,
    ) {
        let mut st = self.state.lock();
        if st.requests.is_none() && !st.closed {
            // Room for a few requests: a thread that falls further behind than that is
            // skipped, and the writer faults the pages in itself.
            let (tx, rx) = std::sync::mpsc::sync_channel::<PrefetchRequest<F>>(4);
            let spawned = std::thread::Builder::new()
                .name("vinequeue-wal-prefetch".into())
                .spawn(move || {
                    // A normal thread (an idle-class one, preempted while the kernel
                    // holds the mapping's lock for it, could stall every thread that
                    // faults or maps behind it), mapping in a piece at a time so that it
                    // holds that lock only briefly.
                    for req in rx {
                        if let Some((offset, len)) = req.behind {
                            // Unmapped first, so that the write-back finds no mapping
                            // to write-protect; from where the last release stopped,
                            // so that a request dropped when this thread fell behind
                            // leaves no chunk mapped.
                            let from = req.seg.released_end.load(Ordering::Acquire).min(offset);
                            let upto = req.seg.file.release(from, offset + len - from);
                            req.seg.released_end.fetch_max(upto, Ordering::AcqRel);
                            req.seg.start_writeback(offset, len);
                        }
                        let (offset, len) = req.map_in;
                        let end = offset + len;
                        let mut at = offset;
                        while at < end {
                            let piece = PREFETCH_PIECE.min(end - at);
                            req.seg.file.prepare(at, piece);
                            at += piece;
                        }
                        // Only whole pages past what the writer has published: a thread
                        // that fell behind leaves the pages of published records alone.
                        let from = offset.max(req.seg.file.published().next_multiple_of(PAGE));
                        if req.write_ahead && from < end {
                            req.seg.start_writeback(from, end - from);
                        }
                    }
                });
            match spawned {
                Ok(handle) => {
                    st.requests = Some(tx);
                    st.thread = Some(handle);
                }
                // Only hints: without the thread, the writes fault the pages in
                // themselves (and are not tried again at every chunk).
                Err(_) => st.closed = true,
            }
        }
        if let Some(tx) = &st.requests {
            // Full: the thread is behind; disconnected: it is gone. Either way the
            // writes fault the pages in as they reach them (and the next request, or a
            // sync, unmaps what this one would have).
            let _ = tx.try_send(PrefetchRequest {
                seg,
                map_in,
                write_ahead,
                behind,
            });
        }
    }

    /// Stops the thread, after the requests it holds.
    fn close(&self) {
        let thread = {
            let mut st = self.state.lock();
            st.closed = true;
            st.requests = None;
            st.thread.take()
        };
        if let Some(h) = thread {
            let _ = h.join();
        }
    }
}

/// Deletes acknowledged segments on a thread of the log's own
/// ([`WalOptions::background_reclaim`]), so that an acknowledgement does not wait for the
/// checkpoint write, the unlink and the directory sync.
struct Reclaimer {
    state: Mutex<ReclaimState>,
    /// Wakes the thread (work, or closing) and those waiting for it to finish.
    cond: Condvar,
    /// The thread runs: acknowledgements hand deletions to it.
    running: AtomicBool,
}

struct ReclaimState {
    /// A reclaim was asked for since the thread last started one.
    wanted: bool,
    /// The thread is reclaiming.
    busy: bool,
    /// The log is closing: the thread does what was asked, then exits.
    closed: bool,
    /// An `append` waited `RECLAIM_WAIT` for the reclaim under way in vain: later
    /// appends do not wait for it (each would, one after another, behind the queue's
    /// append lock) until it ends.
    stalled: bool,
    /// The last background reclaim failed with this; the next acknowledgement reports it.
    error: Option<Error>,
    /// The acknowledgement mark or the synced frontier moved since the checkpoint was
    /// written: the thread persists them once `WalOptions::checkpoint_interval` has
    /// passed since that write.
    stale: bool,
    /// Under `Os`: segments were sealed that the thread is to sync (`Inner::sealed`).
    seals: bool,
}

/// Longest an `append` that finds the log full waits for a deletion under way (which
/// takes milliseconds, unless the disk is in trouble).
const RECLAIM_WAIT: Duration = Duration::from_secs(1);

impl Reclaimer {
    fn new() -> Self {
        Reclaimer {
            state: Mutex::new(ReclaimState {
                wanted: false,
                busy: false,
                closed: false,
                stalled: false,
                error: None,
                stale: false,
                seals: false,
            }),
            cond: Condvar::new(),
            running: AtomicBool::new(false),
        }
    }

    fn request(&self) {
        let mut st = self.state.lock();
        if !st.wanted {
            st.wanted = true;
            self.cond.notify_all();
        }
    }

    /// Under `Os`: a segment was sealed; have it synced.
    fn sealed(&self) {
        let mut st = self.state.lock();
        st.seals = true;
        self.cond.notify_all();
    }

    /// The acknowledgement mark or the synced frontier moved: have them persisted in
    /// time.
    fn checkpoint_stale(&self) {
        let mut st = self.state.lock();
        if !st.stale {
            st.stale = true;
            self.cond.notify_all();
        }
    }

    /// Whether a reclaim is asked for or running, and worth waiting for (not one an
    /// `append` already waited for in vain).
    fn pending(&self) -> bool {
        let st = self.state.lock();
        (st.wanted || st.busy) && !st.stalled
    }

    /// Waits until no reclaim is asked for or running (or `RECLAIM_WAIT` has passed:
    /// then the reclaim under way counts as stalled until it ends).
    fn wait_idle(&self) {
        let deadline = Instant::now() + RECLAIM_WAIT;
        let mut st = self.state.lock();
        while (st.wanted || st.busy) && self.running.load(Ordering::Acquire) {
            if self.cond.wait_until(&mut st, deadline).timed_out() {
                st.stalled = true;
                return;
            }
        }
    }

    fn take_error(&self) -> Option<Error> {
        self.state.lock().error.take()
    }

    /// Stops the thread after the reclaim asked for, if any, and waits for it.
    fn close(&self, thread: Option<JoinHandle<()>>) {
        self.state.lock().closed = true;
        self.cond.notify_all();
        if let Some(h) = thread {
            let _ = h.join();
        }
        self.running.store(false, Ordering::Release);
    }
}

struct Inner<F: Fs> {
    fs: F,
    dir: PathBuf,
    opts: WalOptions,
    segment_size: u64,
    max_record: u32,
    _lock: F::Lock,
    // The writer's fields (written for every append) and those of readers, syncers and
    // acknowledgements sit on cache lines of their own, so that an append does not pull
    // a line that another core is reading at every record.
    writer: CachePadded<Mutex<Writer<F>>>,
    next_seq: CachePadded<AtomicU64>,
    segments: CachePadded<RwLock<Vec<Arc<Segment<F>>>>>,
    acks: CachePadded<Mutex<Acks>>,
    /// The checkpoint file as last written; held while writing it.
    checkpoint: Mutex<CheckpointState>,
    /// When the checkpoint was last written, in milliseconds since `opened`.
    checkpointed_at: AtomicU64,
    /// The synced frontier (`GroupCommit::synced`) the checkpoint holds.
    checkpointed_synced: AtomicU64,
    opened: Instant,
    /// Held by the one `reclaim` running: it decides which segments go and deletes them
    /// while no other reclaim can delete any of them, or change the list meanwhile.
    reclaiming: Mutex<()>,
    /// Held around every sync of a segment, until its failure (if it failed) is recorded.
    /// The kernel reports a failed write-back once, to whichever sync comes first, and
    /// then marks the lost pages clean: without this, a second sync of the same range
    /// (a group commit racing the sync of a full segment) could succeed, and return `Ok`
    /// to its callers, between the first one's error and the log's failed state.
    syncing: Mutex<()>,
    sync: CachePadded<GroupCommit>,
    prefetch: Prefetch<F>,
    reclaimer: Reclaimer,
    /// Under `Os`: segments sealed and not synced yet, for the reclaim thread to sync.
    sealed: Mutex<Vec<Arc<Segment<F>>>>,
    /// `first_seq` of the active segment (0 while there is none): every other listed
    /// segment is sealed.
    active_first: AtomicU64,
    failed: Mutex<Option<String>>,
    has_failed: AtomicBool,
    /// Bytes of segment files plus the checkpoint.
    size: AtomicU64,
    report: RecoveryReport,
    /// Records found damaged by reads after open.
    read_corrupt: AtomicU64,
    stop: Mutex<bool>,
    stop_cond: Condvar,
}

/// The checkpoint file as last written.
struct CheckpointState {
    /// Generation of the current slot (0 while there is no file).
    generation: u64,
    /// Its `next_seq`: no number at or above it has been handed out, so every number
    /// below it may have been (and is never handed out again).
    reserved: u64,
    /// Length of the file (0 while there is none; a version 1 file is replaced whole
    /// at the first write).
    file_len: u64,
}

/// What a checkpoint write does with the numbers reserved ahead.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Numbers {
    /// Keeps the reservation as it is.
    Keep,
    /// Reserves every number below this one.
    Reserve(u64),
    /// Gives back what is reserved and unused (closing: no append comes after).
    Release,
}

/// A write-ahead log in a directory: mmap'd, preallocated segment files of CRC32C-framed
/// records, implementing [`Storage`].
///
/// ```
/// use vinequeue_storage::Storage;
/// use vinequeue_wal::{Wal, WalOptions};
///
/// let dir = tempfile::tempdir()?;
/// let wal = Wal::open(dir.path(), WalOptions::default())?;
/// let seq = wal.append(b"first record")?;
/// wal.sync_through(seq)?;
/// wal.read(1, 10, &mut |seq, bytes| {
///     assert_eq!((seq, bytes), (1, &b"first record"[..]));
///     true
/// })?;
/// wal.ack(seq)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Wal<F: Fs = RealFs> {
    inner: Arc<Inner<F>>,
    syncer: Option<JoinHandle<()>>,
    reclaimer: Option<JoinHandle<()>>,
}

impl Wal<RealFs> {
    /// Opens (creating if needed) the log in `dir`, recovering what is there.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for bad options, [`Error::Locked`] if another log holds the
    /// directory, [`Error::Corrupt`] under [`RecoveryMode::Strict`], [`Error::Io`].
    pub fn open(dir: impl AsRef<Path>, opts: WalOptions) -> Result<Self, Error> {
        Self::open_with(RealFs, dir, opts)
    }
}

/// Whether `e` (from rolling to a new segment) could go away once acknowledged segments
/// are deleted: the log's size limit, or a full disk.
fn frees_up(e: &Error) -> bool {
    match e {
        Error::LogFull { .. } => true,
        Error::Io(io) => io.kind() == io::ErrorKind::StorageFull,
        _ => false,
    }
}

fn io_err(e: io::Error) -> Error {
    Error::Io(e)
}

fn random_salt() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

impl<F: Fs> Wal<F> {
    /// Opens the log in `dir` on the file system `fs` (the simulated one in tests).
    ///
    /// # Errors
    ///
    /// As [`Wal::open`].
    pub fn open_with(fs: F, dir: impl AsRef<Path>, opts: WalOptions) -> Result<Self, Error> {
        opts.validate()?;
        let dir = dir.as_ref().to_path_buf();
        if let Some(mode) = fs.dir_mode(&dir).map_err(io_err)? {
            if mode & 0o022 != 0 && !opts.allow_shared_directory {
                return Err(Error::Config(format!(
                    "wal_path: {} has mode {mode:04o}: other users can write to it and \
                     plant files or links the log would read or write; make it 0700 \
                     (chmod go-w), or allow it with WalOptions::allow_shared_directory",
                    dir.display()
                )));
            }
        }
        fs.create_dir_all(&dir).map_err(io_err)?;
        let lock = fs
            .try_lock(&dir)
            .map_err(io_err)?
            .ok_or_else(|| Error::Locked(dir.clone()))?;
        let recovered = Recovery::run(&fs, &dir, &opts)?;
        let segment_size = opts.effective_segment_size();
        let max_record = opts.effective_max_record_size();
        let Recovery {
            segments,
            checkpoint,
            mut report,
            next_seq,
            size,
            checkpoint_len,
            no_record,
        } = recovered;
        let has_checkpoint = checkpoint_len > 0;
        report.next_seq = next_seq;
        report.acked_through = checkpoint.acked_through;
        // Numbers that hold no record will never be delivered, so never acknowledged by
        // anyone: the log counts them as acknowledged, or they would hold the mark (and
        // with it every later segment) back for good.
        let mut acks = Acks {
            through: checkpoint.acked_through,
            above: BTreeMap::new(),
            checkpointed: checkpoint.acked_through,
            above_version: 0,
            above_checkpointed: 0,
        };
        // Acknowledged out of order before the restart (numbers since handed out to
        // nobody: recovery never lowers `next_seq` below the checkpoint's).
        for &(lo, hi) in &checkpoint.acked_above {
            acks.insert(lo, hi.min(next_seq - 1));
        }
        for (lo, hi) in no_record {
            acks.insert(lo, hi);
        }

        // A full disk must not keep the log from opening: what is in it can still be read
        // and acknowledged, which frees space; appends create the segment later.
        let active = match create_segment(&fs, &dir, next_seq, segment_size, opts.sync_mode) {
            Ok(seg) => {
                fs.sync_dir(&dir).map_err(io_err)?;
                Some(seg)
            }
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::StorageFull => None,
            Err(e) => return Err(e),
        };
        let active_first = active.as_ref().map_or(0, |a| a.first_seq);
        let mut all = segments;
        all.extend(active.iter().cloned());
        let size = size + if active.is_some() { segment_size } else { 0 } + checkpoint_len;
        // What the checkpoint found reserves (nothing without one): the first append
        // beyond it reserves more.
        let reserved = if has_checkpoint {
            checkpoint.next_seq
        } else {
            0
        };
        let inner = Arc::new(Inner {
            writer: CachePadded::new(Mutex::new(Writer {
                next_seq,
                active,
                pos: SEGMENT_HEADER_LEN as u64,
                reserved,
            })),
            next_seq: CachePadded::new(AtomicU64::new(next_seq)),
            segments: CachePadded::new(RwLock::new(all)),
            acks: CachePadded::new(Mutex::new(acks)),
            checkpoint: Mutex::new(CheckpointState {
                generation: checkpoint.generation,
                reserved,
                file_len: checkpoint_len,
            }),
            checkpointed_synced: AtomicU64::new(checkpoint.synced_through),
            checkpointed_at: AtomicU64::new(0),
            opened: Instant::now(),
            reclaiming: Mutex::new(()),
            syncing: Mutex::new(()),
            sync: CachePadded::new(GroupCommit::new(next_seq - 1)),
            prefetch: Prefetch::new(),
            reclaimer: Reclaimer::new(),
            sealed: Mutex::new(Vec::new()),
            active_first: AtomicU64::new(active_first),
            failed: Mutex::new(None),
            has_failed: AtomicBool::new(false),
            size: AtomicU64::new(size),
            report,
            read_corrupt: AtomicU64::new(0),
            stop: Mutex::new(false),
            stop_cond: Condvar::new(),
            fs,
            dir,
            segment_size,
            max_record,
            opts,
            _lock: lock,
        });
        if checkpoint_len != CHECKPOINT_LEN as u64 {
            // None yet, or one of version 1. Best effort: on a full disk the first
            // append or acknowledgement tries again.
            let _ = inner.write_checkpoint(Numbers::Keep);
        }
        let syncer = match inner.opts.sync_mode {
            SyncMode::Periodic(period) => {
                let inner = Arc::clone(&inner);
                Some(
                    std::thread::Builder::new()
                        .name("vinequeue-wal-sync".into())
                        .spawn(move || inner.periodic(period))
                        .map_err(io_err)?,
                )
            }
            _ => None,
        };
        // Without the thread (it could not start), acknowledgements reclaim inline.
        let reclaimer = if inner.opts.background_reclaim {
            let worker = Arc::clone(&inner);
            let spawned = std::thread::Builder::new()
                .name("vinequeue-wal-reclaim".into())
                .spawn(move || worker.reclaim_loop());
            spawned
                .ok()
                .inspect(|_| inner.reclaimer.running.store(true, Ordering::Release))
        } else {
            None
        };
        Ok(Wal {
            inner,
            syncer,
            reclaimer,
        })
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Records found damaged by reads after open (and skipped, under `SkipCorrupt`).
    pub fn corrupt_records_read(&self) -> u64 {
        self.inner.read_corrupt.load(Ordering::Relaxed)
    }

    /// Whether a failed sync has put the log in its failed state.
    pub fn is_failed(&self) -> bool {
        self.inner.has_failed.load(Ordering::Acquire)
    }

    /// Deletes, now and on this thread, the sealed segments whose records are all
    /// acknowledged, once the log's own thread has finished the deletion it has under
    /// way, if any: afterwards [`size`](Storage::size) is what the log's files hold.
    /// With [`WalOptions::background_reclaim`] (the default) acknowledgements leave this
    /// to the log's thread; call it to have the space back before going on.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the checkpoint cannot be written or a file cannot be deleted
    /// (what could not be deleted stays, and is tried again later).
    pub fn reclaim(&self) -> Result<(), Error> {
        // A deletion the log's thread has under way (or was asked for) first.
        self.inner.reclaimer.wait_idle();
        // An earlier background failure is superseded by this attempt's outcome.
        let _ = self.inner.reclaimer.take_error();
        self.inner.reclaim()
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.inner.segments.read().len()
    }
}

impl<F: Fs> Drop for Wal<F> {
    fn drop(&mut self) {
        *self.inner.stop.lock() = true;
        self.inner.stop_cond.notify_all();
        if let Some(h) = self.syncer.take() {
            let _ = h.join();
        }
        self.inner.prefetch.close();
        self.inner.reclaimer.close(self.reclaimer.take());
        if !self.inner.has_failed.load(Ordering::Acquire) {
            let synced = self.inner.opts.sync_mode == SyncMode::Os
                || self
                    .inner
                    .sync_all_appended()
                    .map(|upto| self.inner.sync.advance(upto))
                    .is_ok();
            if synced {
                // No append comes after this: the numbers reserved and not used go back,
                // so that a clean close leaves no gap in the numbering.
                let _ = self.inner.close_checkpoint();
            }
        }
    }
}

fn create_segment<F: Fs>(
    fs: &F,
    dir: &Path,
    first_seq: u64,
    segment_size: u64,
    sync_mode: SyncMode,
) -> Result<Arc<Segment<F>>, Error> {
    let path = dir.join(segment_name(first_seq));
    let file = fs.create(&path, segment_size).map_err(io_err)?;
    if sync_mode == SyncMode::Immediate {
        // Group commits sync a few KiB at a time (until the segment is sealed).
        file.expect_small_syncs(true);
    }
    let salt = random_salt();
    let header = SegmentHeader { first_seq, salt }.encode();
    file.write_publish(0, &[&header]);
    Ok(Arc::new(Segment {
        first_seq,
        path,
        salt,
        file,
        last_seq: CachePadded::new(AtomicU64::new(first_seq - 1)),
        synced_end: AtomicU64::new(0),
        released_end: AtomicU64::new(0),
        read_released: AtomicU64::new(0),
        read_hint: Mutex::new((0, 0)),
        index: Mutex::new(Vec::new()),
        write_backs: Mutex::new(WriteBacks::default()),
        write_back_done: Condvar::new(),
        max_len: record_limit(segment_size),
    }))
}

impl<F: Fs> Inner<F> {
    fn check_failed(&self) -> Result<(), Error> {
        if self.has_failed.load(Ordering::Acquire) {
            let why = self.failed.lock().clone().unwrap_or_default();
            return Err(Error::LogFailed(why));
        }
        Ok(())
    }

    fn fail(&self, what: &str, e: &io::Error) -> Error {
        let why = format!("{what} failed: {e}");
        let mut failed = self.failed.lock();
        if failed.is_none() {
            *failed = Some(why.clone());
        }
        self.has_failed.store(true, Ordering::Release);
        Error::LogFailed(failed.clone().unwrap_or(why))
    }

    fn append(&self, record: &[u8]) -> Result<u64, Error> {
        self.check_failed()?;
        if record.len() > self.max_record as usize {
            return Err(Error::RecordTooLarge {
                len: record.len() as u64,
                limit: self.max_record as u64,
            });
        }
        let len = record.len() as u32;
        let payload_crc = crc32c::crc32c(record); // outside the lock
        let frame_len = FRAME_HEADER_LEN as u64 + len as u64;
        let mut w = self.writer.lock();
        if !w.fits(frame_len) {
            match self.roll(&mut w) {
                Ok(()) => {}
                // Space acknowledgements freed may be on its way, or not asked for yet:
                // have it deleted (which needs the writer's lock), then look again.
                Err(e) if frees_up(&e) && self.reclaim_pending_or_due() => {
                    drop(w);
                    if self.reclaimer.running.load(Ordering::Acquire) {
                        self.reclaimer.wait_idle();
                    } else {
                        // (A failure leaves the space taken: the roll below reports it.)
                        let _ = self.reclaim();
                    }
                    self.check_failed()?;
                    w = self.writer.lock();
                    if !w.fits(frame_len) {
                        self.roll(&mut w)?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let seq = w.next_seq;
        // `MAX_SEQ` itself is never handed out: recovery caps `next_seq` there, also when
        // a (damaged or crafted) frame holds `MAX_SEQ`, whose number must not be reused.
        if seq >= MAX_SEQ {
            return Err(Error::LogFailed(format!(
                "sequence numbers exhausted (next would be {seq}); start a new log directory"
            )));
        }
        if seq >= w.reserved {
            w.reserved = self.reserve(seq)?;
        }
        let seg = w.active.as_ref().expect("roll leaves an active segment");
        let header = frame_header(payload_crc, seg.salt, seq, len);
        seg.file.write_publish(w.pos, &[&header, record]);
        if (seq - seg.first_seq).is_multiple_of(INDEX_EVERY) {
            seg.index.lock().push((seq, w.pos));
        }
        seg.last_seq.store(seq, Ordering::Release);
        let before = w.pos;
        w.pos += frame_len;
        w.next_seq += 1;
        self.next_seq.store(w.next_seq, Ordering::Release);
        if before / PREPARE_CHUNK != w.pos / PREPARE_CHUNK {
            // Entered a new chunk: on the prefetch thread, have the one after it mapped
            // in now, in one call, rather than page by page as records reach it (a page
            // fault per 4 KiB, on the producer's thread). Under `Periodic`, also unmap
            // the chunk just filled and start its write-back: its pages stay in the
            // page cache, dirty until written, and writing back unmapped pages needs no
            // write-protecting them again (which costs an interrupt of every core
            // running this process, per page); and the sync when the segment fills
            // would otherwise write back, inside this append, whatever the last
            // periodic sync left (up to the whole segment, tens of milliseconds). Under
            // `Immediate`, have the next chunk written ahead instead (its zeros written back:
            // group commits that each initialize the blocks they cover write the
            // file's block map too, one more disk write per sync).
            let seg = Arc::clone(w.active.as_ref().expect("still active"));
            let entered = w.pos / PREPARE_CHUNK * PREPARE_CHUNK;
            let start = entered + PREPARE_CHUNK;
            drop(w);
            let filled_at = before / PREPARE_CHUNK * PREPARE_CHUNK;
            // (Only under `Periodic`: under `Immediate` group commits keep the chunk
            // synced as it fills, and `sync_segment` unmaps synced chunks; under `Os`
            // nothing syncs, and unmapping chunks there made appends slower.)
            let behind = matches!(self.opts.sync_mode, SyncMode::Periodic(_))
                .then_some((filled_at, entered - filled_at));
            let len = PREPARE_CHUNK.min(seg.file.len().saturating_sub(start));
            let write_ahead = self.opts.sync_mode == SyncMode::Immediate;
            self.prefetch
                .request(seg, (start, len), write_ahead, behind);
        }
        Ok(seq)
    }

    /// Seals the active segment and starts a new one. Called with the writer locked.
    fn roll(&self, w: &mut Writer<F>) -> Result<(), Error> {
        let size = self.size.load(Ordering::Acquire);
        if size + self.segment_size > self.opts.max_size {
            return Err(Error::LogFull {
                size,
                limit: self.opts.max_size,
            });
        }
        let os = self.opts.sync_mode == SyncMode::Os;
        if let (Some(old), true) = (
            &w.active,
            os && self.reclaimer.running.load(Ordering::Acquire),
        ) {
            // Synced in the background, so that a power cut can tear only the newest
            // segment (damage in a sealed one is corruption, which `Strict` refuses).
            self.sealed.lock().push(Arc::clone(old));
            self.reclaimer.sealed();
        } else if let Some(old) = &w.active {
            self.sync_segment(old, old.file.published(), "syncing a full segment")?;
            if self.opts.sync_mode == SyncMode::Immediate {
                // Sealed: no more small syncs, and reads that miss the page cache (a
                // spill read-back after the pages were evicted) want readahead again.
                old.file.expect_small_syncs(false);
            }
        }
        if let Some(old) = &w.active {
            // Never written again: its descriptor goes (the map keeps the file open for
            // its syncs), so a log of many segments holds one descriptor, not one each.
            old.file.seal();
        }
        let seg = create_segment(
            &self.fs,
            &self.dir,
            w.next_seq,
            self.segment_size,
            self.opts.sync_mode,
        )?;
        if let Err(e) = self.fs.sync_dir(&self.dir) {
            return Err(self.fail("syncing the log directory", &e));
        }
        self.size.fetch_add(self.segment_size, Ordering::AcqRel);
        // Before the segment is listed: a listed segment that is not the one named here
        // is sealed (an acknowledgement racing this roll may ask for a reclaim that
        // finds nothing to delete yet, never miss one).
        self.active_first.store(seg.first_seq, Ordering::Release);
        self.segments.write().push(Arc::clone(&seg));
        // The first two chunks; `append` asks for each next one as the writer enters a
        // chunk.
        // (Not written ahead: the writer starts in the first chunk at once, and a
        // segment that sees few appends, as a dead-letter log's, would have its first
        // two MiB written for nothing. From the third on, each chunk is written ahead
        // when the writer enters the one before it.)
        let len = (2 * PREPARE_CHUNK).min(seg.file.len());
        self.prefetch
            .request(Arc::clone(&seg), (0, len), false, None);
        w.active = Some(seg);
        w.pos = SEGMENT_HEADER_LEN as u64;
        // The segment just sealed may be acknowledged already.
        self.request_reclaim_if_due();
        Ok(())
    }

    /// Syncs every appended byte; returns the last sequence number it covers.
    fn sync_all_appended(&self) -> Result<u64, Error> {
        self.check_failed()?;
        let (upto, active, active_end) = {
            let w = self.writer.lock();
            (w.next_seq - 1, w.active.clone(), w.pos)
        };
        let segments: Vec<Arc<Segment<F>>> = self.segments.read().clone();
        for seg in &segments {
            let end = if active.as_ref().is_some_and(|a| Arc::ptr_eq(seg, a)) {
                active_end
            } else {
                seg.file.published()
            };
            self.sync_segment(seg, end, "sync")?;
        }
        Ok(upto)
    }

    /// Makes `seg` durable up to byte `end`; a failure fails the log.
    ///
    /// Syncs are serialised (`syncing`), and each first checks that no sync before it
    /// failed: a write-back error is reported to one sync only, after which the kernel
    /// takes the lost pages for clean, so a sync that comes after a failed one may
    /// "succeed" over data that is gone. The failure is recorded before the lock is
    /// released, so the next sync sees it.
    fn sync_segment(&self, seg: &Segment<F>, end: u64, what: &str) -> Result<(), Error> {
        let _one = self.syncing.lock();
        self.check_failed()?;
        let from = seg.synced_end.load(Ordering::Acquire);
        if from < end {
            // Unmap the whole pages of the range first (they are published, so never
            // written again): writing back a mapped page write-protects it, with an
            // interrupt of every other core running this process, page by page; one
            // unmapping of the range costs one (`enqueue` x1000 + `sync()`: 0.48x of
            // its baseline before, 0.54x after). The page the writer is still filling
            // stays mapped until a later sync. Their bytes stay in the page cache, dirty
            // until this sync writes them, and the process's memory does not grow with
            // the backlog during a long sink outage.
            seg.release_below(end);
            seg.file
                .sync_range(from, end - from)
                .map_err(|e| self.fail(what, &e))?;
            if let Some(e) = seg.write_back_error(from, end) {
                return Err(self.fail("a write-back started ahead of a sync", &e));
            }
            seg.synced_end.fetch_max(end, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Returns once record `seq` is durable; concurrent callers share one sync (see
    /// `group_commit`).
    fn sync_through(&self, seq: u64) -> Result<(), Error> {
        self.sync.sync_through(seq, self)
    }

    /// Reserves a block of numbers from `seq` on (called by the append that is about
    /// to hand out `seq`, with the writer locked): returns the new end of the
    /// reservation, every number below which may now be handed out.
    ///
    /// A number may reach a sink before its record is synced (the batcher takes it from
    /// the ring right after the append), and sinks deduplicate on it: were the numbering
    /// rebuilt from the records that survived a power cut, a lost record's number would
    /// go to a new item, which such a sink would drop. Recovery starts at the reservation
    /// instead, which is synced before any number in it is used.
    fn reserve(&self, seq: u64) -> Result<u64, Error> {
        let to = seq
            .saturating_add(self.opts.sequence_reservation)
            .min(MAX_SEQ);
        self.write_checkpoint(Numbers::Reserve(to))
    }

    fn checkpoint_if_changed(&self) -> Result<(), Error> {
        if self.acks.lock().changed() {
            self.write_checkpoint(Numbers::Keep)?;
        }
        Ok(())
    }

    /// Persists the mark and the synced frontier if either moved since the last write.
    fn checkpoint_if_stale(&self) -> Result<(), Error> {
        if self.frontier_moved() {
            self.write_checkpoint(Numbers::Keep)?;
            return Ok(());
        }
        self.checkpoint_if_changed()
    }

    /// Whether records were synced beyond the frontier the checkpoint holds.
    fn frontier_moved(&self) -> bool {
        self.sync.synced() > self.checkpointed_synced.load(Ordering::Acquire)
    }

    /// At close: persists the mark and the frontier, and gives back the numbers reserved
    /// and not used.
    fn close_checkpoint(&self) -> Result<(), Error> {
        let unused = self.checkpoint.lock().reserved > self.next_seq.load(Ordering::Acquire);
        let frontier = self.frontier_moved();
        let acks = self.acks.lock();
        if unused || frontier || acks.changed() {
            drop(acks);
            self.write_checkpoint(Numbers::Release)?;
        }
        Ok(())
    }

    /// When the mark, advanced since the checkpoint was written, is to be persisted.
    fn checkpoint_due(&self) -> Instant {
        self.opened
            + Duration::from_millis(self.checkpointed_at.load(Ordering::Relaxed))
            + self.opts.checkpoint_interval
    }

    /// Persists the acknowledgement cursor and the numbers reserved in the checkpoint's
    /// older slot (or creates the file), and syncs it. Returns the `next_seq` written.
    fn write_checkpoint(&self, numbers: Numbers) -> Result<u64, Error> {
        let mut state = self.checkpoint.lock();
        let (through, acked_above, above_version) = {
            let acks = self.acks.lock();
            (acks.through, acks.ranges_to_keep(), acks.above_version)
        };
        let (segment, offset) = {
            let segs = self.segments.read();
            match segs
                .iter()
                .find(|s| s.last_seq.load(Ordering::Acquire) > through)
                .or(segs.last())
            {
                Some(holder) => (holder.first_seq, holder.locate(through + 1)),
                None => (through + 1, SEGMENT_HEADER_LEN as u64),
            }
        };
        let next = self.next_seq.load(Ordering::Acquire).max(through + 1);
        // Read after `next`: never above a number handed out before it.
        let synced = self.sync.synced();
        let cp = Checkpoint {
            generation: state.generation + 1,
            acked_through: through,
            next_seq: match numbers {
                Numbers::Keep => state.reserved.max(next),
                Numbers::Reserve(to) => state.reserved.max(to).max(next),
                Numbers::Release => next,
            },
            segment,
            offset,
            synced_through: synced.min(next - 1),
            acked_above,
        };
        let path = self.dir.join(CHECKPOINT);
        if state.file_len == CHECKPOINT_LEN as u64 {
            let slot = Checkpoint::slot_offset(cp.generation) as u64;
            self.fs
                .overwrite(&path, slot, &cp.encode())
                .map_err(io_err)?;
        } else {
            // Created whole or not at all: written and synced under a temporary name, then
            // renamed. Written in place, a crash part-way would leave an empty or short
            // checkpoint, which `Strict` refuses to open. (A temporary file left by a
            // crash is deleted at recovery.)
            let tmp = self.dir.join(CHECKPOINT_TMP);
            self.fs
                .write_small(&tmp, &cp.encode_file())
                .map_err(io_err)?;
            self.fs.rename(&tmp, &path).map_err(io_err)?;
            self.fs.sync_dir(&self.dir).map_err(io_err)?;
            let len = CHECKPOINT_LEN as u64;
            self.size.fetch_add(len, Ordering::AcqRel);
            self.size.fetch_sub(state.file_len, Ordering::AcqRel);
            state.file_len = len;
        }
        self.checkpointed_synced
            .fetch_max(cp.synced_through, Ordering::AcqRel);
        state.generation = cp.generation;
        state.reserved = cp.next_seq;
        let elapsed = self.opened.elapsed().as_millis();
        self.checkpointed_at.store(
            u64::try_from(elapsed).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let mut acks = self.acks.lock();
        acks.checkpointed = acks.checkpointed.max(through);
        acks.above_checkpointed = above_version;
        Ok(cp.next_seq)
    }

    /// Records the acknowledgements and has the segments they free deleted; reports a
    /// failed deletion (this one's, or, in the background, an earlier one's, once).
    fn ack_ranges(&self, ranges: &[(u64, u64)]) -> Result<(), Error> {
        self.record_acks(ranges)?;
        match self.reclaimer.take_error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// [`ack_ranges`](Self::ack_ranges) without taking a background failure to report
    /// (for acknowledgements the log makes itself, which would swallow it).
    fn record_acks(&self, ranges: &[(u64, u64)]) -> Result<(), Error> {
        let next = self.next_seq.load(Ordering::Acquire);
        let (advanced, changed) = {
            let mut acks = self.acks.lock();
            let (before, version) = (acks.through, acks.above_version);
            for &(lo, hi) in ranges {
                acks.add(lo.max(1), hi.min(next - 1));
            }
            (acks.through > before, acks.above_version != version)
        };
        if !advanced {
            // Out of order, above the mark: nothing to delete, but the checkpoint is to
            // hold the new ranges in time.
            if changed {
                if self.reclaimer.running.load(Ordering::Acquire) {
                    self.reclaimer.checkpoint_stale();
                } else if Instant::now() >= self.checkpoint_due() {
                    self.checkpoint_if_stale()?;
                }
            }
            return Ok(());
        }
        if !self.reclaimer.running.load(Ordering::Acquire) {
            self.reclaim()?;
            // Without the thread, the mark is persisted by the acknowledgements
            // themselves, by the first one that comes an interval after the last write.
            if Instant::now() >= self.checkpoint_due() {
                self.checkpoint_if_stale()?;
            }
            return Ok(());
        }
        self.request_reclaim_if_due();
        self.reclaimer.checkpoint_stale();
        Ok(())
    }

    /// Asks for a reclaim if one would delete something now: for a segment sealed
    /// after the acknowledgements that cover it (no later one may come to ask).
    fn request_reclaim_if_due(&self) {
        if self.reclaimer.running.load(Ordering::Acquire) && self.reclaim_due() {
            self.reclaimer.request();
        }
    }

    /// Whether a background reclaim is asked for or running, asking for one first if
    /// one would delete something now; without the thread, whether one would.
    fn reclaim_pending_or_due(&self) -> bool {
        if !self.reclaimer.running.load(Ordering::Acquire) {
            // Without the thread: whether a reclaim on this thread would delete
            // something (a segment sealed after the acknowledgements that cover it).
            return self.reclaim_due();
        }
        self.request_reclaim_if_due();
        self.reclaimer.pending()
    }

    /// Whether the oldest segment is sealed and all its records are acknowledged: the
    /// cheap test of whether a reclaim would delete anything.
    fn reclaim_due(&self) -> bool {
        let through = self.acks.lock().through;
        let segs = self.segments.read();
        segs.first().is_some_and(|s| {
            s.first_seq != self.active_first.load(Ordering::Acquire)
                && s.last_seq.load(Ordering::Acquire) <= through
        })
    }

    /// The reclaim thread: reclaims each time one is asked for, until the log closes.
    fn reclaim_loop(&self) {
        /// However the thread ends (closing, or a panic in a file-system call), the
        /// acknowledgements go back to deleting inline, and nobody waits for it.
        struct Exit<'a>(&'a Reclaimer);
        impl Drop for Exit<'_> {
            fn drop(&mut self) {
                self.0.running.store(false, Ordering::Release);
                self.0.state.lock().busy = false;
                self.0.cond.notify_all();
            }
        }
        let r = &self.reclaimer;
        let _exit = Exit(r);
        let mut st = r.state.lock();
        loop {
            if st.wanted {
                st.wanted = false;
                st = self.busy_with(st, || self.reclaim());
                st.stalled = false;
                continue;
            }
            if st.seals {
                st.seals = false;
                drop(st);
                let sealed = std::mem::take(&mut *self.sealed.lock());
                for seg in sealed {
                    // A failure fails the log (`sync_segment`): appends report it.
                    if self
                        .sync_segment(&seg, seg.file.published(), "syncing a sealed segment")
                        .is_err()
                    {
                        break;
                    }
                }
                st = r.state.lock();
                continue;
            }
            if st.closed {
                return;
            }
            if st.stale {
                // Persist the mark an interval after the last checkpoint write, so that
                // a crash delivers again only about an interval's worth of records; and
                // the synced frontier, so that damage to synced records is never taken
                // for a torn tail.
                let due = self.checkpoint_due();
                if Instant::now() < due {
                    r.cond.wait_until(&mut st, due);
                    continue;
                }
                st.stale = false;
                st = self.busy_with(st, || self.checkpoint_if_stale());
                continue;
            }
            r.cond.wait(&mut st);
        }
    }

    /// Runs `job` on the reclaim thread, busy (an `append` on a full log waits for it),
    /// and keeps its failure for the next acknowledgement to report: kept even if a
    /// later job succeeds, so that a failure is never lost to a retry that happened to
    /// run first.
    fn busy_with<'a>(
        &'a self,
        mut st: parking_lot::MutexGuard<'a, ReclaimState>,
        job: impl FnOnce() -> Result<(), Error>,
    ) -> parking_lot::MutexGuard<'a, ReclaimState> {
        let r = &self.reclaimer;
        st.busy = true;
        drop(st);
        let result = job();
        let mut st = r.state.lock();
        st.busy = false;
        if let Err(e) = result {
            st.error = Some(e);
        }
        r.cond.notify_all();
        st
    }

    /// Deletes the sealed segments whose records are all acknowledged, after persisting
    /// the checkpoint that says so.
    ///
    /// Reclaims run one at a time (`reclaiming`), and decide what to delete under the
    /// writer's lock: the active segment is then the one the writer uses, and every
    /// segment listed before it is sealed for good (the active one only ever moves to a
    /// newer segment). Deciding from an older idea of the active segment could delete the
    /// one being written, whose later records would then vanish at the next open.
    fn reclaim(&self) -> Result<(), Error> {
        let _one = self.reclaiming.lock();
        let through = self.acks.lock().through;
        let doomed: Vec<Arc<Segment<F>>> = {
            let w = self.writer.lock();
            let segs = self.segments.read();
            segs.iter()
                .take_while(|s| {
                    !w.active.as_ref().is_some_and(|a| Arc::ptr_eq(a, s))
                        && s.last_seq.load(Ordering::Acquire) <= through
                })
                .cloned()
                .collect()
        };
        if doomed.is_empty() {
            return Ok(());
        }
        self.write_checkpoint(Numbers::Keep)?;
        let mut result = Ok(());
        for seg in &doomed {
            match self.fs.remove(&seg.path) {
                // Gone already is as good as deleted.
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    // The rest stay listed (and counted), and the next reclaim tries again.
                    result = Err(io_err(e));
                    break;
                }
            }
            // Unlisted (and uncounted) once its file is gone, not before.
            self.segments.write().retain(|s| !Arc::ptr_eq(s, seg));
            self.size.fetch_sub(seg.file.len(), Ordering::AcqRel);
        }
        result.and(self.fs.sync_dir(&self.dir).map_err(io_err))
    }

    fn read(
        &self,
        from: u64,
        max: usize,
        visit: &mut dyn FnMut(u64, &[u8]) -> bool,
    ) -> Result<usize, Error> {
        let from = from.max(1);
        let segments: Vec<Arc<Segment<F>>> = self.segments.read().clone();
        let start = segments
            .partition_point(|s| s.first_seq <= from)
            .saturating_sub(1);
        let mut visited = 0;
        // Records acknowledged above the mark are not handed out again (after a restart,
        // those delivered after a record that waits, or discarded out of order).
        let acked = self.acks.lock().ranges_from(from, READ_SKIP_RANGES);
        let mut acked = acked.into_iter().peekable();
        // Numbers stepped over as damaged: no read will ever deliver their records.
        let mut lost: Vec<(u64, u64)> = Vec::new();
        for (i, seg) in segments.iter().enumerate().skip(start) {
            if visited >= max {
                break;
            }
            // `last` first: the writer publishes a frame's bytes before it stores the
            // frame's number in `last_seq`, so every frame up to `last` lies below `end`.
            // A frame beyond `last` may be published already; it is the end of what this
            // read sees, not damage.
            let last = seg.last_seq.load(Ordering::Acquire);
            let end = seg.file.published();
            // Records in a segment are consecutive except across damage, exactly as
            // recovery read them: the next frame must hold `floor`, or it is damage and
            // the read resynchronises as recovery did.
            // (`read_start`: where the search for `from` began reading.)
            let (read_start, mut pos, mut floor) = if i == start {
                seg.locate_walking(from)
            } else {
                let header = SEGMENT_HEADER_LEN as u64;
                (header, header, seg.first_seq)
            };
            let mut stopped = false;
            while floor <= last && pos < end && visited < max {
                let frame = seg.file.read_with(pos, (end - pos) as usize, |b| {
                    decode_frame(b, seg.salt, seg.max_len)
                });
                let reason = match frame {
                    Frame::Record { seq, len } if seq == floor => {
                        let body = pos + FRAME_HEADER_LEN as u64;
                        pos = body + len as u64;
                        floor = seq + 1;
                        if seq < from {
                            continue;
                        }
                        while acked.next_if(|&(_, hi)| hi < seq).is_some() {}
                        if acked.peek().is_some_and(|&(lo, _)| lo <= seq) {
                            continue;
                        }
                        visited += 1;
                        if !seg.file.read_with(body, len as usize, |b| visit(seq, b)) {
                            stopped = true;
                            break;
                        }
                        continue;
                    }
                    // Records up to `last` follow: zeros here are a zeroed block (a media
                    // error, a lost write), not the end of the data.
                    Frame::End => "zeroed frame header before later records",
                    Frame::Record { .. } => OUT_OF_SEQUENCE,
                    Frame::Bad(reason) => reason,
                };
                if self.opts.recovery_mode == RecoveryMode::Strict {
                    if i + 1 < segments.len() {
                        seg.release_read(read_start, pos, false);
                    }
                    return Err(Error::Corrupt {
                        file: seg.path.clone(),
                        offset: pos,
                        reason: reason.into(),
                    });
                }
                self.read_corrupt.fetch_add(1, Ordering::Relaxed);
                match Frames::of(seg)
                    .find_lowest_valid(&mut Reader::new(&seg.file), pos + 1, floor, last)
                    .map_err(io_err)?
                {
                    Some((p, found)) => {
                        lost.push((floor, found - 1));
                        pos = p;
                        floor = found;
                    }
                    None => {
                        lost.push((floor, last));
                        break;
                    }
                }
            }
            // Sealed segments only: behind the writer, the active segment's pages leave
            // the mapping as it moves on (under `Periodic` and `Immediate`), and
            // unmapping them here too would interrupt the writer's core once more.
            if i + 1 < segments.len() {
                seg.release_read(read_start, pos, floor > last || pos >= end);
            }
            *seg.read_hint.lock() = (floor, pos);
            if stopped {
                break;
            }
        }
        if !lost.is_empty() {
            // Acknowledged on the spot, like the numbers recovery found no record for:
            // nobody would ever acknowledge them, and the mark would stop below them.
            // Best effort: a failed reclaim is tried again by the next acknowledgement
            // that moves the mark, and this read did what it was asked.
            let _ = self.record_acks(&lost);
        }
        Ok(visited)
    }

    fn periodic(&self, period: Duration) {
        let mut stop = self.stop.lock();
        loop {
            if *stop {
                return;
            }
            if self.stop_cond.wait_for(&mut stop, period).timed_out() && !*stop {
                drop(stop);
                let last = self.next_seq.load(Ordering::Acquire) - 1;
                // A failure puts the log in its failed state; appends report it.
                if self.sync_through(last).is_ok() {
                    let _ = if Instant::now() >= self.checkpoint_due() {
                        self.checkpoint_if_stale()
                    } else {
                        self.checkpoint_if_changed()
                    };
                }
                stop = self.stop.lock();
            }
        }
    }
}

impl<F: Fs> group_commit::Log for Inner<F> {
    fn appended(&self) -> u64 {
        self.next_seq.load(Ordering::Acquire) - 1
    }

    fn check_failed(&self) -> Result<(), Error> {
        Inner::check_failed(self)
    }

    fn sync_all(&self) -> Result<u64, Error> {
        self.sync_all_appended()
    }

    fn synced(&self, upto: u64) {
        // The frontier moved: the checkpoint is to hold it in time.
        if upto > self.checkpointed_synced.load(Ordering::Relaxed)
            && self.reclaimer.running.load(Ordering::Acquire)
        {
            self.reclaimer.checkpoint_stale();
        }
    }
}

impl<F: Fs> Storage for Wal<F> {
    fn append(&self, record: &[u8]) -> Result<u64, Error> {
        self.inner.append(record)
    }

    fn sync(&self) -> Result<(), Error> {
        let last = self.inner.next_seq.load(Ordering::Acquire) - 1;
        self.inner.sync_through(last)?;
        self.inner.checkpoint_if_changed()
    }

    fn sync_through(&self, seq: u64) -> Result<(), Error> {
        self.inner.sync_through(seq)
    }

    fn read(
        &self,
        from: u64,
        max: usize,
        visit: &mut dyn FnMut(u64, &[u8]) -> bool,
    ) -> Result<usize, Error> {
        self.inner.read(from, max, visit)
    }

    fn ack(&self, seq: u64) -> Result<(), Error> {
        self.inner.ack_ranges(&[(seq, seq)])
    }

    fn ack_all(&self, seqs: &[u64]) -> Result<(), Error> {
        // Turn the (usually contiguous) list into ranges.
        let mut sorted = seqs.to_vec();
        sorted.sort_unstable();
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for s in sorted {
            match ranges.last_mut() {
                Some((_, hi)) if s <= hi.saturating_add(1) => *hi = (*hi).max(s),
                _ => ranges.push((s, s)),
            }
        }
        self.inner.ack_ranges(&ranges)
    }

    fn ack_range(&self, from: u64, to: u64) -> Result<(), Error> {
        if from > to {
            return Ok(());
        }
        self.inner.ack_ranges(&[(from, to)])
    }

    fn is_acked(&self, seq: u64) -> bool {
        self.inner.acks.lock().covers(seq)
    }

    fn acked_through(&self) -> u64 {
        self.inner.acks.lock().through
    }

    fn next_seq(&self) -> u64 {
        self.inner.next_seq.load(Ordering::Acquire)
    }

    fn size(&self) -> u64 {
        self.inner.size.load(Ordering::Acquire)
    }

    fn recovery(&self) -> RecoveryReport {
        self.inner.report.clone()
    }

    fn reclaim_hint(&self) -> Option<u64> {
        let active = self.inner.writer.lock().active.clone();
        let segs = self.inner.segments.read();
        segs.iter()
            .find(|s| !active.as_ref().is_some_and(|a| Arc::ptr_eq(a, s)))
            .map(|s| s.last_seq.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::recovery::complement;
    use super::Acks;

    #[test]
    fn acks_merge_into_a_contiguous_mark() {
        let mut a = Acks::default();
        a.add(5, 6);
        a.add(9, 9);
        assert_eq!(a.through, 0);
        a.add(1, 3);
        assert_eq!(a.through, 3);
        a.add(4, 4);
        assert_eq!(a.through, 6);
        a.add(8, 8);
        a.add(7, 7);
        assert_eq!(a.through, 9);
        assert!(a.above.is_empty());
        a.add(2, 20);
        assert_eq!(a.through, 20);
        a.add(30, 35);
        a.add(25, 31);
        assert_eq!(a.above.len(), 1);
        assert_eq!(a.above.get(&25), Some(&35));
    }

    #[test]
    fn numbers_without_records_join_the_mark_at_the_next_acknowledgement() {
        let mut a = Acks {
            through: 10,
            ..Acks::default()
        };
        // Ranges of any length cost one entry each, and do not move the mark yet.
        a.insert(11, 1 << 40);
        a.insert((1 << 40) + 5, (1 << 41) - 1);
        assert_eq!(a.through, 10);
        assert_eq!(a.above.len(), 2);
        // Any acknowledgement moves it over them, as far as they reach.
        a.add(5, 5);
        assert_eq!(a.through, 1 << 40);
        a.add((1 << 40) + 1, (1 << 40) + 4);
        assert_eq!(a.through, (1 << 41) - 1);
        assert!(a.above.is_empty());
    }

    #[test]
    fn acks_merge_many_ranges_in_one_insert() {
        let mut a = Acks::default();
        for k in 1..1000u64 {
            a.add(3 * k, 3 * k);
        }
        assert_eq!(a.above.len(), 999);
        a.add(10, 2000);
        // 10..=2000 swallowed 12..=1998 and merged with 9 and 2001, which it touches.
        assert_eq!(a.above.len(), 2 + 1 + 332);
        assert_eq!(a.above.get(&9), Some(&2001));
        a.add(1, 2);
        assert_eq!(a.through, 3);
        a.add(4, 8);
        assert_eq!(a.through, 2001);
        assert_eq!(a.above.first_key_value(), Some((&2004, &2004)));
    }

    #[test]
    fn the_complement_of_the_records_kept() {
        assert_eq!(complement(&[], 5, 5), vec![]);
        assert_eq!(complement(&[], 5, 9), vec![(5, 8)]);
        assert_eq!(
            complement(&[(1, 4), (7, 7), (9, 20)], 3, 25),
            vec![(5, 6), (8, 8), (21, 24)]
        );
        assert_eq!(complement(&[(3, 24)], 3, 25), vec![]);
        assert_eq!(complement(&[(1, 2), (6, 9)], 5, 10), vec![(5, 5)]);
    }
}
