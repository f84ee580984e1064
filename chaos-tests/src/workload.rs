//! Clients that record what they did, through the router.
//!
//! - Register clients: each operation is a put (upsert point `key` with payload `{"v": n}`, `n`
//!   unique) or a linearizable get of point `key`, recorded with its invoke and complete times
//!   for the linearizability checker. A put that failed with INVALID_ARGUMENT certainly did not
//!   happen; any other failure may or may not have (`Unknown`).
//! - Ingest clients: batches of fresh point ids; every acknowledged id must survive.
//!
//! Every write is also kept with its times and the shard it went to, to measure writes/s and
//! failover times.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quiver_core::placement::shard_index;
use quiver_core::point::PointId;
use quiver_proto::v1 as pb;
use quiver_proto::v1::points_client::PointsClient;
use tokio::task::JoinHandle;

use crate::cluster::channel;
use crate::history::{Op, Outcome, Recorder};

/// The register workload's collection.
pub const REGISTERS: &str = "registers";
/// The ingest workload's collection.
pub const INGEST: &str = "ingest";
/// How long one operation may take before it counts as unknown.
const OP_TIMEOUT: Duration = Duration::from_secs(5);
const INGEST_BATCH: u64 = 20;

/// One write: when, whether it was acknowledged, and (for a single-key write) its shard.
#[derive(Debug, Clone, Copy)]
pub struct WriteRecord {
    pub invoked: u128,
    pub completed: u128,
    pub ok: bool,
    pub points: u64,
    pub shard: Option<usize>,
}

