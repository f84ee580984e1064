//! `quiver search`: nearest neighbours of a vector, or of every row of an .fvecs file (sent as
//! `SearchBatch` calls of [`QUERIES_PER_BATCH`] rows, answers printed in order).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
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
    #[arg(
        long,
        conflicts_with = "query_file",
        required_unless_present = "query_file"
    )]
    vector: Option<String>,
    /// Run every row of an .fvecs file as a query (sent in batches: `SearchBatch`).
    #[arg(long)]
    query_file: Option<PathBuf>,
    #[arg(long, default_value_t = 10)]
    top_k: u32,
    /// HNSW search width (default: the collection's).
    #[arg(long)]
    ef: Option<u32>,
    /// JSON filter, e.g. '{"category": {"$eq": "ml"}}'.
    #[arg(long)]
    filter: Option<String>,
    /// Search exactly instead of through the index.
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
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// linearizable (leader, confirmed with a quorum), leader, or any (this replica, may lag).
    #[arg(long, value_enum, default_value = "leader")]
    consistency: ConsistencyArg,
    #[command(flatten)]
    endpoint: Endpoint,
}

pub async fn search(args: SearchArgs) -> anyhow::Result<()> {
    let queries: Vec<Vec<f32>> = match (&args.vector, &args.query_file) {
        (Some(v), _) => {
            let values: Vec<Value> =
                serde_json::from_str(v).context("--vector must be a JSON array of numbers")?;
            vec![vector_from_json("--vector", &values)?]
        }
        (None, Some(f)) => read_fvecs(f)?,
        (None, None) => bail!("give --vector or --query-file"),
    };
    let filter_json = parse_filter(args.filter.clone())?;
    let mut client =
        PointsClient::new(args.endpoint.channel().await?).max_decoding_message_size(usize::MAX);
    let request = |vector: Vec<f32>| pb::SearchRequest {
        collection: args.collection.clone(),
        vector,
        top_k: Some(args.top_k),
        ef: args.ef,
        filter: None,
        filter_json: filter_json.clone(),
        with_payload: args.with_payload,
        with_vector: args.with_vector,
        consistency: args.consistency.proto(),
        exact: args.exact,
        rescore: args.rescore,
        oversampling: args.oversampling,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut answers = Vec::new();
    let mut queries = queries.into_iter().peekable();
    let mut q = 0;
    while queries.peek().is_some() {
        let chunk: Vec<Vec<f32>> = queries.by_ref().take(QUERIES_PER_BATCH).collect();
        answers.clear();
        if chunk.len() == 1 {
            let vector = chunk.into_iter().next().expect("one query");
            let resp = client.search(request(vector)).await.map_err(status)?;
            answers.push(resp.into_inner());
        } else {
            let batch = pb::SearchBatchRequest {
                collection: args.collection.clone(),
                searches: chunk.into_iter().map(request).collect(),
                consistency: args.consistency.proto(),
            };
            let resp = client.search_batch(batch).await.map_err(status)?;
            answers.extend(resp.into_inner().responses);
        }
        for resp in answers.drain(..) {
            print_answer(&mut out, q, &resp, args.format)?;
            q += 1;
        }
    }
    Ok(())
}

/// Prints the answer to query number `q`.
fn print_answer(
    out: &mut impl Write,
    q: usize,
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
                    Ok(hit)
                })
                .collect::<anyhow::Result<_>>()?;
            writeln!(out, "{}", json!({"results": results}))?;
        }
        Format::Table => {
            writeln!(out, "query {q} ({} plan)", resp.plan)?;
            writeln!(out, "{:>4}  {:<38} {:>12}  payload", "rank", "id", "score")?;
            for (rank, r) in resp.results.iter().enumerate() {
                let mut payload = match &r.payload {
                    Some(p) => Value::Object(struct_to_json("payload", p)?).to_string(),
                    None => String::new(),
                };
                if !r.vector.is_empty() {
                    payload = format!("{payload} {}", json!(r.vector)).trim().to_string();
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
