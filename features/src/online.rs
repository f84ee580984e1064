//! The online store's rules: which value an entity's view holds, and how a read sees it.
//!
//! A write replaces the held value only if its event time is later (or equal, with a created
//! time at least as late), so whatever order rows arrive in, the newest event wins. A read
//! reports each feature as present, null, not found, or outside the view's ttl (measured from
//! the value's event time to the reader's clock: reads are not replicated, so no replica's
//! state depends on it).

use serde::{Deserialize, Serialize};

use crate::value::{Micros, Value};

/// The value held online for one entity of one view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnlineValue {
    pub event_ts: Micros,
    pub created_ts: Micros,
    /// The view version whose fields `values` follows.
    pub version: u64,
    pub values: Vec<Value>,
}

impl OnlineValue {
    /// Whether a write with these stamps replaces `self`.
    pub fn replaced_by(&self, event_ts: Micros, created_ts: Micros) -> bool {
        (event_ts, created_ts) >= (self.event_ts, self.created_ts)
    }
}

/// How an online read found a feature (Feast's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FeatureStatus {
    Present,
    /// The entity has no value for the view.
    NotFound,
    /// The value held is null.
    Null,
    /// The value is older than the view's ttl.
    OutsideMaxAge,
}

impl FeatureStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FeatureStatus::Present => "PRESENT",
            FeatureStatus::NotFound => "NOT_FOUND",
            FeatureStatus::Null => "NULL",
            FeatureStatus::OutsideMaxAge => "OUTSIDE_MAX_AGE",
        }
    }
}

/// How a read at `now` sees `value` of a view with `ttl_seconds` (0: never expires).
pub fn status(value: &Value, event_ts: Micros, ttl_seconds: u64, now: Micros) -> FeatureStatus {
    let ttl = i64::try_from(ttl_seconds)
        .unwrap_or(i64::MAX)
        .saturating_mul(1_000_000);
    if ttl_seconds > 0 && now.saturating_sub(event_ts) > ttl {
        FeatureStatus::OutsideMaxAge
    } else if value.is_null() {
        FeatureStatus::Null
    } else {
        FeatureStatus::Present
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_event_never_replaces_a_newer_one() {
        let held = OnlineValue {
            event_ts: 100,
            created_ts: 100,
            version: 1,
            values: vec![Value::Int64(1)],
        };
        assert!(!held.replaced_by(99, 1_000));
        assert!(!held.replaced_by(100, 99));
        assert!(held.replaced_by(100, 100));
        assert!(held.replaced_by(101, 0));
    }

    #[test]
    fn ttl_applies_on_reads() {
        let s = 1_000_000;
        let v = Value::Int64(3);
        assert_eq!(status(&v, 0, 10, 10 * s), FeatureStatus::Present);
        assert_eq!(status(&v, 0, 10, 10 * s + 1), FeatureStatus::OutsideMaxAge);
        assert_eq!(status(&v, 0, 0, i64::MAX), FeatureStatus::Present);
        assert_eq!(status(&Value::Null, 0, 0, 0), FeatureStatus::Null);
    }
}
