//! Restarts: everything acknowledged is there afterwards, with the sealed segments loaded from
//! their files, indexed again when the files are gone or damaged, and reconciled with the points
//! when the files are older than them.

use std::path::Path;

use quiver_proto::v1 as pb;
use quiver_server::testing::{test_config, TestServer};
use serde_json::json;

use crate::support::*;

async fn snapshot(server: &TestServer, queries: &[Vec<f32>]) -> (u64, Vec<Vec<u64>>) {
    let mut collections = server.must_collections().await;
    let mut points = server.must_points().await;
    let info = collections
        .get(pb::GetCollectionRequest { name: "p".into() })
        .await
        .unwrap()
        .into_inner();
    let mut results = Vec::new();
    for q in queries {
        let mut req = search_request("p", q.clone(), 10);
        req.exact = true;
        results.push(ids(&points.search(req).await.unwrap().into_inner()));
    }
    (info.points_count, results)
}

async fn approx_matches_exact(server: &TestServer, queries: &[Vec<f32>]) -> f64 {
    let mut points = server.must_points().await;
    let mut hit = 0;
    for q in queries {
        let mut req = search_request("p", q.clone(), 10);
        req.ef = Some(128);
        let resp = points.search(req.clone()).await.unwrap().into_inner();
        assert_eq!(resp.plan, "hnsw");
        let approx = ids(&resp);
        // deleted points (100..200) never come back out of the graph
        assert!(approx.iter().all(|i| !(100..200).contains(i)), "{approx:?}");
        req.exact = true;
        let exact = ids(&points.search(req).await.unwrap().into_inner());
        hit += approx.iter().filter(|i| exact.contains(i)).count();
    }
    hit as f64 / (queries.len() * 10) as f64
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_keep_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let data = clustered(4_000, 16, 20, 5);
    let queries: Vec<Vec<f32>> = clustered(20, 16, 20, 6);

    // session 1: writes, replacements and deletes; sealed segments are written as they are built
    let server = TestServer::must_start(config.clone()).await;
    server
        .must_collections()
        .await
        .create(create_request("p", 16, pb::Metric::L2))
        .await
        .unwrap();
    let mut points = server.must_points().await;
    let pts: Vec<pb::Point> = data[..3_000]
        .iter()
        .enumerate()
        .map(|(i, v)| point(i as u64, v.clone(), json!({"i": i})))
        .collect();
    must_upsert_all(&mut points, "p", pts, 500).await;
    // (indexed first, so the versions replaced and deleted below are retired in a sealed
    // segment, whatever order the optimizer would otherwise have taken them in)
    server.settle("p").await;
    let replaced: Vec<pb::Point> = (0..100)
        .map(|i| {
            point(
                i,
                data[3_000 + i as usize].clone(),
                json!({"replaced": true}),
            )
        })
        .collect();
    must_upsert_all(&mut points, "p", replaced, 100).await;
    points
        .delete(pb::DeletePointsRequest {
            collection: "p".into(),
            ids: (100..200).map(id).collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    server.settle("p").await;
    let before = snapshot(&server, &queries).await;
    assert_eq!(before.0, 2_900);
    let segments = |server: &TestServer| {
        let shard = server.node.shards()[0].clone();
        let c = shard.collection("p").unwrap();
        let states: Vec<(&str, u64, u64)> = c
            .segments()
            .iter()
            .map(|s| (s.state.as_str(), s.points, s.retired))
            .collect();
        states
    };
    let segments_before = segments(&server);
    let indexed: u64 = segments_before
        .iter()
        .filter(|s| s.0 == "sealed")
        .map(|s| s.1)
        .sum();
    assert!(indexed >= 2_400, "{segments_before:?}");
    let retired: u64 = segments_before.iter().map(|s| s.2).sum();
    assert!(
        retired > 0,
        "replaced and deleted versions are retired: {segments_before:?}"
    );
    server.stop().await;
    // The collection's one shard keeps its segment files in its own directory.
    let shard_dirs: Vec<_> = std::fs::read_dir(dir.path().join("shards"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(shard_dirs.len(), 1, "one shard replica");
    let graphs = shard_dirs[0].path().join("derived").join("graphs");
    let files: Vec<_> = walk(&graphs)
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "qvseg"))
        .collect();
    assert!(!files.is_empty(), "segment files written");
    let stale_files = tempfile::tempdir().unwrap();
    copy_dir(&graphs, stale_files.path());

    // session 2: the segments are loaded from their files as they were (retired nodes and all:
    // a rebuild would have none); state is identical
    let server = TestServer::must_start(config.clone()).await;
    let info = server
        .must_collections()
        .await
        .get(pb::GetCollectionRequest { name: "p".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        segments(&server),
        segments_before,
        "segments loaded from their files"
    );
    assert_eq!(info.indexed_vectors, indexed, "live points only");
    assert_eq!(info.indexed_vectors + info.pending_vectors, 2_900);
    assert_eq!(snapshot(&server, &queries).await, before);
    assert!(approx_matches_exact(&server, &queries).await >= 0.95);
    let got = server
        .must_points()
        .await
        .get(pb::GetPointsRequest {
            collection: "p".into(),
            ids: vec![id(5), id(150)],
            with_payload: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.points.len(), 1, "deleted point stays deleted");
    assert!(got.points[0]
        .payload
        .as_ref()
        .unwrap()
        .fields
        .contains_key("replaced"));
    // more writes after the restart
    let mut points = server.must_points().await;
    let more: Vec<pb::Point> = data[3_100..4_000]
        .iter()
        .enumerate()
        .map(|(i, v)| point(10_000 + i as u64, v.clone(), json!({})))
        .collect();
    must_upsert_all(&mut points, "p", more, 300).await;
    let after_more = snapshot(&server, &queries).await;
    assert_eq!(after_more.0, 3_800);
    server.stop().await;

    // session 3: put back the segment files of session 1: the points written since are indexed
    // again, the versions retired since are retired
    std::fs::remove_dir_all(&graphs).unwrap();
    copy_dir(stale_files.path(), &graphs);
    let server = TestServer::must_start(config.clone()).await;
    assert_eq!(snapshot(&server, &queries).await, after_more);
    server.settle("p").await;
    assert!(approx_matches_exact(&server, &queries).await >= 0.95);
    server.stop().await;

    // session 4: damaged files, then none at all: the points are indexed again, and served
    // exactly meanwhile
    for entry in walk(&graphs) {
        if entry.extension().is_some_and(|e| e == "qvseg") {
            std::fs::write(&entry, b"corrupt").unwrap();
        }
    }
    let server = TestServer::must_start(config.clone()).await;
    assert_eq!(snapshot(&server, &queries).await, after_more);
    server.settle("p").await;
    assert!(approx_matches_exact(&server, &queries).await >= 0.95);
    server.stop().await;
    std::fs::remove_dir_all(&graphs).unwrap();
    let server = TestServer::must_start(config).await;
    assert_eq!(snapshot(&server, &queries).await, after_more);
    server.settle("p").await;
    assert!(approx_matches_exact(&server, &queries).await >= 0.95);
    server.stop().await;
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Bytes the files under `dir` occupy on disk (allocated blocks, as `du` counts them: RocksDB
/// preallocates its write-ahead log with `fallocate`, beyond the file's length).
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            disk_usage(&entry.path())
        } else {
            meta.blocks() * 512
        };
    }
    total
}

/// A node with many small replicas stays small: an empty collection's replica and the meta
/// replica take a few MB each, not RocksDB's default ~75 MB of preallocated log.
#[tokio::test]
async fn an_empty_collection_takes_little_disk() {
    let f = must_start().await;
    f.server
        .must_collections()
        .await
        .create(create_request("e", 4, pb::Metric::L2))
        .await
        .unwrap();
    let data = &f.server.data_dir;
    let meta = disk_usage(&data.join("meta"));
    let shards = disk_usage(&data.join("shards"));
    assert!(meta < 12 << 20, "the meta replica takes {meta} bytes");
    assert!(
        shards < 12 << 20,
        "an empty shard replica takes {shards} bytes"
    );
}
