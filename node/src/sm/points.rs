//! A shard group's namespace: the collection the group serves and its points.
//!
//! Rows (table `meta` under `collection/` and `next_slot/`, table `points` keyed by collection
//! id then point id) and, derived from them, the in-memory [`Collection`]s and their segment
//! files (under `graphs/` in the group's derived directory). The group learns its collection from its
//! first command, [`ShardCommand::Serve`], proposed when the group is formed; every replica,
//! however it catches up (log or snapshot), gets it the same way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use parking_lot::RwLock;
use quiver_core::point::{CollectionMeta, JsonMap, PointId, PointRecord, StoredVector};
use quiver_core::shard::{PointsCommand, Selection};
use quiver_core::{Error, Result};
use quiver_index::payload_index::FieldType;
use quiver_index::Slot;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::embedding_cache::{self, ContentHash};
use super::{decode, encode, MachineKind, Namespace};
use crate::shard::text::CollectionText;
use crate::shard::{persist, Collection, SegmentConfig, VectorSource};
use crate::storage::text::TextStore;
use crate::storage::{Storage, Table, WriteBatch};

const COLLECTION_PREFIX: &[u8] = b"collection/";
const NEXT_SLOT_PREFIX: &[u8] = b"next_slot/";

/// A shard group's mutations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ShardCommand {
    /// The collection the group serves (its id is the group's): the group's first command. A
    /// second one for the same collection changes nothing; one for another is refused.
    Serve(CollectionMeta),
    Points(PointsCommand),
    /// The payload fields the group's collection indexes, as its spec now names them: fields
    /// not indexed yet are built (in the background), the others dropped.
    SetPayloadIndexes {
        collection_id: u64,
        indexes: Vec<(String, FieldType)>,
    },
    /// Vectors the shard's leader embedded (or found in the cache) for points written without
    /// one: each is set only while its slot is still the point's and it has no vector, so a
    /// late or repeated one changes nothing. Every vector is cached under `model` and its
    /// text's hash, aged from `at_ms` (the leader's clock when it proposed this).
    SetEmbedded {
        collection_id: u64,
        model: String,
        at_ms: u64,
        points: Vec<EmbeddedPoint>,
    },
    /// Feature rows pushed to a shard of the feature store ([`super::feature_values`]).
    Features(quiver_core::features::FeaturesCommand),
}

/// A point's embedded vector, for the slot it was embedded for, and its text's hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddedPoint {
    pub id: PointId,
    pub slot: Slot,
    pub hash: ContentHash,
    pub vector: EmbeddedVector,
}

/// A vector in the log's compact encoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddedVector(#[serde(with = "quiver_core::encoding::f32s")] pub Vec<f32>);

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

/// Where a collection's segment files live under a group's derived directory.
pub fn graph_dir(derived: &Path, collection_id: u64) -> PathBuf {
    graphs_root(derived).join(format!("{collection_id}"))
}

fn graphs_root(derived: &Path) -> PathBuf {
    derived.join("graphs")
}

/// The collections a replica serves, shared by the state machine (writer) and readers.
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

/// What to do in memory once a batch is durable.
pub enum PointsEffect {
    None,
    Serve(CollectionMeta),
    Upsert(Arc<Collection>, Vec<(PointId, Slot, Vec<f32>, JsonMap)>),
    Delete(Arc<Collection>, Vec<PointId>),
    Payloads(Arc<Collection>, Vec<(PointId, JsonMap)>),
    Embedded(Arc<Collection>, Vec<(PointId, Slot, Vec<f32>)>),
    PayloadIndexes(Arc<Collection>, Vec<(String, FieldType)>),
}

/// The full-precision vectors of a collection's points: their stored rows. It holds the group's
/// storage weakly, so a collection kept alive by a background job does not keep a removed
/// replica's RocksDB open.
struct StoredVectors {
    storage: Weak<dyn Storage>,
    collection_id: u64,
}

impl std::fmt::Debug for StoredVectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredVectors")
            .field("collection_id", &self.collection_id)
            .finish()
    }
}

