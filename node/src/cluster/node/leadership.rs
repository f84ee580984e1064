//! Spreading shard leadership back out after failovers.
//!
//! Each shard's preferred leader is the first replica the shard map names for it; placement
//! spreads first replicas evenly over the nodes. After a failover the survivors lead the failed
//! node's shards, and nothing in Raft moves them back. So a replica here that is its shard's
//! preferred leader, and has followed another leader for `cluster.rebalance_leaders_after_secs`
//! with every entry of its log applied, campaigns for the leadership.
//!
//! openraft 0.9 has no leader transfer (it comes with 0.10, not released as stable), so the
//! campaign is an ordinary election, started early. It is as safe as any election: a candidate
//! whose log is behind a voter's gets no vote from it. A leader's own lease does not block it
//! (the leader refreshes it only when elected), so a caught-up candidate wins with the old
//! leader's vote. Writes in flight meanwhile fail as "not the leader" or time out, and clients
//! retry them with their idempotency keys, as in any failover. One that fails, for instance
//! because the leader had entries the candidate had not received yet, is simply made again a
//! period later.

use std::time::{Duration, Instant};

use openraft::ServerState;
use tracing::{info, warn};

use super::Node;

impl Node {
    /// Campaigns for the leadership of each shard group this node is the preferred leader of,
    /// once it has followed another leader, caught up, for the configured time.
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
                let led_elsewhere = metrics.state == ServerState::Follower
                    && metrics.current_leader.is_some_and(|l| l != self.id)
                    && metrics
                        .membership_config
                        .membership()
                        .voter_ids()
                        .any(|v| v == self.id);
                let caught_up = metrics.last_applied.map(|l| l.index) == metrics.last_log_index;
                if !(led_elsewhere && caught_up) {
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
            info!(
                group = replica.id(),
                leader = leader.unwrap_or(0),
                "campaigning to lead this shard again: this node is its preferred leader"
            );
            if let Err(e) = replica.raft().trigger().elect().await {
                warn!(group = replica.id(), error = %e, "the campaign could not start");
            }
        }
    }
}
