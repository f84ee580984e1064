//! Operator and client commands: they talk gRPC to a running node (`--endpoint`).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use quiver_proto::v1 as pb;
use quiver_proto::v1::cluster_client::ClusterClient;
use quiver_proto::v1::collections_client::CollectionsClient;
use quiver_proto::v1::points_client::PointsClient;
use quiver_proto::wire::{json_to_struct, struct_to_json};
use serde_json::{json, Value};
use tonic::transport::Channel;

const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:6334";

#[derive(Args, Clone)]
pub struct Endpoint {
    /// Address of a quiver node.
    #[arg(long, env = "QUIVER_ENDPOINT", default_value = DEFAULT_ENDPOINT, global = true)]
    endpoint: String,
}

impl Endpoint {
    async fn channel(&self) -> anyhow::Result<Channel> {
        Channel::from_shared(self.endpoint.clone())
            .with_context(|| format!("`{}` is not a valid endpoint", self.endpoint))?
            .connect()
            .await
            .with_context(|| format!("cannot connect to quiver at {}", self.endpoint))
    }
}

/// Turns a gRPC status into a one-line error.
fn status(e: tonic::Status) -> anyhow::Error {
    anyhow!("{:?}: {}", e.code(), e.message())
}

#[derive(Clone, Copy, ValueEnum)]
pub enum MetricArg {
    Cosine,
    L2,
    Dot,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum IndexArg {
    Hnsw,
    Flat,
}

#[derive(Subcommand)]
pub enum CollectionCommand {
    /// Create a collection.
    Create {
        name: String,
        /// Vector dimension.
        #[arg(long)]
        dim: u32,
        #[arg(long, value_enum)]
        metric: MetricArg,
        #[arg(long, value_enum, default_value = "hnsw")]
        index: IndexArg,
        /// HNSW neighbours per node.
        #[arg(long, default_value_t = 16)]
        m: u32,
        /// HNSW candidate list size while building.
        #[arg(long, default_value_t = 200)]
        ef_construction: u32,
        /// Default HNSW ef for searches that do not set one.
        #[arg(long)]
        ef: Option<u32>,
        /// Payload index, FIELD:TYPE with TYPE keyword|integer|float|datetime (repeatable).
        #[arg(long = "payload-index", value_name = "FIELD:TYPE")]
        payload_indexes: Vec<String>,
        /// Shards (Raft groups) the points are spread over by id.
        #[arg(long, default_value_t = 1)]
        shards: u32,
        /// Replicas of each shard, on distinct nodes (default: min(3, nodes)).
        #[arg(long)]
        replication_factor: Option<u32>,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// List collections.
    List {
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Show a collection.
    Info {
        name: String,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Drop a collection and all its points.
    Drop {
        name: String,
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

fn payload_index(spec: &str) -> anyhow::Result<pb::PayloadIndexField> {
    let (key, t) = spec
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("--payload-index `{spec}`: expected FIELD:TYPE"))?;
    let t = match t {
        "keyword" => pb::PayloadFieldType::Keyword,
        "integer" => pb::PayloadFieldType::Integer,
        "float" => pb::PayloadFieldType::Float,
        "datetime" => pb::PayloadFieldType::Datetime,
        other => bail!(
            "--payload-index `{spec}`: unknown type `{other}` (keyword, integer, float, datetime)"
        ),
    };
    Ok(pb::PayloadIndexField {
        key: key.to_string(),
        r#type: t as i32,
    })
}

fn info_json(c: &pb::CollectionInfo) -> Value {
    let metric = match pb::Metric::try_from(c.metric) {
        Ok(pb::Metric::Cosine) => "cosine",
        Ok(pb::Metric::L2) => "l2",
        Ok(pb::Metric::Dot) => "dot",
        _ => "unknown",
    };
    let index = match c.index.as_ref().and_then(|i| i.kind.as_ref()) {
        Some(pb::index_config::Kind::Hnsw(h)) => {
            json!({"hnsw": {"m": h.m, "ef_construction": h.ef_construction}})
        }
        _ => json!("flat"),
    };
    let payload_indexes: Vec<Value> = c
        .payload_indexes
        .iter()
        .map(|f| {
            let t = pb::PayloadFieldType::try_from(f.r#type)
                .map(|t| {
                    t.as_str_name()
                        .trim_start_matches("PAYLOAD_FIELD_TYPE_")
                        .to_lowercase()
                })
                .unwrap_or_default();
            json!({"key": f.key, "type": t})
        })
        .collect();
    let shards: Vec<Value> = c
        .shards
        .iter()
        .map(|s| {
            let replicas: Vec<Value> = s
                .replicas
                .iter()
                .map(
                    |r| json!({"node": r.node, "address": r.address, "leader": r.node == s.leader}),
                )
                .collect();
            json!({
                "shard": s.shard,
                "group": s.group,
                "leader": s.leader,
                "replicas": replicas,
                "points": s.points_count,
            })
        })
        .collect();
    json!({
        "name": c.name,
        "dim": c.dim,
        "metric": metric,
        "index": index,
        "payload_indexes": payload_indexes,
        "points": c.points_count,
        "indexed_vectors": c.indexed_vectors,
        "shard_count": c.shard_count,
        "replication_factor": c.replication_factor,
        "shards": shards,
    })
}

pub async fn collection(cmd: CollectionCommand) -> anyhow::Result<()> {
    match cmd {
        CollectionCommand::Create {
            name,
            dim,
            metric,
            index,
            m,
            ef_construction,
            ef,
            payload_indexes,
            shards,
            replication_factor,
            endpoint,
        } => {
            let metric = match metric {
                MetricArg::Cosine => pb::Metric::Cosine,
                MetricArg::L2 => pb::Metric::L2,
                MetricArg::Dot => pb::Metric::Dot,
            };
            let index = match index {
                IndexArg::Flat => pb::index_config::Kind::Flat(pb::FlatConfig {}),
                IndexArg::Hnsw => {
                    pb::index_config::Kind::Hnsw(pb::HnswConfig { m, ef_construction })
                }
            };
            let req = pb::CreateCollectionRequest {
                name,
                dim,
                metric: metric as i32,
                index: Some(pb::IndexConfig { kind: Some(index) }),
                payload_indexes: payload_indexes
                    .iter()
                    .map(|s| payload_index(s))
                    .collect::<anyhow::Result<_>>()?,
                search_defaults: Some(pb::SearchDefaults {
                    ef: ef.unwrap_or(0),
                }),
                shard_count: shards,
                replication_factor: replication_factor.unwrap_or(0),
                // A retry of this command after a lost answer returns the same outcome.
                request_id: uuid::Uuid::new_v4().to_string(),
            };
            let mut client = CollectionsClient::new(endpoint.channel().await?);
            let info = client.create(req).await.map_err(status)?.into_inner();
            println!("{}", serde_json::to_string_pretty(&info_json(&info))?);
        }
        CollectionCommand::List { endpoint } => {
            let mut client = CollectionsClient::new(endpoint.channel().await?);
            let list = client
                .list(pb::ListCollectionsRequest {})
                .await
                .map_err(status)?
                .into_inner();
            for c in &list.collections {
                println!("{}", serde_json::to_string(&info_json(c))?);
            }
        }
        CollectionCommand::Info { name, endpoint } => {
            let mut client = CollectionsClient::new(endpoint.channel().await?);
            let info = client
                .get(pb::GetCollectionRequest { name })
                .await
                .map_err(status)?
                .into_inner();
            println!("{}", serde_json::to_string_pretty(&info_json(&info))?);
        }
        CollectionCommand::Drop { name, endpoint } => {
            let mut client = CollectionsClient::new(endpoint.channel().await?);
            client
                .delete(pb::DeleteCollectionRequest { name: name.clone() })
                .await
                .map_err(status)?;
            println!("dropped {name}");
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum PointsCommand {
    /// Import points from .jsonl ({"id","vector","payload"} per line) or .fvecs (ids = row numbers).
    Import {
        collection: String,
        #[arg(long)]
        file: PathBuf,
        /// Points per upsert request.
        #[arg(long, default_value_t = 500)]
        batch_size: usize,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Print points by id as JSON lines.
    Get {
        collection: String,
        /// Ids (integers or UUIDs).
        #[arg(required = true)]
        ids: Vec<String>,
        #[arg(long)]
        with_vector: bool,
        #[arg(long, value_enum, default_value = "leader")]
        consistency: ConsistencyArg,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Delete points by id or by filter.
    Delete {
        collection: String,
        /// Ids (integers or UUIDs).
        ids: Vec<String>,
        /// Delete every point matching this JSON filter instead.
        #[arg(long, conflicts_with = "ids")]
        filter: Option<String>,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Print every point (optionally filtered) as JSON lines, in id order.
    Scroll {
        collection: String,
        #[arg(long)]
        filter: Option<String>,
        #[arg(long)]
        with_vector: bool,
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

fn id_arg(s: &str) -> pb::PointId {
    pb::PointId {
        kind: Some(match s.parse::<u64>() {
            Ok(n) => pb::point_id::Kind::Num(n),
            Err(_) => pb::point_id::Kind::Uuid(s.to_string()),
        }),
    }
}

fn id_json(id: Option<&pb::PointId>) -> Value {
    match id.and_then(|i| i.kind.as_ref()) {
        Some(pb::point_id::Kind::Num(n)) => json!(n),
        Some(pb::point_id::Kind::Uuid(u)) => json!(u),
        None => Value::Null,
    }
}

fn point_json(p: &pb::Point) -> anyhow::Result<Value> {
    let mut out = json!({"id": id_json(p.id.as_ref())});
    if let Some(payload) = &p.payload {
        out["payload"] = Value::Object(struct_to_json("payload", payload)?);
    }
    if !p.vector.is_empty() {
        out["vector"] = json!(p.vector);
    }
    Ok(out)
}

fn read_fvecs(path: &Path) -> anyhow::Result<Vec<Vec<f32>>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    quiver_index::vecs::parse_fvecs(&bytes).with_context(|| format!("{}", path.display()))
}

/// Reads an import file into points.
fn read_points(path: &Path) -> anyhow::Result<Vec<pb::Point>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext {
        "fvecs" => Ok(read_fvecs(path)?
            .into_iter()
            .enumerate()
            .map(|(i, vector)| pb::Point {
                id: Some(pb::PointId {
                    kind: Some(pb::point_id::Kind::Num(i as u64)),
                }),
                vector,
                payload: None,
            })
            .collect()),
        "jsonl" | "ndjson" => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let mut points = Vec::new();
            for (n, line) in BufReader::new(file).lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let at = || format!("{}:{}", path.display(), n + 1);
                let v: Value = serde_json::from_str(&line).with_context(at)?;
                let id = match &v["id"] {
                    Value::Number(x) => x.as_u64().map(pb::point_id::Kind::Num),
                    Value::String(s) => Some(pb::point_id::Kind::Uuid(s.clone())),
                    _ => None,
                }
                .ok_or_else(|| anyhow!("{}: `id` must be an unsigned integer or a UUID", at()))?;
                let vector = v["vector"]
                    .as_array()
                    .ok_or_else(|| anyhow!("{}: `vector` must be an array of numbers", at()))?
                    .iter()
                    .map(|x| x.as_f64().map(|f| f as f32))
                    .collect::<Option<Vec<f32>>>()
                    .ok_or_else(|| anyhow!("{}: `vector` must be an array of numbers", at()))?;
                let payload = match &v["payload"] {
                    Value::Object(m) => Some(json_to_struct(m)),
                    Value::Null => None,
                    _ => bail!("{}: `payload` must be an object", at()),
                };
                points.push(pb::Point {
                    id: Some(pb::PointId { kind: Some(id) }),
                    vector,
                    payload,
                });
            }
            Ok(points)
        }
        _ => bail!(
            "{}: unknown file type (expected .jsonl or .fvecs)",
            path.display()
        ),
    }
}

fn parse_filter(filter: Option<String>) -> anyhow::Result<String> {
    let text = filter.unwrap_or_default();
    if !text.is_empty() {
        serde_json::from_str::<Value>(&text).context("--filter is not valid JSON")?;
    }
    Ok(text)
}

pub async fn points(cmd: PointsCommand) -> anyhow::Result<()> {
    match cmd {
        PointsCommand::Import {
            collection,
            file,
            batch_size,
            endpoint,
        } => {
            if batch_size == 0 {
                bail!("--batch-size must be at least 1");
            }
            let points = read_points(&file)?;
            let mut client =
                PointsClient::new(endpoint.channel().await?).max_encoding_message_size(usize::MAX);
            let bar = ProgressBar::new(points.len() as u64);
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} points ({per_sec}, eta {eta})")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let started = Instant::now();
            let mut done = 0usize;
            for batch in points.chunks(batch_size) {
                client
                    .upsert(pb::UpsertRequest {
                        collection: collection.clone(),
                        points: batch.to_vec(),
                        ..Default::default()
                    })
                    .await
                    .map_err(status)
                    .with_context(|| format!("batch starting at point {done}"))?;
                done += batch.len();
                bar.set_position(done as u64);
            }
            bar.finish_and_clear();
            let secs = started.elapsed().as_secs_f64();
            println!(
                "imported {done} points in {secs:.2} s ({:.0} points/s)",
                done as f64 / secs.max(1e-9)
            );
        }
        PointsCommand::Get {
            collection,
            ids,
            with_vector,
            consistency,
            endpoint,
        } => {
            let mut client = PointsClient::new(endpoint.channel().await?);
            let resp = client
                .get(pb::GetPointsRequest {
                    collection,
                    ids: ids.iter().map(|s| id_arg(s)).collect(),
                    with_payload: true,
                    with_vector,
                    consistency: consistency.proto(),
                })
                .await
                .map_err(status)?
                .into_inner();
            for p in &resp.points {
                println!("{}", point_json(p)?);
            }
        }
        PointsCommand::Delete {
            collection,
            ids,
            filter,
            endpoint,
        } => {
            let mut client = PointsClient::new(endpoint.channel().await?);
            let resp = client
                .delete(pb::DeletePointsRequest {
                    collection,
                    ids: ids.iter().map(|s| id_arg(s)).collect(),
                    filter: None,
                    filter_json: parse_filter(filter)?,
                    ..Default::default()
                })
                .await
                .map_err(status)?
                .into_inner();
            println!("deleted {} points", resp.affected);
        }
        PointsCommand::Scroll {
            collection,
            filter,
            with_vector,
            endpoint,
        } => {
            let mut client =
                PointsClient::new(endpoint.channel().await?).max_decoding_message_size(usize::MAX);
            let filter_json = parse_filter(filter)?;
            let mut cursor = String::new();
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            loop {
                let page = client
                    .scroll(pb::ScrollRequest {
                        collection: collection.clone(),
                        limit: 1000,
                        cursor: cursor.clone(),
                        filter: None,
                        filter_json: filter_json.clone(),
                        with_payload: true,
                        with_vector,
                        consistency: 0,
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                for p in &page.points {
                    writeln!(out, "{}", point_json(p)?)?;
                }
                if page.next_cursor.is_empty() {
                    break;
                }
                cursor = page.next_cursor;
            }
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Form a new cluster of the node at --endpoint alone (once, on the first node; nodes for a
    /// cluster run with cluster.bootstrap = false).
    Init {
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Add the node listening at ADDR (ip:port) to the cluster that --endpoint belongs to.
    Join {
        address: String,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Remove node NODE (by id) from the cluster.
    Remove {
        node: u64,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Members, groups, leaders, and how far each replica has come.
    Status {
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

/// The leader's endpoint from a "not the leader" answer (its `quiver-leader-address` metadata).
fn leader_endpoint(e: &tonic::Status) -> Option<Endpoint> {
    let addr = e.metadata().get("quiver-leader-address")?.to_str().ok()?;
    Some(Endpoint {
        endpoint: format!("http://{addr}"),
    })
}

/// Runs a membership call, following a "not the leader" answer once.
async fn on_leader<F, Fut, T>(endpoint: &Endpoint, call: F) -> anyhow::Result<T>
where
    F: Fn(ClusterClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    match call(ClusterClient::new(endpoint.channel().await?)).await {
        Ok(r) => Ok(r.into_inner()),
        Err(e) => match leader_endpoint(&e) {
            Some(leader) => call(ClusterClient::new(leader.channel().await?))
                .await
                .map(tonic::Response::into_inner)
                .map_err(status),
            None => Err(status(e)),
        },
    }
}

/// The cluster as every member sees it: members, then each group (the meta group is 0) with
/// its leader and each replica's role, log and applied index, and lag behind the leader's log.
async fn cluster_view(first: pb::ClusterStatus) -> anyhow::Result<Value> {
    let mut views = Vec::new();
    for member in &first.members {
        let answer = async {
            let channel = Endpoint {
                endpoint: format!("http://{}", member.address),
            }
            .channel()
            .await?;
            let status = tokio::time::timeout(
                std::time::Duration::from_secs(2),
                ClusterClient::new(channel).status(pb::StatusRequest {}),
            )
            .await??;
            anyhow::Ok(status.into_inner())
        };
        views.push((member.clone(), answer.await.ok()));
    }
    let mut groups: std::collections::BTreeMap<u64, Value> = std::collections::BTreeMap::new();
    for (_, view) in &views {
        for g in view.iter().flat_map(|v| &v.groups) {
            let entry = groups.entry(g.group).or_insert_with(|| {
                json!({"group": g.group, "collection": g.collection, "shard": g.shard,
                       "leader": 0, "term": 0, "replicas": []})
            });
            if g.leader != 0 && g.term >= entry["term"].as_u64().unwrap_or(0) {
                entry["leader"] = json!(g.leader);
                entry["term"] = json!(g.term);
            }
        }
    }
    for (member, view) in &views {
        for g in view.iter().flat_map(|v| &v.groups) {
            let entry = groups.get_mut(&g.group).expect("group seen above");
            entry["replicas"]
                .as_array_mut()
                .expect("array")
                .push(json!({
                    "node": member.id,
                    "role": g.role,
                    "last_log_index": g.last_log_index,
                    "last_applied_index": g.last_applied_index,
                }));
        }
    }
    // Lag: how far each replica's applied index trails the furthest log of its group.
    for entry in groups.values_mut() {
        let replicas = entry["replicas"].as_array_mut().expect("array");
        let head = replicas
            .iter()
            .filter_map(|r| r["last_log_index"].as_u64())
            .max()
            .unwrap_or(0);
        for r in replicas.iter_mut() {
            r["lag"] = json!(head.saturating_sub(r["last_applied_index"].as_u64().unwrap_or(0)));
        }
    }
    let members: Vec<Value> = views
        .iter()
        .map(|(m, v)| json!({"id": m.id, "address": m.address, "reachable": v.is_some()}))
        .collect();
    Ok(json!({
        "node": first.node.as_ref().map(|n| json!({"id": n.id, "address": n.address})),
        "members": members,
        "groups": groups.into_values().collect::<Vec<_>>(),
    }))
}

pub async fn cluster(cmd: ClusterCommand) -> anyhow::Result<()> {
    let status = match cmd {
        ClusterCommand::Init { endpoint } => ClusterClient::new(endpoint.channel().await?)
            .init(pb::InitRequest {})
            .await
            .map_err(status)?
            .into_inner(),
        ClusterCommand::Join { address, endpoint } => {
            on_leader(&endpoint, |mut c| {
                let address = address.clone();
                async move { c.add_node(pb::AddNodeRequest { address }).await }
            })
            .await?
        }
        ClusterCommand::Remove { node, endpoint } => {
            on_leader(&endpoint, |mut c| async move {
                c.remove_node(pb::RemoveNodeRequest { id: node }).await
            })
            .await?
        }
        ClusterCommand::Status { endpoint } => ClusterClient::new(endpoint.channel().await?)
            .status(pb::StatusRequest {})
            .await
            .map_err(status)?
            .into_inner(),
    };
    let view = cluster_view(status).await?;
    println!("{}", serde_json::to_string_pretty(&view)?);
    Ok(())
}

#[derive(Subcommand)]
pub enum ShardCommand {
    /// Move shard group GROUP's replica from node --from to node --to (the new replica catches
    /// up before the old one leaves). Group ids are listed by `quiver collection info`.
    Move {
        group: u64,
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: u64,
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

pub async fn shard(cmd: ShardCommand) -> anyhow::Result<()> {
    match cmd {
        ShardCommand::Move {
            group,
            from,
            to,
            endpoint,
        } => {
            let moved = on_leader(&endpoint, |mut c| async move {
                c.move_shard(pb::MoveShardRequest { group, from, to }).await
            })
            .await?;
            println!("{}", json!({"group": group, "replicas": moved.replicas}));
        }
    }
    Ok(())
}

/// Read consistency on the command line.
#[derive(Clone, Copy, ValueEnum)]
pub enum ConsistencyArg {
    Linearizable,
    Leader,
    Any,
}

impl ConsistencyArg {
    fn proto(self) -> i32 {
        (match self {
            ConsistencyArg::Linearizable => pb::ReadConsistency::Linearizable,
            ConsistencyArg::Leader => pb::ReadConsistency::Leader,
            ConsistencyArg::Any => pb::ReadConsistency::Any,
        }) as i32
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Table,
}

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
    /// Run every row of an .fvecs file as a query.
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
    #[arg(long)]
    with_payload: bool,
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
            vec![serde_json::from_str(v).context("--vector must be a JSON array of numbers")?]
        }
        (None, Some(f)) => read_fvecs(f)?,
        (None, None) => bail!("give --vector or --query-file"),
    };
    let filter_json = parse_filter(args.filter.clone())?;
    let mut client =
        PointsClient::new(args.endpoint.channel().await?).max_decoding_message_size(usize::MAX);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (q, vector) in queries.into_iter().enumerate() {
        let resp = client
            .search(pb::SearchRequest {
                collection: args.collection.clone(),
                vector,
                top_k: args.top_k,
                ef: args.ef.unwrap_or(0),
                filter: None,
                filter_json: filter_json.clone(),
                with_payload: args.with_payload,
                with_vector: false,
                consistency: args.consistency.proto(),
                exact: args.exact,
            })
            .await
            .map_err(status)?
            .into_inner();
        match args.format {
            Format::Json => {
                let results: Vec<Value> = resp
                    .results
                    .iter()
                    .map(|r| {
                        let mut hit = json!({"id": id_json(r.id.as_ref()), "score": r.score});
                        if let Some(p) = &r.payload {
                            hit["payload"] = Value::Object(struct_to_json("payload", p)?);
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
                    let payload = match &r.payload {
                        Some(p) => Value::Object(struct_to_json("payload", p)?).to_string(),
                        None => String::new(),
                    };
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
    }
    Ok(())
}
