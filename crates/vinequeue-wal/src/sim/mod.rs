//! A simulated file system for tests (feature `testing`): a page cache over "durable"
//! contents, power cuts that keep synced bytes and drop or tear unsynced ones at random,
//! process crashes that keep the page cache, and injected errors.
//!
//! ```
//! use vinequeue_wal::sim::{FaultOp, SimFs};
//! use std::io::ErrorKind;
//!
//! let fs = SimFs::new(42);
//! fs.fail_nth(FaultOp::Sync, 1, ErrorKind::Other); // the next sync returns EIO
//! // ... open a `Wal` over `fs.clone()`, write, then:
//! let after = fs.power_cut(); // a new handle seeing only what survived
//! # let _ = after;
//! ```
//!
//! Semantics, modelled on Linux with ext4:
//!
//! * Writes land in the page cache. `sync_range` makes the pages in its range durable;
//!   `create` (preallocate + fsync), `truncate` and `write_small` make the file's size and
//!   contents durable at once.
//! * A new, renamed or removed directory entry is durable after `sync_dir`; before it, a
//!   power cut keeps a random prefix of the directory changes made since (in the order
//!   they were made, as a metadata journal commits them: a rename is kept whole or not
//!   at all), so a change may also become durable early.
//! * `power_cut` returns a fresh handle on what is durable; each unsynced dirty page is,
//!   at random, kept, lost, or torn (a random number of its leading 512-byte sectors kept,
//!   and the sector after them, at random, garbage if it held nothing before: the one
//!   being written; a sector that held data is written atomically, old or new).
//!   Every handle from before the cut (and files opened through it) fails with EIO from
//!   then on, so a crashed log's destructor cannot touch the survivors.
//! * `process_crash` keeps the page cache (what a killed process leaves behind).
//! * An injected sync failure also throws the dirty pages of its range away, as Linux does
//!   ("fsyncgate"): a later sync then reports success although the data is gone. So does
//!   an injected failure of a write-back hint (`start_writeback`);
//!   successful hints change nothing (the pages stay dirty until a sync).
//! * An injected `write_small` failure leaves the file created (or truncated) and empty,
//!   as a crash between the `open(O_TRUNC)` and the write does.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::fs::{DirEntry, Fs, FsFile};

mod file;
mod fs_impl;

pub use file::SimFile;
pub use fs_impl::SimLock;

const PAGE: usize = 4096;

/// Generations of simulated machines, unique across all of them.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);
const SECTOR: usize = 512;

/// Operations at which errors can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultOp {
    /// `FsFile::sync_range`.
    Sync,
    /// `Fs::sync_dir`.
    SyncDir,
    /// `Fs::create`.
    Create,
    /// `Fs::rename`.
    Rename,
    /// `Fs::remove`.
    Remove,
    /// `Fs::write_small` and `Fs::overwrite`. A failed `write_small` fails part-way, as
    /// a crash between its steps would leave it: the file is created (or truncated) and
    /// none of the data is written.
    WriteSmall,
    /// `FsFile::read_at`: a device that fails a read (nothing is changed).
    Read,
    /// `Fs::overwrite` torn by a power cut: the new bytes reach the page cache, but only
    /// a random number of their leading 512-byte sectors reach the disk, the sector after
    /// them garbage; the call fails. (Cut the power next to see the torn state.)
    TornWrite,
    /// `FsFile::start_writeback`: a write-back that fails as
    /// it starts, and throws the dirty pages of its range away (as ext4 does when it
    /// cannot map the blocks), so that the next sync of the range finds nothing to write.
    WriteBack,
}

#[derive(Debug)]
struct Fault {
    op: FaultOp,
    /// Fails when this reaches 1 (counts down on each matching call).
    countdown: u64,
    kind: io::ErrorKind,
    /// Where the failing call waits before it returns, if it is to wait.
    hold: Option<Arc<Gate>>,
}

/// A fault that struck: the error the call returns, once its effects are done.
struct Injected {
    error: io::Error,
    hold: Option<Arc<Gate>>,
}

impl Injected {
    /// Waits at the hold, if any (call with no lock held), and returns the error.
    fn strike(self) -> io::Error {
        if let Some(gate) = self.hold {
            gate.wait();
        }
        self.error
    }
}

#[derive(Debug)]
struct PausePoint {
    op: FaultOp,
    /// Pauses when this reaches 1 (counts down on each matching call).
    countdown: u64,
    gate: Arc<Gate>,
}

/// Where a paused call waits: `(reached, released)`.
#[derive(Debug, Default)]
struct Gate {
    state: std::sync::Mutex<(bool, bool)>,
    cond: std::sync::Condvar,
}

