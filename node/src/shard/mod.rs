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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use quiver_index::flat::VectorArena;
use quiver_index::hnsw_rs_graph::HnswIndex;
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
        self.arena.remove(slot);
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

/// Tombstones a graph holds before a rebuild is considered at all.
const MIN_TOMBSTONES_TO_REBUILD: usize = 1_000;
/// Slots a background catch-up inserts per hold of the progress lock.
const CATCH_UP_CHUNK: usize = 512;

/// One collection: its definition, its points and its index.
///
/// The graph is kept current by writes, except while a background thread owns it: after an open
/// whose graph dump was missing or behind the points (the thread inserts what is missing, while
/// searches score the slots not yet in the graph exactly), and while a rebuild makes a graph of
/// the live points only, once tombstones outnumber them (searches use the old graph until the
/// new one replaces it). So the graph holds at most about twice the live points.
#[derive(Debug)]
pub struct Collection {
    pub meta: CollectionMeta,
    segment: RwLock<Segment>,
    /// The graph (None for a flat collection); replaced whole by a rebuild, while holding the
    /// segment's write lock, so a search sees a graph and tombstones that belong together.
    graph: RwLock<Option<Arc<HnswIndex>>>,
    progress: Mutex<GraphProgress>,
    /// Every live slot below this is in the graph: slots at or above it are scored exactly.
    /// Published after each graph insert, read by searches without the progress lock.
    indexed_below: AtomicU64,
    /// A background thread is inserting what the graph misses; writes leave it to that thread.
    catching_up: AtomicBool,
    /// A background thread (catch-up or rebuild) is working on the graph.
    busy: AtomicBool,
}

impl Collection {
    /// An empty collection.
    pub fn new(meta: CollectionMeta) -> Self {
        let graph = Self::empty_graph(&meta, 0);
        Self::with_graph(meta, graph, GraphProgress::default())
    }

    fn empty_graph(meta: &CollectionMeta, capacity: usize) -> Option<HnswIndex> {
        match meta.spec.index {
            IndexKind::Flat => None,
            IndexKind::Hnsw(params) => Some(HnswIndex::new(
                meta.spec.metric,
                meta.spec.dim as usize,
                params,
                capacity,
            )),
        }
    }

    fn with_graph(meta: CollectionMeta, graph: Option<HnswIndex>, progress: GraphProgress) -> Self {
        let indexed_below = below(progress.indexed_upto);
        Self {
            segment: RwLock::new(Segment::new(&meta)),
            meta,
            graph: RwLock::new(graph.map(Arc::new)),
            progress: Mutex::new(progress),
            indexed_below: AtomicU64::new(indexed_below),
            catching_up: AtomicBool::new(false),
            busy: AtomicBool::new(false),
        }
    }

    pub fn name(&self) -> &str {
        &self.meta.spec.name
    }

