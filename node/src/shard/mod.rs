//! A collection's in-memory state, derived from its stored points, kept in segments.
//!
//! Every stored version of a vector has a [`Slot`]. Upserting a point gives it a new slot; the old
//! slot is retired. Slots are never reused, so a slot always means the same vector. What lives
//! here, behind one lock ([`Points`]):
//! - the id ↔ slot maps, payloads, the live set and the payload indexes;
//! - the appendable segment: the vectors of live slots no sealed segment holds yet. Writes land
//!   here and only here, so a write is applied (and acknowledged) without touching a graph;
//!   searches score it exactly;
//! - the sealed segments in force ([`segment::Sealed`]: vectors and an HNSW graph, immutable),
//!   each with the set of its nodes retired since it was built. A quantized collection's
//!   segments hold encoded vectors (fp16 or int8); the full-precision ones are read from the
//!   points' stored rows ([`VectorSource`]) to rescore candidates and to return vectors.
//!
//! The optimizer ([`optimizer`]) builds sealed segments on a background thread: it seals the
//! appendable segment once it is large enough (extending the last sealed segment's graph, or
//! starting a new one), and vacuums a segment whose retired nodes pass a threshold. A finished
//! segment replaces what it was built from in one step under the write lock, so a search sees
//! each live point exactly once; searches never wait for a build. Segment files ([`persist`])
//! let a restart load graphs instead of rebuilding them. Search and its planner: [`search`].
//! A collection with text fields keeps a text index beside ([`text`]); one that embeds counts
//! its points waiting for a vector in [`Points::unembedded`] and its progress in [`embedding`].
//!
//! Only the state machine mutates points, and only after the matching RocksDB batch has been
//! written: memory never runs ahead of storage.

pub mod embedding;
pub(crate) mod optimizer;
pub mod persist;
pub mod search;
pub mod segment;
pub mod text;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use quiver_index::distance::Metric;
use quiver_index::flat::VectorArena;
use quiver_index::payload_index::{FieldType, PayloadIndex};
use quiver_index::quantize::Encoding;
use quiver_index::Slot;
use roaring::RoaringBitmap;

use quiver_core::point::{CollectionMeta, JsonMap, PointId};
use quiver_core::shard::{SegmentInfo, SegmentState};

use segment::Sealed;
use text::CollectionText;

/// How segments are sealed and built (from the `[storage]` configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentConfig {
    /// The appendable segment is sealed (indexed) once it holds this many points.
    pub seal_points: usize,
    /// A sealed segment grows by absorbing the appendable one up to this many points; past it a
    /// new segment starts.
    pub max_segment_points: usize,
    /// Threads one graph build uses.
    pub build_threads: usize,
    /// After this long without a write, the appendable segment is sealed however few points it
    /// holds (None: only at `seal_points`).
    pub idle_seal: Option<std::time::Duration>,
    /// The longest a point written waits to be searchable by text.
    pub text_commit: std::time::Duration,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        Self {
            seal_points: 10_000,
            max_segment_points: 2_000_000,
            build_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            idle_seal: None,
            text_commit: std::time::Duration::from_millis(1_000),
        }
    }
}

impl SegmentConfig {
    pub fn from_storage(storage: &quiver_config::StorageConfig) -> Self {
        Self {
            seal_points: storage.segment_seal_points.max(1),
            max_segment_points: storage.segment_max_points.max(1),
            build_threads: match storage.index_build_threads {
                0 => Self::default().build_threads,
                n => n,
            },
            idle_seal: (storage.segment_idle_seal_ms > 0)
                .then(|| std::time::Duration::from_millis(storage.segment_idle_seal_ms)),
            text_commit: std::time::Duration::from_millis(storage.text_commit_ms.max(1)),
        }
    }
}

/// A sealed segment in force, and which of its nodes were retired since it was built.
#[derive(Debug)]
pub struct InForce {
    pub segment: Arc<Sealed>,
    /// One bit per node.
    retired: Vec<u64>,
    pub retired_count: usize,
}

