//! The `Raft` gRPC service: hands openraft's messages from peers to the named group.

use std::sync::Arc;

use quiver_proto::v1::raft_server::Raft as RaftRpc;
use quiver_proto::v1::{RaftReply, RaftRequest};
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};

use crate::cluster::node::Node;
use quiver_core::Error;

/// Receives Raft traffic for every group on this node.
pub struct RaftService {
    node: Arc<Node>,
}

impl RaftService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

#[allow(clippy::result_large_err)] // tonic's Status, as every handler returns
fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Status> {
    bincode::deserialize(payload)
        .map_err(|e| Error::invalid("payload", format!("not a raft message: {e}")).into())
}

#[allow(clippy::result_large_err)]
fn reply<T: serde::Serialize>(result: &T) -> Result<Response<RaftReply>, Status> {
    let payload = bincode::serialize(result)
        .map_err(|e| Status::from(Error::Internal(format!("encode raft reply: {e}"))))?;
    Ok(Response::new(RaftReply { payload }))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let req = request.into_inner();
        let raft = self.node.raft(req.group)?;
        reply(&raft.append_entries(decode(&req.payload)?).await)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = request.into_inner();
        let raft = self.node.raft(req.group)?;
        reply(&raft.vote(decode(&req.payload)?).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let req = request.into_inner();
        let raft = self.node.raft(req.group)?;
        reply(&raft.install_snapshot(decode(&req.payload)?).await)
    }
}
