//! `quiver points import`: reads a whole file of points, checks it, then upserts it in batches.
//!
//! Every problem is reported at its place in the file (`points.jsonl:12`, `base.fvecs row 7`),
//! whether the file itself is wrong or the server refused a point. Nothing is sent until the whole
//! file has been read and checked, so a malformed file stores nothing. A failure after that says
//! how many points were stored, and that running the import again is safe: points are upserted by
//! id, so a re-run rewrites the same points. A collection snapshot is restored the same way
//! ([`read_snapshot`], then [`upload`]).

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use quiver_core::snapshot_file::{self, Header};
use quiver_proto::v1 as pb;
use quiver_proto::v1::collections_client::CollectionsClient;
use quiver_proto::v1::points_client::PointsClient;
use quiver_proto::wire::{headers, json_to_struct};
use serde_json::Value;

use super::{print_line, read_fvecs, status, Endpoint};

/// One point and where in the file it came from.
struct FilePoint {
    /// 1-based line (.jsonl) or 0-based row (.fvecs).
    at: usize,
    point: pb::Point,
}

/// A file of points, with how to name a place in it.
pub struct PointsFile<'a> {
    path: &'a Path,
    rows: bool,
    points: Vec<FilePoint>,
}

impl PointsFile<'_> {
    fn place(&self, at: usize) -> String {
        match self.rows {
            true => format!("{} row {at}", self.path.display()),
            false => format!("{}:{at}", self.path.display()),
        }
    }
}

/// Keys a JSON line may have.
const KEYS: [&str; 3] = ["id", "vector", "payload"];

pub async fn import(
    collection: String,
    path: &Path,
    batch_size: usize,
    parallel: usize,
    wait: bool,
    endpoint: Endpoint,
) -> anyhow::Result<()> {
    if batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if parallel == 0 {
        bail!("--parallel must be at least 1");
    }
    // (a line may hold the collection's text fields beside id, vector and payload)
    let mut collections = CollectionsClient::new(endpoint.channel().await?);
    let get = pb::GetCollectionRequest {
        name: collection.clone(),
    };
    let info = collections.get(get).await.map_err(status)?.into_inner();
    let mut fields: Vec<String> = info.text_fields.into_iter().map(|f| f.name).collect();
    fields.extend((!info.embed.is_empty()).then_some(info.embed));
    let file = read_points(path, &fields)?;
    upload(
        collection.clone(),
        &file,
        batch_size,
        parallel,
        endpoint.clone(),
    )
    .await?;
    if wait {
        wait_embedded(&collection, &endpoint).await?;
    }
    Ok(())
}

/// How long embedding may make no progress while it reports an error before a wait gives up.
const EMBED_STALL: std::time::Duration = std::time::Duration::from_secs(60);