impl VectorSource for StoredVectors {
    fn vectors(&self, ids: &[PointId]) -> Vec<Option<Vec<f32>>> {
        let Some(storage) = self.storage.upgrade() else {
            return vec![None; ids.len()];
        };
        let keys: Vec<Vec<u8>> = ids
            .iter()
            .map(|id| point_key(self.collection_id, id))
            .collect();
        let rows = match storage.multi_get(Table::Points, &keys) {
            Ok(rows) => rows,
            Err(e) => {
                warn!(error = %e, "stored points cannot be read");
                return vec![None; ids.len()];
            }
        };
        rows.into_iter()
            .map(|row| match decode::<StoredVector>(&row?) {
                Ok(stored) => Some(stored.vector),
                Err(e) => {
                    warn!(error = %e, "a stored point does not decode");
                    None
                }
            })
            .collect()
    }
}

/// The points namespace of a shard group.
#[derive(Default)]
pub struct Points {
    catalog: Arc<Catalog>,
    segments: SegmentConfig,
    /// The group's storage (from [`Namespace::load`]), which quantized collections read their
    /// full-precision vectors from.
    storage: Option<Arc<dyn Storage>>,
}

impl Points {
    /// No collection yet; segments sealed and built as `segments` says.
    pub fn with_segments(segments: SegmentConfig) -> Self {
        Self {
            catalog: Arc::default(),
            segments,
            storage: None,
        }
    }

    /// `collection` reading its full-precision vectors from the group's storage.
    fn reading_vectors(&self, collection: Collection) -> Collection {
        match &self.storage {
            Some(storage) => {
                let collection_id = collection.meta.id;
                collection.with_vectors(Arc::new(StoredVectors {
                    storage: Arc::downgrade(storage),
                    collection_id,
                }))
            }
            None => collection,
        }
    }

    /// The text index of the collection of `meta`, caught up with its stored points `records`.
    fn open_text(
        &self,
        meta: &CollectionMeta,
        records: &[(PointId, PointRecord)],
    ) -> Result<Option<Arc<CollectionText>>> {
        let Some(storage) = &self.storage else {
            return Ok(None);
        };
        CollectionText::open(
            TextStore::new(storage),
            meta.id,
            &meta.spec.text_fields,
            records,
            self.segments.text_commit,
        )
    }

    /// A new `collection` as the group's storage serves it: reading its full-precision vectors
    /// and indexing its text there.
    fn attach(
        &self,
        collection: Collection,
        records: &[(PointId, PointRecord)],
    ) -> Result<Collection> {
        let text = self.open_text(&collection.meta, records)?;
        Ok(self.reading_vectors(collection).with_text(text))
    }

    /// The collection of id `collection_id`, if the group serves it.
    fn served(&self, collection_id: u64) -> Result<Arc<Collection>> {
        self.catalog
            .list()
            .into_iter()
            .find(|c| c.meta.id == collection_id)
            .ok_or_else(|| Error::NotFound(format!("collection {collection_id}")))
    }

    /// The collection a points command was validated against, if it is still this one.
    fn target(&self, name: &str, id: u64) -> Result<Arc<Collection>> {
        let collection = self.catalog.get(name)?;
        if collection.meta.id != id {
            return Err(Error::NotFound(format!(
                "collection `{name}` as it was when the request was checked (it was re-created)"
            )));
        }
        Ok(collection)
    }

