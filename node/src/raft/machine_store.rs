//! openraft's state machine over quiver's [`StateMachine`].
//!
//! Each Raft entry becomes one `apply_entry` call, which writes the entry's effect together with
//! the Raft position (last applied log id and membership, encoded as the state machine's opaque
//! `raft_state`) in one batch. Blank and membership entries advance the position only.
//!
//! A snapshot starts as a RocksDB checkpoint of the group plus hard links to its derived files
//! (each collection's sealed segment files), taken under the state-machine lock so it matches its log id
//! exactly. Off the lock, the checkpoint's rows and the derived files are streamed into a checksummed
//! snapshot file in the group's `snapshots/` directory, which openraft sends to a follower in
//! chunks. A follower receives the chunks into a file; installing it checks the file whole,
//! replaces its tables in bounded batches (finished at the next start if a crash cuts it short)
//! and its segment files, and rebuilds the collections, loading the segments from their files
//! and leaving only the points written after them to the optimizer. The current snapshot's meta is
//! kept beside its file, so a restarted node serves it without building a new one.
//!
//! Applying runs on a blocking thread: it writes RocksDB and the collections' appendable
//! segments (graphs are built by the optimizer, off this path).

use std::io::{Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageIOError,
};
use parking_lot::Mutex;
use quiver_core::encoding;
use tokio::fs::File;

use super::{ApplyResponse, Entry, LogId, NodeId, StorageError, StoredMembership, TypeConfig};
use crate::sm::snapshot::write_snapshot;
use crate::sm::{AppliedRecord, Namespace, Proposal, StateMachine};
use quiver_core::Error;

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
        encoding::decode("raft position", bytes)
            .map_err(|e| StorageIOError::read_state_machine(&e).into())
    }

    fn encode(&self) -> StorageResult<Vec<u8>> {
        encoding::encode(self).map_err(|e| StorageIOError::write_state_machine(&e).into())
    }
}

/// A snapshot file and what it covers.
#[derive(Debug, Clone)]
struct StoredSnapshot {
    meta: Meta,
    path: PathBuf,
}

/// The state machine of one group, as openraft sees it.
pub struct RaftStateMachineStore<N: Namespace> {
    inner: Arc<Mutex<StateMachine<N>>>,
    /// Where snapshot files (and the checkpoints they are made from) live.
    dir: PathBuf,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
    /// The file a snapshot from the leader is being received into.
    receiving: Arc<Mutex<Option<PathBuf>>>,
    builds: Arc<AtomicU64>,
}

// (By hand: a derive would ask `N: Clone`, and the store shares its state machine anyway.)
impl<N: Namespace> Clone for RaftStateMachineStore<N> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            dir: self.dir.clone(),
            current: self.current.clone(),
            receiving: self.receiving.clone(),
            builds: self.builds.clone(),
        }
    }
}

impl<N: Namespace> RaftStateMachineStore<N> {
    /// The state machine `inner`, with snapshot files in `dir`. The newest complete snapshot
    /// left there by an earlier run becomes the current one; anything else there is removed.
    pub fn new(inner: Arc<Mutex<StateMachine<N>>>, dir: PathBuf) -> Self {
        let store = Self {
            inner,
            dir,
            current: Arc::default(),
            receiving: Arc::default(),
            builds: Arc::default(),
        };
        let mut found: Vec<StoredSnapshot> = std::fs::read_dir(&store.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let path = entry.path();
                let bytes = std::fs::read(path.with_extension("meta")).ok()?;
                let meta: Meta = encoding::decode("snapshot meta", &bytes).ok()?;
                (path.extension()? == "snap").then_some(StoredSnapshot { meta, path })
            })
            .collect();
        found.sort_by_key(|s| s.meta.last_log_id);
        if let Some(newest) = found.pop() {
            *store.current.lock() = Some(newest);
        }
        let keep = store.current.lock().as_ref().map(|c| c.path.clone());
        for entry in std::fs::read_dir(&store.dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = entry.path();
            if keep
                .as_ref()
                .is_some_and(|k| k.with_extension("") == path.with_extension(""))
            {
                continue;
            }
            let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
        }
        store
    }

    /// Makes the snapshot at `path` the current one, with its meta beside it, unless the
    /// current one is newer (a build that finished after a newer snapshot was installed); the
    /// files of the one that loses are removed (a transfer still reading it keeps its handle).
    fn set_current(&self, meta: Meta, path: PathBuf) {
        let remove = |p: &PathBuf| {
            let _ = std::fs::remove_file(p);
            let _ = std::fs::remove_file(p.with_extension("meta"));
        };
        let mut current = self.current.lock();
        if current
            .as_ref()
            .is_some_and(|c| c.meta.last_log_id > meta.last_log_id)
        {
            remove(&path);
            return;
        }
        let persisted = encoding::encode(&meta)
            .ok()
            .is_some_and(|b| std::fs::write(path.with_extension("meta"), b).is_ok());
        if !persisted {
            tracing::warn!(path = %path.display(), "snapshot meta not written; it will be rebuilt after a restart");
        }
        let old = current.replace(StoredSnapshot {
            meta,
            path: path.clone(),
        });
        if let Some(old) = old.filter(|old| old.path != path) {
            remove(&old.path);
        }
    }
}

