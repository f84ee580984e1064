//! Point routes: upsert, retrieve, delete, scroll, count, payload and vector updates (search
//! and query are in [`crate::search`]), and the JSON shapes they share.
//!
//! Ids are unsigned integers or UUID strings, as in Qdrant. A point has one unnamed vector (a
//! JSON array; `{"": [...]}` is read the same). Writes are applied and visible when the answer
//! comes (`wait` is always true). `with_payload` takes a bool, a list of keys, or
//! `{"include": [...]}` / `{"exclude": [...]}`. A scroll's `offset` is the first id of the page
//! (inclusive) and `next_page_offset` the first id of the next one, as in Qdrant. `query` takes a
//! vector, `{"nearest": vector}`, a point id (its nearest neighbours, itself left out) or nothing
//! (points in id order); `prefetch` and fusion are refused until quiver has hybrid search.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use quiver_core::convert::encode_cursor;
use quiver_core::point::PointId;
use quiver_proto::v1 as pb;
use quiver_proto::wire::{json_to_struct, struct_to_json};
use serde_json::{json, Map, Value};
use tonic::Request;

use crate::filter::filter;
use crate::reply::{body, ok, ApiError, Reply};
use crate::Services;

pub(crate) type Result<T> = std::result::Result<T, ApiError>;
pub(crate) type Body = Map<String, Value>;

/// Results a search or query returns when the body does not say (Qdrant's default).
pub(crate) const DEFAULT_LIMIT: u64 = 10;

pub(crate) fn id_from(field: &str, value: &Value) -> Result<pb::PointId> {
    use pb::point_id::Kind;
    let kind = match value {
        Value::Number(n) => Kind::Num(n.as_u64().ok_or_else(|| {
            ApiError::invalid(field, format!("id {n} is not an unsigned integer"))
        })?),
        Value::String(s) => Kind::Uuid(s.clone()),
        other => {
            return Err(ApiError::invalid(
                field,
                format!("an id is an unsigned integer or a UUID string, got {other}"),
            ))
        }
    };
    Ok(pb::PointId { kind: Some(kind) })
}

pub(crate) fn id_json(id: Option<&pb::PointId>) -> Value {
    match id.and_then(|i| i.kind.as_ref()) {
        Some(pb::point_id::Kind::Num(n)) => json!(n),
        Some(pb::point_id::Kind::Uuid(u)) => json!(u),
        None => Value::Null,
    }
}

fn ids_from(field: &str, value: &Value) -> Result<Vec<pb::PointId>> {
    let items = value
        .as_array()
        .ok_or_else(|| ApiError::invalid(field, "expected an array of ids"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, v)| id_from(&format!("{field}[{i}]"), v))
        .collect()
}

/// One unnamed vector: an array of numbers, each within the range of a 32-bit float.
pub(crate) fn vector_from(field: &str, value: &Value) -> Result<Vec<f32>> {
    let items = match value {
        Value::Array(items) => items,
        Value::Object(named) if named.len() == 1 && named.contains_key("") => {
            return vector_from(&format!("{field}[\"\"]"), &named[""])
        }
        Value::Object(_) => {
            return Err(ApiError::invalid(
                field,
                "named vectors are not supported: a point has one unnamed vector",
            ))
        }
        _ => return Err(ApiError::invalid(field, "expected an array of numbers")),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let x = v
                .as_f64()
                .ok_or_else(|| ApiError::invalid(&format!("{field}[{i}]"), "not a number"))?;
            let f = x as f32;
            if !f.is_finite() {
                return Err(ApiError::invalid(
                    &format!("{field}[{i}]"),
                    format!("{v} is outside the range of a 32-bit float"),
                ));
            }
            Ok(f)
        })
        .collect()
}

fn object_struct(field: &str, value: Option<&Value>) -> Result<Option<prost_types::Struct>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(json_to_struct(map))),
        Some(_) => Err(ApiError::invalid(field, "expected an object")),
    }
}

/// A list of payload keys at `field`.
fn strings(field: &str, value: &Value) -> Result<Vec<String>> {
    value
        .as_array()
        .and_then(|a| a.iter().map(|k| k.as_str().map(str::to_string)).collect())
        .ok_or_else(|| ApiError::invalid(field, "expected an array of keys"))
}

