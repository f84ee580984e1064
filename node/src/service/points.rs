//! The `Points` gRPC service.
//!
//! A request naming a shard group (the `quiver-shard-group` header, set by coordinators) is
//! served by this node's replica of that group ([`super::shard`]); any other request is a
//! client's, and this node coordinates it over the collection's shards ([`Coordinator`]).

use std::sync::Arc;

use quiver_proto::v1 as pb;
use quiver_proto::v1::points_server::Points;
use tonic::{Request, Response, Status};

use super::shard;
use crate::coordinator::{Coordinator, SHARD_HEADER};
use crate::error::NodeError;
use crate::group::Group;
use crate::node::Node;

/// Upserts, gets, deletes, searches and scrolls points.
pub struct PointsService {
    node: Arc<Node>,
    coordinator: Arc<Coordinator>,
}

impl PointsService {
    pub fn new(node: Arc<Node>, coordinator: Arc<Coordinator>) -> Self {
        Self { node, coordinator }
    }
}

/// The shard replica a request names, if it names one.
#[allow(clippy::result_large_err)] // tonic's Status, as every handler returns
pub fn shard_replica<T>(node: &Node, request: &Request<T>) -> Result<Option<Arc<Group>>, Status> {
    let Some(value) = request.metadata().get(SHARD_HEADER) else {
        return Ok(None);
    };
    let group = value
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| NodeError::invalid(SHARD_HEADER, "not a shard group id"))?;
    // A shard this node's shard map no longer places here (its collection dropped, the replica
    // moved away) is refused even while its files are being removed.
    let placed_here = node
        .placements()
        .by_group(group)
        .is_some_and(|(_, shard)| shard.replicas.contains(&node.id()));
    if !placed_here {
        return Err(NodeError::NoReplica { group }.into());
    }
    Ok(Some(node.group(group)?))
}

#[tonic::async_trait]
impl Points for PointsService {
    async fn upsert(
        &self,
        request: Request<pb::UpsertRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let limits = &self.node.config().limits;
        let answer = match shard_replica(&self.node, &request)? {
            Some(g) => shard::upsert(&g, limits, request.into_inner()).await?,
            None => self.coordinator.upsert(request.into_inner()).await?,
        };
        Ok(Response::new(answer))
    }

    async fn get(
        &self,
        request: Request<pb::GetPointsRequest>,
    ) -> Result<Response<pb::GetPointsResponse>, Status> {
        let limits = &self.node.config().limits;
        let answer = match shard_replica(&self.node, &request)? {
            Some(g) => shard::get(&g, limits, request.into_inner()).await?,
            None => self.coordinator.get(request.into_inner()).await?,
        };
        Ok(Response::new(answer))
    }

    async fn delete(
        &self,
        request: Request<pb::DeletePointsRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let limits = &self.node.config().limits;
        let answer = match shard_replica(&self.node, &request)? {
            Some(g) => shard::delete(&g, limits, request.into_inner()).await?,
            None => self.coordinator.delete(request.into_inner()).await?,
        };
        Ok(Response::new(answer))
    }

    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let limits = &self.node.config().limits;
        let answer = match shard_replica(&self.node, &request)? {
            Some(g) => shard::search(&g, limits, request.into_inner()).await?,
            None => self.coordinator.search(request.into_inner()).await?,
        };
        Ok(Response::new(answer))
    }

    async fn scroll(
        &self,
        request: Request<pb::ScrollRequest>,
    ) -> Result<Response<pb::ScrollResponse>, Status> {
        let limits = &self.node.config().limits;
        let answer = match shard_replica(&self.node, &request)? {
            Some(g) => shard::scroll(&g, limits, request.into_inner()).await?,
            None => self.coordinator.scroll(request.into_inner()).await?,
        };
        Ok(Response::new(answer))
    }
}
