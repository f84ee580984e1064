//! `quiver-restart-bench`: how fast points go in and get indexed, and how long a node takes to
//! restart with its segment files, against indexing the stored points again.
//!
//! Uses the real node library on RocksDB in a temporary data directory (`sync_writes` off, the
//! default single-member Raft group): create an HNSW collection, upsert the points through the
//! shard group's `write` in batches (timed: acknowledged), wait for the optimizer to index them
//! (timed: indexed), shut the node down, then time `Node::open` twice: once with the segment
//! files (searches must return exactly what they did before the restart) and once after deleting
//! the shard's `derived/graphs/` (the node serves at once and indexes the points in the
//! background; also timed until it has). `Node::open` returns once the group has elected the
//! node, so both times include that election. Prints one JSON line; progress goes to stderr.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use clap::Parser;
use quiver_benches::data::{prepare_all, read_fvecs};
use quiver_benches::report::round;
use quiver_config::Config;
use quiver_core::point::{CollectionSpec, IndexKind, JsonMap, NewPoint, PointId};
use quiver_core::shard::PointsCommand;
use quiver_core::shard::SearchQuery;
use quiver_index::distance::{simd_backend, Metric};
use quiver_index::hnsw::{HnswParams, MAX_EF_CONSTRUCTION, MAX_M};
use quiver_node::cluster::group::ShardGroup;
use quiver_node::shard::search::Plan;
use quiver_node::sm::ShardCommand;
use quiver_node::Node;
use serde::Serialize;
use tokio::runtime::Runtime;

const COLLECTION: &str = "bench";

