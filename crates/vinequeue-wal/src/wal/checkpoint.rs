//! Writing the checkpoint: the acknowledged mark and ranges, the synced frontier and the
//! numbers reserved ahead, in two slots overwritten in turn.

use super::*;

/// The checkpoint file as last written.
pub(super) struct CheckpointState {
    /// Generation of the current slot (0 while there is no file).
    pub(super) generation: u64,
    /// Its `next_seq`: no number at or above it has been handed out, so every number
    /// below it may have been (and is never handed out again).
    pub(super) reserved: u64,
    /// Length of the file (0 while there is none; a version 1 file is replaced whole
    /// at the first write).
    pub(super) file_len: u64,
}

/// What a checkpoint write does with the numbers reserved ahead.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Numbers {
    /// Keeps the reservation as it is.
    Keep,
    /// Reserves every number below this one.
    Reserve(u64),
    /// Gives back what is reserved and unused (closing: no append comes after).
    Release,
}

impl<F: Fs> LogState<F> {
    /// Reserves a block of numbers from `seq` on (called by the append that is about
    /// to hand out `seq`, with the writer locked): returns the new end of the
    /// reservation, every number below which may now be handed out.
    ///
    /// A number may reach a sink before its record is synced (the batcher takes it from
    /// the ring right after the append), and sinks deduplicate on it: were the numbering
    /// rebuilt from the records that survived a power cut, a lost record's number would
    /// go to a new item, which such a sink would drop. Recovery starts at the reservation
    /// instead, which is synced before any number in it is used.
    pub(super) fn reserve(&self, seq: u64) -> Result<u64, Error> {
        let to = seq
            .saturating_add(self.opts.sequence_reservation)
            .min(MAX_SEQ);
        self.write_checkpoint(Numbers::Reserve(to))
    }

    pub(super) fn checkpoint_if_changed(&self) -> Result<(), Error> {
        if self.acks.lock().changed() {
            self.write_checkpoint(Numbers::Keep)?;
        }
        Ok(())
    }

    /// Persists the mark and the synced frontier if either moved since the last write.
    pub(super) fn checkpoint_if_stale(&self) -> Result<(), Error> {
        if self.frontier_moved() {
            self.write_checkpoint(Numbers::Keep)?;
            return Ok(());
        }
        self.checkpoint_if_changed()
    }

    /// Whether records were synced beyond the frontier the checkpoint holds.
    pub(super) fn frontier_moved(&self) -> bool {
        self.sync.synced() > self.checkpointed_synced.load(Ordering::Acquire)
    }

    /// At close: persists the mark and the frontier, and gives back the numbers reserved
    /// and not used.
    pub(super) fn close_checkpoint(&self) -> Result<(), Error> {
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
    pub(super) fn checkpoint_due(&self) -> Instant {
        self.opened
            + Duration::from_millis(self.checkpointed_at.load(Ordering::Relaxed))
            + self.opts.checkpoint_interval
    }

    /// Persists the acknowledgement cursor and the numbers reserved in the checkpoint's
    /// older slot (or creates the file), and syncs it. Returns the `next_seq` written.
    pub(super) fn write_checkpoint(&self, numbers: Numbers) -> Result<u64, Error> {
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
    pub(super) fn ack_ranges(&self, ranges: &[(u64, u64)]) -> Result<(), Error> {
        self.record_acks(ranges)?;
        match self.reclaimer.take_error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// [`ack_ranges`](Self::ack_ranges) without taking a background failure to report
    /// (for acknowledgements the log makes itself, which would swallow it).
    pub(super) fn record_acks(&self, ranges: &[(u64, u64)]) -> Result<(), Error> {
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
}
