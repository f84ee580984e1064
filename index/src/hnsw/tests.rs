use std::collections::HashSet;

use rand::{Rng, SeedableRng};

use super::*;
use crate::flat::VectorArena;
use crate::Slot;

/// `n` points in `dim` dimensions that lie near a subspace of a quarter of them, around 20
/// centres there (as embeddings do), prepared for `metric`.
fn clustered(n: usize, dim: usize, seed: u64, metric: Metric) -> Vec<Vec<f32>> {
    // the subspace and the centres depend on the dimension only, so queries drawn with another
    // seed come from the same distribution as the points
    let mut shape = rand::rngs::StdRng::seed_from_u64(dim as u64);
    let latent = (dim / 4).max(2);
    let basis: Vec<Vec<f32>> = (0..latent)
        .map(|_| (0..dim).map(|_| shape.gen_range(-1.0..1.0)).collect())
        .collect();
    let centres: Vec<Vec<f32>> = (0..20)
        .map(|_| (0..latent).map(|_| shape.gen_range(-1.0..1.0)).collect())
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let c = &centres[rng.gen_range(0..centres.len())];
            let mut v = vec![0.0f32; dim];
            for (b, x) in basis.iter().zip(c) {
                let x = x + rng.gen_range(-0.4..0.4);
                v.iter_mut().zip(b).for_each(|(v, b)| *v += x * b);
            }
            v.iter_mut().for_each(|v| *v += rng.gen_range(-0.05..0.05));
            metric.prepare(&mut v);
            v
        })
        .collect()
}

fn flatten(rows: &[Vec<f32>]) -> Vec<f32> {
    rows.iter().flatten().copied().collect()
}

fn exact(metric: Metric, data: &[Vec<f32>], query: &[f32], k: usize) -> Vec<Slot> {
    let mut arena = VectorArena::new(query.len());
    for (i, v) in data.iter().enumerate() {
        arena.set(i as Slot, v);
    }
    arena
        .search(metric, query, k, 0..data.len() as Slot)
        .iter()
        .map(|h| h.slot)
        .collect()
}

fn recall(found: &[Vec<Slot>], truth: &[Vec<Slot>]) -> f64 {
    let hits: usize = found
        .iter()
        .zip(truth)
        .map(|(f, t)| f.iter().filter(|s| t.contains(s)).count())
        .sum();
    hits as f64 / truth.iter().map(Vec::len).sum::<usize>() as f64
}

#[test]
fn recall_is_high_for_every_metric_and_scores_are_the_metrics() {
    for metric in [Metric::L2, Metric::Cosine, Metric::Dot] {
        let data = clustered(3_000, 24, 1, metric);
        let queries = clustered(50, 24, 2, metric);
        let graph = HnswGraph::build(metric, 24, HnswParams::default(), flatten(&data), 2, 9);
        assert_eq!(graph.len(), 3_000);
        let truth: Vec<Vec<Slot>> = queries
            .iter()
            .map(|q| exact(metric, &data, q, 10))
            .collect();
        let found: Vec<Vec<Slot>> = queries
            .iter()
            .map(|q| {
                let hits = graph.search(q, 10, 64);
                for h in &hits {
                    let expected = metric.score(q, &data[h.slot as usize]);
                    assert!(
                        (h.score - expected).abs() < 1e-3,
                        "{metric}: {h:?} vs {expected}"
                    );
                }
                assert!(hits
                    .windows(2)
                    .all(|w| !metric.is_better(w[1].score, w[0].score)));
                hits.iter().map(|h| h.slot).collect()
            })
            .collect();
        let r = recall(&found, &truth);
        assert!(r >= 0.95, "{metric}: recall {r}");
    }
}

