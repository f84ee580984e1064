//! The coordinator: serves a client's request over a sharded collection.
//!
//! A write is validated whole first (so bad input changes nothing on any shard), split by the
//! shard each point id hashes to, and each part sent to that shard's leader with an idempotency
//! key (`<request_id>/<shard>`), so a retried part is applied once. Reads fan out to every shard
//! in parallel (to the leader, or for `any` consistency to the nearest replica) and the answers
//! are merged: the best `top_k` for a search, id order for a scroll.
//!
//! Nodes and routers both coordinate; they differ in their [`Directory`]: a node reads the shard
//! map its meta replica applied and calls its own replicas directly, a router caches the map it
//! fetched from the cluster. A request for a shard is sent with the `quiver-shard-group` header;
//! the node answering serves it from its replica of that group or refuses it with the leader's
//! address ("not the leader") or as a stale shard map, which the coordinator follows. A replica
//! that cannot serve a part (no quorum, no answer within a few seconds) is passed over for
//! another until a deadline; the idempotency key makes that safe for writes.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use parking_lot::Mutex;
use quiver_config::LimitsConfig;
use quiver_index::distance::Metric;
use quiver_proto::v1 as pb;
use quiver_proto::v1::collections_client::CollectionsClient;
use quiver_proto::v1::points_client::PointsClient;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tracing::warn;

use crate::error::NodeError;
use crate::group::{encode_cursor, Group};
use crate::placement::{shard_index, Placement};
use crate::point::PointId;
use crate::raft::network::Peers;
use crate::raft::NodeId;
use crate::service::{convert, shard};

/// The header naming the shard group a request is for.
pub const SHARD_HEADER: &str = "quiver-shard-group";

/// How long one attempt at a remote replica may take before another replica is tried. A peer
/// that stops answering altogether is found sooner, by the channel's keep-alive pings.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY_PAUSE: Duration = Duration::from_millis(100);
const DEFAULT_TOP_K: usize = 10;
const DEFAULT_SCROLL_LIMIT: usize = 100;

/// Where collections' shards are and how to reach them.
pub trait Directory: Send + Sync {
    /// The placement of collection `name` as last known.
    fn placement(&self, name: &str) -> Result<Placement, NodeError>;
    /// The address of node `node`.
    fn address(&self, node: NodeId) -> Option<String>;
    /// This process's own replica of `group`, its node id and address, if it has one.
    fn local(&self, group: u64) -> Option<(Arc<Group>, NodeId, String)>;
    /// Learns the shard map again (after a stale answer).
    fn refresh(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
    /// The cluster's request limits, when they are learned with the shard map (a router);
    /// None: the coordinator's own.
    fn limits(&self) -> Option<LimitsConfig> {
        None
    }
}

/// Where a shard request goes.
pub enum Target {
    Local(Arc<Group>),
    Remote(Channel),
}

/// Which replica of a shard may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Leader,
    /// Any replica, this process's own first.
    Nearest,
}

/// What a failed attempt means for the request.
#[derive(Debug, PartialEq)]
enum Failure {
    /// Refused by a follower that named the leader: not applied, send it there.
    Redirect(String),
    /// The replica could not serve it now (not the leader, no replica there, no quorum, no
    /// answer in time): try another replica. Safe for writes too, because every write a
    /// coordinator sends carries an idempotency key: if the failed attempt was applied after
    /// all, the retry is recognised and not applied again.
    Retry,
    /// The request itself was refused (bad input, unknown collection, ...).
    Final,
}

fn classify(status: &Status) -> Failure {
    if let Some(addr) = status
        .metadata()
        .get("quiver-leader-address")
        .and_then(|v| v.to_str().ok())
    {
        return Failure::Redirect(addr.to_string());
    }
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            Failure::Retry
        }
        _ => Failure::Final,
    }
}

