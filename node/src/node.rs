//! A node: its storage, its state machine and the collections it serves.
//!
//! Writes go through [`Node::write`], the one way state changes: it gives the command the next
//! log index and applies it on a blocking thread, one command at a time. This is a replication
//! group of one member; the cluster replaces this log with Raft and keeps the state machine.
//! Reads go straight to the catalog of collections.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use quiver_config::Config;
use quiver_index::filter::Filter;
use tracing::warn;

use crate::collection::search::PlannerConfig;
use crate::collection::Collection;
use crate::command::Command;
use crate::error::{NodeError, Result};
use crate::point::{PointId, PointRecord};
use crate::state_machine::{decode, graph_dir, points_prefix, Applied, Catalog, StateMachine};
use crate::storage::{RocksStorage, Storage, Table};

/// A storage node.
pub struct Node {
    config: Config,
    storage: Arc<dyn Storage>,
    state_machine: Arc<Mutex<StateMachine>>,
    catalog: Arc<Catalog>,
    graph_root: PathBuf,
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
    /// `graphs/`), creating it if needed.
    pub fn open(config: Config) -> Result<Self> {
        let dir = config.node.data_dir.clone();
        std::fs::create_dir_all(&dir)
            .map_err(|e| NodeError::Storage(format!("{}: {e}", dir.display())))?;
        let storage = RocksStorage::open(&dir.join("db"), config.storage.sync_writes)?;
        Self::open_with(config, Arc::new(storage), &dir.join("graphs"))
    }

    /// Opens a node over any storage.
    pub fn open_with(config: Config, storage: Arc<dyn Storage>, graph_root: &Path) -> Result<Self> {
        let state_machine = StateMachine::open(storage.clone(), graph_root)?;
        let catalog = state_machine.catalog();
        Ok(Self {
            config,
            storage,
            state_machine: Arc::new(Mutex::new(state_machine)),
            catalog,
            graph_root: graph_root.to_path_buf(),
        })
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

    /// Appends `command` to the log and applies it; returns once it is durable and visible.
    pub async fn write(&self, command: Command) -> Result<Applied> {
        let state_machine = self.state_machine.clone();
        tokio::task::spawn_blocking(move || {
            let mut sm = state_machine.lock();
            let index = sm.last_applied().map_or(0, |i| i + 1);
            sm.apply(index, &command)
        })
        .await
        .map_err(|e| NodeError::Internal(format!("apply task failed: {e}")))?
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
