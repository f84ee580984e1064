//! Conversions between wire types (`quiver.v1`) and domain types, with input validation.
//! A coordinator runs these once per request, before anything is split or sent.
//!
//! Every check a request needs before it may become a command lives here, and every error names
//! the offending field the way the request spells it (`points[3].vector[7]`). A request that
//! fails any check changes nothing.

use std::collections::HashMap;

use quiver_config::LimitsConfig;
use quiver_index::distance::Metric;
use quiver_index::filter::{Bound, Condition, Filter, Op, Range, Scalar};
use quiver_index::params::{HnswParams, MAX_EF_CONSTRUCTION, MAX_M};
use quiver_index::payload_index::FieldType;
use quiver_index::quantize::Quantization;
use quiver_proto::v1 as pb;

pub use quiver_proto::wire::json_to_struct;

use crate::error::{Error, Result};
use crate::placement::{AliasAction, NodeId, Placement, MAX_SHARDS};
use crate::point::{CollectionSpec, IndexKind, JsonMap, NewPoint, PointId};
use crate::shard::{
    CountQuery, NewVector, PayloadChange, ReadConsistency, ScrollQuery, SearchQuery, Selection,
    MAX_OVERSAMPLING,
};

mod batch;
pub mod features;
mod filter;
mod query;
mod text;

pub use filter::request_filter;
pub use query::{query, query_batch, Query, DEFAULT_DEPTH, DEFAULT_QUERY_LIMIT};
pub use text::{text_fields_from_proto, text_fields_to_proto, MAX_TEXT_FIELDS};

/// Longest collection name.
pub const MAX_NAME_LEN: usize = 64;

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Error {
    Error::invalid(field, message)
}

/// Collection names: 1–64 characters of letters, digits, `_`, `-` and `.`, not starting with `.`.
pub fn collection_name(field: &str, name: &str) -> Result<String> {
    if name.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid(
            field,
            format!("longer than {MAX_NAME_LEN} characters"),
        ));
    }
    if name.starts_with('.')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(invalid(
            field,
            format!("`{name}` may contain only letters, digits, `_`, `-` and `.`"),
        ));
    }
    Ok(name.to_string())
}

pub fn metric_from_proto(value: i32) -> Result<Metric> {
    match pb::Metric::try_from(value) {
        Ok(pb::Metric::Cosine) => Ok(Metric::Cosine),
        Ok(pb::Metric::L2) => Ok(Metric::L2),
        Ok(pb::Metric::Dot) => Ok(Metric::Dot),
        Ok(pb::Metric::Unspecified) => Err(invalid("metric", "required: cosine, l2 or dot")),
        Err(_) => Err(invalid(
            "metric",
            format!("unknown metric {value}: expected cosine, l2 or dot"),
        )),
    }
}

/// A create's quantization (unset: none). A flat index keeps full precision only.
pub fn quantization_from_proto(value: i32, index: &IndexKind) -> Result<Quantization> {
    let quantization = match pb::Quantization::try_from(value) {
        Ok(pb::Quantization::Unspecified | pb::Quantization::None) => Quantization::None,
        Ok(pb::Quantization::Fp16) => Quantization::F16,
        Ok(pb::Quantization::Int8) => Quantization::Int8,
        Err(_) => {
            return Err(invalid(
                "quantization",
                format!("unknown quantization {value}: expected none, fp16 or int8"),
            ))
        }
    };
    if quantization != Quantization::None && *index == IndexKind::Flat {
        return Err(invalid(
            "quantization",
            "a flat index stores full-precision vectors only; quantization needs an hnsw index",
        ));
    }
    Ok(quantization)
}

pub fn quantization_to_proto(quantization: Quantization) -> pb::Quantization {
    match quantization {
        Quantization::None => pb::Quantization::None,
        Quantization::F16 => pb::Quantization::Fp16,
        Quantization::Int8 => pb::Quantization::Int8,
    }
}

pub fn metric_to_proto(metric: Metric) -> pb::Metric {
    match metric {
        Metric::Cosine => pb::Metric::Cosine,
        Metric::L2 => pb::Metric::L2,
        Metric::Dot => pb::Metric::Dot,
    }
}

