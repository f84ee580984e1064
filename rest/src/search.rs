//! Search and query routes: nearest neighbours of a vector, of a stored point (itself left out),
//! or no vector at all (points in id order), one request or a batch of them.
//!
//! `limit` (default 10) and `offset` page through the results; `score_threshold` keeps hits at
//! least that similar (cosine, dot) or at most that far (Euclid); `params` carries `hnsw_ef`,
//! `exact` and `quantization: {"rescore", "oversampling"}` (`ignore` is accepted: quiver's
//! quantized graphs always search their encoded vectors). `prefetch` and fusion are refused until quiver has hybrid search.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use quiver_proto::v1 as pb;
use serde_json::{json, Value};
use tonic::Request;

use crate::filter::filter;
use crate::points::{
    id_from, id_json, limit, scored_json, u32_of, uint, vector_from, with_vector, Body,
    PayloadKeys, Result,
};
use crate::reply::{body, ok, ApiError, Reply};
use crate::Services;

/// A refusal of the results asked for (`top_k`, which is `limit` + `offset` here) named as the
/// REST body names it.
fn as_limit(status: tonic::Status) -> ApiError {
    let field = status
        .metadata()
        .get(quiver_proto::wire::headers::FIELD)
        .and_then(|v| v.to_str().ok());
    match field {
        Some("top_k") => ApiError::invalid(
            "limit",
            format!(
                "limit + offset {}",
                status.message().trim_start_matches("top_k: ")
            ),
        ),
        _ => status.into(),
    }
}

/// A nearest-neighbour search as a Qdrant search or query body asks for it.
struct Nearest {
    vector: Vec<f32>,
    /// Left out of the results (a query by point id).
    exclude: Option<pb::PointId>,
}

async fn nearest(api: &Services, name: &str, body: &Body, nearest: Nearest) -> Result<Vec<Value>> {
    let limit = limit(body)?;
    let offset = uint(body, "offset")?.unwrap_or(0);
    let (ef, exact, rescore, oversampling) = match body.get("params") {
        None | Some(Value::Null) => (None, false, None, None),
        Some(Value::Object(p)) => {
            let exact = match p.get("exact") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(ApiError::invalid("params.exact", "expected a bool")),
            };
            let ef = uint(p, "hnsw_ef")?
                .map(|ef| u32_of("params.hnsw_ef", ef))
                .transpose()?;
            let (rescore, oversampling) = match p.get("quantization") {
                None | Some(Value::Null) => (None, None),
                Some(Value::Object(q)) => {
                    let rescore = match q.get("rescore") {
                        None | Some(Value::Null) => None,
                        Some(Value::Bool(b)) => Some(*b),
                        Some(_) => {
                            return Err(ApiError::invalid(
                                "params.quantization.rescore",
                                "expected a bool",
                            ))
                        }
                    };
                    let oversampling = match q.get("oversampling") {
                        None | Some(Value::Null) => None,
                        Some(v) => Some(v.as_f64().ok_or_else(|| {
                            ApiError::invalid(
                                "params.quantization.oversampling",
                                "expected a number",
                            )
                        })? as f32),
                    };
                    (rescore, oversampling)
                }
                Some(_) => {
                    return Err(ApiError::invalid(
                        "params.quantization",
                        "expected an object",
                    ))
                }
            };
            (ef, exact, rescore, oversampling)
        }
        Some(_) => return Err(ApiError::invalid("params", "expected an object")),
    };
    let keys = PayloadKeys::read(body, false)?;
    let vectors = with_vector(body)?;
    let extra = u64::from(nearest.exclude.is_some());
    let top_k = limit.saturating_add(offset).saturating_add(extra);
    let resp = api
        .points
        .search(Request::new(pb::SearchRequest {
            collection: name.to_string(),
            vector: nearest.vector,
            top_k: Some(u32_of("limit", top_k)?),
            ef,
            filter: filter("filter", body.get("filter"))?,
            filter_json: String::new(),
            with_payload: keys.wanted(),
            with_vector: vectors,
            consistency: 0,
            exact,
            rescore,
            oversampling,
            with_features: None,
        }))
        .await
        .map_err(as_limit)?
        .into_inner();
    let threshold = match body.get("score_threshold") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_f64()
                .ok_or_else(|| ApiError::invalid("score_threshold", "expected a number"))?
                as f32,
        ),
    };
    // Which side of the threshold passes: l2 distances must be at most it, similarities at least.
    let distances = match threshold {
        None => false,
        Some(_) => {
            let info = api
                .collections
                .get(Request::new(pb::GetCollectionRequest {
                    name: name.to_string(),
                }))
                .await?
                .into_inner();
            info.metric == pb::Metric::L2 as i32
        }
    };
    resp.results
        .iter()
        .filter(|r| nearest.exclude.is_none() || r.id != nearest.exclude)
        .filter(|r| match threshold {
            None => true,
            Some(t) if distances => r.score <= t,
            Some(t) => r.score >= t,
        })
        .skip(offset as usize)
        .take(limit as usize)
        .map(|r| scored_json(r, &keys, vectors))
        .collect()
}

pub async fn search(State(api): State<Services>, Path(name): Path<String>, bytes: Bytes) -> Reply {
    let started = Instant::now();
    let body = body(&bytes)?;
    let hits = search_body(&api, &name, &body).await?;
    ok(Value::Array(hits), started)
}

