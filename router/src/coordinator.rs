//! The coordinator: serves a client's request over a sharded collection.
//!
//! A request is validated once, here, against the collection's spec and the cluster's limits
//! ([`quiver_core::convert`]), so bad input changes nothing on any shard. Each shard's part names
//! the collection as that shard knows it: by its group's id. A write is then split by
//! the shard each point id hashes to, and each part sent to that shard's leader with an
//! idempotency key (`<request_id>/<shard>`), so a retried part is applied once. Reads fan out to
//! every shard in parallel (to the leader, or for `any` consistency to the nearest replica) and
//! the answers are merged: the best `top_k` for a search, id order for a scroll.
//!
//! Shards are reached through a [`ShardClient`]: this process's own replicas directly when it
//! runs beside a node ([`LocalShards`]), any other node's over its `Shard` gRPC service. A replica
//! that refuses a part names the leader (followed) or says it holds no replica (the shard map is
//! fetched again); one that cannot serve it now (no quorum, no answer within a few seconds) is
//! passed over for another until a deadline. The idempotency key makes that safe for writes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use parking_lot::Mutex;
use quiver_core::convert::{self, Limits};
use quiver_core::directory::Directory;
use quiver_core::placement::{shard_index, NodeId, Placement};
use quiver_core::point::PointId;
use quiver_core::shard::{
    PointsCommand, ReadConsistency, SegmentState, Selection, ShardClient, ShardRead,
};
use quiver_core::Error;
use quiver_embed::{EmbedError, LazyEmbedder};
use quiver_index::distance::Metric;
use quiver_proto::v1 as pb;
use quiver_proto::wire::{classify, Channels, Failure};
use tonic::Status;
use tracing::warn;

use crate::remote_shards::RemoteShards;

/// How long one attempt at a remote replica may take before another replica is tried. A peer
/// that stops answering altogether is found sooner, by the channel's keep-alive pings.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// This process's own shard replicas, reached without a network hop.
pub struct LocalShards {
    pub node: NodeId,
    /// The address other processes reach this node at.
    pub address: String,
    pub shards: Arc<dyn ShardClient>,
}

/// Which replica of a shard may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Leader,
    /// Any replica, this process's own first.
    Nearest,
}

pub(crate) fn route(consistency: ReadConsistency) -> Route {
    match consistency {
        ReadConsistency::Any => Route::Nearest,
        _ => Route::Leader,
    }
}

/// Splits, sends and merges requests over sharded collections.
pub struct Coordinator {
    directory: Arc<dyn Directory>,
    local: Option<LocalShards>,
    /// The limits requests are checked against when the directory does not know the cluster's.
    limits: Limits,
    /// How long one request may spend on a shard, following leader changes and moved replicas,
    /// before it fails as unavailable.
    timeout: Duration,
    channels: Channels,
    /// Last known leader address per shard group.
    leaders: Mutex<HashMap<u64, String>>,
    /// Embeds query text for collections that declare `embed`, and checks such collections'
    /// dimension when they are created.
    embedder: Arc<LazyEmbedder>,
}

