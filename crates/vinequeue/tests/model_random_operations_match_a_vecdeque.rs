//! Random sequences of enqueue / flush / stop against a scripted sink that fails,
//! partially fails, refuses and panics, checked against a `VecDeque` model: every item is
//! resolved exactly once (delivered or dead-lettered), batches come in FIFO order, and
//! retries carry exactly the items the model expects.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use proptest::prelude::*;
use vinequeue::{
    Batch, Config, DeadLetter, DeadLetterReason, EnqueueError, OverflowPolicy, Queue, SendError,
    Sink,
};

#[derive(Debug, Clone)]
enum Answer {
    Ok,
    Retry,
    /// Bit `i` set = item `i` failed.
    Partial(u8),
    Permanent,
    Panic,
}

#[derive(Debug, Clone)]
enum Op {
    Enqueue(u8),
    Flush,
    Pause(u8),
    Stop,
}

#[derive(Debug)]
enum Event {
    Send {
        seqs: Vec<u64>,
        items: Vec<u64>,
        attempt: u32,
        answer: Answer,
    },
    Dead {
        seqs: Vec<u64>,
        reason: DeadLetterReason,
    },
}

struct ScriptedSink {
    script: VecDeque<Answer>,
    log: Arc<Mutex<Vec<Event>>>,
}

impl Sink<u64> for ScriptedSink {
    fn send(&mut self, batch: &Batch<u64>) -> Result<(), SendError> {
        let answer = self.script.pop_front().unwrap_or(Answer::Ok);
        self.log.lock().push(Event::Send {
            seqs: batch.seqs().to_vec(),
            items: batch.to_vec(),
            attempt: batch.attempt(),
            answer: answer.clone(),
        });
        match answer {
            Answer::Ok => Ok(()),
            Answer::Retry => Err(SendError::retry("scripted retry")),
            Answer::Partial(mask) => Err(SendError::partial(
                (0..8).filter(|i| mask & (1 << i) != 0),
                "scripted partial",
            )),
            Answer::Permanent => Err(SendError::permanent("scripted permanent")),
            Answer::Panic => panic!("scripted panic"),
        }
    }

    fn on_dead_letter(&mut self, letter: DeadLetter<u64>) {
        self.log.lock().push(Event::Dead {
            seqs: letter.seqs().to_vec(),
            reason: letter.reason(),
        });
    }
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        4 => Just(Answer::Ok),
        2 => Just(Answer::Retry),
        2 => any::<u8>().prop_map(Answer::Partial),
        1 => Just(Answer::Permanent),
        1 => Just(Answer::Panic),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..24).prop_map(Op::Enqueue),
        2 => Just(Op::Flush),
        1 => (0u8..4).prop_map(Op::Pause),
        1 => Just(Op::Stop),
    ]
}

/// What the model expects next from the batcher.
enum Expect {
    /// A new batch: the next items from the front of the model queue.
    NewBatch,
    /// A retry of exactly these seqs with this attempt number.
    Retry(Vec<u64>, u32),
    /// A dead letter of exactly these seqs for this reason.
    Dead(Vec<u64>, DeadLetterReason),
}

