//! How the embedding of a collection's points goes on one replica: points embedded (as their
//! vectors are applied), points whose text could not be embedded, the recent rate and the last
//! error. The waiting points themselves are the collection's [`super::Points::unembedded`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The window the rate is measured over.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Counts of a collection's embedding on this replica since it opened.
#[derive(Debug, Default)]
pub struct EmbeddingProgress {
    embedded: AtomicU64,
    from_cache: AtomicU64,
    failed: AtomicU64,
    /// When points were embedded lately, and how many.
    recent: Mutex<VecDeque<(Instant, u64)>>,
    last_error: Mutex<Option<String>>,
}

/// A snapshot of [`EmbeddingProgress`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EmbeddingCounts {
    pub embedded: u64,
    /// Of those, points whose vector the embedding cache held (counted by the leader).
    pub from_cache: u64,
    pub failed: u64,
    /// Points embedded per second over the last ten seconds.
    pub per_second: f64,
    pub last_error: Option<String>,
}

impl EmbeddingProgress {
    /// `n` points got their vectors.
    pub fn embedded(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.embedded.fetch_add(n, Ordering::Relaxed);
        let now = Instant::now();
        let mut recent = self.recent.lock();
        recent.push_back((now, n));
        while recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            recent.pop_front();
        }
    }

    /// The vectors of `n` points the leader is writing came from the cache.
    pub fn from_cache(&self, n: u64) {
        self.from_cache.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` points' text could not be embedded, for `error`.
    pub fn failed(&self, n: u64, error: String) {
        self.failed.fetch_add(n, Ordering::Relaxed);
        *self.last_error.lock() = Some(error);
    }

    /// The embedder works again.
    pub fn recovered(&self) {
        *self.last_error.lock() = None;
    }

    pub fn counts(&self) -> EmbeddingCounts {
        let now = Instant::now();
        let recent: u64 = self
            .recent
            .lock()
            .iter()
            .filter(|(t, _)| now.duration_since(*t) <= RATE_WINDOW)
            .map(|(_, n)| n)
            .sum();
        EmbeddingCounts {
            embedded: self.embedded.load(Ordering::Relaxed),
            from_cache: self.from_cache.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            per_second: recent as f64 / RATE_WINDOW.as_secs_f64(),
            last_error: self.last_error.lock().clone(),
        }
    }
}
