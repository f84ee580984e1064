//! Requests served by one shard replica: what a coordinator sends with the `quiver-shard-group`
//! header, or calls directly for a replica in its own process.
//!
//! Reads are answered from this replica's applied state after the request's consistency check:
//! `linearizable` confirms leadership with a quorum, `leader` (the default) requires this replica
//! to lead its group, `any` reads whatever it has applied. A write is visible to `linearizable`
//! and `leader` reads once acknowledged. A write with an idempotency key is applied once.

use quiver_config::LimitsConfig;
use quiver_index::filter::Filter;
use quiver_proto::v1 as pb;

use super::convert;
use crate::collection::search::SearchParams;
use crate::collection::Collection;
use crate::command::{Command, PointsCommand};
use crate::error::{NodeError, Result};
use crate::group::{blocking, Group, ReadConsistency};
use crate::node::once;
use crate::state_machine::Applied;

const DEFAULT_TOP_K: usize = 10;
const DEFAULT_SCROLL_LIMIT: usize = 100;

fn consistency(value: i32) -> Result<ReadConsistency> {
    match pb::ReadConsistency::try_from(value) {
        Ok(pb::ReadConsistency::Linearizable) => Ok(ReadConsistency::Linearizable),
        Ok(pb::ReadConsistency::Unspecified | pb::ReadConsistency::Leader) => {
            Ok(ReadConsistency::Leader)
        }
        Ok(pb::ReadConsistency::Any) => Ok(ReadConsistency::Any),
        Err(_) => Err(NodeError::invalid(
            "consistency",
            format!("unknown consistency {value}"),
        )),
    }
}

fn write_response(applied: Applied) -> pb::WriteResponse {
    pb::WriteResponse {
        applied_index: applied.index,
        affected: applied.affected,
    }
}

/// `value` of request field `field`, if it is within the configured `limit` (named by `key`).
fn within(field: &str, value: usize, limit: usize, key: &str) -> Result<usize> {
    if value > limit {
        return Err(NodeError::invalid(
            field,
            format!("{value} exceeds the limit of {limit} ({key})"),
        ));
    }
    Ok(value)
}

fn collection(group: &Group, name: &str) -> Result<std::sync::Arc<Collection>> {
    group.collection(&convert::collection_name("collection", name)?)
}

pub async fn upsert(
    group: &Group,
    limits: &LimitsConfig,
    req: pb::UpsertRequest,
) -> Result<pb::WriteResponse> {
    group.check_writable()?;
    let collection = collection(group, &req.collection)?;
    let points = convert::upsert_points(&req.points, &collection.meta.spec, limits)?;
    let command = Command::Points(PointsCommand::Upsert {
        collection: req.collection,
        collection_id: collection.meta.id,
        points,
    });
    let applied = group.write(once(&req.request_id, command)).await?;
    Ok(write_response(applied))
}

pub async fn get(
    group: &Group,
    limits: &LimitsConfig,
    req: pb::GetPointsRequest,
) -> Result<pb::GetPointsResponse> {
    group.read_barrier(consistency(req.consistency)?).await?;
    let collection = collection(group, &req.collection)?;
    let ids = convert::point_ids(&req.ids, limits)?;
    let points = collection
        .get(&ids)
        .into_iter()
        .map(|(id, vector, payload)| {
            convert::point_to_proto(&id, vector, &payload, req.with_vector, req.with_payload)
        })
        .collect();
    Ok(pb::GetPointsResponse { points })
}