impl InForce {
    /// `segment`, with the nodes whose slots are not in `live` retired.
    fn new(segment: Arc<Sealed>, live: &RoaringBitmap) -> Self {
        let mut this = Self {
            retired: vec![0; segment.len().div_ceil(64)],
            retired_count: 0,
            segment,
        };
        for node in 0..this.segment.len() {
            if !live.contains(this.segment.slots[node]) {
                this.retire(node as u32);
            }
        }
        this
    }

    fn retire(&mut self, node: u32) {
        let (word, bit) = (node as usize / 64, node % 64);
        if self.retired[word] & (1 << bit) == 0 {
            self.retired[word] |= 1 << bit;
            self.retired_count += 1;
        }
    }

    #[inline]
    pub fn is_retired(&self, node: u32) -> bool {
        self.retired[node as usize / 64] & (1 << (node % 64)) != 0
    }

    /// Nodes still live.
    pub fn live_count(&self) -> usize {
        self.segment.len() - self.retired_count
    }
}

/// Where the full-precision vectors of a collection's points are kept (the shard's stored
/// rows), for the rescoring of quantized segments' candidates and for returning their vectors.
pub trait VectorSource: Send + Sync + std::fmt::Debug {
    /// The stored (prepared) vectors of points `ids`, in their order (None where a point is
    /// not stored), read in one batch.
    fn vectors(&self, ids: &[PointId]) -> Vec<Option<Vec<f32>>>;
}

/// Where a slot's vector is.
enum Location<'a> {
    Appendable,
    Sealed(&'a InForce, u32),
}

/// Points of one collection, addressed by slot.
#[derive(Debug)]
pub struct Points {
    /// Vectors of the live slots no sealed segment holds.
    pub appendable: VectorArena,
    /// The slots `appendable` holds.
    pub appendable_slots: RoaringBitmap,
    /// Sealed segments, oldest first.
    pub sealed: Vec<InForce>,
    /// The point id each slot was written for (stale for retired slots).
    pub slot_ids: Vec<PointId>,
    /// Payloads of live slots.
    pub payloads: HashMap<Slot, Arc<JsonMap>>,
    /// Live points.
    pub ids: HashMap<PointId, Slot>,
    pub live: RoaringBitmap,
    pub payload_index: PayloadIndex,
    /// Live slots written without a vector, waiting for the leader to embed their text (in no
    /// segment: vector searches do not find them yet).
    pub unembedded: RoaringBitmap,
}

impl Points {
    fn new(meta: &CollectionMeta) -> Self {
        Self {
            appendable: VectorArena::new(meta.spec.dim as usize),
            appendable_slots: RoaringBitmap::new(),
            sealed: Vec::new(),
            slot_ids: Vec::new(),
            payloads: HashMap::new(),
            ids: HashMap::new(),
            live: RoaringBitmap::new(),
            payload_index: PayloadIndex::new(&meta.spec.payload_indexes),
            unembedded: RoaringBitmap::new(),
        }
    }

    /// Makes `slot` the live version of `id` in the appendable segment, retiring its previous
    /// slot.
    fn put(&mut self, id: PointId, slot: Slot, vector: &[f32], payload: JsonMap) {
        self.remove(&id);
        if vector.is_empty() {
            self.unembedded.insert(slot);
        } else {
            self.appendable.set(slot, vector);
            self.appendable_slots.insert(slot);
        }
        self.record(id, slot, payload);
    }

    /// The maps of a live `slot`.
    fn record(&mut self, id: PointId, slot: Slot, payload: JsonMap) {
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
        if self.unembedded.remove(slot) {
            // (no vector anywhere)
        } else if self.appendable_slots.remove(slot) {
            self.appendable.remove(slot);
        } else if let Some((i, node)) = self.sealed_node(slot) {
            self.sealed[i].retire(node);
        }
        if let Some(payload) = self.payloads.remove(&slot) {
            self.payload_index.remove(slot, &payload);
        }
        true
    }

