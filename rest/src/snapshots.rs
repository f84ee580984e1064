//! Collection snapshots over REST, as Qdrant's routes: create, list, download and delete
//! (`/collections/{name}/snapshots[/{snapshot}]`). The files are quiver's own (see
//! `quiver_core::snapshot_file`), not Qdrant's archives, so Qdrant's recover routes are not
//! served: a quiver snapshot is restored with `quiver collection snapshot restore FILE`.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use quiver_proto::v1 as pb;
use serde_json::{json, Value};
use tonic::Request;

use crate::reply::{ok, ApiError, Reply};
use crate::Services;

/// Qdrant's description of a snapshot (`creation_time` as `YYYY-MM-DDTHH:MM:SS`, UTC).
fn description(s: &pb::SnapshotInfo) -> Value {
    let creation_time = i64::try_from(s.created_at)
        .ok()
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S").to_string());
    json!({
        "name": s.name,
        "creation_time": creation_time,
        "size": s.size_bytes,
        "checksum": null,
    })
}

/// `POST /collections/{name}/snapshots`.
pub async fn create(State(api): State<Services>, Path(name): Path<String>) -> Reply {
    let started = Instant::now();
    let request = pb::CreateSnapshotRequest { collection: name };
    let info = api
        .snapshots
        .create(Request::new(request))
        .await?
        .into_inner();
    ok(description(&info), started)
}

/// `GET /collections/{name}/snapshots`.
pub async fn list(State(api): State<Services>, Path(name): Path<String>) -> Reply {
    let started = Instant::now();
    let request = pb::ListSnapshotsRequest { collection: name };
    let list = api
        .snapshots
        .list(Request::new(request))
        .await?
        .into_inner();
    let snapshots: Vec<Value> = list.snapshots.iter().map(description).collect();
    ok(Value::Array(snapshots), started)
}

/// `DELETE /collections/{name}/snapshots/{snapshot}`.
pub async fn delete(
    State(api): State<Services>,
    Path((name, snapshot)): Path<(String, String)>,
) -> Reply {
    let started = Instant::now();
    let request = pb::DeleteSnapshotRequest {
        collection: name,
        name: snapshot,
    };
    api.snapshots.delete(Request::new(request)).await?;
    ok(json!(true), started)
}

/// `GET /collections/{name}/snapshots/{snapshot}`: the file.
pub async fn download(
    State(api): State<Services>,
    Path((name, snapshot)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let request = pb::DownloadSnapshotRequest {
        collection: name,
        name: snapshot.clone(),
    };
    let chunks = api
        .snapshots
        .download(Request::new(request))
        .await?
        .into_inner()
        .map(|chunk| chunk.map(|c| Bytes::from(c.data)));
    let disposition = format!("attachment; filename=\"{snapshot}\"");
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}
