//! The `Collections` gRPC service.

use std::sync::Arc;

use quiver_proto::v1 as pb;
use quiver_proto::v1::collections_server::Collections;
use tonic::{Request, Response, Status};

use super::convert;
use crate::collection::Collection;
use crate::command::{CollectionsCommand, Command};
use crate::node::Node;

/// Creates, describes, lists and drops collections.
pub struct CollectionsService {
    node: Arc<Node>,
}

impl CollectionsService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

fn info(c: &Collection) -> pb::CollectionInfo {
    convert::collection_info(
        &c.meta.spec,
        c.points_count(),
        c.graph().map_or(0, |g| g.len()),
    )
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
        let name = spec.name.clone();
        self.node
            .write(Command::Collections(CollectionsCommand::Create(spec)))
            .await?;
        Ok(Response::new(info(self.node.collection(&name)?.as_ref())))
    }

    async fn get(
        &self,
        request: Request<pb::GetCollectionRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        let name = convert::collection_name("name", &request.get_ref().name)?;
        Ok(Response::new(info(self.node.collection(&name)?.as_ref())))
    }

    async fn list(
        &self,
        _request: Request<pb::ListCollectionsRequest>,
    ) -> Result<Response<pb::ListCollectionsResponse>, Status> {
        let collections = self.node.collections().iter().map(|c| info(c)).collect();
        Ok(Response::new(pb::ListCollectionsResponse { collections }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteCollectionRequest>,
    ) -> Result<Response<pb::DeleteCollectionResponse>, Status> {
        let name = convert::collection_name("name", &request.get_ref().name)?;
        self.node
            .write(Command::Collections(CollectionsCommand::Drop { name }))
            .await?;
        Ok(Response::new(pb::DeleteCollectionResponse {}))
    }
}
