//! Search and its planner.
//!
//! The planner picks one of four plans (reported back to the caller):
//! - `exact`: no filter, and the collection is flat, holds no more live points than the
//!   threshold (a scan is then as fast as the graph and never misses), or the request asked for
//!   exact search;
//! - `exact-filtered`: a filter whose estimated matches are at most the configured threshold (or
//!   an exact request): score exactly the points that match. The estimate is exact when payload
//!   indexes bound the filter, otherwise a sample of live points is tested;
//! - `hnsw`: no filter: walk the graph, skipping tombstones inside the walk;
//! - `hnsw-filtered`: walk the graph accepting only live points that match the filter, with `ef`
//!   widened as the filter gets more selective so enough matches are found.
//!
//! Tombstones and filters are always tested inside the search, so a search returns `top_k` hits
//! whenever that many live points match. Live points the graph does not hold yet are scored
//! exactly beside the graph's hits, so a point is found as soon as its write is applied.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use quiver_core::shard::SearchQuery;
use quiver_index::distance::Metric;
use quiver_index::filter::Filter;
use quiver_index::flat::TopK;
use quiver_index::{ScoredSlot, Slot};
use roaring::RoaringBitmap;

use super::{Collection, Segment};
use quiver_core::point::{IndexKind, JsonMap, PointId};

/// Planner and limits, from the server configuration.
#[derive(Debug, Clone, Copy)]
pub struct PlannerConfig {
    pub exact_search_threshold: usize,
    pub default_ef: usize,
    pub max_ef: usize,
}

/// One result.
#[derive(Debug, Clone)]
pub struct SearchHit {
    pub id: PointId,
    pub score: f32,
    pub payload: Option<Arc<JsonMap>>,
    pub vector: Option<Vec<f32>>,
}

/// How a search ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Exact,
    ExactFiltered,
    Hnsw,
    HnswFiltered,
}

impl Plan {
    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Exact => "exact",
            Plan::ExactFiltered => "exact-filtered",
            Plan::Hnsw => "hnsw",
            Plan::HnswFiltered => "hnsw-filtered",
        }
    }
}

/// Live points tested to estimate an unindexed filter's selectivity.
const SAMPLE_SIZE: u64 = 512;
/// Upper bound on how much a selective filter widens `ef`.
const MAX_EF_WIDENING: f64 = 8.0;

/// Where the filtered candidates come from.
enum Candidates {
    /// Exactly these slots (live, matching).
    Slots(RoaringBitmap),
    /// Any live slot that matches, with this estimated fraction.
    Estimated(f64),
}

fn candidates(seg: &Segment, filter: &Filter) -> Candidates {
    if let Some(bound) = seg.payload_index.candidates(filter) {
        let bound = bound & &seg.live;
        let slots = bound
            .iter()
            .filter(|slot| matches(seg, filter, *slot))
            .collect();
        return Candidates::Slots(slots);
    }
    let live = seg.live.len();
    if live == 0 {
        return Candidates::Slots(RoaringBitmap::new());
    }
    let sample = live.min(SAMPLE_SIZE);
    let hits = (0..sample)
        .filter_map(|i| seg.live.select((i * live / sample) as u32))
        .filter(|slot| matches(seg, filter, *slot))
        .count();
    Candidates::Estimated(hits as f64 / sample as f64)
}

/// The best `k` of the graph's hits and the exactly scored ones (a slot in both counts once).
fn merge(
    metric: Metric,
    k: usize,
    graph: Vec<ScoredSlot>,
    exact: Vec<ScoredSlot>,
) -> Vec<ScoredSlot> {
    if exact.is_empty() {
        return graph;
    }
    let mut top = TopK::new(metric, k);
    let scored: RoaringBitmap = exact.iter().map(|h| h.slot).collect();
    for hit in graph.into_iter().filter(|h| !scored.contains(h.slot)) {
        top.push(hit);
    }
    for hit in exact {
        top.push(hit);
    }
    top.into_sorted_vec()
}

fn matches(seg: &Segment, filter: &Filter, slot: Slot) -> bool {
    seg.payloads.get(&slot).is_some_and(|p| filter.matches(p))
}

