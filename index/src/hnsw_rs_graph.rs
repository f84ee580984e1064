//! The HNSW graph, through the `hnsw_rs` crate.
//!
//! `hnsw_rs` needs distances that are never negative, while quiver's metrics are similarities or
//! distances. Each metric gets a distance that is a strictly increasing function of "worse", so
//! graph construction and search order nodes exactly as the metric does:
//! - l2: squared Euclidean distance;
//! - cosine (unit vectors): `1 - dot`, clamped at 0;
//! - dot: `g(-dot)` with `g(x) = 1 + x` for `x >= 0` and `1 / (1 - x)` below, which maps the real
//!   line onto `(0, inf)` monotonically.
//!
//! Points are addressed by [`Slot`]. Deletions are tombstones the caller filters *inside* the graph
//! walk (through the filter closure), never by dropping results afterwards.
//!
//! A graph can be dumped to a directory and loaded back, so a restart does not rebuild it. The
//! loader of `hnsw_rs` ties the graph's lifetime to its reader; the reader (a path and options, a
//! few bytes) is leaked once per load so the graph can be `'static`.

use std::path::Path;

use hnsw_rs::prelude::{AnnT, Distance, Hnsw, HnswIo};
use thiserror::Error;

use crate::distance::{dot, l2_squared, Metric};
use crate::{ScoredSlot, Slot};

/// Errors of dumping or loading a graph.
#[derive(Debug, Error)]
pub enum HnswError {
    #[error("hnsw dump failed: {0}")]
    Dump(String),
    #[error("hnsw load failed: {0}")]
    Load(String),
}

pub use crate::params::{HnswParams, MAX_EF_CONSTRUCTION, MAX_M};

const MAX_LAYERS: usize = 16;

fn finite_or_max(d: f32) -> f32 {
    if d.is_nan() {
        f32::MAX
    } else {
        d
    }
}

/// Squared L2 distance for the graph.
#[derive(Debug, Default, Clone, Copy)]
pub struct QuiverL2;
impl Distance<f32> for QuiverL2 {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        finite_or_max(l2_squared(a, b))
    }
}

/// `1 - cos` for unit vectors.
#[derive(Debug, Default, Clone, Copy)]
pub struct QuiverCosine;
impl Distance<f32> for QuiverCosine {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        finite_or_max((1.0 - dot(a, b)).max(0.0))
    }
}

/// A positive, increasing transform of `-dot`.
#[derive(Debug, Default, Clone, Copy)]
pub struct QuiverDot;
impl Distance<f32> for QuiverDot {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        finite_or_max(dot_to_distance(dot(a, b)))
    }
}

fn dot_to_distance(dot: f32) -> f32 {
    let x = -dot;
    if x >= 0.0 {
        1.0 + x
    } else {
        1.0 / (1.0 - x)
    }
}

fn distance_to_dot(d: f32) -> f32 {
    if d >= 1.0 {
        -(d - 1.0)
    } else {
        -(1.0 - 1.0 / d)
    }
}

enum Graph {
    L2(Hnsw<'static, f32, QuiverL2>),
    Cosine(Hnsw<'static, f32, QuiverCosine>),
    Dot(Hnsw<'static, f32, QuiverDot>),
}

macro_rules! with_graph {
    ($graph:expr, $g:ident => $body:expr) => {
        match $graph {
            Graph::L2($g) => $body,
            Graph::Cosine($g) => $body,
            Graph::Dot($g) => $body,
        }
    };
}

/// An HNSW graph over slots for one metric.
pub struct HnswIndex {
    metric: Metric,
    params: HnswParams,
    dim: usize,
    graph: Graph,
}

impl std::fmt::Debug for HnswIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswIndex")
            .field("metric", &self.metric)
            .field("params", &self.params)
            .field("len", &self.len())
            .finish()
    }
}

impl HnswIndex {
    /// An empty graph; `capacity_hint` pre-sizes internal tables.
    pub fn new(metric: Metric, dim: usize, params: HnswParams, capacity_hint: usize) -> Self {
        let m = params.m.clamp(2, MAX_M);
        let efc = params.ef_construction.clamp(1, MAX_EF_CONSTRUCTION);
        let cap = capacity_hint.max(1024);
        let graph = match metric {
            Metric::L2 => Graph::L2(Hnsw::new(m, cap, MAX_LAYERS, efc, QuiverL2)),
            Metric::Cosine => Graph::Cosine(Hnsw::new(m, cap, MAX_LAYERS, efc, QuiverCosine)),
            Metric::Dot => Graph::Dot(Hnsw::new(m, cap, MAX_LAYERS, efc, QuiverDot)),
        };
        Self {
            metric,
            params,
            dim,
            graph,
        }
    }

