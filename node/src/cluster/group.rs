//! One Raft group's replica on this node: its RocksDB, state machine and openraft instance.
//!
//! A node hosts the meta group ([`MetaGroup`]) and a replica of each shard placed on it
//! ([`ShardGroup`]); the two differ in their state machine's namespace, so a command of one can
//! never be proposed to the other. Every group has a data directory of its own (`db/` for
//! RocksDB, `derived/` for files derived from its rows, such as segment files). Writes go through
//! [`Group::write`]: proposed to the group, acknowledged once committed by a majority and
//! applied. Reads check their consistency with [`Group::read_barrier`] first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ServerState};
use parking_lot::Mutex;
use quiver_config::Config;
use quiver_index::filter::Filter;
use quiver_proto::v1 as pb;
use tracing::warn;

use crate::cluster::fence::WriteFence;
use crate::raft::log_store::LogStore;
use crate::raft::machine_store::RaftStateMachineStore;
use crate::raft::network::GrpcNetwork;
use crate::raft::{NodeId, Raft};
use crate::shard::search::PlannerConfig;
use crate::shard::Collection;
use crate::sm::catalogue::Placements;
use crate::sm::points::points_prefix;
use crate::sm::{Applied, Catalogue, Namespace, Points, Proposal, StateMachine};
use crate::storage::{RocksEnv, RocksStorage, Storage, Table};
use quiver_core::encoding;
use quiver_core::placement::shard_number;
use quiver_core::point::{PointId, PointRecord};
use quiver_core::shard::ReadConsistency;
use quiver_core::{Error, Result};
use quiver_proto::wire::Channels;

/// One page of a scroll.
#[derive(Debug, Clone)]
pub struct ScrollPage {
    pub points: Vec<(PointId, PointRecord)>,
    /// The last id of this page when more may follow; None at the end.
    pub next: Option<PointId>,
}

/// This node's replica of one Raft group whose state is namespace `N`.
pub struct Group<N: Namespace> {
    id: u64,
    node_id: NodeId,
    config: Arc<Config>,
    raft: Raft,
    storage: Arc<dyn Storage>,
    view: N::View,
    dir: PathBuf,
    /// Holds writes while a snapshot is cut (leader only).
    fence: WriteFence,
}

/// The meta group's replica.
pub type MetaGroup = Group<Catalogue>;
/// A shard group's replica.
pub type ShardGroup = Group<Points>;

