//! Queries (`Points.Query`): a vector and/or text, validated into what each shard is asked
//! ([`ShardQuery`]) and how the coordinator fuses the answers ([`Query`]).

use quiver_index::fusion::{Fusion, Normalization};
use quiver_proto::v1 as pb;

use super::{at_least_one, batch, invalid, request_filter, search_query, Limits};
use crate::error::Result;
use crate::point::CollectionSpec;
use crate::shard::{SearchQuery, ShardQuery, TextQuery};

/// Results a query returns when it does not say.
pub const DEFAULT_QUERY_LIMIT: usize = 10;
/// Candidates per modality when a query does not say (at least its limit).
pub const DEFAULT_DEPTH: usize = 100;
/// RRF's constant when a query does not say.
pub const DEFAULT_RRF_K: f32 = 60.0;
/// Weighted fusion's weights when a query does not say.
pub const DEFAULT_VECTOR_WEIGHT: f32 = 0.7;
pub const DEFAULT_TEXT_WEIGHT: f32 = 0.3;
/// The longest query text, in bytes.
pub const MAX_QUERY_TEXT_BYTES: usize = 16 << 10;

/// A query, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// What each shard is asked.
    pub shard: ShardQuery,
    pub limit: usize,
    /// How the two modalities are fused (None: one modality only).
    pub fusion: Option<Fusion>,
    pub explain: bool,
}

impl Query {
    /// Candidates wanted by vector (0 without a vector part).
    pub fn vector_depth(&self) -> usize {
        self.shard.vector.as_ref().map_or(0, |v| v.top_k)
    }

    /// Candidates wanted by text (0 without a text part).
    pub fn text_depth(&self) -> usize {
        self.shard.text.as_ref().map_or(0, |t| t.limit)
    }
}

/// A depth of `field`: unset is `max(limit, DEFAULT_DEPTH)` within the limit on results.
fn depth(field: &str, value: Option<u32>, limit: usize, max: usize) -> Result<usize> {
    match value {
        None => Ok(limit.max(DEFAULT_DEPTH.min(max))),
        Some(d) => {
            let d = at_least_one(field, d, max, "limits.max_top_k")?;
            if d < limit {
                return Err(invalid(
                    field,
                    format!("{d} candidates cannot fill a limit of {limit}"),
                ));
            }
            Ok(d)
        }
    }
}

fn weight(field: &str, value: Option<f32>, default: f32) -> Result<f32> {
    match value {
        None => Ok(default),
        Some(w) if w.is_finite() && w >= 0.0 => Ok(w),
        Some(w) => Err(invalid(
            field,
            format!("{w} is not a weight: weights are finite and not negative"),
        )),
    }
}

/// The fusion a query asks for (unset: RRF with k = 60).
fn fusion(fusion: Option<&pb::query_request::Fusion>) -> Result<Fusion> {
    match fusion {
        None => Ok(Fusion::Rrf { k: DEFAULT_RRF_K }),
        Some(pb::query_request::Fusion::Rrf(rrf)) => match rrf.k {
            None => Ok(Fusion::Rrf { k: DEFAULT_RRF_K }),
            Some(k) if k.is_finite() && k > 0.0 => Ok(Fusion::Rrf { k }),
            Some(k) => Err(invalid(
                "rrf.k",
                format!("{k}: k must be a finite number above 0 (60 is usual)"),
            )),
        },
        Some(pb::query_request::Fusion::Weighted(w)) => {
            let vector = weight(
                "weighted.vector_weight",
                w.vector_weight,
                DEFAULT_VECTOR_WEIGHT,
            )?;
            let text = weight("weighted.text_weight", w.text_weight, DEFAULT_TEXT_WEIGHT)?;
            if vector == 0.0 && text == 0.0 {
                return Err(invalid(
                    "weighted",
                    "vector_weight and text_weight are both 0: nothing would score",
                ));
            }
            let normalization = match pb::Normalization::try_from(w.normalization) {
                Ok(pb::Normalization::Unspecified | pb::Normalization::Minmax) => {
                    Normalization::MinMax
                }
                Ok(pb::Normalization::Zscore) => Normalization::ZScore,
                Err(_) => {
                    return Err(invalid(
                        "weighted.normalization",
                        format!("unknown normalization {}", w.normalization),
                    ))
                }
            };
            Ok(Fusion::Weighted {
                weights: vec![vector, text],
                normalization,
            })
        }
    }
}

