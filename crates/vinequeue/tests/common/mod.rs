//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use vinequeue::{Batch, DeadLetter, DeadLetterReason, SendError, Sink};

/// What a recording sink saw.
#[derive(Default)]
pub struct Record<T> {
    /// Every send call: (seqs, items, attempt).
    pub calls: Vec<(Vec<u64>, Vec<T>, u32)>,
    /// Items of successful calls, in delivery order, with their seqs.
    pub delivered: Vec<(u64, T)>,
    /// Dead letters: (seqs, items, reason).
    pub dead: Vec<(Vec<u64>, Vec<T>, DeadLetterReason)>,
}

pub type Shared<T> = Arc<Mutex<Record<T>>>;

/// A sink that records everything and answers with `answer(call_index, batch)`.
pub struct Recorder<T, F> {
    pub record: Shared<T>,
    pub answer: F,
}

pub fn recorder<T, F>(answer: F) -> (Recorder<T, F>, Shared<T>)
where
    F: FnMut(usize, &Batch<T>) -> Result<(), SendError>,
{
    let record = Arc::new(Mutex::new(Record {
        calls: Vec::new(),
        delivered: Vec::new(),
        dead: Vec::new(),
    }));
    (
        Recorder {
            record: Arc::clone(&record),
            answer,
        },
        record,
    )
}

pub fn ok_recorder<T: Clone + Send + 'static>() -> (impl Sink<T>, Shared<T>) {
    recorder(|_, _: &Batch<T>| Ok(()))
}

impl<T, F> Sink<T> for Recorder<T, F>
where
    T: Clone + Send + 'static,
    F: FnMut(usize, &Batch<T>) -> Result<(), SendError> + Send + 'static,
{
    fn send(&mut self, batch: &Batch<T>) -> Result<(), SendError> {
        let index = {
            let mut r = self.record.lock();
            r.calls
                .push((batch.seqs().to_vec(), batch.to_vec(), batch.attempt()));
            r.calls.len() - 1
        };
        let result = (self.answer)(index, batch);
        let mut r = self.record.lock();
        match &result {
            Ok(()) => r
                .delivered
                .extend(batch.iter_with_seq().map(|(s, t)| (s, t.clone()))),
            Err(e) => {
                if let Some(failed) = e.failed_indices() {
                    let ok = batch
                        .iter_with_seq()
                        .enumerate()
                        .filter(|(i, _)| !failed.contains(i))
                        .map(|(_, (s, t))| (s, t.clone()));
                    if failed.iter().any(|&i| i < batch.len()) {
                        r.delivered.extend(ok);
                    }
                }
            }
        }
        result
    }

    fn on_dead_letter(&mut self, letter: DeadLetter<T>) {
        self.record
            .lock()
            .dead
            .push((letter.seqs().to_vec(), letter.to_vec(), letter.reason()));
    }
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    cond()
}

/// Seeds a simulation runs: `VQ_SIM_SEEDS` if set, else `default` (what the test
/// affords in `cargo test`; docs/reliability.md gives the long runs).
pub fn seeds(default: u64) -> u64 {
    std::env::var("VQ_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
