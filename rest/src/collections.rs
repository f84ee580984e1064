//! Collection routes: create, describe, list, drop, exists, and the server's own.
//!
//! A collection has one unnamed vector: `"vectors": {"size", "distance"}` with distance `Cosine`,
//! `Euclid` (quiver's l2: scores are distances, lower is better, as in Qdrant) or `Dot`.
//! `hnsw_config.m: 0` asks for a flat (exact) index, as Qdrant's `m: 0` disables the graph.
//! `quantization_config: {"scalar": {"type": "int8"}}` stores sealed segments as int8 (quiver
//! trains its bounds itself: a `quantile` is accepted and not used), and
//! `vectors.datatype: "float16"` as fp16; other quantization kinds are refused. Options quiver has
//! no counterpart for (on-disk vectors, optimizer and WAL tuning) are accepted and have no
//! effect; named and sparse vectors are refused.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::Json;
use quiver_proto::v1 as pb;
use serde_json::{json, Map, Value};
use tonic::Request;

use crate::reply::{body, ok, ApiError, Reply};
use crate::{Services, QDRANT_API_VERSION};

pub async fn root() -> Json<Value> {
    Json(json!({
        "title": "quiver (Qdrant-compatible REST API)",
        "version": QDRANT_API_VERSION,
        "quiver_version": env!("CARGO_PKG_VERSION"),
    }))
}

pub async fn health() -> &'static str {
    "healthz check passed"
}

pub async fn openapi() -> Json<Value> {
    let spec: Value = serde_json::from_str(include_str!("../openapi.json"))
        .unwrap_or_else(|e| json!({"error": format!("openapi.json: {e}")}));
    Json(spec)
}

fn distance_name(metric: i32) -> &'static str {
    match pb::Metric::try_from(metric) {
        Ok(pb::Metric::Cosine) => "Cosine",
        Ok(pb::Metric::L2) => "Euclid",
        Ok(pb::Metric::Dot) => "Dot",
        _ => "Unknown",
    }
}

fn field_type_name(t: i32) -> &'static str {
    match pb::PayloadFieldType::try_from(t) {
        Ok(pb::PayloadFieldType::Keyword) => "keyword",
        Ok(pb::PayloadFieldType::Integer) => "integer",
        Ok(pb::PayloadFieldType::Float) => "float",
        Ok(pb::PayloadFieldType::Datetime) => "datetime",
        _ => "unknown",
    }
}

