//! A shard group leader's write fence: the cut of a snapshot, and the pause of a leadership
//! handover.
//!
//! While a fence is held, writes arriving at this replica wait (until it is lifted, or their
//! deadline). [`WriteFence::hold`] returns once every write that got past the fence before it was
//! raised has been applied, so the state then is exactly the writes accepted so far. A hold
//! lifts by itself after its time to live, so a coordinator that dies cannot stall a shard.
//! The fence is this replica's memory only: a new leader has none, which
//! [`WriteFence::release`] reports, so the snapshot that relied on it is refused.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use quiver_core::{Error, Result};

/// How often waiters look at the fence again.
const POLL: Duration = Duration::from_millis(2);

#[derive(Debug)]
struct Hold {
    token: String,
    until: Instant,
    /// The Raft term the hold was raised in.
    term: u64,
}

/// Writes in flight, and the hold (if any) they wait behind.
#[derive(Debug, Default)]
pub struct WriteFence {
    hold: Mutex<Option<Hold>>,
    in_flight: AtomicUsize,
}

/// A write past the fence; the fence's holder waits for it to be dropped.
pub struct Passed<'a>(&'a WriteFence);

impl Drop for Passed<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl WriteFence {
    /// Whether a hold is in force now.
    fn held(&self) -> bool {
        self.hold
            .lock()
            .as_ref()
            .is_some_and(|h| h.until > Instant::now())
    }

    /// Lets a write past once no hold is in force, or fails at `deadline`.
    pub async fn pass(&self, deadline: Instant) -> Result<Passed<'_>> {
        loop {
            // Counted first, then checked: a hold raised meanwhile waits for this write.
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            let passed = Passed(self);
            if !self.held() {
                return Ok(passed);
            }
            drop(passed);
            if Instant::now() >= deadline {
                return Err(Error::Unavailable(
                    "writes to this shard are held (a snapshot, or a leadership handover); \
                     retry"
                        .into(),
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Raises a hold named `token` for `ttl` (replacing an expired one), then waits until the
    /// writes already past the fence are done.
    pub async fn hold(&self, token: &str, ttl: Duration, term: u64) -> Result<()> {
        let until = Instant::now() + ttl;
        {
            let mut hold = self.hold.lock();
            if let Some(h) = hold.as_ref() {
                if h.until > Instant::now() && h.token != token {
                    return Err(Error::Unavailable(
                        "this shard's writes are held already (a snapshot, or a leadership \
                         handover); retry"
                            .into(),
                    ));
                }
            }
            *hold = Some(Hold {
                token: token.to_string(),
                until,
                term,
            });
        }
        while self.in_flight.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= until {
                self.release(token, term);
                return Err(Error::Unavailable(
                    "writes in flight did not finish before the hold expired".into(),
                ));
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    /// Extends the hold named `token` to `ttl` from now. Refused unless it is in force and was
    /// raised in `term` (a renewal never raises a hold: writes may have gone in without one).
    pub fn renew(&self, token: &str, ttl: Duration, term: u64) -> Result<()> {
        let mut hold = self.hold.lock();
        match hold.as_mut() {
            Some(h) if h.token == token && h.until > Instant::now() && h.term == term => {
                h.until = Instant::now() + ttl;
                Ok(())
            }
            _ => Err(Error::Unavailable(
                "the hold on this shard's writes lapsed (expired, or the leader changed)".into(),
            )),
        }
    }

    /// Whether a hold named `token` is set (in force or expired, not yet released).
    pub fn holds(&self, token: &str) -> bool {
        self.hold.lock().as_ref().is_some_and(|h| h.token == token)
    }

    /// Lifts the hold named `token`. True if it was in force until now, raised in `term`.
    pub fn release(&self, token: &str, term: u64) -> bool {
        let mut hold = self.hold.lock();
        match hold.as_ref() {
            Some(h) if h.token == token => {
                let held = h.until > Instant::now() && h.term == term;
                *hold = None;
                held
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hold_waits_for_writes_in_flight_and_holds_new_ones() {
        let fence = std::sync::Arc::new(WriteFence::default());
        let soon = || Instant::now() + Duration::from_secs(5);
        let in_flight = fence.pass(soon()).await.unwrap();
        let holder = {
            let fence = fence.clone();
            tokio::spawn(async move { fence.hold("s1", Duration::from_secs(5), 3).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !holder.is_finished(),
            "the hold waits for the write in flight"
        );
        drop(in_flight);
        holder.await.unwrap().unwrap();

        // a write now waits; it fails at its deadline, or passes once the hold is lifted
        let refused = fence.pass(Instant::now() + Duration::from_millis(20)).await;
        assert!(refused.is_err());
        let waiting = {
            let fence = fence.clone();
            tokio::spawn(async move { fence.pass(soon()).await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        assert!(
            fence.hold("s2", Duration::from_secs(5), 3).await.is_err(),
            "one hold at a time"
        );
        assert!(fence.release("s1", 3), "held throughout");
        waiting.await.unwrap().unwrap();
        assert!(!fence.release("s1", 3), "released once");
    }

    #[tokio::test]
    async fn an_expired_hold_or_a_new_term_is_reported_as_not_held() {
        let fence = WriteFence::default();
        fence.hold("s", Duration::from_millis(10), 1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        // expired: writes pass again, and the snapshot learns it was not held
        fence.pass(Instant::now()).await.unwrap();
        assert!(!fence.release("s", 1));
        fence.hold("t", Duration::from_secs(5), 1).await.unwrap();
        assert!(!fence.release("t", 2), "leadership changed meanwhile");
    }

    #[tokio::test]
    async fn a_renewal_extends_a_hold_in_force_and_never_raises_one() {
        let fence = WriteFence::default();
        assert!(
            fence.renew("s", Duration::from_secs(1), 1).is_err(),
            "no hold to renew"
        );
        fence.hold("s", Duration::from_millis(30), 1).await.unwrap();
        fence.renew("s", Duration::from_secs(5), 1).unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(
            fence.renew("s", Duration::from_secs(5), 2).is_err(),
            "another term"
        );
        assert!(
            fence.release("s", 1),
            "still held, past its first time to live"
        );
        fence.hold("t", Duration::from_millis(10), 1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(
            fence.renew("t", Duration::from_secs(5), 1).is_err(),
            "lapsed"
        );
    }
}
