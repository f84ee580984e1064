//! Queries by vector and/or text: each shard returns its candidates per modality in one round
//! trip; the router merges each modality across shards (vector hits by score; text hits scored
//! again with every shard's BM25 statistics merged, so shards rank as one index), then fuses the
//! two lists once (RRF or weighted) and explains each result on request.

#![allow(clippy::result_large_err)] // tonic's Status, which every answer here may be

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::join_all;
use quiver_core::convert::{self, Query};
use quiver_core::point::PointId;
use quiver_core::shard::{ShardQuery, ShardQueryAnswer};
use quiver_index::bm25::{bm25, CorpusStats};
use quiver_index::distance::Metric;
use quiver_index::fusion::{fuse, Fusion, Ranked};
use quiver_proto::v1 as pb;
use tonic::Status;

use crate::coordinator::{route, Coordinator};

impl Coordinator {
    pub async fn query(&self, mut req: pb::QueryRequest) -> Result<pb::SearchResponse, Status> {
        let placement = self.placement("collection", &req.collection).await?;
        let consistency = convert::read_consistency(req.consistency)?;
        self.embed_texts(std::slice::from_mut(&mut req), &placement.spec)
            .await?;
        let query = convert::query(&req, &placement.spec, &self.limits())?;
        let mut answers = self
            .query_shards(&placement, consistency, vec![query.shard.clone()])
            .await?;
        let parts = answers.iter_mut().filter_map(|a| a.pop()).collect();
        merge(placement.spec.metric, &query, parts)
    }

    /// The queries of a batch (`SearchBatchRequest.queries`): each shard gets one call with all
    /// of them.
    pub(crate) async fn query_batch(
        &self,
        mut req: pb::SearchBatchRequest,
    ) -> Result<pb::SearchBatchResponse, Status> {
        let placement = self.placement("collection", &req.collection).await?;
        let consistency = convert::read_consistency(req.consistency)?;
        self.embed_texts(&mut req.queries, &placement.spec).await?;
        let queries = convert::query_batch(&req, &placement.spec, &self.limits())?;
        let shard_queries = queries.iter().map(|q| q.shard.clone()).collect();
        let answers = self
            .query_shards(&placement, consistency, shard_queries)
            .await?;
        let mut per_shard: Vec<_> = answers.into_iter().map(Vec::into_iter).collect();
        let responses = queries
            .iter()
            .map(|query| {
                let parts = per_shard.iter_mut().filter_map(Iterator::next).collect();
                merge(placement.spec.metric, query, parts)
            })
            .collect::<Result<_, _>>()?;
        Ok(pb::SearchBatchResponse { responses })
    }

    /// Gives the queries that have a text and no vector, of a collection that embeds, their
    /// text's vector (all in one call to the model), unless their mode is bm25. Such a query
    /// of a collection without text fields is dense.
    async fn embed_texts(
        &self,
        queries: &mut [pb::QueryRequest],
        spec: &quiver_core::point::CollectionSpec,
    ) -> Result<(), Status> {
        if spec.embed.is_none() {
            return Ok(());
        }
        let wanting: Vec<usize> = (0..queries.len())
            .filter(|&i| {
                let q = &queries[i];
                q.vector.is_empty()
                    && !q.text.trim().is_empty()
                    && q.mode != pb::QueryMode::Bm25 as i32
            })
            .collect();
        if wanting.is_empty() {
            return Ok(());
        }
        let texts = wanting.iter().map(|&i| queries[i].text.clone()).collect();
        let vectors = self.embed(texts).await?;
        for (i, vector) in wanting.into_iter().zip(vectors) {
            let q = &mut queries[i];
            q.vector = vector;
            if q.mode == pb::QueryMode::Unspecified as i32 && spec.text_fields.is_empty() {
                q.mode = pb::QueryMode::Dense as i32;
            }
        }
        Ok(())
    }

    /// Every shard's answers to `queries`, shard by shard.
    async fn query_shards(
        &self,
        placement: &quiver_core::placement::Placement,
        consistency: quiver_core::shard::ReadConsistency,
        queries: Vec<ShardQuery>,
    ) -> Result<Vec<Vec<ShardQueryAnswer>>, Status> {
        let queries = Arc::new(queries);
        let calls = (0..placement.shards.len()).map(|shard| {
            let read = Self::read(placement, shard, consistency);
            let queries = queries.clone();
            self.on_shard(placement, shard, route(consistency), move |_, client| {
                let (read, queries) = (read.clone(), queries.clone());
                async move { client.query(&read, &queries).await }
            })
        });
        join_all(calls).await.into_iter().collect()
    }
}

/// A candidate of one modality, merged across shards.
struct Candidate {
    id: PointId,
    score: f32,
    point: pb::ScoredPoint,
}

