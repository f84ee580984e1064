//! The `Collections` gRPC service.
//!
//! Creating and dropping a collection changes the shard map, so it runs on the meta group's
//! leader; any other node forwards the request there. Descriptions are assembled from the shard
//! map and each shard's counts ([`Coordinator::info`]); a request naming a shard group (from a
//! coordinator) is answered by this node's replica of it.

use std::sync::Arc;

use futures::future::join_all;
use quiver_proto::v1 as pb;
use quiver_proto::v1::collections_client::CollectionsClient;
use quiver_proto::v1::collections_server::Collections;
use tonic::{Request, Response, Status};

use super::points::shard_replica;
use super::shard;
use super::{convert, forwarded, meta_leader_for};
use crate::coordinator::Coordinator;
use crate::node::Node;

/// Creates, describes, lists and drops collections.
pub struct CollectionsService {
    node: Arc<Node>,
    coordinator: Arc<Coordinator>,
}

impl CollectionsService {
    pub fn new(node: Arc<Node>, coordinator: Arc<Coordinator>) -> Self {
        Self { node, coordinator }
    }
}

#[tonic::async_trait]
impl Collections for CollectionsService {
    async fn create(
        &self,
        request: Request<pb::CreateCollectionRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        let config = self.node.config();
        let spec =
            convert::collection_spec(request.get_ref(), &config.limits, config.search.max_ef)?;
        let shard_count = convert::shard_count(request.get_ref().shard_count)?;
        if let Some(leader) = meta_leader_for(&self.node, &request)? {
            return CollectionsClient::new(leader)
                .create(forwarded(request.into_inner()))
                .await;
        }
        let req = request.into_inner();
        let name = spec.name.clone();
        self.node
            .create_collection(spec, shard_count, req.replication_factor, &req.request_id)
            .await?;
        Ok(Response::new(self.coordinator.info(&name).await?))
    }

    async fn get(
        &self,
        request: Request<pb::GetCollectionRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        if let Some(replica) = shard_replica(&self.node, &request)? {
            return Ok(Response::new(shard::info(
                &replica,
                &request.get_ref().name,
            )?));
        }
        Ok(Response::new(
            self.coordinator.info(&request.get_ref().name).await?,
        ))
    }

    async fn list(
        &self,
        _request: Request<pb::ListCollectionsRequest>,
    ) -> Result<Response<pb::ListCollectionsResponse>, Status> {
        let placements = self.node.placements().list();
        let infos = join_all(
            placements
                .iter()
                .map(|p| self.coordinator.info(&p.spec.name)),
        )
        .await;
        let collections = infos.into_iter().collect::<Result<_, _>>()?;
        Ok(Response::new(pb::ListCollectionsResponse { collections }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteCollectionRequest>,
    ) -> Result<Response<pb::DeleteCollectionResponse>, Status> {
        let name = convert::collection_name("name", &request.get_ref().name)?;
        if let Some(leader) = meta_leader_for(&self.node, &request)? {
            return CollectionsClient::new(leader)
                .delete(forwarded(request.into_inner()))
                .await;
        }
        self.node.drop_collection(&name).await?;
        Ok(Response::new(pb::DeleteCollectionResponse {}))
    }
}