/// Which payload keys an answer carries.
pub(crate) enum PayloadKeys {
    None,
    All,
    Include(Vec<String>),
    Exclude(Vec<String>),
}

impl PayloadKeys {
    pub(crate) fn read(body: &Body, default: bool) -> Result<Self> {
        let keys = strings;
        Ok(match body.get("with_payload") {
            None | Some(Value::Null) if default => PayloadKeys::All,
            None | Some(Value::Null) => PayloadKeys::None,
            Some(Value::Bool(true)) => PayloadKeys::All,
            Some(Value::Bool(false)) => PayloadKeys::None,
            Some(v @ Value::Array(_)) => PayloadKeys::Include(keys("with_payload", v)?),
            Some(Value::Object(o)) if o.contains_key("include") => {
                PayloadKeys::Include(keys("with_payload.include", &o["include"])?)
            }
            Some(Value::Object(o)) if o.contains_key("exclude") => {
                PayloadKeys::Exclude(keys("with_payload.exclude", &o["exclude"])?)
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    "with_payload",
                    "expected a bool, a list of keys, or {\"include\"|\"exclude\": [...]}",
                ))
            }
        })
    }

    pub(crate) fn wanted(&self) -> bool {
        !matches!(self, PayloadKeys::None)
    }

    fn apply(&self, payload: Option<&prost_types::Struct>) -> Result<Value> {
        let Some(payload) = payload.filter(|_| self.wanted()) else {
            return Ok(Value::Null);
        };
        let mut map = struct_to_json("payload", payload)
            .map_err(|e| ApiError::invalid(&e.field, e.message))?;
        match self {
            PayloadKeys::Include(keys) => map.retain(|k, _| keys.contains(k)),
            PayloadKeys::Exclude(keys) => map.retain(|k, _| !keys.contains(k)),
            PayloadKeys::None | PayloadKeys::All => {}
        }
        Ok(Value::Object(map))
    }
}

pub(crate) fn with_vector(body: &Body) -> Result<bool> {
    match body.get("with_vector").or_else(|| body.get("with_vectors")) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::invalid("with_vector", "expected a bool")),
    }
}

fn vector_json(vector: &[f32], wanted: bool) -> Value {
    if wanted && !vector.is_empty() {
        json!(vector)
    } else {
        Value::Null
    }
}

fn record_json(p: &pb::Point, keys: &PayloadKeys, vectors: bool) -> Result<Value> {
    Ok(json!({
        "id": id_json(p.id.as_ref()),
        "payload": keys.apply(p.payload.as_ref())?,
        "vector": vector_json(&p.vector, vectors),
        "shard_key": null,
        "order_value": null,
    }))
}

pub(crate) fn scored_json(p: &pb::ScoredPoint, keys: &PayloadKeys, vectors: bool) -> Result<Value> {
    Ok(json!({
        "id": id_json(p.id.as_ref()),
        "version": 0,
        "score": p.score,
        "payload": keys.apply(p.payload.as_ref())?,
        "vector": vector_json(&p.vector, vectors),
        "shard_key": null,
        "order_value": null,
    }))
}

pub(crate) fn uint(body: &Body, key: &str) -> Result<Option<u64>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            ApiError::invalid(key, format!("expected a non-negative integer, got {v}"))
        }),
    }
}

pub(crate) fn u32_of(field: &str, n: u64) -> Result<u32> {
    u32::try_from(n).map_err(|_| ApiError::invalid(field, format!("{n} is too large")))
}

/// `limit` of a body: at least 1 (Qdrant's default 10 when absent).
pub(crate) fn limit(body: &Body) -> Result<u64> {
    match uint(body, "limit")? {
        None => Ok(DEFAULT_LIMIT),
        Some(0) => Err(ApiError::invalid("limit", "must be at least 1")),
        Some(n) => Ok(n),
    }
}