    fn sealed_node(&self, slot: Slot) -> Option<(usize, u32)> {
        self.sealed
            .iter()
            .enumerate()
            .find_map(|(i, s)| Some((i, s.segment.node_of(slot)?)))
    }

    fn locate(&self, slot: Slot) -> Option<Location<'_>> {
        if self.appendable_slots.contains(slot) {
            return Some(Location::Appendable);
        }
        let (i, node) = self.sealed_node(slot)?;
        Some(Location::Sealed(&self.sealed[i], node))
    }

    /// The vector of a live slot, when memory holds it at full precision (not when a quantized
    /// segment holds it).
    pub fn vector(&self, slot: Slot) -> Option<&[f32]> {
        match self.locate(slot)? {
            Location::Appendable => self.appendable.get(slot),
            Location::Sealed(s, node) => s.segment.graph.vector(node),
        }
    }

    /// The score of a live slot for `query`: exact, unless a quantized segment holds it.
    pub fn score(&self, metric: Metric, query: &[f32], slot: Slot) -> Option<f32> {
        match self.locate(slot)? {
            Location::Appendable => Some(metric.score(query, self.appendable.get(slot)?)),
            Location::Sealed(s, node) => {
                let graph = &s.segment.graph;
                Some(match graph.vector(node) {
                    Some(v) => metric.score(query, v),
                    None => graph.score(&graph.encode_query(query), node),
                })
            }
        }
    }

    /// Whether a quantized segment holds `slot` (so its score is approximate and its vector is
    /// on disk only).
    pub fn is_encoded(&self, slot: Slot) -> bool {
        matches!(
            self.locate(slot),
            Some(Location::Sealed(s, _)) if s.segment.graph.encoding() != Encoding::F32
        )
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

    /// Live points the sealed segments hold (indexed).
    pub fn indexed(&self) -> usize {
        self.sealed.iter().map(InForce::live_count).sum()
    }
}

/// One collection: its definition, its points and their segments.
#[derive(Debug)]
pub struct Collection {
    pub meta: CollectionMeta,
    points: RwLock<Points>,
    /// Where its segment files live.
    dir: PathBuf,
    config: SegmentConfig,
    /// The next segment number.
    next_segment: AtomicU64,
    /// An optimizer job is running.
    busy: AtomicBool,
    /// No longer served (dropped, or replaced by a snapshot's state): the optimizer stops and
    /// writes nothing more to `dir`.
    closed: AtomicBool,
    /// What the running job is building: `(points, estimated bytes)`.
    building: Mutex<Option<(usize, usize)>>,
    /// When points were last written (for the idle seal).
    last_write: Mutex<std::time::Instant>,
    /// A thread is waiting for the collection to be idle, to seal its appendable segment.
    watching: AtomicBool,
    /// The full-precision vectors, for a quantized collection.
    source: Option<Arc<dyn VectorSource>>,
    /// The text index, for a collection that declares text fields.
    text: Option<Arc<CollectionText>>,
    /// Counts of the points embedded here (for a collection that embeds).
    embedding: embedding::EmbeddingProgress,
}

impl Collection {
    /// An empty collection whose segment files go to `dir`.
    pub fn new(meta: CollectionMeta, dir: PathBuf, config: SegmentConfig) -> Self {
        Self {
            points: RwLock::new(Points::new(&meta)),
            meta,
            dir,
            config,
            next_segment: AtomicU64::new(1),
            busy: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            building: Mutex::new(None),
            last_write: Mutex::new(std::time::Instant::now()),
            watching: AtomicBool::new(false),
            source: None,
            text: None,
            embedding: embedding::EmbeddingProgress::default(),
        }
    }

    /// Indexes its text fields' values in `text` as points are written.
    pub fn with_text(mut self, text: Option<Arc<CollectionText>>) -> Self {
        self.text = text;
        self
    }

    /// Its text index, if it declares text fields.
    pub fn text(&self) -> Option<&Arc<CollectionText>> {
        self.text.as_ref()
    }