impl<N: Namespace> Group<N> {
    /// Opens (or creates) the replica of group `id` in `dir` and starts its Raft instance.
    pub async fn open(
        config: Arc<Config>,
        id: u64,
        dir: &Path,
        peers: Channels,
        rocks: &RocksEnv,
    ) -> Result<Self> {
        let rocks = rocks.clone();
        let namespace = N::configured(&config);
        let db_dir = dir.join("db");
        let root = dir.join("derived");
        let (storage, state_machine) = blocking("open group", move || {
            let at = |e: Error| match e {
                Error::Storage(m) => Error::Storage(format!("{}: {m}", db_dir.display())),
                other => other,
            };
            std::fs::create_dir_all(&db_dir)
                .map_err(|e| Error::Storage(format!("{}: {e}", db_dir.display())))?;
            let storage: Arc<dyn Storage> = Arc::new(RocksStorage::open(&db_dir, &rocks)?);
            let state_machine =
                StateMachine::<N>::open_with(storage.clone(), &root, namespace).map_err(at)?;
            Ok((storage, state_machine))
        })
        .await?;
        let view = state_machine.view();
        let state_machine = Arc::new(Mutex::new(state_machine));
        let snapshots = dir.join("snapshots");
        let raft = start_raft(
            &config,
            id,
            storage.clone(),
            state_machine,
            snapshots,
            peers,
        )
        .await?;
        Ok(Self {
            id,
            node_id: config.cluster.node_id,
            config,
            raft,
            storage,
            view,
            dir: dir.to_path_buf(),
            fence: WriteFence::default(),
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The group's data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The hold on this replica's writes (see [`WriteFence`]).
    pub fn fence(&self) -> &WriteFence {
        &self.fence
    }

    /// The Raft term this replica is in.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.node_id)
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    pub async fn is_initialized(&self) -> Result<bool> {
        self.raft
            .is_initialized()
            .await
            .map_err(|e| Error::Internal(format!("raft: {e}")))
    }

    /// Forms the group with `members` if it was never formed, then waits (up to `wait`) until
    /// it has a leader.
    pub async fn initialize(
        &self,
        members: BTreeMap<NodeId, BasicNode>,
        wait: Duration,
    ) -> Result<()> {
        if !self.is_initialized().await? {
            if let Err(e) = self.raft.initialize(members).await {
                // Formed meanwhile (a concurrent call): that is what was asked.
                if !self.is_initialized().await? {
                    return Err(Error::Internal(format!("raft initialize: {e}")));
                }
            }
        }
        self.raft
            .wait(Some(wait))
            .metrics(|m| m.current_leader.is_some(), "the group elects a leader")
            .await
            .map_err(|e| Error::Unavailable(format!("group {} has no leader: {e}", self.id)))?;
        Ok(())
    }

    /// The group's members and their addresses.
    pub fn membership(&self) -> openraft::Membership<NodeId, BasicNode> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone()
    }

    /// Waits until a read at `consistency` may be served from this replica.
    pub async fn read_barrier(&self, consistency: ReadConsistency) -> Result<()> {
        match consistency {
            ReadConsistency::Any => Ok(()),
            ReadConsistency::Leader => {
                let leader = self.leader();
                if leader == Some(self.node_id) {
                    self.check_writable()
                } else {
                    Err(self.not_leader(leader))
                }
            }
            ReadConsistency::Linearizable => {
                // While an election is under way (no leader known) the read waits for one,
                // as a write does, so a follower then names the leader to go to.
                let timeout = Duration::from_millis(self.config.cluster.write_timeout_ms);
                let deadline = tokio::time::Instant::now() + timeout;
                loop {
                    match self.raft.ensure_linearizable().await {
                        Ok(_) => return Ok(()),
                        Err(RaftError::APIError(
                            openraft::error::CheckIsLeaderError::ForwardToLeader(f),
                        )) => {
                            if f.leader_id.is_some()
                                || tokio::time::Instant::now() >= deadline
                                || !self.wait_for_leader(deadline).await
                            {
                                return Err(self.not_leader(f.leader_id));
                            }
                        }
                        Err(e) => return Err(Error::Unavailable(e.to_string())),
                    }
                }
            }
        }
    }

    /// Waits, until `deadline`, for the group to elect a leader; false if none was elected.
    /// (It pauses first, in case the metrics already name a leader the core does not.)
    async fn wait_for_leader(&self, deadline: tokio::time::Instant) -> bool {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.raft
            .wait(Some(wait))
            .metrics(|m| m.current_leader.is_some(), "a leader is elected")
            .await
            .is_ok()
    }

    /// The error for a request this replica cannot serve, naming the leader when known.
    pub fn not_leader(&self, leader: Option<NodeId>) -> Error {
        let address = leader.and_then(|id| self.membership().get_node(&id).map(|n| n.addr.clone()));
        Error::NotLeader { leader, address }
    }

    /// Fails fast when another node is known to lead (a write sent here would be refused), or
    /// when this replica leads but has not heard from a quorum for longer than an election
    /// timeout: it is probably cut off and deposed, and a write here would only time out.
    pub fn check_writable(&self) -> Result<()> {
        match self.leader() {
            Some(leader) if leader != self.node_id => Err(self.not_leader(Some(leader))),
            Some(_) if self.lost_quorum() => Err(Error::NotLeader {
                leader: None,
                address: None,
            }),
            _ => Ok(()),
        }
    }

    /// True when this replica leads a group of several voters but no quorum has acknowledged
    /// it for longer than the longest election timeout.
    fn lost_quorum(&self) -> bool {
        let metrics = self.raft.metrics().borrow().clone();
        let voters = metrics.membership_config.membership().voter_ids().count();
        let limit = self.config.cluster.election_timeout_max_ms;
        // None: elected, but no quorum has acknowledged it yet; that is not a lost quorum.
        voters > 1 && metrics.millis_since_quorum_ack.is_some_and(|ms| ms > limit)
    }

    /// Proposes `command` to the group, applied once per `idempotency_key` unless it is empty;
    /// returns once it is committed, applied and visible. While an election is under way (no
    /// leader known) the write waits for one, within `cluster.write_timeout_ms`; a write to a
    /// follower fails with the leader's whereabouts.
    pub async fn write(&self, idempotency_key: &str, command: N::Command) -> Result<Applied> {
        let timeout = Duration::from_millis(self.config.cluster.write_timeout_ms);
        let deadline = tokio::time::Instant::now() + timeout;
        let unavailable = || {
            Error::Unavailable(format!(
                "the write was not confirmed within {} ms (cluster.write_timeout_ms); it may \
                 still be applied later",
                timeout.as_millis()
            ))
        };
        let encoded = Proposal::new(N::KIND, idempotency_key, command).encode()?;
        loop {
            let attempt = self.raft.client_write(encoded.clone());
            match tokio::time::timeout_at(deadline, attempt).await {
                Err(_) => return Err(unavailable()),
                Ok(Ok(response)) => return response.data.0,
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                    if f.leader_id.is_some() {
                        return Err(self.not_leader(f.leader_id));
                    }
                    // An election is under way: wait for its outcome, then try again.
                    if !self.wait_for_leader(deadline).await {
                        return Err(unavailable());
                    }
                }
                Ok(Err(e)) => return Err(Error::Unavailable(e.to_string())),
            }
        }
    }

    /// This replica's view of the group, serving `collection` as shard `shard`.
    fn status_serving(&self, collection: String, shard: u32) -> pb::GroupStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
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
        pb::GroupStatus {
            group: self.id,
            leader: m.current_leader.unwrap_or(0),
            term: m.current_term,
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            role: role.into(),
            last_log_index: m.last_log_index.unwrap_or(0),
            last_applied_index: m.last_applied.map_or(0, |l| l.index),
            matched,
            collection,
            shard,
        }
    }

