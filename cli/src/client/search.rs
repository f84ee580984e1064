//! `quiver search`: nearest neighbours of a vector (`Points.Search`), or a query by text and/or
//! vector (`Points.Query`: BM25, dense or hybrid, fused and explained); or every query of a file
//! (the rows of an .fvecs file, or BEIR's JSON-lines queries), sent as `SearchBatch` calls of
//! [`QUERIES_PER_BATCH`] queries, answers printed in order.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use quiver_proto::v1 as pb;
use quiver_proto::v1::points_client::PointsClient;
use quiver_proto::wire::struct_to_json;
use serde_json::{json, Value};

use super::{
    id_json, parse_filter, read_fvecs, status, vector_from_json, ConsistencyArg, Endpoint, Format,
};

/// Queries per `SearchBatch` call of `--query-file`.
const QUERIES_PER_BATCH: usize = 256;

#[derive(Args)]
pub struct SearchArgs {
    collection: String,
    /// The query vector as a JSON array.
    #[arg(long, conflicts_with = "query_file")]
    vector: Option<String>,
    /// Text to search for in the collection's text fields (BM25), alone or beside --vector.
    #[arg(long, conflicts_with = "query_file")]
    text: Option<String>,
    /// Run every query of a file: an .fvecs file's rows as vectors, or a JSON-lines file of
    /// BEIR queries (`{"_id": .., "text": ..}`, optionally a `"vector"`), whose answers carry
    /// their `query_id`. Sent in batches (`SearchBatch`).
    #[arg(long)]
    query_file: Option<PathBuf>,
    /// dense (the vector), bm25 (the text) or hybrid (both, fused) [default: from what is given].
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
    /// How a hybrid query fuses its two lists.
    #[arg(long, value_enum, default_value = "rrf")]
    fusion: FusionArg,
    /// RRF's constant k (above 0).
    #[arg(long, default_value_t = 60.0)]
    rrf_k: f32,
    /// Weighted fusion: the vector list's weight.
    #[arg(long, default_value_t = 0.7)]
    vector_weight: f32,
    /// Weighted fusion: the text list's weight.
    #[arg(long, default_value_t = 0.3)]
    text_weight: f32,
    /// Weighted fusion: how each list's scores are normalised.
    #[arg(long, value_enum, default_value = "minmax")]
    normalization: NormalizationArg,
    /// Candidates taken per modality before fusing [default: max(top-k, 100)].
    #[arg(long)]
    depth: Option<u32>,
    /// A text field to search (repeatable) [default: every one of the collection's].
    #[arg(long = "text-field")]
    text_fields: Vec<String>,
    /// Print each hit's rank and raw score per modality and its fused score.
    #[arg(long)]
    explain: bool,
    #[arg(long, default_value_t = 10)]
    top_k: u32,
    /// HNSW search width (default: the collection's).
    #[arg(long)]
    ef: Option<u32>,
    /// JSON filter, e.g. '{"category": {"$eq": "ml"}}'.
    #[arg(long)]
    filter: Option<String>,
    /// Search exactly instead of through the index (vector searches only).
    #[arg(long)]
    exact: bool,
    /// For a quantized collection: rescore candidates with the full vectors (true, the
    /// default) or return the encoded vectors' approximate scores (false).
    #[arg(long)]
    rescore: Option<bool>,
    /// For a quantized collection: candidates rescored per hit, 1..=16 [default: 3].
    #[arg(long)]
    oversampling: Option<f32>,
    #[arg(long)]
    with_payload: bool,
    /// Print each hit's vector too.
    #[arg(long)]
    with_vector: bool,
    /// Join online feature values (`view:feature`, comma-separated) onto each hit, by the
    /// entity key in payload field --features-key.
    #[arg(long, value_delimiter = ',', requires = "features_key")]
    with_features: Vec<String>,
    /// The payload field that holds each point's entity key (for --with-features).
    #[arg(long, requires = "with_features")]
    features_key: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// linearizable (leader, confirmed with a quorum), leader, or any (this replica, may lag).
    #[arg(long, value_enum, default_value = "leader")]
    consistency: ConsistencyArg,
    #[command(flatten)]
    endpoint: Endpoint,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Dense,
    Bm25,
    Hybrid,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum FusionArg {
    Rrf,
    Weighted,
}

#[derive(Clone, Copy, ValueEnum)]
enum NormalizationArg {
    Minmax,
    Zscore,
}

/// One query to run: a vector, a text or both, and the id a query file gave it.
struct Query {
    id: Option<Value>,
    vector: Option<Vec<f32>>,
    text: Option<String>,
}

/// The queries of a JSON-lines file of BEIR queries.
fn read_query_lines(path: &Path) -> anyhow::Result<Vec<Query>> {
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut queries = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{} line {}", path.display(), n + 1);
        let value: Value = serde_json::from_str(&line).with_context(at)?;
        let text = value.get("text").and_then(Value::as_str).map(str::to_owned);
        let vector = match value.get("vector") {
            Some(Value::Array(values)) => {
                Some(vector_from_json(&format!("{} `vector`", at()), values)?)
            }
            Some(_) => bail!("{}: `vector` must be an array of numbers", at()),
            None => None,
        };
        if text.is_none() && vector.is_none() {
            bail!("{}: a query needs a \"text\" or a \"vector\"", at());
        }
        queries.push(Query {
            id: value.get("_id").or_else(|| value.get("id")).cloned(),
            vector,
            text,
        });
    }
    Ok(queries)
}