impl Gate {
    /// Says the call has arrived, and waits until it is released.
    fn wait(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.0 = true;
        self.cond.notify_all();
        while !st.1 {
            st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A call held until [`release`](SimPause::release)d (or until this handle is dropped),
/// for tests that need threads to meet in a given order: at the start of an operation
/// ([`SimFs::pause_nth`]), or once an injected failure has struck, before the call
/// returns it ([`SimFs::fail_nth_and_hold`]).
#[derive(Debug)]
pub struct SimPause {
    gate: Arc<Gate>,
}

impl SimPause {
    /// Waits up to `timeout` for the paused call to arrive; whether it has.
    pub fn wait_reached(&self, timeout: std::time::Duration) -> bool {
        let st = self.gate.state.lock().unwrap_or_else(|e| e.into_inner());
        let (st, _) = self
            .gate
            .cond
            .wait_timeout_while(st, timeout, |s| !s.0)
            .unwrap_or_else(|e| e.into_inner());
        st.0
    }

    /// Lets the paused call go on (and, if it has not arrived yet, not pause at all).
    pub fn release(&self) {
        let mut st = self.gate.state.lock().unwrap_or_else(|e| e.into_inner());
        st.1 = true;
        self.gate.cond.notify_all();
    }
}

impl Drop for SimPause {
    fn drop(&mut self) {
        self.release();
    }
}

#[derive(Debug, Default)]
struct NodeData {
    cache: Vec<u8>,
    durable: Vec<u8>,
    dirty: BTreeSet<usize>,
}

#[derive(Debug, Default)]
struct Node {
    data: Mutex<NodeData>,
}

#[derive(Debug)]
struct State {
    generation: u64,
    live: BTreeMap<PathBuf, Arc<Node>>,
    durable: BTreeMap<PathBuf, Arc<Node>>,
    /// Directory changes since the last `sync_dir` of their directory, oldest first.
    pending: Vec<DirOp>,
    dirs: BTreeSet<PathBuf>,
    locked: BTreeSet<PathBuf>,
    faults: Vec<Fault>,
    pauses: Vec<PausePoint>,
    rng: u64,
    capacity: Option<u64>,
    syncs: u64,
}

/// A change to a directory, not durable yet.
#[derive(Debug)]
enum DirOp {
    Insert(PathBuf, Arc<Node>),
    Remove(PathBuf),
    Rename(PathBuf, PathBuf, Arc<Node>),
}

impl DirOp {
    fn in_dir(&self, dir: &Path) -> bool {
        match self {
            DirOp::Insert(p, _) | DirOp::Remove(p) => p.parent() == Some(dir),
            DirOp::Rename(from, to, _) => from.parent() == Some(dir) || to.parent() == Some(dir),
        }
    }

    fn apply(&self, durable: &mut BTreeMap<PathBuf, Arc<Node>>) {
        match self {
            DirOp::Insert(p, n) => {
                durable.insert(p.clone(), Arc::clone(n));
            }
            DirOp::Remove(p) => {
                durable.remove(p);
            }
            DirOp::Rename(from, to, n) => {
                durable.remove(from);
                durable.insert(to.clone(), Arc::clone(n));
            }
        }
    }
}

impl State {
    fn rand(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn take_fault(&mut self, op: FaultOp) -> Option<Injected> {
        let i = self.faults.iter().position(|f| f.op == op)?;
        if self.faults[i].countdown > 1 {
            self.faults[i].countdown -= 1;
            return None;
        }
        let f = self.faults.remove(i);
        Some(Injected {
            error: io::Error::new(f.kind, format!("injected {op:?} failure")),
            hold: f.hold,
        })
    }

    fn used(&self) -> u64 {
        self.live
            .values()
            .map(|n| n.data.lock().cache.len() as u64)
            .sum()
    }
}

/// A handle on a simulated file system. Clones share it.
#[derive(Debug, Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
    generation: u64,
    /// What `Fs::parallel_reads` answers (see [`SimFs::with_parallel_reads`]).
    parallel: bool,
}

fn stale() -> io::Error {
    io::Error::other("simulated machine was power-cut or crashed: handle is stale")
}

impl SimFs {
    /// An empty file system; `seed` drives every random choice (power-cut outcomes).
    pub fn new(seed: u64) -> Self {
        SimFs {
            state: Arc::new(Mutex::new(State {
                generation: 0,
                live: BTreeMap::new(),
                durable: BTreeMap::new(),
                pending: Vec::new(),
                dirs: BTreeSet::new(),
                locked: BTreeSet::new(),
                faults: Vec::new(),
                pauses: Vec::new(),
                rng: seed,
                capacity: None,
                syncs: 0,
            })),
            generation: 0,
            parallel: false,
        }
    }

    /// This handle with recovery allowed to read several segments at once from threads
    /// of its own (`Fs::parallel_reads`), as on the real file system; without it, calls
    /// come in a fixed order, which the injected faults count on. Clones keep it.
    pub fn with_parallel_reads(mut self) -> SimFs {
        self.parallel = true;
        self
    }

    /// Limits the total size of all files; going beyond is `ENOSPC` (`StorageFull`).
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.state.lock().capacity = bytes;
    }

    /// Makes the `n`-th next call of `op` (1 = the very next) fail with `kind`.
    pub fn fail_nth(&self, op: FaultOp, n: u64, kind: io::ErrorKind) {
        self.state.lock().faults.push(Fault {
            op,
            countdown: n.max(1),
            kind,
            hold: None,
        });
    }

    /// As [`fail_nth`](SimFs::fail_nth), and the failing call, its effects done (the
    /// dirty pages of a failed sync dropped, ...), waits before it returns the error until
    /// the returned handle is released or dropped.
    pub fn fail_nth_and_hold(&self, op: FaultOp, n: u64, kind: io::ErrorKind) -> SimPause {
        let gate = Arc::new(Gate::default());
        self.state.lock().faults.push(Fault {
            op,
            countdown: n.max(1),
            kind,
            hold: Some(Arc::clone(&gate)),
        });
        SimPause { gate }
    }

    /// Makes the `n`-th next call of `op` (1 = the very next) wait at its start, before
    /// it does anything (or fails by [`fail_nth`](SimFs::fail_nth)), until the returned
    /// handle is released or dropped. Other calls go on meanwhile.
    pub fn pause_nth(&self, op: FaultOp, n: u64) -> SimPause {
        let gate = Arc::new(Gate::default());
        self.state.lock().pauses.push(PausePoint {
            op,
            countdown: n.max(1),
            gate: Arc::clone(&gate),
        });
        SimPause { gate }
    }

    /// Waits at a pause point of `op`, if one is due (see [`SimFs::pause_nth`]).
    fn pause_point(&self, op: FaultOp) {
        let gate = {
            let mut st = self.state.lock();
            let Some(i) = st.pauses.iter().position(|p| p.op == op) else {
                return;
            };
            if st.pauses[i].countdown > 1 {
                st.pauses[i].countdown -= 1;
                return;
            }
            st.pauses.remove(i).gate
        };
        gate.wait();
    }

    /// Removes every pending injected fault and pause.
    pub fn clear_faults(&self) {
        let mut st = self.state.lock();
        st.faults.clear();
        st.pauses.clear();
    }

    /// Number of successful `sync_range` calls so far.
    pub fn sync_count(&self) -> u64 {
        self.state.lock().syncs
    }

    /// Cuts the power: returns a handle on what survived (see the module docs).
    pub fn power_cut(&self) -> SimFs {
        let mut st = self.state.lock();
        // The journal committed a prefix of the directory changes not synced yet.
        let pending = std::mem::take(&mut st.pending);
        let committed = (st.rand() % (pending.len() as u64 + 1)) as usize;
        for op in &pending[..committed] {
            op.apply(&mut st.durable);
        }
        let nodes: Vec<Arc<Node>> = st.durable.values().cloned().collect();
        for node in nodes {
            let mut d = node.data.lock();
            let dirty: Vec<usize> = d.dirty.iter().copied().collect();
            for page in dirty {
                let start = page * PAGE;
                let end = ((page + 1) * PAGE).min(d.cache.len()).min(d.durable.len());
                if start >= end {
                    continue;
                }
                match st.rand() % 3 {
                    0 => {} // lost
                    1 => {
                        let (cache, durable) = (&d.cache[start..end].to_vec(), &mut d.durable);
                        durable[start..end].copy_from_slice(cache);
                    }
                    _ => {
                        let sectors = (end - start).div_ceil(SECTOR);
                        let keep = (st.rand() as usize % (sectors + 1)) * SECTOR;
                        let cut = (start + keep).min(end);
                        let torn = d.cache[start..cut].to_vec();
                        d.durable[start..cut].copy_from_slice(&torn);
                        // The sector being written when the power went: garbage, if it
                        // held nothing yet. (A sector that held data is written
                        // atomically, old or new, as disks and SSDs do: the log shares
                        // sectors between synced records and later ones.)
                        let stop = (cut + SECTOR).min(end);
                        if st.rand().is_multiple_of(2)
                            && d.durable[cut..stop].iter().all(|&b| b == 0)
                        {
                            for b in &mut d.durable[cut..stop] {
                                *b = st.rand() as u8;
                            }
                        }
                    }
                }
            }
            d.dirty.clear();
            d.cache = d.durable.clone();
        }
        Self::restart(&mut st)
    }

    /// Kills the process but not the machine: the page cache and the directory survive.
    pub fn process_crash(&self) -> SimFs {
        let mut st = self.state.lock();
        let live: Vec<(PathBuf, Arc<Node>)> = st
            .live
            .iter()
            .map(|(p, n)| (p.clone(), Arc::clone(n)))
            .collect();
        for (_, node) in &live {
            let mut d = node.data.lock();
            d.durable = d.cache.clone();
            d.dirty.clear();
        }
        st.durable = live.into_iter().collect();
        Self::restart(&mut st)
    }

    /// A second machine holding a copy of this one's current files (page cache included),
    /// as after a process crash, while this one carries on: for trying many damages on
    /// one starting point.
    pub fn fork(&self) -> SimFs {
        let mut copy = {
            let st = self.state.lock();
            State {
                generation: st.generation,
                live: st.live.clone(),
                durable: st.live.clone(),
                pending: Vec::new(),
                dirs: st.dirs.clone(),
                locked: BTreeSet::new(),
                faults: Vec::new(),
                pauses: Vec::new(),
                rng: st.rng ^ 0x5555,
                capacity: st.capacity,
                syncs: st.syncs,
            }
        };
        for node in copy.live.values() {
            let mut d = node.data.lock();
            d.durable = d.cache.clone();
            d.dirty.clear();
        }
        // `restart` makes fresh nodes, so the two machines share nothing.
        Self::restart(&mut copy)
    }

    fn restart(st: &mut State) -> SimFs {
        // Fresh nodes, so that stale file handles cannot reach the survivors.
        let fresh: BTreeMap<PathBuf, Arc<Node>> = st
            .durable
            .iter()
            .map(|(p, n)| {
                let d = n.data.lock();
                let node = Node {
                    data: Mutex::new(NodeData {
                        cache: d.durable.clone(),
                        durable: d.durable.clone(),
                        dirty: BTreeSet::new(),
                    }),
                };
                (p.clone(), Arc::new(node))
            })
            .collect();
        let generation = NEXT_GENERATION.fetch_add(1, Ordering::Relaxed);
        let next = State {
            generation,
            live: fresh.clone(),
            durable: fresh,
            pending: Vec::new(),
            dirs: st.dirs.clone(),
            locked: BTreeSet::new(),
            faults: Vec::new(),
            pauses: Vec::new(),
            rng: st.rand(),
            capacity: st.capacity,
            syncs: st.syncs,
        };
        // Every handle on the old state is stale from now on.
        st.generation = u64::MAX;
        SimFs {
            state: Arc::new(Mutex::new(next)),
            generation,
            parallel: false,
        }
    }

    fn lock(&self) -> io::Result<parking_lot::MutexGuard<'_, State>> {
        let st = self.state.lock();
        if st.generation != self.generation {
            return Err(stale());
        }
        Ok(st)
    }

    /// Every file's current (page-cache) contents, for tests that inspect or damage them.
    pub fn files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let st = self.state.lock();
        st.live
            .iter()
            .map(|(p, n)| (p.clone(), n.data.lock().cache.clone()))
            .collect()
    }