fn check(
    log: &[Event],
    mut model: VecDeque<u64>,
    batch_size: usize,
    retry_limit: u32,
) -> Result<(Vec<u64>, Vec<u64>), TestCaseError> {
    let mut delivered = Vec::new();
    let mut dead = Vec::new();
    let mut expect = Expect::NewBatch;
    for event in log {
        match (event, &expect) {
            (
                Event::Send {
                    seqs,
                    items,
                    attempt,
                    answer,
                },
                _,
            ) => {
                prop_assert!(!seqs.is_empty() && seqs.len() <= batch_size);
                for (s, v) in seqs.iter().zip(items) {
                    prop_assert_eq!(*s, v + 1, "seq must identify the item");
                }
                match &expect {
                    Expect::NewBatch => {
                        prop_assert_eq!(*attempt, 0);
                        for s in seqs {
                            prop_assert_eq!(
                                model.pop_front(),
                                Some(*s),
                                "batch is not the FIFO front"
                            );
                        }
                    }
                    Expect::Retry(want, want_attempt) => {
                        prop_assert_eq!(seqs, want);
                        prop_assert_eq!(attempt, want_attempt);
                    }
                    Expect::Dead(..) => prop_assert!(false, "sent while a dead letter was due"),
                }
                let mut failed = seqs.clone();
                match answer {
                    Answer::Ok => {
                        delivered.extend(seqs);
                        expect = Expect::NewBatch;
                        continue;
                    }
                    Answer::Permanent => {
                        expect = Expect::Dead(seqs.clone(), DeadLetterReason::Permanent);
                        continue;
                    }
                    Answer::Retry | Answer::Panic => {}
                    Answer::Partial(mask) => {
                        let bad: Vec<usize> = (0..seqs.len())
                            .filter(|&i| i < 8 && mask & (1 << i) != 0)
                            .collect();
                        if !bad.is_empty() {
                            failed = bad.iter().map(|&i| seqs[i]).collect();
                            delivered.extend(
                                seqs.iter()
                                    .enumerate()
                                    .filter(|(i, _)| !bad.contains(i))
                                    .map(|(_, s)| *s),
                            );
                        }
                    }
                }
                expect = if *attempt >= retry_limit {
                    Expect::Dead(failed, DeadLetterReason::RetriesExhausted)
                } else {
                    Expect::Retry(failed, attempt + 1)
                };
            }
            (Event::Dead { seqs, reason }, Expect::Dead(want, want_reason)) => {
                prop_assert_eq!(seqs, want);
                prop_assert_eq!(reason, want_reason);
                dead.extend(seqs);
                expect = Expect::NewBatch;
            }
            (Event::Dead { .. }, _) => prop_assert!(false, "unexpected dead letter"),
        }
    }
    prop_assert!(
        matches!(expect, Expect::NewBatch),
        "a batch was left unresolved"
    );
    prop_assert!(
        model.is_empty(),
        "items never reached the sink: {:?}",
        model
    );
    Ok((delivered, dead))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_resolve_every_item_exactly_once_in_order(
        batch_size in 1usize..6,
        extra_memory in 0usize..24,
        retry_limit in 0u32..3,
        script in proptest::collection::vec(answer(), 0..30),
        ops in proptest::collection::vec(op(), 1..16),
    ) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = ScriptedSink { script: script.into(), log: Arc::clone(&log) };
        let config = Config::default()
            .batch_size(batch_size)
            .memory_size(batch_size + extra_memory)
            .flush_timeout(Duration::from_millis(2))
            .retry_limit(retry_limit)
            .retry_backoff(Duration::from_micros(200), Duration::from_millis(1))
            .overflow(OverflowPolicy::Block(Duration::from_secs(30)));
        let queue = Queue::new(config, sink).unwrap();
        queue.start().unwrap();
        let mut model = VecDeque::new();
        let mut next = 0u64;
        let mut stopped = false;
        for op in ops {
            match op {
                Op::Enqueue(n) => {
                    for _ in 0..n {
                        match queue.enqueue(next) {
                            Ok(()) => {
                                prop_assert!(!stopped);
                                model.push_back(next + 1);
                                next += 1;
                            }
                            Err(EnqueueError::Closed(v)) => {
                                prop_assert!(stopped);
                                prop_assert_eq!(v, next);
                            }
                            Err(e) => prop_assert!(false, "unexpected {:?}", e),
                        }
                    }
                }
                Op::Flush => {
                    if !stopped {
                        queue.flush(Duration::from_secs(30)).unwrap();
                    }
                }
                Op::Pause(ms) => std::thread::sleep(Duration::from_millis(ms as u64)),
                Op::Stop => {
                    queue.stop().unwrap();
                    stopped = true;
                }
            }
        }
        queue.stop().unwrap();
        let log = log.lock();
        let (delivered, dead) = check(&log, model, batch_size, retry_limit)?;
        let mut all: Vec<u64> = delivered.iter().chain(&dead).copied().collect();
        all.sort_unstable();
        prop_assert_eq!(all, (1..=next).collect::<Vec<_>>(), "each item exactly once");
        let m = queue.metrics();
        prop_assert_eq!(m.enqueued_total, next);
        prop_assert_eq!(m.sent_total, delivered.len() as u64);
        prop_assert_eq!(m.dead_lettered_total, dead.len() as u64);
        prop_assert_eq!(m.pending, 0);
    }
}

#[test]
fn silence_scripted_panics() {
    // Keep the scripted panics from flooding the output of the property test.
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let scripted = info
            .payload()
            .downcast_ref::<&str>()
            .is_some_and(|s| *s == "scripted panic");
        if !scripted {
            default(info);
        }
    }));
}