async fn search_body(api: &Services, name: &str, body: &Body) -> Result<Vec<Value>> {
    let vector = match body.get("vector") {
        Some(Value::Object(named)) if named.contains_key("vector") => {
            match named.get("name") {
                None | Some(Value::Null) => {}
                Some(Value::String(n)) if n.is_empty() => {}
                Some(_) => {
                    return Err(ApiError::invalid(
                        "vector.name",
                        "named vectors are not supported",
                    ))
                }
            }
            vector_from("vector.vector", &named["vector"])?
        }
        Some(v) => vector_from("vector", v)?,
        None => return Err(ApiError::invalid("vector", "required")),
    };
    nearest(
        api,
        name,
        body,
        Nearest {
            vector,
            exclude: None,
        },
    )
    .await
}

pub async fn search_batch(
    State(api): State<Services>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Reply {
    let started = Instant::now();
    let body = body(&bytes)?;
    let mut out = Vec::new();
    for (i, search) in searches(&body)?.iter().enumerate() {
        let hits = search_body(&api, &name, search)
            .await
            .map_err(|e| e.within(&format!("searches[{i}]")))?;
        out.push(Value::Array(hits));
    }
    ok(Value::Array(out), started)
}

fn searches(body: &Body) -> Result<Vec<Body>> {
    body.get("searches")
        .and_then(Value::as_array)
        .and_then(|items| items.iter().map(|s| s.as_object().cloned()).collect())
        .ok_or_else(|| ApiError::invalid("searches", "expected a list of request objects"))
}

pub async fn query(State(api): State<Services>, Path(name): Path<String>, bytes: Bytes) -> Reply {
    let started = Instant::now();
    let body = body(&bytes)?;
    let points = query_body(&api, &name, &body).await?;
    ok(json!({"points": points}), started)
}

pub async fn query_batch(
    State(api): State<Services>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Reply {
    let started = Instant::now();
    let body = body(&bytes)?;
    let mut out = Vec::new();
    for (i, query) in searches(&body)?.iter().enumerate() {
        let points = query_body(&api, &name, query)
            .await
            .map_err(|e| e.within(&format!("searches[{i}]")))?;
        out.push(json!({"points": points}));
    }
    ok(Value::Array(out), started)
}

async fn query_body(api: &Services, name: &str, body: &Body) -> Result<Vec<Value>> {
    match body.get("prefetch") {
        None | Some(Value::Null) => {}
        Some(Value::Array(p)) if p.is_empty() => {}
        Some(_) => {
            return Err(ApiError::invalid(
                "prefetch",
                "not supported yet: quiver has no hybrid search to fuse",
            ))
        }
    }
    match body.get("using") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() => {}
        Some(_) => {
            return Err(ApiError::invalid(
                "using",
                "named vectors are not supported",
            ))
        }
    }
    let query = match body.get("query") {
        Some(Value::Object(q)) if q.contains_key("nearest") => Some(&q["nearest"]),
        Some(Value::Object(q)) => {
            let kind: Vec<&String> = q.keys().collect();
            return Err(ApiError::invalid(
                "query",
                format!(
                    "{kind:?} queries are not supported (a vector, {{\"nearest\"}} or a point id)"
                ),
            ));
        }
        Some(Value::Null) | None => None,
        Some(q) => Some(q),
    };
    let nearest_to = match query {
        None => return first_points(api, name, body).await,
        Some(v @ Value::Array(_)) => Nearest {
            vector: vector_from("query", v)?,
            exclude: None,
        },
        Some(id) => {
            let id = id_from("query", id)?;
            let mut found = api
                .points
                .get(Request::new(pb::GetPointsRequest {
                    collection: name.to_string(),
                    ids: vec![id.clone()],
                    with_payload: false,
                    with_vector: true,
                    consistency: 0,
                }))
                .await?
                .into_inner();
            let point = found.points.pop().ok_or_else(|| {
                ApiError::invalid("query", format!("no point with id {}", id_json(Some(&id))))
            })?;
            Nearest {
                vector: point.vector,
                // The id as the server spells it (a UUID given in capitals or without hyphens
                // comes back normalised), so the comparison below finds it.
                exclude: point.id.or(Some(id)),
            }
        }
    };
    nearest(api, name, body, nearest_to).await
}

/// A query without a vector: the first points in id order (score 0), filtered.
async fn first_points(api: &Services, name: &str, body: &Body) -> Result<Vec<Value>> {
    let limit = limit(body)?;
    let offset = uint(body, "offset")?.unwrap_or(0);
    let keys = PayloadKeys::read(body, false)?;
    let vectors = with_vector(body)?;
    let resp = api
        .points
        .scroll(Request::new(pb::ScrollRequest {
            collection: name.to_string(),
            limit: Some(u32_of("limit", limit.saturating_add(offset))?),
            cursor: String::new(),
            filter: filter("filter", body.get("filter"))?,
            filter_json: String::new(),
            with_payload: keys.wanted(),
            with_vector: vectors,
            consistency: 0,
        }))
        .await?
        .into_inner();
    resp.points
        .iter()
        .skip(offset as usize)
        .take(limit as usize)
        .map(|p| {
            let scored = pb::ScoredPoint {
                id: p.id.clone(),
                score: 0.0,
                payload: p.payload.clone(),
                vector: p.vector.clone(),
                explain: None,
                features: Default::default(),
            };
            scored_json(&scored, &keys, vectors)
        })
        .collect()
}
