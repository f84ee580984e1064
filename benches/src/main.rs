//! `quiver-bench`: recall, throughput and latency of quiver's indexes, run in-process on texmex
//! `.fvecs` base/query files and `.ivecs` ground truth.
//!
//! One build per run (exact [`VectorArena`], or an [`HnswGraph`] built on `--build-threads`
//! threads, or the `hnsw_rs` crate's graph as a reference), then one measured pass over the
//! queries per `--ef`. With `--quantization fp16|int8` the graph stores encoded vectors and each
//! search rescores its `10 × --oversampling` candidates with the full vectors (held in memory
//! here; a server reads them from RocksDB), and `index MiB` is the graph with its encoded
//! vectors, which is what a server holds in memory. Each pass is preceded by an
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
use quiver_index::hnsw::{HnswGraph, HnswParams, MAX_EF_CONSTRUCTION, MAX_M};
use quiver_index::quantize::{Encoding, Quantization};
use quiver_index::Slot;

/// Recall is reported at this depth.
const K: usize = 10;
/// Queries run before each measured pass and not counted.
const WARMUP_QUERIES: usize = 100;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum IndexChoice {
    Flat,
    Hnsw,
    /// The `hnsw_rs` crate quiver used before its own graph: a reference point.
    HnswRs,
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
    /// Threads building the graph.
    #[arg(long, default_value_t = 2)]
    build_threads: usize,
    /// How the graph stores vectors: none (f32), fp16 or int8.
    #[arg(long, default_value = "none")]
    quantization: Quantization,
    /// Candidates rescored per hit of a quantized graph.
    #[arg(long, default_value_t = 3.0)]
    oversampling: f32,
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
        IndexChoice::HnswRs => bench_hnsw_rs(&args, &data),
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
    // and every query in one batch (one thread), as SearchBatch runs an exact plan
    let queries: Vec<&[f32]> = data.queries.iter().map(Vec::as_slice).collect();
    let started = Instant::now();
    let answers = arena.search_batch(args.metric, &queries, K, 0..n);
    let batch_qps = queries.len() as f64 / started.elapsed().as_secs_f64();
    assert_eq!(answers.len(), queries.len());
    let mut flat = row(
        "quiver",
        "flat",
        Params::default(),
        &pass,
        build_s,
        arena.memory_bytes(),
    );
    flat.batch_qps = batch_qps;
    vec![flat]
}

fn bench_hnsw(args: &Args, data: &Dataset) -> Vec<Row> {
    let params = HnswParams {
        m: args.m,
        ef_construction: args.ef_construction,
    };
    let rss_before = rss_bytes();
    let started = Instant::now();
    let vectors: Vec<f32> = data.base.iter().flatten().copied().collect();
    let encoding = Encoding::train(args.quantization, &vectors, data.dim);
    let graph = HnswGraph::build_encoded(
        args.metric,
        data.dim,
        params,
        encoding,
        vectors,
        args.build_threads,
        1,
    );
    let build_s = started.elapsed().as_secs_f64();
    let what = format!(
        "hnsw m={} ef_construction={} {} on {} thread(s), {} bytes per vector",
        args.m,
        args.ef_construction,
        args.quantization,
        args.build_threads,
        graph.bytes_per_vector()
    );
    report_build(&what, build_s, rss_before);
    let (index, candidates) = match args.quantization {
        Quantization::None => ("hnsw", K),
        Quantization::F16 => ("hnsw-fp16", rescored(args.oversampling)),
        Quantization::Int8 => ("hnsw-int8", rescored(args.oversampling)),
    };
    args.ef
        .iter()
        .map(|&ef| {
            let pass = measure(data, args.threads, |q| {
                let hits = graph.search(q, candidates, ef.max(candidates));
                if candidates == K {
                    return hits.iter().map(|h| h.slot).collect();
                }
                // rescored with the full vectors
                let mut exact: Vec<(f32, Slot)> = hits
                    .iter()
                    .map(|h| (args.metric.score(q, &data.base[h.slot as usize]), h.slot))
                    .collect();
                exact.sort_by(|a, b| {
                    let order = a.0.total_cmp(&b.0);
                    if args.metric.higher_is_better() {
                        order.reverse()
                    } else {
                        order
                    }
                });
                exact.iter().take(K).map(|(_, slot)| *slot).collect()
            });
            row(
                "quiver",
                index,
                hnsw_params(args, ef),
                &pass,
                build_s,
                graph.memory_bytes(),
            )
        })
        .collect()
}

/// Candidates a quantized search rescores for its `K` hits.
fn rescored(oversampling: f32) -> usize {
    (K as f32 * oversampling.max(1.0)).ceil() as usize
}

/// A search of the reference graph: query and ef to slots.
type SearchFn = dyn Fn(&[f32], usize) -> Vec<Slot> + Sync;

fn bench_hnsw_rs(args: &Args, data: &Dataset) -> Vec<Row> {
    use hnsw_rs::prelude::{DistDot, DistL2, Hnsw};
    let rss_before = rss_bytes();
    let started = Instant::now();
    let items: Vec<(&[f32], usize)> = data
        .base
        .iter()
        .enumerate()
        .map(|(i, v)| (v.as_slice(), i))
        .collect();
    let n = data.base.len();
    let (m, efc) = (args.m, args.ef_construction);
    // (cosine vectors are prepared, so cosine is the dot product)
    let search: Box<SearchFn> = match args.metric {
        Metric::L2 => {
            let g: Hnsw<f32, DistL2> = Hnsw::new(m, n, 16, efc, DistL2);
            g.parallel_insert_slice(&items);
            Box::new(move |q, ef| g.search(q, K, ef).iter().map(|n| n.d_id as Slot).collect())
        }
        Metric::Cosine | Metric::Dot => {
            let g: Hnsw<f32, DistDot> = Hnsw::new(m, n, 16, efc, DistDot);
            g.parallel_insert_slice(&items);
            Box::new(move |q, ef| g.search(q, K, ef).iter().map(|n| n.d_id as Slot).collect())
        }
    };
    let build_s = started.elapsed().as_secs_f64();
    report_build("hnsw_rs", build_s, rss_before);
    let grown = match (rss_before, rss_bytes()) {
        (Some(before), Some(after)) => after.saturating_sub(before),
        _ => 0,
    };
    args.ef
        .iter()
        .map(|&ef| {
            let pass = measure(data, args.threads, |q| search(q, ef));
            row(
                "hnsw_rs",
                "hnsw",
                hnsw_params(args, ef),
                &pass,
                build_s,
                grown,
            )
        })
        .collect()
}

fn hnsw_params(args: &Args, ef: usize) -> Params {
    Params {
        m: Some(args.m),
        ef_construction: Some(args.ef_construction),
        ef: Some(ef),
    }
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

fn row(
    engine: &'static str,
    index: &'static str,
    params: Params,
    pass: &Pass,
    build_s: f64,
    index_bytes: usize,
) -> Row {
    Row {
        engine,
        index,
        params,
        recall_at_10: pass.recall,
        qps: pass.qps,
        batch_qps: pass.qps,
        p50_us: pass.p50_us,
        p99_us: pass.p99_us,
        build_s,
        index_bytes,
    }
}