/// The smallest id after `id` in scroll order (numbers, then UUIDs), if there is one.
fn successor(id: &pb::PointId) -> Result<Option<pb::PointId>> {
    let next = match quiver_core::convert::point_id("id", Some(id))? {
        PointId::Num(n) => match n.checked_add(1) {
            Some(n) => PointId::Num(n),
            None => PointId::Uuid(uuid::Uuid::nil()),
        },
        PointId::Uuid(u) => match u.as_u128().checked_add(1) {
            Some(u) => PointId::Uuid(uuid::Uuid::from_u128(u)),
            None => return Ok(None),
        },
    };
    Ok(Some(quiver_core::convert::point_id_to_proto(&next)))
}

/// What a write answers (Qdrant's `UpdateResult`); the write is applied when it comes.
fn update_result(resp: pb::WriteResponse, started: Instant) -> Reply {
    ok(
        json!({"operation_id": resp.applied_index, "status": "completed"}),
        started,
    )
}

/// `points` (ids) or `filter` of a body: the points a delete or payload change is for.
fn selector(body: &Body) -> Result<(Vec<pb::PointId>, Option<pb::Filter>)> {
    let ids = match body.get("points") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => ids_from("points", v)?,
    };
    let filter = filter("filter", body.get("filter"))?;
    if ids.is_empty() && filter.is_none() {
        return Err(ApiError::invalid(
            "points",
            "give `points` (ids) or `filter`",
        ));
    }
    Ok((ids, filter))
}

fn refuse_shard_key(body: &Body) -> Result<()> {
    match body.get("shard_key") {
        None | Some(Value::Null) => Ok(()),
        Some(_) => Err(ApiError::invalid(
            "shard_key",
            "custom shard keys are not supported",
        )),
    }
}