/// Waits, with a progress bar, until no point of `collection` waits for the server to embed
/// its text and every text written is searchable.
async fn wait_embedded(collection: &str, endpoint: &Endpoint) -> anyhow::Result<()> {
    let mut client = CollectionsClient::new(endpoint.channel().await?);
    let get = pb::GetCollectionRequest {
        name: collection.to_owned(),
    };
    let mut info = client.get(get.clone()).await.map_err(status)?.into_inner();
    let total = info.embedding.as_ref().map_or(0, |e| e.pending);
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("embedding {bar:40} {pos}/{len} points ({per_sec}, {eta})")
            .expect("a valid template"),
    );
    let (mut pending, mut progressed) = (total, Instant::now());
    loop {
        let embedding = info.embedding.clone().unwrap_or_default();
        bar.set_position(total.saturating_sub(embedding.pending));
        if embedding.pending == 0 && !info.text_pending {
            bar.finish_and_clear();
            if info.embedding.is_some() {
                print_line(format!(
                    "embedded: {total} points waited for their vectors, none waits now ({} \
                     failed)",
                    embedding.failed
                ))?;
            }
            return Ok(());
        }
        if embedding.pending < pending {
            (pending, progressed) = (embedding.pending, Instant::now());
        } else if progressed.elapsed() > EMBED_STALL && !embedding.last_error.is_empty() {
            bar.abandon();
            bail!(
                "embedding makes no progress: {}; {} points still wait (the stored points keep \
                 waiting and are embedded once it works)",
                embedding.last_error,
                embedding.pending
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        info = client.get(get.clone()).await.map_err(status)?.into_inner();
    }
}

/// Reads a collection snapshot file: its header, and its points (refused whole if the file was
/// cut short: its end line must be there and count them).
pub fn read_snapshot(path: &Path) -> anyhow::Result<(Header, PointsFile<'_>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(n, line)| (n + 1, line))
        .filter(|(_, line)| !line.trim().is_empty())
        .collect();
    let Some(&(_, first)) = lines.first() else {
        bail!("{}: empty file, not a snapshot", path.display());
    };
    let header = Header::parse(first).map_err(|e| anyhow!("{}:1: {e}", path.display()))?;
    let (last_at, last) = lines[lines.len() - 1];
    let Some(count) = (lines.len() > 1)
        .then(|| snapshot_file::parse_end(last))
        .flatten()
    else {
        bail!(
            "{}: the snapshot is incomplete (no end line after line {last_at}); nothing was \
             restored",
            path.display()
        );
    };
    lines.truncate(lines.len() - 1);
    let points = points_from_lines(path, lines.into_iter().skip(1), &[])?;
    if points.len() as u64 != count {
        bail!(
            "{}: the end line counts {count} points but the file holds {}; nothing was restored",
            path.display(),
            points.len()
        );
    }
    Ok((
        header,
        PointsFile {
            path,
            rows: false,
            points,
        },
    ))
}

/// Batches an import keeps in flight unless told otherwise: a replicated cluster commits the
/// batches that arrive together in one round of its log, so a client that waits for each
/// batch before sending the next leaves most of that round idle.
pub const DEFAULT_PARALLEL: usize = 4;

/// Upserts the points of `file` into `collection`, `batch_size` at a time and up to `parallel`
/// batches in flight, with a progress bar. Batches are acknowledged in file order, so on a
/// failure every batch before the failing one is known stored. (A file names each id once, so
/// batches sent together cannot race on a point.)
pub async fn upload(
    collection: String,
    file: &PointsFile<'_>,
    batch_size: usize,
    parallel: usize,
    endpoint: Endpoint,
) -> anyhow::Result<()> {
    if batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if parallel == 0 {
        bail!("--parallel must be at least 1");
    }
    let client = PointsClient::new(endpoint.channel().await?).max_encoding_message_size(usize::MAX);
    let bar = ProgressBar::new(file.points.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} points ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let mut stored = 0usize;
    let mut batches = file.points.chunks(batch_size);
    let mut in_flight = VecDeque::new();
    loop {
        while in_flight.len() < parallel {
            let Some(batch) = batches.next() else { break };
            let request = pb::UpsertRequest {
                collection: collection.clone(),
                points: batch.iter().map(|p| p.point.clone()).collect(),
                // A retry of the same batch (by the router, after a lost answer) is applied once.
                request_id: uuid::Uuid::new_v4().to_string(),
                wait_indexed: false,
            };
            let mut client = client.clone();
            let sent = tokio::spawn(async move { client.upsert(request).await.map(drop) });
            in_flight.push_back((batch, sent));
        }
        let Some((batch, sent)) = in_flight.pop_front() else {
            break;
        };
        let outcome = sent.await.unwrap_or_else(|e| {
            Err(tonic::Status::unknown(format!(
                "the upsert task ended: {e}"
            )))
        });
        if let Err(e) = outcome {
            bar.finish_and_clear();
            for (_, later) in &in_flight {
                later.abort();
            }
            let outcome_unknown =
                quiver_proto::wire::classify(&e) == quiver_proto::wire::Failure::Unknown;
            let place = failed_point(&e)
                .and_then(|i| batch.get(i))
                .map(|p| file.place(p.at))
                .unwrap_or_else(|| {
                    format!("{}..{}", file.place(batch[0].at), batch[batch.len() - 1].at)
                });
            // the first batch whose fate is not known: this one, or the first sent after it
            let unsure = match outcome_unknown {
                true => Some(batch),
                false => in_flight.front().map(|(later, _)| *later),
            };
            let batch_fate = match unsure {
                Some(from) => format!(
                    "the batches from {} on may or may not have been stored",
                    file.place(from[0].at)
                ),
                None => "the rest were not".to_string(),
            };
            return Err(status(e).context(format!(
                "{place}\n{stored} of {} points were stored before the failure; {batch_fate}. \
                 Running the import again is safe: points are upserted by id",
                file.points.len()
            )));
        }
        stored += batch.len();
        bar.set_position(stored as u64);
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    print_line(format!(
        "imported {stored} points in {secs:.2} s ({:.0} points/s)",
        stored as f64 / secs.max(1e-9)
    ))?;
    Ok(())
}

/// The index within its batch of the point a refusal names (`points[3].vector` -> 3).
fn failed_point(e: &tonic::Status) -> Option<usize> {
    let field = e.metadata().get(headers::FIELD)?.to_str().ok()?;
    let rest = field.strip_prefix("points[")?;
    rest[..rest.find(']')?].parse().ok()
}

/// Reads and checks an import file: .fvecs (ids = row numbers) or .jsonl (whose lines may hold
/// payload `fields` beside id, vector and payload).
fn read_points<'a>(path: &'a Path, fields: &[String]) -> anyhow::Result<PointsFile<'a>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let points = match ext {
        "fvecs" => read_fvecs(path)?
            .into_iter()
            .enumerate()
            .map(|(row, vector)| FilePoint {
                at: row,
                point: pb::Point {
                    id: Some(pb::PointId {
                        kind: Some(pb::point_id::Kind::Num(row as u64)),
                    }),
                    vector,
                    payload: None,
                },
            })
            .collect(),
        "jsonl" | "ndjson" => read_jsonl(path, fields)?,
        _ => bail!(
            "{}: unknown file type (expected .jsonl or .fvecs)",
            path.display()
        ),
    };
    Ok(PointsFile {
        path,
        rows: ext == "fvecs",
        points,
    })
}

