//! Search and its planner, and the text candidates of a query ([`Collection::text_candidates`]).
//!
//! The planner picks one of four plans (reported back to the caller):
//! - `exact`: no filter, and the collection is flat, holds no more live points than the
//!   threshold (a scan is then as fast as the graph and never misses), or the request asked for
//!   exact search;
//! - `exact-filtered`: a filter whose estimated matches are at most the configured threshold (or
//!   an exact request): score exactly the points that match. The estimate is exact when payload
//!   indexes bound the filter, otherwise a sample of live points is tested. When the indexes
//!   give exactly the matching set, it is scored whole up to threshold / (its share of the
//!   points), where a walk would pass over more nodes than the set holds;
//! - `hnsw`: no filter: walk each sealed segment's graph, skipping retired nodes inside the walk;
//! - `hnsw-filtered`: walk the graphs accepting only live points that match the filter, with `ef`
//!   widened as the filter gets more selective so enough matches are found.
//!
//! Retired nodes and filters are always tested inside the search, so a search returns `top_k`
//! hits whenever that many live points match. The appendable segment (points no graph holds
//! yet) is scored exactly beside the graphs' hits, so a point is found as soon as its write is
//! applied; the hits of all segments are merged into one top `k`.
//!
//! A quantized collection's segments score candidates approximately. Unless the query turns
//! rescoring off, the plan then finds `k × oversampling` candidates (the walks' `ef` at least
//! that), and those a quantized segment holds are scored again against their full-precision
//! vectors, read from the points' stored rows; the best `k` of them are returned. An exact
//! search rescores every candidate (so it reads every matching stored vector) and never misses;
//! the `exact` plan a small collection gets on its own scans the encoded vectors and rescores
//! `k × oversampling` of them.

use std::sync::Arc;

use quiver_core::shard::{SearchQuery, TextAnswer, TextCandidate, TextQuery, DEFAULT_OVERSAMPLING};
use quiver_index::bm25::TextMatch;
use quiver_index::distance::Metric;
use quiver_index::filter::Filter;
use quiver_index::flat::TopK;
use quiver_index::payload_index::IndexBound;
use quiver_index::quantize::Encoding;
use quiver_index::{ScoredSlot, Slot};
use roaring::RoaringBitmap;

use super::{Collection, InForce, Points};
use quiver_core::point::{JsonMap, PointId};

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
    /// The live slots of this bound (from the payload indexes) that match, an estimated
    /// fraction of the live points.
    Bounded(RoaringBitmap, f64),
    /// Any live slot that matches, with this estimated fraction.
    Estimated(f64),
}

/// The candidates of `filter`. A bound from the payload indexes that is exact is the set
/// itself; one of at most `materialize` slots is tested slot by slot into the exact set; a
/// larger one is kept as a bound, tested inside the walk, its matching share estimated from a
/// sample (so a search under a broad indexed filter does not test every point it bounds).
fn candidates(seg: &Points, filter: &Filter, materialize: u64) -> Candidates {
    if let Some(IndexBound { slots, exact }) = seg.payload_index.bound(filter) {
        let bound = slots & &seg.live;
        if exact {
            return Candidates::Slots(bound);
        }
        if bound.len() > materialize {
            let share = bound.len() as f64 / seg.live.len().max(1) as f64;
            let fraction = share * sampled(&bound, seg, filter);
            return Candidates::Bounded(bound, fraction);
        }
        let slots = bound
            .iter()
            .filter(|slot| matches(seg, filter, *slot))
            .collect();
        return Candidates::Slots(slots);
    }
    if seg.live.is_empty() {
        return Candidates::Slots(RoaringBitmap::new());
    }
    Candidates::Estimated(sampled(&seg.live, seg, filter))
}

/// The share of a sample of `slots` (every n-th, by iteration: a `select` per sample costs
/// more) that matches `filter`.
fn sampled(slots: &RoaringBitmap, seg: &Points, filter: &Filter) -> f64 {
    let n = slots.len();
    let sample = n.clamp(1, SAMPLE_SIZE);
    let hits = slots
        .iter()
        .step_by((n / sample).max(1) as usize)
        .take(sample as usize)
        .filter(|slot| matches(seg, filter, *slot))
        .count();
    hits as f64 / sample as f64
}