    /// Read access to the points.
    pub fn segment(&self) -> parking_lot::RwLockReadGuard<'_, Segment> {
        self.segment.read()
    }

    /// The graph now (None for a flat collection).
    pub fn graph(&self) -> Option<Arc<HnswIndex>> {
        self.graph.read().clone()
    }

    pub fn points_count(&self) -> usize {
        self.segment.read().len()
    }

    /// Installs written points: `(id, slot, prepared vector, payload)`, slots ascending.
    /// Called by the state machine after the batch is durable.
    pub fn apply_upserts(&self, points: Vec<(PointId, Slot, Vec<f32>, JsonMap)>) {
        let has_graph = self.meta.spec.index != IndexKind::Flat;
        let graph_items: Vec<(Slot, Vec<f32>)> = {
            let mut seg = self.segment.write();
            let mut items = Vec::with_capacity(points.len());
            for (id, slot, vector, payload) in points {
                seg.put(id, slot, &vector, payload);
                if has_graph {
                    items.push((slot, vector));
                }
            }
            items
        };
        // (read after the points are in the segment: a catch-up that has just finished then
        // either saw them, or left them to this write)
        if !self.catching_up.load(Ordering::SeqCst) {
            self.index_slots(&graph_items);
        }
    }

    /// Inserts slots (ascending) into the graph, outside the segment lock so searches go on
    /// meanwhile.
    fn index_slots(&self, items: &[(Slot, Vec<f32>)]) {
        let mut progress = self.progress.lock();
        self.index_slots_locked(&mut progress, items);
    }

    /// [`index_slots`](Self::index_slots) with the progress lock held. Slots the graph already
    /// holds are skipped.
    fn index_slots_locked(&self, progress: &mut GraphProgress, items: &[(Slot, Vec<f32>)]) {
        let Some(graph) = self.graph() else {
            return;
        };
        let done = progress.indexed_upto;
        let items: Vec<(Slot, &[f32])> = items
            .iter()
            .filter(|(slot, _)| done.is_none_or(|d| *slot > d))
            .map(|(s, v)| (*s, v.as_slice()))
            .collect();
        let Some(&(last, _)) = items.last() else {
            return;
        };
        if items.len() >= 64 {
            graph.insert_many(&items);
        } else {
            for (slot, vector) in &items {
                graph.insert(*slot, vector);
            }
        }
        progress.indexed_upto = Some(last);
        progress.inserts_since_dump += items.len();
        self.indexed_below
            .store(below(Some(last)), Ordering::SeqCst);
    }

    /// Starts the graph's background work when it is due and none is running: inserting the
    /// live points the graph does not hold yet (after an open), or rebuilding the graph once
    /// tombstones outnumber the live points it holds. Called by the state machine after it
    /// opens a collection and after each change it installs.
    pub fn maintain_graph(this: &Arc<Self>) {
        let Some(graph) = this.graph() else {
            return;
        };
        if this.busy.swap(true, Ordering::SeqCst) {
            return;
        }
        let job: fn(&Collection) = if this.catching_up.load(Ordering::SeqCst) {
            Collection::catch_up
        } else if this.rebuild_due(&graph) {
            Collection::rebuild_graph
        } else {
            this.busy.store(false, Ordering::SeqCst);
            return;
        };
        /// Frees the job slot however the job ends (a panic included: then `catching_up` stays
        /// set, so writes leave their points to the next catch-up and searches score them).
        struct Done(Arc<Collection>);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0.busy.store(false, Ordering::SeqCst);
            }
        }
        let collection = this.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("graph {}", this.name()))
            .spawn(move || {
                let done = Done(collection);
                job(&done.0);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the graph's background work; doing it now");
            job(this);
            this.busy.store(false, Ordering::SeqCst);
        }
    }

    /// Whether the graph holds more tombstones than live points (and enough to matter).
    fn rebuild_due(&self, graph: &HnswIndex) -> bool {
        let live_in_graph = self.live_in_graph();
        let tombstones = graph.len().saturating_sub(live_in_graph);
        tombstones >= MIN_TOMBSTONES_TO_REBUILD && tombstones > live_in_graph
    }

    /// Live points the graph holds.
    fn live_in_graph(&self) -> usize {
        match self.indexed_below.load(Ordering::SeqCst).checked_sub(1) {
            Some(upto) => self.segment.read().live.rank(upto as Slot) as usize,
            None => 0,
        }
    }

    /// Inserts the live points the graph does not hold, a chunk per hold of the progress lock
    /// (dumps may run between chunks), until it holds them all; then writes index their own
    /// points again.
    fn catch_up(&self) {
        let started = std::time::Instant::now();
        let mut inserted = 0;
        loop {
            let chunk = self.unindexed(CATCH_UP_CHUNK);
            if chunk.is_empty() {
                // Writes index their own points from here on. One that read the flag before it
                // was cleared stored its points before: the last look below sees them. One that
                // reads it cleared waits for the lock, then skips what this inserted.
                let mut progress = self.progress.lock();
                self.catching_up.store(false, Ordering::SeqCst);
                let rest = self.unindexed(usize::MAX);
                inserted += rest.len();
                self.index_slots_locked(&mut progress, &rest);
                break;
            }
            inserted += chunk.len();
            self.index_slots(&chunk);
        }
        tracing::info!(
            collection = %self.name(),
            inserted,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "graph caught up with the points"
        );
    }

    /// Up to `limit` live points (slot and vector, ascending) the graph does not hold yet.
    fn unindexed(&self, limit: usize) -> Vec<(Slot, Vec<f32>)> {
        let from = self.indexed_below.load(Ordering::SeqCst);
        let Ok(from) = Slot::try_from(from) else {
            return Vec::new();
        };
        let seg = self.segment.read();
        seg.live
            .range(from..)
            .take(limit)
            .filter_map(|slot| Some((slot, seg.arena.get(slot)?.to_vec())))
            .collect()
    }

    /// Builds a graph of the live points only, and puts it in place of the current one. Writes
    /// go on into the current graph meanwhile; what they added is copied over at the switch.
    fn rebuild_graph(&self) {
        let started = std::time::Instant::now();
        let Some(old) = self.graph() else {
            return;
        };
        let (points, upto) = {
            let _progress = self.progress.lock();
            let upto = self.indexed_below.load(Ordering::SeqCst);
            let seg = self.segment.read();
            let points: Vec<(Slot, Vec<f32>)> = seg
                .live
                .iter()
                .take_while(|slot| u64::from(*slot) < upto)
                .filter_map(|slot| Some((slot, seg.arena.get(slot)?.to_vec())))
                .collect();
            (points, upto)
        };
        let Some(fresh) = Self::empty_graph(&self.meta, points.len()) else {
            return;
        };
        let refs: Vec<(Slot, &[f32])> = points.iter().map(|(s, v)| (*s, v.as_slice())).collect();
        fresh.insert_many(&refs);
        let mut held: RoaringBitmap = points.iter().map(|(slot, _)| *slot).collect();
        drop(refs);
        drop(points);

        // The switch: graph inserts (so writes' indexing) wait on the progress lock while the
        // points they added to the old graph since are added to the new one, under a read lock
        // (searches go on); the write lock is taken only to swap the graphs.
        let mut progress = self.progress.lock();
        {
            let seg = self.segment.read();
            let added: Vec<(Slot, &[f32])> = match Slot::try_from(upto) {
                Ok(from) => seg
                    .live
                    .range(from..)
                    .take_while(|slot| u64::from(*slot) < self.indexed_below.load(Ordering::SeqCst))
                    .filter_map(|slot| Some((slot, seg.arena.get(slot)?)))
                    .collect(),
                Err(_) => Vec::new(),
            };
            fresh.insert_many(&added);
            held.extend(added.iter().map(|(slot, _)| *slot));
        }
        let tombstones = old.len();
        let mut seg = self.segment.write();
        seg.dead = &held - &seg.live;
        *self.graph.write() = Some(Arc::new(fresh));
        // the new graph is not on disk yet
        progress.inserts_since_dump = progress.inserts_since_dump.max(held.len() as usize).max(1);
        drop(seg);
        drop(progress);
        tracing::info!(
            collection = %self.name(),
            nodes = held.len(),
            replaced_nodes = tombstones,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "graph rebuilt without its tombstones"
        );
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
        if self.meta.spec.index == IndexKind::Flat {
            return 0;
        }
        self.live_in_graph()
    }

    /// Deletes points; returns how many existed.
    pub fn apply_deletes(&self, ids: &[PointId]) -> usize {
        let mut seg = self.segment.write();
        ids.iter().filter(|id| seg.remove(id)).count()
    }
}

/// The `indexed_below` of a graph that holds every slot up to `indexed_upto`.
fn below(indexed_upto: Option<Slot>) -> u64 {
    indexed_upto.map_or(0, |upto| u64::from(upto) + 1)
}
