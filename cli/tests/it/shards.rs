//! Sharded collections on a three-node cluster of real processes: replicas placed on distinct
//! nodes and spread evenly, writes through any node, searches and scrolls merged across shards,
//! idempotent retries, moving a replica, and removing a node (its replicas move first).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use quiver_proto::v1 as pb;
use quiver_proto::v1::collections_client::CollectionsClient;
use quiver_proto::v1::points_client::PointsClient;
use serde_json::{json, Value};
use tonic::Code;

use crate::cluster::must_form_cluster;
use crate::support::{eventually, replica_nodes};

const DIM: usize = 8;
const POINTS: u64 = 600;

fn vector(id: u64) -> Vec<f32> {
    // A small deterministic spread (xorshift), distinct per id.
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..DIM)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 1000) as f32 / 100.0
        })
        .collect()
}

fn id(n: u64) -> pb::PointId {
    pb::PointId {
        kind: Some(pb::point_id::Kind::Num(n)),
    }
}

fn num(id: Option<&pb::PointId>) -> u64 {
    match id.and_then(|i| i.kind.as_ref()) {
        Some(pb::point_id::Kind::Num(n)) => *n,
        other => panic!("unexpected id {other:?}"),
    }
}

fn point(n: u64, tag: &str) -> pb::Point {
    let payload = json!({"tag": tag});
    pb::Point {
        id: Some(id(n)),
        vector: vector(n),
        payload: Some(quiver_core::convert::json_to_struct(
            payload.as_object().unwrap(),
        )),
    }
}

async fn points(endpoint: &str) -> PointsClient<tonic::transport::Channel> {
    PointsClient::connect(endpoint.to_string()).await.unwrap()
}

fn info(node: &crate::support::QuiverProcess) -> Value {
    serde_json::from_str(&node.must_cli(&["collection", "info", "s"])).unwrap()
}

/// `collection info` polled until it counts every point: counts come from the nearest replica
/// of each shard, which may not have applied the last write yet.
async fn info_with_every_point(node: &crate::support::QuiverProcess) -> Value {
    eventually(Duration::from_secs(20), "points missing", || async move {
        let info = info(node);
        match info["points"] == POINTS {
            true => Ok(info),
            false => Err(info.to_string()),
        }
    })
    .await
}

