//! What a new user runs into with the CLI: pipes closed early, import files with mistakes in
//! them, endpoints typed without a scheme, missing ids, numbers out of range, and zeros that
//! are not defaults.

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn count(dev: &QuiverProcess, collection: &str) -> u64 {
    dev.must_cli(&["points", "count", collection])
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let dev = must_spawn_dev(&dir.path().join("data"));
    dev.must_cli(&["collection", "create", "c", "--dim", "2", "--metric", "l2"]);
    let lines: String = (0..3000)
        .map(|i| format!("{{\"id\": {i}, \"vector\": [{i}, 1]}}\n"))
        .collect();
    let file = write(dir.path(), "p.jsonl", &lines);
    dev.must_cli(&["points", "import", "c", "--file", &file]);

    // `quiver points scroll c | head -1`
    let mut scroll = quiver()
        .args(["points", "scroll", "c", "--endpoint", &dev.endpoint])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(scroll.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("{\"id\":0"), "{first}");
    let mut stderr = String::new();
    scroll
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = scroll.wait().unwrap();
    assert!(
        status.success(),
        "scroll into a closed pipe: {status}, {stderr}"
    );
    assert!(stderr.is_empty(), "{stderr}");

    // `quiver collection info c | grep -m1 ...`: stdout closed before anything is written.
    for args in [
        vec!["collection", "info", "c"],
        vec!["search", "c", "--vector", "[1, 1]"],
    ] {
        let mut info = quiver()
            .args(&args)
            .args(["--endpoint", &dev.endpoint])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(info.stdout.take());
        let out = info.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn import_names_the_file_line_and_says_what_was_stored() {
    let dir = tempfile::tempdir().unwrap();
    let dev = must_spawn_dev(&dir.path().join("data"));
    dev.must_cli(&["collection", "create", "c", "--dim", "2", "--metric", "l2"]);

    // A misspelt key: refused before anything is sent.
    let typo = write(
        dir.path(),
        "typo.jsonl",
        "{\"id\": 1, \"vector\": [1, 2]}\n{\"id\": 2, \"vector\": [1, 2], \"paylaod\": {}}\n",
    );
    let (ok, _, err) = dev.cli(&["points", "import", "c", "--file", &typo]);
    assert!(!ok);
    assert!(
        err.contains("typo.jsonl:2") && err.contains("`paylaod`"),
        "{err}"
    );
    assert_eq!(count(&dev, "c"), 0);

    // An id given twice, in different batches: refused the same way as within one batch.
    let twice = write(
        dir.path(),
        "twice.jsonl",
        "{\"id\": 1, \"vector\": [1, 2]}\n{\"id\": 2, \"vector\": [1, 2]}\n{\"id\": 1, \"vector\": [3, 4]}\n",
    );
    let (ok, _, err) = dev.cli(&[
        "points",
        "import",
        "c",
        "--file",
        &twice,
        "--batch-size",
        "1",
    ]);
    assert!(!ok);
    assert!(
        err.contains("twice.jsonl:3") && err.contains("line 1"),
        "{err}"
    );
    assert_eq!(count(&dev, "c"), 0);

    // A number no 32-bit float holds.
    let huge = write(
        dir.path(),
        "huge.jsonl",
        "{\"id\": 1, \"vector\": [1e39, 2]}\n",
    );
    let (ok, _, err) = dev.cli(&["points", "import", "c", "--file", &huge]);
    assert!(!ok);
    assert!(
        err.contains("huge.jsonl:1") && err.contains("outside the range of a 32-bit float"),
        "{err}"
    );

    // The server refuses line 5 (3 dimensions): the batches before it are stored and the
    // message says so, names the line, and says a re-run is safe.
    let lines = "{\"id\": 1, \"vector\": [1, 2]}\n{\"id\": 2, \"vector\": [1, 2]}\n\
                 {\"id\": 3, \"vector\": [1, 2]}\n{\"id\": 4, \"vector\": [1, 2]}\n\
                 {\"id\": 5, \"vector\": [1, 2, 3]}\n{\"id\": 6, \"vector\": [1, 2]}\n";
    let bad = write(dir.path(), "bad.jsonl", lines);
    let (ok, _, err) = dev.cli(&["points", "import", "c", "--file", &bad, "--batch-size", "2"]);
    assert!(!ok);
    assert!(err.contains("bad.jsonl:5"), "{err}");
    assert!(err.contains("4 of 6 points were stored"), "{err}");
    assert!(err.contains("again is safe"), "{err}");
    assert_eq!(count(&dev, "c"), 4);

    // With batches in flight after the refused one, the message says those may have been
    // stored; the batches before it were.
    let lines: String = (11..19)
        .map(|id| match id {
            13 => format!("{{\"id\": {id}, \"vector\": [1]}}\n"),
            _ => format!("{{\"id\": {id}, \"vector\": [1, 2]}}\n"),
        })
        .collect();
    let bad = write(dir.path(), "bad2.jsonl", &lines);
    let args = ["points", "import", "c", "--file", &bad, "--batch-size", "2"];
    let (ok, _, err) = dev.cli(&[&args[..], &["--parallel", "4"]].concat());
    assert!(!ok);
    assert!(err.contains("bad2.jsonl:3"), "{err}");
    assert!(err.contains("2 of 8 points were stored"), "{err}");
    assert!(
        err.contains("bad2.jsonl:5 on may or may not have been stored"),
        "{err}"
    );
    let (ok, _, err) = dev.cli(&[&args[..], &["--parallel", "0"]].concat());
    assert!(
        !ok && err.contains("--parallel must be at least 1"),
        "{err}"
    );
}

#[test]
fn small_things_a_new_user_trips_over() {
    let dir = tempfile::tempdir().unwrap();
    let dev = must_spawn_dev(&dir.path().join("data"));
    let bare = dev.endpoint.trim_start_matches("http://").to_string();

    // An endpoint without a scheme.
    let out = quiver()
        .args(["collection", "list", "--endpoint", &bare])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Zero is refused with the field named, not read as the default.
    for (flag, field) in [
        ("--m", "index.hnsw.m"),
        ("--ef-construction", "index.hnsw.ef_construction"),
        ("--shards", "shard_count"),
    ] {
        let (ok, _, err) = dev.cli(&[
            "collection",
            "create",
            "z",
            "--dim",
            "2",
            "--metric",
            "l2",
            flag,
            "0",
        ]);
        assert!(!ok, "{flag} 0 was accepted");
        assert!(err.contains(field), "{flag} 0: {err}");
    }

    dev.must_cli(&["collection", "create", "c", "--dim", "2", "--metric", "l2"]);
    let file = write(
        dir.path(),
        "p.jsonl",
        "{\"id\": 1, \"vector\": [1, 2], \"payload\": {\"a\": 1}}\n",
    );
    dev.must_cli(&["points", "import", "c", "--file", &file]);

    // get says which ids do not exist.
    let (ok, out, err) = dev.cli(&["points", "get", "c", "1", "2", "77"]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 1);
    assert!(err.contains("not found: 2, 77"), "{err}");

    // Payload changes and count from the CLI.
    dev.must_cli(&[
        "points",
        "set-payload",
        "c",
        "1",
        "--payload",
        r#"{"b": 2}"#,
    ]);
    let got: Value = serde_json::from_str(&dev.must_cli(&["points", "get", "c", "1"])).unwrap();
    assert_eq!(got["payload"], serde_json::json!({"a": 1, "b": 2}));
    let matching = dev.must_cli(&["points", "count", "c", "--filter", r#"{"b": 2}"#]);
    assert_eq!(matching.trim(), "1");
    dev.must_cli(&[
        "points",
        "delete-payload",
        "c",
        "--filter",
        "{}",
        "--key",
        "a",
    ]);
    let got: Value = serde_json::from_str(&dev.must_cli(&["points", "get", "c", "1"])).unwrap();
    assert_eq!(got["payload"], serde_json::json!({"b": 2}));

    // A query vector out of float range.
    let (ok, _, err) = dev.cli(&["search", "c", "--vector", "[1e39, 0]"]);
    assert!(!ok);
    assert!(
        err.contains("--vector[0]") && err.contains("outside the range of a 32-bit float"),
        "{err}"
    );

    // scroll --limit hands back a cursor that continues the listing.
    let more = (2..=5)
        .map(|i| format!("{{\"id\": {i}, \"vector\": [{i}, 0]}}\n"))
        .collect::<String>();
    dev.must_cli(&[
        "points",
        "import",
        "c",
        "--file",
        &write(dir.path(), "m.jsonl", &more),
    ]);
    let (ok, first, err) = dev.cli(&["points", "scroll", "c", "--limit", "2"]);
    assert!(ok && first.lines().count() == 2, "{first} {err}");
    let cursor = err
        .split("--cursor ")
        .nth(1)
        .expect("a cursor to continue from")
        .trim()
        .to_string();
    let rest = dev.must_cli(&["points", "scroll", "c", "--cursor", &cursor]);
    let ids: Vec<u64> = first
        .lines()
        .chain(rest.lines())
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5]);
}

/// Finds the processes whose command line contains `needle`.
fn pids_with(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline)
            .replace('\0', " ")
            .contains(needle)
        {
            pids.push(pid);
        }
    }
    pids
}