/// The vector candidates of every shard: the best `depth`, by the metric's order.
fn vector_list(
    metric: Metric,
    depth: usize,
    parts: &mut [ShardQueryAnswer],
) -> Result<(Vec<Candidate>, Vec<String>), Status> {
    let mut plans: Vec<String> = Vec::new();
    let mut all = Vec::new();
    for part in parts.iter_mut() {
        let Some(answer) = part.vector.take() else {
            continue;
        };
        if !plans.contains(&answer.plan) {
            plans.push(answer.plan);
        }
        for point in answer.results {
            let id = convert::point_id("results.id", point.id.as_ref())?;
            all.push(Candidate {
                id,
                score: point.score,
                point,
            });
        }
    }
    let lower_is_better = metric == Metric::L2;
    all.sort_by(|a, b| {
        let order = a.score.total_cmp(&b.score);
        let order = if lower_is_better {
            order
        } else {
            order.reverse()
        };
        order.then(a.id.cmp(&b.id))
    });
    all.truncate(depth);
    Ok((all, plans))
}

/// The text candidates of every shard, scored with their merged statistics: the best `depth`.
fn text_list(depth: usize, parts: &mut [ShardQueryAnswer]) -> Vec<Candidate> {
    let answers: Vec<_> = parts.iter_mut().filter_map(|p| p.text.take()).collect();
    let mut stats = CorpusStats::default();
    answers.iter().for_each(|a| stats.merge(&a.stats));
    let mut all: Vec<Candidate> = answers
        .into_iter()
        .flat_map(|answer| {
            let stats = &stats;
            let terms = answer.terms;
            answer.hits.into_iter().map(move |hit| {
                let score = bm25(stats, &terms, &hit.matched);
                Candidate {
                    id: hit.id,
                    score,
                    point: pb::ScoredPoint {
                        id: Some(convert::point_id_to_proto(&hit.id)),
                        score,
                        payload: hit.payload.map(|p| convert::json_to_struct(&p)),
                        vector: hit.vector,
                        explain: None,
                        features: Default::default(),
                    },
                }
            })
        })
        .collect();
    all.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    all.truncate(depth);
    all
}

fn fusion_name(fusion: &Fusion) -> &'static str {
    match fusion {
        Fusion::Rrf { .. } => "rrf",
        Fusion::Weighted { .. } => "weighted",
    }
}

/// One query's answer from its shards' parts: each modality merged, then fused.
fn merge(
    metric: Metric,
    query: &Query,
    mut parts: Vec<ShardQueryAnswer>,
) -> Result<pb::SearchResponse, Status> {
    let (vectors, mut plan) = vector_list(metric, query.vector_depth(), &mut parts)?;
    let texts = text_list(query.text_depth(), &mut parts);
    if query.shard.text.is_some() {
        plan.push("bm25".into());
    }
    let single = |list: Vec<Candidate>, vector: bool| -> Vec<pb::ScoredPoint> {
        list.into_iter()
            .take(query.limit)
            .enumerate()
            .map(|(rank, c)| {
                let mut point = c.point;
                if query.explain {
                    let score = Some(pb::ModalityScore {
                        rank: rank as u32 + 1,
                        score: c.score,
                        contribution: c.score,
                    });
                    point.explain = Some(pb::Explanation {
                        vector: if vector { score } else { None },
                        text: if vector { None } else { score },
                        fused: c.score,
                    });
                }
                point
            })
            .collect()
    };
    let results = match (&query.fusion, query.shard.vector.is_some()) {
        (None, true) => single(vectors, true),
        (None, false) => single(texts, false),
        (Some(fusion), _) => {
            plan.push(fusion_name(fusion).into());
            let lists = [
                Ranked {
                    hits: vectors.iter().map(|c| (c.id, c.score)).collect(),
                    higher_is_better: metric != Metric::L2,
                },
                Ranked {
                    hits: texts.iter().map(|c| (c.id, c.score)).collect(),
                    higher_is_better: true,
                },
            ];
            let fused = fuse(&lists, fusion, query.limit)
                .map_err(|e| Status::internal(format!("fusion: {e}")))?;
            let mut points: HashMap<PointId, pb::ScoredPoint> = HashMap::new();
            for c in texts.into_iter().chain(vectors) {
                // (the vector candidate's copy last: it wins)
                points.insert(c.id, c.point);
            }
            fused
                .into_iter()
                .filter_map(|f| {
                    let mut point = points.remove(&f.key)?;
                    point.score = f.score;
                    if query.explain {
                        let modality = |i: usize| {
                            f.lists[i].map(|c| pb::ModalityScore {
                                rank: c.rank as u32,
                                score: c.raw,
                                contribution: c.fused,
                            })
                        };
                        point.explain = Some(pb::Explanation {
                            vector: modality(0),
                            text: modality(1),
                            fused: f.score,
                        });
                    }
                    Some(point)
                })
                .collect()
        }
    };
    Ok(pb::SearchResponse {
        results,
        plan: plan.join("+"),
    })
}
