//! A feature-store shard's values (table `features`): the offline store, append-only rows
//! keyed by view, entity, event time, created time and the log position that wrote them; and
//! the online store, one value per view and entity; and a marker per entity pushed offline
//! only, which an incremental materialisation clears once it has made the entity online; and
//! per view, day and feature, the statistics of the offline rows ([`Summary`], mergeable).
//!
//! Invariants:
//! - an offline row is never changed or removed by a push, so a read filtered to the rows
//!   written at or before a log position reads the same later, whatever arrived since;
//! - an online value is replaced only by a row with a later event (or an equal event created
//!   no earlier), decided in the state machine, so every replica holds the newest event
//!   whatever order pushes arrived in; a materialisation follows the same rule, so it never
//!   moves a value back, and running it again (after a crash, a leader change) changes nothing
//!   more.

use std::collections::BTreeMap;

use quiver_core::features::{
    day_of, FeaturesAnswer, FeaturesCommand, HistoricalLookup, OnlineLookup,
};
use quiver_core::{Error, Result};
use quiver_features::online::OnlineValue;
use quiver_features::pit::{self, PitQuery};
use quiver_features::row::{
    entity_prefix, row_suffix, stamp_of, FeatureRow, RowStamp, StoredValues,
};
use quiver_features::stats::Summary;
use quiver_features::value::Micros;
use quiver_features::EntityKey;
use quiver_features::Value;

use super::{decode, encode, AppliedRecord, APPLIED_KEY};
use crate::storage::{Storage, Table, WriteBatch};

const OFFLINE: u8 = b'o';
const ONLINE: u8 = b'n';
const PENDING: u8 = b'p';
const STATS: u8 = b's';

fn offline_prefix(view_id: u64, key: &EntityKey) -> Vec<u8> {
    [&[OFFLINE][..], &entity_prefix(view_id, key)].concat()
}

fn online_key(view_id: u64, key: &EntityKey) -> Vec<u8> {
    [&[ONLINE][..], &entity_prefix(view_id, key)].concat()
}

/// Fills `batch` with the command applied at log position `index`; returns the rows it wrote
/// (offline and online).
pub fn plan(
    storage: &dyn Storage,
    index: u64,
    command: &FeaturesCommand,
    batch: &mut WriteBatch,
) -> Result<u64> {
    match command {
        FeaturesCommand::Push {
            view_id,
            version,
            rows,
            offline,
            online,
            fields,
        } => {
            if *offline {
                summarise(storage, *view_id, rows, fields, batch)?;
            }
            push(
                storage, index, *view_id, *version, rows, *offline, *online, batch,
            )
        }
        FeaturesCommand::Materialize {
            view_id,
            start,
            end,
        } => materialize(storage, *view_id, *start, *end, batch),
    }
}

/// The key of view `view_id`'s statistics of `field` on `day`.
fn stats_key(view_id: u64, day: i64, field: &str) -> Vec<u8> {
    let day = ((day as u64) ^ (1 << 63)).to_be_bytes();
    [&[STATS][..], &view_id.to_be_bytes(), &day, field.as_bytes()].concat()
}

/// Merges the statistics of `rows` (values in the order of `fields`) into the view's daily
/// summaries.
fn summarise(
    storage: &dyn Storage,
    view_id: u64,
    rows: &[FeatureRow],
    fields: &[String],
    batch: &mut WriteBatch,
) -> Result<()> {
    let mut days: BTreeMap<Vec<u8>, Summary> = BTreeMap::new();
    for row in rows {
        let day = day_of(row.event_ts);
        for (field, value) in fields.iter().zip(&row.values) {
            let summary = days.entry(stats_key(view_id, day, field)).or_default();
            match value {
                Value::Null => summary.add_null(),
                v => summary.add(v.as_f64()),
            }
        }
    }
    let keys: Vec<Vec<u8>> = days.keys().cloned().collect();
    let held = storage.multi_get(Table::Features, &keys)?;
    for ((key, mut summary), held) in days.into_iter().zip(held) {
        if let Some(bytes) = held {
            summary.merge(&decode::<Summary>(&bytes)?);
        }
        batch.put(Table::Features, key, encode(&summary)?);
    }
    Ok(())
}