    pub fn metric(&self) -> Metric {
        self.metric
    }

    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// Number of nodes in the graph (tombstoned ones included).
    pub fn len(&self) -> usize {
        with_graph!(&self.graph, g => g.get_nb_point())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds one prepared vector. Safe to call while other threads search.
    pub fn insert(&self, slot: Slot, vector: &[f32]) {
        with_graph!(&self.graph, g => g.insert_slice((vector, slot as usize)))
    }

    /// Adds many prepared vectors using every core.
    pub fn insert_many(&self, items: &[(Slot, &[f32])]) {
        let items: Vec<(&[f32], usize)> = items.iter().map(|(s, v)| (*v, *s as usize)).collect();
        with_graph!(&self.graph, g => g.parallel_insert_slice(&items))
    }

    /// Approximate top-k, best first. `accept` is called inside the graph walk: slots it rejects
    /// (tombstones, filtered-out points) are walked through but never returned.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        accept: Option<&(dyn Fn(Slot) -> bool + Sync)>,
    ) -> Vec<ScoredSlot> {
        if k == 0 || self.is_empty() {
            return Vec::new();
        }
        let ef = ef.max(k);
        // Ask for `ef` neighbours: hnsw_rs applies the filter to its final list of `knbn`, so
        // asking for only `k` could return fewer than `k` accepted hits.
        let neighbours = match accept {
            None => with_graph!(&self.graph, g => g.search(query, ef, ef)),
            Some(accept) => {
                let filter = |id: &usize| accept(*id as Slot);
                with_graph!(&self.graph, g => g.search_filter(query, ef, ef, Some(&filter)))
            }
        };
        let mut hits: Vec<ScoredSlot> = neighbours
            .into_iter()
            .filter(|n| accept.is_none_or(|a| a(n.d_id as Slot)))
            .map(|n| ScoredSlot {
                slot: n.d_id as Slot,
                score: self.distance_to_score(n.distance),
            })
            .collect();
        hits.truncate(k);
        hits
    }

    fn distance_to_score(&self, d: f32) -> f32 {
        match self.metric {
            Metric::L2 => d.max(0.0).sqrt(),
            Metric::Cosine => 1.0 - d,
            Metric::Dot => distance_to_dot(d),
        }
    }

    /// An estimate of the bytes the graph holds: hnsw_rs's copy of the vectors plus neighbour
    /// lists. Layer 0 keeps up to 2m neighbours, upper layers (about n / m nodes) keep m; each
    /// link is a separately allocated `Arc` of a node reference and a distance. The per-link and
    /// per-node costs are calibrated on resident memory measured for 100k × 128 (benches/RESULTS.md).
    pub fn memory_bytes(&self) -> usize {
        let n = self.len();
        let links = n * 2 * self.params.m + n / self.params.m.max(2) * self.params.m;
        n * self.dim * std::mem::size_of::<f32>() + links * 56 + n * 128
    }

    /// Writes the graph under `dir` (which must exist) and returns the basename to load it with.
    pub fn dump(&self, dir: &Path, basename: &str) -> Result<String, HnswError> {
        with_graph!(&self.graph, g => g.file_dump(dir, basename))
            .map_err(|e| HnswError::Dump(e.to_string()))
    }

    /// Loads a graph written by [`dump`](Self::dump). A corrupt dump is an error, not a panic.
    pub fn load(
        dir: &Path,
        basename: &str,
        metric: Metric,
        dim: usize,
        params: HnswParams,
    ) -> Result<Self, HnswError> {
        let dir = dir.to_path_buf();
        let basename = basename.to_string();
        // hnsw_rs asserts on malformed files; keep that from taking the process down.
        let loaded = std::panic::catch_unwind(move || -> Result<Graph, String> {
            let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(&dir, &basename)));
            let graph = match metric {
                Metric::L2 => Graph::L2(io.load_hnsw().map_err(|e| e.to_string())?),
                Metric::Cosine => Graph::Cosine(io.load_hnsw().map_err(|e| e.to_string())?),
                Metric::Dot => Graph::Dot(io.load_hnsw().map_err(|e| e.to_string())?),
            };
            Ok(graph)
        })
        .map_err(|_| HnswError::Load("malformed dump".into()))?
        .map_err(HnswError::Load)?;
        let index = Self {
            metric,
            params,
            dim,
            graph: loaded,
        };
        if !index.is_empty() {
            let d = with_graph!(&index.graph, g => g.get_point_indexation().get_data_dimension());
            if d != dim {
                return Err(HnswError::Load(format!(
                    "dump has dimension {d}, collection has {dim}"
                )));
            }
        }
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flat::VectorArena;
    use rand::{Rng, SeedableRng};

