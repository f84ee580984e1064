//! The state machine: applies [`Command`]s in log order onto storage, then onto the in-memory
//! collections.
//!
//! Invariants:
//! - `apply(index, cmd)` with `index <= last_applied` changes nothing (re-delivery is a no-op);
//! - the last applied index is written in the same atomic batch as the command's data, so after a
//!   crash storage holds a prefix of the log, never half an entry;
//! - a command that cannot take effect (unknown collection, wrong dimension after a re-create) is
//!   still consumed: the index advances, nothing else changes, and the error is returned. The
//!   outcome depends only on the state and the command, so every replica agrees;
//! - memory (collections, graphs) is updated only after the batch is durable, and is always
//!   derivable from storage.
//!
//! Beside the index, the applied record carries an opaque `raft_state` (the replication layer's
//! last applied log id and membership), written in the same batch, so the layer above never sees
//! data without the position it was applied at.
//!
//! The same state machine serves every group: a shard's holds its collection's points (seeded
//! with the collection from the shard map), the meta group's holds the shard map
//! ([`Placements`], changed by `Meta` commands). A command wrapped in `Once` is applied at most
//! once per key: its outcome is stored with it, in the same batch, for [`ONCE_WINDOW`] entries.
//! Snapshots are the state-machine tables' rows and the graph dumps' files, streamed
//! ([`crate::sm::snapshot`]) and checksummed; installing one writes its rows in bounded batches and
//! is finished on the next open if a crash cuts it short.

pub mod command;
pub mod snapshot;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use quiver_core::encoding;
use quiver_index::Slot;
use tracing::{info, warn};

use crate::cluster::placement::Placements;
use crate::shard::{persist, Collection};
use crate::sm::command::{CollectionsCommand, Command, MetaCommand, PointsCommand};
use crate::sm::snapshot::{read_snapshot, SnapshotEntry};
use crate::storage::{prefix_end, Storage, Table, WriteBatch};
use quiver_core::placement::{shard_group, Placement, ShardPlacement};
use quiver_core::point::{CollectionMeta, JsonMap, PointId, PointRecord};
use quiver_core::{Error, Result};

const APPLIED_KEY: &[u8] = b"applied";
/// The encoding format the state was written in (one byte, [`encoding::FORMAT`]).
const FORMAT_KEY: &[u8] = b"format";
const INSTALLING_KEY: &[u8] = b"installing";
const COLLECTION_PREFIX: &[u8] = b"collection/";
const NEXT_SLOT_PREFIX: &[u8] = b"next_slot/";
const PLACEMENT_PREFIX: &[u8] = b"placement/";
const ONCE_PREFIX: &[u8] = b"once/";
const ONCE_ORDER_PREFIX: &[u8] = b"once_order/";

/// How many log entries an idempotency key is remembered for.
pub const ONCE_WINDOW: u64 = 100_000;

fn once_key(key: &str) -> Vec<u8> {
    [ONCE_PREFIX, key.as_bytes()].concat()
}

fn placement_key(name: &str) -> Vec<u8> {
    [PLACEMENT_PREFIX, name.as_bytes()].concat()
}

fn collection_key(name: &str) -> Vec<u8> {
    [COLLECTION_PREFIX, name.as_bytes()].concat()
}

fn next_slot_key(collection_id: u64) -> Vec<u8> {
    [NEXT_SLOT_PREFIX, &collection_id.to_be_bytes()].concat()
}

/// Key prefix of a collection's points.
pub fn points_prefix(collection_id: u64) -> Vec<u8> {
    collection_id.to_be_bytes().to_vec()
}

/// Key of one point.
pub fn point_key(collection_id: u64, id: &PointId) -> Vec<u8> {
    [points_prefix(collection_id), id.to_key()].concat()
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    encoding::encode(value)
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    encoding::decode("stored record", bytes)
}

/// Records the encoding format of a new state, or checks the one an existing state recorded:
/// data written in another format is refused, naming both, rather than misread.
fn check_format(storage: &dyn Storage) -> Result<()> {
    let recorded = storage.get(Table::Meta, FORMAT_KEY)?;
    if recorded.is_none() {
        let mut empty = true;
        for table in Table::ALL {
            empty &= storage.last(table)?.is_none();
        }
        if empty {
            let mut batch = WriteBatch::default();
            batch.put(Table::Meta, FORMAT_KEY, vec![encoding::FORMAT]);
            return storage.write(batch);
        }
    }
    encoding::check_format("this replica's data", recorded.as_deref())
}

/// The collections a node serves, shared by the state machine (writer) and readers.
#[derive(Debug, Default)]
pub struct Catalog {
    collections: RwLock<BTreeMap<String, Arc<Collection>>>,
}

impl Catalog {
    pub fn get(&self, name: &str) -> Result<Arc<Collection>> {
        self.collections
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("collection `{name}`")))
    }

    pub fn list(&self) -> Vec<Arc<Collection>> {
        self.collections.read().values().cloned().collect()
    }
}

/// The result of applying one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Applied {
    pub index: u64,
    /// Points written or deleted, or collections created or dropped.
    pub affected: u64,
    /// True when the index had been applied before and nothing was done.
    pub duplicate: bool,
}

/// What to do in memory once a batch is durable.
enum Effect {
    Create(CollectionMeta),
    Drop(Arc<Collection>),
    Upsert(Arc<Collection>, Vec<(PointId, Slot, Vec<f32>, JsonMap)>),
    Delete(Arc<Collection>, Vec<PointId>),
    Place(Placement),
    Unplace(String),
}

/// The position the state machine has applied up to.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AppliedRecord {
    /// Log index of the last applied entry (None: nothing applied yet; Raft logs start at 0).
    pub index: Option<u64>,
    /// Opaque state of the replication layer at that entry.
    #[serde(with = "encoding::bytes")]
    pub raft_state: Vec<u8>,
}