#[test]
fn recall_is_at_least_hnsw_rs_on_the_same_data() {
    use hnsw_rs::prelude::{DistL2, Hnsw};
    let metric = Metric::L2;
    let (dim, params) = (
        32,
        HnswParams {
            m: 12,
            ef_construction: 100,
        },
    );
    let data = clustered(10_000, dim, 3, metric);
    let queries = clustered(200, dim, 4, metric);
    let truth: Vec<Vec<Slot>> = queries
        .iter()
        .map(|q| exact(metric, &data, q, 10))
        .collect();

    let ours = HnswGraph::build(metric, dim, params, flatten(&data), 2, 5);
    let reference: Hnsw<f32, DistL2> =
        Hnsw::new(params.m, data.len(), 16, params.ef_construction, DistL2);
    let items: Vec<(&[f32], usize)> = data
        .iter()
        .enumerate()
        .map(|(i, v)| (v.as_slice(), i))
        .collect();
    reference.parallel_insert_slice(&items);
    // mean recall over a few ef (parallel builds of either vary by about ±0.005)
    let mean = |search: &dyn Fn(&[f32], usize) -> Vec<Slot>| {
        let efs = [10, 16, 32];
        efs.iter()
            .map(|&ef| {
                let found: Vec<Vec<Slot>> = queries.iter().map(|q| search(q, ef)).collect();
                recall(&found, &truth)
            })
            .sum::<f64>()
            / efs.len() as f64
    };
    let r_ours = mean(&|q, ef| ours.search(q, 10, ef).iter().map(|h| h.slot).collect());
    let r_reference = mean(&|q, ef| {
        reference
            .search(q, 10, ef)
            .iter()
            .map(|n| n.d_id as Slot)
            .collect()
    });
    assert!(
        r_ours >= r_reference - 0.005,
        "ours {r_ours}, hnsw_rs {r_reference}"
    );
}

#[test]
fn lists_are_bounded_without_self_links_or_repeats() {
    let data = clustered(4_000, 8, 5, Metric::L2);
    let params = HnswParams {
        m: 6,
        ef_construction: 40,
    };
    let graph = HnswGraph::build(Metric::L2, 8, params, flatten(&data), 2, 1);
    for id in 0..graph.len() as u32 {
        let links = graph.neighbours(id);
        assert!(
            !links.is_empty() && links.len() <= 12,
            "node {id}: {links:?}"
        );
        assert!(!links.contains(&id));
        assert_eq!(links.iter().collect::<HashSet<_>>().len(), links.len());
    }
    // every node is reachable from the entry on layer 0
    let mut seen = vec![false; graph.len()];
    let mut stack = vec![graph.entry.unwrap()];
    while let Some(id) = stack.pop() {
        if !std::mem::replace(&mut seen[id as usize], true) {
            stack.extend(graph.neighbours(id));
        }
    }
    assert!(seen.iter().all(|&s| s));
}

#[test]
fn the_predicate_is_applied_inside_the_walk() {
    let data = clustered(2_000, 8, 6, Metric::L2);
    let graph = HnswGraph::build(Metric::L2, 8, HnswParams::default(), flatten(&data), 1, 2);
    // one node in 50 accepted: still 10 found, all accepted, and they are the nearest accepted
    let accept = |id: u32| id % 50 == 7;
    let hits = graph.search_accepting(&data[1], 10, 64, accept);
    assert_eq!(hits.len(), 10);
    assert!(hits.iter().all(|h| accept(h.slot)));
    let accepted: Vec<Vec<f32>> = data
        .iter()
        .enumerate()
        .filter(|(i, _)| accept(*i as u32))
        .map(|(_, v)| v.clone())
        .collect();
    let best = exact(Metric::L2, &accepted, &data[1], 1)[0];
    assert_eq!(hits[0].slot, best * 50 + 7);
    // nothing accepted: nothing returned
    assert!(graph
        .search_accepting(&data[1], 10, 64, |_| false)
        .is_empty());
}

#[test]
fn a_selective_filter_still_finds_the_nearest_accepted_nodes() {
    // one node in ten accepted, over 20 clusters: recall against the exact top 10 of those
    let data = clustered(4_000, 8, 10, Metric::L2);
    let graph = HnswGraph::build(Metric::L2, 8, HnswParams::default(), flatten(&data), 1, 3);
    let accepted_ids: Vec<u32> = (0..data.len() as u32).filter(|i| i % 10 == 3).collect();
    let accept = |id: u32| id % 10 == 3;
    let accepted: Vec<Vec<f32>> = accepted_ids
        .iter()
        .map(|&i| data[i as usize].clone())
        .collect();
    let (mut found, mut wanted) = (0, 0);
    for query in data.iter().step_by(97) {
        let hits = graph.search_accepting(query, 10, 64, accept);
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|h| accept(h.slot)));
        let truth: Vec<u32> = exact(Metric::L2, &accepted, query, 10)
            .into_iter()
            .map(|i| accepted_ids[i as usize])
            .collect();
        found += hits.iter().filter(|h| truth.contains(&h.slot)).count();
        wanted += truth.len();
    }
    let recall = found as f64 / wanted as f64;
    assert!(recall >= 0.95, "recall at 10% accepted: {recall}");
}