/// Whether `file` is the file at `path`.
fn is_same_file(file: &std::fs::File, path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

fn io_error(e: std::io::Error) -> StorageError {
    StorageIOError::write_snapshot(None, AnyError::error(e.to_string())).into()
}

fn sm_error(e: Error) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

fn join_error(e: tokio::task::JoinError) -> StorageError {
    StorageIOError::write_state_machine(AnyError::error(e.to_string())).into()
}

/// Applies entries in order; returns one response per entry.
fn apply_entries<N: Namespace>(
    sm: &mut StateMachine<N>,
    entries: Vec<Entry>,
) -> StorageResult<Vec<ApplyResponse>> {
    let mut position = RaftPosition::decode(sm.raft_state())?;
    let mut responses = Vec::with_capacity(entries.len());
    for entry in entries {
        position.last_applied = Some(entry.log_id);
        let index = entry.log_id.index;
        let outcome = match entry.payload {
            EntryPayload::Blank => sm.apply_entry(index, None, Some(position.encode()?)),
            EntryPayload::Normal(encoded) => {
                // An entry this build cannot read must stop the group, not be skipped.
                let proposal = Proposal::decode(N::KIND, &encoded).map_err(sm_error)?;
                sm.apply_entry(index, Some(&proposal), Some(position.encode()?))
            }
            EntryPayload::Membership(membership) => {
                position.membership = StoredMembership::new(Some(entry.log_id), membership);
                sm.apply_entry(index, None, Some(position.encode()?))
            }
        };
        match outcome {
            Err(
                e @ (Error::Storage(_)
                | Error::Internal(_)
                | Error::Serve(_)
                | Error::Unavailable(_)),
            ) => return Err(sm_error(e)),
            other => responses.push(ApplyResponse(other)),
        }
    }
    Ok(responses)
}

impl<N: Namespace> RaftStateMachine<TypeConfig> for RaftStateMachineStore<N> {
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

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<File>> {
        let build = self.builds.fetch_add(1, Ordering::Relaxed);
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(io_error)?;
        let path = self.dir.join(format!("incoming-{build}.snap"));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(io_error)?;
        *self.receiving.lock() = Some(path);
        Ok(Box::new(file))
    }

    async fn install_snapshot(&mut self, meta: &Meta, snapshot: Box<File>) -> StorageResult<()> {
        let mut file = snapshot.into_std().await;
        // The file the chunks were received into. A snapshot handed over any other way (the
        // conformance suite swaps in the leader's file) is copied into a file of our own.
        let receiving = self.receiving.lock().take();
        let received = match receiving {
            Some(path) if is_same_file(&file, &path) => path,
            unused => {
                if let Some(unused) = unused {
                    let _ = std::fs::remove_file(unused);
                }
                let build = self.builds.fetch_add(1, Ordering::Relaxed);
                let path = self.dir.join(format!("incoming-{build}.snap"));
                std::fs::create_dir_all(&self.dir).map_err(io_error)?;
                file.seek(SeekFrom::Start(0)).map_err(io_error)?;
                let mut copy = std::fs::File::create(&path).map_err(io_error)?;
                std::io::copy(&mut file, &mut copy).map_err(io_error)?;
                file = copy;
                path
            }
        };
        // An install cut short is finished from this file at the next start, and it is kept as
        // the current snapshot afterwards, so it must be whole after a power loss.
        file.sync_all().map_err(io_error)?;
        drop(file);
        let position = RaftPosition {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        let applied = AppliedRecord {
            index: meta.last_log_id.map(|id| id.index),
            raft_state: position.encode()?,
        };
        let inner = self.inner.clone();
        let signature = meta.signature();
        let path = received.clone();
        tokio::task::spawn_blocking(move || {
            inner
                .lock()
                .import(&path, applied)
                .map_err(|e| StorageError::from(StorageIOError::read_snapshot(Some(signature), &e)))
        })
        .await
        .map_err(join_error)??;
        let path = self.dir.join(format!("{}.snap", meta.snapshot_id));
        if std::fs::rename(&received, &path).is_ok() {
            self.set_current(meta.clone(), path);
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let current = self.current.lock().clone();
        match current {
            Some(s) => match File::open(&s.path).await {
                Ok(file) => Ok(Some(Snapshot {
                    meta: s.meta,
                    snapshot: Box::new(file),
                })),
                // Gone (removed by hand?): build a fresh one.
                Err(_) => self.build_snapshot().await.map(Some),
            },
            // After a restart the log may be purged up to a snapshot that is not at hand, so
            // build a fresh one (it covers at least as much).
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

impl<N: Namespace> RaftSnapshotBuilder<TypeConfig> for RaftStateMachineStore<N> {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let build = self.builds.fetch_add(1, Ordering::Relaxed);
        let inner = self.inner.clone();
        let dir = self.dir.clone();
        let (path, raft_state) = tokio::task::spawn_blocking(move || {
            let io = |e: std::io::Error| Error::Storage(format!("snapshot file: {e}"));
            std::fs::create_dir_all(&dir).map_err(io)?;
            let checkpoint_dir = dir.join(format!("checkpoint-{build}"));
            let _ = std::fs::remove_dir_all(&checkpoint_dir);
            // Under the lock only as long as the checkpoint takes: it matches the position.
            let checkpoint = inner.lock().checkpoint(&checkpoint_dir)?;
            let path = dir.join(format!("building-{build}.snap"));
            let mut out = std::io::BufWriter::new(std::fs::File::create(&path).map_err(io)?);
            let written = write_snapshot(checkpoint.state.as_ref(), &checkpoint.derived, &mut out);
            let raft_state = checkpoint.applied.raft_state;
            drop(checkpoint.state);
            let _ = std::fs::remove_dir_all(&checkpoint_dir);
            written?;
            out.into_inner()
                .map_err(|e| Error::Storage(e.to_string()))?
                .sync_all()
                .map_err(io)?;
            Ok::<_, Error>((path, raft_state))
        })
        .await
        .map_err(join_error)?
        .map_err(|e| StorageIOError::read_state_machine(&e))?;
        let position = RaftPosition::decode(&raft_state)?;
        let index = position.last_applied.map_or(0, |id| id.index);
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let meta = Meta {
            last_log_id: position.last_applied,
            last_membership: position.membership,
            snapshot_id: format!("{index}-{build}-{micros}"),
        };
        let final_path = self.dir.join(format!("{}.snap", meta.snapshot_id));
        tokio::fs::rename(&path, &final_path)
            .await
            .map_err(io_error)?;
        let file = File::open(&final_path).await.map_err(io_error)?;
        self.set_current(meta.clone(), final_path);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::{StoreBuilder, Suite};
    use tempfile::TempDir;

    use super::*;
    use crate::raft::log_store::LogStore;
    use crate::sm::Points;
    use crate::storage::{MemoryStorage, RocksEnv, RocksStorage, Storage};

    /// Both halves over one storage engine, in a fresh directory.
    fn stores(
        dir: TempDir,
        storage: Arc<dyn Storage>,
    ) -> StorageResult<(TempDir, LogStore, RaftStateMachineStore<Points>)> {
        let sm = StateMachine::<Points>::open(storage.clone(), &dir.path().join("derived"))
            .map_err(sm_error)?;
        let snapshots = dir.path().join("snapshots");
        Ok((
            dir,
            LogStore::new(storage),
            RaftStateMachineStore::new(Arc::new(Mutex::new(sm)), snapshots),
        ))
    }

    struct MemoryBuilder;
    impl StoreBuilder<TypeConfig, LogStore, RaftStateMachineStore<Points>, TempDir> for MemoryBuilder {
        async fn build(&self) -> StorageResult<(TempDir, LogStore, RaftStateMachineStore<Points>)> {
            stores(
                TempDir::new().expect("tempdir"),
                Arc::new(MemoryStorage::default()),
            )
        }
    }

    struct RocksBuilder;
    impl StoreBuilder<TypeConfig, LogStore, RaftStateMachineStore<Points>, TempDir> for RocksBuilder {
        async fn build(&self) -> StorageResult<(TempDir, LogStore, RaftStateMachineStore<Points>)> {
            let dir = TempDir::new().expect("tempdir");
            let rocks = RocksStorage::open(&dir.path().join("db"), &RocksEnv::for_tests())
                .map_err(sm_error)?;
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
