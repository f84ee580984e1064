//! quiver's HNSW graph (Malkov & Yashunin, 2018) over a fixed set of vectors.
//!
//! A graph is built once, in parallel, over the vectors of a sealed segment, and is only searched
//! after that: a segment whose points change gets a new graph (the optimizer's merge and vacuum),
//! so nothing on the search path takes a lock. The layout serves the search loop:
//! - one block for all nodes with a fixed stride: per node its layer-0 list (a count, then room
//!   for `2·M` ids) followed by its vector (already
//!   [`prepare`](crate::distance::Metric::prepare)d, then stored in the graph's
//!   [`Encoding`]: f32, f16 or int8 words), so expanding a node whose distance was just
//!   computed finds its links in cache, as hnswlib lays them out;
//! - the upper layers (about one node in M reaches them) in a second block, `1 + M` u32s per
//!   layer per node;
//! - visited sets are epoch-stamped `u16` arrays reused from a pool, with the search heaps.
//!
//! Neighbours are chosen with the paper's heuristic (its algorithm 4), at insertion and when a
//! full list is pruned. Links are `AtomicU32`s: build threads rewrite a node's lists under that
//! node's lock and read other nodes' lists without one (a relaxed load is a plain load, so a
//! finished graph pays nothing for it, and a list read while it is rewritten only ever holds
//! valid node ids). Levels come from a seeded generator, so a graph is reproducible up to the
//! order in which parallel inserts interleave.
//!
//! Ids are dense, `0..len`, in the order the vectors were given. Searches take an optional
//! predicate, checked inside the walk: rejected nodes (tombstones, filtered-out points) are
//! walked through but never returned. A graph of encoded vectors is built, walked and scored in
//! that encoding (the query is encoded the same way), so its scores are approximate; see
//! [`crate::quantize`]. See [`format`] for the on-disk form.

mod build;
pub mod format;
mod search;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU32, Ordering};

use crate::distance::{dot_kernel, l2_squared_kernel, Kernel, Metric};
use crate::quantize::{word_kernels, Encoding, WordKernel};
use crate::ScoredSlot;

pub use crate::params::{HnswParams, MAX_EF_CONSTRUCTION, MAX_M};
pub use format::FormatError;

use search::ScratchPool;

/// Highest layer a node may reach (levels above it are clamped; with M ≥ 2 a level of 16 has
/// odds below 2^-16 per node).
const MAX_LEVEL: u8 = 15;

/// How two stored vectors (prepared, then encoded) compare inside the graph: lower is nearer.
/// l2 uses the squared distance, cosine and dot the negated inner product, so the order is the
/// metric's.
#[derive(Clone, Copy)]
enum Distance {
    F32 {
        kernel: Kernel,
        negate: bool,
    },
    F16 {
        kernel: WordKernel,
        negate: bool,
    },
    /// `step²·kernel(codes)`, plus both biases for dot (the word after the codes).
    Int8 {
        kernel: WordKernel,
        dot: bool,
        step2: f32,
    },
}

impl Distance {
    fn of(metric: Metric, encoding: Encoding) -> Self {
        let l2 = metric == Metric::L2;
        let words = word_kernels();
        match encoding {
            Encoding::F32 => Distance::F32 {
                kernel: if l2 {
                    l2_squared_kernel()
                } else {
                    dot_kernel()
                },
                negate: !l2,
            },
            Encoding::F16 => Distance::F16 {
                kernel: if l2 { words.half_l2 } else { words.half_dot },
                negate: !l2,
            },
            Encoding::Int8 { step, .. } => Distance::Int8 {
                kernel: if l2 { words.byte_l2 } else { words.byte_dot },
                dot: !l2,
                step2: step * step,
            },
        }
    }

    #[inline(always)]
    fn between(&self, a: &[u32], b: &[u32]) -> f32 {
        let d = match *self {
            Distance::F32 { kernel, negate } => {
                let d = kernel(as_floats(a), as_floats(b));
                if negate {
                    -d
                } else {
                    d
                }
            }
            Distance::F16 { kernel, negate } => {
                let d = kernel(a, b);
                if negate {
                    -d
                } else {
                    d
                }
            }
            Distance::Int8 { kernel, dot, step2 } => {
                let codes = a.len().saturating_sub(1);
                let d = step2 * kernel(&a[..codes], &b[..codes]);
                if dot {
                    -(d + f32::from_bits(a[codes]) + f32::from_bits(b[codes]))
                } else {
                    d
                }
            }
        };
        // NaN sorts last (an overflowing vector never wins)
        if d.is_nan() {
            f32::INFINITY
        } else {
            d
        }
    }
}

