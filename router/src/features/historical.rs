//! Point-in-time retrieval: for each entity row `(keys, T)` the row of each view with the
//! greatest event time at or before `T` (within the view's ttl), streamed in chunks.
//!
//! A training set is pinned: before the first chunk is read, each shard's log position is fixed
//! (the leader's applied position, or the one the request names), and every chunk reads every
//! shard at that position. Offline rows are never changed, so naming the same position later
//! reads the identical set, whatever was pushed since. A pinned read may be answered by any
//! replica that has applied the position.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::join_all;
use futures::StreamExt;
use quiver_core::convert::features as convert;
use quiver_core::features::{FeaturesAnswer, FeaturesRead, HistoricalLookup};
use quiver_core::placement::Placement;
use quiver_core::shard::ReadConsistency;
use quiver_core::Error;
use quiver_features::definition::ViewSelection;
use quiver_features::layout::{EntityColumn, EntityLayout};
use quiver_features::online::OnlineValue;
use quiver_features::value::Micros;
use quiver_features::{EntityKey, Registry, Value, ValueType};
use quiver_proto::v1 as pb;
use tonic::Status;

use super::push::row_name;
use super::{
    check_output_names, feature_store, read_every_shard, read_shard, selections, status,
    HistoricalStream,
};
use crate::coordinator::Coordinator;

/// The most entity rows one request may carry.
pub const MAX_ENTITY_ROWS: usize = 1_000_000;
const DEFAULT_CHUNK_ROWS: usize = 1000;
const MAX_CHUNK_ROWS: usize = 10_000;

/// An entity row, as the shards are asked about it.
struct EntityRow {
    at: Micros,
    /// Its key in each view read.
    keys: Vec<EntityKey>,
    /// The row as the output carries it.
    given: pb::FeatureRow,
}

/// The entity rows one shard is asked about: their places in the request, and their keys and
/// times.
type ShardRows = (Vec<usize>, Vec<(EntityKey, Micros)>);

/// What every chunk of one request reads with.
struct Retrieval {
    coordinator: Arc<Coordinator>,
    registry: Arc<Registry>,
    placement: Placement,
    selections: Vec<ViewSelection>,
    known_at: bool,
    /// Each shard's log position, in shard order.
    pins: Vec<u64>,
    entities: Vec<EntityRow>,
    chunk_rows: usize,
}

/// The entity rows of `req`, typed and keyed for each view read.
#[allow(clippy::result_large_err)] // tonic's Status, as every handler returns
fn entity_rows(
    req: &pb::GetHistoricalFeaturesRequest,
    layout: &EntityLayout,
    selections: &[ViewSelection],
) -> Result<Vec<EntityRow>, Status> {
    if req.rows.len() > MAX_ENTITY_ROWS {
        return Err(Error::invalid(
            "rows",
            format!(
                "{} entity rows; at most {MAX_ENTITY_ROWS} per request",
                req.rows.len()
            ),
        )
        .into());
    }
    let columns = layout.columns();
    let mut out = Vec::with_capacity(req.rows.len());
    for (ordinal, row) in req.rows.iter().enumerate() {
        let at = row_name(row.line, ordinal);
        if row.values.len() != columns.len() {
            return Err(Error::invalid(
                &at,
                format!("{} values for {} columns", row.values.len(), columns.len()),
            )
            .into());
        }
        let mut cells = Vec::with_capacity(columns.len());
        for (i, cell) in row.values.iter().enumerate() {
            let wanted = match layout.kind(i) {
                EntityColumn::Key(t) => t,
                EntityColumn::EventTs => ValueType::Timestamp,
                EntityColumn::Other => {
                    cells.push(Value::Null);
                    continue;
                }
            };
            let value = convert::value_from_proto(cell, wanted)
                .map_err(|m| Error::invalid(format!("{at}, column `{}`", columns[i]), m))?;
            cells.push(value);
        }
        let time = layout.event_ts(&cells, &at).map_err(status)?;
        let keys = selections
            .iter()
            .map(|s| layout.key(&s.keys, &cells, &at).map_err(status))
            .collect::<Result<_, _>>()?;
        // Join keys and times are given back typed; other columns as they came.
        let given = row
            .values
            .iter()
            .zip(&cells)
            .enumerate()
            .map(|(i, (given, typed))| match layout.kind(i) {
                EntityColumn::Other => given.clone(),
                _ => convert::value_to_proto(typed),
            })
            .collect();
        out.push(EntityRow {
            at: time,
            keys,
            given: pb::FeatureRow {
                values: given,
                line: row.line,
            },
        });
    }
    Ok(out)
}

/// Reads one shard with `request` at a pinned position, from any replica that has applied it.
async fn read_pinned(
    coordinator: &Coordinator,
    placement: &Placement,
    shard: usize,
    request: &FeaturesRead,
) -> Result<FeaturesAnswer, Status> {
    read_shard(coordinator, placement, shard, ReadConsistency::Any, request).await
}

/// Each shard's applied log position, as its leader knows it.
#[allow(clippy::result_large_err)] // tonic's Status, as every handler returns
async fn positions_now(
    coordinator: &Coordinator,
    placement: &Placement,
) -> Result<Vec<u64>, Status> {
    let request = FeaturesRead::Historical {
        lookups: Vec::new(),
        at_index: None,
    };
    read_every_shard(coordinator, placement, &request)
        .await?
        .into_iter()
        .map(|answer| match answer {
            FeaturesAnswer::Historical { index, .. } => Ok(index),
            _ => Err(Status::internal(
                "a shard answered a point-in-time read with another kind",
            )),
        })
        .collect()
}