fn field_type_from_proto(field: &str, value: i32) -> Result<FieldType> {
    match pb::PayloadFieldType::try_from(value) {
        Ok(pb::PayloadFieldType::Keyword) => Ok(FieldType::Keyword),
        Ok(pb::PayloadFieldType::Integer) => Ok(FieldType::Integer),
        Ok(pb::PayloadFieldType::Float) => Ok(FieldType::Float),
        Ok(pb::PayloadFieldType::Datetime) => Ok(FieldType::Datetime),
        _ => Err(invalid(
            field,
            format!("unknown type {value}: expected keyword, integer, float or datetime"),
        )),
    }
}

fn field_type_to_proto(t: FieldType) -> pb::PayloadFieldType {
    match t {
        FieldType::Keyword => pb::PayloadFieldType::Keyword,
        FieldType::Integer => pb::PayloadFieldType::Integer,
        FieldType::Float => pb::PayloadFieldType::Float,
        FieldType::Datetime => pb::PayloadFieldType::Datetime,
    }
}

/// Validates alias changes: 1 or more, each naming aliases and collections by valid names.
pub fn alias_actions(req: &pb::UpdateAliasesRequest) -> Result<Vec<AliasAction>> {
    use pb::alias_action::Action;
    if req.actions.is_empty() {
        return Err(invalid("actions", "must not be empty"));
    }
    req.actions
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let at = |f: &str| format!("actions[{i}].{f}");
            Ok(match &a.action {
                Some(Action::Create(c)) => AliasAction::Create {
                    alias: collection_name(&at("create.alias"), &c.alias)?,
                    collection: collection_name(&at("create.collection"), &c.collection)?,
                },
                Some(Action::Delete(d)) => AliasAction::Delete {
                    alias: collection_name(&at("delete.alias"), &d.alias)?,
                },
                Some(Action::Rename(r)) => AliasAction::Rename {
                    from: collection_name(&at("rename.from"), &r.from)?,
                    to: collection_name(&at("rename.to"), &r.to)?,
                },
                None => {
                    return Err(invalid(
                        format!("actions[{i}]"),
                        "required: create, delete or rename",
                    ))
                }
            })
        })
        .collect()
}

