//! Online serving: the newest value of each view for each entity asked for, one read per shard
//! that holds any of them, each feature with its status and event time. A value older than
//! its view's ttl (as of the version read) is not served: it reads null, `OUTSIDE_MAX_AGE`.

use std::collections::BTreeMap;

use futures::future::join_all;
use quiver_core::convert::{self as core_convert, features as convert};
use quiver_core::features::{FeaturesAnswer, FeaturesRead, OnlineLookup};
use quiver_core::Error;
use quiver_features::definition::ViewSelection;
use quiver_features::online::{self, FeatureStatus, OnlineValue};
use quiver_features::{EntityKey, Registry, Value};
use quiver_proto::v1 as pb;
use tonic::Status;

use super::{check_output_names, feature_store, now_micros, read_shard, selections, status};
use crate::coordinator::Coordinator;

/// The most entities one online read may ask for.
pub const MAX_ONLINE_ENTITIES: usize = 10_000;

/// One shard's part of a read: a lookup per view with entities there, and which entities each
/// lookup's keys are (by selection, then entity index).
#[derive(Default)]
struct ShardPart {
    lookups: Vec<OnlineLookup>,
    asked: Vec<(usize, Vec<usize>)>,
}

/// Join-key columns by name, each a typed value per entity.
type KeyColumns = Vec<(String, Vec<Value>)>;

/// The typed join-key columns of `req`, checked: each a join key of a view read, all of one
/// length; in the order the views name them.
#[allow(clippy::result_large_err)] // tonic's Status, as every handler returns
fn key_columns(
    req: &pb::GetOnlineFeaturesRequest,
    keys: &[quiver_features::JoinKey],
) -> Result<(KeyColumns, usize), Status> {
    if let Some(other) = req
        .entities
        .keys()
        .find(|name| !keys.iter().any(|k| &k.name == *name))
    {
        return Err(Error::invalid(
            "entities",
            format!("`{other}` is not a join key of the views read"),
        )
        .into());
    }
    let mut columns = Vec::with_capacity(keys.len());
    let mut count = None;
    for key in keys {
        let given = req.entities.get(&key.name).ok_or_else(|| {
            Error::invalid(
                "entities",
                format!("join key column `{}` is missing", key.name),
            )
        })?;
        let len = given.values.len();
        if *count.get_or_insert(len) != len {
            return Err(Error::invalid(
                format!("entities.{}", key.name),
                format!(
                    "{len} values; the other join key columns have {}",
                    count.unwrap_or(0)
                ),
            )
            .into());
        }
        let values = given
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                convert::value_from_proto(v, key.value_type)
                    .map_err(|m| Error::invalid(format!("entities.{}[{i}]", key.name), m))
            })
            .collect::<Result<Vec<_>, _>>()?;
        columns.push((key.name.clone(), values));
    }
    let count = count.unwrap_or(0);
    if count == 0 {
        return Err(Error::invalid("entities", "name at least one entity").into());
    }
    if count > MAX_ONLINE_ENTITIES {
        return Err(Error::invalid(
            "entities",
            format!("{count} entities; at most {MAX_ONLINE_ENTITIES} per read"),
        )
        .into());
    }
    Ok((columns, count))
}

pub(super) async fn get(
    coordinator: &Coordinator,
    req: pb::GetOnlineFeaturesRequest,
) -> Result<pb::GetOnlineFeaturesResponse, Status> {
    let service = (!req.feature_service.is_empty()).then_some(req.feature_service.as_str());
    let (registry, selections) =
        selections(coordinator, "features", &req.features, service).await?;
    serve(coordinator, &registry, &selections, &req).await
}

