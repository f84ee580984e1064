//! A node: its storage, its state machine and the collections it serves.
//!
//! Writes go through [`Node::write`], the one way state changes: the command is proposed to the
//! node's Raft group and acknowledged once committed and applied. A node started on its own
//! (`quiver dev`, `quiver serve`) runs a group of one member that elects itself; the cluster
//! adds members to the same group machinery. Reads go straight to the catalog of collections.

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
use crate::command::Command;
use crate::error::{NodeError, Result};
use crate::point::{PointId, PointRecord};
use crate::raft::log_store::LogStore;
use crate::raft::network::SoloNetwork;
use crate::raft::state_machine::RaftStateMachineStore;
use crate::raft::{NodeId, Raft};
use crate::state_machine::{decode, graph_dir, points_prefix, Applied, Catalog, StateMachine};
use crate::storage::{RocksStorage, Storage, Table};

/// The id of a node running on its own.
pub const SOLO_NODE_ID: NodeId = 1;

/// How long a write may wait for its group to commit it before failing as unavailable.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a new or restarted single-member group may take to elect itself.
const ELECTION_WAIT: Duration = Duration::from_secs(30);

/// A storage node.
pub struct Node {
    config: Config,
    storage: Arc<dyn Storage>,
    state_machine: Arc<Mutex<StateMachine>>,
    catalog: Arc<Catalog>,
    graph_root: PathBuf,
    raft: Raft,
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
    /// `graphs/`), creating it if needed, and waits until its group has a leader.
    pub async fn open(config: Config) -> Result<Self> {
        let dir = config.node.data_dir.clone();
        let sync = config.storage.sync_writes;
        let storage = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)
                .map_err(|e| NodeError::Storage(format!("{}: {e}", dir.display())))?;
            RocksStorage::open(&dir.join("db"), sync)
        })
        .await
        .map_err(|e| NodeError::Internal(format!("open task failed: {e}")))??;
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
        let state_machine =
            tokio::task::spawn_blocking(move || StateMachine::open(sm_storage, &root))
                .await
                .map_err(|e| NodeError::Internal(format!("open task failed: {e}")))??;
        let catalog = state_machine.catalog();
        let state_machine = Arc::new(Mutex::new(state_machine));
        let raft = start_solo_group(&config, storage.clone(), state_machine.clone()).await?;
        Ok(Self {
            config,
            storage,
            state_machine,
            catalog,
            graph_root: graph_root.to_path_buf(),
            raft,
        })
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
    pub async fn write(&self, command: Command) -> Result<Applied> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.raft.client_write(command)).await {
            Err(_) => Err(NodeError::Unavailable(format!(
                "the write was not committed within {} s",
                WRITE_TIMEOUT.as_secs()
            ))),
            Ok(Ok(response)) => response.data.0,
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(NodeError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Ok(Err(e)) => Err(NodeError::Unavailable(e.to_string())),
        }
    }

    pub fn last_applied(&self) -> Option<u64> {
        self.state_machine.lock().last_applied()
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

/// Starts (or restarts) the single-member group of a node running on its own.
async fn start_solo_group(
    config: &Config,
    storage: Arc<dyn Storage>,
    state_machine: Arc<Mutex<StateMachine>>,
) -> Result<Raft> {
    let raft_config = openraft::Config {
        cluster_name: "quiver".into(),
        heartbeat_interval: 100,
        election_timeout_min: 200,
        election_timeout_max: 400,
        install_snapshot_timeout: 60_000,
        // A snapshot copies every row, so take one only after many entries; the log keeps the
        // entries since the last one.
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(20_000),
        max_in_snapshot_log_to_keep: 1_000,
        ..Default::default()
    }
    .validate()
    .map_err(|e| NodeError::Internal(format!("raft config: {e}")))?;
    let raft = Raft::new(
        SOLO_NODE_ID,
        Arc::new(raft_config),
        SoloNetwork,
        LogStore::new(storage),
        RaftStateMachineStore::new(state_machine),
    )
    .await
    .map_err(|e| NodeError::Internal(format!("raft start: {e}")))?;
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| NodeError::Internal(format!("raft: {e}")))?;
    if !initialized {
        let members =
            BTreeMap::from([(SOLO_NODE_ID, BasicNode::new(config.node.listen.to_string()))]);
        raft.initialize(members)
            .await
            .map_err(|e| NodeError::Internal(format!("raft initialize: {e}")))?;
    }
    raft.wait(Some(ELECTION_WAIT))
        .state(ServerState::Leader, "single-member group elects itself")
        .await
        .map_err(|e| NodeError::Unavailable(format!("no leader: {e}")))?;
    Ok(raft)
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
