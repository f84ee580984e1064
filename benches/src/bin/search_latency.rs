//! `quiver-search-latency`: per-request search latency through a running quiver endpoint.
//!
//! Sends each query of an `.fvecs` file as one gRPC `Search`, one at a time over one connection,
//! after a warm-up, and prints one JSON line with the p50, p99 and mean latency in milliseconds.
//! The collection must exist and hold points; nothing is written.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::Parser;
use quiver_benches::data::read_fvecs;
use quiver_benches::report::round;
use quiver_benches::stats::percentile_us;
use quiver_proto::v1::points_client::PointsClient;
use quiver_proto::v1::{ReadConsistency, SearchRequest};
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(
    name = "quiver-search-latency",
    about = "Per-request search latency (p50/p99) against a quiver endpoint"
)]
struct Args {
    /// gRPC endpoint (a router or a node's front).
    #[arg(long, default_value = "http://127.0.0.1:6334")]
    endpoint: String,
    /// Collection to search.
    #[arg(long)]
    collection: String,
    /// Query vectors (.fvecs).
    #[arg(long)]
    query: PathBuf,
    /// Measured queries (cycling through the file); a tenth as many again run first as warm-up.
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    /// Neighbours per query.
    #[arg(long, default_value_t = 10)]
    top_k: u32,
    /// HNSW candidate list size (0: the collection's default).
    #[arg(long, default_value_t = 64)]
    ef: u32,
    /// Read from any replica instead of the shard leader.
    #[arg(long)]
    any_replica: bool,
    /// Free text copied into the output line (e.g. the setup measured).
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Serialize)]
struct Report {
    label: String,
    collection: String,
    queries: usize,
    p50_ms: f64,
    p99_ms: f64,
    mean_ms: f64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.queries >= 1, "--queries must be at least 1");
    let queries = read_fvecs(&args.query)?;
    let mut client = PointsClient::connect(args.endpoint.clone())
        .await
        .with_context(|| format!("connecting to {}", args.endpoint))?;
    let consistency = if args.any_replica {
        ReadConsistency::Any
    } else {
        ReadConsistency::Leader
    };
    let warm_up = (args.queries / 10).max(1);
    let mut latencies = Vec::with_capacity(args.queries);
    for i in 0..warm_up + args.queries {
        let request = SearchRequest {
            collection: args.collection.clone(),
            vector: queries[i % queries.len()].clone(),
            top_k: Some(args.top_k),
            ef: (args.ef > 0).then_some(args.ef),
            consistency: consistency as i32,
            ..Default::default()
        };
        let started = Instant::now();
        client
            .search(request)
            .await
            .with_context(|| format!("search {i}"))?;
        if i >= warm_up {
            latencies.push(started.elapsed());
        }
    }
    latencies.sort();
    let mean = latencies.iter().sum::<Duration>() / latencies.len() as u32;
    let report = Report {
        label: args.label,
        collection: args.collection,
        queries: latencies.len(),
        p50_ms: round(percentile_us(&latencies, 50.0) / 1e3, 3),
        p99_ms: round(percentile_us(&latencies, 99.0) / 1e3, 3),
        mean_ms: round(mean.as_secs_f64() * 1e3, 3),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
