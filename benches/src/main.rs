//! `quiver-bench`: recall, throughput and latency of quiver's indexes, run in-process on texmex
//! `.fvecs` base/query files and `.ivecs` ground truth.
//!
//! One build per run (exact [`VectorArena`] or [`HnswIndex`] built with its parallel
//! `insert_many`), then one measured pass over the queries per `--ef`. Each pass is preceded by an
//! unmeasured warm-up over the first 100 queries; every query is timed on its own, and QPS is
//! queries over the wall time of the pass (aggregate over `--threads` threads). Output: one JSON
//! object per setting with `--json`, a table otherwise; a header with the SIMD kernels and the
//! build goes to stderr.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use clap::{Parser, ValueEnum};
use quiver_benches::data::Dataset;
use quiver_benches::report::{print_table, Params, Row};
use quiver_benches::stats::{percentile_us, recall_at, rss_bytes};
use quiver_index::distance::{simd_backend, Metric};
use quiver_index::flat::VectorArena;
use quiver_index::hnsw::{HnswIndex, HnswParams, MAX_EF_CONSTRUCTION, MAX_M};
use quiver_index::Slot;

/// Recall is reported at this depth.
const K: usize = 10;
/// Queries run before each measured pass and not counted.
const WARMUP_QUERIES: usize = 100;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum IndexChoice {
    Flat,
    Hnsw,
}

#[derive(Debug, Parser)]
#[command(
    name = "quiver-bench",
    about = "Benchmark quiver's indexes on .fvecs/.ivecs data"
)]
struct Args {
    /// Base vectors (.fvecs).
    #[arg(long)]
    base: PathBuf,
    /// Query vectors (.fvecs).
    #[arg(long)]
    query: PathBuf,
    /// Ground-truth neighbour ids of each query (.ivecs, at least 10 deep).
    #[arg(long)]
    gt: PathBuf,
    /// l2, cosine or dot.
    #[arg(long)]
    metric: Metric,
    /// Exact search, or an HNSW graph.
    #[arg(long, value_enum)]
    index: IndexChoice,
    /// HNSW neighbours per node.
    #[arg(long, default_value_t = 16)]
    m: usize,
    /// HNSW candidate list size while building.
    #[arg(long, default_value_t = 200)]
    ef_construction: usize,
    /// HNSW search candidate list sizes, one measured pass each.
    #[arg(long, value_delimiter = ',', default_value = "16,32,64,128")]
    ef: Vec<usize>,
    /// Threads running queries (QPS is their aggregate).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Use only the first N queries.
    #[arg(long)]
    limit_queries: Option<usize>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

/// One measured pass.
struct Pass {
    recall: f64,
    qps: f64,
    p50_us: f64,
    p99_us: f64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.threads >= 1, "--threads must be at least 1");
    ensure!((2..=MAX_M).contains(&args.m), "--m must be in 2..={MAX_M}");
    ensure!(
        (1..=MAX_EF_CONSTRUCTION).contains(&args.ef_construction),
        "--ef-construction must be in 1..={MAX_EF_CONSTRUCTION}"
    );
    ensure!(
        args.ef.iter().all(|&ef| ef >= 1),
        "--ef values must be at least 1"
    );
    let data = Dataset::load(
        &args.base,
        &args.query,
        &args.gt,
        args.metric,
        args.limit_queries,
        K,
    )?;
    eprintln!(
        "quiver-bench: simd {}, base {} x {}, {} queries, metric {}, {} search thread(s)",
        simd_backend(),
        data.base.len(),
        data.dim,
        data.queries.len(),
        args.metric,
        args.threads
    );
    let rows = match args.index {
        IndexChoice::Flat => bench_flat(&args, &data),
        IndexChoice::Hnsw => bench_hnsw(&args, &data),
    };
    if args.json {
        rows.iter()
            .for_each(|row| println!("{}", row.to_json_line()));
    } else {
        print_table(&rows);
    }
    Ok(())
}