/// A consistent copy of the state, made by [`StateMachine::checkpoint`].
pub struct Checkpoint {
    pub state: Arc<dyn Storage>,
    /// The graph dumps that go with `state`, by collection id (see [`graph_dir`]).
    pub graphs: PathBuf,
    pub applied: AppliedRecord,
}

/// Written before a snapshot's rows replace the state, removed with the last of them: while it
/// is there the tables are incomplete, and opening the state finishes the install from the
/// snapshot file it names.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Installing {
    snapshot: PathBuf,
    applied: AppliedRecord,
}

/// A snapshot's rows are written in batches of about this many bytes, so installing a large
/// shard does not hold it all in memory.
const INSTALL_BATCH_BYTES: usize = 4 << 20;

/// Replaces the state-machine tables of `storage` with the rows of the snapshot file at
/// `snapshot`, the applied record with `applied`, and the graph dumps under `graph_root` with
/// the snapshot's (graphs without one are rebuilt from the installed points). The file is
/// checked whole before anything changes; after that a crash leaves the [`Installing`] record,
/// and [`StateMachine::open`] runs this again.
fn install_snapshot(
    storage: &dyn Storage,
    snapshot: &Path,
    applied: &AppliedRecord,
    graph_root: &Path,
) -> Result<()> {
    let open = || {
        std::fs::File::open(snapshot)
            .map_err(|e| Error::Storage(format!("snapshot {}: {e}", snapshot.display())))
    };
    read_snapshot(open()?, &mut |_| Ok(()))?;
    let mut batch = WriteBatch::default();
    for table in Table::STATE_MACHINE {
        if let Some((last, _)) = storage.last(table)? {
            batch.delete_range(table, Vec::new(), last.clone());
            batch.delete(table, last);
        }
    }
    let installing = Installing {
        // (absolute: the next start may run from another directory)
        snapshot: std::fs::canonicalize(snapshot)
            .map_err(|e| Error::Storage(format!("snapshot {}: {e}", snapshot.display())))?,
        applied: applied.clone(),
    };
    batch.put(Table::Meta, INSTALLING_KEY, encode(&installing)?);
    storage.write(batch)?;
    let _ = std::fs::remove_dir_all(graph_root);
    let mut batch = WriteBatch::default();
    let mut bytes = 0;
    read_snapshot(open()?, &mut |entry| {
        match entry {
            SnapshotEntry::Row(table, k, v) => {
                bytes += k.len() + v.len();
                batch.put(table, k, v);
                if bytes >= INSTALL_BATCH_BYTES {
                    storage.write(std::mem::take(&mut batch))?;
                    bytes = 0;
                }
            }
            SnapshotEntry::File(relative, content) => {
                let path = graph_root.join(relative);
                let io =
                    |e: std::io::Error| Error::Storage(format!("install {}: {e}", path.display()));
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                let mut file = std::fs::File::create(&path).map_err(io)?;
                std::io::copy(content, &mut file).map_err(io)?;
                file.sync_all().map_err(io)?;
            }
        }
        Ok(())
    })?;
    batch.put(Table::Meta, APPLIED_KEY, encode(applied)?);
    batch.delete(Table::Meta, INSTALLING_KEY);
    storage.write(batch)
}

/// Applies commands to storage and collections.
pub struct StateMachine {
    storage: Arc<dyn Storage>,
    catalog: Arc<Catalog>,
    placements: Arc<Placements>,
    graph_root: PathBuf,
    applied: AppliedRecord,
}

impl StateMachine {
    /// Opens the state in `storage`, rebuilding every collection (graphs from their dumps under
    /// `graph_root` when present).
    pub fn open(storage: Arc<dyn Storage>, graph_root: &Path) -> Result<Self> {
        if let Some(bytes) = storage.get(Table::Meta, INSTALLING_KEY)? {
            let installing: Installing = decode(&bytes)?;
            info!(snapshot = %installing.snapshot.display(), "finishing an interrupted snapshot install");
            install_snapshot(
                storage.as_ref(),
                &installing.snapshot,
                &installing.applied,
                graph_root,
            )?;
        }
        check_format(storage.as_ref())?;
        let catalog = Arc::new(Catalog::default());
        let placements = Arc::new(Placements::default());
        let applied = load(storage.as_ref(), &catalog, &placements, graph_root)?;
        Ok(Self {
            storage,
            catalog,
            placements,
            graph_root: graph_root.to_path_buf(),
            applied,
        })
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.clone()
    }

    /// The shard map, as far as this (meta) state has applied it.
    pub fn placements(&self) -> Arc<Placements> {
        self.placements.clone()
    }

    pub fn last_applied(&self) -> Option<u64> {
        self.applied.index
    }

    /// The replication layer's state as of the last applied entry.
    pub fn raft_state(&self) -> &[u8] {
        &self.applied.raft_state
    }

    /// Applies `command` at log position `index` (see the module invariants).
    pub fn apply(&mut self, index: u64, command: &Command) -> Result<Applied> {
        self.apply_entry(index, Some(command), None)
    }