/// f32 words as the floats they hold.
#[inline(always)]
fn as_floats(words: &[u32]) -> &[f32] {
    // SAFETY: `u32` and `f32` have the same size and alignment, and every bit pattern is a
    // valid `f32`.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<f32>(), words.len()) }
}

/// The user-facing score of an internal distance.
fn score_of(metric: Metric, d: f32) -> f32 {
    match metric {
        Metric::L2 => d.max(0.0).sqrt(),
        Metric::Cosine | Metric::Dot => -d,
    }
}

/// The vectors and neighbour lists, shared by the builder and the finished graph.
struct Layers {
    dim: usize,
    /// Words a stored vector takes (see [`Encoding::words`]).
    words: usize,
    /// Neighbours kept per node on upper layers (`M`); layer 0 keeps `2·M`.
    m: usize,
    /// `len × stride`: per node the layer-0 count, `2m` link slots, then the vector's words
    /// (written once, before any thread reads them, and never again).
    nodes: Box<[AtomicU32]>,
    levels: Vec<u8>,
    /// Per node, where its first upper block starts in `upper` (nodes on layer 0 only: unused).
    upper_start: Vec<u32>,
    /// Blocks of `1 + m`: per node with level L, one block for each of layers 1..=L.
    upper: Box<[AtomicU32]>,
}

impl Layers {
    /// Lays out `vectors` (one per level, `words` encoded words each, for `dim` dimensions)
    /// with empty layer-0 lists and upper blocks for `levels`.
    fn new<'a>(
        dim: usize,
        words: usize,
        m: usize,
        vectors: impl Iterator<Item = &'a [u32]>,
        levels: Vec<u8>,
    ) -> Self {
        let mut nodes = Vec::with_capacity(levels.len() * (1 + 2 * m + words));
        for vector in vectors.take(levels.len()) {
            nodes.extend((0..1 + 2 * m).map(|_| AtomicU32::new(0)));
            nodes.extend(vector.iter().map(|w| AtomicU32::new(*w)));
        }
        let mut upper_start = Vec::with_capacity(levels.len());
        let mut upper_len = 0usize;
        for &level in &levels {
            upper_start.push(upper_len as u32);
            upper_len += level as usize * (1 + m);
        }
        Self {
            dim,
            words,
            m,
            nodes: nodes.into_boxed_slice(),
            levels,
            upper_start,
            upper: (0..upper_len).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    fn len(&self) -> usize {
        self.levels.len()
    }

    fn links0(&self) -> usize {
        1 + 2 * self.m
    }

    fn stride(&self) -> usize {
        self.links0() + self.words
    }

    /// The most neighbours a node keeps on `level`.
    fn max_links(&self, level: u8) -> usize {
        if level == 0 {
            2 * self.m
        } else {
            self.m
        }
    }

    /// The stored (encoded) vector of `id`.
    #[inline(always)]
    fn vector(&self, id: u32) -> &[u32] {
        let at = id as usize * self.stride() + self.links0();
        let words = &self.nodes[at..at + self.words];
        // SAFETY: `AtomicU32` has the size, alignment and bit validity of `u32`; vector words
        // are stored before the graph is shared and never written again, so plain reads of
        // them never race with a write.
        unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u32>(), words.len()) }
    }

    /// The block of `id` on `level`: a count, then room for [`max_links`](Self::max_links) ids.
    #[inline(always)]
    fn block(&self, id: u32, level: u8) -> &[AtomicU32] {
        if level == 0 {
            let at = id as usize * self.stride();
            &self.nodes[at..at + self.links0()]
        } else {
            let stride = 1 + self.m;
            let at = self.upper_start[id as usize] as usize + (level as usize - 1) * stride;
            &self.upper[at..at + stride]
        }
    }

    /// Copies the neighbours of `id` on `level` into `out`.
    #[inline(always)]
    fn neighbours_into(&self, id: u32, level: u8, out: &mut Vec<u32>) {
        out.clear();
        let block = self.block(id, level);
        let count = (block[0].load(Ordering::Acquire) as usize).min(block.len() - 1);
        out.extend(block[1..=count].iter().map(|l| l.load(Ordering::Relaxed)));
    }

    /// Replaces the neighbours of `id` on `level` (the caller holds the node's lock).
    fn set_neighbours(&self, id: u32, level: u8, ids: &[u32]) {
        let block = self.block(id, level);
        let count = ids.len().min(block.len() - 1);
        for (link, &to) in block[1..].iter().zip(&ids[..count]) {
            link.store(to, Ordering::Relaxed);
        }
        block[0].store(count as u32, Ordering::Release);
    }

    fn memory_bytes(&self) -> usize {
        self.nodes.len() * 4 + self.levels.len() + self.upper_start.len() * 4 + self.upper.len() * 4
    }
}