    fn plan_points(
        &self,
        storage: &dyn Storage,
        command: &PointsCommand,
        batch: &mut WriteBatch,
    ) -> Result<(PointsEffect, u64)> {
        match command {
            PointsCommand::Upsert {
                collection,
                collection_id,
                points,
            } => {
                let collection = self.target(collection, *collection_id)?;
                check_dimensions(&collection, points.iter().map(|p| p.vector.len()))?;
                let mut slots = SlotCounter::read(storage, collection.meta.id)?;
                let mut installs = Vec::with_capacity(points.len());
                for p in points {
                    let record = PointRecord {
                        slot: slots.next()?,
                        vector: p.vector.clone(),
                        payload: p.payload.clone(),
                    };
                    batch.put(
                        Table::Points,
                        point_key(collection.meta.id, &p.id),
                        encode(&record)?,
                    );
                    installs.push((p.id, record.slot, record.vector, record.payload));
                }
                slots.write(batch);
                let n = installs.len() as u64;
                Ok((PointsEffect::Upsert(collection, installs), n))
            }
            PointsCommand::Delete {
                collection,
                collection_id,
                ids,
            } => {
                let collection = self.target(collection, *collection_id)?;
                Ok(plan_delete(collection, ids.clone(), batch))
            }
            PointsCommand::DeleteByFilter {
                collection,
                collection_id,
                filter,
            } => {
                let collection = self.target(collection, *collection_id)?;
                let ids = collection.matching_ids(filter);
                Ok(plan_delete(collection, ids, batch))
            }
            PointsCommand::UpdatePayload {
                collection,
                collection_id,
                selection,
                change,
                max_payload_bytes,
            } => {
                let collection = self.target(collection, *collection_id)?;
                let ids = match selection {
                    Selection::Ids(ids) => ids.clone(),
                    Selection::Filter(filter) => collection.matching_ids(filter),
                };
                let mut changed = Vec::new();
                for (id, record) in stored(storage, collection.meta.id, ids)? {
                    let record = PointRecord {
                        payload: change.apply(record.payload),
                        ..record
                    };
                    if let Some(max) = max_payload_bytes {
                        let size = serde_json::to_vec(&record.payload)
                            .map_or(u64::MAX, |b| b.len() as u64);
                        if size > *max {
                            return Err(Error::invalid(
                                "set",
                                format!(
                                    "point {id}'s payload would be {size} bytes of JSON, over the \
                                     limit of {max} (limits.max_payload_bytes); nothing was changed"
                                ),
                            ));
                        }
                    }
                    batch.put(
                        Table::Points,
                        point_key(collection.meta.id, &id),
                        encode(&record)?,
                    );
                    changed.push((id, record.payload));
                }
                let n = changed.len() as u64;
                Ok((PointsEffect::Payloads(collection, changed), n))
            }
            PointsCommand::UpdateVectors {
                collection,
                collection_id,
                points,
            } => {
                let collection = self.target(collection, *collection_id)?;
                check_dimensions(&collection, points.iter().map(|p| p.vector.len()))?;
                let vectors: BTreeMap<PointId, &[f32]> =
                    points.iter().map(|p| (p.id, p.vector.as_slice())).collect();
                let mut slots = SlotCounter::read(storage, collection.meta.id)?;
                let mut installs = Vec::new();
                // A new vector is a new version of the point: a new slot, as an upsert.
                for (id, record) in stored(storage, collection.meta.id, vectors.keys().copied())? {
                    let record = PointRecord {
                        slot: slots.next()?,
                        vector: vectors[&id].to_vec(),
                        payload: record.payload,
                    };
                    batch.put(
                        Table::Points,
                        point_key(collection.meta.id, &id),
                        encode(&record)?,
                    );
                    installs.push((id, record.slot, record.vector, record.payload));
                }
                slots.write(batch);
                let n = installs.len() as u64;
                Ok((PointsEffect::Upsert(collection, installs), n))
            }
        }
    }
}

/// Sets the vectors of the points of `embedded` still waiting for them, and caches every vector.
fn plan_embedded(
    storage: &dyn Storage,
    collection: &Arc<Collection>,
    model: &str,
    at_ms: u64,
    embedded: &[EmbeddedPoint],
    batch: &mut WriteBatch,
) -> Result<(PointsEffect, u64)> {
    let dim = collection.meta.spec.dim as usize;
    if let Some(p) = embedded.iter().find(|p| p.vector.0.len() != dim) {
        return Err(Error::invalid(
            "vector",
            format!(
                "point {}: expected {dim} dimensions, got {}",
                p.id,
                p.vector.0.len()
            ),
        ));
    }
    let mut set = Vec::new();
    for p in embedded {
        let key = point_key(collection.meta.id, &p.id);
        let Some(bytes) = storage.get(Table::Points, &key)? else {
            continue;
        };
        let record: PointRecord = decode(&bytes)?;
        if record.slot != p.slot || !record.vector.is_empty() {
            continue;
        }
        let record = PointRecord {
            vector: p.vector.0.clone(),
            ..record
        };
        batch.put(Table::Points, key, encode(&record)?);
        set.push((p.id, p.slot, record.vector));
    }
    let mut cached: Vec<(ContentHash, &[f32])> = Vec::new();
    for p in embedded {
        if !cached.iter().any(|(h, _)| *h == p.hash) {
            cached.push((p.hash, &p.vector.0));
        }
    }
    embedding_cache::plan_put(storage, batch, model, at_ms, &cached)?;
    let n = set.len() as u64;
    Ok((PointsEffect::Embedded(collection.clone(), set), n))
}

