//! A node: its storage, its state machine and the collections it serves.
//!
//! Writes go through [`Node::write`], the one way state changes: the command is proposed to the
//! node's Raft group and acknowledged once committed by a majority and applied. A node started
//! with `cluster.bootstrap` forms a group of itself alone on first start (`quiver dev`); other
//! nodes join it with `quiver cluster join`. Reads go to the local collections after the
//! request's consistency check ([`Node::read_barrier`]).
//!
//! For now every node holds one group (group 0) with all data; shards as groups of their own
//! build on the same pieces.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ServerState};
use parking_lot::Mutex;
use quiver_config::Config;
use quiver_index::filter::Filter;
use tracing::warn;

use crate::collection::search::PlannerConfig;
use crate::collection::Collection;
use crate::command::{Command, EncodedCommand};
use crate::error::{NodeError, Result};
use crate::point::{PointId, PointRecord};
use crate::raft::log_store::LogStore;
use crate::raft::network::{GrpcNetwork, Peers};
use crate::raft::state_machine::RaftStateMachineStore;
use crate::raft::{NodeId, Raft};
use crate::state_machine::{decode, graph_dir, points_prefix, Applied, Catalog, StateMachine};
use crate::storage::{RocksStorage, Storage, Table};

/// The group that holds everything until data is sharded into groups of its own.
pub const MAIN_GROUP: u64 = 0;

/// How long a single-member group may take to elect itself at start.
const ELECTION_WAIT: Duration = Duration::from_secs(30);

/// How a read must relate to the group's leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadConsistency {
    /// Confirmed with a quorum that this node is still leader, and applied up to the commit point
    /// seen at the time of the read.
    Linearizable,
    /// This node believes it is the leader; it may briefly be a deposed one.
    Leader,
    /// Whatever this replica has applied, which may lag.
    Any,
}

/// A storage node.
pub struct Node {
    config: Config,
    storage: Arc<dyn Storage>,
    catalog: Arc<Catalog>,
    graph_root: PathBuf,
    raft: Raft,
    peers: Peers,
    id: NodeId,
    address: String,
}

/// One page of a scroll.
#[derive(Debug, Clone)]
pub struct ScrollPage {
    pub points: Vec<(PointId, PointRecord)>,
    /// Where the next page starts; None at the end.
    pub next_cursor: Option<String>,
}

impl Node {
    /// Opens the node's data under `config.node.data_dir` (RocksDB in `db/`, graph dumps in
    /// `graphs/`), creating it if needed. With `cluster.bootstrap`, see [`Node::bootstrap`].
    pub async fn open(config: Config) -> Result<Self> {
        let dir = config.node.data_dir.clone();
        let sync = config.storage.sync_writes;
        let storage = blocking("open storage", move || {
            std::fs::create_dir_all(&dir)
                .map_err(|e| NodeError::Storage(format!("{}: {e}", dir.display())))?;
            RocksStorage::open(&dir.join("db"), sync)
        })
        .await?;
        let graph_root = config.node.data_dir.join("graphs");
        Self::open_with(config, Arc::new(storage), &graph_root).await
    }

