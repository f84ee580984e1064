//! Collection snapshots as a user takes them: created while a writer keeps writing (the file is
//! one point in time across the shards), listed, downloaded, restored into another server with
//! another shard count, deleted; and a cut-short file or a bad name refused.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use quiver_proto::v1 as pb;
use quiver_proto::v1::points_client::PointsClient;
use serde_json::Value;

use crate::support::*;

/// Points per batch the writer sends; ids of batch b are b*BATCH.., spread over every shard.
const BATCH: u64 = 30;

fn batch(b: u64) -> Vec<pb::Point> {
    (b * BATCH..(b + 1) * BATCH)
        .map(|id| pb::Point {
            id: Some(pb::PointId {
                kind: Some(pb::point_id::Kind::Num(id)),
            }),
            vector: vec![id as f32, 0.5, -(id as f32), 1.0 / (id as f32 + 1.0)],
            payload: Some(quiver_proto::wire::json_to_struct(
                serde_json::json!({"batch": b, "tag": format!("t{}", id % 5)})
                    .as_object()
                    .unwrap(),
            )),
        })
        .collect()
}

/// Lines of a snapshot file as JSON values: header, points, end line.
fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_taken_under_writes_is_one_point_in_time_and_restores_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let server = must_spawn_dev(&dir.path().join("a"));
    server.must_cli(&[
        "collection",
        "create",
        "c",
        "--dim",
        "4",
        "--metric",
        "l2",
        "--shards",
        "3",
        "--payload-index",
        "tag:keyword",
    ]);
    let mut client = PointsClient::connect(server.endpoint.clone())
        .await
        .unwrap();
    // points from before, enough that reading the shards takes a while
    for chunk in 0..20u64 {
        let points = (0..1000u64)
            .map(|i| pb::Point {
                id: Some(pb::PointId {
                    kind: Some(pb::point_id::Kind::Num(1_000_000 + chunk * 1000 + i)),
                }),
                vector: vec![i as f32, chunk as f32, 0.0, 1.0],
                payload: None,
            })
            .collect();
        let request = pb::UpsertRequest {
            collection: "c".into(),
            points,
            ..Default::default()
        };
        client.upsert(request).await.unwrap();
    }

    // a writer keeps writing batches, one after the other, each over all three shards
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, mut client) = (stop.clone(), client.clone());
        tokio::spawn(async move {
            let mut b = 0;
            while !stop.load(Ordering::SeqCst) {
                let request = pb::UpsertRequest {
                    collection: "c".into(),
                    points: batch(b),
                    ..Default::default()
                };
                client.upsert(request).await.unwrap();
                b += 1;
            }
            b
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let created: Value =
        serde_json::from_str(&server.must_cli(&["collection", "snapshot", "create", "c"])).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let written = writer.await.unwrap();
    let name = created["name"].as_str().unwrap().to_string();

    // listed with its count; downloaded whole
    let listed: Value = serde_json::from_str(
        server
            .must_cli(&["collection", "snapshot", "list", "c"])
            .trim(),
    )
    .unwrap();
    assert_eq!(listed, created);
    let file = dir.path().join("c.snapshot");
    server.must_cli(&[
        "collection",
        "snapshot",
        "download",
        "c",
        &name,
        "--out",
        file.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        created["size_bytes"].as_u64().unwrap()
    );

    // one point in time across the shards: the batches in it are whole and consecutive
    let lines = lines(&file);
    let points = &lines[1..lines.len() - 1];
    assert_eq!(points.len() as u64, created["points"].as_u64().unwrap());
    let mut per_batch: BTreeMap<u64, u64> = BTreeMap::new();
    for b in points.iter().filter_map(|p| p["payload"]["batch"].as_u64()) {
        *per_batch.entry(b).or_default() += 1;
    }
    let last = *per_batch.keys().last().unwrap();
    assert!(
        last > 0 && last < written,
        "the snapshot was taken while writing: {last}"
    );
    for b in 0..last {
        assert_eq!(
            per_batch.get(&b),
            Some(&BATCH),
            "batch {b} is not whole, though batch {last} is in the snapshot"
        );
    }

    // restored into another server, with two shards: the same points
    let other = must_spawn_dev(&dir.path().join("b"));
    other.must_cli(&[
        "collection",
        "snapshot",
        "restore",
        file.to_str().unwrap(),
        "--name",
        "copy",
        "--shards",
        "2",
    ]);
    let info: Value =
        serde_json::from_str(&other.must_cli(&["collection", "info", "copy"])).unwrap();
    assert_eq!(info["points"], created["points"]);
    assert_eq!(info["shard_count"], 2);
    assert_eq!(info["payload_indexes"][0]["key"], "tag");
    let ids: Vec<String> = [0, points.len() / 2, points.len() - 1]
        .iter()
        .map(|i| points[*i]["id"].to_string())
        .collect();
    for id in &ids {
        let at =
            |p: &QuiverProcess, c: &str| p.must_cli(&["points", "get", c, id, "--with-vector"]);
        assert_eq!(at(&server, "c"), at(&other, "copy"), "point {id}");
    }
    // restoring over an existing collection changes nothing
    let (ok, _, err) = other.cli(&[
        "collection",
        "snapshot",
        "restore",
        file.to_str().unwrap(),
        "--name",
        "copy",
    ]);
    assert!(!ok && err.contains("exists already"), "{err}");
    // ... unless asked to (finishing a restore that stopped part way rewrites the same points)
    let file_arg = file.to_str().unwrap();
    other.must_cli(&[
        "collection",
        "snapshot",
        "restore",
        file_arg,
        "--name",
        "copy",
        "--into-existing",
    ]);
    let again: Value =
        serde_json::from_str(&other.must_cli(&["collection", "info", "copy"])).unwrap();
    assert_eq!(again["points"], created["points"]);

    // a file cut short is refused whole
    let cut = dir.path().join("cut.snapshot");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&cut, &text[..text.len() / 2]).unwrap();
    let (ok, _, err) = other.cli(&[
        "collection",
        "snapshot",
        "restore",
        cut.to_str().unwrap(),
        "--name",
        "cut",
    ]);
    assert!(!ok && err.contains("incomplete"), "{err}");
    let (ok, _, _) = other.cli(&["collection", "info", "cut"]);
    assert!(!ok, "nothing was created");

    // every collection at once, restored into another server in one call
    server.must_cli(&["collection", "create", "d", "--dim", "2", "--metric", "dot"]);
    let made: Vec<Value> = server
        .must_cli(&["collection", "snapshot", "create", "--all"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut collections: Vec<&str> = made
        .iter()
        .map(|m| m["collection"].as_str().unwrap())
        .collect();
    collections.sort();
    assert_eq!(collections, ["c", "d"]);
    let mut files = Vec::new();
    for m in &made {
        let (collection, name) = (
            m["collection"].as_str().unwrap(),
            m["name"].as_str().unwrap(),
        );
        let out = dir.path().join(name).to_str().unwrap().to_string();
        server.must_cli(&[
            "collection",
            "snapshot",
            "download",
            collection,
            name,
            "--out",
            &out,
        ]);
        files.push(out);
    }
    let third = must_spawn_dev(&dir.path().join("third"));
    let mut restore = vec!["collection", "snapshot", "restore"];
    restore.extend(files.iter().map(String::as_str));
    third.must_cli(&restore);
    for m in &made {
        let collection = m["collection"].as_str().unwrap();
        let info: Value =
            serde_json::from_str(&third.must_cli(&["collection", "info", collection])).unwrap();
        assert_eq!(info["points"], m["points"], "{collection}");
    }

    // names are checked, and a deleted snapshot is gone
    let (ok, _, err) = server.cli(&["collection", "snapshot", "delete", "c", "../c"]);
    assert!(
        !ok && err.contains("InvalidArgument") && err.contains("name"),
        "{err}"
    );
    let (ok, _, err) = server.cli(&["collection", "snapshot", "download", "c", "x.snapshot"]);
    assert!(!ok && err.contains("NotFound"), "{err}");
    let (ok, _, err) = server.cli(&["collection", "snapshot", "create", "nope"]);
    assert!(!ok && err.contains("NotFound"), "{err}");
    server.must_cli(&["collection", "snapshot", "delete", "c", &name]);
    let left = server.must_cli(&["collection", "snapshot", "list", "c"]);
    assert!(!left.contains(&name) && left.lines().count() == 1, "{left}");
}
