//! Membership changes of one group, bounded in time. openraft answers a membership change when
//! the leader that proposed it applies it; a leader that steps down part-way and is then removed
//! from the group never applies it, so an unbounded wait would hang the move that asked (seen:
//! ten minutes, until the mover's own deadline). Each step here gives up after a bound instead;
//! the caller runs the change again, and a change already made is found made.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;
use quiver_core::{Error, Result};

use crate::cluster::group::Group;
use crate::raft::NodeId;
use crate::sm::Namespace;

/// How long one membership step (a learner added, a joint change committed) may take.
pub const MEMBERSHIP_STEP_TIMEOUT: Duration = Duration::from_secs(15);

impl<N: Namespace> Group<N> {
    /// On the leader: adds `node` (at `address`) as a learner, then waits, up to `catch_up`,
    /// until it holds the log up to the entry that added it. Fails if this replica stops leading
    /// meanwhile.
    pub async fn add_caught_up_learner(
        &self,
        node: NodeId,
        address: &str,
        catch_up: Duration,
    ) -> Result<()> {
        let added = tokio::time::timeout(
            MEMBERSHIP_STEP_TIMEOUT,
            self.raft()
                .add_learner(node, BasicNode::new(address), false),
        )
        .await
        .map_err(|_| self.step_timed_out("adding a learner"))?
        .map_err(|e| self.membership_error(e, "add learner"))?;
        let target = added.log_id.index;
        let mut metrics = self.raft().metrics();
        let deadline = tokio::time::Instant::now() + catch_up;
        loop {
            let (leads, matched) = {
                let m = metrics.borrow_and_update();
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&node).copied().flatten())
                    .map(|log_id| log_id.index);
                (m.current_leader == Some(self.node_id()), matched)
            };
            if !leads {
                return Err(self.not_leader(self.leader()));
            }
            if matched.is_some_and(|index| index >= target) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(Error::Unavailable(format!("group {}: stopped", self.id())))
                }
                Err(_) => {
                    return Err(Error::Unavailable(format!(
                        "group {}: node {node} did not catch up within {} s",
                        self.id(),
                        catch_up.as_secs()
                    )))
                }
            }
        }
    }

    /// On the leader: makes `voters` the group's voters (and drops every learner), waiting at
    /// most [`MEMBERSHIP_STEP_TIMEOUT`] for the change to be committed.
    pub async fn set_voters(&self, voters: BTreeSet<NodeId>) -> Result<()> {
        if voters.is_empty() {
            return Err(Error::invalid("voters", "a group needs one voter"));
        }
        tokio::time::timeout(
            MEMBERSHIP_STEP_TIMEOUT,
            self.raft().change_membership(voters, false),
        )
        .await
        .map_err(|_| self.step_timed_out("changing the voters"))?
        .map_err(|e| self.membership_error(e, "change membership"))?;
        Ok(())
    }

    fn step_timed_out(&self, what: &str) -> Error {
        Error::Unavailable(format!(
            "group {}: {what} was not confirmed within {} s (a leader change?); run it again",
            self.id(),
            MEMBERSHIP_STEP_TIMEOUT.as_secs()
        ))
    }

    /// A refused membership change: "not the leader" with the leader's whereabouts, or
    /// unavailable with what was refused.
    fn membership_error(
        &self,
        e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
        what: &str,
    ) -> Error {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => Error::NotLeader {
                leader: f.leader_id,
                address: f.leader_node.map(|n| n.addr),
            },
            other => Error::Unavailable(format!("group {}: {what}: {other}", self.id())),
        }
    }
}
