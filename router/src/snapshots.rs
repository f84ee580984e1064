//! `Snapshots`, for clients: collection snapshots as files this front keeps.
//!
//! A snapshot of collection `c` is `<dir>/c/<name>.snapshot` (see
//! [`quiver_core::snapshot_file`]), written to a `.tmp` file first and renamed once complete, so
//! a listed snapshot is always whole. A front beside a node keeps them under the node's data
//! directory; a standalone router under `--snapshot-dir`, or none.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use quiver_core::snapshot_file::{self, Header};
use quiver_core::{convert, Error};
use quiver_proto::v1 as pb;
use quiver_proto::v1::snapshots_server::Snapshots;
use tonic::{Request, Response, Status};
use tracing::info;

use crate::coordinator::Coordinator;

/// What a snapshot file's name ends with.
const EXTENSION: &str = ".snapshot";
/// Bytes per downloaded chunk.
const CHUNK: usize = 1 << 20;

/// `Snapshots`, for clients.
pub struct SnapshotsFront {
    pub(crate) coordinator: Arc<Coordinator>,
    /// Where snapshots are kept (None: this front keeps none).
    pub(crate) dir: Option<PathBuf>,
}

fn io(path: &Path, e: std::io::Error) -> Status {
    Error::Storage(format!("{}: {e}", path.display())).into()
}

/// A snapshot's file name, checked: `<something>.snapshot`, one path component.
#[allow(clippy::result_large_err)] // tonic's Status, as every handler returns
fn snapshot_name(name: &str) -> Result<&str, Status> {
    let valid = name.len() > EXTENSION.len()
        && name.len() <= 255
        && name.ends_with(EXTENSION)
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0']);
    if valid {
        Ok(name)
    } else {
        Err(Error::invalid(
            "name",
            format!("`{name}` is not a snapshot name (one file name ending in {EXTENSION})"),
        )
        .into())
    }
}

/// Reads what a listing shows of the snapshot at `path`: its header's time and its end line's
/// count (None if the file is not a complete snapshot).
fn describe(path: &Path, collection: &str) -> Option<pb::SnapshotInfo> {
    let mut file = std::fs::File::open(path).ok()?;
    let size_bytes = file.metadata().ok()?.len();
    let mut first = String::new();
    BufReader::new(&mut file).read_line(&mut first).ok()?;
    let header = Header::parse(first.trim_end()).ok()?;
    // the end line is short: it is in the last few hundred bytes
    let tail_len = size_bytes.min(256);
    file.seek(SeekFrom::Start(size_bytes - tail_len)).ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    // (the cut may fall inside a character of the last point's payload: only the end line,
    // after the last line break but one, is decoded)
    let tail = tail.strip_suffix(b"\n").unwrap_or(&tail);
    let last = tail.rsplit(|b| *b == b'\n').next()?;
    let points = snapshot_file::parse_end(std::str::from_utf8(last).ok()?)?;
    Some(pb::SnapshotInfo {
        name: path.file_name()?.to_string_lossy().into_owned(),
        collection: collection.to_string(),
        size_bytes,
        created_at: header.created_at,
        points,
    })
}

impl SnapshotsFront {
    #[allow(clippy::result_large_err)]
    fn dir(&self) -> Result<&Path, Status> {
        self.dir.as_deref().ok_or_else(|| {
            Status::failed_precondition(
                "this router keeps no snapshots: start it with --snapshot-dir DIR, or ask a node",
            )
        })
    }

    /// The directory of `collection`'s snapshots: by its own name when `collection` is an alias
    /// of a collection this front knows, else as given (snapshots outlive their collection).
    #[allow(clippy::result_large_err)]
    fn collection_dir(&self, collection: &str) -> Result<(String, PathBuf), Status> {
        let dir = self.dir()?;
        let name = convert::collection_name("collection", collection)?;
        let name = match self.coordinator.directory().placement(&name) {
            Ok(placement) => placement.spec.name,
            Err(_) => name,
        };
        let path = dir.join(&name);
        Ok((name, path))
    }

    /// The path of snapshot `name` of `collection`, which must exist.
    #[allow(clippy::result_large_err)]
    fn existing(&self, collection: &str, name: &str) -> Result<PathBuf, Status> {
        let (collection, dir) = self.collection_dir(collection)?;
        let path = dir.join(snapshot_name(name)?);
        if !path.is_file() {
            return Err(
                Error::NotFound(format!("snapshot `{name}` of collection `{collection}`")).into(),
            );
        }
        Ok(path)
    }
}