    /// Stops the group's Raft instance.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            warn!(group = self.id, error = %e, "raft shutdown failed");
        }
    }
}

impl ShardGroup {
    pub fn planner_config(&self) -> PlannerConfig {
        PlannerConfig {
            exact_search_threshold: self.config.search.exact_search_threshold,
            default_ef: self.config.search.default_ef,
            max_ef: self.config.search.max_ef,
        }
    }

    pub fn collection(&self, name: &str) -> Result<Arc<Collection>> {
        self.view.get(name)
    }

    pub fn collections(&self) -> Vec<Arc<Collection>> {
        self.view.list()
    }

    /// The replica's store (for reads outside the state machine: the embedding cache).
    pub(crate) fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Up to `limit` points of `collection` in id order after `after`, keeping those that
    /// match `filter`. Blocking: call from a blocking thread.
    pub fn scroll(
        &self,
        collection: &Collection,
        after: Option<PointId>,
        limit: usize,
        filter: Option<&Filter>,
    ) -> Result<ScrollPage> {
        let prefix = points_prefix(collection.meta.id);
        let mut after = after.map(|id| [prefix.clone(), id.to_key()].concat());
        let mut points = Vec::new();
        loop {
            let page =
                self.storage
                    .scan(Table::Points, &prefix, after.as_deref(), limit.max(64))?;
            let exhausted = page.len() < limit.max(64);
            for (key, value) in page {
                after = Some(key.clone());
                let record: PointRecord = encoding::decode("point record", &value)?;
                if filter.is_none_or(|f| f.matches(&record.payload)) {
                    points.push((PointId::from_key(&key[prefix.len()..])?, record));
                    if points.len() == limit {
                        let next = points.last().map(|(id, _)| *id);
                        return Ok(ScrollPage { points, next });
                    }
                }
            }
            if exhausted {
                return Ok(ScrollPage { points, next: None });
            }
        }
    }

    /// This replica's view of the group.
    pub fn status(&self) -> pb::GroupStatus {
        let collection = self
            .collections()
            .first()
            .map(|c| c.name().to_string())
            .unwrap_or_default();
        self.status_serving(collection, shard_number(self.id))
    }
}

impl MetaGroup {
    /// The shard map this replica has applied.
    pub fn placements(&self) -> &Arc<Placements> {
        &self.view
    }

    /// This replica's view of the group.
    pub fn status(&self) -> pb::GroupStatus {
        self.status_serving(String::new(), 0)
    }
}

/// Runs `f` on a blocking thread (RocksDB, graph work) and returns its result.
pub(crate) async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("{what} task failed: {e}")))?
}

/// Starts (or restarts) this node's Raft instance of group `group`.
async fn start_raft<N: Namespace>(
    config: &Config,
    group: u64,
    storage: Arc<dyn Storage>,
    state_machine: Arc<Mutex<StateMachine<N>>>,
    snapshots: PathBuf,
    peers: Channels,
) -> Result<Raft> {
    let cluster = &config.cluster;
    let raft_config = openraft::Config {
        cluster_name: "quiver".into(),
        heartbeat_interval: cluster.heartbeat_ms,
        election_timeout_min: cluster.election_timeout_min_ms,
        election_timeout_max: cluster.election_timeout_max_ms,
        install_snapshot_timeout: 60_000,
        // A snapshot copies every row, so take one only after many entries.
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cluster.snapshot_every_entries),
        max_in_snapshot_log_to_keep: cluster.log_entries_kept,
        ..Default::default()
    }
    .validate()
    .map_err(|e| Error::Internal(format!("raft config: {e}")))?;
    Raft::new(
        cluster.node_id,
        Arc::new(raft_config),
        GrpcNetwork::new(group, peers),
        LogStore::new(storage),
        RaftStateMachineStore::new(state_machine, snapshots),
    )
    .await
    .map_err(|e| Error::Internal(format!("raft start: {e}")))
}
