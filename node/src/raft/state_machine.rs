//! openraft's state machine over quiver's [`StateMachine`].
//!
//! Each Raft entry becomes one `apply_entry` call, which writes the entry's effect together with
//! the Raft position (last applied log id and membership, encoded as the state machine's opaque
//! `raft_state`) in one batch. Blank and membership entries advance the position only.
//!
//! A snapshot is every row of the state-machine tables, taken under the state-machine lock so it
//! matches its log id exactly, encoded with bincode and streamed by openraft in chunks. Installing
//! one replaces the tables in one batch and rebuilds the collections (graphs are rebuilt from the
//! installed points). The current snapshot is kept in memory; after a restart one is built on
//! demand. (A RocksDB checkpoint streamed from disk would avoid holding it in memory and the
//! copy under the lock; that is the next step.)
//!
//! Applying runs on a blocking thread: it writes RocksDB and inserts into HNSW graphs.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageIOError,
};
use parking_lot::Mutex;

use super::{ApplyResponse, Entry, LogId, NodeId, StorageError, StoredMembership, TypeConfig};
use crate::command::Command;
use crate::state_machine::{AppliedRecord, StateMachine, StateRows};
use crate::NodeError;

type StorageResult<T> = Result<T, StorageError>;
type Meta = SnapshotMeta<NodeId, openraft::BasicNode>;

/// The Raft position stored with the state machine.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct RaftPosition {
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

impl RaftPosition {
    fn decode(bytes: &[u8]) -> StorageResult<Self> {
        if bytes.is_empty() {
            return Ok(Self::default());
        }
        bincode::deserialize(bytes).map_err(|e| StorageIOError::read_state_machine(&e).into())
    }

    fn encode(&self) -> StorageResult<Vec<u8>> {
        bincode::serialize(self).map_err(|e| StorageIOError::write_state_machine(&e).into())
    }
}

#[derive(Debug, Clone)]
struct StoredSnapshot {
    meta: Meta,
    data: Vec<u8>,
}

/// The state machine of one group, as openraft sees it.
#[derive(Clone)]
pub struct RaftStateMachineStore {
    inner: Arc<Mutex<StateMachine>>,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
    builds: Arc<AtomicU64>,
}

impl RaftStateMachineStore {
    pub fn new(inner: Arc<Mutex<StateMachine>>) -> Self {
        Self {
            inner,
            current: Arc::default(),
            builds: Arc::default(),
        }
    }
}

fn sm_error(e: NodeError) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

fn join_error(e: tokio::task::JoinError) -> StorageError {
    StorageIOError::write_state_machine(AnyError::error(e.to_string())).into()
}

/// Applies entries in order; returns one response per entry.
fn apply_entries(sm: &mut StateMachine, entries: Vec<Entry>) -> StorageResult<Vec<ApplyResponse>> {
    let mut position = RaftPosition::decode(sm.raft_state())?;
    let mut responses = Vec::with_capacity(entries.len());
    for entry in entries {
        position.last_applied = Some(entry.log_id);
        let index = entry.log_id.index;
        let outcome = match entry.payload {
            EntryPayload::Blank => sm.apply_entry(index, None, Some(position.encode()?)),
            EntryPayload::Normal(encoded) => {
                // An entry this build cannot read must stop the group, not be skipped.
                let command = Command::decode(&encoded.0).map_err(sm_error)?;
                sm.apply_entry(index, Some(&command), Some(position.encode()?))
            }
            EntryPayload::Membership(membership) => {
                position.membership = StoredMembership::new(Some(entry.log_id), membership);
                sm.apply_entry(index, None, Some(position.encode()?))
            }
        };
        match outcome {
            Err(
                e @ (NodeError::Storage(_)
                | NodeError::Internal(_)
                | NodeError::Serve(_)
                | NodeError::Unavailable(_)),
            ) => return Err(sm_error(e)),
            other => responses.push(ApplyResponse(other)),
        }
    }
    Ok(responses)
}

