//! `quiver collection snapshot`: create, list, download, delete and restore collection
//! snapshots. A snapshot is made and kept by the server (`Snapshots`); restoring reads a
//! downloaded file here and creates the collection from it through the normal API, so any
//! cluster can be seeded from it.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use quiver_proto::v1 as pb;
use quiver_proto::v1::collections_client::CollectionsClient;
use quiver_proto::v1::snapshots_client::SnapshotsClient;
use serde_json::json;

use super::import::{read_snapshot, upload, DEFAULT_PARALLEL};
use super::{print_line, status, Endpoint};

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Snapshot a collection: every point as of one moment across its shards (writes wait
    /// meanwhile), saved by the server; prints its name. With --all, every collection (one
    /// snapshot each, one after the other).
    Create {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        collection: Option<String>,
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// List a collection's snapshots on the server (one JSON line each).
    List {
        collection: String,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Download a snapshot to a file (default: its name, in this directory).
    Download {
        collection: String,
        name: String,
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Delete a snapshot on the server.
    Delete {
        collection: String,
        name: String,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Create a collection from each snapshot file and upsert its points (into any cluster). It
    /// keeps the snapshot's name, shard count and replication factor unless told otherwise.
    Restore {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Restore under this name instead (one file only).
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        shards: Option<u32>,
        #[arg(long)]
        replication_factor: Option<u32>,
        /// Points per upsert.
        #[arg(long, default_value_t = 500)]
        batch_size: usize,
        /// Upsert into the collection if it exists already (to finish a restore that stopped
        /// part way: points are upserted by id, so the points stored already are rewritten).
        #[arg(long)]
        into_existing: bool,
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

fn info_json(s: &pb::SnapshotInfo) -> serde_json::Value {
    json!({
        "name": s.name,
        "collection": s.collection,
        "size_bytes": s.size_bytes,
        "created_at": s.created_at,
        "points": s.points,
    })
}

pub async fn snapshot(cmd: SnapshotCommand) -> anyhow::Result<()> {
    match cmd {
        SnapshotCommand::Create {
            collection,
            all,
            endpoint,
        } => {
            let channel = endpoint.channel().await?;
            let collections = match (collection, all) {
                (Some(collection), _) => vec![collection],
                (None, _) => CollectionsClient::new(channel.clone())
                    .list(pb::ListCollectionsRequest {})
                    .await
                    .map_err(status)?
                    .into_inner()
                    .collections
                    .into_iter()
                    .map(|c| c.name)
                    .collect(),
            };
            let mut client = SnapshotsClient::new(channel);
            for collection in collections {
                let info = client
                    .create(pb::CreateSnapshotRequest {
                        collection: collection.clone(),
                    })
                    .await
                    .map_err(|e| status(e).context(format!("snapshot of `{collection}`")))?
                    .into_inner();
                print_line(info_json(&info))?;
            }
        }
        SnapshotCommand::List {
            collection,
            endpoint,
        } => {
            let mut client = SnapshotsClient::new(endpoint.channel().await?);
            let list = client
                .list(pb::ListSnapshotsRequest { collection })
                .await
                .map_err(status)?
                .into_inner();
            for s in &list.snapshots {
                print_line(info_json(s))?;
            }
        }
        SnapshotCommand::Download {
            collection,
            name,
            out,
            endpoint,
        } => download(collection, name, out, endpoint).await?,
        SnapshotCommand::Delete {
            collection,
            name,
            endpoint,
        } => {
            let mut client = SnapshotsClient::new(endpoint.channel().await?);
            client
                .delete(pb::DeleteSnapshotRequest {
                    collection,
                    name: name.clone(),
                })
                .await
                .map_err(status)?;
            print_line(format!("deleted {name}"))?;
        }
        SnapshotCommand::Restore {
            files,
            name,
            shards,
            replication_factor,
            batch_size,
            into_existing,
            endpoint,
        } => {
            if batch_size == 0 {
                bail!("--batch-size must be at least 1");
            }
            if name.is_some() && files.len() > 1 {
                bail!("--name renames one collection; give one file with it");
            }
            for file in files {
                let target = Target {
                    name: name.as_deref(),
                    shards,
                    replication_factor,
                    into_existing,
                };
                restore(&file, target, batch_size, endpoint.clone()).await?;
            }
        }
    }
    Ok(())
}

/// What a restored collection is called and how it is spread (None: as in the snapshot).
struct Target<'a> {
    name: Option<&'a str>,
    shards: Option<u32>,
    replication_factor: Option<u32>,
    /// Upsert into the collection when it exists already.
    into_existing: bool,
}

/// Creates the collection of snapshot `file` and upserts its points.
async fn restore(
    file: &Path,
    target: Target<'_>,
    batch_size: usize,
    endpoint: Endpoint,
) -> anyhow::Result<()> {
    let (header, points) = read_snapshot(file)?;
    let mut create = header.create_request(target.name);
    create.shard_count = target.shards.or(create.shard_count);
    create.replication_factor = target.replication_factor.or(create.replication_factor);
    let name = create.name.clone();
    let created = CollectionsClient::new(endpoint.channel().await?)
        .create(create)
        .await;
    match created {
        Err(e) if e.code() == tonic::Code::AlreadyExists && target.into_existing => {}
        Err(e) if e.code() == tonic::Code::AlreadyExists => {
            return Err(status(e).context(format!(
                "collection `{name}` exists already: restore under another name with --name, or \
                 into it with --into-existing (this restore stored nothing)"
            )))
        }
        Err(e) => return Err(status(e)),
        Ok(_) => {}
    }
    upload(
        name.clone(),
        &points,
        batch_size,
        DEFAULT_PARALLEL,
        endpoint,
    )
    .await?;
    print_line(format!(
        "restored collection {name} from {}",
        file.display()
    ))?;
    Ok(())
}

/// Downloads snapshot `name` to `out` (default `./name`) with a progress bar; the file appears
/// only once complete.
async fn download(
    collection: String,
    name: String,
    out: Option<PathBuf>,
    endpoint: Endpoint,
) -> anyhow::Result<()> {
    let out = out.unwrap_or_else(|| PathBuf::from(&name));
    if out.exists() {
        bail!(
            "{} exists already; choose another with --out",
            out.display()
        );
    }
    let mut client = SnapshotsClient::new(endpoint.channel().await?);
    let size = client
        .list(pb::ListSnapshotsRequest {
            collection: collection.clone(),
        })
        .await
        .map_err(status)?
        .into_inner()
        .snapshots
        .into_iter()
        .find(|s| s.name == name)
        .map(|s| s.size_bytes);
    let mut chunks = client
        .download(pb::DownloadSnapshotRequest {
            collection,
            name: name.clone(),
        })
        .await
        .map_err(status)?
        .into_inner();
    let bar = ProgressBar::new(size.unwrap_or(0));
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut partial = out.clone().into_os_string();
    partial.push(".part");
    let partial = PathBuf::from(partial);
    let written = async {
        let mut file = std::fs::File::create(&partial)
            .with_context(|| format!("cannot write {}", partial.display()))?;
        let mut bytes = 0u64;
        while let Some(chunk) = chunks.message().await.map_err(status)? {
            file.write_all(&chunk.data)
                .with_context(|| format!("cannot write {}", partial.display()))?;
            bytes += chunk.data.len() as u64;
            bar.set_position(bytes);
        }
        file.sync_all()
            .with_context(|| format!("cannot write {}", partial.display()))?;
        std::fs::rename(&partial, &out)
            .with_context(|| format!("cannot write {}", out.display()))?;
        Ok::<u64, anyhow::Error>(bytes)
    }
    .await;
    bar.finish_and_clear();
    match written {
        Ok(bytes) => print_line(format!(
            "downloaded {name} to {} ({bytes} bytes)",
            out.display()
        ))?,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    }
    Ok(())
}
