//! Appending: the failed state, append, rolling to a new segment, syncs, and the
//! periodic sync thread.

use super::*;

impl<F: Fs> LogState<F> {
    pub(super) fn check_failed(&self) -> Result<(), Error> {
        if self.has_failed.load(Ordering::Acquire) {
            let why = self.failed.lock().clone().unwrap_or_default();
            return Err(Error::LogFailed(why));
        }
        Ok(())
    }

    pub(super) fn fail(&self, what: &str, e: &io::Error) -> Error {
        let why = format!("{what} failed: {e}");
        let mut failed = self.failed.lock();
        if failed.is_none() {
            *failed = Some(why.clone());
        }
        self.has_failed.store(true, Ordering::Release);
        Error::LogFailed(failed.clone().unwrap_or(why))
    }

    /// Appends `record`; with `key`, as a keyed frame whose payload carries the key first
    /// (see `format::KEYED`); with `position`, carrying that source position after it
    /// (`format::POSITIONED`).
    #[inline]
    pub(super) fn append(
        &self,
        record: &[u8],
        key: Option<u64>,
        position: Option<&[u8]>,
    ) -> Result<u64, Error> {
        self.check_failed()?;
        if record.len() > self.max_record as usize {
            return Err(Error::RecordTooLarge {
                len: record.len() as u64,
                limit: self.max_record as u64,
            });
        }
        // The key and the position, in front of the record (none for a plain append).
        let prefix = (key.is_some() || position.is_some()).then(|| {
            let mut p = Vec::with_capacity(KEY_LEN + 1 + MAX_POSITION_LEN);
            if let Some(k) = key {
                p.extend_from_slice(&k.to_le_bytes());
            }
            if let Some(pos) = position {
                p.push(pos.len() as u8);
                p.extend_from_slice(pos);
            }
            p
        });
        let flags =
            if key.is_some() { KEYED } else { 0 } | if position.is_some() { POSITIONED } else { 0 };
        // (A frame with a prefix must still fit in an empty segment.)
        let room = self.segment_size - (SEGMENT_HEADER_LEN + FRAME_HEADER_LEN) as u64;
        let extra = prefix.as_ref().map_or(0, Vec::len);
        if (record.len() + extra) as u64 > room {
            return Err(Error::RecordTooLarge {
                len: record.len() as u64,
                limit: room - extra as u64,
            });
        }
        let (len, payload_crc) = match &prefix {
            None => (record.len() as u32, crate::crc::crc32c(record)), // outside the lock
            Some(p) => (
                (p.len() + record.len()) as u32,
                crate::crc::append(crate::crc::crc32c(p), record),
            ),
        };
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
        match &prefix {
            None => {
                let header = frame_header(payload_crc, seg.salt, seq, len);
                seg.file.write_publish(w.pos, &[&header, record]);
            }
            Some(p) => {
                let header = frame_header(payload_crc, seg.salt, seq, len | flags);
                seg.file.write_publish(w.pos, &[&header, p, record]);
                if let Some(pos) = position {
                    *seg.last_position.lock() = Some((seq, pos.to_vec()));
                }
            }
        }
        if (seq - seg.first_seq).is_multiple_of(INDEX_EVERY) {
            seg.index.lock().push((seq, w.pos));
        }
        seg.last_seq.store(seq, Ordering::Release);
        let before = w.pos;
        w.pos += frame_len;
        w.next_seq += 1;
        self.next_seq.store(w.next_seq, Ordering::Release);
        if before / PREPARE_CHUNK != w.pos / PREPARE_CHUNK {
            // Entered a new chunk: on the write-ahead thread, have the one after it mapped
            // in now, in one call, rather than page by page as records reach it (a page
            // fault per 4 KiB, on the producer's thread). Under `Periodic`, also unmap
            // the chunk just filled (at once, in `request`) and start its write-back: its pages stay in the
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
            self.write_ahead
                .request(seg, (start, len), write_ahead, behind);
        }
        Ok(seq)
    }

    /// Seals the active segment and starts a new one. Called with the writer locked.
    pub(super) fn roll(&self, w: &mut Writer<F>) -> Result<(), Error> {
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
        self.write_ahead
            .request(Arc::clone(&seg), (0, len), false, None);
        w.active = Some(seg);
        w.pos = SEGMENT_HEADER_LEN as u64;
        // The segment just sealed may be acknowledged already.
        self.request_reclaim_if_due();
        Ok(())
    }

    /// Syncs every appended byte; returns the last sequence number it covers.
    pub(super) fn sync_all_appended(&self) -> Result<u64, Error> {
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
    pub(super) fn sync_segment(&self, seg: &Segment<F>, end: u64, what: &str) -> Result<(), Error> {
        let _one = self.syncing.lock();
        self.check_failed()?;
        let from = seg.synced_end.load(Ordering::Acquire);
        if from < end {
            // Unmap the whole pages of the range first (they are published, so never
            // written again): writing back a mapped page write-protects it, with an
            // interrupt of every other core running this process, page by page; one
            // unmapping of the range costs one such interrupt, however many pages the
            // sync writes. The page the writer is still filling stays mapped until a
            // later sync. Their bytes stay in the page cache, dirty until this sync
            // writes them, and the process's memory does not grow with the backlog
            // during a long sink outage.
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
    pub(super) fn sync_through(&self, seq: u64) -> Result<(), Error> {
        self.sync.sync_through(seq, self)
    }

    pub(super) fn periodic(&self, period: Duration) {
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