/// An HNSW graph over `len` vectors of one dimension and metric.
pub struct HnswGraph {
    metric: Metric,
    params: HnswParams,
    encoding: Encoding,
    distance: Distance,
    layers: Layers,
    /// The node searches start from (the first one that reached the top layer); `None` when empty.
    entry: Option<u32>,
    top_level: u8,
    scratch: ScratchPool,
}

impl std::fmt::Debug for HnswGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswGraph")
            .field("metric", &self.metric)
            .field("params", &self.params)
            .field("len", &self.len())
            .field("dim", &self.dim())
            .field("encoding", &self.encoding)
            .finish()
    }
}

impl HnswGraph {
    /// Builds a graph over `vectors` (`dim` floats each, back to back, prepared for `metric`)
    /// with `threads` threads; `seed` draws the levels.
    pub fn build(
        metric: Metric,
        dim: usize,
        params: HnswParams,
        vectors: Vec<f32>,
        threads: usize,
        seed: u64,
    ) -> Self {
        Self::build_encoded(metric, dim, params, Encoding::F32, vectors, threads, seed)
    }

    /// [`build`](Self::build) storing the vectors in `encoding` (trained on them beforehand:
    /// [`Encoding::train`]); the graph is built from the encoded vectors.
    pub fn build_encoded(
        metric: Metric,
        dim: usize,
        params: HnswParams,
        encoding: Encoding,
        vectors: Vec<f32>,
        threads: usize,
        seed: u64,
    ) -> Self {
        let dim = dim.max(1);
        let mut words = Vec::with_capacity(vectors.len() / dim * encoding.words(dim));
        for vector in vectors.chunks_exact(dim) {
            encoding.encode(vector, &mut words);
        }
        drop(vectors);
        build::build(metric, dim, params, encoding, words, threads, seed)
    }

    /// A new graph holding this one's nodes (same ids, same links) followed by `vectors`
    /// (`len..`, encoded as this graph's), inserted with `threads` threads as a build would;
    /// this graph is unchanged. This costs a copy of the graph plus the inserts of the new
    /// nodes only.
    pub fn extend(&self, vectors: Vec<f32>, threads: usize, seed: u64) -> Self {
        let dim = self.dim();
        let mut words = Vec::with_capacity(vectors.len() / dim * self.layers.words);
        for vector in vectors.chunks_exact(dim) {
            self.encoding.encode(vector, &mut words);
        }
        drop(vectors);
        build::extend(self, words, threads, seed)
    }

    /// A new graph holding this one's nodes (as [`extend`](Self::extend) keeps them) followed
    /// by `nodes` of `other` (`len..`, in that order), inserted with `threads` threads. Their
    /// stored vectors are copied when both graphs store them alike, else decoded and encoded as
    /// this graph's. Both graphs must have one dimension.
    pub fn absorb(&self, other: &HnswGraph, nodes: &[u32], threads: usize, seed: u64) -> Self {
        assert_eq!(self.dim(), other.dim(), "graphs of one dimension");
        let mut words = Vec::with_capacity(nodes.len() * self.layers.words);
        let mut decoded = Vec::with_capacity(self.dim());
        for &node in nodes {
            if other.encoding == self.encoding {
                words.extend_from_slice(other.layers.vector(node));
            } else {
                decoded.clear();
                let stored = other.layers.vector(node);
                other.encoding.decode(stored, other.dim(), &mut decoded);
                self.encoding.encode(&decoded, &mut words);
            }
        }
        build::extend(self, words, threads, seed)
    }