impl Collection {
    /// Runs a search and returns hits (best first) and the plan used.
    pub fn search(&self, params: &SearchQuery, config: &PlannerConfig) -> (Vec<SearchHit>, Plan) {
        let seg = self.segment.read();
        let metric = self.meta.spec.metric;
        let k = params.top_k;
        let ef = params
            .ef
            .or(self.meta.spec.default_ef.map(|e| e as usize))
            .unwrap_or(config.default_ef)
            .clamp(1, config.max_ef);
        let graph = match (self.graph(), self.meta.spec.index, params.exact) {
            (Some(g), IndexKind::Hnsw(_), false) => Some(g),
            _ => None,
        };
        // Live slots the graph does not hold yet (being inserted, or left to a background
        // catch-up after an open) are scored exactly beside the graph's hits.
        let unindexed_from = self.indexed_below.load(Ordering::SeqCst);
        let unindexed = || {
            let from = Slot::try_from(unindexed_from).unwrap_or(Slot::MAX);
            seg.live.range(from..)
        };
        let (hits, plan): (Vec<ScoredSlot>, Plan) = match (&params.filter, graph) {
            (None, None) => (
                seg.arena.search(metric, &params.vector, k, seg.live.iter()),
                Plan::Exact,
            ),
            (None, Some(_)) if seg.live.len() as usize <= config.exact_search_threshold => (
                seg.arena.search(metric, &params.vector, k, seg.live.iter()),
                Plan::Exact,
            ),
            (None, Some(g)) => {
                let live = |slot: Slot| seg.live.contains(slot);
                // Without tombstones every graph node is live (or being inserted, and live).
                let accept: Option<&(dyn Fn(Slot) -> bool + Sync)> = if seg.dead.is_empty() {
                    None
                } else {
                    Some(&live)
                };
                let found = g.search(&params.vector, k, ef, accept);
                let rest = seg.arena.search(metric, &params.vector, k, unindexed());
                (merge(metric, k, found, rest), Plan::Hnsw)
            }
            (Some(filter), graph) => {
                let candidates = candidates(&seg, filter);
                let live = seg.live.len().max(1) as f64;
                let fraction = match &candidates {
                    Candidates::Slots(s) => s.len() as f64 / live,
                    Candidates::Estimated(f) => *f,
                };
                match graph {
                    Some(g) if fraction * live > config.exact_search_threshold as f64 => {
                        let widening = (1.0 / fraction.max(1e-9))
                            .sqrt()
                            .clamp(1.0, MAX_EF_WIDENING);
                        let ef = ((ef.max(k) as f64 * widening) as usize).min(config.max_ef.max(k));
                        let accept = |slot: Slot| match &candidates {
                            Candidates::Slots(s) => s.contains(slot),
                            Candidates::Estimated(_) => {
                                seg.live.contains(slot) && matches(&seg, filter, slot)
                            }
                        };
                        let found = g.search(&params.vector, k, ef, Some(&accept));
                        let rest = unindexed().filter(|slot| accept(*slot));
                        let rest = seg.arena.search(metric, &params.vector, k, rest);
                        (merge(metric, k, found, rest), Plan::HnswFiltered)
                    }
                    _ => {
                        let hits = match &candidates {
                            Candidates::Slots(s) => {
                                seg.arena.search(metric, &params.vector, k, s.iter())
                            }
                            Candidates::Estimated(_) => {
                                let slots = seg.live.iter().filter(|s| matches(&seg, filter, *s));
                                seg.arena.search(metric, &params.vector, k, slots)
                            }
                        };
                        (hits, Plan::ExactFiltered)
                    }
                }
            }
        };
        let hits = hits
            .into_iter()
            .filter_map(|h| {
                Some(SearchHit {
                    id: seg.id_of(h.slot)?,
                    score: h.score,
                    payload: params
                        .with_payload
                        .then(|| seg.payloads.get(&h.slot).cloned())
                        .flatten(),
                    vector: params
                        .with_vector
                        .then(|| seg.arena.get(h.slot).map(<[f32]>::to_vec))
                        .flatten(),
                })
            })
            .collect();
        (hits, plan)
    }

    /// Ids of the live points matching `filter`, in no particular order.
    pub fn matching_ids(&self, filter: &Filter) -> Vec<PointId> {
        let seg = self.segment.read();
        let slots: Vec<Slot> = match candidates(&seg, filter) {
            Candidates::Slots(s) => s.iter().collect(),
            Candidates::Estimated(_) => seg
                .live
                .iter()
                .filter(|s| matches(&seg, filter, *s))
                .collect(),
        };
        slots.into_iter().filter_map(|s| seg.id_of(s)).collect()
    }

    /// Points matching `filter` (all live points without one), and whether the count is exact.
    /// Unless `exact` is asked for, a filter the payload indexes do not bound is estimated from
    /// a sample of live points instead of tested on every one.
    pub fn count(&self, filter: Option<&Filter>, exact: bool) -> (usize, bool) {
        let seg = self.segment.read();
        let Some(filter) = filter else {
            return (seg.len(), true);
        };
        match candidates(&seg, filter) {
            Candidates::Slots(s) => (s.len() as usize, true),
            Candidates::Estimated(fraction) if !exact => {
                ((fraction * seg.live.len() as f64).round() as usize, false)
            }
            Candidates::Estimated(_) => {
                let n = seg
                    .live
                    .iter()
                    .filter(|s| matches(&seg, filter, *s))
                    .count();
                (n, true)
            }
        }
    }

    /// Points by id (missing ids skipped), as `(id, vector, payload)`.
    pub fn get(&self, ids: &[PointId]) -> Vec<(PointId, Vec<f32>, Arc<JsonMap>)> {
        let seg = self.segment.read();
        ids.iter()
            .filter_map(|id| {
                let slot = seg.slot_of(id)?;
                Some((
                    *id,
                    seg.arena.get(slot)?.to_vec(),
                    seg.payloads.get(&slot)?.clone(),
                ))
            })
            .collect()
    }
}