/// A payload field to index (`field` names it in errors): a dotted path and a type.
pub fn payload_index_field(field: &str, f: &pb::PayloadIndexField) -> Result<(String, FieldType)> {
    payload_path(&format!("{field}.key"), &f.key)?;
    let t = field_type_from_proto(&format!("{field}.type"), f.r#type)?;
    Ok((f.key.clone(), t))
}

/// A payload field path: dot-separated, no empty segment, not starting with `$`.
pub fn payload_path(field: &str, key: &str) -> Result<()> {
    if key.is_empty() || key.split('.').any(str::is_empty) || key.starts_with('$') {
        return Err(invalid(field, format!("`{key}` is not a field path")));
    }
    Ok(())
}

/// Validates a create request into a spec.
pub fn collection_spec(
    req: &pb::CreateCollectionRequest,
    limits: &LimitsConfig,
    max_ef: usize,
) -> Result<CollectionSpec> {
    let name = collection_name("name", &req.name)?;
    if req.dim == 0 {
        return Err(invalid("dim", "must be at least 1"));
    }
    if req.dim as usize > limits.max_dimension {
        return Err(invalid(
            "dim",
            format!(
                "{} exceeds the limit of {} (limits.max_dimension)",
                req.dim, limits.max_dimension
            ),
        ));
    }
    let metric = metric_from_proto(req.metric)?;
    let index = match req.index.as_ref().and_then(|i| i.kind.as_ref()) {
        Some(pb::index_config::Kind::Flat(_)) => IndexKind::Flat,
        None => IndexKind::Hnsw(HnswParams::default()),
        Some(pb::index_config::Kind::Hnsw(h)) => {
            let defaults = HnswParams::default();
            let m = h.m.map_or(defaults.m, |m| m as usize);
            let ef_construction = h
                .ef_construction
                .map_or(defaults.ef_construction, |ef| ef as usize);
            if !(2..=MAX_M).contains(&m) {
                return Err(invalid(
                    "index.hnsw.m",
                    format!("{m} is outside 2..={MAX_M}"),
                ));
            }
            if !(1..=MAX_EF_CONSTRUCTION).contains(&ef_construction) {
                return Err(invalid(
                    "index.hnsw.ef_construction",
                    format!("{ef_construction} is outside 1..={MAX_EF_CONSTRUCTION}"),
                ));
            }
            IndexKind::Hnsw(HnswParams { m, ef_construction })
        }
    };
    let mut payload_indexes: Vec<(String, FieldType)> = Vec::new();
    for (i, f) in req.payload_indexes.iter().enumerate() {
        let (key, t) = payload_index_field(&format!("payload_indexes[{i}]"), f)?;
        if payload_indexes.iter().any(|(k, _)| *k == key) {
            return Err(invalid(
                format!("payload_indexes[{i}].key"),
                format!("`{key}` is indexed twice"),
            ));
        }
        payload_indexes.push((key, t));
    }
    let default_ef = match req.search_defaults.as_ref().and_then(|d| d.ef) {
        None => None,
        Some(0) => return Err(invalid("search_defaults.ef", "must be at least 1")),
        Some(ef) if ef as usize > max_ef => {
            return Err(invalid(
                "search_defaults.ef",
                format!("{ef} exceeds the limit of {max_ef} (search.max_ef)"),
            ))
        }
        Some(ef) => Some(ef),
    };
    let quantization = quantization_from_proto(req.quantization, &index)?;
    let text_fields = text_fields_from_proto(&req.text_fields)?;
    let embed = match req.embed.trim() {
        "" if req.embed.is_empty() => None,
        "" => return Err(invalid("embed", "is blank: name the payload key to embed")),
        key if key.len() > MAX_NAME_LEN || key != req.embed => {
            return Err(invalid(
                "embed",
                format!(
                "`{}` is not a payload key (at most {MAX_NAME_LEN} bytes, no surrounding spaces)",
                req.embed
            ),
            ))
        }
        key => Some(key.to_owned()),
    };
    Ok(CollectionSpec {
        name,
        dim: req.dim,
        metric,
        index,
        payload_indexes,
        default_ef,
        quantization,
        text_fields,
        embed,
    })
}

/// The shard count a create asks for (unset: one shard).
pub fn shard_count(value: Option<u32>) -> Result<u32> {
    match value {
        None => Ok(1),
        Some(0) => Err(invalid("shard_count", "must be at least 1")),
        Some(n) if n > MAX_SHARDS => Err(invalid(
            "shard_count",
            format!("{n} exceeds the limit of {MAX_SHARDS}"),
        )),
        Some(n) => Ok(n),
    }
}

/// The replication factor a create asks for (unset: the cluster's default, min(3, nodes)).
pub fn replication_factor(value: Option<u32>) -> Result<Option<u32>> {
    match value {
        Some(0) => Err(invalid("replication_factor", "must be at least 1")),
        other => Ok(other),
    }
}

/// A collection's description with its shard map: each shard's group and replicas (with the
/// addresses `address` knows). Counts and leaders are left for the caller to fill.
pub fn placement_info(
    placement: &Placement,
    address: impl Fn(NodeId) -> Option<String>,
) -> pb::CollectionInfo {
    let mut info = collection_info(&placement.spec, 0, 0);
    info.shard_count = placement.shards.len() as u32;
    info.replication_factor = placement.replication_factor;
    info.collection_id = placement.id;
    info.shards = placement
        .shards
        .iter()
        .map(|s| pb::ShardInfo {
            shard: s.shard,
            group: s.group,
            replicas: s
                .replicas
                .iter()
                .map(|n| pb::ReplicaInfo {
                    node: *n,
                    address: address(*n).unwrap_or_default(),
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    info
}

/// A node's limits for the wire (in `Cluster.Placements`).
pub fn limits_to_pb(limits: &Limits) -> pb::Limits {
    let max_ef = limits.max_ef as u64;
    let limits = &limits.request;
    pb::Limits {
        max_ef,
        max_request_bytes: limits.max_request_bytes as u64,
        max_batch_points: limits.max_batch_points as u64,
        max_dimension: limits.max_dimension as u64,
        max_payload_bytes: limits.max_payload_bytes as u64,
        max_top_k: limits.max_top_k as u64,
        max_scroll_limit: limits.max_scroll_limit as u64,
        max_ids_per_request: limits.max_ids_per_request as u64,
    }
}

/// Limits from the wire (see [`limits_to_pb`]).
pub fn limits_from_pb(limits: &pb::Limits) -> Limits {
    let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    let max_ef = match limits.max_ef {
        0 => quiver_config::SearchConfig::default().max_ef,
        n => size(n),
    };
    let request = LimitsConfig {
        max_request_bytes: size(limits.max_request_bytes),
        max_batch_points: size(limits.max_batch_points),
        max_dimension: size(limits.max_dimension),
        max_payload_bytes: size(limits.max_payload_bytes),
        max_top_k: size(limits.max_top_k),
        max_scroll_limit: size(limits.max_scroll_limit),
        max_ids_per_request: size(limits.max_ids_per_request),
    };
    Limits { request, max_ef }
}

/// A collection's spec back from its description (as a router learns it from the cluster).
pub fn spec_from_info(info: &pb::CollectionInfo) -> Result<CollectionSpec> {
    // The feature store's placement has a name no client may give a collection.
    let reserved = info.name == crate::features::FEATURE_STORE;
    let request = pb::CreateCollectionRequest {
        name: match reserved {
            true => "features".into(),
            false => info.name.clone(),
        },
        dim: info.dim,
        metric: info.metric,
        index: info.index,
        payload_indexes: info.payload_indexes.clone(),
        search_defaults: info.search_defaults,
        quantization: info.quantization,
        text_fields: info.text_fields.clone(),
        embed: info.embed.clone(),
        ..Default::default()
    };
    let unlimited = LimitsConfig {
        max_dimension: usize::MAX,
        ..LimitsConfig::default()
    };
    let mut spec = collection_spec(&request, &unlimited, usize::MAX)?;
    spec.name = info.name.clone();
    Ok(spec)
}

/// A collection's description on the wire.
pub fn collection_info(
    spec: &CollectionSpec,
    points_count: usize,
    indexed_vectors: usize,
) -> pb::CollectionInfo {
    let index = match spec.index {
        IndexKind::Flat => pb::index_config::Kind::Flat(pb::FlatConfig {}),
        IndexKind::Hnsw(p) => pb::index_config::Kind::Hnsw(pb::HnswConfig {
            m: Some(p.m as u32),
            ef_construction: Some(p.ef_construction as u32),
        }),
    };
    pb::CollectionInfo {
        name: spec.name.clone(),
        dim: spec.dim,
        metric: metric_to_proto(spec.metric) as i32,
        index: Some(pb::IndexConfig { kind: Some(index) }),
        payload_indexes: spec
            .payload_indexes
            .iter()
            .map(|(key, t)| pb::PayloadIndexField {
                key: key.clone(),
                r#type: field_type_to_proto(*t) as i32,
            })
            .collect(),
        search_defaults: Some(pb::SearchDefaults {
            ef: spec.default_ef,
        }),
        points_count: points_count as u64,
        indexed_vectors: indexed_vectors as u64,
        shard_count: 0,
        replication_factor: 0,
        shards: Vec::new(),
        collection_id: 0,
        pending_vectors: 0,
        quantization: quantization_to_proto(spec.quantization) as i32,
        text_fields: text_fields_to_proto(&spec.text_fields),
        embed: spec.embed.clone().unwrap_or_default(),
        embedding: None,
        text_pending: false,
    }
}

pub fn point_id(field: &str, id: Option<&pb::PointId>) -> Result<PointId> {
    match id.and_then(|i| i.kind.as_ref()) {
        Some(pb::point_id::Kind::Num(n)) => Ok(PointId::Num(*n)),
        Some(pb::point_id::Kind::Uuid(s)) => PointId::parse_uuid(field, s),
        None => Err(invalid(field, "missing id")),
    }
}

pub fn point_id_to_proto(id: &PointId) -> pb::PointId {
    pb::PointId {
        kind: Some(match id {
            PointId::Num(n) => pb::point_id::Kind::Num(*n),
            PointId::Uuid(u) => pb::point_id::Kind::Uuid(u.to_string()),
        }),
    }
}

/// A stored point on the wire, with its vector and payload only if asked for.
pub fn point_to_proto(
    id: &PointId,
    vector: Vec<f32>,
    payload: &JsonMap,
    with_vector: bool,
    with_payload: bool,
) -> pb::Point {
    pb::Point {
        id: Some(point_id_to_proto(id)),
        vector: if with_vector { vector } else { Vec::new() },
        payload: with_payload.then(|| json_to_struct(payload)),
    }
}

/// Ids of a get or delete request: 1..=limit of them.
pub fn point_ids(ids: &[pb::PointId], limits: &LimitsConfig) -> Result<Vec<PointId>> {
    if ids.is_empty() {
        return Err(invalid("ids", "must not be empty"));
    }
    if ids.len() > limits.max_ids_per_request {
        return Err(invalid(
            "ids",
            format!(
                "{} ids exceed the limit of {} (limits.max_ids_per_request)",
                ids.len(),
                limits.max_ids_per_request
            ),
        ));
    }
    ids.iter()
        .enumerate()
        .map(|(i, id)| point_id(&format!("ids[{i}]"), Some(id)))
        .collect()
}

/// Checks a vector's length and components and prepares it for the metric.
pub fn vector(field: &str, values: &[f32], dim: usize, metric: Metric) -> Result<Vec<f32>> {
    if values.len() != dim {
        return Err(invalid(
            field,
            format!("expected {dim} dimensions, got {}", values.len()),
        ));
    }
    if let Some(i) = values.iter().position(|x| !x.is_finite()) {
        return Err(invalid(
            format!("{field}[{i}]"),
            format!("{} is not a finite number", values[i]),
        ));
    }
    let mut v = values.to_vec();
    if !metric.prepare(&mut v) {
        return Err(invalid(
            field,
            "a zero vector has no direction under the cosine metric",
        ));
    }
    Ok(v)
}

/// A batch of `len` points: 1..=limits.max_batch_points.
fn batch_size(len: usize, limits: &LimitsConfig) -> Result<()> {
    if len == 0 {
        return Err(invalid("points", "empty batch"));
    }
    if len > limits.max_batch_points {
        return Err(invalid(
            "points",
            format!(
                "{len} points exceed the limit of {} per batch (limits.max_batch_points)",
                limits.max_batch_points
            ),
        ));
    }
    Ok(())
}

/// A payload within limits.max_payload_bytes (as JSON).
fn payload_size(field: &str, payload: &JsonMap, limits: &LimitsConfig) -> Result<()> {
    let size = serde_json::to_vec(payload)
        .map(|b| b.len())
        .unwrap_or(usize::MAX);
    if size > limits.max_payload_bytes {
        return Err(invalid(
            field,
            format!(
                "{size} bytes of JSON exceed the limit of {} (limits.max_payload_bytes)",
                limits.max_payload_bytes
            ),
        ));
    }
    Ok(())
}

/// Entry `i` of a batch of points (`points[i]`): its id, once in the batch (`seen` holds the
/// ids so far), and its vector, checked and prepared for the collection's metric.
fn batch_entry(
    i: usize,
    id: Option<&pb::PointId>,
    values: &[f32],
    spec: &CollectionSpec,
    seen: &mut HashMap<PointId, usize>,
) -> Result<(PointId, Vec<f32>)> {
    let id = point_id(&format!("points[{i}].id"), id)?;
    if let Some(first) = seen.insert(id, i) {
        return Err(invalid(
            format!("points[{i}].id"),
            format!("id {id} appears twice in the batch (also at points[{first}])"),
        ));
    }
    let vector = vector(
        &format!("points[{i}].vector"),
        values,
        spec.dim as usize,
        spec.metric,
    )?;
    Ok((id, vector))
}

/// Validates an upsert batch. Rule for duplicate ids: a batch may name each id once; a batch
/// that repeats an id is rejected whole (rather than letting the last one win silently).
pub fn upsert_points(
    points: &[pb::Point],
    spec: &CollectionSpec,
    limits: &LimitsConfig,
) -> Result<Vec<NewPoint>> {
    batch_size(points.len(), limits)?;
    let mut seen: HashMap<PointId, usize> = HashMap::with_capacity(points.len());
    let mut out = Vec::with_capacity(points.len());
    for (i, p) in points.iter().enumerate() {
        let payload = match &p.payload {
            Some(s) => struct_to_json(&format!("points[{i}].payload"), s)?,
            None => JsonMap::new(),
        };
        payload_size(&format!("points[{i}].payload"), &payload, limits)?;
        let (id, vector) = match (&spec.embed, p.vector.is_empty()) {
            // no vector: the server embeds the point's text in the background
            (Some(key), true) => {
                let id = point_id(&format!("points[{i}].id"), p.id.as_ref())?;
                if let Some(first) = seen.insert(id, i) {
                    return Err(invalid(
                        format!("points[{i}].id"),
                        format!("id {id} appears twice in the batch (also at points[{first}])"),
                    ));
                }
                match payload.get(key) {
                    Some(serde_json::Value::String(text)) if !text.trim().is_empty() => {}
                    _ => {
                        return Err(invalid(
                            format!("points[{i}].vector"),
                            format!(
                                "missing: give a vector, or a non-empty string `{key}` in the \
                                 payload for the server to embed"
                            ),
                        ))
                    }
                }
                (id, Vec::new())
            }
            _ => batch_entry(i, p.id.as_ref(), &p.vector, spec, &mut seen)?,
        };
        out.push(NewPoint {
            id,
            vector,
            payload,
        });
    }
    Ok(out)
}

/// The limits a request is checked against: the cluster's request limits and its largest `ef`
/// (`search.max_ef`).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub request: LimitsConfig,
    pub max_ef: usize,
}

/// Results a search returns when it does not say.
pub const DEFAULT_TOP_K: usize = 10;
/// Points a scroll page holds when it does not say.
pub const DEFAULT_SCROLL_LIMIT: usize = 100;

/// `value` of request field `field`, if it is within the configured `limit` (named by `key`).
fn within(field: &str, value: usize, limit: usize, key: &str) -> Result<usize> {
    if value > limit {
        return Err(invalid(
            field,
            format!("{value} exceeds the limit of {limit} ({key})"),
        ));
    }
    Ok(value)
}

/// `value` of request field `field`, if it is 1..=`limit` (named by `key`).
fn at_least_one(field: &str, value: u32, limit: usize, key: &str) -> Result<usize> {
    if value == 0 {
        return Err(invalid(field, "must be at least 1"));
    }
    within(field, value as usize, limit, key)
}

/// A read's consistency (unset: `leader`).
pub fn read_consistency(value: i32) -> Result<ReadConsistency> {
    match pb::ReadConsistency::try_from(value) {
        Ok(pb::ReadConsistency::Linearizable) => Ok(ReadConsistency::Linearizable),
        Ok(pb::ReadConsistency::Unspecified | pb::ReadConsistency::Leader) => {
            Ok(ReadConsistency::Leader)
        }
        Ok(pb::ReadConsistency::Any) => Ok(ReadConsistency::Any),
        Err(_) => Err(invalid(
            "consistency",
            format!("unknown consistency {value}"),
        )),
    }
}

/// Validates a search against the collection's spec and the limits.
pub fn search_query(
    req: &pb::SearchRequest,
    spec: &CollectionSpec,
    limits: &Limits,
) -> Result<SearchQuery> {
    let vector = vector("vector", &req.vector, spec.dim as usize, spec.metric)?;
    let top_k = match req.top_k {
        None => DEFAULT_TOP_K,
        Some(k) => at_least_one("top_k", k, limits.request.max_top_k, "limits.max_top_k")?,
    };
    let ef = match req.ef {
        None => None,
        Some(ef) => Some(at_least_one("ef", ef, limits.max_ef, "search.max_ef")?),
    };
    let oversampling = match req.oversampling {
        None => None,
        Some(o) if o.is_finite() && (1.0..=MAX_OVERSAMPLING).contains(&o) => Some(o),
        Some(o) => {
            return Err(invalid(
                "oversampling",
                format!("{o} is outside 1..={MAX_OVERSAMPLING}"),
            ))
        }
    };
    Ok(SearchQuery {
        vector,
        top_k,
        ef,
        filter: request_filter(req.filter.as_ref(), &req.filter_json)?,
        exact: req.exact,
        with_payload: req.with_payload,
        with_vector: req.with_vector,
        rescore: req.rescore,
        oversampling,
    })
}

/// Validates a batch of searches of collection `spec` (read with `consistency`): each as
/// [`search_query`] (errors name `searches[i].field`).
pub fn search_batch_queries(
    req: &pb::SearchBatchRequest,
    spec: &CollectionSpec,
    limits: &Limits,
) -> Result<Vec<SearchQuery>> {
    batch::items(
        "searches",
        &req.searches,
        req,
        limits,
        |s| (s.collection.as_str(), s.consistency),
        |s| search_query(s, spec, limits),
    )
}

/// Validates a scroll page request.
pub fn scroll_query(req: &pb::ScrollRequest, limits: &LimitsConfig) -> Result<ScrollQuery> {
    let limit = match req.limit {
        None => DEFAULT_SCROLL_LIMIT,
        Some(l) => at_least_one(
            "limit",
            l,
            limits.max_scroll_limit,
            "limits.max_scroll_limit",
        )?,
    };
    let filter = request_filter(req.filter.as_ref(), &req.filter_json)?;
    let after = match req.cursor.as_str() {
        "" => None,
        cursor => Some(decode_cursor(cursor)?),
    };
    Ok(ScrollQuery {
        after,
        limit,
        filter,
        with_payload: req.with_payload,
        with_vector: req.with_vector,
    })
}

/// The points a delete or payload change is for: ids, or a filter (the typed tree or JSON form),
/// not both.
fn selection(
    ids: &[pb::PointId],
    typed: Option<&pb::Filter>,
    json: &str,
    limits: &LimitsConfig,
) -> Result<Selection> {
    let ids = match ids.is_empty() {
        true => None,
        false => Some(point_ids(ids, limits)?),
    };
    match (ids, request_filter(typed, json)?) {
        (Some(_), Some(_)) => Err(invalid("ids", "give either ids or a filter, not both")),
        (None, None) => Err(invalid("ids", "give ids or a filter to select points by")),
        (Some(ids), None) => Ok(Selection::Ids(ids)),
        (None, Some(filter)) => Ok(Selection::Filter(filter)),
    }
}

/// Validates a delete request: ids or a filter (not an empty one), not both.
pub fn delete_selection(req: &pb::DeletePointsRequest, limits: &LimitsConfig) -> Result<Selection> {
    let selection = selection(&req.ids, req.filter.as_ref(), &req.filter_json, limits)?;
    if selection == Selection::Filter(Filter::And(Vec::new())) {
        return Err(invalid(
            "filter",
            "an empty filter matches every point; drop the collection to delete everything",
        ));
    }
    Ok(selection)
}

/// Validates a payload change: the points (ids or a filter; `{}` selects every point) and the
/// change.
pub fn payload_update(
    req: &pb::UpdatePayloadRequest,
    limits: &LimitsConfig,
) -> Result<(Selection, PayloadChange)> {
    use pb::update_payload_request::Change;
    let selection = selection(&req.ids, req.filter.as_ref(), &req.filter_json, limits)?;
    let sized = |field: &str, payload: &prost_types::Struct| -> Result<JsonMap> {
        let map = struct_to_json(field, payload)?;
        payload_size(field, &map, limits)?;
        Ok(map)
    };
    let change = match &req.change {
        None => {
            return Err(invalid(
                "change",
                "required: set, overwrite, delete_keys or clear",
            ))
        }
        Some(Change::Set(p)) => PayloadChange::Set(sized("set", p)?),
        Some(Change::Overwrite(p)) => PayloadChange::Overwrite(sized("overwrite", p)?),
        Some(Change::DeleteKeys(keys)) => {
            if keys.keys.is_empty() {
                return Err(invalid("delete_keys.keys", "must not be empty"));
            }
            for (i, key) in keys.keys.iter().enumerate() {
                if key.is_empty() || key.split('.').any(str::is_empty) {
                    return Err(invalid(
                        format!("delete_keys.keys[{i}]"),
                        format!("`{key}` is not a field path"),
                    ));
                }
            }
            PayloadChange::DeleteKeys(keys.keys.clone())
        }
        Some(Change::Clear(true)) => PayloadChange::Clear,
        Some(Change::Clear(false)) => return Err(invalid("clear", "must be true when given")),
    };
    Ok((selection, change))
}

/// Validates new vectors for existing points: ids unique, vectors checked and prepared.
pub fn new_vectors(
    points: &[pb::PointVector],
    spec: &CollectionSpec,
    limits: &LimitsConfig,
) -> Result<Vec<NewVector>> {
    batch_size(points.len(), limits)?;
    let mut seen: HashMap<PointId, usize> = HashMap::with_capacity(points.len());
    let mut out = Vec::with_capacity(points.len());
    for (i, p) in points.iter().enumerate() {
        let (id, vector) = batch_entry(i, p.id.as_ref(), &p.vector, spec, &mut seen)?;
        out.push(NewVector { id, vector });
    }
    Ok(out)
}

/// Validates a count.
pub fn count_query(req: &pb::CountRequest) -> Result<CountQuery> {
    Ok(CountQuery {
        filter: request_filter(req.filter.as_ref(), &req.filter_json)?,
        exact: req.exact,
    })
}

/// A protobuf `Struct` as a JSON object (see [`quiver_proto::wire::struct_to_json`]), its
/// problems as invalid arguments.
pub fn struct_to_json(field: &str, s: &prost_types::Struct) -> Result<JsonMap> {
    quiver_proto::wire::struct_to_json(field, s).map_err(|e| invalid(e.field, e.message))
}

/// A scroll cursor is the last returned id: `n:<u64>` or `u:<uuid>`.
pub fn encode_cursor(id: &PointId) -> String {
    match id {
        PointId::Num(n) => format!("n:{n}"),
        PointId::Uuid(u) => format!("u:{u}"),
    }
}

/// The id a cursor made by [`encode_cursor`] names.
pub fn decode_cursor(cursor: &str) -> Result<PointId> {
    let bad = || invalid("cursor", format!("malformed cursor `{cursor}`"));
    match cursor.split_once(':') {
        Some(("n", n)) => n.parse().map(PointId::Num).map_err(|_| bad()),
        Some(("u", u)) => uuid::Uuid::parse_str(u)
            .map(PointId::Uuid)
            .map_err(|_| bad()),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_and_json_filters_compile_to_the_same_filter() {
        let typed = pb::Filter {
            condition: Some(pb::Condition {
                key: "price".into(),
                test: Some(pb::condition::Test::Range(pb::Range {
                    gte: Some(pb::RangeBound {
                        kind: Some(pb::range_bound::Kind::Number(10.0)),
                    }),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        };
        let a = request_filter(Some(&typed), "").unwrap().unwrap();
        let b = request_filter(None, r#"{"price": {"$gte": 10}}"#)
            .unwrap()
            .unwrap();
        let payload: JsonMap = serde_json::from_str(r#"{"price": 12}"#).unwrap();
        assert!(a.matches(&payload) && b.matches(&payload));
        let cheap: JsonMap = serde_json::from_str(r#"{"price": 2}"#).unwrap();
        assert!(!a.matches(&cheap) && !b.matches(&cheap));
    }

    #[test]
    fn filter_errors_name_the_place() {
        let e = request_filter(None, r#"{"$and": [{"a": 1}, {"b": {"$gt": "x"}}]}"#).unwrap_err();
        assert!(
            e.to_string().starts_with("filter_json.$and[1].b.$gt"),
            "{e}"
        );
        let both = request_filter(Some(&pb::Filter::default()), "{}").unwrap_err();
        assert!(both.to_string().contains("not both"));
        let empty_in = pb::Filter {
            must: vec![pb::Filter {
                condition: Some(pb::Condition {
                    key: "a".into(),
                    test: Some(pb::condition::Test::In(pb::FilterValues::default())),
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let e = request_filter(Some(&empty_in), "").unwrap_err();
        assert!(
            e.to_string().starts_with("filter.must[0].condition.in"),
            "{e}"
        );
    }
}

/// A replica's segments as the wire carries them.
pub fn segments_to_proto(segments: &[crate::shard::SegmentInfo]) -> Vec<pb::SegmentInfo> {
    segments
        .iter()
        .map(|s| pb::SegmentInfo {
            state: s.state.as_str().to_string(),
            points: s.points,
            retired: s.retired,
            memory_bytes: s.memory_bytes,
            bytes_per_vector: s.bytes_per_vector,
        })
        .collect()
}

/// Segments from the wire; a state this build does not know is left out.
pub fn segments_from_proto(segments: &[pb::SegmentInfo]) -> Vec<crate::shard::SegmentInfo> {
    segments
        .iter()
        .filter_map(|s| {
            Some(crate::shard::SegmentInfo {
                state: crate::shard::SegmentState::parse(&s.state)?,
                points: s.points,
                retired: s.retired,
                memory_bytes: s.memory_bytes,
                bytes_per_vector: s.bytes_per_vector,
            })
        })
        .collect()
}
