//! A three-node cluster of real processes: form it from the CLI, replicate writes, lose the
//! leader to kill -9, elect a new one, keep every acknowledged write, let the old leader catch up
//! when it returns, rebuild a wiped node from a snapshot, and refuse writes without a quorum.

use std::path::Path;
use std::time::{Duration, Instant};

use quiver_node::testing::stable_loopback_address;
use quiver_proto::v1 as pb;
use quiver_proto::v1::collections_client::CollectionsClient;
use quiver_proto::v1::points_client::PointsClient;
use quiver_proto::v1::shard_client::ShardClient;
use serde_json::Value;
use tonic::Code;

use crate::support::*;

const DIM: usize = 8;
const BATCH: u64 = 50;

/// Starts member `id` listening on `listen`. Snapshots are taken every few entries and the log
/// behind them is dropped, so a replica that falls behind must be sent a snapshot; graphs are
/// dumped every second, so snapshots carry them.
pub fn start_member(dir: &Path, id: u64, listen: &str) -> QuiverProcess {
    start_member_with(dir, id, listen, &[])
}

/// [`start_member`] with environment overrides of its configuration.
fn start_member_with(dir: &Path, id: u64, listen: &str, envs: &[(&str, &str)]) -> QuiverProcess {
    let config = dir.join(format!("node{id}.toml"));
    std::fs::write(
        &config,
        format!(
            "[node]\ndata_dir = {:?}\nlisten = {listen:?}\n\n[cluster]\nnode_id = {id}\nbootstrap = false\n\
             write_timeout_ms = 2000\nsnapshot_every_entries = 4\nlog_entries_kept = 0\n\n\
             [storage]\nsegment_seal_points = 1\n",
            dir.join(format!("data{id}"))
        ),
    )
    .unwrap();
    must_spawn(&["serve", "--config", config.to_str().unwrap()], envs)
}

/// Three members formed into a cluster from the CLI, node 1 leading.
pub fn must_form_cluster(dir: &Path) -> (Vec<QuiverProcess>, Vec<String>) {
    must_form_cluster_with(dir, &[])
}

/// [`must_form_cluster`] with environment overrides of every member's configuration.
fn must_form_cluster_with(dir: &Path, envs: &[(&str, &str)]) -> (Vec<QuiverProcess>, Vec<String>) {
    let nodes: Vec<QuiverProcess> = (1..=3)
        .map(|id| start_member_with(dir, id, &stable_loopback_address(), envs))
        .collect();
    let addresses: Vec<String> = nodes.iter().map(address).collect();
    nodes[0].must_cli(&["cluster", "init"]);
    nodes[0].must_cli(&["cluster", "join", &addresses[1]]);
    nodes[0].must_cli(&["cluster", "join", &addresses[2]]);
    (nodes, addresses)
}

/// Creates collection `c` (DIM-d, l2) through `endpoint`.
async fn must_create_collection(endpoint: &str) {
    CollectionsClient::connect(endpoint.to_string())
        .await
        .unwrap()
        .create(pb::CreateCollectionRequest {
            name: "c".into(),
            dim: DIM as u32,
            metric: pb::Metric::L2 as i32,
            ..Default::default()
        })
        .await
        .unwrap();
}

pub fn address(p: &QuiverProcess) -> String {
    p.endpoint.trim_start_matches("http://").to_string()
}

fn batch(b: u64) -> Vec<pb::Point> {
    (b * BATCH..(b + 1) * BATCH)
        .map(|id| pb::Point {
            id: Some(pb::PointId {
                kind: Some(pb::point_id::Kind::Num(id)),
            }),
            vector: (0..DIM).map(|d| (id * 7 + d as u64) as f32).collect(),
            payload: None,
        })
        .collect()
}

