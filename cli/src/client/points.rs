//! `quiver points`: import, get, delete, scroll, count, and change payloads and vectors.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use quiver_proto::v1 as pb;
use quiver_proto::v1::points_client::PointsClient;
use quiver_proto::wire::json_to_struct;
use serde_json::Value;

use super::{
    id_arg, id_json, parse_filter, point_json, print_line, status, vector_from_json,
    ConsistencyArg, Endpoint, Format,
};

#[derive(Subcommand)]
pub enum PointsCommand {
    /// Import points from .jsonl ({"id","vector","payload"} per line) or .fvecs (ids = row
    /// numbers). Re-running an import is safe: points are upserted by id.
    Import {
        collection: String,
        #[arg(long)]
        file: PathBuf,
        /// Points per upsert request.
        #[arg(long, default_value_t = 500)]
        batch_size: usize,
        /// Upsert requests in flight at once.
        #[arg(long, default_value_t = super::import::DEFAULT_PARALLEL)]
        parallel: usize,
        /// Then wait (with a progress bar) until the server has embedded every point that came
        /// without a vector (a collection with --embed) and their text is searchable.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Print points by id (ids that do not exist are named on stderr).
    Get {
        collection: String,
        /// Ids (integers or UUIDs).
        #[arg(required = true)]
        ids: Vec<String>,
        #[arg(long)]
        with_vector: bool,
        #[arg(long, value_enum, default_value = "leader")]
        consistency: ConsistencyArg,
        /// json: one JSON object a line; table: id and payload columns.
        #[arg(long, value_enum, default_value = "json")]
        format: Format,
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
    /// Print points (optionally filtered) as JSON lines, in id order. With --limit, stops after
    /// that many and prints the cursor to continue from on stderr.
    Scroll {
        collection: String,
        #[arg(long)]
        filter: Option<String>,
        #[arg(long)]
        with_vector: bool,
        /// Print at most this many points.
        #[arg(long)]
        limit: Option<u64>,
        /// Start after the point this cursor (from an earlier scroll) names.
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long, value_enum, default_value = "leader")]
        consistency: ConsistencyArg,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Count points, all or those matching a filter.
    Count {
        collection: String,
        #[arg(long)]
        filter: Option<String>,
        /// Allow an estimate from payload-index statistics when it is cheaper.
        #[arg(long)]
        approximate: bool,
        #[arg(long, value_enum, default_value = "leader")]
        consistency: ConsistencyArg,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Set payload keys of points (by ids or filter), keeping their other keys and vectors.
    SetPayload(PayloadArgs),
    /// Replace the whole payload of points (by ids or filter), keeping their vectors.
    OverwritePayload(PayloadArgs),
    /// Remove payload keys (`a.b` reaches into objects) of points, by ids or filter.
    DeletePayload {
        #[command(flatten)]
        select: Select,
        /// Keys to remove (repeatable).
        #[arg(long = "key", required = true)]
        keys: Vec<String>,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Remove every payload key of points, by ids or filter.
    ClearPayload {
        #[command(flatten)]
        select: Select,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Replace the vector of an existing point, keeping its payload.
    SetVector {
        collection: String,
        id: String,
        /// The new vector as a JSON array.
        #[arg(long)]
        vector: String,
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

/// The points a payload change is for.
#[derive(Args)]
pub struct Select {
    collection: String,
    /// Ids (integers or UUIDs).
    ids: Vec<String>,
    /// Every point matching this JSON filter instead (`{}`: every point).
    #[arg(long, conflicts_with = "ids")]
    filter: Option<String>,
}

#[derive(Args)]
pub struct PayloadArgs {
    #[command(flatten)]
    select: Select,
    /// The payload as a JSON object.
    #[arg(long)]
    payload: String,
    #[command(flatten)]
    endpoint: Endpoint,
}

fn payload_arg(text: &str) -> anyhow::Result<prost_types::Struct> {
    match serde_json::from_str::<Value>(text).context("--payload is not valid JSON")? {
        Value::Object(map) => Ok(json_to_struct(&map)),
        _ => bail!("--payload must be a JSON object"),
    }
}

async fn update_payload(
    select: Select,
    change: pb::update_payload_request::Change,
    endpoint: Endpoint,
) -> anyhow::Result<()> {
    let mut client = PointsClient::new(endpoint.channel().await?);
    let asked = select.ids.len();
    let resp = client
        .update_payload(pb::UpdatePayloadRequest {
            collection: select.collection,
            ids: select.ids.iter().map(|s| id_arg(s)).collect(),
            filter: None,
            filter_json: parse_filter(select.filter)?,
            change: Some(change),
            request_id: uuid::Uuid::new_v4().to_string(),
            wait_indexed: false,
        })
        .await
        .map_err(status)?
        .into_inner();
    let skipped = match asked as u64 {
        0 => String::new(),
        n if n > resp.affected => format!(" ({} of the ids do not exist)", n - resp.affected),
        _ => String::new(),
    };
    print_line(format!("updated {} points{skipped}", resp.affected))?;
    Ok(())
}

pub async fn points(cmd: PointsCommand) -> anyhow::Result<()> {
    use pb::update_payload_request::Change;
    match cmd {
        PointsCommand::Import {
            collection,
            file,
            batch_size,
            parallel,
            wait,
            endpoint,
        } => super::import::import(collection, &file, batch_size, parallel, wait, endpoint).await?,
        PointsCommand::Get {
            collection,
            ids,
            with_vector,
            consistency,
            format,
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
            if matches!(format, Format::Table) {
                print_line(format!("{:<38} payload", "id"))?;
            }
            for p in &resp.points {
                match format {
                    Format::Json => print_line(point_json(p)?)?,
                    Format::Table => {
                        let point = point_json(p)?;
                        print_line(format!(
                            "{:<38} {}",
                            point["id"].to_string(),
                            point.get("payload").unwrap_or(&Value::Null)
                        ))?;
                    }
                }
            }
            if !resp.missing.is_empty() {
                let missing: Vec<String> = resp
                    .missing
                    .iter()
                    .map(|id| id_json(Some(id)).to_string())
                    .collect();
                eprintln!("not found: {}", missing.join(", "));
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
                    request_id: uuid::Uuid::new_v4().to_string(),
                    wait_indexed: false,
                })
                .await
                .map_err(status)?
                .into_inner();
            print_line(format!("deleted {} points", resp.affected))?;
        }
        PointsCommand::Scroll {
            collection,
            filter,
            with_vector,
            limit,
            cursor,
            consistency,
            endpoint,
        } => {
            scroll(
                collection,
                filter,
                with_vector,
                limit,
                cursor,
                consistency,
                endpoint,
            )
            .await?
        }
        PointsCommand::Count {
            collection,
            filter,
            approximate,
            consistency,
            endpoint,
        } => {
            let mut client = PointsClient::new(endpoint.channel().await?);
            let resp = client
                .count(pb::CountRequest {
                    collection,
                    filter: None,
                    filter_json: parse_filter(filter)?,
                    exact: !approximate,
                    consistency: consistency.proto(),
                })
                .await
                .map_err(status)?
                .into_inner();
            match resp.exact {
                true => print_line(resp.count)?,
                false => print_line(format!("{} (estimated)", resp.count))?,
            }
        }
        PointsCommand::SetPayload(args) => {
            let change = Change::Set(payload_arg(&args.payload)?);
            update_payload(args.select, change, args.endpoint).await?
        }
        PointsCommand::OverwritePayload(args) => {
            let change = Change::Overwrite(payload_arg(&args.payload)?);
            update_payload(args.select, change, args.endpoint).await?
        }
        PointsCommand::DeletePayload {
            select,
            keys,
            endpoint,
        } => {
            let change = Change::DeleteKeys(pb::PayloadKeys { keys });
            update_payload(select, change, endpoint).await?
        }
        PointsCommand::ClearPayload { select, endpoint } => {
            update_payload(select, Change::Clear(true), endpoint).await?
        }
        PointsCommand::SetVector {
            collection,
            id,
            vector,
            endpoint,
        } => {
            let values: Vec<Value> = serde_json::from_str(&vector)
                .context("--vector must be a JSON array of numbers")?;
            let vector = vector_from_json("--vector", &values)?;
            let mut client = PointsClient::new(endpoint.channel().await?);
            let resp = client
                .update_vectors(pb::UpdateVectorsRequest {
                    collection,
                    points: vec![pb::PointVector {
                        id: Some(id_arg(&id)),
                        vector,
                    }],
                    request_id: uuid::Uuid::new_v4().to_string(),
                    wait_indexed: false,
                })
                .await
                .map_err(status)?
                .into_inner();
            if resp.affected == 0 {
                bail!("point {id} does not exist");
            }
            print_line(format!("updated the vector of point {id}"))?;
        }
    }
    Ok(())
}

/// Pages through the collection, printing each point, until the end or `limit` points.
async fn scroll(
    collection: String,
    filter: Option<String>,
    with_vector: bool,
    limit: Option<u64>,
    cursor: Option<String>,
    consistency: ConsistencyArg,
    endpoint: Endpoint,
) -> anyhow::Result<()> {
    const PAGE: u64 = 1000;
    let mut client =
        PointsClient::new(endpoint.channel().await?).max_decoding_message_size(usize::MAX);
    let filter_json = parse_filter(filter)?;
    let mut cursor = cursor.unwrap_or_default();
    let mut left = limit.unwrap_or(u64::MAX);
    while left > 0 {
        let page = client
            .scroll(pb::ScrollRequest {
                collection: collection.clone(),
                limit: Some(left.min(PAGE) as u32),
                cursor: cursor.clone(),
                filter: None,
                filter_json: filter_json.clone(),
                with_payload: true,
                with_vector,
                consistency: consistency.proto(),
            })
            .await
            .map_err(status)?
            .into_inner();
        for p in &page.points {
            print_line(point_json(p)?)?;
        }
        left = left.saturating_sub(page.points.len() as u64);
        if page.next_cursor.is_empty() {
            return Ok(());
        }
        cursor = page.next_cursor;
    }
    if !cursor.is_empty() {
        eprintln!("more points follow; continue with --cursor {cursor}");
    }
    Ok(())
}
