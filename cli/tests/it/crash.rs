//! kill -9 in the middle of an import: after a restart every acknowledged batch is there and
//! searchable, and the batch in flight is either wholly there or wholly absent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use quiver_proto::v1 as pb;
use quiver_proto::v1::collections_client::CollectionsClient;
use quiver_proto::v1::points_client::PointsClient;

use crate::support::*;

const BATCH: u64 = 200;
const DIM: usize = 16;

/// A distinct vector per id (the first component is the id itself).
fn vector(id: u64) -> Vec<f32> {
    let mut v: Vec<f32> = (0..DIM as u64)
        .map(|d| ((id.wrapping_mul(2_654_435_761) ^ (d * 40_503)) % 1_000) as f32 / 1_000.0)
        .collect();
    v[0] = id as f32 / 1_000.0;
    v
}

fn batch(b: u64) -> Vec<pb::Point> {
    (b * BATCH..(b + 1) * BATCH)
        .map(|id| pb::Point {
            id: Some(pb::PointId {
                kind: Some(pb::point_id::Kind::Num(id)),
            }),
            vector: vector(id),
            payload: None,
        })
        .collect()
}

async fn present(points: &mut PointsClient<tonic::transport::Channel>, b: u64) -> usize {
    let ids = (b * BATCH..(b + 1) * BATCH)
        .map(|id| pb::PointId {
            kind: Some(pb::point_id::Kind::Num(id)),
        })
        .collect();
    points
        .get(pb::GetPointsRequest {
            collection: "crash".into(),
            ids,
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner()
        .points
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_import_keeps_every_acknowledged_batch() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut node = must_spawn_dev(&data);
    CollectionsClient::connect(node.endpoint.clone())
        .await
        .unwrap()
        .create(pb::CreateCollectionRequest {
            name: "crash".into(),
            dim: DIM as u32,
            metric: pb::Metric::L2 as i32,
            ..Default::default()
        })
        .await
        .unwrap();

    // two writers import disjoint batches until the node dies under them
    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let mut writers = Vec::new();
    for w in 0..2u64 {
        let endpoint = node.endpoint.clone();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            let mut client = PointsClient::connect(endpoint).await.unwrap();
            for b in (w..10_000).step_by(2) {
                let res = client
                    .upsert(pb::UpsertRequest {
                        collection: "crash".into(),
                        points: batch(b),
                        ..Default::default()
                    })
                    .await;
                match res {
                    Ok(_) => acked.lock().unwrap().push(b),
                    Err(_) => return b,
                }
            }
            u64::MAX
        }));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "writers stalled before the kill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.kill9();
    let mut in_flight = Vec::new();
    for w in writers {
        in_flight.push(w.await.unwrap());
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 20);

    let node = must_spawn_dev(&data);
    let mut points = PointsClient::connect(node.endpoint.clone()).await.unwrap();
    for b in &acked {
        assert_eq!(
            present(&mut points, *b).await,
            BATCH as usize,
            "acked batch {b} lost"
        );
    }
    for b in in_flight {
        if b != u64::MAX {
            let n = present(&mut points, b).await;
            assert!(n == 0 || n == BATCH as usize, "batch {b} half applied: {n}");
        }
    }
    // acknowledged points are searchable, through the graph and exactly
    for b in acked.iter().take(5) {
        let id = b * BATCH + 7;
        for exact in [false, true] {
            let hits = points
                .search(pb::SearchRequest {
                    collection: "crash".into(),
                    vector: vector(id),
                    top_k: Some(1),
                    exact,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let top = match hits.results[0].id.as_ref().and_then(|i| i.kind.as_ref()) {
                Some(pb::point_id::Kind::Num(n)) => *n,
                other => panic!("{other:?}"),
            };
            assert_eq!(top, id, "exact={exact}");
            assert_eq!(hits.results[0].score, 0.0);
        }
    }
}