    fn random_vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| (0..dim).map(|_| rng.gen_range(-1.0..1.0)).collect())
            .collect()
    }

    fn recall(metric: Metric) -> f64 {
        let dim = 16;
        let mut data = random_vectors(2000, dim, 1);
        let mut queries = random_vectors(50, dim, 2);
        data.iter_mut().chain(queries.iter_mut()).for_each(|v| {
            metric.prepare(v);
        });
        let index = HnswIndex::new(metric, dim, HnswParams::default(), data.len());
        let mut arena = VectorArena::new(dim);
        let items: Vec<(Slot, &[f32])> = data
            .iter()
            .enumerate()
            .map(|(i, v)| (i as Slot, v.as_slice()))
            .collect();
        index.insert_many(&items);
        for (i, v) in data.iter().enumerate() {
            arena.set(i as Slot, v);
        }
        let mut found = 0;
        for q in &queries {
            let exact: Vec<Slot> = arena
                .search(metric, q, 10, 0..data.len() as Slot)
                .iter()
                .map(|h| h.slot)
                .collect();
            let approx = index.search(q, 10, 64, None);
            // scores are reported in the metric's own terms
            let s0 = approx[0];
            let expected = metric.score(q, arena.get(s0.slot).unwrap());
            assert!(
                (s0.score - expected).abs() < 1e-3,
                "{metric}: {s0:?} vs {expected}"
            );
            found += approx.iter().filter(|h| exact.contains(&h.slot)).count();
        }
        found as f64 / (queries.len() * 10) as f64
    }

    #[test]
    fn recall_is_high_for_every_metric() {
        for metric in [Metric::L2, Metric::Cosine, Metric::Dot] {
            let r = recall(metric);
            assert!(r >= 0.9, "{metric}: recall {r}");
        }
    }

    #[test]
    fn filter_is_applied_inside_the_walk() {
        let data = random_vectors(500, 8, 3);
        let index = HnswIndex::new(Metric::L2, 8, HnswParams::default(), 500);
        for (i, v) in data.iter().enumerate() {
            index.insert(i as Slot, v);
        }
        let even = |s: Slot| s.is_multiple_of(2);
        let hits = index.search(&data[1], 10, 64, Some(&even));
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|h| h.slot.is_multiple_of(2)));
    }

    #[test]
    fn dump_and_load_round_trip() {
        let dir = std::env::temp_dir().join(format!("quiver-hnsw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data = random_vectors(300, 8, 4);
        let index = HnswIndex::new(Metric::Dot, 8, HnswParams::default(), 300);
        for (i, v) in data.iter().enumerate() {
            index.insert(i as Slot, v);
        }
        let name = index.dump(&dir, "g").unwrap();
        let loaded = HnswIndex::load(&dir, &name, Metric::Dot, 8, HnswParams::default()).unwrap();
        assert_eq!(loaded.len(), 300);
        assert_eq!(
            index.search(&data[5], 5, 32, None),
            loaded.search(&data[5], 5, 32, None)
        );
        std::fs::write(dir.join(format!("{name}.hnsw.graph")), b"garbage").unwrap();
        assert!(HnswIndex::load(&dir, &name, Metric::Dot, 8, HnswParams::default()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dot_transform_is_monotonic_and_invertible() {
        let xs = [-1e6f32, -10.0, -1.0, -0.5, 0.0, 0.5, 1.0, 10.0, 1e6];
        for w in xs.windows(2) {
            assert!(dot_to_distance(w[0]) > dot_to_distance(w[1]));
        }
        for x in [-10.0f32, -0.5, 0.0, 0.5, 10.0] {
            assert!((distance_to_dot(dot_to_distance(x)) - x).abs() < 1e-4);
        }
    }
}
