//! quiver's index algorithms: pure, synchronous code with no I/O.
//!
//! - [`bm25`]: BM25's corpus statistics, merged across shards, and the score of a match from them;
//! - [`distance`]: metrics and SIMD distance kernels (AVX2/FMA detected at run time, scalar fallback);
//! - [`filter`]: the payload filter language (Mongo/Pinecone-style JSON) and its evaluation;
//! - [`payload_index`]: per-field payload indexes that bound the candidates of a filter;
//! - [`flat`]: exact top-k search;
//! - [`fusion`]: reciprocal-rank and weighted fusion of ranked lists (vector and text), explained;
//! - [`hnsw`]: quiver's HNSW graph over a fixed set of vectors: parallel build, extension,
//!   search with a predicate inside the walk, and its file format; [`params`]: its parameters;
//! - [`quantize`]: the f16 and int8 encodings of a segment's vectors, and their kernels;
//! - [`vecs`]: the `.fvecs` / `.ivecs` formats of benchmark data, parsed from bytes.

pub mod bm25;
pub mod distance;
pub mod filter;
pub mod flat;
pub mod fusion;
pub mod hnsw;
pub mod params;
pub mod payload_index;
pub mod quantize;
pub mod vecs;

/// Position of one stored vector version inside an index. A point that is replaced gets a new
/// slot; the old slot becomes a tombstone.
pub type Slot = u32;

/// One search hit: a slot and its user-facing score (see [`distance::Metric::score`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredSlot {
    pub slot: Slot,
    pub score: f32,
}
