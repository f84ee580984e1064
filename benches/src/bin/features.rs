//! `quiver-features-bench`: the feature store's reads inside one node, without the wire: what a
//! shard does per `GetOnlineFeatures` and per chunk of `GetHistoricalFeatures`.
//!
//! Reads the files of `benches/peers/feature_data.py` (`rows.csv`, `entities.csv`), writes the
//! rows through a shard group's state machine on RocksDB in a temporary directory (offline and
//! online, in pushes of `--batch` rows, as `quiver features push --to both` would), then times:
//! - `online`: `read_online` of `--entities-per-request` distinct users (drawn with a fixed seed
//!   from the users of the rows) for the view's ten features, `--requests` times one after
//!   another after 50 unmeasured ones: p50, p99 and the QPS of one thread;
//! - `historical`: `read_historical` of every entity row, in chunks of 1000 (the router's
//!   default), the view's 7-day ttl: entity rows per second.
//!
//! With `--grpc ENDPOINT` it times the same online requests through `quiver.v1.Features/
//! GetOnlineFeatures` of a running server instead (tonic, HTTP/2 on loopback; the rows must
//! already be there): one client, then `--clients` concurrent clients (each its own connection,
//! one request at a time) for `--seconds`.
//!
//! Prints one JSON line per step; progress goes to stderr.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use quiver_benches::report::round;
use quiver_benches::stats::percentile_us;
use quiver_config::StorageConfig;
use quiver_core::features::{FeaturesAnswer, FeaturesCommand, HistoricalLookup, OnlineLookup};
use quiver_features::row::FeatureRow;
use quiver_features::{EntityKey, JoinKey, Value, ValueType};
use quiver_node::sm::feature_values::{read_historical, read_online};
use quiver_node::sm::{ShardCommand, ShardMachine};
use quiver_node::storage::{RocksEnv, RocksStorage, Storage};
use quiver_proto::v1 as pb;
use quiver_proto::v1::features_client::FeaturesClient;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::json;

const VIEW: u64 = 1;
const TTL_SECONDS: u64 = 7 * 86_400;
const WARMUP: usize = 50;
const HISTORICAL_CHUNK: usize = 1000;
/// The view's fields in feature_data.py's order, and their types.
const FIELDS: [(&str, ValueType); 10] = [
    ("f0", ValueType::Float64),
    ("f1", ValueType::Float64),
    ("f2", ValueType::Float64),
    ("f3", ValueType::Float64),
    ("f4", ValueType::Float64),
    ("n0", ValueType::Int64),
    ("n1", ValueType::Int64),
    ("n2", ValueType::Int64),
    ("r0", ValueType::Float32),
    ("s0", ValueType::String),
];

#[derive(Debug, Parser)]
#[command(
    name = "quiver-features-bench",
    about = "Time a node's online and point-in-time feature reads"
)]
struct Args {
    /// The directory feature_data.py wrote.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    #[arg(long, default_value_t = 100)]
    entities_per_request: usize,
    /// Rows per push command.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// Time the online requests through this server's gRPC API instead.
    #[arg(long)]
    grpc: Option<String>,
    /// Concurrent clients of the second gRPC run.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Seconds of the concurrent gRPC run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
}

fn key(user: i64) -> EntityKey {
    let keys = [JoinKey {
        name: "user_id".into(),
        value_type: ValueType::Int64,
    }];
    EntityKey::new(&keys, &[Value::Int64(user)]).expect("an int64 key")
}

fn cell(text: &str, value_type: ValueType) -> Result<Value> {
    Ok(match value_type {
        ValueType::Float64 => Value::Float64(text.parse()?),
        ValueType::Float32 => Value::Float32(text.parse()?),
        ValueType::Int64 => Value::Int64(text.parse()?),
        ValueType::String => Value::String(text.to_owned()),
        other => bail!("no {other:?} column in this data"),
    })
}

