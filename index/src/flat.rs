//! Exact search: a contiguous vector arena addressed by slot, and a bounded top-k; a batch of
//! queries is scored against blocks of rows held in cache ([`VectorArena::search_batch`]).
//!
//! [`VectorArena`] stores vectors back to back in rows (`row * dim`), so a scan is a linear walk
//! through memory, and maps each slot to its row. A removed slot's row is reused by the next slot
//! stored, so the arena holds as many vectors as there are live slots (plus one `u32` per slot
//! ever used). Vectors are stored already [`prepare`](crate::distance::Metric::prepare)d.
//! [`TopK`] keeps the best `k` hits seen so far in a heap whose top is the worst kept hit.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::distance::{dot, dot_tile, Metric};
use crate::{ScoredSlot, Slot};

/// The row of a slot that holds no vector.
const NO_ROW: u32 = u32::MAX;

/// Vectors of one dimension, addressed by slot.
#[derive(Debug, Clone)]
pub struct VectorArena {
    dim: usize,
    data: Vec<f32>,
    /// The row of each slot (`NO_ROW`: none).
    rows: Vec<u32>,
    /// Rows of removed slots, reused first.
    free: Vec<u32>,
}

impl VectorArena {
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            data: Vec::new(),
            rows: Vec::new(),
            free: Vec::new(),
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of vectors held.
    pub fn len(&self) -> usize {
        self.data.len() / self.dim.max(1) - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores `vector` at `slot`, in the slot's row or a free one.
    pub fn set(&mut self, slot: Slot, vector: &[f32]) {
        debug_assert_eq!(vector.len(), self.dim);
        let s = slot as usize;
        if self.rows.len() <= s {
            self.rows.resize(s + 1, NO_ROW);
        }
        if self.rows[s] == NO_ROW {
            self.rows[s] = match self.free.pop() {
                Some(row) => row,
                None => {
                    let row = (self.data.len() / self.dim.max(1)) as u32;
                    self.data.resize(self.data.len() + self.dim, 0.0);
                    row
                }
            };
        }
        let start = self.rows[s] as usize * self.dim;
        self.data[start..start + self.dim].copy_from_slice(vector);
    }

    /// Forgets the vector at `slot`; its row is reused by a later [`set`](Self::set).
    pub fn remove(&mut self, slot: Slot) {
        if let Some(row) = self.rows.get_mut(slot as usize) {
            if *row != NO_ROW {
                self.free.push(*row);
                *row = NO_ROW;
            }
        }
    }

    /// The vector at `slot`, if it holds one.
    pub fn get(&self, slot: Slot) -> Option<&[f32]> {
        let row = *self.rows.get(slot as usize)?;
        if row == NO_ROW {
            return None;
        }
        let start = row as usize * self.dim;
        self.data.get(start..start + self.dim)
    }

    /// Bytes held by the vectors and the slot map.
    pub fn memory_bytes(&self) -> usize {
        self.data.capacity() * std::mem::size_of::<f32>()
            + (self.rows.capacity() + self.free.capacity()) * std::mem::size_of::<u32>()
    }

    /// Exact top-k over `slots`, best first.
    pub fn search(
        &self,
        metric: Metric,
        query: &[f32],
        k: usize,
        slots: impl IntoIterator<Item = Slot>,
    ) -> Vec<ScoredSlot> {
        let mut top = TopK::new(metric, k);
        for slot in slots {
            if let Some(v) = self.get(slot) {
                top.push(ScoredSlot {
                    slot,
                    score: metric.score(query, v),
                });
            }
        }
        top.into_sorted_vec()
    }

    /// Exact top-k over `slots` of each of `queries` (answers in order, each best first). The rows are taken a
    /// block at a time (a block fits the CPU's L2 cache) and scored against every query while
    /// they are in cache, four queries by two rows per [`dot_tile`] call; a score goes to a
    /// query's heap only if it is at least as good as the worst one kept (one comparison per
    /// pair, eight at a time). The first pass ranks l2 through norms, so at near-ties the `k`
    /// kept may differ from `search`'s; their scores are then computed as `search` computes them.
    pub fn search_batch(
        &self,
        metric: Metric,
        queries: &[&[f32]],
        k: usize,
        slots: impl Iterator<Item = Slot>,
    ) -> Vec<Vec<ScoredSlot>> {
        if queries.is_empty() {
            return Vec::new();
        }
        // l2 ranks by |q|² + |x|² - 2 q·x (squared, so by the same order as the distance); the
        // square root is taken of the k kept
        let l2 = metric == Metric::L2;
        let higher = metric.higher_is_better();
        let rows: Vec<(Slot, &[f32])> = slots
            .filter_map(|slot| Some((slot, self.get(slot)?)))
            .collect();
        let norm = |v: &[f32]| if l2 { dot(v, v) } else { 0.0 };
        let row_norms: Vec<f32> = rows.iter().map(|(_, r)| norm(r)).collect();
        let query_norms: Vec<f32> = queries.iter().map(|q| norm(q)).collect();
        let mut tops: Vec<TopK> = queries.iter().map(|_| TopK::new(metric, k)).collect();
        // Scores are compared as keys, lower is nearer: the squared l2 distance, or the negated
        // inner product. Per query, the key a hit must reach to enter its top (any, until it
        // holds k); a padding lane of a short last quad never enters.
        let mut bounds = vec![f32::INFINITY; queries.len()];
        let score_of = |key: f32| if higher { -key } else { key };
        let key_of = |score: f32| if higher { -score } else { score };
        let block_rows = (ROW_BLOCK_BYTES / (self.dim.max(1) * 4)).max(2);
        for (b, block) in rows.chunks(block_rows).enumerate() {
            let first_row = b * block_rows;
            for (c, quad) in queries.chunks(4).enumerate() {
                let first_query = c * 4;
                let q = [0, 1, 2, 3].map(|i| *quad.get(i).unwrap_or(&quad[0]));
                let qn =
                    [0, 1, 2, 3].map(|i| query_norms.get(first_query + i).copied().unwrap_or(0.0));
                for (p, pair) in block.chunks(2).enumerate() {
                    let row = first_row + 2 * p;
                    let r = [pair[0].1, pair.get(1).unwrap_or(&pair[0]).1];
                    let rn = [row_norms[row], row_norms[row + pair.len() - 1]];
                    let tile = dot_tile(q, r);
                    let bound: [f32; 4] = [0, 1, 2, 3].map(|i| {
                        if i < quad.len() {
                            bounds[first_query + i]
                        } else {
                            f32::NEG_INFINITY
                        }
                    });
                    let mut keys = [0.0f32; 8];
                    if l2 {
                        for x in 0..8 {
                            keys[x] = (qn[x / 2] + rn[x % 2] - 2.0 * tile[x]).max(0.0);
                        }
                    } else {
                        for x in 0..8 {
                            keys[x] = -tile[x];
                        }
                    }
                    // (ties go to the heap, which breaks them by slot)
                    let mut enters = false;
                    for x in 0..8 {
                        enters |= keys[x] <= bound[x / 2];
                    }
                    if !enters {
                        continue;
                    }
                    for i in 0..quad.len() {
                        let query = first_query + i;
                        for (j, &(slot, _)) in pair.iter().enumerate() {
                            let key = keys[2 * i + j];
                            if key <= bounds[query] {
                                let top = &mut tops[query];
                                top.push(ScoredSlot {
                                    slot,
                                    score: score_of(key),
                                });
                                if let Some(worst) = top.worst() {
                                    bounds[query] = key_of(worst);
                                }
                            }
                        }
                    }
                }
            }
        }
        // the kept hits scored again as `search` scores them, so both give the same scores
        tops.into_iter()
            .zip(queries)
            .map(|(top, query)| {
                let mut again = TopK::new(metric, k);
                for hit in top.into_sorted_vec() {
                    if let Some(row) = self.get(hit.slot) {
                        let score = metric.score(query, row);
                        again.push(ScoredSlot { score, ..hit });
                    }
                }
                again.into_sorted_vec()
            })
            .collect()
    }
}

/// Bytes of rows [`VectorArena::search_batch`] scores against all queries while they stay in
/// cache.
const ROW_BLOCK_BYTES: usize = 128 * 1024;

/// The best `k` scored slots seen so far.
pub struct TopK {
    metric: Metric,
    k: usize,
    heap: BinaryHeap<Ranked>,
}

/// Orders hits so the heap's top is the *worst* kept hit; ties broken by slot for determinism.
struct Ranked {
    hit: ScoredSlot,
    higher_is_better: bool,
}

impl Ranked {
    fn key(&self) -> f32 {
        if self.higher_is_better {
            -self.hit.score
        } else {
            self.hit.score
        }
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key()
            .total_cmp(&other.key())
            .then(self.hit.slot.cmp(&other.hit.slot))
    }
}

impl TopK {
    pub fn new(metric: Metric, k: usize) -> Self {
        Self {
            metric,
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    pub fn push(&mut self, hit: ScoredSlot) {
        if self.k == 0 || hit.score.is_nan() {
            return;
        }
        let ranked = Ranked {
            hit,
            higher_is_better: self.metric.higher_is_better(),
        };
        if self.heap.len() < self.k {
            self.heap.push(ranked);
        } else if let Some(worst) = self.heap.peek() {
            if ranked < *worst {
                self.heap.pop();
                self.heap.push(ranked);
            }
        }
    }

    /// The worst score kept, once `k` are kept.
    pub fn worst(&self) -> Option<f32> {
        if self.heap.len() < self.k {
            return None;
        }
        self.heap.peek().map(|r| r.hit.score)
    }

    /// The kept hits, best first.
    pub fn into_sorted_vec(self) -> Vec<ScoredSlot> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|r| r.hit)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_best_in_order() {
        let mut arena = VectorArena::new(1);
        for (slot, x) in [5.0f32, 1.0, 3.0, 2.0, 4.0].iter().enumerate() {
            arena.set(slot as Slot, &[*x]);
        }
        let hits = arena.search(Metric::L2, &[0.0], 3, 0..5);
        let slots: Vec<Slot> = hits.iter().map(|h| h.slot).collect();
        assert_eq!(slots, vec![1, 3, 2]);
        let hits = arena.search(Metric::Dot, &[1.0], 2, 0..5);
        let slots: Vec<Slot> = hits.iter().map(|h| h.slot).collect();
        assert_eq!(slots, vec![0, 4]);
    }

    #[test]
    fn a_batch_answers_what_each_query_answers_alone() {
        // (dimension 300: rows span several cache blocks; an odd row count: a half tile)
        for (dim, n) in [(8, 500), (300, 499)] {
            let mut arena = VectorArena::new(dim);
            let row = |i: usize| -> Vec<f32> {
                (0..dim).map(|d| ((i * 31 + d * 7) % 17) as f32).collect()
            };
            for i in 0..n {
                arena.set(i as Slot, &row(i));
            }
            let queries: Vec<Vec<f32>> = (0..37).map(|i| row(i * 13 + 5)).collect();
            let refs: Vec<&[f32]> = queries.iter().map(Vec::as_slice).collect();
            for metric in [Metric::L2, Metric::Dot] {
                let slots = 0..n as Slot;
                let batch = arena.search_batch(metric, &refs, 7, slots.clone());
                assert_eq!(batch.len(), 37);
                for (q, answer) in refs.iter().zip(&batch) {
                    let alone = arena.search(metric, q, 7, slots.clone());
                    assert_eq!(answer, &alone, "{metric}");
                }
            }
        }
        let mut arena = VectorArena::new(2);
        arena.set(0, &[1.0, 0.0]);
        let one = arena.search_batch(Metric::Dot, &[&[1.0, 1.0]], 5, 0..3);
        assert_eq!(
            one,
            vec![vec![ScoredSlot {
                slot: 0,
                score: 1.0
            }]]
        );
        assert!(arena.search_batch(Metric::L2, &[], 3, 0..500).is_empty());
    }

    #[test]
    fn search_skips_slots_beyond_the_arena_and_k_zero() {
        let mut arena = VectorArena::new(2);
        arena.set(0, &[1.0, 1.0]);
        assert_eq!(arena.search(Metric::L2, &[0.0, 0.0], 5, [0, 7]).len(), 1);
        assert!(arena.search(Metric::L2, &[0.0, 0.0], 0, [0]).is_empty());
    }

    #[test]
    fn a_removed_slots_row_is_reused() {
        let v = |x: f32| [x; 16];
        let mut arena = VectorArena::new(16);
        for slot in 0..4 {
            arena.set(slot, &v(slot as f32));
        }
        // every version replaced by a new slot: the vectors held stay the live ones
        for slot in 4..400 {
            arena.remove(slot - 4);
            arena.set(slot, &v(slot as f32));
        }
        assert_eq!(arena.len(), 4);
        assert_eq!(arena.get(3), None);
        assert_eq!(arena.get(399), Some(&v(399.0)[..]));
        assert_eq!(arena.get(396), Some(&v(396.0)[..]));
        // 4 vectors and a u32 per slot, not 400 vectors (25,600 bytes)
        assert!(
            arena.memory_bytes() < 4 * 64 + 512 * 4 + 64,
            "{}",
            arena.memory_bytes()
        );
        // a slot stored again keeps its row
        arena.set(399, &v(0.5));
        assert_eq!(arena.len(), 4);
        assert_eq!(arena.get(399), Some(&v(0.5)[..]));
    }
}