async fn upsert(endpoint: &str, b: u64) -> Result<(), tonic::Status> {
    let mut client = PointsClient::connect(endpoint.to_string())
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    client
        .upsert(pb::UpsertRequest {
            collection: "c".into(),
            points: batch(b),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

async fn count_present(
    endpoint: &str,
    batches: &[u64],
    consistency: pb::ReadConsistency,
) -> Result<usize, tonic::Status> {
    let mut client = PointsClient::connect(endpoint.to_string())
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let ids = batches
        .iter()
        .flat_map(|b| b * BATCH..(b + 1) * BATCH)
        .map(|id| pb::PointId {
            kind: Some(pb::point_id::Kind::Num(id)),
        })
        .collect();
    let resp = client
        .get(pb::GetPointsRequest {
            collection: "c".into(),
            ids,
            consistency: consistency as i32,
            ..Default::default()
        })
        .await?;
    Ok(resp.into_inner().points.len())
}

/// Polls until `endpoint` has applied every point of `batches` (reading its own replica).
async fn must_catch_up(endpoint: &str, batches: &[u64]) {
    let want = batches.len() * BATCH as usize;
    let what = format!("{endpoint} did not catch up");
    eventually(Duration::from_secs(20), &what, || async move {
        match count_present(endpoint, batches, pb::ReadConsistency::Any).await {
            Ok(n) if n == want => Ok(()),
            Ok(n) => Err(format!("{n} of {want} points")),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_fail_over_and_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes: Vec<QuiverProcess> = (1..=3)
        .map(|id| start_member(dir.path(), id, &stable_loopback_address()))
        .collect();
    let addresses: Vec<String> = nodes.iter().map(address).collect();

    // form the cluster from the CLI
    nodes[0].must_cli(&["cluster", "init"]);
    nodes[0].must_cli(&["cluster", "join", &addresses[1]]);
    // joining through a follower works too: the CLI follows the leader hint
    nodes[1].must_cli(&["cluster", "join", &addresses[2]]);
    // a node that already formed a cluster of its own cannot be merged in
    let loner_config = dir.path().join("loner.toml");
    std::fs::write(
        &loner_config,
        format!(
            "[node]\ndata_dir = {:?}\nlisten = \"127.0.0.1:0\"\n[cluster]\nnode_id = 9\n",
            dir.path().join("loner")
        ),
    )
    .unwrap();
    let loner = must_spawn(&["serve", "--config", loner_config.to_str().unwrap()], &[]);
    let (ok, _, err) = nodes[0].cli(&["cluster", "join", &address(&loner)]);
    assert!(!ok && err.contains("already belongs to a cluster"), "{err}");
    drop(loner);
    let status: Value = serde_json::from_str(&nodes[0].must_cli(&["cluster", "status"])).unwrap();
    let group = &status["groups"][0];
    assert_ne!(group["leader"], 0, "{status}");
    assert_eq!(group["replicas"].as_array().unwrap().len(), 3, "{status}");

    // writes on the leader replicate to every member
    must_create_collection(&nodes[0].endpoint).await;
    let mut acked = Vec::new();
    for b in 0..5 {
        upsert(&nodes[0].endpoint, b).await.unwrap();
        acked.push(b);
    }
    for n in &nodes {
        must_catch_up(&n.endpoint, &acked).await;
    }

    // every node coordinates: a write sent to a follower reaches the shard's leader
    upsert(&nodes[1].endpoint, 99).await.unwrap();
    acked.push(99);

    // a request for a shard, sent to a replica that does not lead it, is refused with the
    // leader's address (what coordinators follow). (On a loaded machine an election may move
    // the leadership between reading it and asking; then the refusal names the new leader, and
    // the check is made again.)
    let ids: Vec<quiver_core::point::PointId> =
        (0..BATCH).map(quiver_core::point::PointId::Num).collect();
    let mut attempts = 0;
    let leader = loop {
        attempts += 1;
        let info: Value =
            serde_json::from_str(&nodes[0].must_cli(&["collection", "info", "c"])).unwrap();
        let shard = &info["shards"][0];
        let leader = shard["leader"].as_u64().unwrap();
        assert!(leader != 0, "{info}");
        let follower = (1..=3).find(|n| *n != leader).unwrap() as usize;
        let get = pb::ShardGetRequest {
            read: Some(pb::ShardRead {
                group: shard["group"].as_u64().unwrap(),
                collection: "c".into(),
                consistency: pb::ReadConsistency::Linearizable as i32,
            }),
            ids: quiver_core::encoding::encode(&ids).unwrap(),
            ..Default::default()
        };
        let refused = ShardClient::connect(nodes[follower - 1].endpoint.clone())
            .await
            .unwrap()
            .get(get)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unavailable);
        if !refused.message().contains(&format!("node {leader}")) && attempts < 5 {
            continue;
        }
        assert!(
            refused.message().contains(&format!("node {leader}")),
            "{}",
            refused.message()
        );
        let hint = refused.metadata().get("quiver-leader-address").unwrap();
        assert_eq!(hint.to_str().unwrap(), addresses[leader as usize - 1]);
        break leader;
    };

    // kill -9 the shard's leader: the others elect a new one and keep taking writes
    let killed = leader as usize - 1;
    let survivors: Vec<usize> = (0..3).filter(|i| *i != killed).collect();
    nodes[killed].kill9();
    let killed_at = Instant::now();
    let mut next = 5;
    // (any node coordinates: a write through either survivor reaches the new leader)
    'written: loop {
        for &i in &survivors {
            if upsert(&nodes[i].endpoint, next).await.is_ok() {
                acked.push(next);
                next += 1;
                break 'written;
            }
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(20),
            "no new leader"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "failover: first write accepted {:?} after kill -9 of the leader",
        killed_at.elapsed()
    );
    let new_leader = must_find_shard_leader(&nodes[survivors[0]], &survivors).await;
    for _ in 0..3 {
        upsert(&nodes[new_leader].endpoint, next).await.unwrap();
        acked.push(next);
        next += 1;
    }
    let all = count_present(
        &nodes[new_leader].endpoint,
        &acked,
        pb::ReadConsistency::Linearizable,
    )
    .await
    .unwrap();
    assert_eq!(
        all,
        acked.len() * BATCH as usize,
        "acknowledged writes lost"
    );

    // the old leader comes back (on its address in the membership) and catches up
    nodes[killed] = start_member(dir.path(), killed as u64 + 1, &addresses[killed]);
    must_catch_up(&nodes[killed].endpoint, &acked).await;
    // every group has a leader, and the shard that failed over is led by the survivor elected in
    // a later term (a group that saw no request while the node was down may still be led by it
    // in its old term, if it came back before the others timed out)
    let back = &nodes[killed];
    let status = eventually(
        Duration::from_secs(20),
        "every group has a leader",
        || async move {
            let (ok, out, err) = back.cli(&["cluster", "status"]);
            let status: Value = serde_json::from_str(&out).map_err(|_| err)?;
            let groups = status["groups"].as_array().unwrap();
            match ok && groups.iter().all(|g| g["leader"] != 0) {
                true => Ok(status),
                false => Err(status.to_string()),
            }
        },
    )
    .await;
    for group in status["groups"].as_array().unwrap() {
        if group["collection"] == "c" {
            assert!(
                group["leader"] != leader && group["term"].as_u64().unwrap() > 1,
                "a survivor leads the shard that failed over: {status}"
            );
        }
    }

    // the other survivor loses its whole data directory and is rebuilt from a snapshot (the
    // leader's log before its last snapshot is gone)
    let wiped = survivors.into_iter().find(|i| *i != new_leader).unwrap();
    nodes[wiped].kill9();
    std::fs::remove_dir_all(dir.path().join(format!("data{}", wiped + 1))).unwrap();
    for _ in 0..6 {
        upsert(&nodes[new_leader].endpoint, next).await.unwrap();
        acked.push(next);
        next += 1;
    }
    nodes[wiped] = start_member(dir.path(), wiped as u64 + 1, &addresses[wiped]);
    must_catch_up(&nodes[wiped].endpoint, &acked).await;
    // the snapshot carried the leader's sealed segment: the rebuilt node loaded it
    nodes[wiped].must_log("segments_loaded=1", Duration::from_secs(5));

    // without a quorum a write fails with UNAVAILABLE after cluster.write_timeout_ms
    nodes[killed].kill9();
    nodes[wiped].kill9();
    let started = Instant::now();
    let refused = upsert(&nodes[new_leader].endpoint, next).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// The index in `nodes` of the leader of collection `c`'s shard, once `node` sees one of
/// `candidates` leading it.
async fn must_find_shard_leader(node: &QuiverProcess, candidates: &[usize]) -> usize {
    let what = format!("no leader among {candidates:?}");
    eventually(Duration::from_secs(20), &what, || async move {
        // (the meta group may be electing a leader too, and answer nothing for a moment)
        let (ok, out, err) = node.cli(&["collection", "info", "c"]);
        if !ok {
            return Err(err);
        }
        let info: Value = serde_json::from_str(&out).unwrap();
        let leader = info["shards"][0]["leader"].as_u64().unwrap_or(0) as usize;
        match leader != 0 && candidates.contains(&(leader - 1)) {
            true => Ok(leader - 1),
            false => Err(info.to_string()),
        }
    })
    .await
}

/// The endpoint of the current leader, once one is elected.
async fn must_find_leader(nodes: &[QuiverProcess]) -> String {
    eventually(
        Duration::from_secs(30),
        "no leader elected",
        || async move {
            for n in nodes {
                let Ok(mut client) =
                    quiver_proto::v1::cluster_client::ClusterClient::connect(n.endpoint.clone())
                        .await
                else {
                    continue;
                };
                if let Ok(status) = client.status(pb::StatusRequest {}).await {
                    let status = status.into_inner();
                    let leader = status.groups[0].leader;
                    if let Some(m) = status.members.iter().find(|m| m.id == leader) {
                        return Ok(format!("http://{}", m.address));
                    }
                }
            }
            Err("no member names a leader")
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_every_node_mid_ingest_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, addresses) = must_form_cluster(dir.path());
    must_create_collection(&nodes[0].endpoint).await;

    // two writers import disjoint batches through the leader until the cluster dies
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let mut writers = Vec::new();
    for w in 0..2u64 {
        let endpoint = nodes[0].endpoint.clone();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for b in (w..100_000).step_by(2) {
                if upsert(&endpoint, b).await.is_err() {
                    return b;
                }
                acked.lock().unwrap().push(b);
            }
            u64::MAX
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 16 {
        assert!(Instant::now() < deadline, "writers stalled before the kill");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for n in nodes.iter_mut() {
        n.kill9();
    }
    let mut in_flight = Vec::new();
    for w in writers {
        in_flight.push(w.await.unwrap());
    }
    let acked = acked.lock().unwrap().clone();

    // all three come back on their addresses; a leader is elected; nothing acknowledged is lost
    for (i, n) in nodes.iter_mut().enumerate() {
        *n = start_member(dir.path(), i as u64 + 1, &addresses[i]);
    }
    let leader = must_find_leader(&nodes).await;
    let present = eventually(Duration::from_secs(30), "leader never served", || {
        count_present(&leader, &acked, pb::ReadConsistency::Linearizable)
    })
    .await;
    assert_eq!(
        present,
        acked.len() * BATCH as usize,
        "acknowledged writes lost"
    );
    for b in in_flight.into_iter().filter(|b| *b != u64::MAX) {
        // (a restarted node may still unseat the first leader: retry through an election)
        let batch = [b];
        let n = eventually(Duration::from_secs(30), "never served", || {
            count_present(&leader, &batch, pb::ReadConsistency::Linearizable)
        })
        .await;
        assert!(n == 0 || n == BATCH as usize, "batch {b} half applied: {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_minority_catches_up_after_healing() {
    use quiver_node::testing::FaultProxy;
    let dir = tempfile::tempdir().unwrap();
    // every node is reached through its own proxy: cutting a proxy cuts the node off from the
    // leader's heartbeats and appends (its own requests to the others still go out). Leaders
    // are not rebalanced: node 3, the cut one, must not take the shard's leadership over (on a
    // slow machine the test outlasts the rebalancing delay, and a leader keeps taking writes
    // through its own outgoing connections).
    let mut proxies = Vec::new();
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let proxy = FaultProxy::must_start().await;
        let config = dir.path().join(format!("node{id}.toml"));
        std::fs::write(
            &config,
            format!(
                "[node]\ndata_dir = {:?}\nlisten = \"127.0.0.1:0\"\n\n[cluster]\nnode_id = {id}\n\
                 bootstrap = false\nadvertise = \"{}\"\nwrite_timeout_ms = 2000\n\
                 rebalance_leaders_after_secs = 0\n",
                dir.path().join(format!("data{id}")),
                proxy.addr
            ),
        )
        .unwrap();
        let node = must_spawn(&["serve", "--config", config.to_str().unwrap()], &[]);
        proxy.forward_to(address(&node).parse().unwrap());
        proxies.push(proxy);
        nodes.push(node);
    }
    nodes[0].must_cli(&["cluster", "init"]);
    for p in &proxies[1..] {
        nodes[0].must_cli(&["cluster", "join", &p.addr.to_string()]);
    }
    must_create_collection(&nodes[0].endpoint).await;
    let mut acked = vec![0];
    upsert(&nodes[0].endpoint, 0).await.unwrap();
    must_catch_up(&nodes[2].endpoint, &acked).await;

    // cut node 3 off: the majority keeps accepting writes, node 3 falls behind
    proxies[2].cut();
    for b in 1..=5 {
        upsert(&nodes[0].endpoint, b).await.unwrap();
        acked.push(b);
    }
    let behind = count_present(&nodes[2].endpoint, &acked, pb::ReadConsistency::Any)
        .await
        .unwrap();
    assert_eq!(
        behind, BATCH as usize,
        "the cut-off node saw writes it cannot have"
    );

    // heal: node 3 catches up; the cluster takes writes again (possibly after a re-election)
    proxies[2].heal();
    must_catch_up(&nodes[2].endpoint, &acked).await;
    let leader = must_find_leader(&nodes).await;
    eventually(Duration::from_secs(20), "no writes after healing", || {
        upsert(&leader, 6)
    })
    .await;
    acked.push(6);
    must_catch_up(&nodes[2].endpoint, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_follows_the_leader_through_a_failover() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, addresses) = must_form_cluster(dir.path());
    // the router knows one member; it learns the others and the leader
    let router = must_spawn(
        &["router", "--join", &addresses[1], "--listen", "127.0.0.1:0"],
        &[],
    );
    router.must_cli(&["collection", "create", "c", "--dim", "8", "--metric", "l2"]);
    for b in 0..3 {
        upsert(&router.endpoint, b).await.unwrap();
    }
    assert_eq!(
        count_present(
            &router.endpoint,
            &[0, 1, 2],
            pb::ReadConsistency::Linearizable
        )
        .await
        .unwrap(),
        3 * BATCH as usize
    );

    // the leader dies; the same router endpoint keeps working once a new leader is elected
    nodes[0].kill9();
    upsert(&router.endpoint, 3).await.unwrap();
    let all = count_present(
        &router.endpoint,
        &[0, 1, 2, 3],
        pb::ReadConsistency::Linearizable,
    )
    .await
    .unwrap();
    assert_eq!(all, 4 * BATCH as usize);
    let out = router.must_cli(&[
        "search",
        "c",
        "--vector",
        "[0,1,2,3,4,5,6,7]",
        "--top-k",
        "1",
        "--format",
        "json",
    ]);
    let hit: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(hit["results"][0]["id"], 0);
    // errors still reach the client unchanged
    let (ok, _, err) = router.cli(&["search", "nope", "--vector", "[1]"]);
    assert!(!ok && err.contains("NotFound"), "{err}");
}

#[test]
fn dev_with_three_nodes_is_a_cluster_behind_a_router() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let mut dev = must_spawn(
        &[
            "dev",
            "--nodes",
            "3",
            "--data-dir",
            data,
            "--listen",
            "127.0.0.1:0",
            "--rest-listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    dev.must_cli(&["collection", "create", "c", "--dim", "2", "--metric", "l2"]);
    let file = dir.path().join("p.jsonl");
    std::fs::write(
        &file,
        "{\"id\":1,\"vector\":[1,2]}\n{\"id\":2,\"vector\":[3,4]}\n",
    )
    .unwrap();
    dev.must_cli(&["points", "import", "c", "--file", file.to_str().unwrap()]);
    let out = dev.must_cli(&[
        "search", "c", "--vector", "[3,4]", "--top-k", "1", "--format", "json",
    ]);
    let hit: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(hit["results"][0]["id"], 2);
    // An alias made through the router is followed by the router at once.
    dev.must_cli(&["collection", "alias", "set", "live", "c"]);
    let out = dev.must_cli(&[
        "search", "live", "--vector", "[3,4]", "--top-k", "1", "--format", "json",
    ]);
    let hit: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(hit["results"][0]["id"], 2, "search through the alias");
    let aliases = dev.must_cli(&["collection", "alias", "list"]);
    assert!(aliases.contains("\"collection\":\"c\""), "{aliases}");
    // The router snapshots a collection, holding each shard's writes at its leader (a node
    // process of its own), and keeps the file in the data directory.
    let snapshot: Value =
        serde_json::from_str(&dev.must_cli(&["collection", "snapshot", "create", "live"])).unwrap();
    assert_eq!(snapshot["points"], 2, "{snapshot}");
    assert_eq!(snapshot["collection"], "c", "{snapshot}");
    let name = snapshot["name"].as_str().unwrap();
    assert!(dir.path().join("data/snapshots/c").join(name).is_file());
    // every node holds the data
    for id in 1..=3 {
        let config =
            std::fs::read_to_string(dir.path().join(format!("data/node{id}.toml"))).unwrap();
        let listen = config
            .lines()
            .find_map(|l| l.strip_prefix("listen = "))
            .unwrap()
            .trim_matches('"')
            .to_string();
        let endpoint = format!("http://{listen}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = quiver()
                .args(["points", "get", "c", "1", "2", "--consistency", "any"])
                .args(["--endpoint", &endpoint])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).lines().count() == 2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} does not hold the points"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // The router answers operators too: the cluster's status through it.
    let status: Value = serde_json::from_str(&dev.must_cli(&["cluster", "status"])).unwrap();
    assert_eq!(status["members"].as_array().unwrap().len(), 3, "{status}");
    for group in status["groups"].as_array().unwrap() {
        assert_ne!(group["leader"], 0, "{status}");
        assert_eq!(group["replicas"].as_array().unwrap().len(), 3, "{status}");
    }
    assert!(dev.must_terminate().success());
}

/// A node that is down when a collection is created still gets replicas, but no shard needs it
/// to form its group: the create succeeds, writes commit on the other two replicas, and the node
/// catches up when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_is_created_while_a_node_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, addresses) = must_form_cluster(dir.path());
    nodes[2].kill9();
    let created: Value = serde_json::from_str(&nodes[0].must_cli(&[
        "collection",
        "create",
        "c",
        "--dim",
        &DIM.to_string(),
        "--metric",
        "l2",
        "--shards",
        "3",
    ]))
    .unwrap();
    for shard in created["shards"].as_array().unwrap() {
        let replicas = replica_nodes(shard);
        assert_eq!(replicas.len(), 3, "{created}");
        assert_ne!(
            replicas[0], 3,
            "a node that is down formed a group: {created}"
        );
    }
    let mut acked = Vec::new();
    for b in 0..4 {
        upsert(&nodes[1].endpoint, b).await.unwrap();
        acked.push(b);
    }
    nodes[2] = start_member(dir.path(), 3, &addresses[2]);
    must_catch_up(&nodes[2].endpoint, &acked).await;
}

/// A router checks a batch against the cluster's limits (learned with the shard map), not its
/// own defaults: a point over the nodes' payload limit refuses the whole batch, on every shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_checks_batches_against_the_clusters_limits() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, addresses) =
        must_form_cluster_with(dir.path(), &[("QUIVER_LIMITS__MAX_PAYLOAD_BYTES", "100")]);
    nodes[0].must_cli(&[
        "collection",
        "create",
        "c",
        "--dim",
        &DIM.to_string(),
        "--metric",
        "l2",
        "--shards",
        "3",
    ]);
    let router = must_spawn(
        &["router", "--join", &addresses[0], "--listen", "127.0.0.1:0"],
        &[],
    );
    let mut points = batch(0);
    points[17].payload = Some(quiver_core::convert::json_to_struct(
        serde_json::json!({"text": "x".repeat(200)})
            .as_object()
            .unwrap(),
    ));
    let refused = PointsClient::connect(router.endpoint.clone())
        .await
        .unwrap()
        .upsert(pb::UpsertRequest {
            collection: "c".into(),
            points,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("points[17].payload"),
        "{}",
        refused.message()
    );
    let present = count_present(&router.endpoint, &[0], pb::ReadConsistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(present, 0, "a refused batch changed a shard");
    upsert(&router.endpoint, 0).await.unwrap();
}

/// The leader of each shard of collection `c`, and its preferred leader (its first replica),
/// as node ids, from `collection info` through `node`.
fn shard_leaders(node: &QuiverProcess) -> Result<Vec<(u64, u64)>, String> {
    let (ok, out, err) = node.cli(&["collection", "info", "c"]);
    if !ok {
        return Err(err);
    }
    let info: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    Ok(info["shards"]
        .as_array()
        .ok_or("no shards")?
        .iter()
        .map(|s| {
            (
                s["leader"].as_u64().unwrap_or(0),
                s["replicas"][0]["node"].as_u64().unwrap_or(0),
            )
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_spreads_back_to_a_node_that_returns() {
    let dir = tempfile::tempdir().unwrap();
    let envs = [("QUIVER_CLUSTER__REBALANCE_LEADERS_AFTER_SECS", "2")];
    let (mut nodes, addresses) = must_form_cluster_with(dir.path(), &envs);
    CollectionsClient::connect(nodes[0].endpoint.clone())
        .await
        .unwrap()
        .create(pb::CreateCollectionRequest {
            name: "c".into(),
            dim: DIM as u32,
            metric: pb::Metric::L2 as i32,
            shard_count: Some(3),
            replication_factor: Some(3),
            ..Default::default()
        })
        .await
        .unwrap();
    // each node is the preferred leader of one shard, and leads it
    let spread = |leaders: &[(u64, u64)]| {
        let mut preferred: Vec<u64> = leaders.iter().map(|(_, p)| *p).collect();
        preferred.sort();
        preferred == [1, 2, 3] && leaders.iter().all(|(l, p)| l == p)
    };
    let (head, tail) = nodes.split_at_mut(1);
    let (first, second) = (&head[0], &mut tail[0]);
    eventually(Duration::from_secs(30), "leaders never spread", || async {
        match shard_leaders(first) {
            Ok(l) if spread(&l) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // a writer keeps importing through node 1 (retrying a batch until it is acknowledged)
    let endpoint = first.endpoint.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut b = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if upsert(&endpoint, b).await.is_ok() {
                    acked.push(b);
                    b += 1;
                } else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            acked
        })
    };

    // node 2 dies: the others lead its shard; it returns, and leads its shard again
    second.kill9();
    eventually(Duration::from_secs(30), "no failover", || async {
        match shard_leaders(first) {
            Ok(l) if l.iter().all(|(leader, _)| *leader == 1 || *leader == 3) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    *second = start_member_with(dir.path(), 2, &addresses[1], &envs);
    eventually(
        Duration::from_secs(60),
        "leadership never spread back",
        || async {
            match shard_leaders(first) {
                Ok(l) if spread(&l) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    // and no acknowledged write was lost on the way
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let acked = writer.await.unwrap();
    assert!(acked.len() > 5, "the writer made no progress: {acked:?}");
    let present = eventually(Duration::from_secs(30), "never served", || {
        count_present(&first.endpoint, &acked, pb::ReadConsistency::Linearizable)
    })
    .await;
    assert_eq!(
        present,
        acked.len() * BATCH as usize,
        "acknowledged writes lost"
    );
}
