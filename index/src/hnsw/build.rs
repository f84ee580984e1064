//! Building a graph. Levels are drawn up front (so the upper layers are allocated once); the
//! first node is inserted alone, the rest by worker threads taking ids from a shared counter.
//! Each insert descends greedily to its own level, then on each layer from there down searches
//! with `ef_construction` (entering each layer from the previous layer's whole candidate list,
//! as the paper does), keeps `M` neighbours chosen by the heuristic, and links back from each,
//! pruning a full list with the same heuristic.

use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use super::search::{greedy, search_layer, Near, Scratch, ScratchPool};
use super::{Distance, HnswGraph, HnswParams, Layers, MAX_EF_CONSTRUCTION, MAX_LEVEL, MAX_M};
use crate::distance::Metric;
use crate::quantize::Encoding;

/// Below this many vectors a build runs on one thread (and so is fully reproducible).
const PARALLEL_FROM: usize = 2_000;

/// Builds a graph over `vectors`: encoded words, `encoding.words(dim)` per vector.
pub(super) fn build(
    metric: Metric,
    dim: usize,
    params: HnswParams,
    encoding: Encoding,
    vectors: Vec<u32>,
    threads: usize,
    seed: u64,
) -> HnswGraph {
    let m = params.m.clamp(2, MAX_M);
    let ef_construction = params.ef_construction.clamp(1, MAX_EF_CONSTRUCTION);
    let words = encoding.words(dim);
    let n = vectors.len() / words;
    let levels = draw_levels(n, m, seed);
    let layers = Layers::new(dim, words, m, vectors.chunks_exact(words), levels);
    drop(vectors);
    let params = HnswParams { m, ef_construction };
    insert_all(metric, params, encoding, layers, 0, None, threads)
}

/// [`HnswGraph::extend`] with the new vectors encoded already.
pub(super) fn extend(base: &HnswGraph, vectors: Vec<u32>, threads: usize, seed: u64) -> HnswGraph {
    let old = &base.layers;
    let (dim, words, m, n0) = (old.dim, old.words, old.m, old.len());
    let added = vectors.len() / words;
    let mut levels = old.levels.clone();
    levels.extend(draw_levels(added, m, seed ^ n0 as u64));
    let old_vectors = (0..n0 as u32).map(|id| old.vector(id));
    let all = old_vectors.chain(vectors.chunks_exact(words));
    let layers = Layers::new(dim, words, m, all, levels);
    drop(vectors);
    // The old nodes keep their links (their upper blocks start where they did: the levels
    // before them are the same).
    let mut links = Vec::new();
    for id in 0..n0 as u32 {
        for level in 0..=old.levels[id as usize] {
            old.neighbours_into(id, level, &mut links);
            layers.set_neighbours(id, level, &links);
        }
    }
    let top = base.entry.map(|entry| (entry, base.top_level));
    insert_all(
        base.metric,
        base.params,
        base.encoding,
        layers,
        n0,
        top,
        threads,
    )
}

/// Inserts nodes `from..` of `layers` (those before are linked already, with entry `top`).
fn insert_all(
    metric: Metric,
    params: HnswParams,
    encoding: Encoding,
    layers: Layers,
    from: usize,
    top: Option<(u32, u8)>,
    threads: usize,
) -> HnswGraph {
    let n = layers.len();
    let distance = Distance::of(metric, encoding);
    let builder = Builder {
        layers: &layers,
        distance,
        ef_construction: params.ef_construction,
        locks: (0..n).map(|_| Mutex::new(())).collect(),
        top: Mutex::new(top),
        scratch: ScratchPool::default(),
    };
    let threads = if n - from < PARALLEL_FROM {
        1
    } else {
        threads.max(1)
    };
    let next = AtomicUsize::new(from);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut scratch = builder.scratch.take(n);
                loop {
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    if id >= n {
                        break;
                    }
                    builder.insert(id as u32, &mut scratch);
                }
            });
        }
    });
    let top = builder.top.into_inner();
    HnswGraph {
        metric,
        params,
        encoding,
        distance,
        layers,
        entry: top.map(|(id, _)| id),
        top_level: top.map_or(0, |(_, level)| level),
        scratch: ScratchPool::default(),
    }
}

/// Levels with `P(level ≥ l) = M^-l` (the paper's `mL = 1 / ln M`), from a seeded splitmix64.
fn draw_levels(n: usize, m: usize, seed: u64) -> Vec<u8> {
    let ml = 1.0 / (m as f64).ln();
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            // uniform in (0, 1]
            let u = ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
            ((-u.ln() * ml).floor() as u64).min(MAX_LEVEL as u64) as u8
        })
        .collect()
}

struct Builder<'a> {
    layers: &'a Layers,
    distance: Distance,
    ef_construction: usize,
    /// One per node, held while its lists are rewritten.
    locks: Box<[Mutex<()>]>,
    /// The entry node and the top layer, once the first node is in.
    top: Mutex<Option<(u32, u8)>>,
    scratch: ScratchPool,
}