/// `rows.csv`: user_id, event_timestamp, created_timestamp (epoch seconds), then the fields;
/// each row with its user.
fn read_rows(path: &std::path::Path) -> Result<Vec<(i64, FeatureRow)>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("{}", path.display()))?;
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record?;
        let seconds = |i: usize| -> Result<i64> { Ok(record[i].parse::<i64>()? * 1_000_000) };
        let values = FIELDS
            .iter()
            .enumerate()
            .map(|(i, &(_, t))| cell(&record[3 + i], t))
            .collect::<Result<_>>()?;
        let user = record[0].parse()?;
        let row = FeatureRow {
            key: key(user),
            event_ts: seconds(1)?,
            created_ts: seconds(2)?,
            values,
        };
        rows.push((user, row));
    }
    Ok(rows)
}

/// `entities.csv`: user_id, event_timestamp (epoch seconds).
fn read_entity_rows(path: &std::path::Path) -> Result<Vec<(EntityKey, i64)>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("{}", path.display()))?;
    reader
        .records()
        .map(|record| {
            let record = record?;
            Ok((
                key(record[0].parse()?),
                record[1].parse::<i64>()? * 1_000_000,
            ))
        })
        .collect()
}

/// Draws of `per_request` distinct users, one per request, the same for every run.
fn draws(users: &[i64], per_request: usize, count: usize, seed: u64) -> Vec<Vec<i64>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            users
                .choose_multiple(&mut rng, per_request)
                .copied()
                .collect()
        })
        .collect()
}

/// The JSON line of an online step.
fn online_line(
    system: &str,
    args: &Args,
    clients: usize,
    mut latencies: Vec<Duration>,
    wall: Duration,
) -> String {
    latencies.sort();
    json!({"system": system, "step": "online", "clients": clients,
           "entities_per_request": args.entities_per_request, "features": FIELDS.len(),
           "requests": latencies.len(),
           "p50_ms": round(percentile_us(&latencies, 50.0) / 1e3, 3),
           "p99_ms": round(percentile_us(&latencies, 99.0) / 1e3, 3),
           "qps": round(latencies.len() as f64 / wall.as_secs_f64(), 1)})
    .to_string()
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rows = read_rows(&args.data.join("rows.csv"))?;
    let mut users: Vec<i64> = rows.iter().map(|(user, _)| *user).collect();
    users.sort_unstable();
    users.dedup();
    if users.len() < args.entities_per_request {
        bail!("only {} users in the rows", users.len());
    }
    match &args.grpc {
        Some(endpoint) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(over_grpc(&args, endpoint, &users)),
        None => in_node(
            &args,
            rows.into_iter().map(|(_, row)| row).collect(),
            &users,
        ),
    }
}

fn in_node(args: &Args, rows: Vec<FeatureRow>, users: &[i64]) -> Result<()> {
    let entity_rows = read_entity_rows(&args.data.join("entities.csv"))?;
    let dir = tempfile::tempdir()?;
    let env = RocksEnv::new(&StorageConfig::default());
    let storage: Arc<dyn Storage> = Arc::new(RocksStorage::open(&dir.path().join("db"), &env)?);
    let mut machine = ShardMachine::open(storage.clone(), &dir.path().join("derived"))?;
    let began = Instant::now();
    for (i, batch) in rows.chunks(args.batch).enumerate() {
        let command = ShardCommand::Features(FeaturesCommand::Push {
            view_id: VIEW,
            version: 1,
            rows: batch.to_vec(),
            offline: true,
            online: true,
            fields: FIELDS.iter().map(|(name, _)| name.to_string()).collect(),
        });
        machine.apply(i as u64 + 1, &command)?;
    }
    let write_seconds = began.elapsed().as_secs_f64();
    eprintln!("wrote {} rows in {write_seconds:.1} s", rows.len());
    println!(
        "{}",
        json!({"system": "quiver-in-node", "step": "write", "rows": rows.len(),
               "seconds": round(write_seconds, 3),
               "rows_per_s": (rows.len() as f64 / write_seconds).round()})
    );

    let mut latencies = Vec::with_capacity(args.requests);
    for (i, users) in draws(users, args.entities_per_request, WARMUP + args.requests, 11)
        .into_iter()
        .enumerate()
    {
        if i == WARMUP {
            latencies.clear();
        }
        let lookups = [OnlineLookup {
            view_id: VIEW,
            keys: users.into_iter().map(key).collect(),
        }];
        let asked = Instant::now();
        let FeaturesAnswer::Online(found) = read_online(storage.as_ref(), &lookups)? else {
            bail!("not an online answer");
        };
        latencies.push(asked.elapsed());
        if found[0].len() != args.entities_per_request {
            bail!(
                "{} answers for {} users",
                found[0].len(),
                args.entities_per_request
            );
        }
    }
    let busy = latencies.iter().sum();
    println!(
        "{}",
        online_line("quiver-in-node", args, 1, latencies, busy)
    );

    let began = Instant::now();
    let mut found_rows = 0usize;
    for chunk in entity_rows.chunks(HISTORICAL_CHUNK) {
        let lookups = [HistoricalLookup {
            view_id: VIEW,
            ttl_seconds: TTL_SECONDS,
            known_at: false,
            rows: chunk.to_vec(),
        }];
        let FeaturesAnswer::Historical { found, .. } =
            read_historical(storage.as_ref(), &lookups, None)?
        else {
            bail!("not a historical answer");
        };
        found_rows += found[0].iter().filter(|v| v.is_some()).count();
    }
    let seconds = began.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"system": "quiver-in-node", "step": "historical", "rows": entity_rows.len(),
               "with_values": found_rows, "seconds": round(seconds, 3),
               "rows_per_s": (entity_rows.len() as f64 / seconds).round()})
    );
    Ok(())
}