fn read_jsonl(path: &Path, fields: &[String]) -> anyhow::Result<Vec<FilePoint>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        lines.push((n + 1, line));
    }
    let lines = lines.iter().map(|(at, line)| (*at, line.as_str()));
    points_from_lines(path, lines, fields)
}

/// Points from numbered JSON lines of `path` (blank lines skipped), each id once; a line may
/// hold payload `fields` beside id, vector and payload.
fn points_from_lines<'a>(
    path: &Path,
    lines: impl Iterator<Item = (usize, &'a str)>,
    fields: &[String],
) -> anyhow::Result<Vec<FilePoint>> {
    let mut points = Vec::new();
    // Each id once per file: a repeat is refused whether or not it falls in the same batch.
    let mut first_line: HashMap<String, usize> = HashMap::new();
    for (at, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let place = || format!("{}:{at}", path.display());
        let point = parse_line(line, fields).with_context(place)?;
        let key = id_key(point.id.as_ref());
        if let Some(first) = first_line.insert(key.clone(), at) {
            bail!(
                "{}: id {key} was already given on line {first} (each id may appear once in a file)",
                place()
            );
        }
        points.push(FilePoint { at, point });
    }
    Ok(points)
}

fn id_key(id: Option<&pb::PointId>) -> String {
    match id.and_then(|i| i.kind.as_ref()) {
        Some(pb::point_id::Kind::Num(n)) => n.to_string(),
        Some(pb::point_id::Kind::Uuid(u)) => u.to_lowercase(),
        None => String::new(),
    }
}

/// One JSON line: `{"id": 1 | "uuid", "vector": [...], "payload": {...}}`, and any of the
/// payload `fields` (the collection's text fields: `{"id": 1, "text": "..."}`; without a vector
/// the collection must embed one, `--embed`). Any other key is refused (a misspelt one).
fn parse_line(line: &str, fields: &[String]) -> anyhow::Result<pb::Point> {
    let v: Value = serde_json::from_str(line)?;
    let Value::Object(object) = v else {
        bail!("expected a JSON object with id, vector and payload");
    };
    let known = |k: &String| KEYS.contains(&k.as_str()) || fields.contains(k);
    if let Some(unknown) = object.keys().find(|k| !known(k)) {
        match fields.is_empty() {
            true => bail!("unknown key `{unknown}` (a point has id, vector and payload)"),
            false => bail!(
                "unknown key `{unknown}` (a point has id, vector, payload and the collection's \
                 text fields: {})",
                fields.join(", ")
            ),
        }
    }
    let id = match object.get("id") {
        Some(Value::Number(x)) => x.as_u64().map(pb::point_id::Kind::Num),
        Some(Value::String(s)) => Some(pb::point_id::Kind::Uuid(s.clone())),
        _ => None,
    }
    .ok_or_else(|| anyhow!("`id` must be an unsigned integer or a UUID"))?;
    let vector = match object.get("vector") {
        Some(Value::Array(values)) => super::vector_from_json("vector", values)?,
        None => Vec::new(),
        Some(_) => bail!("`vector` must be an array of numbers"),
    };
    let mut payload = match object.get("payload") {
        Some(Value::Object(m)) => m.clone(),
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(_) => bail!("`payload` must be an object"),
    };
    for (key, value) in object.iter().filter(|(k, _)| fields.contains(k)) {
        if payload.insert(key.clone(), value.clone()).is_some() {
            bail!("`{key}` is given twice: beside the payload and in it");
        }
    }
    let payload = (!payload.is_empty()).then(|| json_to_struct(&payload));
    Ok(pb::Point {
        id: Some(pb::PointId { kind: Some(id) }),
        vector,
        payload,
    })
}