#[test]
fn small_and_empty_graphs() {
    let empty = HnswGraph::build(Metric::Dot, 4, HnswParams::default(), Vec::new(), 2, 0);
    assert!(empty.is_empty());
    assert!(empty.search(&[1.0, 0.0, 0.0, 0.0], 5, 10).is_empty());
    let one = HnswGraph::build(Metric::Dot, 2, HnswParams::default(), vec![1.0, 2.0], 2, 0);
    let hits = one.search(&[1.0, 1.0], 5, 1);
    assert_eq!(hits.len(), 1);
    assert_eq!((hits[0].slot, hits[0].score), (0, 3.0));
    // k above the size returns all; a query of the wrong length returns nothing
    let data = clustered(30, 4, 7, Metric::L2);
    let few = HnswGraph::build(Metric::L2, 4, HnswParams::default(), flatten(&data), 2, 0);
    assert_eq!(few.search(&data[0], 100, 10).len(), 30);
    assert!(few.search(&[1.0], 5, 10).is_empty());
    assert_eq!(few.search(&data[3], 1, 1)[0].slot, 3);
}

#[test]
fn single_threaded_builds_are_reproducible() {
    let data = clustered(1_500, 8, 8, Metric::Cosine);
    let a = HnswGraph::build(
        Metric::Cosine,
        8,
        HnswParams::default(),
        flatten(&data),
        1,
        3,
    );
    let b = HnswGraph::build(
        Metric::Cosine,
        8,
        HnswParams::default(),
        flatten(&data),
        4,
        3,
    );
    let (mut x, mut y) = (Vec::new(), Vec::new());
    a.write_to(&mut x).unwrap();
    b.write_to(&mut y).unwrap();
    assert!(
        x == y,
        "graphs under the parallel threshold build on one thread"
    );
}

#[test]
fn a_written_graph_reads_back_the_same_and_damage_is_an_error() {
    let data = clustered(2_500, 12, 9, Metric::Dot);
    let graph = HnswGraph::build(
        Metric::Dot,
        12,
        HnswParams {
            m: 8,
            ef_construction: 50,
        },
        flatten(&data),
        2,
        4,
    );
    let mut bytes = Vec::new();
    graph.write_to(&mut bytes).unwrap();
    let read = HnswGraph::read_from(&bytes).unwrap();
    assert_eq!(
        (read.len(), read.dim(), read.metric(), read.params()),
        (2_500, 12, Metric::Dot, graph.params())
    );
    for q in data.iter().take(20) {
        assert_eq!(graph.search(q, 10, 32), read.search(q, 10, 32));
    }
    let mut again = Vec::new();
    read.write_to(&mut again).unwrap();
    assert!(again == bytes);

    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 1;
    assert_eq!(
        HnswGraph::read_from(&flipped).unwrap_err(),
        FormatError::Damaged("checksum mismatch".into())
    );
    assert!(HnswGraph::read_from(&bytes[..bytes.len() - 9]).is_err());
    assert_eq!(
        HnswGraph::read_from(b"garbage").unwrap_err(),
        FormatError::NotAGraph
    );
    let mut future = bytes.clone();
    future[6] = 9;
    assert_eq!(
        HnswGraph::read_from(&future).unwrap_err(),
        FormatError::Version { found: 9 }
    );
    // a well-formed file whose upper layer links a node that does not reach it
    let params = HnswParams {
        m: 2,
        ef_construction: 4,
    };
    let two = HnswGraph::build(Metric::L2, 1, params, vec![0.0, 1.0], 1, 0);
    let mut written = Vec::new();
    two.write_to(&mut written).unwrap();
    // (crafted as format 1, which is format 2 without `lo` and `step`: format 1 reads too)
    let header = 6 + 2 + 4 + 5 * 4;
    let node_bytes = 2 * (1 + 2 * 2 + 1) * 4;
    let levels = header + 8..header + 8 + 2;
    let mut crafted = written[..header].to_vec();
    crafted[6..8].copy_from_slice(&1u16.to_le_bytes());
    crafted[9] = 1; // the top layer
    crafted[12 + 16..12 + 20].copy_from_slice(&0u32.to_le_bytes()); // entry: node 0
    crafted.extend_from_slice(&[1, 0]); // levels: node 0 reaches layer 1, node 1 does not
    crafted.extend_from_slice(&written[levels.end..levels.end + node_bytes]);
    let upper: Vec<u8> = [1u32, 1, 0].iter().flat_map(|w| w.to_le_bytes()).collect();
    crafted.extend_from_slice(&upper); // node 0's layer-1 block links node 1
    let crc = crc32fast::hash(&crafted);
    crafted.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(
        HnswGraph::read_from(&crafted).unwrap_err(),
        FormatError::Damaged("a link out of range".into())
    );
    let empty = HnswGraph::build(Metric::L2, 3, HnswParams::default(), Vec::new(), 1, 0);
    let mut bytes = Vec::new();
    empty.write_to(&mut bytes).unwrap();
    assert!(HnswGraph::read_from(&bytes).unwrap().is_empty());
}

