//! Moving shard replicas between nodes, and removing a node (its replicas moved off first). Runs
//! on the meta leader, one replica change at a time: the shard map is widened to the new replica,
//! the shard's leader adds it as a learner and swaps it in as a voter, then the map is narrowed
//! and the old replica drops its copy. Every step can be run again.

use std::collections::BTreeSet;
use std::time::Duration;

use quiver_core::placement::NodeId;
use quiver_core::{Error, Result};
use quiver_proto::v1 as pb;
use quiver_proto::v1::cluster_client::ClusterClient;
use tracing::info;

use super::{unanswered, Node, CATCH_UP_TIMEOUT};
use crate::cluster::membership::MEMBERSHIP_STEP_TIMEOUT;
use crate::sm::MetaCommand;

impl Node {
    /// Moves shard group `group`'s replica from node `from` to node `to`: `to` joins the group
    /// as a learner, catches up and becomes a voter in `from`'s place; then `from` drops its copy.
    /// Runs on the meta leader, one replica change at a time. Running a move again finishes it if
    /// it was cut short, and answers the same if it is done.
    pub async fn move_shard(&self, group: u64, from: NodeId, to: NodeId) -> Result<Vec<NodeId>> {
        let _one_at_a_time = self.moving.lock().await;
        self.move_shard_locked(group, from, to).await
    }

    async fn move_shard_locked(&self, group: u64, from: NodeId, to: NodeId) -> Result<Vec<NodeId>> {
        self.meta.check_writable()?;
        let (placement, shard) = self
            .placements()
            .by_group(group)
            .ok_or_else(|| Error::NotFound(format!("shard group {group}")))?;
        if !placement.ready {
            return Err(Error::Unavailable(format!(
                "collection `{}` is still being created",
                placement.spec.name
            )));
        }
        let moved_already = self.address_of(from).is_some()
            && !shard.replicas.contains(&from)
            && shard.replicas.contains(&to);
        if moved_already {
            // A member's replica moved before (a move run again after its answer was lost): the
            // same answer.
            return Ok(shard.replicas.clone());
        }
        if !shard.replicas.contains(&from) {
            return Err(Error::invalid(
                "from",
                format!("node {from} holds no replica of shard group {group}"),
            ));
        }
        if self.address_of(to).is_none() {
            return Err(Error::invalid(
                "to",
                format!("node {to} is not a cluster member"),
            ));
        }
        if from == to {
            return Err(Error::invalid("to", "is the same node as `from`"));
        }
        // 1. `to` hosts a (still empty) replica, so the group can reach it.
        let mut widened = shard.replicas.clone();
        let mut epoch = shard.epoch;
        if !widened.contains(&to) {
            widened.push(to);
            self.set_replicas(group, epoch, widened.clone()).await?;
            epoch += 1;
        }
        // 2. The shard's leader adds `to` (caught up as a learner first) and removes `from`. On
        // failure the widened map stays: the change may have been made after all, and a map
        // listing one replica too many is safe where one missing a voter is not. Running the
        // move again finishes it.
        self.change_shard_replicas_on_leader(group, &widened, to, from)
            .await?;
        // 3. `from` drops its copy once it applies this.
        let narrowed: Vec<NodeId> = widened.into_iter().filter(|n| *n != from).collect();
        self.set_replicas(group, epoch, narrowed.clone()).await?;
        info!(group, from, to, "shard replica moved");
        Ok(narrowed)
    }

    async fn set_replicas(&self, group: u64, epoch: u64, replicas: Vec<NodeId>) -> Result<()> {
        self.meta
            .write(
                "",
                MetaCommand::SetReplicas {
                    group,
                    epoch,
                    replicas,
                },
            )
            .await?;
        Ok(())
    }