    /// A new graph over the stored vectors of `nodes` (in that order: node `nodes[i]` becomes
    /// `i`), in this graph's encoding, built as [`build`](Self::build) would.
    pub fn subset(&self, nodes: &[u32], threads: usize, seed: u64) -> Self {
        let mut words = Vec::with_capacity(nodes.len() * self.layers.words);
        for &node in nodes {
            words.extend_from_slice(self.layers.vector(node));
        }
        let (metric, dim, encoding) = (self.metric, self.dim(), self.encoding);
        build::build(metric, dim, self.params, encoding, words, threads, seed)
    }

    pub fn metric(&self) -> Metric {
        self.metric
    }

    pub fn params(&self) -> HnswParams {
        self.params
    }

    pub fn dim(&self) -> usize {
        self.layers.dim
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How the vectors are stored.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Bytes one stored vector takes.
    pub fn bytes_per_vector(&self) -> usize {
        self.layers.words * 4
    }

    /// The vector of node `id` as stored (prepared), when the graph stores full precision.
    pub fn vector(&self, id: u32) -> Option<&[f32]> {
        (self.encoding == Encoding::F32).then(|| as_floats(self.layers.vector(id)))
    }

    /// The vector of node `id` as its encoding gives it back (exact for f32).
    pub fn decoded(&self, id: u32) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.dim());
        self.encoding
            .decode(self.layers.vector(id), self.dim(), &mut out);
        out
    }

    /// `query` (prepared) in this graph's encoding, for [`score`](Self::score).
    pub fn encode_query(&self, query: &[f32]) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.layers.words);
        self.encoding.encode(query, &mut out);
        out
    }

    /// The score of node `id` for a query from [`encode_query`](Self::encode_query): exact for
    /// f32, approximate otherwise; NaN for a query of another length.
    pub fn score(&self, encoded_query: &[u32], id: u32) -> f32 {
        if encoded_query.len() != self.layers.words {
            return f32::NAN;
        }
        score_of(
            self.metric,
            self.distance.between(encoded_query, self.layers.vector(id)),
        )
    }

    /// Asks the CPU to start loading node `id`'s vector, for a [`score`](Self::score) of it
    /// a little later.
    #[inline]
    pub fn prefetch(&self, id: u32) {
        search::prefetch_vector(&self.layers, id);
    }

    /// The neighbours of `id` on layer 0 (for tests and diagnostics).
    pub fn neighbours(&self, id: u32) -> Vec<u32> {
        let mut out = Vec::new();
        self.layers.neighbours_into(id, 0, &mut out);
        out
    }

    /// Approximate top-`k` (best first) with a candidate list of `ef` (at least `k`). Slots in
    /// the hits are node ids.
    pub fn search(&self, query: &[f32], k: usize, ef: usize) -> Vec<ScoredSlot> {
        self.search_accepting(query, k, ef, |_| true)
    }

    /// [`search`](Self::search) returning only nodes `accept` takes; it is called inside the walk,
    /// so up to `k` accepted nodes are found however many are rejected.
    pub fn search_accepting(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        accept: impl Fn(u32) -> bool,
    ) -> Vec<ScoredSlot> {
        let Some(entry) = self.entry else {
            return Vec::new();
        };
        if k == 0 || query.len() != self.dim() {
            return Vec::new();
        }
        let mut scratch = self.scratch.take(self.len());
        let mut encoded = std::mem::take(&mut scratch.query);
        encoded.clear();
        self.encoding.encode(query, &mut encoded);
        let nearest = search::search(
            &self.layers,
            self.distance,
            &mut scratch,
            &encoded,
            entry,
            self.top_level,
            ef.max(k),
            &accept,
        );
        scratch.query = encoded;
        self.scratch.give_back(scratch);
        nearest
            .into_iter()
            .take(k)
            .map(|(d, id)| ScoredSlot {
                slot: id,
                score: score_of(self.metric, d),
            })
            .collect()
    }

    /// Bytes held: vectors, levels and links, plus the pooled visited sets.
    pub fn memory_bytes(&self) -> usize {
        self.layers.memory_bytes() + self.scratch.memory_bytes()
    }
}
