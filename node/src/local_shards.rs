//! The shard requests this node's replicas serve: a [`ShardClient`] over the node's own
//! replicas, used in-process by the node's front (no network hop) and behind the `Shard` gRPC
//! service for every other coordinator.
//!
//! Requests arrive validated by the coordinator. Reads are answered from this replica's applied
//! state after the request's consistency check: `linearizable` confirms leadership with a quorum,
//! `leader` requires this replica to lead its group, `any` reads whatever it has applied. A write
//! is visible to `linearizable` and `leader` reads once acknowledged, and is applied once per
//! idempotency key. A group this node's shard map no longer places here (its collection dropped,
//! the replica moved away) is refused as a stale shard map, even while its files are removed.

use std::sync::Arc;
use std::time::Duration;

use quiver_core::convert;
use quiver_core::features::{FeaturesAnswer, FeaturesCommand, FeaturesRead};
use quiver_core::point::PointId;
use quiver_core::shard::{
    CountQuery, PointsCommand, ScrollQuery, SearchQuery, ShardClient, ShardCounts, ShardQuery,
    ShardQueryAnswer, ShardRead,
};
use quiver_core::{Error, Result};
use quiver_proto::v1 as pb;
use tonic::Status;

use crate::cluster::group::{blocking, ShardGroup};
use crate::cluster::node::Node;
use crate::shard::search::{Plan, SearchHit};
use crate::shard::Collection;
use crate::sm::{feature_values, Applied, ShardCommand};

/// This node's shard replicas, as a [`ShardClient`].
#[derive(Clone)]
pub struct LocalShards {
    node: Arc<Node>,
}

impl LocalShards {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// This node's replica of `group`, if the shard map places one here.
    fn replica(&self, group: u64) -> Result<Arc<ShardGroup>> {
        let placed_here = self
            .node
            .placements()
            .by_group(group)
            .is_some_and(|(_, shard)| shard.replicas.contains(&self.node.id()));
        if !placed_here {
            return Err(Error::NoReplica { group });
        }
        self.node.shard(group)
    }

    /// The replica and collection a read is served from, once its consistency allows.
    async fn read(&self, read: &ShardRead) -> Result<(Arc<ShardGroup>, Arc<Collection>)> {
        let group = self.replica(read.group)?;
        group.read_barrier(read.consistency).await?;
        let collection = serving(&group, &read.collection)?;
        Ok((group, collection))
    }

    async fn write_command(
        &self,
        group: u64,
        idempotency_key: &str,
        command: &PointsCommand,
        wait_indexed: bool,
    ) -> Result<pb::WriteResponse> {
        let replica = self.replica(group)?;
        replica.check_writable()?;
        // Not before the group serves the collection: the write would be rejected, and its
        // rejection remembered under its idempotency key.
        serving(&replica, command.collection())?;
        let shard_command = ShardCommand::Points(command.clone());
        let applied = self
            .fenced_write(&replica, idempotency_key, shard_command)
            .await?;
        if wait_indexed {
            let timeout = Duration::from_millis(self.node.config().cluster.write_timeout_ms);
            let text = serving(&replica, command.collection())?.text().cloned();
            if let Some(text) = text {
                let config = &self.node.config().storage;
                let wait = Duration::from_millis(config.text_commit_ms) + timeout;
                let index = applied.index;
                blocking("wait_indexed", move || text.wait_indexed(index, wait)).await?;
            }
        }
        Ok(pb::WriteResponse {
            applied_index: applied.index,
            affected: applied.affected,
        })
    }

    /// Proposes `command` through the replica's log, once per key; while a snapshot's cut holds
    /// the shard's writes, the write waits.
    async fn fenced_write(
        &self,
        replica: &ShardGroup,
        idempotency_key: &str,
        command: ShardCommand,
    ) -> Result<Applied> {
        let timeout = Duration::from_millis(self.node.config().cluster.write_timeout_ms);
        let _passed = replica
            .fence()
            .pass(tokio::time::Instant::now() + timeout)
            .await?;
        replica.write(idempotency_key, command).await
    }