fn online_request(users: &[i64]) -> pb::GetOnlineFeaturesRequest {
    let values = users
        .iter()
        .map(|&u| pb::FeatureValue {
            kind: Some(pb::feature_value::Kind::Int64Value(u)),
        })
        .collect();
    pb::GetOnlineFeaturesRequest {
        features: FIELDS
            .iter()
            .map(|(name, _)| format!("user_stats:{name}"))
            .collect(),
        entities: [("user_id".to_string(), pb::FeatureValues { values })].into(),
        ..Default::default()
    }
}

/// One client asking `draws` one after another (after the warm-up); the latencies.
async fn client_run(
    endpoint: String,
    draws: Vec<Vec<i64>>,
    until: Option<Instant>,
) -> Result<Vec<Duration>> {
    let mut client = FeaturesClient::connect(endpoint.clone())
        .await
        .with_context(|| format!("connecting to {endpoint}"))?;
    let mut latencies = Vec::with_capacity(draws.len());
    for (i, users) in draws.iter().cycle().enumerate() {
        if i == WARMUP {
            latencies.clear();
        }
        if until.is_some_and(|t| Instant::now() >= t) || (until.is_none() && i == draws.len()) {
            break;
        }
        let request = online_request(users);
        let asked = Instant::now();
        let answer = client.get_online_features(request).await?.into_inner();
        latencies.push(asked.elapsed());
        let column = answer.results.last().map_or(0, |c| c.values.len());
        if column != users.len() {
            bail!("{column} values for {} users", users.len());
        }
    }
    Ok(latencies)
}

async fn over_grpc(args: &Args, endpoint: &str, users: &[i64]) -> Result<()> {
    let sequence = draws(users, args.entities_per_request, WARMUP + args.requests, 11);
    let latencies = client_run(endpoint.to_string(), sequence, None).await?;
    let busy = latencies.iter().sum();
    println!(
        "{}",
        online_line("quiver-grpc-rust", args, 1, latencies, busy)
    );

    let until = Instant::now() + Duration::from_secs_f64(args.seconds);
    let runs = (0..args.clients).map(|c| {
        let sequence = draws(users, args.entities_per_request, 1000, 100 + c as u64);
        tokio::spawn(client_run(endpoint.to_string(), sequence, Some(until)))
    });
    let mut latencies = Vec::new();
    for run in futures::future::join_all(runs).await {
        latencies.extend(run??);
    }
    let wall = Duration::from_secs_f64(args.seconds);
    println!(
        "{}",
        online_line("quiver-grpc-rust", args, args.clients, latencies, wall)
    );
    Ok(())
}
