//! `quiver-search-latency`: per-request search latency through a running quiver endpoint.
//!
//! Sends each query of an `.fvecs` file as one gRPC `Search` (or, with `--rest`, one REST
//! `POST /collections/NAME/points/search` over a kept-alive HTTP/1.1 connection), one at a time,
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
    /// Search through the REST API at this address (`ip:port`) instead of gRPC.
    #[arg(long)]
    rest: Option<String>,
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
    if let Some(rest) = &args.rest {
        return rest_latencies(&args, rest, &queries);
    }
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
    report(&args, latencies)
}

fn report(args: &Args, mut latencies: Vec<Duration>) -> Result<()> {
    latencies.sort();
    let mean = latencies.iter().sum::<Duration>() / latencies.len() as u32;
    let report = Report {
        label: args.label.clone(),
        collection: args.collection.clone(),
        queries: latencies.len(),
        p50_ms: round(percentile_us(&latencies, 50.0) / 1e3, 3),
        p99_ms: round(percentile_us(&latencies, 99.0) / 1e3, 3),
        mean_ms: round(mean.as_secs_f64() * 1e3, 3),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// The same searches through the REST API: a minimal HTTP/1.1 client on one kept-alive
/// connection (a request, then the response read to its `Content-Length`).
fn rest_latencies(args: &Args, address: &str, queries: &[Vec<f32>]) -> Result<()> {
    use std::io::{BufRead, BufReader, Read, Write};
    let stream = std::net::TcpStream::connect(address)
        .with_context(|| format!("connecting to {address}"))?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let path = format!("/collections/{}/points/search", args.collection);
    let warm_up = (args.queries / 10).max(1);
    let mut latencies = Vec::with_capacity(args.queries);
    for i in 0..warm_up + args.queries {
        let body = serde_json::json!({
            "vector": queries[i % queries.len()],
            "limit": args.top_k,
            "params": {"hnsw_ef": args.ef},
        })
        .to_string();
        let started = Instant::now();
        write!(
            writer,
            "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut status = String::new();
        reader.read_line(&mut status)?;
        ensure!(status.contains(" 200 "), "search {i}: {}", status.trim());
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header)?;
            if header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse()?;
                }
            }
        }
        let mut answer = vec![0; length];
        reader.read_exact(&mut answer)?;
        if i >= warm_up {
            latencies.push(started.elapsed());
        }
    }
    report(args, latencies)
}