    /// Applies a log entry: a command, or nothing (a Raft blank or membership entry, which only
    /// advances the position). `raft_state`, when given, replaces the stored replication state in
    /// the same batch.
    pub fn apply_entry(
        &mut self,
        index: u64,
        command: Option<&Command>,
        raft_state: Option<Vec<u8>>,
    ) -> Result<Applied> {
        if self.applied.index.is_some_and(|applied| index <= applied) {
            return Ok(Applied {
                index,
                affected: 0,
                duplicate: true,
            });
        }
        let applied = AppliedRecord {
            index: Some(index),
            raft_state: raft_state.unwrap_or_else(|| self.applied.raft_state.clone()),
        };
        let (once, command) = match command {
            Some(Command::Once { key, command }) => (Some(key.as_str()), Some(command.as_ref())),
            other => (None, other),
        };
        let mut batch = WriteBatch::default();
        if let Some(key) = once {
            if let Some(first) = self.storage.get(Table::Meta, &once_key(key))? {
                // Applied before under this key: consume the index, repeat the first outcome.
                batch.put(Table::Meta, APPLIED_KEY, encode(&applied)?);
                self.storage.write(batch)?;
                self.applied = applied;
                let outcome: Result<Applied> = decode(&first)?;
                return outcome.map(|a| Applied {
                    duplicate: true,
                    ..a
                });
            }
        }
        let planned = match command {
            Some(command) => self
                .plan(index, command, &mut batch)
                .map(|(e, n)| (Some(e), n)),
            None => Ok((None, 0)),
        };
        let (effect, affected) = match planned {
            Ok(x) => x,
            Err(e @ Error::Storage(_)) | Err(e @ Error::Internal(_)) => return Err(e),
            Err(rejected) => {
                // Consume the index so the log and the state stay in step; change nothing else.
                let mut only_index = WriteBatch::default();
                only_index.put(Table::Meta, APPLIED_KEY, encode(&applied)?);
                if let Some(key) = once {
                    self.remember(&mut only_index, key, index, &Err(rejected.clone()))?;
                }
                self.storage.write(only_index)?;
                self.applied = applied;
                return Err(rejected);
            }
        };
        let outcome = Applied {
            index,
            affected,
            duplicate: false,
        };
        if let Some(key) = once {
            self.remember(&mut batch, key, index, &Ok(outcome))?;
        }
        batch.put(Table::Meta, APPLIED_KEY, encode(&applied)?);
        self.storage.write(batch)?;
        self.applied = applied;
        if let Some(effect) = effect {
            self.install(effect);
        }
        Ok(outcome)
    }