impl SearchArgs {
    /// Whether the queries go to `Points.Query` (text, a mode, fusion, explain) rather than
    /// `Points.Search`.
    fn is_query(&self, queries: &[Query]) -> bool {
        self.mode.is_some() || self.explain || queries.iter().any(|q| q.text.is_some())
    }

    fn search_request(&self, filter_json: &str, vector: Vec<f32>) -> pb::SearchRequest {
        pb::SearchRequest {
            collection: self.collection.clone(),
            vector,
            top_k: Some(self.top_k),
            ef: self.ef,
            filter: None,
            filter_json: filter_json.to_owned(),
            with_payload: self.with_payload,
            with_vector: self.with_vector,
            consistency: self.consistency.proto(),
            exact: self.exact,
            rescore: self.rescore,
            oversampling: self.oversampling,
            with_features: self.with_features(),
        }
    }

    fn with_features(&self) -> Option<pb::WithFeatures> {
        self.features_key.as_ref().map(|key| pb::WithFeatures {
            key_field: key.clone(),
            features: self.with_features.clone(),
            feature_service: String::new(),
        })
    }

    fn query_request(&self, filter_json: &str, query: &Query) -> pb::QueryRequest {
        let fusion = match self.fusion {
            FusionArg::Rrf => pb::query_request::Fusion::Rrf(pb::RrfFusion {
                k: Some(self.rrf_k),
            }),
            FusionArg::Weighted => pb::query_request::Fusion::Weighted(pb::WeightedFusion {
                vector_weight: Some(self.vector_weight),
                text_weight: Some(self.text_weight),
                normalization: match self.normalization {
                    NormalizationArg::Minmax => pb::Normalization::Minmax,
                    NormalizationArg::Zscore => pb::Normalization::Zscore,
                } as i32,
            }),
        };
        let mode = match self.mode {
            None => pb::QueryMode::Unspecified,
            Some(ModeArg::Dense) => pb::QueryMode::Dense,
            Some(ModeArg::Bm25) => pb::QueryMode::Bm25,
            Some(ModeArg::Hybrid) => pb::QueryMode::Hybrid,
        };
        // (a file's queries may carry both parts: the mode picks what is used)
        let (vector, text) = match self.mode {
            Some(ModeArg::Dense) => (query.vector.clone(), None),
            Some(ModeArg::Bm25) => (None, query.text.clone()),
            _ => (query.vector.clone(), query.text.clone()),
        };
        pb::QueryRequest {
            collection: self.collection.clone(),
            vector: vector.unwrap_or_default(),
            text: text.unwrap_or_default(),
            text_fields: self.text_fields.clone(),
            filter: None,
            filter_json: filter_json.to_owned(),
            limit: Some(self.top_k),
            vector_depth: self.depth,
            text_depth: self.depth,
            fusion: Some(fusion),
            explain: self.explain,
            with_payload: self.with_payload,
            with_vector: self.with_vector,
            consistency: self.consistency.proto(),
            ef: self.ef,
            mode: mode as i32,
            with_features: self.with_features(),
        }
    }
}