/// View `view_id`'s statistics of days `from_day..=to_day`, merged, by feature.
pub fn read_stats(
    storage: &dyn Storage,
    view_id: u64,
    from_day: i64,
    to_day: i64,
) -> Result<FeaturesAnswer> {
    let prefix = [&[STATS][..], &view_id.to_be_bytes()].concat();
    let start = stats_key(view_id, from_day, "");
    let end = stats_key(view_id, to_day.saturating_add(1), "");
    let mut merged: BTreeMap<String, Summary> = BTreeMap::new();
    let mut failed = None;
    storage.for_each_from(Table::Features, &prefix, &start, &mut |k, v| {
        if k >= end.as_slice() {
            return Ok(false);
        }
        let field = String::from_utf8_lossy(&k[prefix.len() + 8..]).into_owned();
        match decode::<Summary>(v) {
            Ok(summary) => merged.entry(field).or_default().merge(&summary),
            Err(e) => failed = Some(e),
        }
        Ok(true)
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(FeaturesAnswer::Stats(merged))
}

/// The marker of an entity with offline rows not yet materialised.
fn pending_key(view_id: u64, key: &EntityKey) -> Vec<u8> {
    [&[PENDING][..], &entity_prefix(view_id, key)].concat()
}

/// The entity key in a key made by `offline_prefix`, `online_key` or `pending_key`.
fn entity_in(key: &[u8]) -> Option<EntityKey> {
    let len = u32::from_be_bytes(key.get(9..13)?.try_into().ok()?) as usize;
    key.get(13..13 + len).map(|k| EntityKey(k.to_vec()))
}

#[allow(clippy::too_many_arguments)]
fn push(
    storage: &dyn Storage,
    index: u64,
    view_id: u64,
    version: u64,
    rows: &[FeatureRow],
    offline: bool,
    online: bool,
    batch: &mut WriteBatch,
) -> Result<u64> {
    if offline {
        for (ordinal, row) in rows.iter().enumerate() {
            let stamp = RowStamp {
                event_ts: row.event_ts,
                created_ts: row.created_ts,
                index,
            };
            let key = [
                offline_prefix(view_id, &row.key),
                row_suffix(stamp, ordinal as u32).to_vec(),
            ]
            .concat();
            let stored = StoredValues {
                version,
                values: row.values.clone(),
            };
            batch.put(Table::Features, key, encode(&stored)?);
            if !online {
                // (an incremental materialisation finds the entity by this)
                batch.put(Table::Features, pending_key(view_id, &row.key), Vec::new());
            }
        }
    }
    if online {
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
        let candidates = newest.into_iter().map(|(key, i)| {
            let row = &rows[i];
            let value = OnlineValue {
                event_ts: row.event_ts,
                created_ts: row.created_ts,
                version,
                values: row.values.clone(),
            };
            (key.clone(), value)
        });
        hold_online(storage, view_id, candidates.collect(), batch)?;
    }
    Ok(rows.len() as u64)
}

/// Holds each of `candidates` online unless the value held is newer; returns how many it holds.
fn hold_online(
    storage: &dyn Storage,
    view_id: u64,
    candidates: Vec<(EntityKey, OnlineValue)>,
    batch: &mut WriteBatch,
) -> Result<u64> {
    let keys: Vec<Vec<u8>> = candidates
        .iter()
        .map(|(k, _)| online_key(view_id, k))
        .collect();
    let held = storage.multi_get(Table::Features, &keys)?;
    let mut written = 0;
    for ((_, value), (key, held)) in candidates.into_iter().zip(keys.into_iter().zip(held)) {
        if let Some(bytes) = held {
            let held: OnlineValue = decode(&bytes)?;
            if !held.replaced_by(value.event_ts, value.created_ts) {
                continue;
            }
        }
        batch.put(Table::Features, key, encode(&value)?);
        written += 1;
    }
    Ok(written)
}

/// The newest offline row of one entity with an event in `start..=end`, and whether it has rows
/// with later events.
fn newest_row(
    storage: &dyn Storage,
    view_id: u64,
    key: &EntityKey,
    start: Micros,
    end: Micros,
) -> Result<(Option<OnlineValue>, bool)> {
    let prefix = offline_prefix(view_id, key);
    let mut best: Option<(RowStamp, Vec<u8>)> = None;
    let mut later = false;
    storage.for_each(Table::Features, &prefix, &mut |k, v| {
        if let Some(stamp) = stamp_of(&k[prefix.len()..]) {
            if stamp.event_ts > end {
                later = true;
            } else if stamp.event_ts >= start {
                // (rows come in stamp order: the last one in range is the newest)
                best = Some((stamp, v.to_vec()));
            }
        }
        Ok(true)
    })?;
    let value = match best {
        Some((stamp, bytes)) => {
            let stored: StoredValues = decode(&bytes)?;
            Some(OnlineValue {
                event_ts: stamp.event_ts,
                created_ts: stamp.created_ts,
                version: stored.version,
                values: stored.values,
            })
        }
        None => None,
    };
    Ok((value, later))
}

/// Makes offline rows of view `view_id` online: for each entity, its newest row with an event in
/// `start..=end`, held if newer than what is held (so a materialisation never moves a value
/// back). Without `start`, the entities pushed offline-only since the last such run, up to
/// `end`; their markers are cleared unless rows with later events wait. Returns the values it
/// holds.
fn materialize(
    storage: &dyn Storage,
    view_id: u64,
    start: Option<Micros>,
    end: Micros,
    batch: &mut WriteBatch,
) -> Result<u64> {
    let view = view_id.to_be_bytes();
    let (marker, from) = match start {
        Some(from) => (OFFLINE, from),
        None => (PENDING, Micros::MIN),
    };
    let prefix = [&[marker][..], &view[..]].concat();
    let mut entities: Vec<EntityKey> = Vec::new();
    storage.for_each(Table::Features, &prefix, &mut |k, _| {
        if let Some(key) = entity_in(k) {
            if entities.last() != Some(&key) {
                entities.push(key);
            }
        }
        Ok(true)
    })?;
    let mut candidates = Vec::new();
    for key in entities {
        let (value, later) = newest_row(storage, view_id, &key, from, end)?;
        if start.is_none() && !later {
            batch.delete(Table::Features, pending_key(view_id, &key));
        }
        if let Some(value) = value {
            candidates.push((key, value));
        }
    }
    hold_online(storage, view_id, candidates, batch)
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