type ChunkStream = quiver_rest::SnapshotChunks;

/// Writes the snapshot of the collection `placement` describes to `tmp`, then renames it to
/// `path`; returns its point count. On failure nothing is left at either path.
async fn write_snapshot(
    coordinator: Arc<Coordinator>,
    placement: quiver_core::placement::Placement,
    created_at: u64,
    tmp: PathBuf,
    path: PathBuf,
) -> Result<u64, Status> {
    let written = async {
        let file = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
        let mut out = std::io::BufWriter::with_capacity(CHUNK, file);
        let header = Header::new(
            placement.spec.clone(),
            placement.shards.len() as u32,
            placement.replication_factor,
            created_at,
        );
        writeln!(out, "{}", header.line()?).map_err(|e| io(&tmp, e))?;
        let (_, points) = coordinator
            .export(&placement.spec.name, |point| {
                let line = snapshot_file::point_line(point)?;
                writeln!(out, "{line}").map_err(|e| io(&tmp, e))
            })
            .await?;
        writeln!(out, "{}", snapshot_file::end_line(points)).map_err(|e| io(&tmp, e))?;
        let file = out.into_inner().map_err(|e| io(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
        Ok::<u64, Status>(points)
    }
    .await;
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[tonic::async_trait]
impl Snapshots for SnapshotsFront {
    async fn create(
        &self,
        request: Request<pb::CreateSnapshotRequest>,
    ) -> Result<Response<pb::SnapshotInfo>, Status> {
        let dir = self.dir()?;
        let requested = request.into_inner().collection;
        let placement = self.coordinator.placement("collection", &requested).await?;
        let collection = placement.spec.name.clone();
        let created_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let collection_dir = dir.join(&collection);
        std::fs::create_dir_all(&collection_dir).map_err(|e| io(&collection_dir, e))?;
        let unique = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let name = format!("{collection}-{created_at}-{unique}{EXTENSION}");
        let path = collection_dir.join(&name);
        let tmp = collection_dir.join(format!(".{name}.tmp"));
        let started = std::time::Instant::now();
        // A task of its own: a client that gives up meanwhile leaves neither the shards' writes
        // held nor a partial file behind.
        let written = tokio::spawn(write_snapshot(
            self.coordinator.clone(),
            placement,
            created_at,
            tmp,
            path.clone(),
        ))
        .await
        .map_err(|e| Error::Internal(format!("the snapshot task failed: {e}")))?;
        let points = written?;
        let size_bytes = std::fs::metadata(&path).map_err(|e| io(&path, e))?.len();
        info!(
            collection,
            snapshot = name,
            points,
            size_bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot created"
        );
        Ok(Response::new(pb::SnapshotInfo {
            name,
            collection,
            size_bytes,
            created_at,
            points,
        }))
    }

    async fn list(
        &self,
        request: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        let (collection, dir) = self.collection_dir(&request.into_inner().collection)?;
        let mut snapshots: Vec<pb::SnapshotInfo> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| snapshot_name(n).is_ok())
                })
                .filter_map(|p| describe(&p, &collection))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(&dir, e)),
        };
        snapshots.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
        Ok(Response::new(pb::ListSnapshotsResponse { snapshots }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteSnapshotRequest>,
    ) -> Result<Response<pb::DeleteSnapshotResponse>, Status> {
        let req = request.into_inner();
        let path = self.existing(&req.collection, &req.name)?;
        std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
        Ok(Response::new(pb::DeleteSnapshotResponse {}))
    }

    type DownloadStream = ChunkStream;

    async fn download(
        &self,
        request: Request<pb::DownloadSnapshotRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let req = request.into_inner();
        let path = self.existing(&req.collection, &req.name)?;
        let file = std::fs::File::open(&path).map_err(|e| io(&path, e))?;
        let chunks = futures::stream::unfold(Some((file, path)), |state| async move {
            let (mut file, path) = state?;
            let mut data = vec![0u8; CHUNK];
            match file.read(&mut data) {
                Ok(0) => None,
                Ok(n) => {
                    data.truncate(n);
                    Some((Ok(pb::SnapshotChunk { data }), Some((file, path))))
                }
                Err(e) => Some((Err(io(&path, e)), None)),
            }
        });
        Ok(Response::new(Box::pin(chunks)))
    }
}
