//! Feature rows: as pushed (typed against a view's schema) and as the offline store keys them.
//!
//! An offline row's key sorts the rows of one entity of one view by event time, then created
//! time, then the log position that wrote it; the log position is what lets a read be pinned
//! to a position and re-read identically later ([`crate::pit`]).

use serde::{Deserialize, Serialize};

use crate::key::EntityKey;
use crate::value::{Micros, Value};

/// A row as pushed: one entity's values of a view's fields at an event time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureRow {
    pub key: EntityKey,
    pub event_ts: Micros,
    /// When the row became known (the push's time unless the row says).
    pub created_ts: Micros,
    /// In the order of the fields of the view version the push was checked against.
    pub values: Vec<Value>,
}

/// A row's values as stored, with the view version whose fields they follow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredValues {
    pub version: u64,
    pub values: Vec<Value>,
}

/// The stamps that order one entity's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RowStamp {
    pub event_ts: Micros,
    pub created_ts: Micros,
    /// The log position that wrote the row.
    pub index: u64,
}

/// A signed time as bytes that sort as the times do.
fn time_bytes(t: Micros) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

fn time_from(bytes: &[u8]) -> Micros {
    (u64::from_be_bytes(bytes.try_into().unwrap_or([0; 8])) ^ (1 << 63)) as i64
}

/// The prefix of every offline row of one entity of view `view_id`.
pub fn entity_prefix(view_id: u64, key: &EntityKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + key.0.len());
    out.extend_from_slice(&view_id.to_be_bytes());
    out.extend_from_slice(&(key.0.len() as u32).to_be_bytes());
    out.extend_from_slice(&key.0);
    out
}

/// The key of an offline row (under [`entity_prefix`]): its stamps, then `ordinal`, the row's
/// place in the command that wrote it (so two rows with equal stamps both stay).
pub fn row_suffix(stamp: RowStamp, ordinal: u32) -> [u8; 28] {
    let mut out = [0; 28];
    out[..8].copy_from_slice(&time_bytes(stamp.event_ts));
    out[8..16].copy_from_slice(&time_bytes(stamp.created_ts));
    out[16..24].copy_from_slice(&stamp.index.to_be_bytes());
    out[24..].copy_from_slice(&ordinal.to_be_bytes());
    out
}

/// The stamps a row's key suffix holds (None: not a row key).
pub fn stamp_of(suffix: &[u8]) -> Option<RowStamp> {
    (suffix.len() == 28).then(|| RowStamp {
        event_ts: time_from(&suffix[..8]),
        created_ts: time_from(&suffix[8..16]),
        index: u64::from_be_bytes(suffix[16..24].try_into().unwrap_or([0; 8])),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_keys_sort_by_event_then_created_then_position() {
        let stamps = [
            RowStamp {
                event_ts: -5,
                created_ts: 9,
                index: 1,
            },
            RowStamp {
                event_ts: 0,
                created_ts: 0,
                index: 9,
            },
            RowStamp {
                event_ts: 0,
                created_ts: 1,
                index: 2,
            },
            RowStamp {
                event_ts: 0,
                created_ts: 1,
                index: 3,
            },
            RowStamp {
                event_ts: i64::MAX,
                created_ts: i64::MIN,
                index: 0,
            },
        ];
        let keys: Vec<_> = stamps.iter().map(|s| row_suffix(*s, 0)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        for (s, k) in stamps.iter().zip(&keys) {
            assert_eq!(stamp_of(k), Some(*s));
        }
    }
}
