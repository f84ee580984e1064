//! The `Cluster` gRPC service: forming a cluster, adding and removing nodes, moving shard
//! replicas, status, and the shard map routers cache.
//!
//! Membership changes run on the meta group's leader (others forward there): a new node is
//! first added as a learner and caught up, then made a voter, so a slow joiner never costs the
//! group its quorum. Removing a node moves its shard replicas off first.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use quiver_proto::v1 as pb;
use quiver_proto::v1::cluster_client::ClusterClient;
use quiver_proto::v1::cluster_server::Cluster;
use tonic::{Request, Response, Status};

use quiver_core::convert::{self, Limits};

use super::{forwarded, meta_leader_for};
use crate::cluster::node::{Node, CATCH_UP_TIMEOUT};
use crate::raft::NodeId;
use quiver_core::Error;

/// Membership and status of this node's cluster.
pub struct ClusterService {
    node: Arc<Node>,
}

impl ClusterService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    fn node_info(&self, initialized: bool) -> pb::NodeInfo {
        pb::NodeInfo {
            id: self.node.id(),
            address: self.node.address().to_string(),
            initialized,
        }
    }

    /// This node's view: the members, the meta group and each shard replica it holds.
    fn status(&self) -> pb::ClusterStatus {
        let members = self
            .node
            .members()
            .into_iter()
            .map(|(id, address)| pb::NodeInfo {
                id,
                address,
                initialized: true,
            })
            .collect();
        let mut groups = vec![self.node.meta().status()];
        groups.extend(self.node.shards().iter().map(|s| s.status()));
        pb::ClusterStatus {
            node: Some(self.node_info(true)),
            members,
            groups,
        }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn identify(
        &self,
        _request: Request<pb::IdentifyRequest>,
    ) -> Result<Response<pb::NodeInfo>, Status> {
        let initialized = self.node.meta().is_initialized().await?;
        Ok(Response::new(self.node_info(initialized)))
    }

    async fn init(
        &self,
        _request: Request<pb::InitRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        if self.node.meta().is_initialized().await? {
            return Err(Error::AlreadyExists("this node's cluster".into()).into());
        }
        self.node.bootstrap().await?;
        Ok(Response::new(self.status()))
    }

    async fn add_node(
        &self,
        request: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        let address = request.into_inner().address;
        if address.parse::<std::net::SocketAddr>().is_err() {
            return Err(Error::invalid("address", format!("`{address}` is not ip:port")).into());
        }
        let meta = self.node.meta();
        if !meta.is_leader() {
            return Err(meta.not_leader(meta.leader()).into());
        }
        let channel = self
            .node
            .peers()
            .channel(&address)
            .map_err(|e| Error::invalid("address", e.to_string()))?;
        let info = tokio::time::timeout(
            Duration::from_secs(5),
            ClusterClient::new(channel).identify(pb::IdentifyRequest {}),
        )
        .await
        .map_err(|_| Error::Unavailable(format!("node at {address} did not answer")))?
        .map_err(|e| Error::Unavailable(format!("node at {address}: {}", e.message())))?
        .into_inner();
        if info.id == 0 {
            return Err(Error::invalid("address", "the node reports id 0").into());
        }
        let membership = meta.membership();
        if info.initialized && membership.get_node(&info.id).is_none() {
            // Its log holds another cluster's history; Raft cannot merge the two.
            return Err(Error::invalid(
                "address",
                format!(
                    "node {} at {address} already belongs to a cluster (start it with \
                     cluster.bootstrap = false and an empty data directory)",
                    info.id
                ),
            )
            .into());
        }
        if let Some(existing) = membership.get_node(&info.id) {
            if existing.addr != address {
                return Err(Error::AlreadyExists(format!(
                    "node {} (at {})",
                    info.id, existing.addr
                ))
                .into());
            }
        }
        meta.add_caught_up_learner(info.id, &address, CATCH_UP_TIMEOUT)
            .await?;
        let mut voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        voters.insert(info.id);
        meta.set_voters(voters).await?;
        Ok(Response::new(self.status()))
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        if let Some(leader) = meta_leader_for(&self.node, &request)? {
            return ClusterClient::new(leader)
                .remove_node(forwarded(request.into_inner()))
                .await;
        }
        self.node.remove_node(request.into_inner().id).await?;
        Ok(Response::new(self.status()))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        Ok(Response::new(self.status()))
    }

    async fn placements(
        &self,
        request: Request<pb::PlacementsRequest>,
    ) -> Result<Response<pb::PlacementsResponse>, Status> {
        // The meta leader has applied every change it acknowledged; a follower may lag. Asked
        // once on the client's behalf (never forwarded twice), and answered here if it fails.
        if let Ok(Some(leader)) = meta_leader_for(&self.node, &request) {
            let forwarded = tokio::time::timeout(
                Duration::from_secs(2),
                ClusterClient::new(leader).placements(forwarded(pb::PlacementsRequest {})),
            )
            .await;
            if let Ok(Ok(answer)) = forwarded {
                return Ok(answer);
            }
        }
        let members = self.node.members();
        let nodes = members
            .iter()
            .map(|(id, address)| pb::NodeInfo {
                id: *id,
                address: address.clone(),
                initialized: true,
            })
            .collect();
        let collections = self
            .node
            .placements()
            .list()
            .into_iter()
            .map(|p| {
                let mut info = convert::placement_info(&p, |n| members.get(&n).cloned());
                // Leader hints for the shards this node holds.
                for shard in &mut info.shards {
                    let leader = self.node.shard(shard.group).ok().and_then(|g| g.leader());
                    shard.leader = leader.unwrap_or(0);
                }
                info
            })
            .collect();
        let aliases = self
            .node
            .placements()
            .aliases()
            .into_iter()
            .map(|(alias, collection)| pb::Alias { alias, collection })
            .collect();
        let feature_registry =
            quiver_core::encoding::encode(self.node.placements().feature_registry().as_ref())?;
        Ok(Response::new(pb::PlacementsResponse {
            nodes,
            collections,
            aliases,
            feature_registry,
            limits: Some(convert::limits_to_pb(&Limits {
                request: self.node.config().limits.clone(),
                max_ef: self.node.config().search.max_ef,
            })),
        }))
    }

    async fn move_shard(
        &self,
        request: Request<pb::MoveShardRequest>,
    ) -> Result<Response<pb::MoveShardResponse>, Status> {
        if let Some(leader) = meta_leader_for(&self.node, &request)? {
            return ClusterClient::new(leader)
                .move_shard(forwarded(request.into_inner()))
                .await;
        }
        let req = request.into_inner();
        let replicas = self.node.move_shard(req.group, req.from, req.to).await?;
        Ok(Response::new(pb::MoveShardResponse { replicas }))
    }

    async fn init_shard(
        &self,
        request: Request<pb::InitShardRequest>,
    ) -> Result<Response<pb::GroupStatus>, Status> {
        let group = request.into_inner().group;
        Ok(Response::new(self.node.init_shard(group).await?))
    }

    async fn change_shard_replicas(
        &self,
        request: Request<pb::ChangeShardReplicasRequest>,
    ) -> Result<Response<pb::GroupStatus>, Status> {
        let req = request.into_inner();
        Ok(Response::new(
            self.node
                .change_shard_replicas(req.group, req.add, req.remove)
                .await?,
        ))
    }
}