    /// The segment files (`*.seg`) directly in `dir`, in name order (which is sequence
    /// order), with their page-cache contents.
    pub fn segment_files(&self, dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut segments: Vec<_> = self
            .files()
            .into_iter()
            .filter(|(p, _)| p.parent() == Some(dir) && p.extension().is_some_and(|e| e == "seg"))
            .collect();
        segments.sort();
        segments
    }

    /// Replaces a file's contents outright (durably), e.g. to flip bits in a test.
    pub fn put_file(&self, path: &Path, bytes: &[u8]) {
        let mut st = self.state.lock();
        let node = Arc::new(Node {
            data: Mutex::new(NodeData {
                cache: bytes.to_vec(),
                durable: bytes.to_vec(),
                dirty: BTreeSet::new(),
            }),
        });
        st.live.insert(path.to_path_buf(), Arc::clone(&node));
        st.durable.insert(path.to_path_buf(), node);
    }

    /// Overwrites `bytes` at `offset` of an existing file in place, in the page cache and
    /// on the disk, as a media error or a stray write would: unlike
    /// [`put_file`](SimFs::put_file), files already open see the change.
    ///
    /// # Panics
    ///
    /// If there is no such file or the range runs past its end.
    pub fn scribble(&self, path: &Path, offset: u64, bytes: &[u8]) {
        let st = self.state.lock();
        let node = st.live.get(path).expect("no such file");
        let mut d = node.data.lock();
        let (at, end) = (offset as usize, offset as usize + bytes.len());
        d.cache[at..end].copy_from_slice(bytes);
        d.durable[at..end].copy_from_slice(bytes);
    }
}