pub async fn upsert(State(api): State<Services>, Path(name): Path<String>, bytes: Bytes) -> Reply {
    let started = Instant::now();
    let body = body(&bytes)?;
    refuse_shard_key(&body)?;
    let points = match (body.get("points"), body.get("batch")) {
        (Some(Value::Array(items)), None) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let field = format!("points[{i}]");
                let p = item
                    .as_object()
                    .ok_or_else(|| ApiError::invalid(&field, "expected an object"))?;
                let id = id_from(&format!("{field}.id"), p.get("id").unwrap_or(&Value::Null))?;
                let vector = p
                    .get("vector")
                    .ok_or_else(|| ApiError::invalid(&format!("{field}.vector"), "required"))?;
                Ok(pb::Point {
                    id: Some(id),
                    vector: vector_from(&format!("{field}.vector"), vector)?,
                    payload: object_struct(&format!("{field}.payload"), p.get("payload"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?,
        (None, Some(Value::Object(batch))) => batch_points(batch)?,
        _ => {
            return Err(ApiError::invalid(
                "points",
                "give `points` (a list) or `batch`",
            ))
        }
    };
    let resp = api
        .points
        .upsert(Request::new(pb::UpsertRequest {
            collection: name,
            points,
            request_id: String::new(),
            wait_indexed: false,
        }))
        .await?
        .into_inner();
    update_result(resp, started)
}

/// Qdrant's column form: `{"ids": [...], "vectors": [[...]], "payloads": [{...}]}`.
fn batch_points(batch: &Body) -> Result<Vec<pb::Point>> {
    let ids = ids_from("batch.ids", batch.get("ids").unwrap_or(&Value::Null))?;
    let vectors = batch
        .get("vectors")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::invalid("batch.vectors", "expected a list of vectors"))?;
    if vectors.len() != ids.len() {
        return Err(ApiError::invalid(
            "batch.vectors",
            format!("{} vectors for {} ids", vectors.len(), ids.len()),
        ));
    }
    let payloads = match batch.get("payloads") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(p)) if p.len() == ids.len() => p.clone(),
        Some(_) => {
            return Err(ApiError::invalid(
                "batch.payloads",
                "expected one payload per id",
            ))
        }
    };
    ids.into_iter()
        .enumerate()
        .map(|(i, id)| {
            Ok(pb::Point {
                id: Some(id),
                vector: vector_from(&format!("batch.vectors[{i}]"), &vectors[i])?,
                payload: object_struct(&format!("batch.payloads[{i}]"), payloads.get(i))?,
            })
        })
        .collect()
}

async fn get_points(
    api: &Services,
    name: String,
    ids: Vec<pb::PointId>,
    keys: &PayloadKeys,
    vectors: bool,
) -> Result<Vec<Value>> {
    let resp = api
        .points
        .get(Request::new(pb::GetPointsRequest {
            collection: name,
            ids,
            with_payload: keys.wanted(),
            with_vector: vectors,
            consistency: 0,
        }))
        .await?
        .into_inner();
    resp.points
        .iter()
        .map(|p| record_json(p, keys, vectors))
        .collect()
}

pub async fn retrieve(
    State(api): State<Services>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Reply {
    let started = Instant::now();
    let body = body(&bytes)?;
    let ids = ids_from("ids", body.get("ids").unwrap_or(&Value::Null))?;
    let keys = PayloadKeys::read(&body, true)?;
    let points = get_points(&api, name, ids, &keys, with_vector(&body)?).await?;
    ok(Value::Array(points), started)
}

pub async fn retrieve_one(
    State(api): State<Services>,
    Path((name, id)): Path<(String, String)>,
) -> Reply {
    let started = Instant::now();
    let id = match id.parse::<u64>() {
        Ok(n) => json!(n),
        Err(_) => json!(id),
    };
    let ids = vec![id_from("id", &id)?];
    let mut points = get_points(&api, name, ids, &PayloadKeys::All, true).await?;
    match points.pop() {
        Some(point) => ok(point, started),
        None => Err(ApiError::not_found(format!("no point with id {id}"))),
    }
}

pub async fn delete(State(api): State<Services>, Path(name): Path<String>, bytes: Bytes) -> Reply {
    let started = Instant::now();
    let body = body(&bytes)?;
    let (ids, filter) = selector(&body)?;
    let resp = api
        .points
        .delete(Request::new(pb::DeletePointsRequest {
            collection: name,
            ids,
            filter,
            filter_json: String::new(),
            request_id: String::new(),
            wait_indexed: false,
        }))
        .await?
        .into_inner();
    update_result(resp, started)
}

/// The scroll cursor that starts a page at `id` (inclusive): the cursor of the id just before it.
fn cursor_at(id: &pb::PointId) -> Result<String> {
    let id = quiver_core::convert::point_id("offset", Some(id))?;
    let before = match id {
        PointId::Num(0) => return Ok(String::new()),
        PointId::Num(n) => PointId::Num(n - 1),
        PointId::Uuid(u) if u.as_u128() == 0 => PointId::Num(u64::MAX),
        PointId::Uuid(u) => PointId::Uuid(uuid::Uuid::from_u128(u.as_u128() - 1)),
    };
    Ok(encode_cursor(&before))
}

pub async fn scroll(State(api): State<Services>, Path(name): Path<String>, bytes: Bytes) -> Reply {
    let started = Instant::now();
    let body = body(&bytes)?;
    if body.get("order_by").is_some_and(|v| !v.is_null()) {
        return Err(ApiError::invalid(
            "order_by",
            "not supported: points scroll in id order",
        ));
    }
    let limit = limit(&body)?;
    let cursor = match body.get("offset") {
        None | Some(Value::Null) => String::new(),
        Some(v) => cursor_at(&id_from("offset", v)?)?,
    };
    let keys = PayloadKeys::read(&body, true)?;
    let vectors = with_vector(&body)?;
    let resp = api
        .points
        .scroll(Request::new(pb::ScrollRequest {
            collection: name,
            limit: Some(u32_of("limit", limit)?),
            cursor,
            filter: filter("filter", body.get("filter"))?,
            filter_json: String::new(),
            with_payload: keys.wanted(),
            with_vector: vectors,
            consistency: 0,
        }))
        .await?
        .into_inner();
    let points = resp.points;
    // Qdrant's next_page_offset is where the next page starts (inclusive): the id just after
    // this page's last, which need not exist.
    let next = match (resp.next_cursor.is_empty(), points.last()) {
        (false, Some(last)) => last
            .id
            .as_ref()
            .map(successor)
            .transpose()?
            .flatten()
            .map(|id| id_json(Some(&id))),
        _ => None,
    };
    let records = points
        .iter()
        .map(|p| record_json(p, &keys, vectors))
        .collect::<Result<Vec<_>>>()?;
    ok(
        json!({"points": records, "next_page_offset": next}),
        started,
    )
}

pub async fn count(State(api): State<Services>, Path(name): Path<String>, bytes: Bytes) -> Reply {
    let started = Instant::now();
    let body = body(&bytes)?;
    let exact = match body.get("exact") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid("exact", "expected a bool")),
    };
    let resp = api
        .points
        .count(Request::new(pb::CountRequest {
            collection: name,
            filter: filter("filter", body.get("filter"))?,
            filter_json: String::new(),
            exact,
            consistency: 0,
        }))
        .await?
        .into_inner();
    ok(json!({"count": resp.count}), started)
}

