//! The graph walk: a greedy descent through the upper layers, then a best-first search of one
//! layer with a bounded result list (the paper's algorithms 2 and 5), and the pooled scratch
//! (visited set, heaps) it runs in.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;

use super::{Distance, Layers};

/// How many vectors ahead of the one being scored are being loaded.
const PREFETCH_AHEAD: usize = 3;

/// A node and its distance to the query (lower is nearer); ordered by distance, then id.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Near {
    pub d: f32,
    pub id: u32,
}

impl Eq for Near {}

impl Ord for Near {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.d.total_cmp(&other.d).then(self.id.cmp(&other.id))
    }
}

impl PartialOrd for Near {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

/// Which nodes one walk has seen: a mark per node, equal to the walk's epoch once seen, so
/// starting a walk is an increment, not a clear.
pub(super) struct Visited {
    marks: Vec<u16>,
    epoch: u16,
}

impl Visited {
    fn start(&mut self, len: usize) {
        if self.marks.len() < len {
            self.marks.resize(len, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.fill(0);
            self.epoch = 1;
        }
    }

    /// Marks `id`; false if it was marked already.
    #[inline(always)]
    fn insert(&mut self, id: u32) -> bool {
        let mark = &mut self.marks[id as usize];
        if *mark == self.epoch {
            false
        } else {
            *mark = self.epoch;
            true
        }
    }

    #[inline(always)]
    fn prefetch(&self, id: u32) {
        if let Some(mark) = self.marks.get(id as usize) {
            prefetch(mark as *const u16);
        }
    }
}

/// What one walk needs, kept between walks so a search allocates only its answer.
pub(super) struct Scratch {
    visited: Visited,
    candidates: BinaryHeap<Reverse<Near>>,
    pub results: BinaryHeap<Near>,
    pub links: Vec<u32>,
    /// The query of a search, encoded as the graph's vectors.
    pub query: Vec<u32>,
}

/// Scratch for concurrent walks: one per walk in flight, reused after.
#[derive(Default)]
pub(super) struct ScratchPool {
    free: Mutex<Vec<Scratch>>,
}

impl ScratchPool {
    pub fn take(&self, len: usize) -> Scratch {
        let mut scratch = self.free.lock().pop().unwrap_or_else(|| Scratch {
            visited: Visited {
                marks: Vec::new(),
                epoch: 0,
            },
            candidates: BinaryHeap::new(),
            results: BinaryHeap::new(),
            links: Vec::new(),
            query: Vec::new(),
        });
        scratch.visited.start(len);
        scratch
    }

    pub fn give_back(&self, scratch: Scratch) {
        self.free.lock().push(scratch);
    }

    pub fn memory_bytes(&self) -> usize {
        self.free
            .lock()
            .iter()
            .map(|s| s.visited.marks.len() * 2)
            .sum()
    }
}

/// Asks the CPU to start loading the cache line at `p`.
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch is a hint; it never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Prefetches the cache lines of a node's vector.
#[inline(always)]
pub(super) fn prefetch_vector(layers: &Layers, id: u32) {
    if (id as usize) < layers.len() {
        for line in layers.vector(id).chunks(16) {
            prefetch(line.as_ptr());
        }
    }
}

/// Walks down from `entry` on `top_level` to layer 0 and returns up to `ef` accepted nodes,
/// nearest first.
#[allow(clippy::too_many_arguments)]
pub(super) fn search(
    layers: &Layers,
    distance: Distance,
    scratch: &mut Scratch,
    query: &[u32],
    entry: u32,
    top_level: u8,
    ef: usize,
    accept: &impl Fn(u32) -> bool,
) -> Vec<(f32, u32)> {
    let mut nearest = Near {
        d: distance.between(query, layers.vector(entry)),
        id: entry,
    };
    for level in (1..=top_level).rev() {
        nearest = greedy(layers, distance, &mut scratch.links, query, nearest, level);
    }
    search_layer(layers, distance, scratch, query, &[nearest], ef, 0, accept);
    let mut found: Vec<(f32, u32)> = scratch.results.drain().map(|n| (n.d, n.id)).collect();
    found.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    found
}

/// Moves to a nearer neighbour on `level` while there is one.
pub(super) fn greedy(
    layers: &Layers,
    distance: Distance,
    links: &mut Vec<u32>,
    query: &[u32],
    mut nearest: Near,
    level: u8,
) -> Near {
    loop {
        let mut moved = false;
        layers.neighbours_into(nearest.id, level, links);
        for &id in links.iter() {
            let d = distance.between(query, layers.vector(id));
            if d < nearest.d {
                nearest = Near { d, id };
                moved = true;
            }
        }
        if !moved {
            return nearest;
        }
    }
}

/// Best-first search of `level` from `entries`, leaving up to `ef` accepted nodes in
/// `scratch.results` (a max-heap: the farthest on top). Rejected nodes are expanded like the
/// others, so the walk goes on through them until `ef` accepted nodes are held.
#[allow(clippy::too_many_arguments)]
pub(super) fn search_layer(
    layers: &Layers,
    distance: Distance,
    scratch: &mut Scratch,
    query: &[u32],
    entries: &[Near],
    ef: usize,
    level: u8,
    accept: &impl Fn(u32) -> bool,
) {
    let Scratch {
        visited,
        candidates,
        results,
        links: fresh,
        ..
    } = scratch;
    visited.start(layers.len());
    candidates.clear();
    results.clear();
    for &entry in entries {
        if visited.insert(entry.id) {
            candidates.push(Reverse(entry));
            if accept(entry.id) {
                results.push(entry);
            }
        }
    }
    while results.len() > ef {
        results.pop();
    }
    let mut bound = results.peek().map_or(f32::INFINITY, |n| n.d);
    while let Some(Reverse(current)) = candidates.pop() {
        if current.d > bound && results.len() >= ef {
            break;
        }
        let block = layers.block(current.id, level);
        let count = (block[0].load(Ordering::Acquire) as usize).min(block.len() - 1);
        let links = &block[1..=count];
        // The neighbours not seen yet, then their vectors loaded a few ahead of their scoring
        // (prefetching every neighbour's whole vector would fill the CPU's line-fill buffers
        // with lines of nodes already visited).
        for link in links {
            visited.prefetch(link.load(Ordering::Relaxed));
        }
        fresh.clear();
        for link in links {
            let id = link.load(Ordering::Relaxed);
            if visited.insert(id) {
                fresh.push(id);
            }
        }
        for &id in fresh.iter().take(PREFETCH_AHEAD) {
            prefetch_vector(layers, id);
        }
        for (i, &id) in fresh.iter().enumerate() {
            if let Some(&ahead) = fresh.get(i + PREFETCH_AHEAD) {
                prefetch_vector(layers, ahead);
            }
            let d = distance.between(query, layers.vector(id));
            if results.len() < ef || d < bound {
                candidates.push(Reverse(Near { d, id }));
                if accept(id) {
                    results.push(Near { d, id });
                    if results.len() > ef {
                        results.pop();
                    }
                    bound = results.peek().map_or(f32::INFINITY, |n| n.d);
                }
            }
        }
    }
}