/// A collection's description in Qdrant's shape.
fn info_json(info: &pb::CollectionInfo) -> Value {
    let (m, ef_construct) = match info.index.as_ref().and_then(|i| i.kind.as_ref()) {
        Some(pb::index_config::Kind::Hnsw(h)) => {
            (h.m.unwrap_or(16), h.ef_construction.unwrap_or(200))
        }
        _ => (0, 0),
    };
    let payload_schema: Map<String, Value> = info
        .payload_indexes
        .iter()
        .map(|f| {
            let schema =
                json!({"data_type": field_type_name(f.r#type), "points": info.points_count});
            (f.key.clone(), schema)
        })
        .collect();
    // Qdrant's colours: yellow while the optimizer builds a segment
    let building = info
        .shards
        .iter()
        .flat_map(|s| &s.segments)
        .any(|s| s.state == "building");
    let mut described = json!({
        "status": if building { "yellow" } else { "green" },
        "optimizer_status": "ok",
        "vectors_count": info.points_count,
        "indexed_vectors_count": info.indexed_vectors,
        "points_count": info.points_count,
        "segments_count": info.shards.iter().map(|s| s.segments.len()).sum::<usize>().max(info.shard_count as usize),
        "config": {
            "params": {
                "vectors": {"size": info.dim, "distance": distance_name(info.metric)},
                "shard_number": info.shard_count,
                "replication_factor": info.replication_factor,
                "write_consistency_factor": 1,
                "on_disk_payload": false,
            },
            "hnsw_config": {
                "m": m,
                "ef_construct": ef_construct,
                "full_scan_threshold": 10000,
                "ef": info.search_defaults.as_ref().and_then(|d| d.ef),
            },
            "optimizer_config": {
                "deleted_threshold": 0.2,
                "vacuum_min_vector_number": 1000,
                "default_segment_number": 0,
                "flush_interval_sec": 5,
            },
            "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0},
        },
        "payload_schema": payload_schema,
    });
    describe_quantization(&mut described, info.quantization);
    described
}

/// Adds to a described collection how it stores vectors, as Qdrant describes it.
fn describe_quantization(described: &mut Value, quantization: i32) {
    let config = &mut described["config"];
    match pb::Quantization::try_from(quantization) {
        Ok(pb::Quantization::Int8) => {
            config["quantization_config"] = json!({"scalar": {"type": "int8", "always_ram": true}});
        }
        Ok(pb::Quantization::Fp16) => {
            config["params"]["vectors"]["datatype"] = json!("float16");
        }
        _ => {}
    }
}

/// The quantization a create body asks for: `quantization_config` (scalar int8 only) or a
/// `vectors.datatype` of `float16`.
fn quantization(
    body: &Map<String, Value>,
    vectors: &Map<String, Value>,
) -> Result<pb::Quantization, ApiError> {
    let mut chosen = match vectors.get("datatype") {
        None | Some(Value::Null) => pb::Quantization::None,
        Some(Value::String(t)) if t == "float32" => pb::Quantization::None,
        Some(Value::String(t)) if t == "float16" => pb::Quantization::Fp16,
        Some(other) => {
            return Err(ApiError::invalid(
                "vectors.datatype",
                format!("{other} is not supported (float32, float16)"),
            ))
        }
    };
    for (source, field) in [
        (body.get("quantization_config"), "quantization_config"),
        (
            vectors.get("quantization_config"),
            "vectors.quantization_config",
        ),
    ] {
        match source {
            None | Some(Value::Null) => {}
            Some(Value::Object(q)) => match (q.get("scalar"), q.len()) {
                (Some(Value::Object(scalar)), 1) => {
                    match scalar.get("type").and_then(Value::as_str) {
                        Some("int8") => chosen = pb::Quantization::Int8,
                        _ => {
                            return Err(ApiError::invalid(
                                &format!("{field}.scalar.type"),
                                "expected \"int8\"",
                            ))
                        }
                    }
                }
                _ => {
                    return Err(ApiError::invalid(
                        field,
                        "only {\"scalar\": {\"type\": \"int8\"}} is supported (not product or binary quantization)",
                    ))
                }
            },
            Some(_) => return Err(ApiError::invalid(field, "expected an object")),
        }
    }
    Ok(chosen)
}

pub async fn list(State(api): State<Services>) -> Reply {
    let started = Instant::now();
    let list = api
        .collections
        .list(Request::new(pb::ListCollectionsRequest {}))
        .await?
        .into_inner();
    let names: Vec<Value> = list
        .collections
        .iter()
        .map(|c| json!({"name": c.name}))
        .collect();
    ok(json!({"collections": names}), started)
}

async fn describe(api: &Services, name: String) -> Result<pb::CollectionInfo, ApiError> {
    Ok(api
        .collections
        .get(Request::new(pb::GetCollectionRequest { name }))
        .await?
        .into_inner())
}

pub async fn info(State(api): State<Services>, Path(name): Path<String>) -> Reply {
    let started = Instant::now();
    ok(info_json(&describe(&api, name).await?), started)
}

pub async fn exists(State(api): State<Services>, Path(name): Path<String>) -> Reply {
    let started = Instant::now();
    let exists = match describe(&api, name).await {
        Ok(_) => true,
        Err(e) if e.is_not_found() => false,
        Err(e) => return Err(e),
    };
    ok(json!({"exists": exists}), started)
}

/// A count in a create body: absent or null for the default, else a positive integer.
fn count_field(body: &Map<String, Value>, key: &str, field: &str) -> Result<Option<u32>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::invalid(field, format!("expected a non-negative integer, got {v}"))
            }),
    }
}

