//! The `Cluster` gRPC service: forming a cluster, adding and removing nodes, and status.
//!
//! Membership changes run on the leader: a new node is first added as a learner and caught up
//! (by log or snapshot), then made a voter, so a slow joiner never costs the group its quorum.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ServerState};
use quiver_proto::v1 as pb;
use quiver_proto::v1::cluster_client::ClusterClient;
use quiver_proto::v1::cluster_server::Cluster;
use tonic::{Request, Response, Status};

use crate::node::{Node, MAIN_GROUP};
use crate::raft::NodeId;
use crate::NodeError;

fn current_membership(raft: &crate::raft::Raft) -> openraft::Membership<NodeId, BasicNode> {
    raft.metrics()
        .borrow()
        .membership_config
        .membership()
        .clone()
}

/// Membership and status of this node's cluster.
pub struct ClusterService {
    node: Arc<Node>,
}

impl ClusterService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    fn status(&self) -> pb::ClusterStatus {
        let raft = &self.node.group(MAIN_GROUP).expect("main group");
        let m = raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let learners: Vec<NodeId> = membership.learner_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, n)| pb::NodeInfo {
                id: *id,
                address: n.addr.clone(),
                initialized: true,
            })
            .collect();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let matched = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .map(|(id, log)| (*id, log.map_or(0, |l| l.index)))
                    .collect()
            })
            .unwrap_or_default();
        pb::ClusterStatus {
            node: Some(pb::NodeInfo {
                id: self.node.id(),
                address: self.node.address().to_string(),
                initialized: true,
            }),
            members,
            groups: vec![pb::GroupStatus {
                group: MAIN_GROUP,
                leader: m.current_leader.unwrap_or(0),
                term: m.current_term,
                voters,
                learners,
                role: role.into(),
                last_log_index: m.last_log_index.unwrap_or(0),
                last_applied_index: m.last_applied.map_or(0, |l| l.index),
                matched,
            }],
        }
    }

    fn membership_error<E: std::fmt::Display>(
        &self,
        e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
        what: E,
    ) -> Status {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => NodeError::NotLeader {
                leader: f.leader_id,
                address: f.leader_node.map(|n| n.addr),
            }
            .into(),
            other => NodeError::Unavailable(format!("{what}: {other}")).into(),
        }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn identify(
        &self,
        _request: Request<pb::IdentifyRequest>,
    ) -> Result<Response<pb::NodeInfo>, Status> {
        let initialized = self
            .node
            .group(MAIN_GROUP)?
            .is_initialized()
            .await
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        Ok(Response::new(pb::NodeInfo {
            id: self.node.id(),
            address: self.node.address().to_string(),
            initialized,
        }))
    }

    async fn init(
        &self,
        _request: Request<pb::InitRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        let raft = self.node.group(MAIN_GROUP)?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        if initialized {
            return Err(NodeError::AlreadyExists("this node's cluster".into()).into());
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
            return Err(
                NodeError::invalid("address", format!("`{address}` is not ip:port")).into(),
            );
        }
        let raft = self.node.group(MAIN_GROUP)?;
        let leader = raft.metrics().borrow().current_leader;
        if leader != Some(self.node.id()) {
            return Err(self.node.not_leader(leader).into());
        }
        let channel = self
            .node
            .peers()
            .channel(&address)
            .map_err(|e| NodeError::invalid("address", e.to_string()))?;
        let info = tokio::time::timeout(
            Duration::from_secs(5),
            ClusterClient::new(channel).identify(pb::IdentifyRequest {}),
        )
        .await
        .map_err(|_| NodeError::Unavailable(format!("node at {address} did not answer")))?
        .map_err(|e| NodeError::Unavailable(format!("node at {address}: {}", e.message())))?
        .into_inner();
        if info.id == 0 {
            return Err(NodeError::invalid("address", "the node reports id 0").into());
        }
        let membership = current_membership(raft);
        if info.initialized && membership.get_node(&info.id).is_none() {
            // Its log holds another cluster's history; Raft cannot merge the two.
            return Err(NodeError::invalid(
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
                return Err(NodeError::AlreadyExists(format!(
                    "node {} (at {})",
                    info.id, existing.addr
                ))
                .into());
            }
        }
        raft.add_learner(info.id, BasicNode::new(address.clone()), true)
            .await
            .map_err(|e| self.membership_error(e, "add learner"))?;
        let mut voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        voters.insert(info.id);
        raft.change_membership(voters, false)
            .await
            .map_err(|e| self.membership_error(e, "change membership"))?;
        Ok(Response::new(self.status()))
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        let id = request.into_inner().id;
        let raft = self.node.group(MAIN_GROUP)?;
        let membership = current_membership(raft);
        let mut voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if !voters.remove(&id) && membership.get_node(&id).is_none() {
            return Err(NodeError::NotFound(format!("node {id}")).into());
        }
        if voters.is_empty() {
            return Err(NodeError::invalid("id", "cannot remove the last voter").into());
        }
        raft.change_membership(voters, false)
            .await
            .map_err(|e| self.membership_error(e, "change membership"))?;
        Ok(Response::new(self.status()))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        Ok(Response::new(self.status()))
    }
}