#[test]
fn an_extended_graph_keeps_the_old_nodes_and_finds_the_new_ones() {
    let metric = Metric::L2;
    let data = clustered(6_000, 16, 10, metric);
    let queries = clustered(100, 16, 11, metric);
    let params = HnswParams {
        m: 8,
        ef_construction: 64,
    };
    let first = HnswGraph::build(metric, 16, params, flatten(&data[..2_500]), 2, 1);
    let grown = first.extend(flatten(&data[2_500..]), 2, 2);
    assert_eq!((first.len(), grown.len()), (2_500, 6_000));
    for id in [0u32, 1_234, 2_499] {
        assert_eq!(grown.vector(id), first.vector(id));
    }
    assert_eq!(grown.vector(4_000), Some(data[4_000].as_slice()));
    let truth: Vec<Vec<Slot>> = queries
        .iter()
        .map(|q| exact(metric, &data, q, 10))
        .collect();
    let found: Vec<Vec<Slot>> = queries
        .iter()
        .map(|q| grown.search(q, 10, 64).iter().map(|h| h.slot).collect())
        .collect();
    let r = recall(&found, &truth);
    assert!(r >= 0.95, "recall {r}");
    // extending an empty graph is building one
    let empty = HnswGraph::build(metric, 16, params, Vec::new(), 1, 0);
    let built = empty.extend(flatten(&data[..100]), 1, 0);
    assert_eq!(built.search(&data[42], 1, 16)[0].slot, 42);
}

/// The ids of the best `k` of `candidates`, rescored exactly against `data`.
fn rescored(
    metric: Metric,
    data: &[Vec<f32>],
    q: &[f32],
    candidates: &[ScoredSlot],
    k: usize,
) -> Vec<Slot> {
    let mut exact: Vec<(f32, Slot)> = candidates
        .iter()
        .map(|h| (metric.score(q, &data[h.slot as usize]), h.slot))
        .collect();
    exact.sort_by(|a, b| {
        if metric.higher_is_better() {
            b.0.total_cmp(&a.0)
        } else {
            a.0.total_cmp(&b.0)
        }
    });
    exact.iter().take(k).map(|(_, s)| *s).collect()
}

#[test]
fn encoded_graphs_keep_recall_and_rescoring_restores_it() {
    use crate::quantize::Quantization;
    for metric in [Metric::L2, Metric::Cosine, Metric::Dot] {
        let data = clustered(3_000, 32, 21, metric);
        let queries = clustered(50, 32, 22, metric);
        let truth: Vec<Vec<Slot>> = queries
            .iter()
            .map(|q| exact(metric, &data, q, 10))
            .collect();
        for quantization in [Quantization::F16, Quantization::Int8] {
            let vectors = flatten(&data);
            let encoding = Encoding::train(quantization, &vectors, 32);
            let params = HnswParams::default();
            let graph = HnswGraph::build_encoded(metric, 32, params, encoding, vectors, 2, 3);
            assert_eq!(graph.encoding(), encoding);
            let raw: Vec<Vec<Slot>> = queries
                .iter()
                .map(|q| graph.search(q, 10, 64).iter().map(|h| h.slot).collect())
                .collect();
            let again: Vec<Vec<Slot>> = queries
                .iter()
                .map(|q| rescored(metric, &data, q, &graph.search(q, 30, 64), 10))
                .collect();
            let (raw, again) = (recall(&raw, &truth), recall(&again, &truth));
            assert!(raw >= 0.85, "{metric:?} {quantization:?} recall {raw}");
            assert!(
                again >= 0.97,
                "{metric:?} {quantization:?} rescored {again}"
            );
            // scores are near the true ones, and `score` gives the walk's scores
            let q = &queries[0];
            let encoded = graph.encode_query(q);
            for h in graph.search(q, 5, 64) {
                let truth = metric.score(q, &data[h.slot as usize]);
                assert!(
                    (h.score - truth).abs() < 0.05 * (1.0 + truth.abs()),
                    "{h:?} {truth}"
                );
                assert!((graph.score(&encoded, h.slot) - h.score).abs() < 1e-5);
            }
            assert!(graph.vector(0).is_none());
            let decoded = graph.decoded(7);
            assert!(decoded
                .iter()
                .zip(&data[7])
                .all(|(a, b)| (a - b).abs() < 0.05));
        }
    }
}