pub async fn search(args: SearchArgs) -> anyhow::Result<()> {
    let queries: Vec<Query> = match (&args.vector, &args.text, &args.query_file) {
        (None, None, Some(f)) if f.extension().is_some_and(|e| e == "fvecs") => read_fvecs(f)?
            .into_iter()
            .map(|v| Query {
                id: None,
                vector: Some(v),
                text: None,
            })
            .collect(),
        (None, None, Some(f)) => read_query_lines(f)?,
        (None, None, None) => bail!("give --vector, --text (or both), or --query-file"),
        (vector, text, _) => {
            let vector = match vector {
                Some(v) => {
                    let values: Vec<Value> = serde_json::from_str(v)
                        .context("--vector must be a JSON array of numbers")?;
                    Some(vector_from_json("--vector", &values)?)
                }
                None => None,
            };
            vec![Query {
                id: None,
                vector,
                text: text.clone(),
            }]
        }
    };
    let is_query = args.is_query(&queries);
    if !is_query && queries.iter().any(|q| q.vector.is_none()) {
        bail!("every query needs a vector unless it has a text");
    }
    let filter_json = parse_filter(args.filter.clone())?;
    let mut client =
        PointsClient::new(args.endpoint.channel().await?).max_decoding_message_size(usize::MAX);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut q = 0;
    for chunk in queries.chunks(QUERIES_PER_BATCH) {
        let answers = match (is_query, chunk) {
            (true, [one]) => {
                let resp = client.query(args.query_request(&filter_json, one)).await;
                vec![resp.map_err(status)?.into_inner()]
            }
            (false, [one]) => {
                let vector = one.vector.clone().unwrap_or_default();
                let resp = client
                    .search(args.search_request(&filter_json, vector))
                    .await;
                vec![resp.map_err(status)?.into_inner()]
            }
            (true, many) => {
                let batch = pb::SearchBatchRequest {
                    collection: args.collection.clone(),
                    searches: Vec::new(),
                    consistency: args.consistency.proto(),
                    queries: many
                        .iter()
                        .map(|x| args.query_request(&filter_json, x))
                        .collect(),
                };
                let resp = client.search_batch(batch).await.map_err(status)?;
                resp.into_inner().responses
            }
            (false, many) => {
                let searches = many
                    .iter()
                    .map(|x| {
                        args.search_request(&filter_json, x.vector.clone().unwrap_or_default())
                    })
                    .collect();
                let batch = pb::SearchBatchRequest {
                    collection: args.collection.clone(),
                    searches,
                    consistency: args.consistency.proto(),
                    queries: Vec::new(),
                };
                let resp = client.search_batch(batch).await.map_err(status)?;
                resp.into_inner().responses
            }
        };
        for (query, resp) in chunk.iter().zip(&answers) {
            print_answer(&mut out, q, query.id.as_ref(), resp, args.format)?;
            q += 1;
        }
    }
    Ok(())
}

fn modality_json(m: &pb::ModalityScore) -> Value {
    json!({"rank": m.rank, "score": m.score, "contribution": m.contribution})
}

/// Prints the answer to query number `q`.
fn print_answer(
    out: &mut impl Write,
    q: usize,
    query_id: Option<&Value>,
    resp: &pb::SearchResponse,
    format: Format,
) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            let results: Vec<Value> = resp
                .results
                .iter()
                .map(|r| {
                    let mut hit = json!({"id": id_json(r.id.as_ref()), "score": r.score});
                    if let Some(p) = &r.payload {
                        hit["payload"] = Value::Object(struct_to_json("payload", p)?);
                    }
                    if !r.vector.is_empty() {
                        hit["vector"] = json!(r.vector);
                    }
                    if !r.features.is_empty() {
                        hit["features"] = features_json(&r.features);
                    }
                    if let Some(e) = &r.explain {
                        hit["explain"] = json!({
                            "vector": e.vector.as_ref().map(modality_json),
                            "text": e.text.as_ref().map(modality_json),
                            "fused": e.fused,
                        });
                    }
                    Ok(hit)
                })
                .collect::<anyhow::Result<_>>()?;
            let answer = match query_id {
                Some(id) => json!({"query_id": id, "results": results}),
                None => json!({"results": results}),
            };
            writeln!(out, "{answer}")?;
        }
        Format::Table => {
            match query_id {
                Some(id) => writeln!(out, "query {q} {id} ({} plan)", resp.plan)?,
                None => writeln!(out, "query {q} ({} plan)", resp.plan)?,
            }
            writeln!(out, "{:>4}  {:<38} {:>12}  payload", "rank", "id", "score")?;
            for (rank, r) in resp.results.iter().enumerate() {
                let mut payload = match &r.payload {
                    Some(p) => Value::Object(struct_to_json("payload", p)?).to_string(),
                    None => String::new(),
                };
                if !r.vector.is_empty() {
                    payload = format!("{payload} {}", json!(r.vector)).trim().to_string();
                }
                if !r.features.is_empty() {
                    payload = format!("{payload} features={}", features_json(&r.features))
                        .trim()
                        .to_string();
                }
                if let Some(e) = &r.explain {
                    let part = |name: &str, m: &Option<pb::ModalityScore>| match m {
                        Some(m) => {
                            format!("{name} #{} {:.4} (+{:.4})", m.rank, m.score, m.contribution)
                        }
                        None => format!("{name} -"),
                    };
                    payload = format!(
                        "[{}; {}] {payload}",
                        part("vector", &e.vector),
                        part("text", &e.text)
                    )
                    .trim()
                    .to_string();
                }
                writeln!(
                    out,
                    "{:>4}  {:<38} {:>12.6}  {}",
                    rank + 1,
                    id_json(r.id.as_ref()).to_string(),
                    r.score,
                    payload
                )?;
            }
        }
    }
    Ok(())
}

/// A hit's features, by reference, in name order.
fn features_json(features: &std::collections::HashMap<String, pb::FeatureValue>) -> Value {
    let sorted: std::collections::BTreeMap<&String, Value> = features
        .iter()
        .map(|(name, v)| (name, super::features::value_json(v)))
        .collect();
    json!(sorted)
}