/// Splits, sends and merges requests over sharded collections.
pub struct Coordinator {
    directory: Arc<dyn Directory>,
    limits: LimitsConfig,
    /// How long one request may spend on a shard, following leader changes and moved replicas,
    /// before it fails as unavailable.
    timeout: Duration,
    channels: Peers,
    /// Last known leader address per shard group.
    leaders: Mutex<HashMap<u64, String>>,
}

/// Sends `$part` (a `Points` request) to shard `$shard` of `$placement` by `$route`: to this
/// process's own replica directly, to another node's over gRPC, following redirects.
macro_rules! points_on_shard {
    ($self:ident, $placement:expr, $shard:expr, $route:expr, $part:expr, $op:ident) => {{
        let limits = &$self.limits;
        let part = $part;
        $self.on_shard($placement, $shard, $route, move |group, target| {
            let part = part.clone();
            async move {
                match target {
                    Target::Local(g) => Ok(shard::$op(&g, limits, part).await?),
                    Target::Remote(c) => points_client(c)
                        .$op(for_group(group, part))
                        .await
                        .map(|r| r.into_inner()),
                }
            }
        })
    }};
}

/// A request for one shard, with the header naming its group.
fn for_group<T>(group: u64, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(SHARD_HEADER, MetadataValue::from(group));
    request
}