    async fn get_points(
        &self,
        read: &ShardRead,
        ids: &[PointId],
        with_payload: bool,
        with_vector: bool,
    ) -> Result<pb::GetPointsResponse> {
        let (_, collection) = self.read(read).await?;
        let points = collection
            .get(ids)
            .into_iter()
            .map(|(id, vector, payload)| {
                convert::point_to_proto(&id, vector, &payload, with_vector, with_payload)
            })
            .collect();
        Ok(pb::GetPointsResponse {
            points,
            missing: Vec::new(),
        })
    }

    async fn search_points(
        &self,
        read: &ShardRead,
        query: &SearchQuery,
    ) -> Result<pb::SearchResponse> {
        let (group, collection) = self.read(read).await?;
        let params = query.clone();
        let planner = group.planner_config();
        let (hits, plan) =
            blocking("search", move || Ok(collection.search(&params, &planner))).await?;
        Ok(search_response(hits, plan))
    }

    /// Searches behind one read barrier, run together on one blocking thread.
    async fn search_points_batch(
        &self,
        read: &ShardRead,
        queries: &[SearchQuery],
    ) -> Result<Vec<pb::SearchResponse>> {
        let (group, collection) = self.read(read).await?;
        let queries = queries.to_vec();
        let planner = group.planner_config();
        let answers = blocking("search", move || {
            Ok(collection.search_batch(&queries, &planner))
        })
        .await?;
        Ok(answers
            .into_iter()
            .map(|(hits, plan)| search_response(hits, plan))
            .collect())
    }

    /// Queries' candidates per modality, behind one read barrier, run together on one blocking
    /// thread.
    async fn query_points(
        &self,
        read: &ShardRead,
        queries: &[ShardQuery],
    ) -> Result<Vec<ShardQueryAnswer>> {
        let (group, collection) = self.read(read).await?;
        let queries = queries.to_vec();
        let planner = group.planner_config();
        blocking("query", move || {
            queries
                .iter()
                .map(|query| {
                    let vector = query.vector.as_ref().map(|q| {
                        let (hits, plan) = collection.search(q, &planner);
                        search_response(hits, plan)
                    });
                    let text = match &query.text {
                        Some(q) => Some(collection.text_candidates(q)?),
                        None => None,
                    };
                    Ok(ShardQueryAnswer { vector, text })
                })
                .collect()
        })
        .await
    }

    async fn scroll_points(
        &self,
        read: &ShardRead,
        query: &ScrollQuery,
    ) -> Result<pb::ScrollResponse> {
        let (group, collection) = self.read(read).await?;
        let query = query.clone();
        let (with_payload, with_vector) = (query.with_payload, query.with_vector);
        let page = blocking("scroll", move || {
            group.scroll(&collection, query.after, query.limit, query.filter.as_ref())
        })
        .await?;
        let points = page
            .points
            .into_iter()
            .map(|(id, record)| {
                convert::point_to_proto(
                    &id,
                    record.vector,
                    &record.payload,
                    with_vector,
                    with_payload,
                )
            })
            .collect();
        Ok(pb::ScrollResponse {
            points,
            next_cursor: page
                .next
                .map(|id| convert::encode_cursor(&id))
                .unwrap_or_default(),
        })
    }

    async fn count_points(
        &self,
        read: &ShardRead,
        query: &CountQuery,
    ) -> Result<pb::CountResponse> {
        let (_, collection) = self.read(read).await?;
        let query = query.clone();
        let (count, exact) = blocking("count", move || {
            Ok(collection.count(query.filter.as_ref(), query.exact))
        })
        .await?;
        Ok(pb::CountResponse {
            count: count as u64,
            exact,
        })
    }

