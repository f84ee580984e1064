//! Search quality: HNSW against exact search, unfiltered and under selective filters.

use std::collections::HashSet;

use quiver_proto::v1 as pb;
use quiver_server::testing::{test_config, TestServer};
use serde_json::json;

use crate::support::*;

const N: usize = 20_000;
const DIM: usize = 32;
const QUERIES: usize = 100;

async fn recall_at_10(
    client: &mut pb::points_client::PointsClient<tonic::transport::Channel>,
    queries: &[Vec<f32>],
    filter_json: &str,
    expected_plan: &str,
) -> f64 {
    let mut found = 0usize;
    let mut wanted = 0usize;
    for q in queries {
        let mut req = search_request("v", q.clone(), 10);
        req.filter_json = filter_json.into();
        req.ef = Some(64);
        let approx = client.search(req.clone()).await.unwrap().into_inner();
        assert_eq!(approx.plan, expected_plan, "filter {filter_json}");
        req.exact = true;
        let exact = client.search(req).await.unwrap().into_inner();
        let truth: HashSet<u64> = ids(&exact).into_iter().collect();
        assert_eq!(truth.len(), 10, "enough points match {filter_json}");
        found += ids(&approx).iter().filter(|i| truth.contains(i)).count();
        wanted += truth.len();
    }
    found as f64 / wanted as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hnsw_recall_unfiltered_and_filtered() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    // Unindexed, 1% of 20k (200 matches) is searched exactly and 10% (2,000) walks the graph;
    // an indexed field's exact sets are scored whole up to 1,000 / share (10%: 2,000 of 10,000),
    // and walked above (30%: 6,000 of 3,333).
    config.search.exact_search_threshold = 1_000;
    let server = TestServer::must_start(config).await;
    let mut collections = server.must_collections().await;
    let mut points = server.must_points().await;
    let mut req = create_request("v", DIM as u32, pb::Metric::L2);
    req.index = Some(pb::IndexConfig {
        kind: Some(pb::index_config::Kind::Hnsw(pb::HnswConfig {
            m: Some(16),
            ef_construction: Some(200),
        })),
    });
    req.payload_indexes = vec![pb::PayloadIndexField {
        key: "bucket".into(),
        r#type: pb::PayloadFieldType::Integer as i32,
    }];
    collections.create(req).await.unwrap();

    let data = clustered(N + QUERIES, DIM, 40, 11);
    let (base, queries) = data.split_at(N);
    // `bucket` is indexed; `shadow` holds the same value but is not, so the planner must estimate.
    let pts: Vec<pb::Point> = base
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let b = (i * 7919) % 100;
            let tier = (i * 31) % 10;
            point(
                i as u64,
                v.clone(),
                json!({"bucket": b, "shadow": b, "tier": tier}),
            )
        })
        .collect();
    must_upsert_all(&mut points, "v", pts, 1_000).await;
    server.settle("v").await;

    let unfiltered = recall_at_10(&mut points, queries, "", "hnsw").await;
    let one_percent =
        recall_at_10(&mut points, queries, r#"{"bucket": 42}"#, "exact-filtered").await;
    let ten_percent = recall_at_10(
        &mut points,
        queries,
        r#"{"bucket": {"$lt": 10}}"#,
        "exact-filtered",
    )
    .await;
    let thirty_percent = recall_at_10(
        &mut points,
        queries,
        r#"{"bucket": {"$gte": 70}}"#,
        "hnsw-filtered",
    )
    .await;
    let ten_unindexed = recall_at_10(
        &mut points,
        queries,
        r#"{"shadow": {"$lt": 10}}"#,
        "hnsw-filtered",
    )
    .await;
    let one_unindexed =
        recall_at_10(&mut points, queries, r#"{"shadow": 42}"#, "exact-filtered").await;
    let half = recall_at_10(
        &mut points,
        queries,
        r#"{"bucket": {"$lt": 50}}"#,
        "hnsw-filtered",
    )
    .await;
    // two fields (one indexed, one not) that together keep 15% and 5% of the points
    let two_fields = recall_at_10(
        &mut points,
        queries,
        r#"{"bucket": {"$lt": 30}, "tier": {"$lt": 5}}"#,
        "hnsw-filtered",
    )
    .await;
    let two_fields_narrow = recall_at_10(
        &mut points,
        queries,
        r#"{"$and": [{"bucket": {"$lt": 10}}, {"tier": {"$gte": 5}}]}"#,
        "exact-filtered",
    )
    .await;
    eprintln!(
        "recall@10: unfiltered {unfiltered:.3}, 1% {one_percent:.3}, 10% {ten_percent:.3}, \
         30% {thirty_percent:.3}, 10% unindexed {ten_unindexed:.3}, \
         1% unindexed {one_unindexed:.3}, 50% {half:.3}, \
         two fields 15% {two_fields:.3}, two fields 5% {two_fields_narrow:.3}"
    );
    assert!(half >= 0.95, "50% filtered recall {half}");
    assert!(two_fields >= 0.95, "two-field 15% recall {two_fields}");
    assert!(
        two_fields_narrow >= 0.95,
        "two-field 5% recall {two_fields_narrow}"
    );
    assert!(unfiltered >= 0.95, "unfiltered recall {unfiltered}");
    assert!(one_percent >= 0.95, "1% filtered recall {one_percent}");
    assert!(ten_percent >= 0.95, "10% filtered recall {ten_percent}");
    assert!(
        thirty_percent >= 0.95,
        "30% filtered recall {thirty_percent}"
    );
    assert!(
        ten_unindexed >= 0.95,
        "10% unindexed recall {ten_unindexed}"
    );
    assert!(one_unindexed >= 0.95, "1% unindexed recall {one_unindexed}");
    server.stop().await;
}

/// A quantized collection (fp16, int8) keeps recall@10 ≥ 0.95 with its default rescoring,
/// unfiltered and under a 10% filter, says how it stores vectors, and returns them exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quantized_collections_keep_recall_with_rescoring() {
    const N: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    // a 10% filter (1,000 matches) walks the graph
    config.search.exact_search_threshold = 500;
    let server = TestServer::must_start(config).await;
    let mut collections = server.must_collections().await;
    let mut points = server.must_points().await;
    let data = clustered(N + QUERIES, DIM, 40, 21);
    let (base, queries) = data.split_at(N);
    for (quantization, bytes_per_vector) in [
        (pb::Quantization::Fp16, DIM * 2),
        (pb::Quantization::Int8, DIM + 4),
    ] {
        let mut req = create_request("v", DIM as u32, pb::Metric::L2);
        req.quantization = quantization as i32;
        collections.create(req).await.unwrap();
        let pts: Vec<pb::Point> = base
            .iter()
            .enumerate()
            .map(|(i, v)| point(i as u64, v.clone(), json!({"bucket": i % 10})))
            .collect();
        must_upsert_all(&mut points, "v", pts, 1_000).await;
        server.settle("v").await;
        let info = collections
            .get(pb::GetCollectionRequest { name: "v".into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(info.quantization, quantization as i32);
        let sealed: Vec<&pb::SegmentInfo> = info.shards[0]
            .segments
            .iter()
            .filter(|s| s.state == "sealed")
            .collect();
        assert!(!sealed.is_empty(), "{info:?}");
        assert!(sealed
            .iter()
            .all(|s| s.bytes_per_vector as usize == bytes_per_vector));

        let unfiltered = recall_at_10(&mut points, queries, "", "hnsw").await;
        let filtered =
            recall_at_10(&mut points, queries, r#"{"bucket": 3}"#, "hnsw-filtered").await;
        eprintln!("{quantization:?} recall@10: unfiltered {unfiltered:.3}, 10% {filtered:.3}");
        assert!(
            unfiltered >= 0.95,
            "{quantization:?} unfiltered recall {unfiltered}"
        );
        assert!(
            filtered >= 0.95,
            "{quantization:?} 10% filtered recall {filtered}"
        );

        let mut search = search_request("v", base[17].clone(), 1);
        search.with_vector = true;
        let hit = points.search(search).await.unwrap().into_inner();
        assert_eq!(hit.results[0].vector, base[17], "{quantization:?}");
        assert_eq!(hit.results[0].score, 0.0);
        collections
            .delete(pb::DeleteCollectionRequest { name: "v".into() })
            .await
            .unwrap();
    }
    server.stop().await;
}