/// The stored records of those of `ids` that exist, each once, in id order.
fn stored(
    storage: &dyn Storage,
    collection_id: u64,
    ids: impl IntoIterator<Item = PointId>,
) -> Result<Vec<(PointId, PointRecord)>> {
    let unique: std::collections::BTreeSet<PointId> = ids.into_iter().collect();
    let mut out = Vec::with_capacity(unique.len());
    for id in unique {
        if let Some(bytes) = storage.get(Table::Points, &point_key(collection_id, &id))? {
            out.push((id, decode::<PointRecord>(&bytes)?));
        }
    }
    Ok(out)
}

/// Refuses vectors of the wrong length (a coordinator checked them; this guards the log). A
/// collection that embeds takes points with no vector (the leader embeds them).
fn check_dimensions(collection: &Collection, lengths: impl Iterator<Item = usize>) -> Result<()> {
    let dim = collection.meta.spec.dim as usize;
    let embeds = collection.meta.spec.embed.is_some();
    for (i, len) in lengths.enumerate() {
        if len != dim && !(embeds && len == 0) {
            return Err(Error::invalid(
                format!("points[{i}].vector"),
                format!("expected {dim} dimensions, got {len}"),
            ));
        }
    }
    Ok(())
}

/// A collection's next free vector slot, read once per command and written back with its batch.
struct SlotCounter {
    collection_id: u64,
    next: Slot,
}

impl SlotCounter {
    fn read(storage: &dyn Storage, collection_id: u64) -> Result<Self> {
        let next = match storage.get(Table::Meta, &next_slot_key(collection_id))? {
            Some(b) => u32::from_be_bytes(
                b.as_slice()
                    .try_into()
                    .map_err(|_| Error::Storage("corrupt slot counter".into()))?,
            ),
            None => 0,
        };
        Ok(Self {
            collection_id,
            next,
        })
    }

    fn next(&mut self) -> Result<Slot> {
        let slot = self.next;
        // Deterministic, so a rejection every replica agrees on (not a fault).
        self.next = self.next.checked_add(1).ok_or_else(|| {
            Error::invalid(
                "points",
                "the collection has used all 2^32 vector slots; re-create it",
            )
        })?;
        Ok(slot)
    }

    fn write(&self, batch: &mut WriteBatch) {
        batch.put(
            Table::Meta,
            next_slot_key(self.collection_id),
            self.next.to_be_bytes().to_vec(),
        );
    }
}