pub async fn delete(
    group: &Group,
    limits: &LimitsConfig,
    req: pb::DeletePointsRequest,
) -> Result<pb::WriteResponse> {
    group.check_writable()?;
    let collection = collection(group, &req.collection)?;
    let filter = convert::request_filter(req.filter.as_ref(), &req.filter_json)?;
    if filter
        .as_ref()
        .is_some_and(|f| *f == Filter::And(Vec::new()))
    {
        return Err(NodeError::invalid(
            "filter",
            "an empty filter matches every point; drop the collection to delete everything",
        ));
    }
    let command = match (req.ids.is_empty(), filter) {
        (false, Some(_)) => {
            return Err(NodeError::invalid(
                "ids",
                "give either ids or a filter, not both",
            ))
        }
        (true, None) => {
            return Err(NodeError::invalid(
                "ids",
                "give ids or a filter to delete by",
            ))
        }
        (false, None) => PointsCommand::Delete {
            collection: collection.name().to_string(),
            collection_id: collection.meta.id,
            ids: convert::point_ids(&req.ids, limits)?,
        },
        (true, Some(filter)) => PointsCommand::DeleteByFilter {
            collection: collection.name().to_string(),
            collection_id: collection.meta.id,
            filter,
        },
    };
    let applied = group
        .write(once(&req.request_id, Command::Points(command)))
        .await?;
    Ok(write_response(applied))
}

pub async fn search(
    group: &Group,
    limits: &LimitsConfig,
    req: pb::SearchRequest,
) -> Result<pb::SearchResponse> {
    group.read_barrier(consistency(req.consistency)?).await?;
    let config = group.config();
    let collection = collection(group, &req.collection)?;
    let spec = &collection.meta.spec;
    let vector = convert::vector("vector", &req.vector, spec.dim as usize, spec.metric)?;
    let top_k = match req.top_k as usize {
        0 => DEFAULT_TOP_K,
        k => within("top_k", k, limits.max_top_k, "limits.max_top_k")?,
    };
    let ef = match req.ef as usize {
        0 => None,
        ef => Some(within("ef", ef, config.search.max_ef, "search.max_ef")?),
    };
    let params = SearchParams {
        vector,
        top_k,
        ef,
        filter: convert::request_filter(req.filter.as_ref(), &req.filter_json)?,
        exact: req.exact,
        with_payload: req.with_payload,
        with_vector: req.with_vector,
    };
    let planner = group.planner_config();
    let (hits, plan) = blocking("search", move || Ok(collection.search(&params, &planner))).await?;
    let results = hits
        .into_iter()
        .map(|h| pb::ScoredPoint {
            id: Some(convert::point_id_to_proto(&h.id)),
            score: h.score,
            payload: h.payload.map(|p| convert::json_to_struct(&p)),
            vector: h.vector.unwrap_or_default(),
        })
        .collect();
    Ok(pb::SearchResponse {
        results,
        plan: plan.as_str().to_string(),
    })
}

pub async fn scroll(
    group: &std::sync::Arc<Group>,
    limits: &LimitsConfig,
    req: pb::ScrollRequest,
) -> Result<pb::ScrollResponse> {
    group.read_barrier(consistency(req.consistency)?).await?;
    let collection = collection(group, &req.collection)?;
    let limit = match req.limit as usize {
        0 => DEFAULT_SCROLL_LIMIT,
        l => within(
            "limit",
            l,
            limits.max_scroll_limit,
            "limits.max_scroll_limit",
        )?,
    };
    let filter = convert::request_filter(req.filter.as_ref(), &req.filter_json)?;
    let replica = group.clone();
    let cursor = req.cursor.clone();
    let page = blocking("scroll", move || {
        let cursor = (!cursor.is_empty()).then_some(cursor.as_str());
        replica.scroll(&collection, cursor, limit, filter.as_ref())
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
                req.with_vector,
                req.with_payload,
            )
        })
        .collect();
    Ok(pb::ScrollResponse {
        points,
        next_cursor: page.next_cursor.unwrap_or_default(),
    })
}

/// This replica's counts of collection `name` and the leader it knows, as one shard.
pub fn info(group: &Group, name: &str) -> Result<pb::CollectionInfo> {
    let c = group.collection(&convert::collection_name("name", name)?)?;
    let mut info = convert::collection_info(&c.meta.spec, c.points_count(), 0);
    let indexed = c.graph().map_or(0, |g| g.len()) as u64;
    info.indexed_vectors = indexed;
    info.shards = vec![pb::ShardInfo {
        shard: 0,
        group: group.id(),
        replicas: Vec::new(),
        leader: group.leader().unwrap_or(0),
        points_count: c.points_count() as u64,
        indexed_vectors: indexed,
    }];
    Ok(info)
}