/// The live slots matching `filter`.
fn matching_slots(p: &Points, filter: &Filter) -> RoaringBitmap {
    match candidates(p, filter, u64::MAX) {
        Candidates::Slots(s) => s,
        // (not made with no limit on the bound)
        Candidates::Bounded(b, _) => b.iter().filter(|s| matches(p, filter, *s)).collect(),
        Candidates::Estimated(_) => p.live.iter().filter(|s| matches(p, filter, *s)).collect(),
    }
}

/// The best `k` of `hits` (each slot appears in one segment only, so once).
fn best(metric: Metric, k: usize, hits: impl IntoIterator<Item = ScoredSlot>) -> Vec<ScoredSlot> {
    let mut top = TopK::new(metric, k);
    for hit in hits {
        top.push(hit);
    }
    top.into_sorted_vec()
}

fn matches(p: &Points, filter: &Filter, slot: Slot) -> bool {
    p.payloads
        .get(&slot)
        .is_some_and(|payload| filter.matches(payload))
}

/// The graph walk of one sealed segment, its nodes mapped to slots. Retired nodes, and slots
/// `accept` rejects, are walked through and never returned.
fn walk(
    s: &InForce,
    query: &[f32],
    k: usize,
    ef: usize,
    accept: Option<&dyn Fn(Slot) -> bool>,
) -> Vec<ScoredSlot> {
    let segment = &s.segment;
    let hits = match accept {
        None if s.retired_count == 0 => segment.graph.search(query, k, ef),
        None => segment
            .graph
            .search_accepting(query, k, ef, |node| !s.is_retired(node)),
        Some(accept) => segment.graph.search_accepting(query, k, ef, |node| {
            !s.is_retired(node) && accept(segment.slots[node as usize])
        }),
    };
    hits.into_iter()
        .map(|h| ScoredSlot {
            slot: segment.slots[h.slot as usize],
            score: h.score,
        })
        .collect()
}

/// Every live point `accept` takes, scored exactly: a scan of each segment's vectors.
fn scan(
    p: &Points,
    metric: Metric,
    query: &[f32],
    k: usize,
    accept: impl Fn(Slot) -> bool,
) -> Vec<ScoredSlot> {
    let mut top = TopK::new(metric, k);
    for s in &p.sealed {
        let graph = &s.segment.graph;
        let encoded = graph.encode_query(query);
        for (node, &slot) in s.segment.slots.iter().enumerate() {
            if !s.is_retired(node as u32) && accept(slot) {
                top.push(ScoredSlot {
                    slot,
                    score: graph.score(&encoded, node as u32),
                });
            }
        }
    }
    let appendable = p.appendable_slots.iter().filter(|slot| accept(*slot));
    for hit in p.appendable.search(metric, query, k, appendable) {
        top.push(hit);
    }
    top.into_sorted_vec()
}

/// How many vectors ahead of the one being scored [`score_slots`] loads.
const SCORE_AHEAD: usize = 4;

/// Exactly these live slots, scored: segment by segment, each finding its nodes of `slots`
/// in one pass (so a large set costs about a scan, a small one a few lookups per slot).
fn score_slots(
    p: &Points,
    metric: Metric,
    query: &[f32],
    k: usize,
    slots: &RoaringBitmap,
) -> Vec<ScoredSlot> {
    let mut top = TopK::new(metric, k);
    let mut nodes = Vec::new();
    for s in &p.sealed {
        let graph = &s.segment.graph;
        let encoded = graph.encode_query(query);
        nodes.clear();
        s.segment.for_each_node_of(slots, |node, slot| {
            if !s.is_retired(node) {
                nodes.push((node, slot));
            }
        });
        // (the vectors are loaded a few ahead of their scoring: they are scattered in memory)
        for (i, &(node, slot)) in nodes.iter().enumerate() {
            if let Some(&(ahead, _)) = nodes.get(i + SCORE_AHEAD) {
                graph.prefetch(ahead);
            }
            top.push(ScoredSlot {
                slot,
                score: graph.score(&encoded, node),
            });
        }
    }
    let appendable = slots & &p.appendable_slots;
    for hit in p.appendable.search(metric, query, k, appendable.iter()) {
        top.push(hit);
    }
    top.into_sorted_vec()
}

impl Collection {
    /// Runs a search and returns hits (best first) and the plan used.
    pub fn search(&self, params: &SearchQuery, config: &PlannerConfig) -> (Vec<SearchHit>, Plan) {
        let p = self.points.read();
        let (hits, plan) = self.scored(&p, params, config);
        (self.hits(&p, params, hits), plan)
    }

