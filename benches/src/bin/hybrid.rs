//! `quiver-hybrid-bench`: retrieval quality and latency of `Points.Query` on SciFact, through a
//! running server over gRPC.
//!
//! Loads the corpus into a collection (384-d cosine HNSW; the documents' text in a text field
//! with the English analyzer, and `embed` on it so the server embeds query text), the vectors
//! taken from `minilm/corpus.fvecs` (sentence-transformers' all-MiniLM-L6-v2, which the server's
//! embeddings match). Then every judged claim (the train split: the test split's judgments are
//! held back) is sent as text only, one query at a time, in each mode: bm25, dense (the server
//! embeds the claim), rrf and weighted fusions; nDCG@10, recall@100 and the latency per query
//! (p50 / p99, the embedding included) for each. Prints one JSON line per mode.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use quiver_benches::data::read_fvecs;
use quiver_benches::scifact::{quality, SciFact};
use quiver_benches::stats::percentile_us;
use quiver_proto::v1 as pb;
use quiver_proto::v1::collections_client::CollectionsClient;
use quiver_proto::v1::points_client::PointsClient;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(
    name = "quiver-hybrid-bench",
    about = "Points.Query quality and latency on SciFact"
)]
struct Args {
    /// The server's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:6334")]
    endpoint: String,
    /// A BEIR directory (corpus.jsonl, queries.jsonl, qrels/train.tsv, minilm/corpus.fvecs).
    #[arg(long)]
    scifact: PathBuf,
    /// Shards of the collection.
    #[arg(long, default_value_t = 1)]
    shards: u32,
    /// Candidates per modality before fusing.
    #[arg(long, default_value_t = 100)]
    depth: u32,
    /// Send the documents as text only and let the server embed them (the background
    /// pipeline), timing how long until all are searchable, instead of sending the vectors.
    #[arg(long)]
    embed_corpus: bool,
}

/// A mode as the bench names it, and the query options that make it.
struct Mode {
    name: String,
    mode: pb::QueryMode,
    fusion: Option<pb::query_request::Fusion>,
}

fn modes() -> Vec<Mode> {
    let weighted = |v: f32, normalization: pb::Normalization, name: &str| Mode {
        name: format!("weighted {v}/{:.1} {name}", 1.0 - v),
        mode: pb::QueryMode::Hybrid,
        fusion: Some(pb::query_request::Fusion::Weighted(pb::WeightedFusion {
            vector_weight: Some(v),
            text_weight: Some(1.0 - v),
            normalization: normalization as i32,
        })),
    };
    let mut modes = vec![
        Mode {
            name: "bm25".into(),
            mode: pb::QueryMode::Bm25,
            fusion: None,
        },
        Mode {
            name: "dense".into(),
            mode: pb::QueryMode::Dense,
            fusion: None,
        },
        Mode {
            name: "rrf k=60".into(),
            mode: pb::QueryMode::Hybrid,
            fusion: None,
        },
    ];
    for v in [0.7, 0.5, 0.3] {
        modes.push(weighted(v, pb::Normalization::Minmax, "minmax"));
        modes.push(weighted(v, pb::Normalization::Zscore, "zscore"));
    }
    modes
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let data = SciFact::load(&args.scifact)?;
    let vectors = read_fvecs(&args.scifact.join("minilm/corpus.fvecs"))?;
    anyhow::ensure!(
        vectors.len() == data.docs.len(),
        "{} vectors for {} documents",
        vectors.len(),
        data.docs.len()
    );
    let channel = tonic::transport::Endpoint::from_shared(args.endpoint.clone())?
        .connect()
        .await
        .with_context(|| format!("connecting to {}", args.endpoint))?;
    let mut collections = CollectionsClient::new(channel.clone());
    let mut points = PointsClient::new(channel).max_decoding_message_size(usize::MAX);

    let name = "scifact_bench";
    let _ = collections
        .delete(pb::DeleteCollectionRequest { name: name.into() })
        .await;
    collections
        .create(pb::CreateCollectionRequest {
            name: name.into(),
            dim: 384,
            metric: pb::Metric::Cosine as i32,
            shard_count: Some(args.shards),
            text_fields: vec![pb::TextField {
                name: "text".into(),
                analyzer: pb::TextAnalyzer::English as i32,
            }],
            embed: "text".into(),
            ..Default::default()
        })
        .await?;
    let started = Instant::now();
    let all: Vec<pb::Point> = data
        .docs
        .iter()
        .zip(&vectors)
        .enumerate()
        .map(|(i, ((id, text), vector))| {
            let payload = json!({"doc": id, "text": text});
            pb::Point {
                id: Some(pb::PointId {
                    kind: Some(pb::point_id::Kind::Num(i as u64)),
                }),
                vector: match args.embed_corpus {
                    true => Vec::new(),
                    false => vector.clone(),
                },
                payload: Some(quiver_proto::wire::json_to_struct(
                    payload.as_object().expect("an object"),
                )),
            }
        })
        .collect();
    for chunk in all.chunks(256) {
        points
            .upsert(pb::UpsertRequest {
                collection: name.into(),
                points: chunk.to_vec(),
                wait_indexed: true,
                ..Default::default()
            })
            .await?;
    }
    let written = started.elapsed().as_secs_f64();
    // (with the server embedding: until no document waits for its vector)
    loop {
        let info = collections
            .get(pb::GetCollectionRequest { name: name.into() })
            .await?
            .into_inner();
        if info.embedding.is_none_or(|e| e.pending == 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let searchable = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "ingest": if args.embed_corpus { "text only, embedded by the server" } else { "vectors and text" },
            "documents": all.len(), "shards": args.shards,
            "acknowledged_s": (written * 10.0).round() / 10.0,
            "searchable_s": (searchable * 10.0).round() / 10.0,
            "documents_per_s": (all.len() as f64 / searchable).round(),
        })
    );

    let judged: Vec<&(String, String)> = data
        .claims
        .iter()
        .filter(|(id, _)| data.judged.contains_key(id))
        .collect();
    for mode in modes() {
        let (mut ndcg, mut recall) = (0.0, 0.0);
        let mut latencies: Vec<Duration> = Vec::with_capacity(judged.len());
        for (id, text) in &judged {
            let request = pb::QueryRequest {
                collection: name.into(),
                text: text.clone(),
                limit: Some(100),
                vector_depth: Some(args.depth.max(100)),
                text_depth: Some(args.depth.max(100)),
                fusion: mode.fusion,
                mode: mode.mode as i32,
                ..Default::default()
            };
            let sent = Instant::now();
            let answer = points.query(request).await?.into_inner();
            latencies.push(sent.elapsed());
            let ranked: Vec<String> = answer
                .results
                .iter()
                .filter_map(|r| match r.id.as_ref()?.kind.as_ref()? {
                    pb::point_id::Kind::Num(n) => Some(data.docs[*n as usize].0.clone()),
                    pb::point_id::Kind::Uuid(_) => None,
                })
                .collect();
            let (d, r) = quality(&ranked, &data.judged[id]);
            ndcg += d;
            recall += r;
        }
        latencies.sort();
        let n = judged.len() as f64;
        println!(
            "{}",
            json!({
                "mode": mode.name, "shards": args.shards, "claims": judged.len(),
                "ndcg_at_10_train": (ndcg / n * 10000.0).round() / 10000.0,
                "recall_at_100_train": (recall / n * 10000.0).round() / 10000.0,
                "p50_ms": (percentile_us(&latencies, 50.0) / 10.0).round() / 100.0,
                "p99_ms": (percentile_us(&latencies, 99.0) / 10.0).round() / 100.0,
            })
        );
    }
    Ok(())
}
