//! A batch's result from what became of each of its items, for the sinks that send one
//! message per item (NATS, RabbitMQ).

use vinequeue_core::{Batch, SendError};

/// What became of one item.
pub(crate) enum Outcome {
    /// The backend has it (or dropped it as a copy of one it has).
    Stored,
    /// Not acknowledged: worth another try.
    Failed(String),
    /// The item itself cannot be sent.
    Refused(String),
}

/// `Ok` when every item is stored; `partial` naming the others when some are;
/// `permanent` when none is and every one was refused; `retry` otherwise. An item
/// without an outcome counts as failed. The message names the first failed item.
pub(crate) fn verdict<T>(
    backend: &str,
    outcomes: &[Option<Outcome>],
    batch: &Batch<T>,
) -> Result<(), SendError> {
    let mut failed = Vec::new();
    let mut refused = 0;
    let mut why = String::new();
    for (i, outcome) in outcomes.iter().enumerate() {
        let text = match outcome {
            Some(Outcome::Stored) => continue,
            Some(Outcome::Refused(text)) => {
                refused += 1;
                text
            }
            Some(Outcome::Failed(text)) => text,
            None => "not published",
        };
        if failed.is_empty() {
            why = format!("{backend}: item {i} (key {}): {text}", batch.key(i).1);
        }
        failed.push(i);
    }
    match failed.len() {
        0 => Ok(()),
        n if n == batch.len() && refused == n => Err(SendError::permanent(why)),
        n if n == batch.len() => Err(SendError::retry(why)),
        _ => Err(SendError::partial(failed, why)),
    }
}
