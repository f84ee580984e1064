//! A collection's in-memory state, derived from its stored points.
//!
//! Every stored version of a vector has a [`Slot`]. Upserting a point gives it a new slot; the old
//! slot stops being live (a tombstone). Slots are never reused, so an HNSW node always means the
//! same vector. What lives here:
//! - [`Segment`]: vectors by slot, payloads, the id ↔ slot maps, the live set and payload indexes,
//!   behind one lock;
//! - the HNSW graph beside it (it synchronises itself), plus [`GraphProgress`], which says which
//!   slots the graph holds so a dump can be resumed after a restart;
//! - search and its planner ([`search`]), and graph persistence ([`persist`]).
//!
//! Only the state machine mutates a collection, and only after the matching RocksDB batch has
//! been written: memory never runs ahead of storage.

pub mod persist;
pub mod search;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use quiver_index::flat::VectorArena;
use quiver_index::hnsw::HnswIndex;
use quiver_index::payload_index::{FieldType, PayloadIndex};
use quiver_index::Slot;
use roaring::RoaringBitmap;

use quiver_core::point::{CollectionMeta, IndexKind, JsonMap, PointId};

/// Points of one collection, addressed by slot.
#[derive(Debug)]
pub struct Segment {
    pub arena: VectorArena,
    /// The point id each slot was written for (stale for dead slots).
    pub slot_ids: Vec<PointId>,
    /// Payloads of live slots.
    pub payloads: HashMap<Slot, Arc<JsonMap>>,
    /// Live points.
    pub ids: HashMap<PointId, Slot>,
    pub live: RoaringBitmap,
    /// Retired slots (replaced or deleted versions). While there are none, a graph walk needs
    /// no tombstone check.
    pub dead: RoaringBitmap,
    pub payload_index: PayloadIndex,
}

impl Segment {
    fn new(meta: &CollectionMeta) -> Self {
        Self {
            arena: VectorArena::new(meta.spec.dim as usize),
            slot_ids: Vec::new(),
            payloads: HashMap::new(),
            ids: HashMap::new(),
            live: RoaringBitmap::new(),
            dead: RoaringBitmap::new(),
            payload_index: PayloadIndex::new(&meta.spec.payload_indexes),
        }
    }

    /// Makes `slot` the live version of `id`, retiring its previous slot.
    fn put(&mut self, id: PointId, slot: Slot, vector: &[f32], payload: JsonMap) {
        self.remove(&id);
        self.arena.set(slot, vector);
        let s = slot as usize;
        if self.slot_ids.len() <= s {
            self.slot_ids.resize(s + 1, id);
        }
        self.slot_ids[s] = id;
        self.payload_index.insert(slot, &payload);
        self.payloads.insert(slot, Arc::new(payload));
        self.ids.insert(id, slot);
        self.live.insert(slot);
    }

    /// Retires the live slot of `id`, if any. Returns whether the point existed.
    fn remove(&mut self, id: &PointId) -> bool {
        let Some(slot) = self.ids.remove(id) else {
            return false;
        };
        self.live.remove(slot);
        self.dead.insert(slot);
        if let Some(payload) = self.payloads.remove(&slot) {
            self.payload_index.remove(slot, &payload);
        }
        true
    }

    pub fn slot_of(&self, id: &PointId) -> Option<Slot> {
        self.ids.get(id).copied()
    }