/// Every point, read back through `endpoint` with a linearizable read. Right after a replica
/// moved, a shard may be electing a leader: UNAVAILABLE is retried for a while.
async fn must_read_all(endpoint: &str) -> BTreeMap<u64, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let got = loop {
        let answer = points(endpoint)
            .await
            .get(pb::GetPointsRequest {
                collection: "s".into(),
                ids: (0..POINTS).map(id).collect(),
                with_payload: true,
                consistency: pb::ReadConsistency::Linearizable as i32,
                ..Default::default()
            })
            .await;
        match answer {
            Ok(answer) => break answer.into_inner(),
            Err(e) if e.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("read failed: {e:?}"),
        }
    };
    got.points
        .iter()
        .map(|p| {
            let tag = p.payload.as_ref().unwrap().fields["tag"].clone();
            let tag = match tag.kind {
                Some(prost_types::value::Kind::StringValue(s)) => s,
                other => panic!("tag {other:?}"),
            };
            (num(p.id.as_ref()), tag)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_collection_spreads_merges_and_moves() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, _) = must_form_cluster(dir.path());

    // Created through a node that does not lead the meta group: it forwards to the leader.
    let created: Value = serde_json::from_str(&nodes[1].must_cli(&[
        "collection",
        "create",
        "s",
        "--dim",
        "8",
        "--metric",
        "l2",
        "--shards",
        "3",
        "--replication-factor",
        "2",
    ]))
    .unwrap();
    assert_eq!(created["shard_count"], 3);
    assert_eq!(created["replication_factor"], 2);
    let mut per_node: BTreeMap<u64, usize> = BTreeMap::new();
    for shard in created["shards"].as_array().unwrap() {
        let replicas = replica_nodes(shard);
        assert_eq!(replicas.len(), 2, "{shard}");
        assert_ne!(replicas[0], replicas[1], "replicas on distinct nodes");
        assert!(
            replicas.contains(&shard["leader"].as_u64().unwrap()),
            "{shard}"
        );
        for n in replicas {
            *per_node.entry(n).or_default() += 1;
        }
    }
    assert_eq!(per_node.values().copied().collect::<Vec<_>>(), [2, 2, 2]);

    // Writes through any node, in batches.
    for (b, chunk) in (0..POINTS).collect::<Vec<_>>().chunks(100).enumerate() {
        let endpoint = &nodes[b % 3].endpoint;
        points(endpoint)
            .await
            .upsert(pb::UpsertRequest {
                collection: "s".into(),
                points: chunk.iter().map(|n| point(*n, "a")).collect(),
                request_id: format!("load-{b}"),
                wait_indexed: false,
            })
            .await
            .unwrap();
    }
    let info0 = info_with_every_point(&nodes[0]).await;
    for shard in info0["shards"].as_array().unwrap() {
        let n = shard["points"].as_u64().unwrap();
        assert!((120..=280).contains(&n), "uneven shards: {info0}");
    }

    // A bad point anywhere in a batch rejects the whole batch on every shard.
    let mut bad: Vec<pb::Point> = (POINTS..POINTS + 30).map(|n| point(n, "x")).collect();
    bad[17].vector.pop();
    let refused = points(&nodes[2].endpoint)
        .await
        .upsert(pb::UpsertRequest {
            collection: "s".into(),
            points: bad,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("points[17].vector"),
        "{refused:?}"
    );
    info_with_every_point(&nodes[0]).await;

    // An exact search merged over the shards is the exact top-k over every point.
    let query = vector(10_000);
    let mut expected: Vec<(f32, u64)> = (0..POINTS)
        .map(|n| {
            let d: f32 = vector(n)
                .iter()
                .zip(&query)
                .map(|(a, b)| (a - b) * (a - b))
                .sum();
            (d, n)
        })
        .collect();
    expected.sort_by(|a, b| a.0.total_cmp(&b.0));
    let found = points(&nodes[0].endpoint)
        .await
        .search(pb::SearchRequest {
            collection: "s".into(),
            vector: query,
            top_k: Some(10),
            exact: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let found: Vec<u64> = found.results.iter().map(|r| num(r.id.as_ref())).collect();
    let want: Vec<u64> = expected.iter().take(10).map(|e| e.1).collect();
    assert_eq!(found, want);

    // A scroll pages through every shard in id order.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = points(&nodes[1].endpoint)
            .await
            .scroll(pb::ScrollRequest {
                collection: "s".into(),
                limit: Some(70),
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.points.iter().map(|p| num(p.id.as_ref())));
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    assert_eq!(seen, (0..POINTS).collect::<Vec<_>>());

    // A batch retried with its idempotency key is applied once: the retry (here with other
    // content, which a real retry would not have) changes nothing.
    let retag = |tag: &'static str| pb::UpsertRequest {
        collection: "s".into(),
        points: (0..40).map(|n| point(n, tag)).collect(),
        request_id: "retag-1".into(),
        wait_indexed: false,
    };
    let mut client = points(&nodes[2].endpoint).await;
    client.upsert(retag("b")).await.unwrap();
    client.upsert(retag("c")).await.unwrap();
    let all = must_read_all(&nodes[0].endpoint).await;
    assert_eq!(all.len(), POINTS as usize);
    assert!(
        (0..40).all(|n| all[&n] == "b"),
        "the retry was applied again"
    );

    // A create retried with its idempotency key returns the first outcome; without one, a
    // second create of the same name is ALREADY_EXISTS.
    let create = |request_id: &str| pb::CreateCollectionRequest {
        name: "t".into(),
        dim: 4,
        metric: pb::Metric::Dot as i32,
        request_id: request_id.into(),
        ..Default::default()
    };
    let mut collections = CollectionsClient::connect(nodes[0].endpoint.clone())
        .await
        .unwrap();
    collections.create(create("make-t")).await.unwrap();
    collections.create(create("make-t")).await.unwrap();
    let again = collections.create(create("")).await.unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);

    // Move one replica of shard 0 to the node without one: the new replica catches up, the old
    // one is dropped, and nothing is lost.
    let shard0 = &info(&nodes[0])["shards"][0];
    let group = shard0["group"].as_u64().unwrap();
    let holders = replica_nodes(shard0);
    let from = holders[0];
    let to = (1..=3).find(|n| !holders.contains(n)).unwrap();
    let moved: Value = serde_json::from_str(&nodes[2].must_cli(&[
        "shard",
        "move",
        &group.to_string(),
        "--from",
        &from.to_string(),
        "--to",
        &to.to_string(),
    ]))
    .unwrap();
    let mut replicas: Vec<u64> = moved["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_u64().unwrap())
        .collect();
    replicas.sort();
    let mut expected_replicas = vec![holders[1], to];
    expected_replicas.sort();
    assert_eq!(replicas, expected_replicas);
    // Running the move again (its answer lost, say) answers the same and changes nothing.
    let again: Value = serde_json::from_str(&nodes[0].must_cli(&[
        "shard",
        "move",
        &group.to_string(),
        "--from",
        &from.to_string(),
        "--to",
        &to.to_string(),
    ]))
    .unwrap();
    assert_eq!(again["replicas"], moved["replicas"]);
    let old_copy = dir.path().join(format!("data{from}/shards/{group}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while old_copy.exists() {
        assert!(
            Instant::now() < deadline,
            "{} was not removed",
            old_copy.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(must_read_all(&nodes[0].endpoint).await, all);

    // Removing node 3 moves its replicas off first; the data stays whole.
    nodes[0].must_cli(&["cluster", "remove", "3"]);
    let after = info(&nodes[0]);
    for shard in after["shards"].as_array().unwrap() {
        let on = replica_nodes(shard);
        assert!(!on.contains(&3), "{after}");
        assert_eq!(on.len(), 2, "{after}");
    }
    assert_eq!(must_read_all(&nodes[1].endpoint).await, all);
    // (node 1's own view of the membership, which may trail the meta leader for a moment)
    let first = &nodes[0];
    eventually(Duration::from_secs(20), "members", || async move {
        let status: Value = serde_json::from_str(&first.must_cli(&["cluster", "status"])).unwrap();
        let members: Vec<u64> = status["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_u64().unwrap())
            .collect();
        match members == [1, 2] {
            true => Ok(()),
            false => Err(status.to_string()),
        }
    })
    .await;
}