    /// Records the outcome of the command applied once under `key` at `index`, and forgets
    /// keys applied more than [`ONCE_WINDOW`] entries ago (a few at a time, oldest first).
    fn remember(
        &self,
        batch: &mut WriteBatch,
        key: &str,
        index: u64,
        outcome: &Result<Applied>,
    ) -> Result<()> {
        batch.put(Table::Meta, once_key(key), encode(outcome)?);
        let order_key = |i: u64| [ONCE_ORDER_PREFIX, &i.to_be_bytes()].concat();
        batch.put(Table::Meta, order_key(index), key.as_bytes().to_vec());
        for (k, old_key) in self.storage.scan(Table::Meta, ONCE_ORDER_PREFIX, None, 8)? {
            let at = k[ONCE_ORDER_PREFIX.len()..]
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| Error::Storage("corrupt once-order key".into()))?;
            if at + ONCE_WINDOW >= index {
                break;
            }
            batch.delete(Table::Meta, k);
            batch.delete(Table::Meta, once_key(&String::from_utf8_lossy(&old_key)));
        }
        Ok(())
    }

    /// Makes sure the collection a shard group serves exists in this (shard) state: every
    /// replica writes the same row, derived from the meta group's placement, before the group
    /// applies anything. A no-op once it exists.
    pub fn seed(&mut self, meta: CollectionMeta) -> Result<()> {
        if self.catalog.get(&meta.spec.name).is_ok() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        batch.put(Table::Meta, collection_key(&meta.spec.name), encode(&meta)?);
        self.storage.write(batch)?;
        self.install(Effect::Create(meta));
        Ok(())
    }

    /// A consistent copy of the state in `dir`, to build a snapshot from while applying goes
    /// on: the tables (see [`Storage::checkpoint`]), the graph dumps (hard links; each at or
    /// behind this state) and the position. `&self` keeps anything from applying meanwhile.
    pub fn checkpoint(&self, dir: &Path) -> Result<Checkpoint> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Storage(format!("{}: {e}", dir.display())))?;
        let state = self.storage.checkpoint(&dir.join("db"))?;
        let graphs = dir.join("graphs");
        for collection in self.catalog.list() {
            let id = collection.meta.id;
            let linked =
                persist::link_graph_dump(&graph_dir(&self.graph_root, id), &graph_dir(&graphs, id));
            if let Err(e) = linked {
                warn!(collection = %collection.name(), error = %e, "graph dump left out of the snapshot");
            }
        }
        Ok(Checkpoint {
            state,
            graphs,
            applied: self.applied.clone(),
        })
    }

    /// Replaces the whole state with the snapshot file at `snapshot` (see [`crate::sm::snapshot::write_snapshot`])
    /// and `applied`, then rebuilds the collections in memory. A file that is not whole changes
    /// nothing; an install cut short by a crash is finished when the state is next opened, so
    /// the file must stay until this returns.
    pub fn import(&mut self, snapshot: &Path, applied: AppliedRecord) -> Result<()> {
        install_snapshot(self.storage.as_ref(), snapshot, &applied, &self.graph_root)?;
        self.applied = load(
            self.storage.as_ref(),
            &self.catalog,
            &self.placements,
            &self.graph_root,
        )?;
        Ok(())
    }

    /// Validates `command` against the current state and fills `batch` with its data changes.
    fn plan(&self, index: u64, command: &Command, batch: &mut WriteBatch) -> Result<(Effect, u64)> {
        match command {
            Command::Collections(CollectionsCommand::Create(spec)) => {
                if self.catalog.get(&spec.name).is_ok() {
                    return Err(Error::AlreadyExists(format!("collection `{}`", spec.name)));
                }
                let meta = CollectionMeta {
                    id: index,
                    spec: spec.clone(),
                };
                batch.put(Table::Meta, collection_key(&spec.name), encode(&meta)?);
                Ok((Effect::Create(meta), 1))
            }
            Command::Collections(CollectionsCommand::Drop { name }) => {
                let collection = self.catalog.get(name)?;
                let id = collection.meta.id;
                batch.delete(Table::Meta, collection_key(name));
                batch.delete(Table::Meta, next_slot_key(id));
                let prefix = points_prefix(id);
                let end = prefix_end(&prefix).unwrap_or_else(|| vec![0xff; 9]);
                batch.delete_range(Table::Points, prefix, end);
                Ok((Effect::Drop(collection), 1))
            }
            Command::Points(PointsCommand::Upsert {
                collection,
                collection_id,
                points,
            }) => {
                let collection = self.target(collection, *collection_id)?;
                let dim = collection.meta.spec.dim as usize;
                if let Some((i, p)) = points
                    .iter()
                    .enumerate()
                    .find(|(_, p)| p.vector.len() != dim)
                {
                    return Err(Error::invalid(
                        format!("points[{i}].vector"),
                        format!("expected {dim} dimensions, got {}", p.vector.len()),
                    ));
                }
                let id = collection.meta.id;
                let mut next_slot = match self.storage.get(Table::Meta, &next_slot_key(id))? {
                    Some(b) => u32::from_be_bytes(
                        b.as_slice()
                            .try_into()
                            .map_err(|_| Error::Storage("corrupt slot counter".into()))?,
                    ),
                    None => 0,
                };
                let mut installs = Vec::with_capacity(points.len());
                for p in points {
                    let slot = next_slot;
                    // Deterministic, so a rejection every replica agrees on (not a fault).
                    next_slot = next_slot.checked_add(1).ok_or_else(|| {
                        Error::invalid(
                            "points",
                            "the collection has used all 2^32 vector slots; re-create it",
                        )
                    })?;
                    let record = PointRecord {
                        slot,
                        vector: p.vector.clone(),
                        payload: p.payload.clone(),
                    };
                    batch.put(Table::Points, point_key(id, &p.id), encode(&record)?);
                    installs.push((p.id, slot, record.vector, record.payload));
                }
                batch.put(
                    Table::Meta,
                    next_slot_key(id),
                    next_slot.to_be_bytes().to_vec(),
                );
                let n = installs.len() as u64;
                Ok((Effect::Upsert(collection, installs), n))
            }
            Command::Points(PointsCommand::Delete {
                collection,
                collection_id,
                ids,
            }) => {
                let collection = self.target(collection, *collection_id)?;
                Ok(self.plan_delete(collection, ids.clone(), batch))
            }
            Command::Points(PointsCommand::DeleteByFilter {
                collection,
                collection_id,
                filter,
            }) => {
                let collection = self.target(collection, *collection_id)?;
                let ids = collection.matching_ids(filter);
                Ok(self.plan_delete(collection, ids, batch))
            }
            Command::Meta(meta) => {
                let placement = self.plan_meta(index, meta)?;
                let name = placement.spec.name.clone();
                if matches!(meta, MetaCommand::DropCollection { .. }) {
                    batch.delete(Table::Meta, placement_key(&name));
                    Ok((Effect::Unplace(name), 1))
                } else {
                    batch.put(Table::Meta, placement_key(&name), encode(&placement)?);
                    Ok((Effect::Place(placement), 1))
                }
            }
            Command::Once { .. } => Err(Error::invalid(
                "command",
                "an idempotency key wraps another command, not a keyed one",
            )),
        }
    }

    /// The placement a meta command creates or changes (for a drop: the one it removes).
    fn plan_meta(&self, index: u64, command: &MetaCommand) -> Result<Placement> {
        match command {
            MetaCommand::CreateCollection {
                spec,
                replication_factor,
                replicas,
            } => {
                if self.placements.get(&spec.name).is_ok() {
                    return Err(Error::AlreadyExists(format!("collection `{}`", spec.name)));
                }
                let shards = replicas
                    .iter()
                    .enumerate()
                    .map(|(shard, replicas)| ShardPlacement {
                        shard: shard as u32,
                        group: shard_group(index, shard as u32),
                        replicas: replicas.clone(),
                        epoch: 0,
                    })
                    .collect();
                Ok(Placement {
                    id: index,
                    spec: spec.clone(),
                    replication_factor: *replication_factor,
                    shards,
                    ready: false,
                })
            }
            MetaCommand::MarkReady { name, id } => {
                let mut placement = self.placements.get(name)?;
                if placement.id != *id {
                    return Err(Error::NotFound(format!(
                        "collection `{name}` as it was when its shards were formed"
                    )));
                }
                placement.ready = true;
                Ok(placement)
            }
            MetaCommand::DropCollection { name } => self.placements.get(name),
            MetaCommand::SetReplicas {
                group,
                epoch,
                replicas,
            } => {
                let (mut placement, _) = self
                    .placements
                    .by_group(*group)
                    .ok_or_else(|| Error::NotFound(format!("shard group {group}")))?;
                let shard = placement
                    .shards
                    .iter_mut()
                    .find(|s| s.group == *group)
                    .ok_or_else(|| Error::Internal(format!("shard group {group}")))?;
                if shard.epoch != *epoch {
                    return Err(Error::Conflict(format!(
                        "shard group {group} changed meanwhile (epoch {} is now {})",
                        epoch, shard.epoch
                    )));
                }
                shard.replicas = replicas.clone();
                shard.epoch += 1;
                Ok(placement)
            }
        }
    }

    /// The collection a points command was validated against, if it still exists.
    fn target(&self, name: &str, id: u64) -> Result<Arc<Collection>> {
        let collection = self.catalog.get(name)?;
        if collection.meta.id != id {
            return Err(Error::NotFound(format!(
                "collection `{name}` as it was when the request was checked (it was re-created)"
            )));
        }
        Ok(collection)
    }

    fn plan_delete(
        &self,
        collection: Arc<Collection>,
        ids: Vec<PointId>,
        batch: &mut WriteBatch,
    ) -> (Effect, u64) {
        let existing: Vec<PointId> = {
            let seg = collection.segment();
            let unique: std::collections::BTreeSet<PointId> = ids.into_iter().collect();
            unique
                .into_iter()
                .filter(|id| seg.slot_of(id).is_some())
                .collect()
        };
        for id in &existing {
            batch.delete(Table::Points, point_key(collection.meta.id, id));
        }
        let n = existing.len() as u64;
        (Effect::Delete(collection, existing), n)
    }

    fn install(&mut self, effect: Effect) {
        match effect {
            Effect::Create(meta) => {
                let name = meta.spec.name.clone();
                // A leftover graph dump of an id can only be stale.
                let _ = std::fs::remove_dir_all(graph_dir(&self.graph_root, meta.id));
                self.catalog
                    .collections
                    .write()
                    .insert(name, Arc::new(Collection::new(meta)));
            }
            Effect::Drop(collection) => {
                self.catalog.collections.write().remove(collection.name());
                let _ = std::fs::remove_dir_all(graph_dir(&self.graph_root, collection.meta.id));
            }
            Effect::Upsert(collection, points) => collection.apply_upserts(points),
            Effect::Delete(collection, ids) => {
                collection.apply_deletes(&ids);
            }
            Effect::Place(placement) => self.placements.put(placement),
            Effect::Unplace(name) => self.placements.remove(&name),
        }
    }
}

