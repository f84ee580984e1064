//! `quiver collection`: create, inspect, list and drop collections.

use anyhow::{anyhow, bail};
use clap::{Subcommand, ValueEnum};
use quiver_proto::v1 as pb;
use quiver_proto::v1::collections_client::CollectionsClient;
use serde_json::{json, Value};

use super::snapshot::{snapshot, SnapshotCommand};
use super::{print_line, status, Endpoint};

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

#[derive(Clone, Copy, ValueEnum)]
pub enum QuantizationArg {
    None,
    Fp16,
    Int8,
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
        /// HNSW neighbours per node, 2..=64 [default: 16].
        #[arg(long)]
        m: Option<u32>,
        /// HNSW candidate list size while building, 1..=4096 [default: 200].
        #[arg(long)]
        ef_construction: Option<u32>,
        /// Default HNSW ef for searches that do not set one.
        #[arg(long)]
        ef: Option<u32>,
        /// How indexed (sealed) segments hold vectors in memory: none (f32), fp16 (half the
        /// memory) or int8 (a quarter); searches rescore with the full vectors kept on disk.
        #[arg(long, value_enum, default_value = "none")]
        quantization: QuantizationArg,
        /// Payload index, FIELD:TYPE with TYPE keyword|integer|float|datetime (repeatable).
        #[arg(long = "payload-index", value_name = "FIELD:TYPE")]
        payload_indexes: Vec<String>,
        /// Payload key whose text is indexed for full-text search, FIELD or FIELD:ANALYZER with
        /// ANALYZER english (the default: lowercased, stemmed, stop words dropped), simple
        /// (lowercased words) or whitespace (repeatable).
        #[arg(long = "text-field", value_name = "FIELD[:ANALYZER]")]
        text_fields: Vec<String>,
        /// Payload key whose text the server embeds (embedder.model_dir, all-MiniLM-L6-v2:
        /// --dim 384) into a query's vector when the query has text and no vector.
        #[arg(long, value_name = "FIELD")]
        embed: Option<String>,
        /// Shards (Raft groups) the points are spread over by id [default: 1].
        #[arg(long)]
        shards: Option<u32>,
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
    /// Create or drop payload indexes of an existing collection.
    #[command(subcommand)]
    Index(IndexCommand),
    /// Point aliases at collections; every command that names a collection takes an alias.
    #[command(subcommand)]
    Alias(AliasCommand),
    /// Snapshots of a collection: create, list, download, delete, restore.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

#[derive(Subcommand)]
pub enum AliasCommand {
    /// Point ALIAS at COLLECTION, atomically moving it if it points elsewhere already (the
    /// blue/green switch: requests through the alias go to one collection or the other).
    Set {
        alias: String,
        collection: String,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Delete an alias (its collection stays).
    Delete {
        alias: String,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// List aliases, of one collection or all.
    List {
        collection: Option<String>,
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

fn print_aliases(list: &pb::ListAliasesResponse) -> anyhow::Result<()> {
    for a in &list.aliases {
        print_line(json!({"alias": a.alias, "collection": a.collection}))?;
    }
    Ok(())
}

async fn alias(cmd: AliasCommand) -> anyhow::Result<()> {
    use pb::alias_action::{Action, Create, Delete};
    match cmd {
        AliasCommand::Set {
            alias,
            collection,
            endpoint,
        } => {
            let mut client = CollectionsClient::new(endpoint.channel().await?);
            let current = client
                .list_aliases(pb::ListAliasesRequest::default())
                .await
                .map_err(status)?
                .into_inner();
            let mut actions = Vec::new();
            if current.aliases.iter().any(|a| a.alias == alias) {
                actions.push(Action::Delete(Delete {
                    alias: alias.clone(),
                }));
            }
            actions.push(Action::Create(Create { alias, collection }));
            let actions = actions
                .into_iter()
                .map(|a| pb::AliasAction { action: Some(a) })
                .collect();
            let list = client
                .update_aliases(pb::UpdateAliasesRequest { actions })
                .await
                .map_err(status)?
                .into_inner();
            print_aliases(&list)?;
        }
        AliasCommand::Delete { alias, endpoint } => {
            let mut client = CollectionsClient::new(endpoint.channel().await?);
            let action = pb::AliasAction {
                action: Some(Action::Delete(Delete { alias })),
            };
            let list = client
                .update_aliases(pb::UpdateAliasesRequest {
                    actions: vec![action],
                })
                .await
                .map_err(status)?
                .into_inner();
            print_aliases(&list)?;
        }
        AliasCommand::List {
            collection,
            endpoint,
        } => {
            let mut client = CollectionsClient::new(endpoint.channel().await?);
            let list = client
                .list_aliases(pb::ListAliasesRequest {
                    collection: collection.unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            print_aliases(&list)?;
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum IndexCommand {
    /// Index a payload field, FIELD:TYPE with TYPE keyword|integer|float|datetime. The points
    /// already stored are indexed in the background.
    Create {
        name: String,
        #[arg(value_name = "FIELD:TYPE")]
        field: String,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Drop a payload field's index.
    Drop {
        name: String,
        field: String,
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

fn payload_index(spec: &str) -> anyhow::Result<pb::PayloadIndexField> {
    let (key, t) = spec
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("`{spec}`: expected FIELD:TYPE"))?;
    let t = match t {
        "keyword" => pb::PayloadFieldType::Keyword,
        "integer" => pb::PayloadFieldType::Integer,
        "float" => pb::PayloadFieldType::Float,
        "datetime" => pb::PayloadFieldType::Datetime,
        other => bail!("`{spec}`: unknown type `{other}` (keyword, integer, float, datetime)"),
    };
    Ok(pb::PayloadIndexField {
        key: key.to_string(),
        r#type: t as i32,
    })
}

fn text_field(spec: &str) -> anyhow::Result<pb::TextField> {
    let (name, analyzer) = match spec.rsplit_once(':') {
        Some((name, analyzer)) => (name, analyzer),
        None => (spec, "english"),
    };
    let analyzer = match analyzer {
        "english" => pb::TextAnalyzer::English,
        "simple" => pb::TextAnalyzer::Simple,
        "whitespace" => pb::TextAnalyzer::Whitespace,
        other => bail!("`{spec}`: unknown analyzer `{other}` (english, simple, whitespace)"),
    };
    Ok(pb::TextField {
        name: name.to_string(),
        analyzer: analyzer as i32,
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
                "indexed_vectors": s.indexed_vectors,
                "segments": s.segments.iter().map(|g| json!({
                    "state": g.state,
                    "points": g.points,
                    "retired": g.retired,
                    "memory_bytes": g.memory_bytes,
                    "bytes_per_vector": g.bytes_per_vector,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "name": c.name,
        "dim": c.dim,
        "metric": metric,
        "index": index,
        "quantization": match pb::Quantization::try_from(c.quantization) {
            Ok(pb::Quantization::Fp16) => "fp16",
            Ok(pb::Quantization::Int8) => "int8",
            _ => "none",
        },
        "payload_indexes": payload_indexes,
        "text_fields": c.text_fields.iter().map(|f| json!({
            "name": f.name,
            "analyzer": pb::TextAnalyzer::try_from(f.analyzer)
                .map(|a| a.as_str_name().trim_start_matches("TEXT_ANALYZER_").to_lowercase())
                .unwrap_or_default(),
        })).collect::<Vec<_>>(),
        "embed": (!c.embed.is_empty()).then_some(&c.embed),
        "embedding": c.embedding.as_ref().map(|e| json!({
            "pending": e.pending,
            "embedded": e.embedded,
            "from_cache": e.from_cache,
            "failed": e.failed,
            "per_second": (e.per_second * 10.0).round() / 10.0,
            "last_error": (!e.last_error.is_empty()).then_some(&e.last_error),
        })),
        "points": c.points_count,
        "indexed_vectors": c.indexed_vectors,
        "pending_vectors": c.pending_vectors,
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
            quantization,
            payload_indexes,
            text_fields,
            embed,
            shards,
            replication_factor,
            endpoint,
        } => {
            let quantization = match quantization {
                QuantizationArg::None => pb::Quantization::None,
                QuantizationArg::Fp16 => pb::Quantization::Fp16,
                QuantizationArg::Int8 => pb::Quantization::Int8,
            };
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
                search_defaults: Some(pb::SearchDefaults { ef }),
                shard_count: shards,
                replication_factor,
                // A retry of this command after a lost answer returns the same outcome.
                request_id: uuid::Uuid::new_v4().to_string(),
                quantization: quantization as i32,
                text_fields: text_fields
                    .iter()
                    .map(|s| text_field(s))
                    .collect::<anyhow::Result<_>>()?,
                embed: embed.unwrap_or_default(),
            };
            let mut client = CollectionsClient::new(endpoint.channel().await?);
            let info = client.create(req).await.map_err(status)?.into_inner();
            print_line(serde_json::to_string_pretty(&info_json(&info))?)?;
        }
        CollectionCommand::List { endpoint } => {
            let mut client = CollectionsClient::new(endpoint.channel().await?);
            let list = client
                .list(pb::ListCollectionsRequest {})
                .await
                .map_err(status)?
                .into_inner();
            for c in &list.collections {
                print_line(serde_json::to_string(&info_json(c))?)?;
            }
        }
        CollectionCommand::Info { name, endpoint } => {
            let mut client = CollectionsClient::new(endpoint.channel().await?);
            let info = client
                .get(pb::GetCollectionRequest { name })
                .await
                .map_err(status)?
                .into_inner();
            print_line(serde_json::to_string_pretty(&info_json(&info))?)?;
        }
        CollectionCommand::Drop { name, endpoint } => {
            let mut client = CollectionsClient::new(endpoint.channel().await?);
            client
                .delete(pb::DeleteCollectionRequest { name: name.clone() })
                .await
                .map_err(status)?;
            print_line(format!("dropped {name}"))?;
        }
        CollectionCommand::Alias(cmd) => alias(cmd).await?,
        CollectionCommand::Snapshot(cmd) => snapshot(cmd).await?,
        CollectionCommand::Index(IndexCommand::Create {
            name,
            field,
            endpoint,
        }) => {
            let mut client = CollectionsClient::new(endpoint.channel().await?);
            let field = payload_index(&field)?;
            let info = client
                .create_payload_index(pb::CreatePayloadIndexRequest {
                    collection: name,
                    field: Some(field),
                })
                .await
                .map_err(status)?
                .into_inner();
            print_line(serde_json::to_string_pretty(&info_json(&info))?)?;
        }
        CollectionCommand::Index(IndexCommand::Drop {
            name,
            field,
            endpoint,
        }) => {
            let mut client = CollectionsClient::new(endpoint.channel().await?);
            let info = client
                .drop_payload_index(pb::DropPayloadIndexRequest {
                    collection: name,
                    key: field,
                })
                .await
                .map_err(status)?
                .into_inner();
            print_line(serde_json::to_string_pretty(&info_json(&info))?)?;
        }
    }
    Ok(())
}
