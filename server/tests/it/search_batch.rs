//! `Points.SearchBatch`: each search of a batch answers what it would alone, over several shards,
//! and a bad search in a batch is refused by its place (`searches[i].field`), running none.

use quiver_proto::v1 as pb;
use serde_json::json;
use tonic::Code;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_what_each_search_answers_alone() {
    let f = must_start().await;
    let mut collections = f.server.must_collections().await;
    let mut points = f.server.must_points().await;
    let mut create = create_request("b", 8, pb::Metric::L2);
    create.shard_count = Some(3);
    collections.create(create).await.unwrap();
    let data = clustered(2_400, 8, 12, 3);
    let pts: Vec<pb::Point> = data
        .iter()
        .enumerate()
        .map(|(i, v)| point(i as u64, v.clone(), json!({"even": i % 2 == 0})))
        .collect();
    must_upsert_all(&mut points, "b", pts, 400).await;
    f.server.settle("b").await;

    // searches of every kind: top_k, ef, exact, a filter, payloads
    let searches: Vec<pb::SearchRequest> = data
        .iter()
        .step_by(97)
        .enumerate()
        .map(|(i, v)| {
            let mut s = search_request("", v.clone(), 1 + (i % 12) as u32);
            s.ef = Some(16 + 8 * (i % 4) as u32);
            s.exact = i % 5 == 0;
            s.with_payload = i % 2 == 0;
            if i % 3 == 0 {
                s.filter_json = r#"{"even": true}"#.into();
            }
            s
        })
        .collect();
    let batch = points
        .search_batch(pb::SearchBatchRequest {
            collection: "b".into(),
            searches: searches.clone(),
            consistency: 0,
            queries: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.responses.len(), searches.len());
    for (search, answer) in searches.into_iter().zip(&batch.responses) {
        let alone = points
            .search(pb::SearchRequest {
                collection: "b".into(),
                ..search.clone()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer, &alone, "{search:?}");
        assert_eq!(answer.results.len(), search.top_k.unwrap() as usize);
    }
}

/// A flat collection's unfiltered searches in a batch share one pass over the vectors; the
/// answers are the ones each search gets alone, scores included, for every metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flat_batch_shares_one_scan_and_answers_as_searches_alone() {
    let f = must_start().await;
    let mut collections = f.server.must_collections().await;
    let mut points = f.server.must_points().await;
    let data = clustered(1_500, 24, 6, 31);
    for metric in [pb::Metric::L2, pb::Metric::Cosine, pb::Metric::Dot] {
        let mut create = create_request("flat", 24, metric);
        create.index = Some(pb::IndexConfig {
            kind: Some(pb::index_config::Kind::Flat(pb::FlatConfig {})),
        });
        collections.create(create).await.unwrap();
        let pts: Vec<pb::Point> = data
            .iter()
            .enumerate()
            .map(|(i, v)| point(i as u64, v.clone(), json!({"i": i})))
            .collect();
        must_upsert_all(&mut points, "flat", pts, 500).await;
        let searches: Vec<pb::SearchRequest> = data
            .iter()
            .step_by(71)
            .enumerate()
            .map(|(i, v)| {
                let mut s = search_request("", v.clone(), 1 + (i % 9) as u32);
                s.with_payload = i % 2 == 1;
                s.with_vector = i % 3 == 1;
                if i == 4 {
                    s.filter_json = r#"{"i": {"$lt": 700}}"#.into();
                }
                s
            })
            .collect();
        let batch = points
            .search_batch(pb::SearchBatchRequest {
                collection: "flat".into(),
                searches: searches.clone(),
                consistency: 0,
                queries: Vec::new(),
            })
            .await
            .unwrap()
            .into_inner();
        for (search, answer) in searches.into_iter().zip(&batch.responses) {
            let alone = points
                .search(pb::SearchRequest {
                    collection: "flat".into(),
                    ..search.clone()
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(answer, &alone, "{metric:?} {search:?}");
        }
        collections
            .delete(pb::DeleteCollectionRequest {
                name: "flat".into(),
            })
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_search_in_a_batch_is_refused_by_its_place() {
    let f = must_start().await;
    let mut collections = f.server.must_collections().await;
    let mut points = f.server.must_points().await;
    collections
        .create(create_request("b", 2, pb::Metric::L2))
        .await
        .unwrap();
    let good = || search_request("", vec![0.0, 1.0], 3);
    let refused = |batch: pb::SearchBatchRequest| {
        let mut points = points.clone();
        async move { points.search_batch(batch).await.unwrap_err() }
    };
    let batch = |searches: Vec<pb::SearchRequest>| pb::SearchBatchRequest {
        collection: "b".into(),
        searches,
        consistency: 0,
        queries: Vec::new(),
    };

    let empty = refused(batch(vec![])).await;
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert!(empty.message().contains("searches"), "{}", empty.message());

    let mut zero_k = good();
    zero_k.top_k = Some(0);
    let status = refused(batch(vec![good(), zero_k])).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("searches[1].top_k"),
        "{}",
        status.message()
    );

    let short = search_request("", vec![1.0], 3);
    let status = refused(batch(vec![short])).await;
    assert!(
        status.message().contains("searches[0].vector"),
        "{}",
        status.message()
    );

    let other = search_request("elsewhere", vec![0.0, 1.0], 3);
    let status = refused(batch(vec![good(), good(), other])).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("searches[2].collection"),
        "{}",
        status.message()
    );

    let mut missing = batch(vec![good()]);
    missing.collection = "nope".into();
    assert_eq!(refused(missing).await.code(), Code::NotFound);

    let too_many = batch((0..100_001).map(|_| good()).collect());
    let status = points.search_batch(too_many).await;
    let status = status.unwrap_err();
    assert!(
        [
            Code::InvalidArgument,
            Code::OutOfRange,
            Code::ResourceExhausted
        ]
        .contains(&status.code()),
        "{status:?}"
    );

    // the same searches, well formed, are answered
    let fine = points
        .search_batch(batch(vec![good(), good()]))
        .await
        .unwrap();
    assert_eq!(fine.into_inner().responses.len(), 2);
}