    /// Runs searches (answers in order), as [`search`](Self::search) runs each. Unfiltered exact
    /// scans of points no sealed segment holds (a flat collection's, or one not indexed yet)
    /// share one pass over the vectors ([`VectorArena::search_batch`]).
    ///
    /// [`VectorArena::search_batch`]: quiver_index::flat::VectorArena::search_batch
    pub fn search_batch(
        &self,
        queries: &[SearchQuery],
        config: &PlannerConfig,
    ) -> Vec<(Vec<SearchHit>, Plan)> {
        let p = self.points.read();
        let shared: Vec<usize> = if p.sealed.is_empty() {
            (0..queries.len())
                .filter(|&i| queries[i].filter.is_none())
                .collect()
        } else {
            Vec::new()
        };
        let mut answers: Vec<Option<(Vec<SearchHit>, Plan)>> = vec![None; queries.len()];
        if shared.len() > 1 {
            let vectors: Vec<&[f32]> = shared
                .iter()
                .map(|&i| queries[i].vector.as_slice())
                .collect();
            let k = shared.iter().map(|&i| queries[i].top_k).max().unwrap_or(0);
            let metric = self.meta.spec.metric;
            let found = p
                .appendable
                .search_batch(metric, &vectors, k, p.appendable_slots.iter());
            for (&i, mut hits) in shared.iter().zip(found) {
                hits.truncate(queries[i].top_k);
                answers[i] = Some((self.hits(&p, &queries[i], hits), Plan::Exact));
            }
        }
        answers
            .into_iter()
            .zip(queries)
            .map(|(answer, params)| {
                answer.unwrap_or_else(|| {
                    let (hits, plan) = self.scored(&p, params, config);
                    (self.hits(&p, params, hits), plan)
                })
            })
            .collect()
    }

    /// The slots a search finds, best first, scored, and the plan it ran.
    fn scored(
        &self,
        p: &Points,
        params: &SearchQuery,
        config: &PlannerConfig,
    ) -> (Vec<ScoredSlot>, Plan) {
        let metric = self.meta.spec.metric;
        let query = params.vector.as_slice();
        let ef = params
            .ef
            .or(self.meta.spec.default_ef.map(|e| e as usize))
            .unwrap_or(config.default_ef)
            .clamp(1, config.max_ef);
        let rescoring = self.source.is_some()
            && params.rescore != Some(false)
            && p.sealed
                .iter()
                .any(|s| s.segment.graph.encoding() != Encoding::F32);
        let k = match rescoring {
            // an exact search of a quantized collection rescores every candidate: all its
            // stored vectors are read
            true if params.exact => p.live.len().max(params.top_k as u64) as usize,
            true => {
                let oversampling = params.oversampling.unwrap_or(DEFAULT_OVERSAMPLING).max(1.0);
                (params.top_k as f32 * oversampling).ceil() as usize
            }
            false => params.top_k,
        };
        // whether there is a graph to walk
        let graphs = !params.exact && !p.sealed.is_empty();
        let appendable = || p.appendable_slots.iter();
        let (hits, plan): (Vec<ScoredSlot>, Plan) = match &params.filter {
            None if !graphs || p.live.len() as usize <= config.exact_search_threshold => {
                (scan(p, metric, query, k, |_| true), Plan::Exact)
            }
            None => {
                let found = p.sealed.iter().flat_map(|s| walk(s, query, k, ef, None));
                let rest = p.appendable.search(metric, query, k, appendable());
                (best(metric, k, found.chain(rest)), Plan::Hnsw)
            }
            Some(filter) => {
                let candidates = candidates(p, filter, config.exact_search_threshold as u64);
                let live = p.live.len().max(1) as f64;
                let fraction = match &candidates {
                    Candidates::Slots(s) => s.len() as f64 / live,
                    Candidates::Bounded(_, f) | Candidates::Estimated(f) => *f,
                };
                // An exact set is scored whole unless walking is cheaper: a walk passes over
                // about 1/fraction nodes per match it keeps, so its cost grows as the filter
                // narrows while a scan's shrinks; the two meet where the set holds
                // threshold/fraction points (the unfiltered crossover is the threshold).
                let threshold = config.exact_search_threshold as f64;
                let scan_below = match &candidates {
                    Candidates::Slots(_) => threshold / fraction.max(1e-9),
                    _ => threshold,
                };
                if graphs && fraction * live > scan_below {
                    let widening = (1.0 / fraction.max(1e-9))
                        .sqrt()
                        .clamp(1.0, MAX_EF_WIDENING);
                    let ef = ((ef.max(k) as f64 * widening) as usize).min(config.max_ef.max(k));
                    // (walks see live nodes only; appendable slots are all live)
                    let accept = |slot: Slot| match &candidates {
                        Candidates::Slots(s) => s.contains(slot),
                        Candidates::Bounded(b, _) => b.contains(slot) && matches(p, filter, slot),
                        Candidates::Estimated(_) => matches(p, filter, slot),
                    };
                    let found = p
                        .sealed
                        .iter()
                        .flat_map(|s| walk(s, query, k, ef, Some(&accept)));
                    let rest = appendable().filter(|slot| accept(*slot));
                    let rest = p.appendable.search(metric, query, k, rest);
                    (best(metric, k, found.chain(rest)), Plan::HnswFiltered)
                } else {
                    let hits = match &candidates {
                        Candidates::Slots(s) => score_slots(p, metric, query, k, s),
                        Candidates::Bounded(b, _) => {
                            let matching = b.iter().filter(|slot| matches(p, filter, *slot));
                            score_slots(p, metric, query, k, &matching.collect())
                        }
                        Candidates::Estimated(_) => {
                            scan(p, metric, query, k, |slot| matches(p, filter, slot))
                        }
                    };
                    (hits, Plan::ExactFiltered)
                }
            }
        };
        if rescoring {
            (self.rescore(p, query, params.top_k, hits), plan)
        } else {
            (hits, plan)
        }
    }