impl Builder<'_> {
    fn insert(&self, id: u32, scratch: &mut Scratch) {
        let layers = self.layers;
        let level = layers.levels[id as usize];
        let mut top = self.top.lock();
        let Some((entry, top_level)) = *top else {
            *top = Some((id, level));
            return;
        };
        // A node that raises the top layer holds the entry until it is linked (as hnswlib does).
        let raising = if level > top_level {
            Some(top)
        } else {
            drop(top);
            None
        };
        let query = layers.vector(id);
        let mut nearest = Near {
            d: self.distance.between(query, layers.vector(entry)),
            id: entry,
        };
        for lc in (level + 1..=top_level).rev() {
            nearest = greedy(
                layers,
                self.distance,
                &mut scratch.links,
                query,
                nearest,
                lc,
            );
        }
        let mut entries = vec![nearest];
        for lc in (0..=level.min(top_level)).rev() {
            search_layer(
                layers,
                self.distance,
                scratch,
                query,
                &entries,
                self.ef_construction,
                lc,
                &|_| true,
            );
            entries.clear();
            // (the node itself is found when an insert meanwhile linked back to it)
            entries.extend(scratch.results.drain().filter(|n| n.id != id));
            entries.sort_unstable();
            if entries.is_empty() {
                entries.push(nearest);
            }
            let chosen = select(layers, self.distance, &entries, layers.m);
            self.set_own(id, lc, &chosen);
            for neighbour in &chosen {
                self.link_back(neighbour.id, id, neighbour.d, lc, &mut scratch.links);
            }
        }
        if let Some(mut top) = raising {
            *top = Some((id, level));
        }
    }

    /// Gives the node being inserted its neighbours on `level`. Another insert may have linked
    /// back to it already (having entered this layer through it from above), so those links are
    /// kept too, pruned with the heuristic if there are too many: dropping one could leave the
    /// other node unreachable.
    fn set_own(&self, id: u32, level: u8, chosen: &[Near]) {
        let layers = self.layers;
        let _held = self.locks[id as usize].lock();
        let mut existing = Vec::new();
        layers.neighbours_into(id, level, &mut existing);
        existing.retain(|other| *other != id && chosen.iter().all(|c| c.id != *other));
        if existing.is_empty() {
            let ids: Vec<u32> = chosen.iter().map(|n| n.id).collect();
            layers.set_neighbours(id, level, &ids);
            return;
        }
        let from = layers.vector(id);
        let mut all: Vec<Near> = chosen.to_vec();
        all.extend(existing.into_iter().map(|other| Near {
            d: self.distance.between(from, layers.vector(other)),
            id: other,
        }));
        all.sort_unstable();
        let keep = layers.max_links(level);
        let kept = if all.len() <= keep {
            all
        } else {
            select(layers, self.distance, &all, keep)
        };
        let ids: Vec<u32> = kept.iter().map(|n| n.id).collect();
        layers.set_neighbours(id, level, &ids);
    }

    /// Adds `new` (at distance `d` from it) to the neighbours of `node` on `level`, pruning
    /// with the heuristic when the list is full.
    fn link_back(&self, node: u32, new: u32, d: f32, level: u8, links: &mut Vec<u32>) {
        let layers = self.layers;
        let _held = self.locks[node as usize].lock();
        layers.neighbours_into(node, level, links);
        if links.contains(&new) {
            return;
        }
        if links.len() < layers.max_links(level) {
            links.push(new);
            layers.set_neighbours(node, level, links);
            return;
        }
        let from = layers.vector(node);
        let mut candidates: Vec<Near> = links
            .iter()
            .map(|&id| Near {
                d: self.distance.between(from, layers.vector(id)),
                id,
            })
            .collect();
        candidates.push(Near { d, id: new });
        candidates.sort_unstable();
        let kept: Vec<u32> = select(layers, self.distance, &candidates, layers.max_links(level))
            .iter()
            .map(|n| n.id)
            .collect();
        layers.set_neighbours(node, level, &kept);
    }
}

/// The paper's heuristic (algorithm 4, without filling up with discarded candidates): from
/// candidates sorted nearest first, keep one only if it is nearer to the base than to every
/// candidate kept already, up to `keep`. This spreads links across directions, which keeps
/// clustered data connected.
fn select(layers: &Layers, distance: Distance, sorted: &[Near], keep: usize) -> Vec<Near> {
    if sorted.len() <= keep {
        return sorted.to_vec();
    }
    let mut chosen: Vec<Near> = Vec::with_capacity(keep);
    for candidate in sorted {
        if chosen.len() >= keep {
            break;
        }
        let v = layers.vector(candidate.id);
        if chosen
            .iter()
            .all(|kept| distance.between(v, layers.vector(kept.id)) >= candidate.d)
        {
            chosen.push(*candidate);
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_thin_out_by_m() {
        let levels = draw_levels(100_000, 16, 7);
        let above0 = levels.iter().filter(|&&l| l >= 1).count() as f64;
        let above1 = levels.iter().filter(|&&l| l >= 2).count() as f64;
        // expected 6,250 and 390
        assert!((5_900.0..6_600.0).contains(&above0), "{above0}");
        assert!((300.0..480.0).contains(&above1), "{above1}");
        assert_eq!(levels, draw_levels(100_000, 16, 7));
    }
}