#[test]
fn an_encoded_graph_writes_reads_extends_and_subsets_in_its_encoding() {
    use crate::quantize::Quantization;
    let metric = Metric::L2;
    let data = clustered(4_000, 16, 31, metric);
    let params = HnswParams {
        m: 8,
        ef_construction: 64,
    };
    let vectors = flatten(&data[..2_500]);
    let encoding = Encoding::train(Quantization::Int8, &vectors, 16);
    let graph = HnswGraph::build_encoded(metric, 16, params, encoding, vectors, 2, 5);
    assert_eq!(graph.bytes_per_vector(), 4 * 4 + 4);
    let mut bytes = Vec::new();
    graph.write_to(&mut bytes).unwrap();
    let read = HnswGraph::read_from(&bytes).unwrap();
    assert_eq!(read.encoding(), encoding);
    for q in data.iter().take(20) {
        assert_eq!(graph.search(q, 10, 32), read.search(q, 10, 32));
    }
    let grown = read.extend(flatten(&data[2_500..]), 2, 6);
    assert_eq!((grown.len(), grown.encoding()), (4_000, encoding));
    assert_eq!(grown.search(&data[3_210], 1, 32)[0].slot, 3_210);
    // a subset keeps the stored words: node 3,210 of the grown graph is node 1 of this one
    let part = grown.subset(&[5, 3_210, 17], 1, 0);
    assert_eq!((part.len(), part.encoding()), (3, encoding));
    assert_eq!(part.decoded(1), grown.decoded(3_210));
    assert_eq!(part.search(&data[3_210], 1, 8)[0].slot, 1);
}

#[test]
fn a_graph_absorbs_another_graphs_nodes_in_its_own_encoding() {
    use crate::quantize::Quantization;
    let metric = Metric::L2;
    let data = clustered(3_000, 16, 41, metric);
    let params = HnswParams {
        m: 8,
        ef_construction: 64,
    };
    let first = HnswGraph::build(metric, 16, params, flatten(&data[..2_000]), 2, 1);
    let second = HnswGraph::build(metric, 16, params, flatten(&data[2_000..]), 1, 2);
    // the even nodes of the second graph join the first
    let taken: Vec<u32> = (0..1_000).step_by(2).collect();
    let merged = first.absorb(&second, &taken, 2, 3);
    assert_eq!(merged.len(), 2_500);
    assert_eq!(merged.vector(2_001), second.vector(2));
    for (i, &node) in taken.iter().enumerate().step_by(50) {
        let hit = merged.search(&data[2_000 + node as usize], 1, 32)[0];
        assert_eq!(hit.slot as usize, 2_000 + i);
    }
    // an int8 graph absorbing f32 nodes encodes them as its own
    let vectors = flatten(&data[..2_000]);
    let encoding = Encoding::train(Quantization::Int8, &vectors, 16);
    let coded = HnswGraph::build_encoded(metric, 16, params, encoding, vectors, 2, 4);
    let grown = coded.absorb(&second, &[7, 8], 1, 5);
    assert_eq!((grown.len(), grown.encoding()), (2_002, encoding));
    let (mut words, mut expected) = (Vec::new(), Vec::new());
    encoding.encode(&data[2_007], &mut words);
    encoding.decode(&words, 16, &mut expected);
    assert_eq!(grown.decoded(2_000), expected);
}