    /// Applies a push of feature rows through the group's log, once per key.
    async fn features_command(
        &self,
        group: u64,
        idempotency_key: &str,
        command: &FeaturesCommand,
    ) -> Result<pb::WriteResponse> {
        let replica = self.replica(group)?;
        replica.check_writable()?;
        let shard_command = ShardCommand::Features(command.clone());
        let applied = self
            .fenced_write(&replica, idempotency_key, shard_command)
            .await?;
        Ok(pb::WriteResponse {
            applied_index: applied.index,
            affected: applied.affected,
        })
    }

    /// Reads this replica's feature values, once its consistency allows.
    async fn features_lookup(
        &self,
        read: &ShardRead,
        request: &FeaturesRead,
    ) -> Result<FeaturesAnswer> {
        let replica = self.replica(read.group)?;
        replica.read_barrier(read.consistency).await?;
        let storage = replica.storage().clone();
        let request = request.clone();
        blocking("features read", move || match &request {
            FeaturesRead::Online(lookups) => feature_values::read_online(storage.as_ref(), lookups),
            FeaturesRead::Historical { lookups, at_index } => {
                feature_values::read_historical(storage.as_ref(), lookups, *at_index)
            }
            FeaturesRead::Stats {
                view_id,
                from_day,
                to_day,
            } => feature_values::read_stats(storage.as_ref(), *view_id, *from_day, *to_day),
        })
        .await
    }

    /// This replica's counts of collection `name` and the leader it knows.
    pub fn shard_counts(&self, group: u64, name: &str) -> Result<ShardCounts> {
        let replica = self.replica(group)?;
        let c = serving(&replica, name)?;
        Ok(ShardCounts {
            leader: replica.leader().unwrap_or(0),
            points_count: c.points_count() as u64,
            indexed_vectors: c.indexed_vectors() as u64,
            segments: c.segments(),
            embedding: c.meta.spec.embed.is_some().then(|| {
                let counts = c.embedding().counts();
                pb::EmbeddingStatus {
                    pending: c.unembedded_count(),
                    embedded: counts.embedded,
                    failed: counts.failed,
                    per_second: counts.per_second,
                    last_error: counts.last_error.unwrap_or_default(),
                    from_cache: counts.from_cache,
                }
            }),
            text_pending: c.text().is_some_and(|t| t.pending()),
        })
    }
}

/// The collection `name` of a replica placed here. A replica that does not serve it yet is
/// catching up (it learns its collection from the group's log or a snapshot): another replica
/// may answer, so it is unavailable here rather than not found.
fn serving(replica: &ShardGroup, name: &str) -> Result<Arc<Collection>> {
    replica.collection(name).map_err(|e| match e {
        Error::NotFound(_) if replica.collections().is_empty() => Error::Unavailable(format!(
            "shard group {}: this replica has not caught up with its collection yet",
            replica.id()
        )),
        other => other,
    })
}

#[tonic::async_trait]
impl ShardClient for LocalShards {
    async fn write(
        &self,
        group: u64,
        idempotency_key: &str,
        command: &PointsCommand,
        wait_indexed: bool,
    ) -> Result<pb::WriteResponse, Status> {
        Ok(self
            .write_command(group, idempotency_key, command, wait_indexed)
            .await?)
    }

    async fn get(
        &self,
        read: &ShardRead,
        ids: &[PointId],
        with_payload: bool,
        with_vector: bool,
    ) -> Result<pb::GetPointsResponse, Status> {
        Ok(self
            .get_points(read, ids, with_payload, with_vector)
            .await?)
    }

    async fn search(
        &self,
        read: &ShardRead,
        query: &SearchQuery,
    ) -> Result<pb::SearchResponse, Status> {
        Ok(self.search_points(read, query).await?)
    }

    async fn search_batch(
        &self,
        read: &ShardRead,
        queries: &[SearchQuery],
    ) -> Result<Vec<pb::SearchResponse>, Status> {
        Ok(self.search_points_batch(read, queries).await?)
    }