    pub fn id_of(&self, slot: Slot) -> Option<PointId> {
        self.slot_ids.get(slot as usize).copied()
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Which slots the HNSW graph holds. Graph inserts and dumps both take this lock, so a dump sees
/// a graph that holds exactly the slots up to `indexed_upto` that were live when inserted.
#[derive(Debug, Default)]
pub struct GraphProgress {
    /// Every slot allocated at or below this was inserted into the graph (None: none yet).
    pub indexed_upto: Option<Slot>,
    /// Inserts since the graph was last dumped (or loaded).
    pub inserts_since_dump: usize,
}

/// One collection: its definition, its points and its index.
#[derive(Debug)]
pub struct Collection {
    pub meta: CollectionMeta,
    segment: RwLock<Segment>,
    graph: Option<HnswIndex>,
    progress: Mutex<GraphProgress>,
}

impl Collection {
    /// An empty collection.
    pub fn new(meta: CollectionMeta) -> Self {
        let graph = match meta.spec.index {
            IndexKind::Flat => None,
            IndexKind::Hnsw(params) => Some(HnswIndex::new(
                meta.spec.metric,
                meta.spec.dim as usize,
                params,
                0,
            )),
        };
        Self::with_graph(meta, graph, GraphProgress::default())
    }

    fn with_graph(meta: CollectionMeta, graph: Option<HnswIndex>, progress: GraphProgress) -> Self {
        Self {
            segment: RwLock::new(Segment::new(&meta)),
            meta,
            graph,
            progress: Mutex::new(progress),
        }
    }

    pub fn name(&self) -> &str {
        &self.meta.spec.name
    }

    /// Read access to the points.
    pub fn segment(&self) -> parking_lot::RwLockReadGuard<'_, Segment> {
        self.segment.read()
    }

    pub fn graph(&self) -> Option<&HnswIndex> {
        self.graph.as_ref()
    }

    pub fn points_count(&self) -> usize {
        self.segment.read().len()
    }

    /// Installs written points: `(id, slot, prepared vector, payload)`, slots ascending.
    /// Called by the state machine after the batch is durable.
    pub fn apply_upserts(&self, points: Vec<(PointId, Slot, Vec<f32>, JsonMap)>) {
        let graph_items: Vec<(Slot, Vec<f32>)> = {
            let mut seg = self.segment.write();
            let mut items = Vec::with_capacity(points.len());
            for (id, slot, vector, payload) in points {
                seg.put(id, slot, &vector, payload);
                if self.graph.is_some() {
                    items.push((slot, vector));
                }
            }
            items
        };
        self.index_slots(&graph_items);
    }

    /// Inserts slots into the graph (outside the segment lock, so searches go on meanwhile).
    fn index_slots(&self, items: &[(Slot, Vec<f32>)]) {
        let (Some(graph), Some(last)) = (&self.graph, items.last()) else {
            return;
        };
        let mut progress = self.progress.lock();
        if items.len() >= 64 {
            let refs: Vec<(Slot, &[f32])> = items.iter().map(|(s, v)| (*s, v.as_slice())).collect();
            graph.insert_many(&refs);
        } else {
            for (slot, vector) in items {
                graph.insert(*slot, vector);
            }
        }
        progress.indexed_upto = Some(last.0);
        progress.inserts_since_dump += items.len();
    }

    /// Replaces the payloads of live points (their slots and vectors stay).
    pub fn apply_payloads(&self, payloads: Vec<(PointId, JsonMap)>) {
        let mut seg = self.segment.write();
        for (id, payload) in payloads {
            let Some(slot) = seg.slot_of(&id) else {
                continue;
            };
            if let Some(old) = seg.payloads.remove(&slot) {
                seg.payload_index.remove(slot, &old);
            }
            seg.payload_index.insert(slot, &payload);
            seg.payloads.insert(slot, Arc::new(payload));
        }
    }

    /// The payload fields indexed (or being indexed), in the order they were declared.
    pub fn payload_indexes(&self) -> Vec<(String, FieldType)> {
        self.segment.read().payload_index.fields()
    }

    /// Whether payload field `name` is still being indexed.
    pub fn payload_index_building(&self, name: &str) -> bool {
        self.segment.read().payload_index.is_building(name)
    }

    /// Indexes exactly the payload fields `wanted`: drops the others at once, and starts each
    /// new one following every write, while a background thread indexes the points stored
    /// before it; the field bounds filters once that is done.
    pub fn set_payload_indexes(this: &Arc<Self>, wanted: &[(String, FieldType)]) {
        let mut added = Vec::new();
        {
            let mut seg = this.segment.write();
            for (name, field_type) in seg.payload_index.fields() {
                if !wanted.contains(&(name.clone(), field_type)) {
                    seg.payload_index.drop_field(&name);
                }
            }
            for (name, field_type) in wanted {
                if let Some(generation) = seg.payload_index.add_building(name, *field_type) {
                    added.push((name.clone(), generation));
                }
            }
        }
        for (name, generation) in added {
            let collection = this.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("index {name}"))
                .spawn(move || collection.index_stored_points(&name, generation));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start indexing a payload field");
            }
        }
    }

    /// Indexes field `name` over the points already stored, a chunk of slots per lock, then marks
    /// build `generation` built. Writes meanwhile index their own points, and indexing a slot
    /// twice is harmless. Stops early once the field is dropped (or dropped and added again).
    fn index_stored_points(&self, name: &str, generation: u64) {
        const CHUNK: usize = 4096;
        let started = std::time::Instant::now();
        let mut next: Slot = 0;
        loop {
            let mut guard = self.segment.write();
            let seg = &mut *guard;
            if !seg.payload_index.is_building_generation(name, generation) {
                return; // dropped meanwhile
            }
            let chunk: Vec<Slot> = seg.live.range(next..).take(CHUNK).collect();
            let Some(&last) = chunk.last() else {
                seg.payload_index.mark_built(name, generation);
                tracing::info!(
                    collection = %self.name(),
                    field = name,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "payload index built"
                );
                return;
            };
            for slot in chunk {
                if let Some(payload) = seg.payloads.get(&slot) {
                    seg.payload_index.insert_field(name, slot, payload);
                }
            }
            let Some(after) = last.checked_add(1) else {
                seg.payload_index.mark_built(name, generation);
                return;
            };
            next = after;
        }
    }

    /// Live points the HNSW graph holds (0 for a flat collection). Replaced and deleted
    /// versions stay in the graph as tombstones until it is rebuilt, and are not counted.
    pub fn indexed_vectors(&self) -> usize {
        if self.graph.is_none() {
            return 0;
        }
        let upto = self.progress.lock().indexed_upto;
        upto.map_or(0, |upto| self.segment.read().live.rank(upto) as usize)
    }

    /// Deletes points; returns how many existed.
    pub fn apply_deletes(&self, ids: &[PointId]) -> usize {
        let mut seg = self.segment.write();
        ids.iter().filter(|id| seg.remove(id)).count()
    }
}