fn bench_flat(args: &Args, data: &Dataset) -> Vec<Row> {
    let rss_before = rss_bytes();
    let started = Instant::now();
    let mut arena = VectorArena::new(data.dim);
    for (slot, v) in data.base.iter().enumerate() {
        arena.set(slot as Slot, v);
    }
    let build_s = started.elapsed().as_secs_f64();
    report_build("flat", build_s, rss_before);
    let n = data.base.len() as Slot;
    let pass = measure(data, args.threads, |q| {
        arena
            .search(args.metric, q, K, 0..n)
            .iter()
            .map(|h| h.slot)
            .collect()
    });
    vec![row(
        "flat",
        Params::default(),
        &pass,
        build_s,
        arena.memory_bytes(),
    )]
}

fn bench_hnsw(args: &Args, data: &Dataset) -> Vec<Row> {
    let params = HnswParams {
        m: args.m,
        ef_construction: args.ef_construction,
    };
    let rss_before = rss_bytes();
    let started = Instant::now();
    let index = HnswIndex::new(args.metric, data.dim, params, data.base.len());
    let items: Vec<(Slot, &[f32])> = data
        .base
        .iter()
        .enumerate()
        .map(|(i, v)| (i as Slot, v.as_slice()))
        .collect();
    index.insert_many(&items);
    let build_s = started.elapsed().as_secs_f64();
    let what = format!("hnsw m={} ef_construction={}", args.m, args.ef_construction);
    report_build(&what, build_s, rss_before);
    args.ef
        .iter()
        .map(|&ef| {
            let pass = measure(data, args.threads, |q| {
                index
                    .search(q, K, ef, None)
                    .iter()
                    .map(|h| h.slot)
                    .collect()
            });
            let params = Params {
                m: Some(args.m),
                ef_construction: Some(args.ef_construction),
                ef: Some(ef),
            };
            row("hnsw", params, &pass, build_s, index.memory_bytes())
        })
        .collect()
}

/// Says on stderr how long the build took and how much resident memory it added (a measured
/// counterpart to the computed `index_bytes`).
fn report_build(what: &str, build_s: f64, rss_before: Option<usize>) {
    let grew = match (rss_before, rss_bytes()) {
        (Some(before), Some(after)) => {
            format!(
                "{:.1} MiB",
                after.saturating_sub(before) as f64 / (1 << 20) as f64
            )
        }
        _ => "unknown".into(),
    };
    eprintln!("quiver-bench: {what} built in {build_s:.2} s, resident memory grew {grew}");
}

/// Runs every query once over `threads` threads, timing each.
fn measure(data: &Dataset, threads: usize, search: impl Fn(&[f32]) -> Vec<Slot> + Sync) -> Pass {
    for q in data.queries.iter().take(WARMUP_QUERIES) {
        search(q);
    }
    let chunk = data.queries.len().div_ceil(threads);
    let started = Instant::now();
    let per_thread: Vec<Vec<(Duration, Vec<Slot>)>> = std::thread::scope(|s| {
        let workers: Vec<_> = data
            .queries
            .chunks(chunk)
            .map(|queries| {
                let search = &search;
                s.spawn(move || {
                    queries
                        .iter()
                        .map(|q| {
                            let t = Instant::now();
                            let hits = search(q);
                            (t.elapsed(), hits)
                        })
                        .collect()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("search thread panicked"))
            .collect()
    });
    let wall = started.elapsed().as_secs_f64();
    let results: Vec<(Duration, Vec<Slot>)> = per_thread.into_iter().flatten().collect();
    let recall = results
        .iter()
        .zip(&data.ground_truth)
        .map(|((_, hits), gt)| recall_at(K, hits, gt))
        .sum::<f64>()
        / results.len() as f64;
    let mut latencies: Vec<Duration> = results.iter().map(|(t, _)| *t).collect();
    latencies.sort();
    Pass {
        recall,
        qps: results.len() as f64 / wall,
        p50_us: percentile_us(&latencies, 50.0),
        p99_us: percentile_us(&latencies, 99.0),
    }
}

fn row(index: &'static str, params: Params, pass: &Pass, build_s: f64, index_bytes: usize) -> Row {
    Row {
        index,
        params,
        recall_at_10: pass.recall,
        qps: pass.qps,
        p50_us: pass.p50_us,
        p99_us: pass.p99_us,
        build_s,
        index_bytes,
    }
}