/// The status of an embedding failure.
fn embed_status(e: EmbedError) -> Status {
    match e {
        EmbedError::NoModel(_) | EmbedError::ModelDir { .. } => {
            Status::failed_precondition(format!("embed: {e}"))
        }
        EmbedError::Busy => Status::resource_exhausted(e.to_string()),
        other => Status::internal(other.to_string()),
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
    /// A coordinator over `directory`, reaching this process's replicas through `local` and
    /// every other node's through `channels`; a request that no replica of a shard could serve
    /// within `timeout` fails with UNAVAILABLE.
    pub fn new(
        directory: Arc<dyn Directory>,
        local: Option<LocalShards>,
        limits: Limits,
        channels: Channels,
        timeout: Duration,
        embedder: Arc<LazyEmbedder>,
    ) -> Self {
        Self {
            directory,
            local,
            limits,
            timeout,
            channels,
            leaders: Mutex::default(),
            embedder,
        }
    }

    /// The vectors of `texts` by the embedding model: FAILED_PRECONDITION when there is none,
    /// RESOURCE_EXHAUSTED when it is busy.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, Status> {
        let pool = self.embedding_pool().await?;
        pool.embed(texts).await.map_err(embed_status)
    }

    /// The embedding model, loaded on first use (FAILED_PRECONDITION when there is none).
    pub async fn embedding_pool(&self) -> Result<Arc<quiver_embed::EmbedPool>, Status> {
        let embedder = self.embedder.clone();
        tokio::task::spawn_blocking(move || embedder.get())
            .await
            .map_err(|e| Status::internal(format!("loading the embedding model: {e}")))?
            .map_err(embed_status)
    }

    pub fn directory(&self) -> &Arc<dyn Directory> {
        &self.directory
    }

    /// The limits requests are checked against: the cluster's when the directory knows them,
    /// else this coordinator's own.
    pub fn limits(&self) -> Limits {
        self.directory
            .limits()
            .unwrap_or_else(|| self.limits.clone())
    }

    /// The placement of `name`, learning the shard map again (a few times, briefly) if it is
    /// not known: a collection created a moment ago may not have reached this directory yet.
    pub(crate) async fn placement(&self, field: &str, name: &str) -> Result<Placement, Status> {
        let name = convert::collection_name(field, name)?;
        for _ in 0..3 {
            match self.directory.placement(&name) {
                Err(Error::NotFound(_)) => {
                    self.directory.refresh().await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return Ok(other?),
            }
        }
        Ok(self.directory.placement(&name)?)
    }

    /// This process's client of `group`'s replica when the replica at `address` is its own.
    fn local_at(&self, address: &str) -> Option<Arc<dyn ShardClient>> {
        self.local
            .as_ref()
            .filter(|l| l.address == address)
            .map(|l| l.shards.clone())
    }

    /// Runs `call` against a replica of shard `shard` of `collection`, following leader
    /// redirects and moved replicas until it succeeds, fails for good, or the coordinator's
    /// timeout passes (then with the last failure, UNAVAILABLE).
    pub(crate) async fn on_shard<T, F, Fut>(
        &self,
        collection: &Placement,
        shard: usize,
        route: Route,
        call: F,
    ) -> Result<T, Status>
    where
        F: Fn(u64, Arc<dyn ShardClient>) -> Fut,
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
                return Err(Error::Unavailable(format!(
                    "collection `{name}` was dropped or re-created during the request"
                ))
                .into());
            }
            let Some(shard_placement) = placement.shards.get(shard) else {
                return Err(Error::NotFound(format!("shard {shard} of `{name}`")).into());
            };
            let group = shard_placement.group;
            let own = self
                .local
                .as_ref()
                .filter(|l| shard_placement.replicas.contains(&l.node));
            // Addresses to try, in order; this process's own replica is called directly.
            let mut candidates: Vec<String> = Vec::new();
            match route {
                Route::Leader => {
                    candidates.extend(hint.take());
                    candidates.extend(self.leaders.lock().get(&group).cloned());
                }
                Route::Nearest => candidates.extend(own.map(|l| l.address.clone())),
            }
            for node in &shard_placement.replicas {
                match own {
                    Some(l) if l.node == *node => candidates.push(l.address.clone()),
                    _ => candidates.extend(self.directory.address(*node)),
                }
            }
            let mut seen = HashSet::new();
            candidates.retain(|a| seen.insert(a.clone()));
            let mut redirected = false;
            for address in candidates {
                let client = match self.local_at(&address) {
                    Some(local) => local,
                    None => match self.channels.channel(&address) {
                        Ok(channel) => Arc::new(RemoteShards::new(channel)),
                        Err(e) => {
                            warn!(address, error = %e, "bad replica address");
                            continue;
                        }
                    },
                };
                let until = deadline.min(tokio::time::Instant::now() + ATTEMPT_TIMEOUT);
                let attempt = tokio::time::timeout_at(until, call(group, client))
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
                    // Every write carries an idempotency key, so an outcome that is unknown
                    // may be tried again as safely as a refusal.
                    Err(status) => match classify(&status) {
                        Failure::Final => return Err(status),
                        Failure::Redirect(leader) => {
                            self.leaders.lock().insert(group, leader.clone());
                            hint = Some(leader);
                            redirected = true;
                            last = status;
                            break;
                        }
                        Failure::NotApplied | Failure::Unknown => {
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

    /// Sends one shard's part of a write, once per key.
    async fn write_part(
        &self,
        placement: &Placement,
        shard: usize,
        key: String,
        command: PointsCommand,
        wait_indexed: bool,
    ) -> Result<pb::WriteResponse, Status> {
        let (key, command) = (&key, &command);
        self.on_shard(
            placement,
            shard,
            Route::Leader,
            move |group, client| async move {
                client.write(group, key, command, wait_indexed).await
            },
        )
        .await
    }

    pub(crate) fn read(
        placement: &Placement,
        shard: usize,
        consistency: ReadConsistency,
    ) -> ShardRead {
        ShardRead {
            group: placement.shards[shard].group,
            collection: placement.spec.name.clone(),
            consistency,
        }
    }

    pub async fn upsert(&self, req: pb::UpsertRequest) -> Result<pb::WriteResponse, Status> {
        let placement = self.placement("collection", &req.collection).await?;
        // Validate the whole batch before any shard sees a part of it.
        let points = convert::upsert_points(&req.points, &placement.spec, &self.limits().request)?;
        let count = placement.shards.len();
        let mut parts: BTreeMap<usize, Vec<_>> = BTreeMap::new();
        for point in points {
            parts
                .entry(shard_index(&point.id, count))
                .or_default()
                .push(point);
        }
        let parts = parts
            .into_iter()
            .map(|(shard, points)| {
                let command = PointsCommand::Upsert {
                    collection: placement.spec.name.clone(),
                    collection_id: placement.shards[shard].group,
                    points,
                };
                (shard, command)
            })
            .collect();
        self.write_parts(&placement, &req.request_id, parts, req.wait_indexed)
            .await
    }

    /// Sends each shard's part of a write (built by `command` from the shard and its group),
    /// each once under `<request_id>/<shard>`, and merges the answers.
    async fn write_parts(
        &self,
        placement: &Placement,
        request_id: &str,
        parts: BTreeMap<usize, PointsCommand>,
        wait_indexed: bool,
    ) -> Result<pb::WriteResponse, Status> {
        let request_id = request_id_or_new(request_id);
        let calls = parts.into_iter().map(|(shard, command)| {
            let key = format!("{request_id}/{shard}");
            self.write_part(placement, shard, key, command, wait_indexed)
        });
        merge_writes(join_all(calls).await)
    }

    pub async fn delete(&self, req: pb::DeletePointsRequest) -> Result<pb::WriteResponse, Status> {
        let placement = self.placement("collection", &req.collection).await?;
        let selection = convert::delete_selection(&req, &self.limits().request)?;
        let collection = placement.spec.name.clone();
        let parts = split_selection(selection, &placement)
            .into_iter()
            .map(|(shard, (collection_id, selection))| {
                let collection = collection.clone();
                let command = match selection {
                    Selection::Ids(ids) => PointsCommand::Delete {
                        collection,
                        collection_id,
                        ids,
                    },
                    // Every shard deletes its matches (each checks the filter the same way).
                    Selection::Filter(filter) => PointsCommand::DeleteByFilter {
                        collection,
                        collection_id,
                        filter,
                    },
                };
                (shard, command)
            })
            .collect();
        self.write_parts(&placement, &req.request_id, parts, req.wait_indexed)
            .await
    }

    pub async fn update_payload(
        &self,
        req: pb::UpdatePayloadRequest,
    ) -> Result<pb::WriteResponse, Status> {
        let placement = self.placement("collection", &req.collection).await?;
        let limits = self.limits().request;
        let (selection, change) = convert::payload_update(&req, &limits)?;
        let parts = split_selection(selection, &placement)
            .into_iter()
            .map(|(shard, (collection_id, selection))| {
                let command = PointsCommand::UpdatePayload {
                    collection: placement.spec.name.clone(),
                    collection_id,
                    selection,
                    change: change.clone(),
                    max_payload_bytes: Some(limits.max_payload_bytes as u64),
                };
                (shard, command)
            })
            .collect();
        self.write_parts(&placement, &req.request_id, parts, req.wait_indexed)
            .await
    }

    pub async fn update_vectors(
        &self,
        req: pb::UpdateVectorsRequest,
    ) -> Result<pb::WriteResponse, Status> {
        let placement = self.placement("collection", &req.collection).await?;
        let vectors = convert::new_vectors(&req.points, &placement.spec, &self.limits().request)?;
        let count = placement.shards.len();
        let mut parts: BTreeMap<usize, PointsCommand> = BTreeMap::new();
        for vector in vectors {
            let shard = shard_index(&vector.id, count);
            let part = parts
                .entry(shard)
                .or_insert_with(|| PointsCommand::UpdateVectors {
                    collection: placement.spec.name.clone(),
                    collection_id: placement.shards[shard].group,
                    points: Vec::new(),
                });
            if let PointsCommand::UpdateVectors { points, .. } = part {
                points.push(vector);
            }
        }
        self.write_parts(&placement, &req.request_id, parts, req.wait_indexed)
            .await
    }

    pub async fn count(&self, req: pb::CountRequest) -> Result<pb::CountResponse, Status> {
        let placement = self.placement("collection", &req.collection).await?;
        let consistency = convert::read_consistency(req.consistency)?;
        let query = Arc::new(convert::count_query(&req)?);
        let calls = (0..placement.shards.len()).map(|shard| {
            let read = Self::read(&placement, shard, consistency);
            let query = query.clone();
            self.on_shard(&placement, shard, route(consistency), move |_, client| {
                let (read, query) = (read.clone(), query.clone());
                async move { client.count(&read, &query).await }
            })
        });
        let mut merged = pb::CountResponse {
            count: 0,
            exact: true,
        };
        for part in join_all(calls).await {
            let part = part?;
            merged.count += part.count;
            merged.exact &= part.exact;
        }
        Ok(merged)
    }

    pub async fn get(&self, req: pb::GetPointsRequest) -> Result<pb::GetPointsResponse, Status> {
        let placement = self.placement("collection", &req.collection).await?;
        let ids = convert::point_ids(&req.ids, &self.limits().request)?;
        let consistency = convert::read_consistency(req.consistency)?;
        let count = placement.shards.len();
        let mut parts: BTreeMap<usize, Vec<PointId>> = BTreeMap::new();
        for id in &ids {
            parts.entry(shard_index(id, count)).or_default().push(*id);
        }
        let (with_payload, with_vector) = (req.with_payload, req.with_vector);
        let calls = parts.into_iter().map(|(shard, part)| {
            let read = Self::read(&placement, shard, consistency);
            self.on_shard(&placement, shard, route(consistency), move |_, client| {
                let (read, part) = (read.clone(), part.clone());
                async move { client.get(&read, &part, with_payload, with_vector).await }
            })
        });
        let mut found: HashMap<PointId, pb::Point> = HashMap::new();
        for part in join_all(calls).await {
            for point in part?.points {
                if let Ok(id) = convert::point_id("id", point.id.as_ref()) {
                    found.insert(id, point);
                }
            }
        }
        // In the order asked for.
        let mut points = Vec::with_capacity(found.len());
        let mut missing = Vec::new();
        for id in &ids {
            match found.remove(id) {
                Some(point) => points.push(point),
                None => missing.push(convert::point_id_to_proto(id)),
            }
        }
        Ok(pb::GetPointsResponse { points, missing })
    }

    pub async fn search(&self, req: pb::SearchRequest) -> Result<pb::SearchResponse, Status> {
        let placement = self.placement("collection", &req.collection).await?;
        let consistency = convert::read_consistency(req.consistency)?;
        let query = Arc::new(convert::search_query(
            &req,
            &placement.spec,
            &self.limits(),
        )?);
        let calls = (0..placement.shards.len()).map(|shard| {
            let read = Self::read(&placement, shard, consistency);
            let query = query.clone();
            self.on_shard(&placement, shard, route(consistency), move |_, client| {
                let (read, query) = (read.clone(), query.clone());
                async move { client.search(&read, &query).await }
            })
        });
        let parts = join_all(calls)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        Ok(merge_searches(placement.spec.metric, query.top_k, parts))
    }

    /// Many searches of one collection: each shard gets one call with all of them, and each
    /// search's answers are merged as [`search`](Self::search) merges them.
    pub async fn search_batch(
        &self,
        req: pb::SearchBatchRequest,
    ) -> Result<pb::SearchBatchResponse, Status> {
        if !req.queries.is_empty() {
            return self.query_batch(req).await;
        }
        let placement = self.placement("collection", &req.collection).await?;
        let consistency = convert::read_consistency(req.consistency)?;
        let queries = Arc::new(convert::search_batch_queries(
            &req,
            &placement.spec,
            &self.limits(),
        )?);
        let calls = (0..placement.shards.len()).map(|shard| {
            let read = Self::read(&placement, shard, consistency);
            let queries = queries.clone();
            self.on_shard(&placement, shard, route(consistency), move |_, client| {
                let (read, queries) = (read.clone(), queries.clone());
                async move { client.search_batch(&read, &queries).await }
            })
        });
        let mut per_shard = Vec::with_capacity(placement.shards.len());
        for answers in join_all(calls).await {
            per_shard.push(answers?.into_iter());
        }
        let responses = queries
            .iter()
            .map(|query| {
                let parts = per_shard.iter_mut().filter_map(Iterator::next).collect();
                merge_searches(placement.spec.metric, query.top_k, parts)
            })
            .collect();
        Ok(pb::SearchBatchResponse { responses })
    }

    pub async fn scroll(&self, req: pb::ScrollRequest) -> Result<pb::ScrollResponse, Status> {
        let placement = self.placement("collection", &req.collection).await?;
        let consistency = convert::read_consistency(req.consistency)?;
        let query = Arc::new(convert::scroll_query(&req, &self.limits().request)?);
        let calls = (0..placement.shards.len()).map(|shard| {
            let read = Self::read(&placement, shard, consistency);
            let query = query.clone();
            self.on_shard(&placement, shard, route(consistency), move |_, client| {
                let (read, query) = (read.clone(), query.clone());
                async move { client.scroll(&read, &query).await }
            })
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
        more |= points.len() > query.limit;
        points.truncate(query.limit);
        let next_cursor = match points.last() {
            Some((id, _)) if more => convert::encode_cursor(id),
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
            let collection = placement.spec.name.clone();
            let answer = self.on_shard(&placement, shard, Route::Nearest, move |group, client| {
                let collection = collection.clone();
                async move { client.counts(group, &collection).await }
            });
            tokio::time::timeout(Duration::from_secs(3), answer)
        });
        let answers = join_all(calls).await;
        let mut info = convert::placement_info(&placement, |n| self.directory.address(n));
        let mut embedding = placement
            .spec
            .embed
            .is_some()
            .then(pb::EmbeddingStatus::default);
        for (shard, answer) in info.shards.iter_mut().zip(answers) {
            if let Ok(Ok(counts)) = answer {
                if let (Some(sum), Some(part)) = (embedding.as_mut(), counts.embedding) {
                    sum.pending += part.pending;
                    sum.embedded += part.embedded;
                    sum.failed += part.failed;
                    sum.from_cache += part.from_cache;
                    sum.per_second += part.per_second;
                    if sum.last_error.is_empty() {
                        sum.last_error = part.last_error;
                    }
                }
                info.text_pending |= counts.text_pending;
                shard.leader = counts.leader;
                shard.points_count = counts.points_count;
                shard.indexed_vectors = counts.indexed_vectors;
                shard.segments = convert::segments_to_proto(&counts.segments);
            }
        }
        info.points_count = info.shards.iter().map(|s| s.points_count).sum();
        info.indexed_vectors = info.shards.iter().map(|s| s.indexed_vectors).sum();
        info.pending_vectors = info
            .shards
            .iter()
            .flat_map(|s| &s.segments)
            .filter(|s| s.state == SegmentState::Appendable.as_str())
            .map(|s| s.points)
            .sum();
        info.embedding = embedding;
        Ok(info)
    }
}

/// One search's answers from every shard, merged: the best `top_k` by the metric's order, and
/// the plans the shards used (`+`-joined when they differ).
fn merge_searches(
    metric: Metric,
    top_k: usize,
    parts: Vec<pb::SearchResponse>,
) -> pb::SearchResponse {
    let mut results = Vec::new();
    let mut plans: Vec<String> = Vec::new();
    for part in parts {
        results.extend(part.results);
        if !plans.contains(&part.plan) {
            plans.push(part.plan);
        }
    }
    let lower_is_better = metric == Metric::L2;
    results.sort_by(|a, b| {
        let order = a.score.total_cmp(&b.score);
        if lower_is_better {
            order
        } else {
            order.reverse()
        }
    });
    results.truncate(top_k);
    pb::SearchResponse {
        results,
        plan: plans.join("+"),
    }
}

/// Each shard's part of a selection, with the shard's group (its collection id): ids by the
/// shard they hash to, a filter to every shard.
fn split_selection(
    selection: Selection,
    placement: &Placement,
) -> BTreeMap<usize, (u64, Selection)> {
    let count = placement.shards.len();
    let group = |shard: usize| placement.shards[shard].group;
    match selection {
        Selection::Filter(filter) => (0..count)
            .map(|shard| (shard, (group(shard), Selection::Filter(filter.clone()))))
            .collect(),
        Selection::Ids(ids) => {
            let mut parts: BTreeMap<usize, Vec<PointId>> = BTreeMap::new();
            for id in ids {
                parts.entry(shard_index(&id, count)).or_default().push(id);
            }
            parts
                .into_iter()
                .map(|(shard, ids)| (shard, (group(shard), Selection::Ids(ids))))
                .collect()
        }
    }
}

/// The client's idempotency key, or a fresh one (so this coordinator's own retries of a part
/// are applied once).
pub(crate) fn request_id_or_new(given: &str) -> String {
    if given.is_empty() {
        uuid::Uuid::new_v4().to_string()
    } else {
        given.to_string()
    }
}