pub async fn create(State(api): State<Services>, Path(name): Path<String>, bytes: Bytes) -> Reply {
    let started = Instant::now();
    let body = body(&bytes)?;
    let vectors = match body.get("vectors") {
        Some(Value::Object(v)) if v.contains_key("size") => v,
        Some(Value::Object(_)) => return Err(ApiError::invalid(
            "vectors",
            "named vectors are not supported: give {\"size\", \"distance\"} for one unnamed vector",
        )),
        _ => {
            return Err(ApiError::invalid(
                "vectors",
                "required: {\"size\", \"distance\"}",
            ))
        }
    };
    if body.get("sparse_vectors").is_some_and(|v| !v.is_null()) {
        return Err(ApiError::invalid(
            "sparse_vectors",
            "sparse vectors are not supported",
        ));
    }
    let dim = count_field(vectors, "size", "vectors.size")?
        .ok_or_else(|| ApiError::invalid("vectors.size", "required"))?;
    let metric = match vectors.get("distance").and_then(Value::as_str) {
        Some("Cosine") => pb::Metric::Cosine,
        Some("Euclid") => pb::Metric::L2,
        Some("Dot") => pb::Metric::Dot,
        Some(other) => {
            return Err(ApiError::invalid(
                "vectors.distance",
                format!("`{other}` is not supported (Cosine, Euclid, Dot)"),
            ))
        }
        None => {
            return Err(ApiError::invalid(
                "vectors.distance",
                "required: Cosine, Euclid or Dot",
            ))
        }
    };
    // The collection's hnsw_config, overridden by the vector's own (as Qdrant reads them).
    let mut hnsw = Map::new();
    for source in [body.get("hnsw_config"), vectors.get("hnsw_config")] {
        if let Some(Value::Object(h)) = source {
            hnsw.extend(
                h.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
        }
    }
    let m = count_field(&hnsw, "m", "hnsw_config.m")?;
    let ef_construction = count_field(&hnsw, "ef_construct", "hnsw_config.ef_construct")?;
    let index = match m {
        Some(0) => pb::index_config::Kind::Flat(pb::FlatConfig {}),
        m => pb::index_config::Kind::Hnsw(pb::HnswConfig { m, ef_construction }),
    };
    let request = pb::CreateCollectionRequest {
        name: name.clone(),
        dim,
        metric: metric as i32,
        index: Some(pb::IndexConfig { kind: Some(index) }),
        payload_indexes: Vec::new(),
        search_defaults: None,
        shard_count: count_field(&body, "shard_number", "shard_number")?,
        replication_factor: count_field(&body, "replication_factor", "replication_factor")?,
        request_id: String::new(),
        quantization: quantization(&body, vectors)? as i32,
        text_fields: Vec::new(),
        embed: String::new(),
    };
    api.collections.create(Request::new(request)).await?;
    ok(json!(true), started)
}

pub async fn update(Path(_name): Path<String>) -> Reply {
    Err(ApiError::invalid(
        "body",
        "quiver does not change a collection's parameters in place; create a new collection",
    ))
}

pub async fn drop(State(api): State<Services>, Path(name): Path<String>) -> Reply {
    let started = Instant::now();
    match api
        .collections
        .delete(Request::new(pb::DeleteCollectionRequest { name }))
        .await
    {
        Ok(_) => ok(json!(true), started),
        // Qdrant answers `false` for a collection that was not there.
        Err(e) if e.code() == tonic::Code::NotFound => ok(json!(false), started),
        Err(e) => Err(e.into()),
    }
}

/// `PUT /collections/{name}/index`: `{"field_name", "field_schema"}` with a schema of `keyword`,
/// `integer`, `float` or `datetime` (or `{"type": ...}`; `uuid` is indexed as a keyword). The
/// answer comes once the catalogue has the index; shards index their stored points in the
/// background and use the index for filters once done.
pub async fn create_index(
    State(api): State<Services>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Reply {
    let started = Instant::now();
    let body = body(&bytes)?;
    let key = body
        .get("field_name")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid("field_name", "required: the payload field to index"))?;
    let schema = match body.get("field_schema") {
        Some(Value::String(s)) => s.as_str(),
        Some(Value::Object(o)) => o.get("type").and_then(Value::as_str).unwrap_or(""),
        _ => {
            return Err(ApiError::invalid(
                "field_schema",
                "required: keyword, integer, float or datetime",
            ))
        }
    };
    let field_type = match schema {
        "keyword" | "uuid" => pb::PayloadFieldType::Keyword,
        "integer" => pb::PayloadFieldType::Integer,
        "float" => pb::PayloadFieldType::Float,
        "datetime" => pb::PayloadFieldType::Datetime,
        other => {
            return Err(ApiError::invalid(
                "field_schema",
                format!("`{other}` is not supported (keyword, integer, float, datetime, uuid)"),
            ))
        }
    };
    let request = pb::CreatePayloadIndexRequest {
        collection: name,
        field: Some(pb::PayloadIndexField {
            key: key.to_string(),
            r#type: field_type as i32,
        }),
    };
    api.collections
        .create_payload_index(Request::new(request))
        .await?;
    ok(json!({"operation_id": 0, "status": "completed"}), started)
}

/// `DELETE /collections/{name}/index/{field}`.
pub async fn drop_index(
    State(api): State<Services>,
    Path((name, key)): Path<(String, String)>,
) -> Reply {
    let started = Instant::now();
    let request = pb::DropPayloadIndexRequest {
        collection: name,
        key,
    };
    api.collections
        .drop_payload_index(Request::new(request))
        .await?;
    ok(json!({"operation_id": 0, "status": "completed"}), started)
}

fn aliases_json(list: &pb::ListAliasesResponse) -> Value {
    let aliases: Vec<Value> = list
        .aliases
        .iter()
        .map(|a| json!({"alias_name": a.alias, "collection_name": a.collection}))
        .collect();
    json!({"aliases": aliases})
}

/// `POST /collections/aliases`: `{"actions": [{"create_alias": {"collection_name",
/// "alias_name"}} | {"delete_alias": {"alias_name"}} | {"rename_alias": {"old_alias_name",
/// "new_alias_name"}}]}`, applied all together or not at all.
pub async fn update_aliases(State(api): State<Services>, bytes: Bytes) -> Reply {
    use pb::alias_action::{Action, Create, Delete, Rename};
    let started = Instant::now();
    let body = body(&bytes)?;
    let items = body
        .get("actions")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::invalid("actions", "expected a list of alias actions"))?;
    let mut actions = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("actions[{i}]");
        let text = |o: &Value, key: &str| -> Result<String, ApiError> {
            o.get(key)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| ApiError::invalid(&format!("{field}.{key}"), "required"))
        };
        let action = if let Some(c) = item.get("create_alias") {
            Action::Create(Create {
                alias: text(c, "alias_name")?,
                collection: text(c, "collection_name")?,
            })
        } else if let Some(d) = item.get("delete_alias") {
            Action::Delete(Delete {
                alias: text(d, "alias_name")?,
            })
        } else if let Some(r) = item.get("rename_alias") {
            Action::Rename(Rename {
                from: text(r, "old_alias_name")?,
                to: text(r, "new_alias_name")?,
            })
        } else {
            return Err(ApiError::invalid(
                &field,
                "expected create_alias, delete_alias or rename_alias",
            ));
        };
        actions.push(pb::AliasAction {
            action: Some(action),
        });
    }
    api.collections
        .update_aliases(Request::new(pb::UpdateAliasesRequest { actions }))
        .await?;
    ok(json!(true), started)
}

async fn list_aliases_of(api: &Services, collection: String) -> Reply {
    let started = Instant::now();
    let list = api
        .collections
        .list_aliases(Request::new(pb::ListAliasesRequest { collection }))
        .await?
        .into_inner();
    ok(aliases_json(&list), started)
}

/// `GET /aliases`.
pub async fn aliases(State(api): State<Services>) -> Reply {
    list_aliases_of(&api, String::new()).await
}

/// `GET /collections/{name}/aliases`.
pub async fn collection_aliases(State(api): State<Services>, Path(name): Path<String>) -> Reply {
    // An alias names its collection here too.
    let collection = describe(&api, name).await?.name;
    list_aliases_of(&api, collection).await
}