    /// Opens a node over any storage.
    pub async fn open_with(
        config: Config,
        storage: Arc<dyn Storage>,
        graph_root: &Path,
    ) -> Result<Self> {
        let sm_storage = storage.clone();
        let root = graph_root.to_path_buf();
        let state_machine = blocking("open state machine", move || {
            StateMachine::open(sm_storage, &root)
        })
        .await?;
        let catalog = state_machine.catalog();
        let state_machine = Arc::new(Mutex::new(state_machine));
        let peers = Peers::default();
        let id = config.cluster.node_id;
        let address = config.cluster.advertised(config.node.listen);
        let raft = start_group(&config, storage.clone(), state_machine, peers.clone()).await?;
        let node = Self {
            config,
            storage,
            catalog,
            graph_root: graph_root.to_path_buf(),
            raft,
            peers,
            id,
            address,
        };
        if node.config.cluster.bootstrap {
            node.bootstrap().await?;
        }
        Ok(node)
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The address peers and clients reach this node at.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Connections to other nodes.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// The Raft group `group` on this node.
    pub fn group(&self, group: u64) -> Result<&Raft> {
        if group == MAIN_GROUP {
            Ok(&self.raft)
        } else {
            Err(NodeError::NotFound(format!("raft group {group}")))
        }
    }

    /// Forms a cluster of this node alone if its group was never initialized, and waits until a
    /// group of this node alone has elected it.
    pub async fn bootstrap(&self) -> Result<()> {
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| NodeError::Internal(format!("raft: {e}")))?;
        if !initialized {
            let members = BTreeMap::from([(self.id, BasicNode::new(self.address.clone()))]);
            self.raft
                .initialize(members)
                .await
                .map_err(|e| NodeError::Internal(format!("raft initialize: {e}")))?;
        }
        let alone = {
            let metrics = self.raft.metrics().borrow().clone();
            let voters: Vec<NodeId> = metrics.membership_config.membership().voter_ids().collect();
            voters == [self.id]
        };
        if alone {
            self.raft
                .wait(Some(ELECTION_WAIT))
                .state(ServerState::Leader, "a single-member group elects itself")
                .await
                .map_err(|e| NodeError::Unavailable(format!("no leader: {e}")))?;
        }
        Ok(())
    }

    /// Waits until a read at `consistency` may be served from this replica.
    pub async fn read_barrier(&self, consistency: ReadConsistency) -> Result<()> {
        match consistency {
            ReadConsistency::Any => Ok(()),
            ReadConsistency::Leader => {
                let leader = self.raft.metrics().borrow().current_leader;
                if leader == Some(self.id) {
                    Ok(())
                } else {
                    Err(self.not_leader(leader))
                }
            }
            ReadConsistency::Linearizable => match self.raft.ensure_linearizable().await {
                Ok(_) => Ok(()),
                Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(
                    f,
                ))) => Err(self.not_leader(f.leader_id)),
                Err(e) => Err(NodeError::Unavailable(e.to_string())),
            },
        }
    }

    /// The error for a request this replica cannot serve, naming the leader when known.
    pub fn not_leader(&self, leader: Option<NodeId>) -> NodeError {
        let address = leader.and_then(|id| {
            let metrics = self.raft.metrics().borrow().clone();
            metrics
                .membership_config
                .membership()
                .get_node(&id)
                .map(|n| n.addr.clone())
        });
        NodeError::NotLeader { leader, address }
    }

    /// Fails fast when another node is known to lead (a write sent here would be refused).
    pub fn check_writable(&self) -> Result<()> {
        match self.raft.metrics().borrow().current_leader {
            Some(leader) if leader != self.id => Err(self.not_leader(Some(leader))),
            _ => Ok(()),
        }
    }

    /// Stops the node's Raft group.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            warn!(error = %e, "raft shutdown failed");
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn planner_config(&self) -> PlannerConfig {
        PlannerConfig {
            exact_search_threshold: self.config.search.exact_search_threshold,
            default_ef: self.config.search.default_ef,
            max_ef: self.config.search.max_ef,
        }
    }

    /// Proposes `command` to the group; returns once it is committed, applied and visible.
    /// While an election is under way (no leader known) the write waits for one, within
    /// `cluster.write_timeout_ms`; a write to a follower fails with the leader's whereabouts.
    pub async fn write(&self, command: Command) -> Result<Applied> {
        let timeout = Duration::from_millis(self.config.cluster.write_timeout_ms);
        let deadline = tokio::time::Instant::now() + timeout;
        let unavailable = || {
            NodeError::Unavailable(format!(
                "the write was not confirmed within {} ms (cluster.write_timeout_ms); it may \
                 still be applied later",
                timeout.as_millis()
            ))
        };
        let encoded = EncodedCommand(command.encode()?);
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
                    let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
                    let elected = self
                        .raft
                        .wait(Some(wait))
                        .metrics(|m| m.current_leader.is_some(), "a leader is elected")
                        .await;
                    if elected.is_err() {
                        return Err(unavailable());
                    }
                }
                Ok(Err(e)) => return Err(NodeError::Unavailable(e.to_string())),
            }
        }
    }

    pub fn collection(&self, name: &str) -> Result<Arc<Collection>> {
        self.catalog.get(name)
    }

    pub fn collections(&self) -> Vec<Arc<Collection>> {
        self.catalog.list()
    }

    /// Up to `limit` points of `collection` in id order after `cursor`, keeping those that
    /// match `filter`.
    pub fn scroll(
        &self,
        collection: &Collection,
        cursor: Option<&str>,
        limit: usize,
        filter: Option<&Filter>,
    ) -> Result<ScrollPage> {
        let prefix = points_prefix(collection.meta.id);
        let mut after = match cursor {
            Some(c) => Some([prefix.clone(), decode_cursor(c)?.to_key()].concat()),
            None => None,
        };
        let mut points = Vec::new();
        loop {
            let page =
                self.storage
                    .scan(Table::Points, &prefix, after.as_deref(), limit.max(64))?;
            let exhausted = page.len() < limit.max(64);
            for (key, value) in page {
                after = Some(key.clone());
                let record: PointRecord = decode(&value)?;
                if filter.is_none_or(|f| f.matches(&record.payload)) {
                    points.push((PointId::from_key(&key[prefix.len()..])?, record));
                    if points.len() == limit {
                        let next = points.last().map(|(id, _)| encode_cursor(id));
                        return Ok(ScrollPage {
                            points,
                            next_cursor: next,
                        });
                    }
                }
            }
            if exhausted {
                return Ok(ScrollPage {
                    points,
                    next_cursor: None,
                });
            }
        }
    }

    /// Dumps every graph that changed enough since its last dump (all changed ones with
    /// `force`). Blocking: call from a blocking thread.
    pub fn dump_graphs(&self, force: bool) {
        let threshold = if force {
            1
        } else {
            self.config.storage.hnsw_dump_every_inserts
        };
        for collection in self.collections() {
            if collection.graph_inserts_since_dump() < threshold {
                continue;
            }
            let dir = graph_dir(&self.graph_root, collection.meta.id);
            if let Err(e) = collection.dump_graph(&dir) {
                warn!(collection = %collection.name(), error = %e, "graph dump failed");
            }
        }
    }
}