    /// Scored slots as the hits a search returns, with what it asked for.
    fn hits(&self, p: &Points, params: &SearchQuery, hits: Vec<ScoredSlot>) -> Vec<SearchHit> {
        let found: Vec<(PointId, Slot, f32)> = hits
            .into_iter()
            .filter_map(|h| Some((p.id_of(h.slot)?, h.slot, h.score)))
            .collect();
        let vectors = match params.with_vector {
            true => {
                let points: Vec<_> = found.iter().map(|(id, slot, _)| (*id, *slot)).collect();
                self.full_vectors(p, &points)
            }
            false => vec![None; found.len()],
        };
        found
            .into_iter()
            .zip(vectors)
            .map(|((id, slot, score), vector)| SearchHit {
                id,
                score,
                payload: params
                    .with_payload
                    .then(|| p.payloads.get(&slot).cloned())
                    .flatten(),
                vector,
            })
            .collect()
    }

    /// The best `k` of `candidates`, those a quantized segment holds scored again with their
    /// full-precision vectors, read in one batch. (A stored row may be a newer version of the
    /// point than the one memory holds, written but not yet installed: its vector is then the
    /// newer one.)
    fn rescore(
        &self,
        p: &Points,
        query: &[f32],
        k: usize,
        candidates: Vec<ScoredSlot>,
    ) -> Vec<ScoredSlot> {
        let metric = self.meta.spec.metric;
        let (encoded, exact): (Vec<_>, Vec<_>) =
            candidates.into_iter().partition(|h| p.is_encoded(h.slot));
        let points: Vec<(PointId, Slot)> = encoded
            .iter()
            .filter_map(|h| Some((p.id_of(h.slot)?, h.slot)))
            .collect();
        let vectors = self.full_vectors(p, &points);
        let rescored = points
            .iter()
            .zip(vectors)
            .filter_map(|((_, slot), vector)| {
                Some(ScoredSlot {
                    slot: *slot,
                    score: metric.score(query, &vector?),
                })
            });
        best(metric, k, exact.into_iter().chain(rescored))
    }

    /// The full-precision vectors of live `points` (`(id, slot)`), in their order: from memory,
    /// or, for those a quantized segment holds, from their stored rows in one batched read.
    fn full_vectors(&self, p: &Points, points: &[(PointId, Slot)]) -> Vec<Option<Vec<f32>>> {
        // (a point waiting for its embedding has no vector yet: an empty one)
        let mut out: Vec<Option<Vec<f32>>> = points
            .iter()
            .map(|(_, slot)| match p.unembedded.contains(*slot) {
                true => Some(Vec::new()),
                false => p.vector(*slot).map(<[f32]>::to_vec),
            })
            .collect();
        let stored: Vec<usize> = (0..points.len()).filter(|i| out[*i].is_none()).collect();
        let Some(source) = self.source.as_ref().filter(|_| !stored.is_empty()) else {
            return out;
        };
        let ids: Vec<PointId> = stored.iter().map(|i| points[*i].0).collect();
        for (i, vector) in stored.into_iter().zip(source.vectors(&ids)) {
            out[i] = vector;
        }
        out
    }

