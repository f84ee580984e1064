//! Recording client operations on keyed registers.
//!
//! A [`Recorder`] is shared by all clients of a test (it is cheap to clone and
//! thread-safe). Each client calls [`Recorder::invoke`] just *before* sending a
//! request and [`Recorder::complete`] just *after* the response (or the error)
//! is known. Times are nanoseconds since the recorder was created, taken from
//! the monotonic clock ([`Instant`]).
//!
//! The resulting [`Recorder::history`] is what the checker in
//! [`crate::linearizability`] consumes. Outcomes mean:
//!
//! * [`Outcome::Ok`] / [`Outcome::Value`]: the operation took effect between
//!   its invoke and complete times.
//! * [`Outcome::Failed`]: the operation certainly did *not* take effect
//!   (for example it was refused before being applied).
//! * [`Outcome::Unknown`]: the operation may or may not have taken effect, at
//!   any time after its invoke (timeout, dropped connection). An operation that
//!   was invoked but never completed is also `Unknown`.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// An operation on a single register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Overwrite the register with a value.
    Put(i64),
    /// Read the register.
    Get,
}

/// What the client learned about an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A put was applied.
    Ok,
    /// A get returned this value (`None` = key absent).
    Value(Option<i64>),
    /// The operation certainly did not take effect.
    Failed,
    /// The operation may or may not have taken effect.
    Unknown,
}

/// One recorded operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Client (thread / connection) that issued the operation.
    pub client: usize,
    /// Register the operation addressed.
    pub key: u64,
    /// The operation itself.
    pub op: Op,
    /// What the client learned.
    pub outcome: Outcome,
    /// Invoke time, nanoseconds since the recorder started.
    pub invoked: u128,
    /// Completion time; `None` if the operation never completed. For
    /// `Unknown` outcomes the time is kept for information only: the checker
    /// treats such operations as never completing.
    pub completed: Option<u128>,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Put(v) => write!(f, "put({v})"),
            Op::Get => write!(f, "get"),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => write!(f, "ok"),
            Outcome::Value(Some(v)) => write!(f, "-> {v}"),
            Outcome::Value(None) => write!(f, "-> absent"),
            Outcome::Failed => write!(f, "failed"),
            Outcome::Unknown => write!(f, "unknown"),
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "client {} key {} {} {} [{}, ",
            self.client, self.key, self.op, self.outcome, self.invoked
        )?;
        match (self.outcome, self.completed) {
            (Outcome::Unknown, _) | (_, None) => write!(f, "inf)"),
            (_, Some(t)) => write!(f, "{t}]"),
        }
    }
}

/// Handle for an invoked operation; pass it back to [`Recorder::complete`].
#[derive(Debug)]
#[must_use = "complete the operation with Recorder::complete"]
pub struct Ticket(usize);

/// Thread-safe, cloneable recorder of a history of operations.
#[derive(Clone, Debug)]
pub struct Recorder {
    start: Instant,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// Creates an empty recorder; times are measured from now.
    pub fn new() -> Self {
        Recorder {
            start: Instant::now(),
            events: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Nanoseconds since the recorder was created (the clock every event uses).
    pub fn now(&self) -> u128 {
        self.start.elapsed().as_nanos()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Event>> {
        // A panicking client must not hide the rest of the history.
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `client` is about to issue `op` on `key`.
    pub fn invoke(&self, client: usize, key: u64, op: Op) -> Ticket {
        let invoked = self.now();
        let mut events = self.lock();
        events.push(Event {
            client,
            key,
            op,
            outcome: Outcome::Unknown,
            invoked,
            completed: None,
        });
        Ticket(events.len() - 1)
    }

    /// Records the outcome of a previously invoked operation.
    pub fn complete(&self, ticket: Ticket, outcome: Outcome) {
        let completed = self.now();
        let mut events = self.lock();
        let event = &mut events[ticket.0];
        event.outcome = outcome;
        event.completed = Some(completed);
    }

    /// A snapshot of all operations recorded so far, in invoke order.
    /// Operations not yet completed appear as `Unknown`.
    pub fn history(&self) -> Vec<Event> {
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn records_invoke_and_complete() {
        let rec = Recorder::new();
        let t = rec.invoke(1, 7, Op::Put(3));
        rec.complete(t, Outcome::Ok);
        let t = rec.invoke(2, 7, Op::Get);
        rec.complete(t, Outcome::Value(Some(3)));

        let h = rec.history();
        assert_eq!(h.len(), 2);
        assert_eq!((h[0].client, h[0].key, h[0].op), (1, 7, Op::Put(3)));
        assert_eq!(h[0].outcome, Outcome::Ok);
        assert_eq!(h[1].outcome, Outcome::Value(Some(3)));
        let c0 = h[0].completed.unwrap();
        assert!(h[0].invoked <= c0 && c0 <= h[1].invoked);
        assert!(h[1].invoked <= h[1].completed.unwrap());
    }

    #[test]
    fn never_completed_is_unknown() {
        let rec = Recorder::new();
        let _pending = rec.invoke(0, 1, Op::Put(5));
        let h = rec.history();
        assert_eq!(h[0].outcome, Outcome::Unknown);
        assert_eq!(h[0].completed, None);
        assert!(h[0].to_string().ends_with("inf)"));
    }

    #[test]
    fn shared_across_threads() {
        let rec = Recorder::new();
        let handles: Vec<_> = (0..4)
            .map(|c| {
                let rec = rec.clone();
                thread::spawn(move || {
                    for i in 0..100 {
                        let t = rec.invoke(c, 0, Op::Put(i));
                        rec.complete(t, Outcome::Ok);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let h = rec.history();
        assert_eq!(h.len(), 400);
        assert!(h.iter().all(|e| e.outcome == Outcome::Ok));
    }
}
