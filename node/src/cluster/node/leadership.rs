//! Spreading shard leadership back out after failovers.
//!
//! Each shard's preferred leader is the first replica the shard map names for it; placement
//! spreads first replicas evenly over the nodes. After a failover the survivors lead the failed
//! node's shards, and nothing in Raft moves them back. So a replica here that is its shard's
//! preferred leader, and has followed another leader for `cluster.rebalance_leaders_after_secs`
//! without lagging far behind, takes the leadership over.
//!
//! openraft 0.9 has no leader transfer (it comes with 0.10, not released as stable), so the
//! handover is built from what there is: the preferred replica asks the leader to hold its
//! writes (`Shard.Freeze`, the same hold a snapshot's cut uses; it answers with the leader's last
//! log index once the writes it accepted are applied), waits until its own log reaches that
//! index, and starts an election. With the leader's log still, the candidate's is as long, so
//! the leader grants its vote (a leader's own lease does not stop it: it is refreshed only when
//! elected) and the candidate wins. The hold is lifted (`Shard.Thaw`) either way, and lifts by
//! itself soon after. Writes held meanwhile go on when it lifts; at a deposed leader they are
//! refused as "not the leader" and retried at the new one with their idempotency keys, as in
//! any failover. A handover that fails is simply tried again a period later. It is as safe as
//! any election: a candidate whose log is behind a voter's gets no vote from it.

use std::time::{Duration, Instant};

use openraft::ServerState;
use quiver_core::{Error, Result};
use quiver_proto::v1 as pb;
use quiver_proto::wire::Channels;
use tracing::{info, warn};

use super::Node;
use crate::cluster::group::ShardGroup;
use crate::raft::NodeId;

impl Node {
    /// Campaigns for the leadership of each shard group this node is the preferred leader of,
    /// once it has followed another leader for the configured time.
    pub(super) async fn rebalance_leaders(&self) {
        let after = self.config.cluster.rebalance_leaders_after_secs;
        if after == 0 {
            return;
        }
        let after = Duration::from_secs(after);
        let now = Instant::now();
        let mut due = Vec::new();
        {
            let mut following = self.following_since.lock();
            let preferred: Vec<u64> = self
                .placements()
                .list()
                .into_iter()
                .filter(|p| p.ready)
                .flat_map(|p| p.shards)
                .filter(|s| s.replicas.first() == Some(&self.id))
                .map(|s| s.group)
                .collect();
            following.retain(|group, _| preferred.contains(group));
            for group in preferred {
                let Ok(replica) = self.shard(group) else {
                    following.remove(&group);
                    continue;
                };
                let metrics = replica.raft().metrics().borrow().clone();
                let voters: Vec<NodeId> =
                    metrics.membership_config.membership().voter_ids().collect();
                let led_elsewhere = metrics.state == ServerState::Follower
                    && metrics.current_leader.is_some_and(|l| l != self.id)
                    && voters.contains(&self.id)
                    && voters.len() <= MAX_HANDOVER_VOTERS;
                // (applying what it has; whether it has all the leader's log is checked at
                // the handover)
                let applied = metrics.last_applied.map_or(0, |l| l.index);
                let applying = metrics.last_log_index.unwrap_or(0).saturating_sub(applied);
                if !(led_elsewhere && applying <= MAX_LAG) {
                    following.remove(&group);
                    continue;
                }
                let since = *following.entry(group).or_insert(now);
                if now.duration_since(since) >= after {
                    // the next campaign, if this one fails, waits another period
                    following.insert(group, now);
                    due.push((replica, metrics.current_leader));
                }
            }
        }
        for (replica, leader) in due {
            let Some(address) = leader.and_then(|l| self.address_of(l)) else {
                continue;
            };
            let peers = self.peers.clone();
            let node = self.id;
            tokio::spawn(async move {
                let group = replica.id();
                info!(
                    group,
                    leader = leader.unwrap_or(0),
                    "taking over the leadership of this shard: this node is its preferred leader"
                );
                match take_over(&replica, node, &peers, &address).await {
                    Ok(true) => info!(group, "leading this shard again"),
                    Ok(false) => info!(group, "the handover did not happen; trying again later"),
                    Err(e) => warn!(group, error = %e, "the handover failed; trying again later"),
                }
            });
        }
    }
}

/// How many log entries a replica may lag and still take the leadership over (it catches up
/// on them while the leader holds its writes).
const MAX_LAG: u64 = 1_000;
/// How long the leader holds its writes for a handover, at most: longer than the steps below.
const HANDOVER_HOLD: Duration = Duration::from_secs(5);
/// How long a call to the leader, the catch-up and the election may each take.
const HANDOVER_CALL: Duration = Duration::from_millis(1_500);
/// The most voters a group may have for a handover: the other followers refuse votes while
/// the held leader's heartbeats reach them, so the candidate wins with the leader's vote and
/// its own only in a group of three (or two).
const MAX_HANDOVER_VOTERS: usize = 3;

/// Has `replica` (on node `node`) take the leadership of its group over from the leader at
/// `leader_address`; true once it leads.
async fn take_over(
    replica: &ShardGroup,
    node: NodeId,
    peers: &Channels,
    leader_address: &str,
) -> Result<bool> {
    let group = replica.id();
    let channel = peers
        .channel(leader_address)
        .map_err(|e| Error::Internal(format!("address `{leader_address}`: {e}")))?;
    let mut leader = pb::shard_client::ShardClient::new(channel);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let token = format!("handover/{group}/{node}/{nanos}");
    let call = |e: tonic::Status| Error::Unavailable(e.message().to_string());
    let late = |_| Error::Unavailable("the leader did not answer in time".into());
    let hold = pb::FreezeRequest {
        group,
        token: token.clone(),
        ttl_ms: HANDOVER_HOLD.as_millis() as u64,
        renew: false,
    };
    let held = tokio::time::timeout(HANDOVER_CALL, leader.freeze(hold))
        .await
        .map_err(late)
        .and_then(|answer| answer.map_err(call));
    let held = match held {
        Ok(held) => held.into_inner(),
        Err(e) => {
            // (the leader may have raised the hold all the same)
            let thaw = pb::ThawRequest { group, token };
            let _ = tokio::time::timeout(HANDOVER_CALL, leader.thaw(thaw)).await;
            return Err(e);
        }
    };
    let raft = replica.raft();
    let behind = held
        .last_log_index
        .saturating_sub(raft.metrics().borrow().last_log_index.unwrap_or(0));
    let caught_up = behind <= MAX_LAG
        && raft
            .wait(Some(HANDOVER_CALL))
            .metrics(
                |m| m.last_log_index.unwrap_or(0) >= held.last_log_index,
                "the log reaches the leader's",
            )
            .await
            .is_ok();
    let mut outcome = Ok(false);
    if caught_up {
        outcome = match raft.trigger().elect().await {
            Ok(()) => Ok(raft
                .wait(Some(HANDOVER_CALL))
                .metrics(|m| m.current_leader == Some(node), "this replica leads")
                .await
                .is_ok()),
            Err(e) => Err(Error::Internal(e.to_string())),
        };
    }
    let thaw = pb::ThawRequest { group, token };
    let _ = tokio::time::timeout(HANDOVER_CALL, leader.thaw(thaw)).await;
    outcome
}