/// Reads the applied record and rebuilds every collection into `catalog`.
fn load(
    storage: &dyn Storage,
    catalog: &Catalog,
    placements: &Placements,
    graph_root: &Path,
) -> Result<AppliedRecord> {
    let applied = match storage.get(Table::Meta, APPLIED_KEY)? {
        Some(b) => decode(&b)?,
        None => AppliedRecord::default(),
    };
    let mut all = BTreeMap::new();
    for (_, v) in storage.scan(Table::Meta, PLACEMENT_PREFIX, None, usize::MAX)? {
        let p: Placement = decode(&v)?;
        all.insert(p.spec.name.clone(), p);
    }
    placements.replace_all(all);
    let mut collections = BTreeMap::new();
    let metas: Vec<CollectionMeta> = storage
        .scan(Table::Meta, COLLECTION_PREFIX, None, usize::MAX)?
        .iter()
        .map(|(_, v)| decode(v))
        .collect::<Result<_>>()?;
    sweep_graph_dirs(graph_root, &metas);
    for meta in metas {
        let mut records = Vec::new();
        let prefix = points_prefix(meta.id);
        storage.for_each(Table::Points, &prefix, &mut |k, v| {
            records.push((
                PointId::from_key(&k[prefix.len()..])?,
                decode::<PointRecord>(v)?,
            ));
            Ok(true)
        })?;
        let dir = graph_dir(graph_root, meta.id);
        let (collection, report) = Collection::open(meta, records, &dir)?;
        info!(
            collection = %collection.name(),
            points = report.points,
            graph_loaded = report.graph_loaded,
            graph_inserts = report.graph_inserts,
            elapsed_ms = report.elapsed_ms as u64,
            "collection opened"
        );
        collections.insert(collection.name().to_string(), Arc::new(collection));
    }
    *catalog.collections.write() = collections;
    Ok(applied)
}

