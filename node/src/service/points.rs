//! The `Points` gRPC service.
//!
//! Reads are answered from this node's applied state after the request's consistency check:
//! `linearizable` confirms leadership with a quorum, `leader` (the default) requires this node to
//! be the leader, `any` reads whatever this replica has applied. A write is visible to
//! `linearizable` and `leader` reads once acknowledged.

use std::sync::Arc;

use quiver_index::filter::Filter;
use quiver_proto::v1 as pb;
use quiver_proto::v1::points_server::Points;
use tonic::{Request, Response, Status};

use super::convert;
use crate::collection::search::SearchParams;
use crate::collection::Collection;
use crate::command::{Command, PointsCommand};
use crate::error::NodeError;
use crate::node::{blocking, Node, ReadConsistency};
use crate::state_machine::Applied;

/// Upserts, gets, deletes, searches and scrolls points.
pub struct PointsService {
    node: Arc<Node>,
}

impl PointsService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    fn collection(&self, name: &str) -> Result<Arc<Collection>, NodeError> {
        self.node
            .collection(&convert::collection_name("collection", name)?)
    }
}

const DEFAULT_TOP_K: usize = 10;
const DEFAULT_SCROLL_LIMIT: usize = 100;

fn consistency(value: i32) -> Result<ReadConsistency, NodeError> {
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
fn within(field: &str, value: usize, limit: usize, key: &str) -> Result<usize, NodeError> {
    if value > limit {
        return Err(NodeError::invalid(
            field,
            format!("{value} exceeds the limit of {limit} ({key})"),
        ));
    }
    Ok(value)
}

#[tonic::async_trait]
impl Points for PointsService {
    async fn upsert(
        &self,
        request: Request<pb::UpsertRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let req = request.into_inner();
        self.node.check_writable()?;
        let collection = self.collection(&req.collection)?;
        let points = convert::upsert_points(
            &req.points,
            &collection.meta.spec,
            &self.node.config().limits,
        )?;
        let applied = self
            .node
            .write(Command::Points(PointsCommand::Upsert {
                collection: req.collection,
                collection_id: collection.meta.id,
                points,
            }))
            .await?;
        Ok(Response::new(write_response(applied)))
    }

    async fn get(
        &self,
        request: Request<pb::GetPointsRequest>,
    ) -> Result<Response<pb::GetPointsResponse>, Status> {
        let req = request.into_inner();
        self.node
            .read_barrier(consistency(req.consistency)?)
            .await?;
        let collection = self.collection(&req.collection)?;
        let ids = convert::point_ids(&req.ids, &self.node.config().limits)?;
        let points = collection
            .get(&ids)
            .into_iter()
            .map(|(id, vector, payload)| {
                convert::point_to_proto(&id, vector, &payload, req.with_vector, req.with_payload)
            })
            .collect();
        Ok(Response::new(pb::GetPointsResponse { points }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeletePointsRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let req = request.into_inner();
        self.node.check_writable()?;
        let collection = self.collection(&req.collection)?;
        let filter = convert::request_filter(req.filter.as_ref(), &req.filter_json)?;
        if filter
            .as_ref()
            .is_some_and(|f| *f == Filter::And(Vec::new()))
        {
            return Err(NodeError::invalid(
                "filter",
                "an empty filter matches every point; drop the collection to delete everything",
            )
            .into());
        }
        let command = match (req.ids.is_empty(), filter) {
            (false, Some(_)) => {
                return Err(
                    NodeError::invalid("ids", "give either ids or a filter, not both").into(),
                )
            }
            (true, None) => {
                return Err(NodeError::invalid("ids", "give ids or a filter to delete by").into())
            }
            (false, None) => PointsCommand::Delete {
                collection: collection.name().to_string(),
                collection_id: collection.meta.id,
                ids: convert::point_ids(&req.ids, &self.node.config().limits)?,
            },
            (true, Some(filter)) => PointsCommand::DeleteByFilter {
                collection: collection.name().to_string(),
                collection_id: collection.meta.id,
                filter,
            },
        };
        let applied = self.node.write(Command::Points(command)).await?;
        Ok(Response::new(write_response(applied)))
    }

    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let req = request.into_inner();
        self.node
            .read_barrier(consistency(req.consistency)?)
            .await?;
        let config = self.node.config();
        let collection = self.collection(&req.collection)?;
        let spec = &collection.meta.spec;
        let vector = convert::vector("vector", &req.vector, spec.dim as usize, spec.metric)?;
        let top_k = match req.top_k as usize {
            0 => DEFAULT_TOP_K,
            k => within("top_k", k, config.limits.max_top_k, "limits.max_top_k")?,
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
        let planner = self.node.planner_config();
        let (hits, plan) =
            blocking("search", move || Ok(collection.search(&params, &planner))).await?;
        let results = hits
            .into_iter()
            .map(|h| pb::ScoredPoint {
                id: Some(convert::point_id_to_proto(&h.id)),
                score: h.score,
                payload: h.payload.map(|p| convert::json_to_struct(&p)),
                vector: h.vector.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::SearchResponse {
            results,
            plan: plan.as_str().to_string(),
        }))
    }

    async fn scroll(
        &self,
        request: Request<pb::ScrollRequest>,
    ) -> Result<Response<pb::ScrollResponse>, Status> {
        let req = request.into_inner();
        self.node
            .read_barrier(consistency(req.consistency)?)
            .await?;
        let limits = &self.node.config().limits;
        let collection = self.collection(&req.collection)?;
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
        let node = self.node.clone();
        let cursor = req.cursor.clone();
        let page = blocking("scroll", move || {
            let cursor = (!cursor.is_empty()).then_some(cursor.as_str());
            node.scroll(&collection, cursor, limit, filter.as_ref())
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
        Ok(Response::new(pb::ScrollResponse {
            points,
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }
}
