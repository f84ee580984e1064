//! `Points.Query`: BM25 over a collection's text fields ranks the same in 1 shard and in 4 (the
//! shards' statistics merged by the router), hybrid queries fuse the two modalities with an
//! explanation per result, writes can wait until their text is searchable, and bad queries are
//! refused by field, changing nothing.

use quiver_proto::v1 as pb;
use serde_json::json;
use tonic::Code;

use crate::support::*;

/// A generated corpus: documents of words drawn unevenly from a vocabulary (seeded).
fn corpus(n: usize, seed: u64) -> Vec<String> {
    let vocabulary: Vec<String> = (0..400).map(|i| format!("w{i}")).collect();
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..n)
        .map(|_| {
            let len = 4 + (next() % 40) as usize;
            (0..len)
                .map(|_| {
                    let r = (next() % 10_000) as f64 / 10_000.0;
                    vocabulary[(r * r * r * 400.0) as usize].as_str()
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn text_collection(name: &str, shards: u32) -> pb::CreateCollectionRequest {
    let mut create = create_request(name, 8, pb::Metric::Cosine);
    create.shard_count = Some(shards);
    create.text_fields = vec![pb::TextField {
        name: "body".into(),
        analyzer: pb::TextAnalyzer::Simple as i32,
    }];
    create
}

fn bm25(collection: &str, text: &str, limit: u32) -> pb::QueryRequest {
    pb::QueryRequest {
        collection: collection.into(),
        text: text.into(),
        limit: Some(limit),
        mode: pb::QueryMode::Bm25 as i32,
        explain: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bm25_ranks_the_same_in_one_shard_and_in_four_and_hybrid_queries_fuse() {
    let f = must_start().await;
    let mut collections = f.server.must_collections().await;
    let mut points = f.server.must_points().await;
    collections.create(text_collection("one", 1)).await.unwrap();
    collections
        .create(text_collection("four", 4))
        .await
        .unwrap();
    let docs = corpus(1_200, 11);
    let vectors = clustered(docs.len(), 8, 10, 5);
    let pts: Vec<pb::Point> = docs
        .iter()
        .zip(&vectors)
        .enumerate()
        .map(|(i, (d, v))| point(i as u64, v.clone(), json!({"body": d, "odd": i % 2 == 1})))
        .collect();
    for name in ["one", "four"] {
        for chunk in pts.chunks(300) {
            points
                .upsert(pb::UpsertRequest {
                    collection: name.into(),
                    points: chunk.to_vec(),
                    wait_indexed: true,
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    }

    for text in [
        "w3 w40",
        "w120",
        "w7 w8 w250",
        "w0 w1 w2 w399",
        "w60 w61 w62",
    ] {
        let one = points
            .query(bm25("one", text, 10))
            .await
            .unwrap()
            .into_inner();
        let four = points
            .query(bm25("four", text, 10))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(one.results.len(), 10, "{text}");
        assert_eq!(one.plan, "bm25");
        for (i, (a, b)) in one.results.iter().zip(&four.results).enumerate() {
            assert!(
                (a.score - b.score).abs() < 1e-4,
                "{text} at {i}: {} vs {}",
                a.score,
                b.score
            );
            let tied = one
                .results
                .iter()
                .filter(|r| (r.score - a.score).abs() < 1e-4)
                .count();
            if tied == 1 {
                assert_eq!(a.id, b.id, "{text} at {i}");
            }
            let explain = a.explain.as_ref().unwrap();
            assert_eq!(explain.text.as_ref().unwrap().rank, i as u32 + 1);
            assert!(explain.vector.is_none());
        }
        // best first
        assert!(one.results.windows(2).all(|w| w[0].score >= w[1].score));
    }

    // a filter applies to the text candidates
    let mut filtered = bm25("four", "w3 w40", 10);
    filtered.filter_json = r#"{"odd": true}"#.into();
    filtered.with_payload = true;
    let odd = points.query(filtered).await.unwrap().into_inner();
    assert_eq!(odd.results.len(), 10);
    for r in &odd.results {
        assert_eq!(id_num(r.id.as_ref()) % 2, 1);
        assert!(r.payload.is_some());
    }

    // hybrid, rrf: every result's fused score is the sum of 1 / (60 + rank) of its modalities
    let hybrid = |fusion| pb::QueryRequest {
        collection: "four".into(),
        vector: vectors[17].clone(),
        text: docs[17].clone(),
        limit: Some(10),
        fusion,
        explain: true,
        ..Default::default()
    };
    let rrf = points.query(hybrid(None)).await.unwrap().into_inner();
    assert_eq!(rrf.results.len(), 10);
    assert!(rrf.plan.ends_with("+bm25+rrf"), "{}", rrf.plan);
    // point 17 is its own best match by vector and by text
    assert_eq!(id_num(rrf.results[0].id.as_ref()), 17);
    for r in &rrf.results {
        let e = r.explain.as_ref().unwrap();
        let share = |m: &Option<pb::ModalityScore>| {
            m.as_ref().map_or(0.0, |m| {
                assert!((m.contribution - 1.0 / (60.0 + m.rank as f32)).abs() < 1e-6);
                m.contribution
            })
        };
        assert!((share(&e.vector) + share(&e.text) - r.score).abs() < 1e-6);
        assert_eq!(e.fused, r.score);
    }
    // weighted, minmax: shares within [0, weight], summing to the score
    let weighted = points
        .query(hybrid(Some(pb::query_request::Fusion::Weighted(
            pb::WeightedFusion {
                vector_weight: Some(0.5),
                text_weight: Some(0.5),
                normalization: pb::Normalization::Minmax as i32,
            },
        ))))
        .await
        .unwrap()
        .into_inner();
    assert!(weighted.plan.ends_with("+bm25+weighted"));
    assert_eq!(id_num(weighted.results[0].id.as_ref()), 17);
    assert!((weighted.results[0].score - 1.0).abs() < 1e-6);
    for r in &weighted.results {
        let e = r.explain.as_ref().unwrap();
        let v = e.vector.as_ref().map_or(0.0, |m| m.contribution);
        let t = e.text.as_ref().map_or(0.0, |m| m.contribution);
        assert!((0.0..=0.5 + 1e-6).contains(&v) && (0.0..=0.5 + 1e-6).contains(&t));
        assert!((v + t - r.score).abs() < 1e-5);
    }

    // the same queries in one batch answer the same
    let batch = points
        .search_batch(pb::SearchBatchRequest {
            collection: "four".into(),
            queries: vec![bm25("", "w120", 10), hybrid(None)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.responses.len(), 2);
    let alone = points
        .query(bm25("four", "w120", 10))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&batch.responses[0]), ids(&alone));
    assert_eq!(ids(&batch.responses[1]), ids(&rrf));

    // a deleted point is gone from text results once its delete is indexed
    let best = id_num(alone.results[0].id.as_ref());
    points
        .delete(pb::DeletePointsRequest {
            collection: "four".into(),
            ids: vec![id(best)],
            wait_indexed: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let after = points
        .query(bm25("four", "w120", 10))
        .await
        .unwrap()
        .into_inner();
    assert!(!ids(&after).contains(&best));
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queries_are_refused_by_field() {
    let f = must_start().await;
    let mut collections = f.server.must_collections().await;
    let mut points = f.server.must_points().await;
    collections.create(text_collection("t", 2)).await.unwrap();
    collections
        .create(create_request("plain", 8, pb::Metric::Cosine))
        .await
        .unwrap();
    points
        .upsert(pb::UpsertRequest {
            collection: "t".into(),
            points: vec![point(1, vec![0.5; 8], json!({"body": "some words here"}))],
            wait_indexed: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let base = || pb::QueryRequest {
        collection: "t".into(),
        vector: vec![0.5; 8],
        text: "words".into(),
        ..Default::default()
    };
    let weighted = |v: f32, t: f32| {
        Some(pb::query_request::Fusion::Weighted(pb::WeightedFusion {
            vector_weight: Some(v),
            text_weight: Some(t),
            normalization: 0,
        }))
    };
    let cases: Vec<(pb::QueryRequest, &str)> = vec![
        (
            pb::QueryRequest {
                collection: "plain".into(),
                ..base()
            },
            "text",
        ),
        (
            pb::QueryRequest {
                text_fields: vec!["title".into()],
                ..base()
            },
            "text_fields[0]",
        ),
        (
            pb::QueryRequest {
                vector: vec![],
                text: String::new(),
                ..base()
            },
            "vector",
        ),
        (
            pb::QueryRequest {
                vector: vec![],
                text: "   ".into(),
                ..base()
            },
            "text",
        ),
        (
            pb::QueryRequest {
                fusion: weighted(-0.5, 0.3),
                ..base()
            },
            "weighted.vector_weight",
        ),
        (
            pb::QueryRequest {
                fusion: weighted(0.7, f32::NAN),
                ..base()
            },
            "weighted.text_weight",
        ),
        (
            pb::QueryRequest {
                fusion: weighted(0.0, 0.0),
                ..base()
            },
            "weighted",
        ),
        (
            pb::QueryRequest {
                fusion: Some(pb::query_request::Fusion::Rrf(pb::RrfFusion {
                    k: Some(0.0),
                })),
                ..base()
            },
            "rrf.k",
        ),
        (
            pb::QueryRequest {
                fusion: Some(pb::query_request::Fusion::Rrf(pb::RrfFusion {
                    k: Some(-1.0),
                })),
                ..base()
            },
            "rrf.k",
        ),
        (
            pb::QueryRequest {
                limit: Some(0),
                ..base()
            },
            "limit",
        ),
        (
            pb::QueryRequest {
                limit: Some(20),
                text_depth: Some(5),
                ..base()
            },
            "text_depth",
        ),
        (
            pb::QueryRequest {
                vector: vec![0.5; 3],
                ..base()
            },
            "vector",
        ),
        (
            pb::QueryRequest {
                mode: pb::QueryMode::Hybrid as i32,
                vector: vec![],
                ..base()
            },
            "vector",
        ),
        (
            pb::QueryRequest {
                mode: pb::QueryMode::Bm25 as i32,
                text: String::new(),
                ..base()
            },
            "text",
        ),
        (pb::QueryRequest { mode: 99, ..base() }, "mode"),
    ];
    for (request, field) in cases {
        let status = points.query(request.clone()).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{request:?}: {status:?}"
        );
        assert!(
            status.message().starts_with(&format!("{field}: ")),
            "{field}: {}",
            status.message()
        );
    }
    // a query of punctuation only has no terms to search for, found by the shards
    let status = points
        .query(pb::QueryRequest {
            text: "?! --".into(),
            mode: pb::QueryMode::Bm25 as i32,
            ..base()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("text: "),
        "{}",
        status.message()
    );
    // a batch's bad query is named by its place
    let status = points
        .search_batch(pb::SearchBatchRequest {
            collection: "t".into(),
            queries: vec![
                base(),
                pb::QueryRequest {
                    limit: Some(0),
                    ..base()
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        status.message().starts_with("queries[1].limit: "),
        "{}",
        status.message()
    );
    f.server.stop().await;
}