    /// Asks the shard's leader (found among `replicas`) to add `add` and remove `remove`.
    async fn change_shard_replicas_on_leader(
        &self,
        group: u64,
        replicas: &[NodeId],
        add: NodeId,
        remove: NodeId,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + CATCH_UP_TIMEOUT;
        let mut last = Error::Unavailable(format!("shard group {group} has no leader"));
        while tokio::time::Instant::now() < deadline {
            for node in replicas {
                let request = pb::ChangeShardReplicasRequest { group, add, remove };
                let result = if *node == self.id {
                    self.change_shard_replicas(group, add, remove).await
                } else {
                    let Some(address) = self.address_of(*node) else {
                        continue;
                    };
                    let channel = self.peer(&address)?;
                    // the leader bounds its catch-up wait and each membership step
                    match tokio::time::timeout(
                        CATCH_UP_TIMEOUT + 3 * MEMBERSHIP_STEP_TIMEOUT,
                        ClusterClient::new(channel).change_shard_replicas(request),
                    )
                    .await
                    {
                        Err(_) => Err(unanswered(*node, &address)),
                        Ok(Ok(_)) => Ok(pb::GroupStatus::default()),
                        Ok(Err(status)) => Err(Error::Unavailable(format!(
                            "node {node}: {}",
                            status.message()
                        ))),
                    }
                };
                match result {
                    Ok(_) => return Ok(()),
                    Err(e) => last = e,
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(last)
    }

    /// On the shard's leader: adds `add` as a learner, waits for it to catch up, then makes the
    /// voters the old ones plus `add` minus `remove` (0: none).
    pub async fn change_shard_replicas(
        &self,
        group: u64,
        add: NodeId,
        remove: NodeId,
    ) -> Result<pb::GroupStatus> {
        let replica = self.shard(group)?;
        replica.check_writable()?;
        if !replica.is_leader() {
            return Err(replica.not_leader(replica.leader()));
        }
        let mut voters: BTreeSet<NodeId> = replica.membership().voter_ids().collect();
        if add != 0 && !voters.contains(&add) {
            let address = self
                .address_of(add)
                .ok_or_else(|| Error::invalid("add", format!("node {add} is not a member")))?;
            replica
                .add_caught_up_learner(add, &address, CATCH_UP_TIMEOUT)
                .await?;
            voters.insert(add);
        }
        if remove != 0 {
            voters.remove(&remove);
        }
        if voters.is_empty() {
            return Err(Error::invalid("remove", "a shard needs one voter"));
        }
        replica.set_voters(voters).await?;
        Ok(replica.status())
    }

    /// Moves every replica off node `node` (to the least loaded node without one), then
    /// removes it from the meta group. Runs on the meta leader.
    pub async fn remove_node(&self, node: NodeId) -> Result<()> {
        let _one_at_a_time = self.moving.lock().await;
        self.meta.check_writable()?;
        let membership = self.meta.membership();
        if membership.get_node(&node).is_none() {
            return Err(Error::NotFound(format!("node {node}")));
        }
        let mut voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        voters.remove(&node);
        if voters.is_empty() {
            return Err(Error::invalid("id", "cannot remove the last voter"));
        }
        for placement in self.placements().list() {
            for shard in placement.shards {
                if !shard.replicas.contains(&node) {
                    continue;
                }
                let load = self.placements().load();
                let target = voters
                    .iter()
                    .filter(|n| !shard.replicas.contains(n))
                    .min_by_key(|n| load.get(n).copied().unwrap_or(0));
                match target {
                    Some(to) => {
                        self.move_shard_locked(shard.group, node, *to).await?;
                    }
                    None if shard.replicas.len() > 1 => {
                        // Every other node has a replica already: shrink the group instead.
                        let rest: Vec<NodeId> = shard
                            .replicas
                            .iter()
                            .copied()
                            .filter(|n| *n != node)
                            .collect();
                        self.change_shard_replicas_on_leader(shard.group, &shard.replicas, 0, node)
                            .await?;
                        self.set_replicas(shard.group, shard.epoch, rest).await?;
                    }
                    None => {
                        return Err(Error::invalid(
                            "id",
                            format!(
                                "node {node} holds the only replica of shard group {} and no \
                                 other node can take it",
                                shard.group
                            ),
                        ))
                    }
                }
            }
        }
        self.meta.set_voters(voters).await
    }
}