/// The node that leads the meta group, as the cluster status through `dev` reports it.
fn meta_leader(dev: &QuiverProcess) -> Option<u64> {
    let (ok, out, _) = dev.cli(&["cluster", "status"]);
    let status: Value = serde_json::from_str(&out).ok().filter(|_| ok)?;
    status["groups"]
        .as_array()?
        .iter()
        .find(|g| g["group"] == 0)
        .and_then(|g| g["leader"].as_u64())
        .filter(|l| *l != 0)
}

fn signal(pid: u32, signal: &str) {
    let sent = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// A loopback port P such that P and the ports `quiver dev --nodes 3` gives its nodes (P + 11,
/// P + 12, P + 13) are free now, below the ephemeral range.
fn dev_cluster_port() -> u16 {
    loop {
        let address = quiver_node::testing::stable_loopback_address();
        let port: u16 = address.rsplit(':').next().unwrap().parse().unwrap();
        let free = (11..=13).all(|i| std::net::TcpListener::bind(("127.0.0.1", port + i)).is_ok());
        if free {
            return port;
        }
    }
}

/// `quiver dev --nodes 3` reports and restarts a node killed with -9, and starts again on its
/// data directory after node 1 lost the meta leadership.
#[test]
fn dev_cluster_restarts_its_nodes_and_itself_whoever_leads() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap().to_string();
    let port = dev_cluster_port();
    let listen = format!("127.0.0.1:{port}");
    let args = [
        "dev",
        "--nodes",
        "3",
        "--data-dir",
        &data_arg,
        "--listen",
        &listen,
        "--rest-listen",
        "127.0.0.1:0",
    ];
    let mut dev = must_spawn(&args, &[]);
    let node1 = std::fs::read_to_string(data.join("node1.toml")).unwrap();
    assert!(
        node1.contains(&format!("127.0.0.1:{}", port + 11)),
        "node 1 sits at the router's port + 11: {node1}"
    );
    dev.must_cli(&["collection", "create", "c", "--dim", "2", "--metric", "l2"]);
    let file = write(dir.path(), "p.jsonl", "{\"id\": 1, \"vector\": [1, 2]}\n");
    dev.must_cli(&["points", "import", "c", "--file", &file]);
    assert_eq!(meta_leader(&dev), Some(1), "node 1 forms the cluster");

    // Node 1 stops answering long enough for another node to take the meta group over.
    let config = data.join("node1.toml").to_str().unwrap().to_string();
    let victims = pids_with(&config);
    assert_eq!(victims.len(), 1, "one node 1 process: {victims:?}");
    signal(victims[0], "-STOP");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !matches!(meta_leader(&dev), Some(l) if l != 1) {
        assert!(
            std::time::Instant::now() < deadline,
            "no new meta leader: {:?}",
            dev.cli(&["cluster", "status"])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    signal(victims[0], "-CONT");
    // A node killed with -9 is reported and started again.
    signal(victims[0], "-KILL");
    dev.must_log("node 1 exited", Duration::from_secs(10));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while pids_with(&config).len() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "node 1 was not restarted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_ne!(pids_with(&config), victims);
    assert!(dev.must_terminate().success());
    assert!(pids_with(&config).is_empty(), "dev stopped its nodes");

    let dev = must_spawn(&args, &[]);
    let got = dev.must_cli(&["points", "get", "c", "1"]);
    assert!(got.contains("\"id\":1"), "{got}");
}

/// A router searching a collection whose shards one node leads sends that node several requests
/// at once on one connection; none of the answers may wait for a delayed ACK (~40 ms, what
/// Nagle's algorithm costs a socket without TCP_NODELAY).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_over_shards_one_node_leads_do_not_stall() {
    use quiver_proto::v1 as pb;
    let dir = tempfile::tempdir().unwrap();
    let node = must_spawn_dev(&dir.path().join("data"));
    node.must_cli(&[
        "collection",
        "create",
        "c",
        "--dim",
        "2",
        "--metric",
        "l2",
        "--shards",
        "4",
    ]);
    let lines: String = (0..400)
        .map(|i| format!("{{\"id\": {i}, \"vector\": [{i}, 1]}}\n"))
        .collect();
    node.must_cli(&[
        "points",
        "import",
        "c",
        "--file",
        &write(dir.path(), "p.jsonl", &lines),
    ]);
    let member = node.endpoint.trim_start_matches("http://").to_string();
    let router = must_spawn(
        &["router", "--join", &member, "--listen", "127.0.0.1:0"],
        &[],
    );
    let mut client = pb::points_client::PointsClient::connect(router.endpoint.clone())
        .await
        .unwrap();
    let mut took = Vec::new();
    for i in 0..40 {
        let request = pb::SearchRequest {
            collection: "c".into(),
            vector: vec![i as f32, 1.0],
            top_k: Some(5),
            ..Default::default()
        };
        let started = std::time::Instant::now();
        let hits = client.search(request).await.unwrap().into_inner();
        took.push(started.elapsed());
        assert_eq!(hits.results.len(), 5);
    }
    took.sort();
    let median = took[took.len() / 2];
    assert!(
        median < Duration::from_millis(20),
        "median search through the router took {median:?}"
    );
}