/// Running clients.
pub struct Workload {
    pub recorder: Recorder,
    pub writes: Arc<Mutex<Vec<WriteRecord>>>,
    pub acked: Arc<Mutex<BTreeSet<u64>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

/// How the clients address the cluster.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The router's `ip:port`.
    pub router: String,
    pub register_clients: usize,
    pub ingest_clients: usize,
    /// Register keys are 0..keys.
    pub keys: u64,
    /// Shards of the register collection (to know which shard a key lives on).
    pub shards: usize,
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn point(id: u64, v: i64) -> pb::Point {
    let payload = serde_json::json!({ "v": v });
    pb::Point {
        id: Some(pb::PointId {
            kind: Some(pb::point_id::Kind::Num(id)),
        }),
        vector: vec![(v % 1000) as f32, 1.0],
        payload: Some(quiver_core::convert::json_to_struct(
            payload.as_object().expect("object"),
        )),
    }
}

/// The `v` of a point read back.
fn value(p: &pb::Point) -> Option<i64> {
    match p.payload.as_ref()?.fields.get("v")?.kind {
        Some(prost_types::value::Kind::NumberValue(n)) => Some(n as i64),
        _ => None,
    }
}

impl Workload {
    /// Starts the clients; they run until [`Workload::stop`].
    pub fn start(setup: Setup) -> Self {
        let recorder = Recorder::new();
        let writes = Arc::new(Mutex::new(Vec::new()));
        let acked = Arc::new(Mutex::new(BTreeSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for client in 0..setup.register_clients {
            let (setup, recorder, writes, stop) = (
                setup.clone(),
                recorder.clone(),
                writes.clone(),
                stop.clone(),
            );
            tasks.push(tokio::spawn(async move {
                register_client(client, setup, recorder, writes, stop).await
            }));
        }
        for client in 0..setup.ingest_clients {
            let (setup, recorder, writes, acked, stop) = (
                setup.clone(),
                recorder.clone(),
                writes.clone(),
                acked.clone(),
                stop.clone(),
            );
            tasks.push(tokio::spawn(async move {
                ingest_client(client, setup, recorder, writes, acked, stop).await
            }));
        }
        Self {
            recorder,
            writes,
            acked,
            stop,
            tasks,
        }
    }

    /// Stops the clients and waits for their last operations.
    pub async fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }

    /// Every write so far.
    pub fn writes(&self) -> Vec<WriteRecord> {
        self.writes.lock().expect("writes").clone()
    }
}

async fn register_client(
    client: usize,
    setup: Setup,
    recorder: Recorder,
    writes: Arc<Mutex<Vec<WriteRecord>>>,
    stop: Arc<AtomicBool>,
) {
    let mut points = PointsClient::new(channel(&setup.router));
    let mut rng = 0x2545_F491_4F6C_DD1D ^ (client as u64 + 1);
    let mut seq = 0i64;
    while !stop.load(Ordering::SeqCst) {
        let key = xorshift(&mut rng) % setup.keys;
        if xorshift(&mut rng).is_multiple_of(2) {
            seq += 1;
            let v = (client as i64 + 1) * 1_000_000 + seq;
            let ticket = recorder.invoke(client, key, Op::Put(v));
            let invoked = recorder.now();
            let request = pb::UpsertRequest {
                collection: REGISTERS.into(),
                points: vec![point(key, v)],
                request_id: format!("register-{client}-{seq}"),
                wait_indexed: false,
            };
            let result = tokio::time::timeout(OP_TIMEOUT, points.upsert(request)).await;
            let outcome = match &result {
                Ok(Ok(_)) => Outcome::Ok,
                Ok(Err(s)) if s.code() == tonic::Code::InvalidArgument => Outcome::Failed,
                _ => Outcome::Unknown,
            };
            recorder.complete(ticket, outcome);
            writes.lock().expect("writes").push(WriteRecord {
                invoked,
                completed: recorder.now(),
                ok: outcome == Outcome::Ok,
                points: 1,
                shard: Some(shard_index(&PointId::Num(key), setup.shards)),
            });
        } else {
            let ticket = recorder.invoke(client, key, Op::Get);
            let request = pb::GetPointsRequest {
                collection: REGISTERS.into(),
                ids: vec![pb::PointId {
                    kind: Some(pb::point_id::Kind::Num(key)),
                }],
                with_payload: true,
                consistency: pb::ReadConsistency::Linearizable as i32,
                ..Default::default()
            };
            let outcome = match tokio::time::timeout(OP_TIMEOUT, points.get(request)).await {
                Ok(Ok(answer)) => {
                    Outcome::Value(answer.into_inner().points.first().and_then(value))
                }
                _ => Outcome::Unknown,
            };
            recorder.complete(ticket, outcome);
        }
    }
}

async fn ingest_client(
    client: usize,
    setup: Setup,
    recorder: Recorder,
    writes: Arc<Mutex<Vec<WriteRecord>>>,
    acked: Arc<Mutex<BTreeSet<u64>>>,
    stop: Arc<AtomicBool>,
) {
    let mut points = PointsClient::new(channel(&setup.router));
    let base = (client as u64 + 1) * 1_000_000_000;
    let mut batch = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let ids: Vec<u64> = (0..INGEST_BATCH)
            .map(|k| base + batch * INGEST_BATCH + k)
            .collect();
        let request = pb::UpsertRequest {
            collection: INGEST.into(),
            points: ids.iter().map(|id| point(*id, *id as i64)).collect(),
            request_id: format!("ingest-{client}-{batch}"),
            wait_indexed: false,
        };
        let invoked = recorder.now();
        let ok = matches!(
            tokio::time::timeout(OP_TIMEOUT, points.upsert(request)).await,
            Ok(Ok(_))
        );
        if ok {
            acked.lock().expect("acked").extend(&ids);
        }
        writes.lock().expect("writes").push(WriteRecord {
            invoked,
            completed: recorder.now(),
            ok,
            points: INGEST_BATCH,
            shard: None,
        });
        batch += 1;
    }
}

/// Reads every id in `ids` from the ingest collection (linearizable, retrying while the cluster
/// settles); returns the ids that are missing.
pub async fn missing(router: &str, ids: &BTreeSet<u64>) -> Vec<u64> {
    let mut points = PointsClient::new(channel(router)).max_decoding_message_size(usize::MAX);
    let all: Vec<u64> = ids.iter().copied().collect();
    let mut missing = Vec::new();
    for chunk in all.chunks(1000) {
        let request = pb::GetPointsRequest {
            collection: INGEST.into(),
            ids: chunk
                .iter()
                .map(|id| pb::PointId {
                    kind: Some(pb::point_id::Kind::Num(*id)),
                })
                .collect(),
            consistency: pb::ReadConsistency::Linearizable as i32,
            ..Default::default()
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let found = loop {
            match points.get(request.clone()).await {
                Ok(answer) => break answer.into_inner().points,
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "reads still fail after healing: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let present: BTreeSet<u64> = found
            .iter()
            .filter_map(|p| match p.id.as_ref()?.kind {
                Some(pb::point_id::Kind::Num(n)) => Some(n),
                _ => None,
            })
            .collect();
        missing.extend(chunk.iter().filter(|id| !present.contains(id)));
    }
    missing
}

/// For each fault at time `at` on shard `shard` (recorder clock): milliseconds until the first
/// acknowledged write to that shard that was sent after it.
pub fn failover_ms(writes: &[WriteRecord], faults: &[(u128, usize)]) -> Vec<f64> {
    faults
        .iter()
        .filter_map(|(at, shard)| {
            writes
                .iter()
                .filter(|w| w.ok && w.shard == Some(*shard) && w.invoked >= *at)
                .map(|w| w.completed)
                .min()
                .map(|done| (done - at) as f64 / 1e6)
        })
        .collect()
}

/// Acknowledged writes and points per second between `from` and `to` (recorder clock).
pub fn throughput(writes: &[WriteRecord], from: u128, to: u128) -> (f64, f64) {
    let seconds = (to.saturating_sub(from)) as f64 / 1e9;
    let done: Vec<&WriteRecord> = writes
        .iter()
        .filter(|w| w.ok && w.completed >= from && w.completed <= to)
        .collect();
    let points: u64 = done.iter().map(|w| w.points).sum();
    (done.len() as f64 / seconds, points as f64 / seconds)
}