    /// Reads full-precision vectors from `source` (a quantized collection needs one to rescore
    /// and to return vectors; without one its searches return approximate scores).
    pub fn with_vectors(mut self, source: Arc<dyn VectorSource>) -> Self {
        self.source = Some(source);
        self
    }

    pub fn name(&self) -> &str {
        &self.meta.spec.name
    }

    /// Bytes one vector takes in a sealed segment of this collection.
    fn encoded_bytes_per_vector(&self) -> usize {
        self.meta
            .spec
            .quantization
            .bytes_per_vector(self.meta.spec.dim as usize)
    }

    /// Read access to the points.
    pub fn points(&self) -> parking_lot::RwLockReadGuard<'_, Points> {
        self.points.read()
    }

    pub fn points_count(&self) -> usize {
        self.points.read().len()
    }

    /// Installs written points: `(id, slot, prepared vector, payload)`, from the command
    /// applied at log position `index`. Called by the state machine after the batch is durable;
    /// the optimizer indexes their vectors later, the text index commits their text soon.
    pub fn apply_upserts(&self, index: u64, points: Vec<(PointId, Slot, Vec<f32>, JsonMap)>) {
        *self.last_write.lock() = std::time::Instant::now();
        let mut p = self.points.write();
        for (id, slot, vector, payload) in points {
            if let Some(text) = &self.text {
                text.upsert(p.slot_of(&id), slot, &payload);
            }
            p.put(id, slot, &vector, payload);
        }
        drop(p);
        if let Some(text) = &self.text {
            text.changed(index);
        }
    }

    /// Gives points written without a vector the vectors embedded for them: each `(id, slot,
    /// vector)` where `slot` is still the point's and waits for one.
    pub fn apply_embedded(&self, vectors: Vec<(PointId, Slot, Vec<f32>)>) {
        *self.last_write.lock() = std::time::Instant::now();
        let mut p = self.points.write();
        let mut embedded = 0;
        for (id, slot, vector) in vectors {
            if p.slot_of(&id) == Some(slot) && p.unembedded.remove(slot) {
                p.appendable.set(slot, &vector);
                p.appendable_slots.insert(slot);
                embedded += 1;
            }
        }
        drop(p);
        self.embedding.embedded(embedded);
    }

    /// Up to `limit` points waiting for their text to be embedded, as `(id, slot, text)`,
    /// passing over `skip`.
    pub fn unembedded(&self, limit: usize, skip: &RoaringBitmap) -> Vec<(PointId, Slot, String)> {
        let Some(key) = &self.meta.spec.embed else {
            return Vec::new();
        };
        let p = self.points.read();
        let mut out = Vec::new();
        for slot in p.unembedded.iter().filter(|s| !skip.contains(*s)) {
            if out.len() == limit {
                break;
            }
            let (Some(id), Some(payload)) = (p.id_of(slot), p.payloads.get(&slot)) else {
                continue;
            };
            let text = payload.get(key).and_then(|v| v.as_str()).unwrap_or("");
            out.push((id, slot, text.to_owned()));
        }
        out
    }

    /// Points waiting for their text to be embedded.
    pub fn unembedded_count(&self) -> u64 {
        self.points.read().unembedded.len()
    }

    /// How the embedding of this collection's points goes.
    pub fn embedding(&self) -> &embedding::EmbeddingProgress {
        &self.embedding
    }

    /// Deletes points (the command applied at log position `index`); returns how many existed.
    pub fn apply_deletes(&self, index: u64, ids: &[PointId]) -> usize {
        let mut p = self.points.write();
        let mut deleted = 0;
        for id in ids {
            let slot = p.slot_of(id);
            if p.remove(id) {
                deleted += 1;
                if let (Some(text), Some(slot)) = (&self.text, slot) {
                    text.delete(slot);
                }
            }
        }
        drop(p);
        if let Some(text) = &self.text {
            text.changed(index);
        }
        deleted
    }

    /// Replaces the payloads of live points (their slots and vectors stay), from the command
    /// applied at log position `index`.
    pub fn apply_payloads(&self, index: u64, payloads: Vec<(PointId, JsonMap)>) {
        let mut p = self.points.write();
        for (id, payload) in payloads {
            let Some(slot) = p.slot_of(&id) else {
                continue;
            };
            if let Some(text) = &self.text {
                text.upsert(Some(slot), slot, &payload);
            }
            if let Some(old) = p.payloads.remove(&slot) {
                p.payload_index.remove(slot, &old);
            }
            p.payload_index.insert(slot, &payload);
            p.payloads.insert(slot, Arc::new(payload));
        }
        drop(p);
        if let Some(text) = &self.text {
            text.changed(index);
        }
    }

    /// Stops the optimizer's and the text index's work on this collection (a job running ends
    /// without installing); once this returns, the text index writes nothing more.
    pub fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(text) = &self.text {
            text.close();
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether the optimizer is working on this collection.
    pub fn optimizing(&self) -> bool {
        self.busy.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Live points the sealed segments hold (0 for a flat collection, which has none).
    pub fn indexed_vectors(&self) -> usize {
        self.points.read().indexed()
    }

    /// The segments: sealed ones oldest first, then the one being built (if any), then the
    /// appendable one.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let p = self.points.read();
        let mut out: Vec<SegmentInfo> = p
            .sealed
            .iter()
            .map(|s| SegmentInfo {
                state: SegmentState::Sealed,
                points: s.live_count() as u64,
                retired: s.retired_count as u64,
                memory_bytes: s.segment.memory_bytes() as u64,
                bytes_per_vector: s.segment.graph.bytes_per_vector() as u32,
            })
            .collect();
        let full = self.meta.spec.dim * 4;
        if let Some((points, bytes)) = *self.building.lock() {
            out.push(SegmentInfo {
                state: SegmentState::Building,
                points: points as u64,
                retired: 0,
                memory_bytes: bytes as u64,
                bytes_per_vector: self.encoded_bytes_per_vector() as u32,
            });
        }
        out.push(SegmentInfo {
            state: SegmentState::Appendable,
            points: p.appendable_slots.len(),
            retired: 0,
            memory_bytes: p.appendable.memory_bytes() as u64,
            bytes_per_vector: full,
        });
        out
    }

    /// The payload fields indexed (or being indexed), in the order they were declared.
    pub fn payload_indexes(&self) -> Vec<(String, FieldType)> {
        self.points.read().payload_index.fields()
    }

    /// Whether payload field `name` is still being indexed.
    pub fn payload_index_building(&self, name: &str) -> bool {
        self.points.read().payload_index.is_building(name)
    }

    /// Indexes exactly the payload fields `wanted`: drops the others at once, and starts each
    /// new one following every write, while a background thread indexes the points stored
    /// before it; the field bounds filters once that is done.
    pub fn set_payload_indexes(this: &Arc<Self>, wanted: &[(String, FieldType)]) {
        let mut added = Vec::new();
        {
            let mut p = this.points.write();
            for (name, field_type) in p.payload_index.fields() {
                if !wanted.contains(&(name.clone(), field_type)) {
                    p.payload_index.drop_field(&name);
                }
            }
            for (name, field_type) in wanted {
                if let Some(generation) = p.payload_index.add_building(name, *field_type) {
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
            let mut guard = self.points.write();
            let p = &mut *guard;
            if !p.payload_index.is_building_generation(name, generation) {
                return; // dropped meanwhile
            }
            let chunk: Vec<Slot> = p.live.range(next..).take(CHUNK).collect();
            let Some(&last) = chunk.last() else {
                p.payload_index.mark_built(name, generation);
                tracing::info!(
                    collection = %self.name(),
                    field = name,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "payload index built"
                );
                return;
            };
            for slot in chunk {
                if let Some(payload) = p.payloads.get(&slot) {
                    p.payload_index.insert_field(name, slot, payload);
                }
            }
            let Some(after) = last.checked_add(1) else {
                p.payload_index.mark_built(name, generation);
                return;
            };
            next = after;
        }
    }
}