/// Serves `req` for the features `selections` (resolved against `registry`) name.
pub(super) async fn serve(
    coordinator: &Coordinator,
    registry: &Registry,
    selections: &[ViewSelection],
    req: &pb::GetOnlineFeaturesRequest,
) -> Result<pb::GetOnlineFeaturesResponse, Status> {
    let consistency = core_convert::read_consistency(req.consistency)?;
    let mut keys: Vec<quiver_features::JoinKey> = Vec::new();
    for key in selections.iter().flat_map(|s| s.keys.iter()) {
        if !keys.iter().any(|k| k.name == key.name) {
            keys.push(key.clone());
        }
    }
    let (columns, count) = key_columns(req, &keys)?;
    let key_names: Vec<String> = columns.iter().map(|(n, _)| n.clone()).collect();
    let feature_names = check_output_names(selections, req.full_feature_names, &key_names)?;

    let placement = feature_store(coordinator).await?;
    let shards = placement.shards.len();
    let mut parts: BTreeMap<usize, ShardPart> = BTreeMap::new();
    for (s, selection) in selections.iter().enumerate() {
        let mut by_shard: BTreeMap<usize, (Vec<EntityKey>, Vec<usize>)> = BTreeMap::new();
        for e in 0..count {
            let values: Vec<Value> = selection
                .keys
                .iter()
                .map(|k| {
                    columns
                        .iter()
                        .find(|(n, _)| *n == k.name)
                        .map_or(Value::Null, |(_, v)| v[e].clone())
                })
                .collect();
            let key = EntityKey::new(&selection.keys, &values)
                .map_err(|m| Error::invalid(format!("entities[{e}]"), m))?;
            let entry = by_shard.entry(key.shard(shards)).or_default();
            entry.0.push(key);
            entry.1.push(e);
        }
        for (shard, (keys, entities)) in by_shard {
            let part = parts.entry(shard).or_default();
            part.lookups.push(OnlineLookup {
                view_id: selection.view_id,
                keys,
            });
            part.asked.push((s, entities));
        }
    }

    let mut found: Vec<Vec<Option<OnlineValue>>> = vec![vec![None; count]; selections.len()];
    let reads = parts.into_iter().map(|(shard, part)| {
        let placement = &placement;
        async move {
            let request = FeaturesRead::Online(part.lookups);
            let request = &request;
            let answer = read_shard(coordinator, placement, shard, consistency, request).await?;
            Ok::<_, Status>((part.asked, answer))
        }
    });
    for answer in join_all(reads).await {
        let (asked, answer) = answer?;
        let FeaturesAnswer::Online(values) = answer else {
            return Err(Status::internal(
                "a shard answered an online read with another kind",
            ));
        };
        for ((s, entities), values) in asked.into_iter().zip(values) {
            for (e, value) in entities.into_iter().zip(values) {
                found[s][e] = value;
            }
        }
    }

    let mut results: Vec<pb::OnlineFeatureColumn> = columns
        .iter()
        .map(|(_, values)| pb::OnlineFeatureColumn {
            values: values.iter().map(convert::value_to_proto).collect(),
            statuses: vec![pb::FeatureStatus::Present as i32; count],
            event_timestamps: vec![0; count],
        })
        .collect();
    let now = now_micros();
    for (selection, found) in selections.iter().zip(found) {
        let view = registry.view(&selection.view).map_err(status)?;
        let ttl = selection.schema.ttl_seconds;
        let mut feature_columns: Vec<pb::OnlineFeatureColumn> = selection
            .features
            .iter()
            .map(|_| pb::OnlineFeatureColumn::default())
            .collect();
        for value in found {
            let projected = value
                .as_ref()
                .map(|v| view.project(v.version, &v.values, &selection.features));
            for (f, column) in feature_columns.iter_mut().enumerate() {
                let (value, state, ts) = match (&value, &projected) {
                    (Some(held), Some(values)) => {
                        let state = online::status(&values[f], held.event_ts, ttl, now);
                        let value = match state {
                            FeatureStatus::OutsideMaxAge => Value::Null,
                            _ => values[f].clone(),
                        };
                        (value, state, held.event_ts)
                    }
                    _ => (Value::Null, FeatureStatus::NotFound, 0),
                };
                column.values.push(convert::value_to_proto(&value));
                column.statuses.push(convert::status_to_proto(state) as i32);
                column.event_timestamps.push(ts);
            }
        }
        results.extend(feature_columns);
    }
    let mut references = key_names.clone();
    references.extend(
        selections
            .iter()
            .flat_map(|s| s.features.iter().map(|f| s.reference(&f.name))),
    );
    let mut names = key_names;
    names.extend(feature_names);
    Ok(pb::GetOnlineFeaturesResponse {
        feature_names: names,
        results,
        references,
    })
}
