//! The write-ahead thread: maps chunks of the active segment in ahead of the writer and
//! starts the write-back of the chunks it filled.

use super::*;

/// Bytes the write-ahead thread maps in per call.
pub(super) const PREFETCH_PIECE: u64 = 256 << 10;

/// Maps chunks of the active segment in ahead of the writer (and, under `Periodic`,
/// unmaps those it has filled and starts writing them back), on a thread of its own
/// (started by the first request): populating a chunk costs as much as writing the records that
/// fill it, and paid inside `append` it would be paid by a producer, with a stall of a
/// few hundred microseconds once per chunk.
pub(super) struct WriteAhead<F: Fs> {
    pub(super) state: Mutex<WriteAheadState<F>>,
}

/// Work for the write-ahead thread in a segment, each range `(offset, len)`: one to map in
/// (and, under `Immediate`, to write ahead: its zeros written back), and (`Periodic`
/// mode) one filled and published, to unmap and start writing back.
pub(super) struct WriteAheadRequest<F: Fs> {
    pub(super) seg: Arc<Segment<F>>,
    pub(super) map_in: (u64, u64),
    pub(super) write_ahead: bool,
    pub(super) behind: Option<(u64, u64)>,
}

pub(super) struct WriteAheadState<F: Fs> {
    pub(super) requests: Option<std::sync::mpsc::SyncSender<WriteAheadRequest<F>>>,
    pub(super) thread: Option<std::thread::JoinHandle<()>>,
    /// The log is closing, or the thread could not be started: no (new) thread.
    pub(super) closed: bool,
}

impl<F: Fs> WriteAhead<F> {
    pub(super) fn new() -> Self {
        WriteAhead {
            state: Mutex::new(WriteAheadState {
                requests: None,
                thread: None,
                closed: false,
            }),
        }
    }

    /// Asks for `map_in` (`(offset, len)`) of `seg` to be mapped in soon (then written
    /// ahead if `write_ahead`), and for `behind` to be unmapped and its write-back
    /// started; unmaps `behind` at once as well.
    pub(super) fn request(
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
            let (tx, rx) = std::sync::mpsc::sync_channel::<WriteAheadRequest<F>>(4);
            let spawned = std::thread::Builder::new()
                .name("vinequeue-wal-writeahead".into())
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
                            // leaves no chunk mapped, and up to the chunk the writer is
                            // in now: a thread that fell behind catches up at once, and
                            // what stays mapped is bounded by a chunk or two whatever
                            // the pace of the writer.
                            let now = req.seg.file.published() / PREPARE_CHUNK * PREPARE_CHUNK;
                            let from = req.seg.released_end.load(Ordering::Acquire).min(offset);
                            let upto = req.seg.file.release(from, now.max(offset + len) - from);
                            req.seg.released_end.fetch_max(upto, Ordering::AcqRel);
                            req.seg.start_writeback(offset, len);
                        }
                        let (offset, len) = req.map_in;
                        let end = offset + len;
                        // Never what the writer has passed already (a request that
                        // waited): it is written, and mapping it in again would only
                        // put released pages back into the process's memory.
                        let mut at =
                            offset.max(req.seg.file.published().next_multiple_of(PAGE).min(end));
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
            // writes fault the pages in as they reach them.
            let _ = tx.try_send(WriteAheadRequest {
                seg: Arc::clone(&seg),
                map_in,
                write_ahead,
                behind,
            });
        }
        drop(st);
        if let Some((offset, len)) = behind {
            // Unmapped here too, on the writer's thread: a thread that is behind (a sync
            // under way can hold it up for tens of milliseconds) would leave every page
            // written meanwhile in the process's memory until it catches up. One call
            // per chunk, a small cost next to the records that fill it. (The thread
            // unmaps again from where the last release stopped: pages it mapped in
            // for a request that waited, after the writer had passed them.)
            seg.release_below(offset + len);
        }
    }

    /// Stops the thread, after the requests it holds.
    pub(super) fn close(&self) {
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