fn points_client(channel: Channel) -> PointsClient<Channel> {
    PointsClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

fn route(consistency: i32) -> Route {
    if consistency == pb::ReadConsistency::Any as i32 {
        Route::Nearest
    } else {
        Route::Leader
    }
}

/// Merges the answers of a write's parts: the first failure, or the affected counts summed.
#[allow(clippy::result_large_err)] // tonic's Status, which the caller returns as is
fn merge_writes(
    parts: Vec<Result<pb::WriteResponse, Status>>,
) -> Result<pb::WriteResponse, Status> {
    let mut merged = pb::WriteResponse::default();
    for part in parts {
        let part = part?;
        merged.affected += part.affected;
        merged.applied_index = merged.applied_index.max(part.applied_index);
    }
    Ok(merged)
}

impl Coordinator {
    /// A coordinator over `directory`, reaching replicas through `channels`; a request that no
    /// replica of a shard could serve within `timeout` fails with UNAVAILABLE.
    pub fn new(
        directory: Arc<dyn Directory>,
        limits: LimitsConfig,
        channels: Peers,
        timeout: Duration,
    ) -> Self {
        Self {
            directory,
            limits,
            timeout,
            channels,
            leaders: Mutex::default(),
        }
    }

    /// The limits requests are checked against before they are split: the cluster's when the
    /// directory knows them, else this coordinator's own.
    fn limits(&self) -> LimitsConfig {
        self.directory
            .limits()
            .unwrap_or_else(|| self.limits.clone())
    }

    /// The placement of `name`, learning the shard map again (a few times, briefly) if it is
    /// not known: a collection created a moment ago may not have reached this directory yet.
    async fn placement(&self, field: &str, name: &str) -> Result<Placement, Status> {
        let name = convert::collection_name(field, name)?;
        for _ in 0..3 {
            match self.directory.placement(&name) {
                Err(NodeError::NotFound(_)) => {
                    self.directory.refresh().await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return Ok(other?),
            }
        }
        Ok(self.directory.placement(&name)?)
    }

    /// Runs `call` against a replica of shard `shard` of `collection`, following leader
    /// redirects and moved replicas until it succeeds, fails for good, or the coordinator's
    /// timeout passes (then with the last failure, UNAVAILABLE).
    async fn on_shard<T, F, Fut>(
        &self,
        collection: &Placement,
        shard: usize,
        route: Route,
        call: F,
    ) -> Result<T, Status>
    where
        F: Fn(u64, Target) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        #![allow(clippy::result_large_err)] // tonic's Status, which the caller returns as is
        let deadline = tokio::time::Instant::now() + self.timeout;
        let name = &collection.spec.name;
        let mut last = Status::unavailable(format!("shard {shard} of `{name}`: no replica"));
        let mut hint = None;
        loop {
            // The shard map may have moved replicas since; the collection must be the same one
            // the request was split for (not one dropped and re-created meanwhile).
            let placement = self.directory.placement(name)?;
            if placement.id != collection.id {
                return Err(NodeError::Unavailable(format!(
                    "collection `{name}` was dropped or re-created during the request"
                ))
                .into());
            }
            let Some(shard_placement) = placement.shards.get(shard) else {
                return Err(NodeError::NotFound(format!("shard {shard} of `{name}`")).into());
            };
            let group = shard_placement.group;
            let local = self.directory.local(group);
            // Addresses to try, in order; this process's own replica is called directly.
            let mut candidates: Vec<String> = Vec::new();
            match route {
                Route::Leader => {
                    candidates.extend(hint.take());
                    candidates.extend(self.leaders.lock().get(&group).cloned());
                }
                Route::Nearest => candidates.extend(local.as_ref().map(|(_, _, a)| a.clone())),
            }
            for node in &shard_placement.replicas {
                match &local {
                    Some((_, own, address)) if own == node => candidates.push(address.clone()),
                    _ => candidates.extend(self.directory.address(*node)),
                }
            }
            let mut seen = std::collections::HashSet::new();
            candidates.retain(|a| seen.insert(a.clone()));
            let mut redirected = false;
            for address in candidates {
                let target = match &local {
                    Some((replica, _, own)) if *own == address => Target::Local(replica.clone()),
                    _ => match self.channels.channel(&address) {
                        Ok(channel) => Target::Remote(channel),
                        Err(e) => {
                            warn!(address, error = %e, "bad replica address");
                            continue;
                        }
                    },
                };
                let until = deadline.min(tokio::time::Instant::now() + ATTEMPT_TIMEOUT);
                let attempt = tokio::time::timeout_at(until, call(group, target))
                    .await
                    .unwrap_or_else(|_| {
                        Err(Status::unavailable(format!(
                            "shard {shard} of `{name}`: the replica at {address} did not answer \
                             in time"
                        )))
                    });
                match attempt {
                    Ok(answer) => {
                        if route == Route::Leader {
                            self.leaders.lock().insert(group, address);
                        }
                        return Ok(answer);
                    }
                    Err(status) => match classify(&status) {
                        Failure::Final => return Err(status),
                        Failure::Redirect(leader) => {
                            self.leaders.lock().insert(group, leader.clone());
                            hint = Some(leader);
                            redirected = true;
                            last = status;
                            break;
                        }
                        Failure::Retry => {
                            if self.leaders.lock().get(&group) == Some(&address) {
                                self.leaders.lock().remove(&group);
                            }
                            last = status;
                        }
                    },
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::unavailable(format!(
                    "shard {shard} of `{name}`: no replica served the request within {} ms; \
                     last: {}",
                    self.timeout.as_millis(),
                    last.message()
                )));
            }
            if redirected {
                // Two replicas with stale views may name each other: never spin.
                tokio::time::sleep(RETRY_PAUSE / 5).await;
            } else {
                tokio::time::sleep(RETRY_PAUSE).await;
                self.directory.refresh().await;
            }
        }
    }

    pub async fn upsert(&self, req: pb::UpsertRequest) -> Result<pb::WriteResponse, Status> {
        let placement = self.placement("collection", &req.collection).await?;
        // Validate the whole batch before any shard sees a part of it.
        let points = convert::upsert_points(&req.points, &placement.spec, &self.limits())?;
        let count = placement.shards.len();
        let mut parts: BTreeMap<usize, Vec<pb::Point>> = BTreeMap::new();
        for (checked, point) in points.iter().zip(req.points) {
            parts
                .entry(shard_index(&checked.id, count))
                .or_default()
                .push(point);
        }
        let request_id = request_id(&req.request_id);
        let calls = parts.into_iter().map(|(shard, points)| {
            let part = pb::UpsertRequest {
                collection: placement.spec.name.clone(),
                points,
                request_id: format!("{request_id}/{shard}"),
            };
            points_on_shard!(self, &placement, shard, Route::Leader, part, upsert)
        });
        merge_writes(join_all(calls).await)
    }

    pub async fn delete(&self, req: pb::DeletePointsRequest) -> Result<pb::WriteResponse, Status> {
        let placement = self.placement("collection", &req.collection).await?;
        let count = placement.shards.len();
        let request_id = request_id(&req.request_id);
        let mut parts: BTreeMap<usize, pb::DeletePointsRequest> = BTreeMap::new();
        if req.ids.is_empty() {
            // By filter: every shard deletes its matches (each checks the filter the same way).
            for shard in 0..count {
                parts.insert(shard, req.clone());
            }
        } else {
            let ids = convert::point_ids(&req.ids, &self.limits())?;
            for (id, wire) in ids.iter().zip(&req.ids) {
                parts
                    .entry(shard_index(id, count))
                    .or_insert_with(|| pb::DeletePointsRequest {
                        ids: Vec::new(),
                        ..req.clone()
                    })
                    .ids
                    .push(wire.clone());
            }
        }
        let calls = parts.into_iter().map(|(shard, mut part)| {
            part.request_id = format!("{request_id}/{shard}");
            points_on_shard!(self, &placement, shard, Route::Leader, part, delete)
        });
        merge_writes(join_all(calls).await)
    }

    pub async fn get(&self, req: pb::GetPointsRequest) -> Result<pb::GetPointsResponse, Status> {
        let placement = self.placement("collection", &req.collection).await?;
        let count = placement.shards.len();
        let ids = convert::point_ids(&req.ids, &self.limits())?;
        let mut parts: BTreeMap<usize, pb::GetPointsRequest> = BTreeMap::new();
        for (id, wire) in ids.iter().zip(&req.ids) {
            parts
                .entry(shard_index(id, count))
                .or_insert_with(|| pb::GetPointsRequest {
                    ids: Vec::new(),
                    ..req.clone()
                })
                .ids
                .push(wire.clone());
        }
        let to = route(req.consistency);
        let calls = parts
            .into_iter()
            .map(|(shard, part)| points_on_shard!(self, &placement, shard, to, part, get));
        let mut found: HashMap<PointId, pb::Point> = HashMap::new();
        for part in join_all(calls).await {
            for point in part?.points {
                if let Ok(id) = convert::point_id("id", point.id.as_ref()) {
                    found.insert(id, point);
                }
            }
        }
        // In the order asked for.
        let points = ids.iter().filter_map(|id| found.remove(id)).collect();
        Ok(pb::GetPointsResponse { points })
    }

    pub async fn search(&self, req: pb::SearchRequest) -> Result<pb::SearchResponse, Status> {
        let placement = self.placement("collection", &req.collection).await?;
        let top_k = match req.top_k {
            0 => DEFAULT_TOP_K,
            k => k as usize,
        };
        let to = route(req.consistency);
        let calls = (0..placement.shards.len()).map(|shard| {
            let part = req.clone();
            points_on_shard!(self, &placement, shard, to, part, search)
        });
        let mut results = Vec::new();
        let mut plans: Vec<String> = Vec::new();
        for part in join_all(calls).await {
            let part = part?;
            results.extend(part.results);
            if !plans.contains(&part.plan) {
                plans.push(part.plan);
            }
        }
        let lower_is_better = placement.spec.metric == Metric::L2;
        results.sort_by(|a, b| {
            let order = a.score.total_cmp(&b.score);
            if lower_is_better {
                order
            } else {
                order.reverse()
            }
        });
        results.truncate(top_k);
        Ok(pb::SearchResponse {
            results,
            plan: plans.join("+"),
        })
    }

    pub async fn scroll(&self, req: pb::ScrollRequest) -> Result<pb::ScrollResponse, Status> {
        let placement = self.placement("collection", &req.collection).await?;
        let limit = match req.limit {
            0 => DEFAULT_SCROLL_LIMIT,
            l => l as usize,
        };
        let to = route(req.consistency);
        let calls = (0..placement.shards.len()).map(|shard| {
            let part = req.clone();
            points_on_shard!(self, &placement, shard, to, part, scroll)
        });
        // Each shard returned its first `limit` ids after the cursor; the first `limit` of
        // their union are the collection's.
        let mut more = false;
        let mut points: Vec<(PointId, pb::Point)> = Vec::new();
        for part in join_all(calls).await {
            let part = part?;
            more |= !part.next_cursor.is_empty();
            for point in part.points {
                let id = convert::point_id("id", point.id.as_ref())?;
                points.push((id, point));
            }
        }
        points.sort_by_key(|p| p.0);
        more |= points.len() > limit;
        points.truncate(limit);
        let next_cursor = match points.last() {
            Some((id, _)) if more => encode_cursor(id),
            _ => String::new(),
        };
        Ok(pb::ScrollResponse {
            points: points.into_iter().map(|(_, p)| p).collect(),
            next_cursor,
        })
    }

    /// A collection's description with each shard's replicas, leader and counts (as the
    /// nearest replica of each shard reports them; a shard none answers shows no leader).
    pub async fn info(&self, name: &str) -> Result<pb::CollectionInfo, Status> {
        let placement = self.placement("name", name).await?;
        let calls = (0..placement.shards.len()).map(|shard| {
            let request = pb::GetCollectionRequest {
                name: placement.spec.name.clone(),
            };
            let answer = self.on_shard(&placement, shard, Route::Nearest, move |group, target| {
                let request = request.clone();
                async move {
                    match target {
                        Target::Local(g) => Ok(shard::info(&g, &request.name)?),
                        Target::Remote(c) => CollectionsClient::new(c)
                            .get(for_group(group, request))
                            .await
                            .map(|r| r.into_inner()),
                    }
                }
            });
            tokio::time::timeout(Duration::from_secs(3), answer)
        });
        let answers = join_all(calls).await;
        let mut info = convert::placement_info(&placement, |n| self.directory.address(n));
        for (shard, answer) in info.shards.iter_mut().zip(answers) {
            if let Ok(Ok(answer)) = answer {
                let reported = answer.shards.into_iter().next().unwrap_or_default();
                shard.leader = reported.leader;
                shard.points_count = reported.points_count;
                shard.indexed_vectors = reported.indexed_vectors;
            }
        }
        info.points_count = info.shards.iter().map(|s| s.points_count).sum();
        info.indexed_vectors = info.shards.iter().map(|s| s.indexed_vectors).sum();
        Ok(info)
    }
}

/// The client's idempotency key, or a fresh one (so this coordinator's own retries of a part
/// are applied once).
fn request_id(given: &str) -> String {
    if given.is_empty() {
        uuid::Uuid::new_v4().to_string()
    } else {
        given.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_of_the_request_are_final_and_the_rest_retried() {
        let mut redirect = Status::unavailable("not the leader; the leader is node 2 at 1.2.3.4:5");
        redirect
            .metadata_mut()
            .insert("quiver-leader-address", "127.0.0.1:7002".parse().unwrap());
        assert_eq!(
            classify(&redirect),
            Failure::Redirect("127.0.0.1:7002".into())
        );
        assert_eq!(
            classify(&Status::unavailable("not the leader")),
            Failure::Retry
        );
        assert_eq!(
            classify(&Status::from(NodeError::NoReplica { group: 9 })),
            Failure::Retry
        );
        assert_eq!(
            classify(&Status::unavailable(
                "error trying to connect: connection refused"
            )),
            Failure::Retry
        );
        // Not confirmed in time: retried (the idempotency key makes a second apply a no-op).
        let unconfirmed = Status::unavailable("unavailable: the write was not confirmed in time");
        assert_eq!(classify(&unconfirmed), Failure::Retry);
        assert_eq!(classify(&Status::not_found("collection")), Failure::Final);
        assert_eq!(
            classify(&Status::invalid_argument("vector")),
            Failure::Final
        );
    }
}
