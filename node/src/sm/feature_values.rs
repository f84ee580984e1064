//! A feature-store shard's values (table `features`): the offline store, append-only rows
//! keyed by view, entity, event time, created time and the log position that wrote them; and
//! the online store, one value per view and entity.
//!
//! Invariants:
//! - an offline row is never changed or removed by a push, so a read filtered to the rows
//!   written at or before a log position reads the same later, whatever arrived since;
//! - an online value is replaced only by a row with a later event (or an equal event created
//!   no earlier), decided in the state machine, so every replica holds the newest event
//!   whatever order pushes arrived in.

use std::collections::BTreeMap;

use quiver_core::features::{FeaturesAnswer, FeaturesCommand, HistoricalLookup, OnlineLookup};
use quiver_core::{Error, Result};
use quiver_features::online::OnlineValue;
use quiver_features::pit::{self, PitQuery};
use quiver_features::row::{entity_prefix, row_suffix, stamp_of, RowStamp, StoredValues};
use quiver_features::EntityKey;

use super::{decode, encode, AppliedRecord, APPLIED_KEY};
use crate::storage::{Storage, Table, WriteBatch};

const OFFLINE: u8 = b'o';
const ONLINE: u8 = b'n';

fn offline_prefix(view_id: u64, key: &EntityKey) -> Vec<u8> {
    [&[OFFLINE][..], &entity_prefix(view_id, key)].concat()
}

fn online_key(view_id: u64, key: &EntityKey) -> Vec<u8> {
    [&[ONLINE][..], &entity_prefix(view_id, key)].concat()
}

/// Fills `batch` with a push applied at log position `index`; returns the rows it wrote.
pub fn plan(
    storage: &dyn Storage,
    index: u64,
    command: &FeaturesCommand,
    batch: &mut WriteBatch,
) -> Result<u64> {
    let FeaturesCommand::Push {
        view_id,
        version,
        rows,
        offline,
        online,
    } = command;
    if *offline {
        for (ordinal, row) in rows.iter().enumerate() {
            let stamp = RowStamp {
                event_ts: row.event_ts,
                created_ts: row.created_ts,
                index,
            };
            let key = [
                offline_prefix(*view_id, &row.key),
                row_suffix(stamp, ordinal as u32).to_vec(),
            ]
            .concat();
            let stored = StoredValues {
                version: *version,
                values: row.values.clone(),
            };
            batch.put(Table::Features, key, encode(&stored)?);
        }
    }
    if *online {
        // The newest row of each entity in the push (a later one wins a tie)...
        let mut newest: BTreeMap<&EntityKey, usize> = BTreeMap::new();
        for (i, row) in rows.iter().enumerate() {
            let best = newest.entry(&row.key).or_insert(i);
            let held = &rows[*best];
            if (row.event_ts, row.created_ts) >= (held.event_ts, held.created_ts) {
                *best = i;
            }
        }
        // ... replaces the value held only if it is newer still.
        let keys: Vec<Vec<u8>> = newest.keys().map(|k| online_key(*view_id, k)).collect();
        let held = storage.multi_get(Table::Features, &keys)?;
        for ((_, &i), (key, held)) in newest.iter().zip(keys.into_iter().zip(held)) {
            let row = &rows[i];
            if let Some(bytes) = held {
                let held: OnlineValue = decode(&bytes)?;
                if !held.replaced_by(row.event_ts, row.created_ts) {
                    continue;
                }
            }
            let value = OnlineValue {
                event_ts: row.event_ts,
                created_ts: row.created_ts,
                version: *version,
                values: row.values.clone(),
            };
            batch.put(Table::Features, key, encode(&value)?);
        }
    }
    Ok(rows.len() as u64)
}

/// The online values `lookups` ask for.
pub fn read_online(storage: &dyn Storage, lookups: &[OnlineLookup]) -> Result<FeaturesAnswer> {
    let mut found = Vec::with_capacity(lookups.len());
    for lookup in lookups {
        let keys: Vec<Vec<u8>> = lookup
            .keys
            .iter()
            .map(|k| online_key(lookup.view_id, k))
            .collect();
        let values = storage
            .multi_get(Table::Features, &keys)?
            .into_iter()
            .map(|v| v.map(|bytes| decode::<OnlineValue>(&bytes)).transpose())
            .collect::<Result<Vec<_>>>()?;
        found.push(values);
    }
    Ok(FeaturesAnswer::Online(found))
}

/// The log position this replica's state has applied (0: none).
fn applied_index(storage: &dyn Storage) -> Result<u64> {
    Ok(match storage.get(Table::Meta, APPLIED_KEY)? {
        Some(bytes) => decode::<AppliedRecord>(&bytes)?.index.unwrap_or(0),
        None => 0,
    })
}

/// The point-in-time selections `lookups` ask for, read as of log position `at_index` (None:
/// what is applied now; the position read at is answered either way). A position this replica
/// has not applied yet is refused as unavailable, so the caller asks the leader.
pub fn read_historical(
    storage: &dyn Storage,
    lookups: &[HistoricalLookup],
    at_index: Option<u64>,
) -> Result<FeaturesAnswer> {
    let applied = applied_index(storage)?;
    let index = match at_index {
        Some(pinned) if pinned > applied => {
            return Err(Error::Unavailable(format!(
                "this replica has applied the log up to {applied}; the read is pinned at {pinned}"
            )))
        }
        Some(pinned) => pinned,
        None => applied,
    };
    let mut found = Vec::with_capacity(lookups.len());
    for lookup in lookups {
        let mut answers = vec![None; lookup.rows.len()];
        // Each entity's rows are read once, for all of its entity rows.
        let mut by_key: BTreeMap<&EntityKey, Vec<usize>> = BTreeMap::new();
        for (i, (key, _)) in lookup.rows.iter().enumerate() {
            by_key.entry(key).or_default().push(i);
        }
        for (key, wanted) in by_key {
            let prefix = offline_prefix(lookup.view_id, key);
            let mut stamps = Vec::new();
            let mut values = Vec::new();
            storage.for_each(Table::Features, &prefix, &mut |k, v| {
                if let Some(stamp) = stamp_of(&k[prefix.len()..]) {
                    stamps.push(stamp);
                    values.push(v.to_vec());
                }
                Ok(true)
            })?;
            for i in wanted {
                let query = PitQuery {
                    at: lookup.rows[i].1,
                    ttl_seconds: lookup.ttl_seconds,
                    known_at: lookup.known_at,
                    max_index: Some(index),
                };
                if let Some(chosen) = pit::select(&stamps, &query) {
                    let stored: StoredValues = decode(&values[chosen])?;
                    answers[i] = Some(OnlineValue {
                        event_ts: stamps[chosen].event_ts,
                        created_ts: stamps[chosen].created_ts,
                        version: stored.version,
                        values: stored.values,
                    });
                }
            }
        }
        found.push(answers);
    }
    Ok(FeaturesAnswer::Historical { index, found })
}
