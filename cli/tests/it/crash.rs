//! kill -9 in the middle of an import, and during a segment build: after a restart every
//! acknowledged batch is there and searchable, the batch in flight is either wholly there or
//! wholly absent, and no half-built segment is used.

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

/// `quiver serve` from a file in `dir`: sealing every `seal_points` points on one build thread.
fn must_serve(dir: &std::path::Path, seal_points: usize) -> QuiverProcess {
    let config = dir.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\ndata_dir = {:?}\nlisten = \"127.0.0.1:0\"\nrest_listen = \"127.0.0.1:0\"\n\n\
             [storage]\nsync_writes = false\nsegment_seal_points = {seal_points}\n\
             index_build_threads = 1\n",
            dir.join("data")
        ),
    )
    .unwrap();
    must_spawn(&["serve", "--config", config.to_str().unwrap()], &[])
}

/// Files under `dir`, recursively.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_a_segment_build_uses_no_half_built_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = must_serve(dir.path(), 2_000);
    CollectionsClient::connect(node.endpoint.clone())
        .await
        .unwrap()
        .create(pb::CreateCollectionRequest {
            name: "crash".into(),
            dim: DIM as u32,
            metric: pb::Metric::L2 as i32,
            index: Some(pb::IndexConfig {
                kind: Some(pb::index_config::Kind::Hnsw(pb::HnswConfig {
                    m: Some(16),
                    ef_construction: Some(400),
                })),
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut points = PointsClient::connect(node.endpoint.clone()).await.unwrap();
    let batches = 60; // 12,000 points
    for b in 0..batches {
        points
            .upsert(pb::UpsertRequest {
                collection: "crash".into(),
                points: batch(b),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    // killed while the optimizer builds a segment
    let segments = |node: &QuiverProcess| -> Vec<String> {
        let info: serde_json::Value =
            serde_json::from_str(&node.must_cli(&["collection", "info", "crash"])).unwrap();
        info["shards"][0]["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["state"].as_str().unwrap().to_string())
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !segments(&node).iter().any(|s| s == "building") {
        assert!(std::time::Instant::now() < deadline, "no build seen");
    }
    node.kill9();

    let node = must_serve(dir.path(), 2_000);
    // the half-written file is gone, every acknowledged point is there and found
    let leftovers: Vec<_> = files(&dir.path().join("data"))
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "tmp"))
        .filter(|f| f.to_string_lossy().contains("graphs"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let mut points = PointsClient::connect(node.endpoint.clone()).await.unwrap();
    for b in 0..batches {
        assert_eq!(present(&mut points, b).await, BATCH as usize, "batch {b}");
    }
    let find = |id: u64, exact: bool| {
        let mut points = points.clone();
        async move {
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
            (hits.results[0].id.clone(), hits.plan)
        }
    };
    let id_of = |n: u64| {
        Some(pb::PointId {
            kind: Some(pb::point_id::Kind::Num(n)),
        })
    };
    for id in [7, 4_321, 11_999] {
        assert_eq!(find(id, true).await.0, id_of(id));
        assert_eq!(find(id, false).await.0, id_of(id));
    }
    // and the optimizer indexes what the dead build did not install
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let states = segments(&node);
        if !states.iter().any(|s| s == "building") && states.iter().any(|s| s == "sealed") {
            let info: serde_json::Value =
                serde_json::from_str(&node.must_cli(&["collection", "info", "crash"])).unwrap();
            if info["pending_vectors"].as_u64().unwrap() < 2_000 {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not indexed: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (top, plan) = find(4_321, false).await;
    assert_eq!((top, plan.as_str()), (id_of(4_321), "hnsw"));
}
