//! Exact search: a contiguous vector arena addressed by slot, and a bounded top-k; a batch of
//! queries is scored a block at a time against each row ([`VectorArena::search_batch`]).
//!
//! [`VectorArena`] stores vectors back to back in rows (`row * dim`), so a scan is a linear walk
//! through memory, and maps each slot to its row. A removed slot's row is reused by the next slot
//! stored, so the arena holds as many vectors as there are live slots (plus one `u32` per slot
//! ever used). Vectors are stored already [`prepare`](crate::distance::Metric::prepare)d.
//! [`TopK`] keeps the best `k` hits seen so far in a heap whose top is the worst kept hit.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::distance::{dot, dot4, Metric};
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

    /// Exact top-k over `slots` of each of `queries` (answers in order, each best first). Rows
    /// are read from memory once per block of [`QUERY_BLOCK`] queries and scored against all of
    /// them while in cache, so a batch costs far less memory traffic than its queries one by one.
    pub fn search_batch(
        &self,
        metric: Metric,
        queries: &[&[f32]],
        k: usize,
        slots: impl Iterator<Item = Slot> + Clone,
    ) -> Vec<Vec<ScoredSlot>> {
        // l2 ranks by |q|² + |x|² - 2 q·x (squared, so by the same order as the distance); the
        // square root is taken of the k kept
        let l2 = metric == Metric::L2;
        let norms: Vec<f32> = queries
            .iter()
            .map(|q| if l2 { dot(q, q) } else { 0.0 })
            .collect();
        let mut tops: Vec<TopK> = queries.iter().map(|_| TopK::new(metric, k)).collect();
        let mut scores = [0.0f32; QUERY_BLOCK];
        for (at, block) in queries.chunks(QUERY_BLOCK).enumerate() {
            let first = at * QUERY_BLOCK;
            for slot in slots.clone() {
                let Some(row) = self.get(slot) else {
                    continue;
                };
                let mut quads = block.chunks_exact(4);
                let mut j = 0;
                for quad in quads.by_ref() {
                    let four = dot4([quad[0], quad[1], quad[2], quad[3]], row);
                    scores[j..j + 4].copy_from_slice(&four);
                    j += 4;
                }
                for q in quads.remainder() {
                    scores[j] = dot(q, row);
                    j += 1;
                }
                let row_norm = if l2 { dot(row, row) } else { 0.0 };
                for (i, &product) in scores[..block.len()].iter().enumerate() {
                    let score = if l2 {
                        (norms[first + i] + row_norm - 2.0 * product).max(0.0)
                    } else {
                        product
                    };
                    tops[first + i].push(ScoredSlot { slot, score });
                }
            }
        }
        tops.into_iter()
            .map(|top| {
                let mut hits = top.into_sorted_vec();
                if l2 {
                    hits.iter_mut().for_each(|h| h.score = h.score.sqrt());
                }
                hits
            })
            .collect()
    }
}

/// Queries [`VectorArena::search_batch`] scores against each row while it is in cache.
pub const QUERY_BLOCK: usize = 16;

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
        let dim = 8;
        let mut arena = VectorArena::new(dim);
        let row =
            |i: usize| -> Vec<f32> { (0..dim).map(|d| ((i * 31 + d * 7) % 17) as f32).collect() };
        for i in 0..500 {
            arena.set(i as Slot, &row(i));
        }
        let queries: Vec<Vec<f32>> = (0..37).map(|i| row(i * 13 + 5)).collect();
        let refs: Vec<&[f32]> = queries.iter().map(Vec::as_slice).collect();
        for metric in [Metric::L2, Metric::Dot] {
            let batch = arena.search_batch(metric, &refs, 7, 0..500);
            assert_eq!(batch.len(), 37);
            for (q, answer) in refs.iter().zip(&batch) {
                let alone = arena.search(metric, q, 7, 0..500);
                // (l2 is computed through norms in a batch: equal up to rounding)
                let scores = |hits: &[ScoredSlot]| hits.iter().map(|h| h.score).collect::<Vec<_>>();
                for (a, b) in scores(answer).iter().zip(scores(&alone)) {
                    assert!(
                        (a - b).abs() <= 1e-3 * (1.0 + b.abs()),
                        "{metric}: {a} vs {b}"
                    );
                }
                assert_eq!(answer.len(), alone.len());
            }
        }
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
