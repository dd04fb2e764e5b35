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
use vinequeue_storage::{
    Error, KeyedVisit, QueueId, RecoveryMode, RecoveryReport, Storage, SyncMode,
};

use crate::format::{
    decode_frame, frame_header, parse_segment_name, segment_name, split_payload, Checkpoint, Frame,
    SegmentHeader, CHECKPOINT_LEN, FRAME_HEADER_LEN, KEYED, KEY_LEN, MAX_CHECKPOINT_RANGES,
    MAX_POSITION_LEN, MAX_SEQ, POSITIONED, SEGMENT_HEADER_LEN,
};
use crate::fs::{Fs, FsFile, RealFs};
use crate::options::WalOptions;

mod acks;
mod append;
mod checkpoint;
mod group_commit;
pub(crate) mod position;
mod prescan;
mod read;
mod reclaim;
mod recovery;
mod scan;
mod segment;
mod writeahead;

use acks::*;
use checkpoint::*;
use reclaim::*;
use segment::*;
use writeahead::*;

use group_commit::GroupCommit;

use recovery::Recovery;
use scan::{Frames, Reader, OUT_OF_SEQUENCE};

const CHECKPOINT: &str = "checkpoint";
const CHECKPOINT_TMP: &str = "checkpoint.tmp";
const QUEUE_ID: &str = "queue-id";
const QUEUE_ID_TMP: &str = "queue-id.tmp";
const DAMAGED: &str = "damaged";

struct LogState<F: Fs> {
    /// The identity of the queue this log belongs to (file `queue-id`).
    queue_id: QueueId,
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
    write_ahead: WriteAhead<F>,
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
    /// The position the `source-position` file holds (see `position`).
    retired_position: Mutex<Option<Vec<u8>>>,
    stop: Mutex<bool>,
    stop_cond: Condvar,
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
    inner: Arc<LogState<F>>,
    syncer: Option<JoinHandle<()>>,
    reclaimer: Option<JoinHandle<()>>,
}

impl<F: Fs> std::fmt::Debug for Wal<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.inner.dir)
            .field("next_seq", &self.inner.next_seq.load(Ordering::Relaxed))
            .field("segments", &self.inner.segments.read().len())
            .field("failed", &self.inner.has_failed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
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
/// The queue's identity kept in the directory (file `queue-id`, its UUID form and a
/// newline), created at the first open: written under a temporary name, synced, renamed
/// and the directory synced, so that it exists whole or not at all. A file that does not
/// hold an id is damage: `Strict` refuses it; otherwise a new identity replaces it (items
/// delivered later carry the new one).
fn load_or_create_queue_id<F: Fs>(fs: &F, dir: &Path, opts: &WalOptions) -> Result<QueueId, Error> {
    let path = dir.join(QUEUE_ID);
    match fs.read_small(&path, 256) {
        Ok(bytes) => {
            let parsed = std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.trim().parse::<QueueId>().ok());
            match parsed {
                Some(id) => return Ok(id),
                None if opts.recovery_mode == RecoveryMode::Strict => {
                    return Err(Error::Corrupt {
                        file: path,
                        offset: 0,
                        reason: "the queue id file does not hold a queue id".into(),
                    });
                }
                None => {
                    event!(warn, file = %path.display(), "the queue id file is damaged; a new identity replaces it");
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let id = QueueId::random();
    let tmp = dir.join(QUEUE_ID_TMP);
    fs.write_small(&tmp, format!("{id}\n").as_bytes())
        .map_err(io_err)?;
    fs.rename(&tmp, &path).map_err(io_err)?;
    fs.sync_dir(dir).map_err(io_err)?;
    Ok(id)
}

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
        event!(info, dir = %dir.display(), "recovering the log");
        #[cfg(feature = "tracing")]
        let started = Instant::now();
        let recovered = Recovery::run(&fs, &dir, &opts)?;
        let queue_id = load_or_create_queue_id(&fs, &dir, &opts)?;
        // (The size counts every file of the log, this one too.)
        let id_len = fs.file_len(&dir.join(QUEUE_ID)).unwrap_or(0);
        #[cfg(feature = "tracing")]
        {
            let r = &recovered.report;
            let took = started.elapsed();
            event!(
                info,
                dir = %dir.display(),
                records = r.records,
                bytes = r.bytes,
                corrupt_records = r.corrupt_records,
                torn_bytes = r.torn_bytes,
                duration_ms = took.as_millis() as u64,
                records_per_second = (r.records as f64 / took.as_secs_f64().max(1e-9)) as u64,
                "log recovered"
            );
        }
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
            retired_position,
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
        let inner = Arc::new(LogState {
            queue_id,
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
            write_ahead: WriteAhead::new(),
            reclaimer: Reclaimer::new(),
            sealed: Mutex::new(Vec::new()),
            active_first: AtomicU64::new(active_first),
            failed: Mutex::new(None),
            has_failed: AtomicBool::new(false),
            size: AtomicU64::new(size + id_len),
            report,
            read_corrupt: AtomicU64::new(0),
            retired_position: Mutex::new(retired_position),
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
        let reclaimer = if inner.opts.reclaim == crate::Reclaim::Background {
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
    /// With [`Reclaim::Background`](crate::Reclaim::Background) (the default) acknowledgements leave this
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
        self.inner.write_ahead.close();
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
        last_position: Mutex::new(None),
    }))
}

impl<F: Fs> group_commit::Log for LogState<F> {
    fn appended(&self) -> u64 {
        self.next_seq.load(Ordering::Acquire) - 1
    }

    fn check_failed(&self) -> Result<(), Error> {
        LogState::check_failed(self)
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
        self.inner.append(record, None, None)
    }

    fn append_keyed(&self, record: &[u8], key: u64) -> Result<u64, Error> {
        self.inner.append(record, Some(key), None)
    }

    fn keeps_keys(&self) -> bool {
        true
    }

    fn append_positioned(&self, record: &[u8], position: &[u8]) -> Result<u64, Error> {
        vinequeue_storage::check_position(position)?;
        self.inner.append(record, None, Some(position))
    }

    fn keeps_positions(&self) -> bool {
        true
    }

    fn read_keyed(
        &self,
        from: u64,
        max: usize,
        visit: &mut KeyedVisit<'_>,
    ) -> Result<usize, Error> {
        self.inner.read(from, max, visit)
    }

    fn queue_id(&self) -> Option<QueueId> {
        Some(self.inner.queue_id)
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
        self.inner
            .read(from, max, &mut |seq, _, bytes| visit(seq, bytes))
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

    fn acked_within(&self, from: u64, to: u64) -> u64 {
        self.inner.acks.lock().count_within(from, to)
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
    fn acknowledged_numbers_are_counted_within_any_range() {
        let mut a = Acks::default();
        a.add(1, 4);
        a.add(10, 12);
        a.add(20, 20);
        assert_eq!(a.through, 4);
        assert_eq!(a.count_within(1, 30), 4 + 3 + 1);
        assert_eq!(a.count_within(3, 11), 2 + 2);
        assert_eq!(a.count_within(5, 9), 0);
        assert_eq!(a.count_within(11, 20), 2 + 1);
        assert_eq!(a.count_within(12, 12), 1);
        assert_eq!(a.count_within(13, 19), 0);
        assert_eq!(a.count_within(21, 1 << 40), 0);
        assert_eq!(a.count_within(7, 6), 0);
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