/// Removes graph dumps of collections that no longer exist (a dump that finished after its
/// collection was dropped, or after a snapshot replaced the state).
fn sweep_graph_dirs(root: &Path, metas: &[CollectionMeta]) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !metas.iter().any(|m| m.id.to_string() == name) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Where a collection's graph dumps live under `root`.
pub fn graph_dir(root: &Path, collection_id: u64) -> PathBuf {
    root.join(format!("{collection_id}"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use quiver_index::distance::Metric;
    use quiver_index::filter::Filter;
    use quiver_index::hnsw::HnswParams;
    use quiver_index::payload_index::FieldType;

    use super::*;
    use crate::shard::search::{PlannerConfig, SearchParams};
    use crate::sm::snapshot::write_snapshot;
    use crate::storage::MemoryStorage;
    use quiver_core::point::{CollectionSpec, IndexKind, NewPoint};

    #[derive(Debug, Clone)]
    enum Op {
        Upsert(Vec<(u64, [i8; 2], u8)>),
        Delete(Vec<u64>),
        DeleteTag(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => prop::collection::btree_map(0u64..24, (any::<[i8; 2]>(), 0u8..3), 1..6)
                .prop_map(|m| Op::Upsert(m.into_iter().map(|(id, (v, t))| (id, v, t)).collect())),
            2 => prop::collection::vec(0u64..24, 1..4).prop_map(Op::Delete),
            1 => (0u8..3).prop_map(Op::DeleteTag),
        ]
    }

    fn vector(v: [i8; 2]) -> Vec<f32> {
        vec![v[0] as f32, v[1] as f32]
    }

    fn spec(index: IndexKind) -> CollectionSpec {
        CollectionSpec {
            name: "m".into(),
            dim: 2,
            metric: Metric::L2,
            index,
            payload_indexes: vec![("tag".into(), FieldType::Integer)],
            default_ef: None,
        }
    }

    fn command(op: &Op) -> Command {
        Command::Points(match op {
            Op::Upsert(points) => PointsCommand::Upsert {
                collection: "m".into(),
                collection_id: 1,
                points: points
                    .iter()
                    .map(|(id, v, tag)| NewPoint {
                        id: PointId::Num(*id),
                        vector: vector(*v),
                        payload: serde_json::json!({"tag": tag})
                            .as_object()
                            .cloned()
                            .unwrap(),
                    })
                    .collect(),
            },
            Op::Delete(ids) => PointsCommand::Delete {
                collection: "m".into(),
                collection_id: 1,
                ids: ids.iter().map(|i| PointId::Num(*i)).collect(),
            },
            Op::DeleteTag(tag) => PointsCommand::DeleteByFilter {
                collection: "m".into(),
                collection_id: 1,
                filter: Filter::from_json(&serde_json::json!({"tag": tag})).unwrap(),
            },
        })
    }

    /// The model: id -> (vector, tag).
    fn apply_model(model: &mut BTreeMap<u64, ([i8; 2], u8)>, op: &Op) {
        match op {
            Op::Upsert(points) => {
                for (id, v, t) in points {
                    model.insert(*id, (*v, *t));
                }
            }
            Op::Delete(ids) => ids.iter().for_each(|id| {
                model.remove(id);
            }),
            Op::DeleteTag(tag) => model.retain(|_, (_, t)| t != tag),
        }
    }

    fn assert_matches_model(sm: &StateMachine, model: &BTreeMap<u64, ([i8; 2], u8)>) {
        let c = sm.catalog().get("m").unwrap();
        assert_eq!(c.points_count(), model.len());
        let all: Vec<PointId> = (0..24).map(PointId::Num).collect();
        let got: BTreeMap<u64, (Vec<f32>, serde_json::Value)> = c
            .get(&all)
            .into_iter()
            .map(|(id, v, p)| {
                let PointId::Num(n) = id else { unreachable!() };
                (n, (v, p["tag"].clone()))
            })
            .collect();
        let want: BTreeMap<u64, (Vec<f32>, serde_json::Value)> = model
            .iter()
            .map(|(id, (v, t))| (*id, (vector(*v), serde_json::json!(t))))
            .collect();
        assert_eq!(got, want);
        // every live point is found by search, and nothing else is
        let planner = PlannerConfig {
            exact_search_threshold: 0,
            default_ef: 64,
            max_ef: 256,
        };
        for exact in [true, false] {
            let params = SearchParams {
                vector: vec![0.0, 0.0],
                top_k: 30,
                ef: Some(64),
                filter: None,
                exact,
                with_payload: false,
                with_vector: false,
            };
            let (hits, _) = c.search(&params, &planner);
            let mut ids: Vec<u64> = hits
                .iter()
                .map(|h| match h.id {
                    PointId::Num(n) => n,
                    PointId::Uuid(_) => unreachable!(),
                })
                .collect();
            ids.sort();
            assert_eq!(
                ids,
                model.keys().copied().collect::<Vec<_>>(),
                "exact={exact}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn random_upserts_and_deletes_match_a_model(
            ops in prop::collection::vec(op(), 1..30),
            hnsw in any::<bool>(),
        ) {
            let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
            let graphs = tempfile::tempdir().unwrap();
            let mut sm = StateMachine::open(storage.clone(), graphs.path()).unwrap();
            let index = if hnsw { IndexKind::Hnsw(HnswParams { m: 8, ef_construction: 32 }) } else { IndexKind::Flat };
            sm.apply(1, &Command::Collections(CollectionsCommand::Create(spec(index)))).unwrap();
            let mut model = BTreeMap::new();
            for (i, op) in ops.iter().enumerate() {
                let index = i as u64 + 2;
                sm.apply(index, &command(op)).unwrap();
                apply_model(&mut model, op);
                // re-delivering the same entry changes nothing
                let again = sm.apply(index, &command(op)).unwrap();
                prop_assert!(again.duplicate);
            }
            assert_matches_model(&sm, &model);
            // memory is derivable from storage: a reopened state machine agrees
            let reopened = StateMachine::open(storage, graphs.path()).unwrap();
            prop_assert_eq!(reopened.last_applied(), Some(ops.len() as u64 + 1));
            assert_matches_model(&reopened, &model);
        }
    }

    #[test]
    fn rejected_commands_consume_their_index_and_change_nothing() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let graphs = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(storage.clone(), graphs.path()).unwrap();
        let create = Command::Collections(CollectionsCommand::Create(spec(IndexKind::Flat)));
        sm.apply(1, &create).unwrap();
        assert!(matches!(sm.apply(2, &create), Err(Error::AlreadyExists(_))));
        assert_eq!(sm.last_applied(), Some(2));
        let wrong_dim = Command::Points(PointsCommand::Upsert {
            collection: "m".into(),
            collection_id: 1,
            points: vec![NewPoint {
                id: PointId::Num(1),
                vector: vec![1.0; 3],
                payload: JsonMap::new(),
            }],
        });
        assert!(matches!(
            sm.apply(3, &wrong_dim),
            Err(Error::InvalidArgument { .. })
        ));
        let missing = Command::Points(PointsCommand::Delete {
            collection: "nope".into(),
            collection_id: 1,
            ids: vec![PointId::Num(1)],
        });
        assert!(matches!(sm.apply(4, &missing), Err(Error::NotFound(_))));
        assert_eq!(sm.last_applied(), Some(4));
        // a command checked against a collection that was dropped and re-created is refused
        let drop = Command::Collections(CollectionsCommand::Drop { name: "m".into() });
        sm.apply(5, &drop).unwrap();
        sm.apply(6, &create).unwrap();
        let stale = Command::Points(PointsCommand::Upsert {
            collection: "m".into(),
            collection_id: 1,
            points: vec![NewPoint {
                id: PointId::Num(1),
                vector: vec![1.0; 2],
                payload: JsonMap::new(),
            }],
        });
        assert!(matches!(sm.apply(7, &stale), Err(Error::NotFound(_))));
        assert_eq!(sm.catalog().get("m").unwrap().points_count(), 0);
        assert_eq!(sm.catalog().get("m").unwrap().points_count(), 0);
        let reopened = StateMachine::open(storage, graphs.path()).unwrap();
        assert_eq!(reopened.last_applied(), Some(7));
    }

    /// Every row of the state-machine tables of `storage`.
    fn rows(storage: &dyn Storage) -> Vec<(Table, Vec<u8>, Vec<u8>)> {
        let mut rows = Vec::new();
        for table in Table::STATE_MACHINE {
            storage
                .for_each(table, b"", &mut |k, v| {
                    rows.push((table, k.to_vec(), v.to_vec()));
                    Ok(true)
                })
                .unwrap();
        }
        rows
    }

    #[test]
    fn a_snapshot_installs_whole_or_is_finished_when_the_state_is_next_opened() {
        let dir = tempfile::tempdir().unwrap();
        // a source state of several install batches (payloads of 20 kB)
        let source: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let mut sm = StateMachine::open(source.clone(), &dir.path().join("g1")).unwrap();
        sm.apply(
            1,
            &Command::Collections(CollectionsCommand::Create(spec(IndexKind::Flat))),
        )
        .unwrap();
        let text = serde_json::Value::String("x".repeat(20_000));
        let points = (0..500)
            .map(|id| NewPoint {
                id: PointId::Num(id),
                vector: vec![id as f32, 1.0],
                payload: JsonMap::from_iter([("text".to_string(), text.clone())]),
            })
            .collect();
        sm.apply(
            2,
            &Command::Points(PointsCommand::Upsert {
                collection: "m".into(),
                collection_id: 1,
                points,
            }),
        )
        .unwrap();
        let snapshot = dir.path().join("s.snap");
        let mut out = std::fs::File::create(&snapshot).unwrap();
        write_snapshot(source.as_ref(), &dir.path().join("none"), &mut out).unwrap();
        drop(out);
        let bytes = std::fs::read(&snapshot).unwrap();
        assert!(bytes.len() > 2 * INSTALL_BATCH_BYTES);
        let applied = AppliedRecord {
            index: Some(2),
            raft_state: b"position".to_vec(),
        };

        // a target with a state of its own
        let target: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let graphs = dir.path().join("g2");
        let mut sm = StateMachine::open(target.clone(), &graphs).unwrap();
        let other = CollectionSpec {
            name: "other".into(),
            ..spec(IndexKind::Flat)
        };
        sm.apply(7, &Command::Collections(CollectionsCommand::Create(other)))
            .unwrap();
        let before = rows(target.as_ref());

        // a file cut short, with a byte changed, or with bytes after its end changes nothing
        let cut = dir.path().join("cut.snap");
        for broken in [
            bytes[..bytes.len() - 1].to_vec(),
            bytes[..bytes.len() - 13].to_vec(),
            [&bytes[..], b"x"].concat(),
            {
                let mut b = bytes.clone();
                b[bytes.len() / 2] ^= 1;
                b
            },
        ] {
            std::fs::write(&cut, broken).unwrap();
            let err = sm.import(&cut, applied.clone()).unwrap_err();
            assert!(err.to_string().contains("corrupt snapshot"), "{err}");
            assert_eq!(rows(target.as_ref()), before);
            assert_eq!(sm.last_applied(), Some(7));
            assert!(sm.catalog().get("other").is_ok());
        }

        // a whole file replaces the state
        sm.import(&snapshot, applied.clone()).unwrap();
        assert_eq!(sm.last_applied(), Some(2));
        assert_eq!(sm.raft_state(), b"position");
        assert!(sm.catalog().get("other").is_err());
        assert_eq!(sm.catalog().get("m").unwrap().points_count(), 500);
        let installed = rows(target.as_ref());
        assert_eq!(
            installed.iter().filter(|r| r.0 == Table::Points).count(),
            500
        );

        // a crash part-way leaves the install record and a partial state: opening finishes it
        let crashed: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let mut partial = WriteBatch::default();
        for (table, k, v) in installed.iter().take(40) {
            partial.put(*table, k.clone(), v.clone());
        }
        partial.put(Table::Points, b"stale".to_vec(), b"row".to_vec());
        let installing = Installing {
            snapshot: snapshot.clone(),
            applied,
        };
        partial.put(Table::Meta, INSTALLING_KEY, encode(&installing).unwrap());
        crashed.write(partial).unwrap();
        let reopened = StateMachine::open(crashed.clone(), &dir.path().join("g3")).unwrap();
        assert_eq!(rows(crashed.as_ref()), installed);
        assert_eq!(reopened.last_applied(), Some(2));
        assert_eq!(reopened.catalog().get("m").unwrap().points_count(), 500);
    }

    #[test]
    fn a_snapshot_carries_the_graph_dump_and_the_follower_inserts_only_what_came_after() {
        let dir = tempfile::tempdir().unwrap();
        let source: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let graphs = dir.path().join("source-graphs");
        let mut sm = StateMachine::open(source.clone(), &graphs).unwrap();
        let hnsw = spec(IndexKind::Hnsw(HnswParams {
            m: 8,
            ef_construction: 32,
        }));
        sm.apply(1, &Command::Collections(CollectionsCommand::Create(hnsw)))
            .unwrap();
        let upsert = |ids: std::ops::Range<u64>| {
            Command::Points(PointsCommand::Upsert {
                collection: "m".into(),
                collection_id: 1,
                points: ids
                    .map(|id| NewPoint {
                        id: PointId::Num(id),
                        vector: vec![id as f32, (id % 7) as f32],
                        payload: JsonMap::new(),
                    })
                    .collect(),
            })
        };
        sm.apply(2, &upsert(0..200)).unwrap();
        let collection = sm.catalog().get("m").unwrap();
        assert!(collection.dump_graph(&graph_dir(&graphs, 1)).unwrap());
        sm.apply(3, &upsert(200..220)).unwrap();
        // deleted after the dump: still in the dumped graph, never found
        sm.apply(
            4,
            &Command::Points(PointsCommand::Delete {
                collection: "m".into(),
                collection_id: 1,
                ids: vec![PointId::Num(50)],
            }),
        )
        .unwrap();

        let checkpoint = sm.checkpoint(&dir.path().join("checkpoint")).unwrap();
        // a dump written after the checkpoint does not change it
        assert!(collection.dump_graph(&graph_dir(&graphs, 1)).unwrap());
        let snapshot = dir.path().join("s.snap");
        let mut out = std::fs::File::create(&snapshot).unwrap();
        write_snapshot(checkpoint.state.as_ref(), &checkpoint.graphs, &mut out).unwrap();
        drop(out);

        let target: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let mut follower = StateMachine::open(target, &dir.path().join("target-graphs")).unwrap();
        follower.import(&snapshot, checkpoint.applied).unwrap();
        assert_eq!(follower.last_applied(), Some(4));
        let installed = follower.catalog().get("m").unwrap();
        assert_eq!(installed.points_count(), 219);
        // the graph came from the dump: only the 20 points written after it were inserted
        assert_eq!(installed.graph_inserts_since_dump(), 20);
        let search = |query: Vec<f32>| {
            let params = SearchParams {
                vector: query,
                top_k: 1,
                ef: Some(64),
                filter: None,
                exact: false,
                with_payload: false,
                with_vector: false,
            };
            let planner = PlannerConfig {
                exact_search_threshold: 0,
                default_ef: 64,
                max_ef: 256,
            };
            let (hits, _) = installed.search(&params, &planner);
            hits[0].id
        };
        assert_eq!(search(vec![210.0, 0.0]), PointId::Num(210));
        let near_deleted = search(vec![50.0, 1.0]);
        assert!(
            [PointId::Num(49), PointId::Num(51)].contains(&near_deleted),
            "{near_deleted:?}"
        );
    }

    fn upsert_one(id: u64, x: f32) -> Command {
        Command::Points(PointsCommand::Upsert {
            collection: "m".into(),
            collection_id: 1,
            points: vec![NewPoint {
                id: PointId::Num(id),
                vector: vec![x, 0.0],
                payload: JsonMap::new(),
            }],
        })
    }

    fn once(key: &str, command: Command) -> Command {
        Command::Once {
            key: key.into(),
            command: Box::new(command),
        }
    }

    #[test]
    fn a_keyed_command_applies_once_until_its_key_is_forgotten() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let graphs = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(storage.clone(), graphs.path()).unwrap();
        let create = Command::Collections(CollectionsCommand::Create(spec(IndexKind::Flat)));
        sm.apply(1, &create).unwrap();
        let first = sm.apply(2, &once("k", upsert_one(7, 1.0))).unwrap();
        assert_eq!((first.affected, first.duplicate), (1, false));
        // The same key again, even with other content: the first outcome, nothing changed.
        let again = sm.apply(3, &once("k", upsert_one(7, 5.0))).unwrap();
        assert_eq!((again.index, again.duplicate), (2, true));
        let vector = |sm: &StateMachine| {
            sm.catalog().get("m").unwrap().get(&[PointId::Num(7)])[0]
                .1
                .clone()
        };
        assert_eq!(vector(&sm), vec![1.0, 0.0]);
        // A rejected keyed command is remembered as rejected.
        let missing = once(
            "gone",
            Command::Points(PointsCommand::Delete {
                collection: "nope".into(),
                collection_id: 1,
                ids: vec![PointId::Num(1)],
            }),
        );
        assert!(sm.apply(4, &missing).is_err());
        assert!(matches!(sm.apply(5, &missing), Err(Error::NotFound(_))));
        // Remembered across a reopen.
        let mut sm = StateMachine::open(storage.clone(), graphs.path()).unwrap();
        assert!(
            sm.apply(6, &once("k", upsert_one(7, 5.0)))
                .unwrap()
                .duplicate
        );
        // Forgotten once ONCE_WINDOW entries have passed (pruned when later keys are applied).
        let later = 2 + ONCE_WINDOW + 10;
        sm.apply(later, &once("other", upsert_one(9, 1.0))).unwrap();
        let fresh = sm.apply(later + 1, &once("k", upsert_one(7, 5.0))).unwrap();
        assert!(!fresh.duplicate);
        assert_eq!(vector(&sm), vec![5.0, 0.0]);
    }

    #[test]
    fn shard_map_changes_are_checked_against_the_map() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let graphs = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(storage.clone(), graphs.path()).unwrap();
        let create = Command::Meta(MetaCommand::CreateCollection {
            spec: spec(IndexKind::Flat),
            replication_factor: 2,
            replicas: vec![vec![1, 2], vec![2, 3]],
        });
        sm.apply(5, &create).unwrap();
        let placements = sm.placements();
        let placed = placements.get("m").unwrap();
        assert_eq!((placed.id, placed.ready), (5, false));
        assert_eq!(placed.shards[1].group, shard_group(5, 1));
        assert!(matches!(sm.apply(6, &create), Err(Error::AlreadyExists(_))));
        // Marking ready names the incarnation it formed.
        let ready = |id| {
            Command::Meta(MetaCommand::MarkReady {
                name: "m".into(),
                id,
            })
        };
        assert!(sm.apply(7, &ready(99)).is_err());
        sm.apply(8, &ready(5)).unwrap();
        // A replica change planned from an old epoch is refused.
        let group = shard_group(5, 0);
        let set = |epoch, replicas: Vec<u64>| {
            Command::Meta(MetaCommand::SetReplicas {
                group,
                epoch,
                replicas,
            })
        };
        sm.apply(9, &set(0, vec![1, 2, 3])).unwrap();
        assert!(matches!(
            sm.apply(10, &set(0, vec![2, 3])),
            Err(Error::Conflict(_))
        ));
        sm.apply(11, &set(1, vec![2, 3])).unwrap();
        let reopened = StateMachine::open(storage, graphs.path()).unwrap();
        let shard = reopened.placements().get("m").unwrap().shards[0].clone();
        assert_eq!((shard.replicas, shard.epoch), (vec![2, 3], 2));
        sm.apply(
            12,
            &Command::Meta(MetaCommand::DropCollection { name: "m".into() }),
        )
        .unwrap();
        assert!(sm.placements().list().is_empty());
    }
}