    async fn query(
        &self,
        read: &ShardRead,
        queries: &[ShardQuery],
    ) -> Result<Vec<ShardQueryAnswer>, Status> {
        Ok(self.query_points(read, queries).await?)
    }

    async fn scroll(
        &self,
        read: &ShardRead,
        query: &ScrollQuery,
    ) -> Result<pb::ScrollResponse, Status> {
        Ok(self.scroll_points(read, query).await?)
    }

    async fn count(
        &self,
        read: &ShardRead,
        query: &CountQuery,
    ) -> Result<pb::CountResponse, Status> {
        Ok(self.count_points(read, query).await?)
    }

    async fn counts(&self, group: u64, collection: &str) -> Result<ShardCounts, Status> {
        Ok(self.shard_counts(group, collection)?)
    }

    async fn freeze(
        &self,
        group: u64,
        token: &str,
        ttl_ms: u64,
        renew: bool,
    ) -> Result<u64, Status> {
        if token.is_empty() {
            return Err(Error::invalid("token", "required").into());
        }
        if !(1..=MAX_FREEZE_MS).contains(&ttl_ms) {
            return Err(Error::invalid("ttl_ms", format!("must be in 1..={MAX_FREEZE_MS}")).into());
        }
        let replica = self.replica(group)?;
        replica.check_writable()?;
        if !replica.is_leader() {
            return Err(Status::from(replica.not_leader(replica.leader())));
        }
        let term = replica.term();
        let ttl = Duration::from_millis(ttl_ms);
        if renew {
            replica.fence().renew(token, ttl, term)?;
            return Ok(replica
                .raft()
                .metrics()
                .borrow()
                .last_log_index
                .unwrap_or(0));
        }
        replica.fence().hold(token, ttl, term).await?;
        // A write that timed out waiting may still be in the log and commit later: the hold
        // counts only once everything in the log is applied.
        let last = replica
            .raft()
            .metrics()
            .borrow()
            .last_log_index
            .unwrap_or(0);
        let applied = replica
            .raft()
            .wait(Some(ttl))
            .metrics(
                |m| m.last_applied.is_some_and(|l| l.index >= last),
                "the log is applied",
            )
            .await;
        if applied.is_err() {
            replica.fence().release(token, term);
            return Err(Error::Unavailable(
                "the shard's log was not applied before the hold expired (no quorum?)".into(),
            )
            .into());
        }
        Ok(last)
    }

    async fn features_write(
        &self,
        group: u64,
        idempotency_key: &str,
        command: &FeaturesCommand,
    ) -> Result<pb::WriteResponse, Status> {
        Ok(self
            .features_command(group, idempotency_key, command)
            .await?)
    }

    async fn features_read(
        &self,
        read: &ShardRead,
        request: &FeaturesRead,
    ) -> Result<FeaturesAnswer, Status> {
        Ok(self.features_lookup(read, request).await?)
    }

    async fn thaw(&self, group: u64, token: &str) -> Result<bool, Status> {
        let replica = self.replica(group)?;
        let term = replica.term();
        if !replica.fence().holds(token) && !replica.is_leader() {
            // (sent here by a stale view of the leader: the coordinator follows the redirect)
            return Err(Status::from(replica.not_leader(replica.leader())));
        }
        Ok(replica.fence().release(token, term) && replica.is_leader())
    }
}

/// The longest a snapshot may hold a shard's writes.
const MAX_FREEZE_MS: u64 = 600_000;

/// A search's hits and plan as the wire carries them.
fn search_response(hits: Vec<SearchHit>, plan: Plan) -> pb::SearchResponse {
    let results = hits
        .into_iter()
        .map(|h| pb::ScoredPoint {
            id: Some(convert::point_id_to_proto(&h.id)),
            score: h.score,
            payload: h.payload.map(|p| convert::json_to_struct(&p)),
            vector: h.vector.unwrap_or_default(),
            explain: None,
            features: Default::default(),
        })
        .collect();
    pb::SearchResponse {
        results,
        plan: plan.as_str().to_string(),
    }
}