/// The text part of a query, checked against the collection's text fields.
fn text_query(
    req: &pb::QueryRequest,
    spec: &CollectionSpec,
    limit: usize,
    max: usize,
) -> Result<TextQuery> {
    if spec.text_fields.is_empty() {
        return Err(invalid(
            "text",
            format!(
                "collection `{}` declares no text fields to search (create it with \
                 --text-field FIELD)",
                spec.name
            ),
        ));
    }
    if req.text.len() > MAX_QUERY_TEXT_BYTES {
        return Err(invalid(
            "text",
            format!(
                "{} bytes exceed the limit of {MAX_QUERY_TEXT_BYTES}",
                req.text.len()
            ),
        ));
    }
    let mut fields = Vec::new();
    for (i, name) in req.text_fields.iter().enumerate() {
        if !spec.text_fields.iter().any(|f| &f.name == name) {
            let declared: Vec<&str> = spec.text_fields.iter().map(|f| f.name.as_str()).collect();
            return Err(invalid(
                format!("text_fields[{i}]"),
                format!(
                    "`{name}` is not a text field of collection `{}` (its text fields: {})",
                    spec.name,
                    declared.join(", ")
                ),
            ));
        }
        if !fields.contains(name) {
            fields.push(name.clone());
        }
    }
    Ok(TextQuery {
        text: req.text.clone(),
        fields,
        limit: depth("text_depth", req.text_depth, limit, max)?,
        filter: request_filter(req.filter.as_ref(), &req.filter_json)?,
        with_payload: req.with_payload,
        with_vector: req.with_vector,
    })
}

/// The vector part of a query, validated as a search of `depth` candidates.
fn vector_query(
    req: &pb::QueryRequest,
    spec: &CollectionSpec,
    limits: &Limits,
    limit: usize,
) -> Result<SearchQuery> {
    let max = limits.request.max_top_k;
    let depth = depth("vector_depth", req.vector_depth, limit, max)?;
    let search = pb::SearchRequest {
        collection: req.collection.clone(),
        vector: req.vector.clone(),
        top_k: Some(depth as u32),
        ef: req.ef,
        filter: req.filter.clone(),
        filter_json: req.filter_json.clone(),
        with_payload: req.with_payload,
        with_vector: req.with_vector,
        consistency: req.consistency,
        exact: false,
        rescore: None,
        oversampling: None,
        with_features: None,
    };
    search_query(&search, spec, limits)
}

/// Validates a query against the collection's spec and the limits.
pub fn query(req: &pb::QueryRequest, spec: &CollectionSpec, limits: &Limits) -> Result<Query> {
    let max = limits.request.max_top_k;
    let limit = match req.limit {
        None => DEFAULT_QUERY_LIMIT.min(max),
        Some(l) => at_least_one("limit", l, max, "limits.max_top_k")?,
    };
    let has_vector = !req.vector.is_empty();
    let has_text = !req.text.trim().is_empty();
    if !req.text.is_empty() && !has_text {
        return Err(invalid(
            "text",
            "the text is blank: it has no terms to search for",
        ));
    }
    let mode = pb::QueryMode::try_from(req.mode)
        .map_err(|_| invalid("mode", format!("unknown mode {}", req.mode)))?;
    let (vector, text) = match mode {
        pb::QueryMode::Unspecified if !has_vector && !has_text => {
            return Err(invalid("vector", "a query needs a vector, a text, or both"))
        }
        pb::QueryMode::Unspecified => (has_vector, has_text),
        pb::QueryMode::Hybrid => {
            if !has_vector {
                return Err(invalid(
                    "vector",
                    "hybrid mode needs a vector beside the text",
                ));
            }
            if !has_text {
                return Err(invalid(
                    "text",
                    "hybrid mode needs a text beside the vector",
                ));
            }
            (true, true)
        }
        pb::QueryMode::Dense if !has_vector => {
            return Err(invalid("vector", "dense mode needs a vector"))
        }
        pb::QueryMode::Dense => (true, false),
        pb::QueryMode::Bm25 if !has_text => {
            return Err(invalid("text", "bm25 mode needs a text with terms"))
        }
        pb::QueryMode::Bm25 => (false, true),
    };
    let fusion = match (vector, text) {
        (true, true) => Some(fusion(req.fusion.as_ref())?),
        _ => None,
    };
    let shard = ShardQuery {
        vector: match vector {
            true => Some(vector_query(req, spec, limits, limit)?),
            false => None,
        },
        text: match text {
            true => Some(text_query(req, spec, limit, max)?),
            false => None,
        },
    };
    Ok(Query {
        shard,
        limit,
        fusion,
        explain: req.explain,
    })
}

/// Validates the queries of a batch (`SearchBatchRequest.queries`), each as [`query`] (errors
/// name `queries[i].field`).
pub fn query_batch(
    req: &pb::SearchBatchRequest,
    spec: &CollectionSpec,
    limits: &Limits,
) -> Result<Vec<Query>> {
    if !req.searches.is_empty() {
        return Err(invalid(
            "queries",
            "a batch holds searches or queries, not both",
        ));
    }
    batch::items(
        "queries",
        &req.queries,
        req,
        limits,
        |q| (q.collection.as_str(), q.consistency),
        |q| query(q, spec, limits),
    )
}