#[derive(Debug, Parser)]
#[command(
    name = "quiver-restart-bench",
    about = "Time a node restart with a dumped HNSW graph vs a rebuild"
)]
struct Args {
    /// Vectors to ingest (.fvecs).
    #[arg(long)]
    base: PathBuf,
    /// Ingest only the first N rows (default: all).
    #[arg(long)]
    points: Option<usize>,
    /// Queries for the before/after check (.fvecs; default: the first base rows).
    #[arg(long)]
    query: Option<PathBuf>,
    /// l2, cosine or dot.
    #[arg(long, default_value = "l2")]
    metric: Metric,
    /// HNSW neighbours per node.
    #[arg(long, default_value_t = 16)]
    m: usize,
    /// HNSW candidate list size while building.
    #[arg(long, default_value_t = 200)]
    ef_construction: usize,
    /// Points per upsert command.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Searches compared before and after the restart.
    #[arg(long, default_value_t = 20)]
    checks: usize,
    /// Parent of the temporary data directory (default: the system temp dir).
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.batch >= 1, "--batch must be at least 1");
    ensure!((2..=MAX_M).contains(&args.m), "--m must be in 2..={MAX_M}");
    ensure!(
        (1..=MAX_EF_CONSTRUCTION).contains(&args.ef_construction),
        "--ef-construction must be in 1..={MAX_EF_CONSTRUCTION}"
    );
    let mut base = read_fvecs(&args.base)?;
    if let Some(n) = args.points {
        ensure!(n >= 1, "--points must be at least 1");
        base.truncate(n);
    }
    prepare_all(args.metric, &mut base, "base")?;
    let dim = base[0].len();
    let mut checks = match &args.query {
        Some(path) => read_fvecs(path)?,
        None => base.clone(),
    };
    checks.truncate(args.checks.max(1));
    ensure!(
        checks[0].len() == dim,
        "dimension mismatch: base has {dim} dimensions, query has {}",
        checks[0].len()
    );
    prepare_all(args.metric, &mut checks, "query")?;

    let tmp = match &args.tmp_dir {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .context("creating a temporary data directory")?;
    let mut config = Config::default();
    config.node.data_dir = tmp.path().join("node");
    config.storage.sync_writes = false;
    let seal_points = config.storage.segment_seal_points;
    eprintln!(
        "quiver-restart-bench: simd {}, {} points x {dim}, data dir {}",
        simd_backend(),
        base.len(),
        config.node.data_dir.display()
    );

    let runtime = Runtime::new().context("starting tokio")?;
    let node = runtime
        .block_on(Node::open(config.clone()))
        .context("opening the node")?;
    let spec = CollectionSpec {
        name: COLLECTION.into(),
        dim: dim as u32,
        metric: args.metric,
        index: IndexKind::Hnsw(HnswParams {
            m: args.m,
            ef_construction: args.ef_construction,
        }),
        payload_indexes: Vec::new(),
        default_ef: None,
        quantization: Default::default(),
        text_fields: Vec::new(),
        embed: None,
    };
    runtime
        .block_on(node.create_collection(spec, 1, Some(1), ""))
        .context("creating the collection")?;
    let replica = shard(&node)?;
    let collection_id = replica
        .collection(COLLECTION)
        .context("the new collection")?
        .meta
        .id;
    let started = Instant::now();
    for (b, chunk) in base.chunks(args.batch).enumerate() {
        let points = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| NewPoint {
                id: PointId::Num((b * args.batch + i) as u64),
                vector: v.clone(),
                payload: JsonMap::new(),
            })
            .collect();
        let upsert = PointsCommand::Upsert {
            collection: COLLECTION.into(),
            collection_id,
            points,
        };
        runtime
            .block_on(replica.write("", ShardCommand::Points(upsert)))
            .with_context(|| format!("upserting batch {b}"))?;
    }
    let ingest_s = started.elapsed().as_secs_f64();
    eprintln!("quiver-restart-bench: acknowledged in {ingest_s:.2} s");
    let collection = replica.collection(COLLECTION)?;
    wait_indexed(&collection, seal_points);
    let indexed_s = started.elapsed().as_secs_f64();
    eprintln!("quiver-restart-bench: indexed in {indexed_s:.2} s");
    drop(collection);
    let before = search_all(&node, &checks)?;
    let graphs = replica.dir().join("derived").join("graphs");
    drop(replica);
    let segment_bytes = dir_bytes(&graphs);
    ensure!(
        segment_bytes > 0,
        "no segment file under {}",
        graphs.display()
    );
    close(&runtime, node);

    let (node, restart_with_segments_s) = timed_open(&runtime, &config, base.len())?;
    let collection = shard(&node)?.collection(COLLECTION)?;
    ensure!(
        !collection.optimizing() && collection.indexed_vectors() + seal_points > base.len(),
        "the segments were not loaded from their files"
    );
    drop(collection);
    let after = search_all(&node, &checks)?;
    ensure!(
        after == before,
        "searches differ after a restart with the segment files"
    );
    close(&runtime, node);

    std::fs::remove_dir_all(&graphs).with_context(|| format!("removing {}", graphs.display()))?;
    let (node, restart_rebuild_s) = timed_open(&runtime, &config, base.len())?;
    // the node serves at once; the segments are built in the background meanwhile
    let collection = shard(&node)?.collection(COLLECTION)?;
    let opened = Instant::now();
    wait_indexed(&collection, seal_points);
    let graph_rebuilt_s = restart_rebuild_s + opened.elapsed().as_secs_f64();
    drop(collection);
    let rebuilt = search_all(&node, &checks)?;
    let same = rebuilt.iter().zip(&before).filter(|(a, b)| a == b).count();
    eprintln!(
        "quiver-restart-bench: {} of {} check searches identical after the rebuild (a parallel \
         rebuild need not reproduce the same graph)",
        same,
        checks.len()
    );
    close(&runtime, node);

    let report = Report {
        points: base.len(),
        ingest_s: round(ingest_s, 3),
        ingest_points_per_s: round(base.len() as f64 / ingest_s, 0),
        indexed_s: round(indexed_s, 3),
        restart_with_segments_s: round(restart_with_segments_s, 3),
        restart_rebuild_s: round(restart_rebuild_s, 3),
        graph_rebuilt_s: round(graph_rebuilt_s, 3),
        segment_bytes,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// The JSON line printed at the end, fields in this order.
#[derive(Debug, Serialize)]
struct Report {
    points: usize,
    /// Upserts through `Node::write` until the last is acknowledged.
    ingest_s: f64,
    ingest_points_per_s: f64,
    /// From the first upsert until the optimizer has indexed them (all but fewer than
    /// `storage.segment_seal_points`, which stay in the appendable segment).
    indexed_s: f64,
    /// `Node::open` with the segment files: RocksDB scan + segment load + Raft start and the
    /// single-member election.
    restart_with_segments_s: f64,
    /// `Node::open` without them, after which the node serves (searches score the points no
    /// segment holds yet exactly).
    restart_rebuild_s: f64,
    /// From the same open until the background indexing is done.
    graph_rebuilt_s: f64,
    /// Size of the shard's `derived/graphs` (its segment files).
    segment_bytes: u64,
}

/// Waits until the optimizer is idle with fewer than `seal_points` points left unindexed.
fn wait_indexed(collection: &quiver_node::shard::Collection, seal_points: usize) {
    while collection.optimizing()
        || collection.points_count() - collection.indexed_vectors() >= seal_points
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Stops the node's Raft group and drops the node, which closes RocksDB.
fn close(runtime: &Runtime, node: Arc<Node>) {
    runtime.block_on(node.shutdown());
    drop(node);
}

/// Opens the node and checks every point came back; returns it with the seconds `open` took.
fn timed_open(runtime: &Runtime, config: &Config, points: usize) -> Result<(Arc<Node>, f64)> {
    let started = Instant::now();
    let node = runtime
        .block_on(Node::open(config.clone()))
        .context("reopening the node")?;
    let elapsed = started.elapsed().as_secs_f64();
    let count = shard(&node)?.collection(COLLECTION)?.points_count();
    ensure!(
        count == points,
        "reopened node has {count} points, expected {points}"
    );
    Ok((node, elapsed))
}

/// Top-10 ids and scores of each query through the collection's planner, which must pick the
/// graph (default ef).
fn search_all(node: &Node, queries: &[Vec<f32>]) -> Result<Vec<Vec<(PointId, f32)>>> {
    let shard = shard(node)?;
    let collection = shard.collection(COLLECTION)?;
    let config = shard.planner_config();
    queries
        .iter()
        .map(|q| {
            let params = SearchQuery {
                vector: q.clone(),
                top_k: 10,
                ef: None,
                filter: None,
                exact: false,
                with_payload: false,
                with_vector: false,
                rescore: None,
                oversampling: None,
            };
            let (hits, plan) = collection.search(&params, &config);
            ensure!(
                plan == Plan::Hnsw,
                "check search ran as `{}`, not hnsw",
                plan.as_str()
            );
            Ok(hits.into_iter().map(|h| (h.id, h.score)).collect())
        })
        .collect()
}

/// The node's replica of the collection's one shard.
fn shard(node: &Node) -> Result<Arc<ShardGroup>> {
    let placement = node.placements().get(COLLECTION)?;
    Ok(node.shard(placement.shards[0].group)?)
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