fn plan_delete(
    collection: Arc<Collection>,
    ids: Vec<PointId>,
    batch: &mut WriteBatch,
) -> (PointsEffect, u64) {
    let existing: Vec<PointId> = {
        let seg = collection.points();
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
    (PointsEffect::Delete(collection, existing), n)
}

impl Namespace for Points {
    const KIND: MachineKind = MachineKind::Shard;
    type Command = ShardCommand;
    type Effect = PointsEffect;
    type View = Arc<Catalog>;

    fn view(&self) -> Arc<Catalog> {
        self.catalog.clone()
    }

    fn configured(config: &quiver_config::Config) -> Self {
        Self::with_segments(SegmentConfig::from_storage(&config.storage))
    }

    fn load(&mut self, storage: &Arc<dyn Storage>, derived: &Path) -> Result<()> {
        self.storage = Some(storage.clone());
        let metas: Vec<CollectionMeta> = storage
            .scan(Table::Meta, COLLECTION_PREFIX, None, usize::MAX)?
            .iter()
            .map(|(_, v)| decode(v))
            .collect::<Result<_>>()?;
        sweep_graph_dirs(&graphs_root(derived), &metas);
        let mut collections = BTreeMap::new();
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
            let dir = graph_dir(derived, meta.id);
            let text = self.open_text(&meta, &records)?;
            let (collection, report) = Collection::open(meta, records, &dir, self.segments)?;
            let collection = self.reading_vectors(collection).with_text(text);
            info!(
                collection = %collection.name(),
                points = report.points,
                segments_loaded = report.segments_loaded,
                appendable = report.appendable,
                elapsed_ms = report.elapsed_ms as u64,
                "collection opened"
            );
            collections.insert(collection.name().to_string(), Arc::new(collection));
        }
        for collection in collections.values() {
            Collection::optimize(collection);
        }
        let replaced = std::mem::replace(&mut *self.catalog.collections.write(), collections);
        replaced.values().for_each(|c| c.close());
        Ok(())
    }

    fn plan(
        &self,
        storage: &dyn Storage,
        index: u64,
        command: &ShardCommand,
        batch: &mut WriteBatch,
    ) -> Result<(PointsEffect, u64)> {
        match command {
            ShardCommand::Serve(meta) => {
                let served = self.catalog.list();
                match served.first() {
                    // The same collection (its payload indexes may have changed since).
                    Some(c) if c.meta.id == meta.id => Ok((PointsEffect::None, 0)),
                    Some(c) => Err(Error::AlreadyExists(format!(
                        "this shard group serves collection `{}` already",
                        c.name()
                    ))),
                    None => {
                        batch.put(Table::Meta, collection_key(&meta.spec.name), encode(meta)?);
                        Ok((PointsEffect::Serve(meta.clone()), 1))
                    }
                }
            }
            ShardCommand::Points(command) => self.plan_points(storage, command, batch),
            ShardCommand::Features(command) => {
                let rows = super::feature_values::plan(storage, index, command, batch)?;
                Ok((PointsEffect::None, rows))
            }
            ShardCommand::SetEmbedded {
                collection_id,
                model,
                at_ms,
                points,
            } => {
                let collection = self.served(*collection_id)?;
                plan_embedded(storage, &collection, model, *at_ms, points, batch)
            }
            ShardCommand::SetPayloadIndexes {
                collection_id,
                indexes,
            } => {
                let collection = self.served(*collection_id)?;
                let key = collection_key(collection.name());
                let mut meta: CollectionMeta = match storage.get(Table::Meta, &key)? {
                    Some(bytes) => decode(&bytes)?,
                    None => collection.meta.clone(),
                };
                meta.spec.payload_indexes = indexes.clone();
                batch.put(Table::Meta, key, encode(&meta)?);
                Ok((PointsEffect::PayloadIndexes(collection, indexes.clone()), 1))
            }
        }
    }

    fn suspend(&mut self) {
        self.catalog.list().iter().for_each(|c| c.close());
    }

    fn install(&mut self, index: u64, effect: PointsEffect, derived: &Path) {
        match effect {
            PointsEffect::None => {}
            PointsEffect::Serve(meta) => {
                let name = meta.spec.name.clone();
                // Leftover segment files of an id can only be stale.
                let dir = graph_dir(derived, meta.id);
                let _ = std::fs::remove_dir_all(&dir);
                let collection = match self.attach(Collection::new(meta, dir, self.segments), &[]) {
                    Ok(collection) => collection,
                    Err(e) => {
                        // (a new text index in a store that works does not fail to open)
                        tracing::error!(error = %e, "the collection's text index cannot be made");
                        return;
                    }
                };
                self.catalog
                    .collections
                    .write()
                    .insert(name, Arc::new(collection));
            }
            PointsEffect::Upsert(collection, points) => {
                collection.apply_upserts(index, points);
                Collection::optimize(&collection);
            }
            PointsEffect::Delete(collection, ids) => {
                collection.apply_deletes(index, &ids);
                Collection::optimize(&collection);
            }
            PointsEffect::Payloads(collection, payloads) => {
                collection.apply_payloads(index, payloads)
            }
            PointsEffect::Embedded(collection, vectors) => {
                collection.apply_embedded(vectors);
                Collection::optimize(&collection);
            }
            PointsEffect::PayloadIndexes(collection, indexes) => {
                Collection::set_payload_indexes(&collection, &indexes)
            }
        }
    }

    fn link_derived(&self, derived: &Path, into: &Path) {
        for collection in self.catalog.list() {
            let id = collection.meta.id;
            let linked = persist::link_segments(&graph_dir(derived, id), &graph_dir(into, id));
            if let Err(e) = linked {
                warn!(collection = %collection.name(), error = %e, "segment files left out of the snapshot");
            }
        }
    }
}

/// Removes the segment files of collections that no longer exist (a segment that finished after
/// its collection was dropped, or after a snapshot replaced the state).
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