impl RaftStateMachine<TypeConfig> for RaftStateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId>, StoredMembership)> {
        let position = RaftPosition::decode(self.inner.lock().raft_state())?;
        Ok((position.last_applied, position.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<ApplyResponse>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || apply_entries(&mut inner.lock(), entries))
            .await
            .map_err(join_error)?
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let rows: StateRows = bincode::deserialize(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let position = RaftPosition {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        let applied = AppliedRecord {
            index: meta.last_log_id.map(|id| id.index),
            raft_state: position.encode()?,
        };
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.lock().import(rows, applied))
            .await
            .map_err(join_error)?
            .map_err(sm_error)?;
        *self.current.lock() = Some(StoredSnapshot {
            meta: meta.clone(),
            data,
        });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let current = self.current.lock().clone();
        match current {
            Some(s) => Ok(Some(Snapshot {
                meta: s.meta,
                snapshot: Box::new(Cursor::new(s.data)),
            })),
            // Snapshots live in memory; after a restart the log may be purged up to a snapshot
            // that is gone, so build a fresh one (it covers at least as much).
            None if RaftPosition::decode(self.inner.lock().raft_state())?
                .last_applied
                .is_some() =>
            {
                self.build_snapshot().await.map(Some)
            }
            None => Ok(None),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for RaftStateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let inner = self.inner.clone();
        let (rows, raft_state) = tokio::task::spawn_blocking(move || {
            let sm = inner.lock();
            sm.export().map(|rows| (rows, sm.raft_state().to_vec()))
        })
        .await
        .map_err(join_error)?
        .map_err(|e| StorageIOError::read_state_machine(&e))?;
        let position = RaftPosition::decode(&raft_state)?;
        let data =
            bincode::serialize(&rows).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let build = self.builds.fetch_add(1, Ordering::Relaxed);
        let index = position.last_applied.map_or(0, |id| id.index);
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let meta = Meta {
            last_log_id: position.last_applied,
            last_membership: position.membership,
            snapshot_id: format!("{index}-{build}-{micros}"),
        };
        *self.current.lock() = Some(StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        });
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::{StoreBuilder, Suite};
    use tempfile::TempDir;

    use super::*;
    use crate::raft::log_store::LogStore;
    use crate::storage::{MemoryStorage, RocksStorage, Storage};

    /// Both halves over one storage engine, in a fresh directory.
    fn stores(
        dir: TempDir,
        storage: Arc<dyn Storage>,
    ) -> StorageResult<(TempDir, LogStore, RaftStateMachineStore)> {
        let sm =
            StateMachine::open(storage.clone(), &dir.path().join("graphs")).map_err(sm_error)?;
        Ok((
            dir,
            LogStore::new(storage),
            RaftStateMachineStore::new(Arc::new(Mutex::new(sm))),
        ))
    }

    struct MemoryBuilder;
    impl StoreBuilder<TypeConfig, LogStore, RaftStateMachineStore, TempDir> for MemoryBuilder {
        async fn build(&self) -> StorageResult<(TempDir, LogStore, RaftStateMachineStore)> {
            stores(
                TempDir::new().expect("tempdir"),
                Arc::new(MemoryStorage::default()),
            )
        }
    }

    struct RocksBuilder;
    impl StoreBuilder<TypeConfig, LogStore, RaftStateMachineStore, TempDir> for RocksBuilder {
        async fn build(&self) -> StorageResult<(TempDir, LogStore, RaftStateMachineStore)> {
            let dir = TempDir::new().expect("tempdir");
            let rocks = RocksStorage::open(&dir.path().join("db"), false).map_err(sm_error)?;
            stores(dir, Arc::new(rocks))
        }
    }

    /// openraft's storage conformance suite (it runs its own tokio runtimes).
    #[test]
    fn openraft_storage_suite_in_memory() -> StorageResult<()> {
        Suite::test_all(MemoryBuilder)
    }

    #[test]
    fn openraft_storage_suite_on_rocksdb() -> StorageResult<()> {
        Suite::test_all(RocksBuilder)
    }
}