async fn update_payload(
    api: &Services,
    name: String,
    body: &Body,
    change: pb::update_payload_request::Change,
) -> Reply {
    let started = Instant::now();
    let (ids, filter) = selector(body)?;
    let resp = api
        .points
        .update_payload(Request::new(pb::UpdatePayloadRequest {
            collection: name,
            ids,
            filter,
            filter_json: String::new(),
            change: Some(change),
            request_id: String::new(),
            wait_indexed: false,
        }))
        .await?
        .into_inner();
    update_result(resp, started)
}

fn payload_change(body: &Body) -> Result<prost_types::Struct> {
    if body.get("key").is_some_and(|k| !k.is_null()) {
        return Err(ApiError::invalid(
            "key",
            "setting a payload under a nested key is not supported: set the top-level key",
        ));
    }
    object_struct("payload", body.get("payload"))?
        .ok_or_else(|| ApiError::invalid("payload", "required: a JSON object"))
}

pub async fn set_payload(
    State(api): State<Services>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Reply {
    change_payload(&api, name, &bytes, pb::update_payload_request::Change::Set).await
}

pub async fn overwrite_payload(
    State(api): State<Services>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Reply {
    change_payload(
        &api,
        name,
        &bytes,
        pb::update_payload_request::Change::Overwrite,
    )
    .await
}

/// A set or an overwrite (`change` says which) of the body's `payload`.
async fn change_payload(
    api: &Services,
    name: String,
    bytes: &[u8],
    change: fn(prost_types::Struct) -> pb::update_payload_request::Change,
) -> Reply {
    let body = body(bytes)?;
    let payload = payload_change(&body)?;
    update_payload(api, name, &body, change(payload)).await
}

pub async fn delete_payload(
    State(api): State<Services>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Reply {
    let body = body(&bytes)?;
    let keys = strings("keys", body.get("keys").unwrap_or(&Value::Null))?;
    let change = pb::update_payload_request::Change::DeleteKeys(pb::PayloadKeys { keys });
    update_payload(&api, name, &body, change).await
}

pub async fn clear_payload(
    State(api): State<Services>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Reply {
    let body = body(&bytes)?;
    update_payload(
        &api,
        name,
        &body,
        pb::update_payload_request::Change::Clear(true),
    )
    .await
}

pub async fn update_vectors(
    State(api): State<Services>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Reply {
    let started = Instant::now();
    let body = body(&bytes)?;
    let items = body
        .get("points")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::invalid("points", "expected a list of {\"id\", \"vector\"}"))?;
    let points = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let field = format!("points[{i}]");
            let p = item
                .as_object()
                .ok_or_else(|| ApiError::invalid(&field, "expected an object"))?;
            Ok(pb::PointVector {
                id: Some(id_from(
                    &format!("{field}.id"),
                    p.get("id").unwrap_or(&Value::Null),
                )?),
                vector: vector_from(
                    &format!("{field}.vector"),
                    p.get("vector").unwrap_or(&Value::Null),
                )?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let resp = api
        .points
        .update_vectors(Request::new(pb::UpdateVectorsRequest {
            collection: name,
            points,
            request_id: String::new(),
            wait_indexed: false,
        }))
        .await?
        .into_inner();
    update_result(resp, started)
}