/// Runs `f` on a blocking thread (RocksDB, graph work) and returns its result.
pub(crate) async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| NodeError::Internal(format!("{what} task failed: {e}")))?
}

/// Starts (or restarts) this node's replica of the main group.
async fn start_group(
    config: &Config,
    storage: Arc<dyn Storage>,
    state_machine: Arc<Mutex<StateMachine>>,
    peers: Peers,
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
    .map_err(|e| NodeError::Internal(format!("raft config: {e}")))?;
    Raft::new(
        cluster.node_id,
        Arc::new(raft_config),
        GrpcNetwork::new(MAIN_GROUP, peers),
        LogStore::new(storage),
        RaftStateMachineStore::new(state_machine),
    )
    .await
    .map_err(|e| NodeError::Internal(format!("raft start: {e}")))
}

/// A scroll cursor is the last returned id: `n:<u64>` or `u:<uuid>`.
fn encode_cursor(id: &PointId) -> String {
    match id {
        PointId::Num(n) => format!("n:{n}"),
        PointId::Uuid(u) => format!("u:{u}"),
    }
}

fn decode_cursor(cursor: &str) -> Result<PointId> {
    let bad = || NodeError::invalid("cursor", format!("malformed cursor `{cursor}`"));
    match cursor.split_once(':') {
        Some(("n", n)) => n.parse().map(PointId::Num).map_err(|_| bad()),
        Some(("u", u)) => uuid::Uuid::parse_str(u)
            .map(PointId::Uuid)
            .map_err(|_| bad()),
        _ => Err(bad()),
    }
}