    /// Ids of the live points matching `filter`, in no particular order.
    pub fn matching_ids(&self, filter: &Filter) -> Vec<PointId> {
        let p = self.points.read();
        let slots = matching_slots(&p, filter);
        slots.into_iter().filter_map(|s| p.id_of(s)).collect()
    }

    /// The best `query.limit` live points for a text query (BM25 with this replica's own
    /// statistics), with what scores them with every shard's ([`TextAnswer`]). Only what the
    /// last text commit published is found.
    pub fn text_candidates(&self, query: &TextQuery) -> quiver_core::Result<TextAnswer> {
        let text = self.text.as_ref().ok_or_else(|| {
            quiver_core::Error::invalid(
                "text",
                format!("collection `{}` declares no text fields", self.name()),
            )
        })?;
        let allowed = {
            let p = self.points.read();
            match &query.filter {
                None => p.live.clone(),
                Some(filter) => matching_slots(&p, filter),
            }
        };
        // (a document of a slot retired since the last commit is passed over)
        let accept =
            Arc::new(move |slot: u64| u32::try_from(slot).is_ok_and(|slot| allowed.contains(slot)));
        let found = text.matches(&query.text, &query.fields, query.limit, accept)?;
        let p = self.points.read();
        let live: Vec<(PointId, Slot, TextMatch)> = found
            .matches
            .into_iter()
            .filter_map(|m| {
                let slot = Slot::try_from(m.slot).ok()?;
                let id = p.id_of(slot).filter(|id| p.slot_of(id) == Some(slot))?;
                Some((id, slot, m))
            })
            .collect();
        let mut vectors = match query.with_vector {
            true => {
                let points: Vec<(PointId, Slot)> =
                    live.iter().map(|(id, s, _)| (*id, *s)).collect();
                self.full_vectors(&p, &points)
            }
            false => Vec::new(),
        }
        .into_iter();
        let hits = live
            .into_iter()
            .map(|(id, slot, matched)| TextCandidate {
                id,
                matched,
                payload: query
                    .with_payload
                    .then(|| p.payloads.get(&slot).map(|x| JsonMap::clone(x)))
                    .flatten(),
                vector: vectors.next().flatten().unwrap_or_default(),
            })
            .collect();
        Ok(TextAnswer {
            terms: found.terms,
            stats: found.stats,
            hits,
        })
    }

    /// Points matching `filter` (all live points without one), and whether the count is exact.
    /// Unless `exact` is asked for, a filter the payload indexes do not bound is estimated from
    /// a sample of live points instead of tested on every one.
    pub fn count(&self, filter: Option<&Filter>, exact: bool) -> (usize, bool) {
        let p = self.points.read();
        let Some(filter) = filter else {
            return (p.len(), true);
        };
        match candidates(&p, filter, u64::MAX) {
            Candidates::Slots(s) => (s.len() as usize, true),
            // (not made with no limit on the bound)
            Candidates::Bounded(b, _) => {
                let n = b.iter().filter(|s| matches(&p, filter, *s)).count();
                (n, true)
            }
            Candidates::Estimated(fraction) if !exact => {
                ((fraction * p.live.len() as f64).round() as usize, false)
            }
            Candidates::Estimated(_) => {
                let n = p.live.iter().filter(|s| matches(&p, filter, *s)).count();
                (n, true)
            }
        }
    }

    /// Points by id (missing ids skipped), as `(id, vector, payload)`.
    pub fn get(&self, ids: &[PointId]) -> Vec<(PointId, Vec<f32>, Arc<JsonMap>)> {
        let p = self.points.read();
        let points: Vec<(PointId, Slot)> = ids
            .iter()
            .filter_map(|id| Some((*id, p.slot_of(id)?)))
            .collect();
        let vectors = self.full_vectors(&p, &points);
        points
            .into_iter()
            .zip(vectors)
            .filter_map(|((id, slot), vector)| Some((id, vector?, p.payloads.get(&slot)?.clone())))
            .collect()
    }
}