impl Retrieval {
    /// The output rows of entity rows `from..to`.
    async fn chunk(&self, from: usize, to: usize) -> Result<Vec<pb::FeatureRow>, Status> {
        let shards = self.placement.shards.len();
        // Per shard: a lookup per view, and the entity rows each lookup asks about.
        let mut parts: BTreeMap<usize, Vec<(usize, Vec<usize>, HistoricalLookup)>> =
            BTreeMap::new();
        for (s, selection) in self.selections.iter().enumerate() {
            let mut by_shard: BTreeMap<usize, ShardRows> = BTreeMap::new();
            for e in from..to {
                let row = &self.entities[e];
                let entry = by_shard.entry(row.keys[s].shard(shards)).or_default();
                entry.0.push(e);
                entry.1.push((row.keys[s].clone(), row.at));
            }
            for (shard, (asked, rows)) in by_shard {
                let lookup = HistoricalLookup {
                    view_id: selection.view_id,
                    ttl_seconds: selection.schema.ttl_seconds,
                    known_at: self.known_at,
                    rows,
                };
                parts.entry(shard).or_default().push((s, asked, lookup));
            }
        }
        let reads = parts.into_iter().map(|(shard, part)| async move {
            let (asked, lookups): (Vec<_>, Vec<_>) =
                part.into_iter().map(|(s, e, l)| ((s, e), l)).unzip();
            let request = FeaturesRead::Historical {
                lookups,
                at_index: Some(self.pins[shard]),
            };
            let answer = read_pinned(&self.coordinator, &self.placement, shard, &request).await?;
            Ok::<_, Status>((asked, answer))
        });
        let mut found: Vec<Vec<Option<OnlineValue>>> =
            vec![vec![None; to - from]; self.selections.len()];
        for answer in join_all(reads).await {
            let (asked, answer) = answer?;
            let FeaturesAnswer::Historical { found: values, .. } = answer else {
                return Err(Status::internal(
                    "a shard answered a point-in-time read with another kind",
                ));
            };
            for ((s, entities), values) in asked.into_iter().zip(values) {
                for (e, value) in entities.into_iter().zip(values) {
                    found[s][e - from] = value;
                }
            }
        }
        let mut out: Vec<pb::FeatureRow> = self.entities[from..to]
            .iter()
            .map(|e| e.given.clone())
            .collect();
        for (selection, found) in self.selections.iter().zip(found) {
            let view = self.registry.view(&selection.view).map_err(status)?;
            for (row, value) in out.iter_mut().zip(found) {
                match value {
                    Some(v) => row.values.extend(
                        view.project(v.version, &v.values, &selection.features)
                            .iter()
                            .map(convert::value_to_proto),
                    ),
                    None => row.values.extend(
                        selection
                            .features
                            .iter()
                            .map(|_| pb::FeatureValue { kind: None }),
                    ),
                }
            }
        }
        Ok(out)
    }
}

pub(super) async fn get(
    coordinator: Arc<Coordinator>,
    req: pb::GetHistoricalFeaturesRequest,
) -> Result<HistoricalStream, Status> {
    let service = (!req.feature_service.is_empty()).then_some(req.feature_service.as_str());
    let (registry, selections) =
        selections(&coordinator, "features", &req.features, service).await?;
    let keys: Vec<&[quiver_features::JoinKey]> =
        selections.iter().map(|s| s.keys.as_slice()).collect();
    let layout = EntityLayout::new("columns", &keys, &req.columns).map_err(status)?;
    let feature_names = check_output_names(&selections, req.full_feature_names, &req.columns)?;
    let entities = entity_rows(&req, &layout, &selections)?;
    let chunk_rows = match req.chunk_rows as usize {
        0 => DEFAULT_CHUNK_ROWS,
        n => n.min(MAX_CHUNK_ROWS),
    };
    let placement = feature_store(&coordinator).await?;
    let pins = match req.as_of_log.trim() {
        "" => positions_now(&coordinator, &placement).await?,
        given => convert::parse_log_position("as_of_log", given, placement.shards.len())?,
    };
    let mut columns = req.columns.clone();
    columns.extend(feature_names);
    let header = pb::HistoricalFeaturesChunk {
        columns,
        log_position: convert::log_position(&pins),
        rows: Vec::new(),
    };
    let retrieval = Arc::new(Retrieval {
        coordinator,
        registry,
        placement,
        selections,
        known_at: req.known_at,
        pins,
        entities,
        chunk_rows,
    });
    let total = retrieval.entities.len();
    // The first chunk carries the header (and the first rows, if any).
    let chunks = futures::stream::unfold(Some((0usize, Some(header))), move |state| {
        let retrieval = retrieval.clone();
        async move {
            let (from, header) = state?;
            if from >= total && header.is_none() {
                return None;
            }
            let to = (from + retrieval.chunk_rows).min(total);
            let mut chunk = header.unwrap_or_default();
            match retrieval.chunk(from, to).await {
                Ok(rows) => {
                    chunk.rows = rows;
                    Some((Ok(chunk), Some((to, None))))
                }
                Err(e) => Some((Err(e), None)),
            }
        }
    });
    Ok(chunks.boxed())
}
