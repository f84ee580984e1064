//! The feature store as a new user meets it: `quiver features` against `quiver dev` — a
//! definitions file applied, planned again and changed; pushes with mistakes refused whole;
//! online reads with statuses and ttl; point-in-time training sets pinned to a log position;
//! everything still there after a kill -9.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::support::*;

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

const DEFINITIONS: &str = "\
entities:
  - name: user
    join_keys: [user_id]
feature_views:
  - name: user_stats
    entities: [user]
    ttl: 2d
    owner: growth
    schema:
      - {name: user_id, dtype: Int64}
      - {name: clicks, dtype: Int64}
      - {name: ctr, dtype: Float32}
feature_services:
  - name: ranker
    features: [user_stats:clicks, user_stats:ctr]
";

/// An online read, as `{"values": {name: [per entity]}, "statuses": {...}}` from the CLI's
/// one object per entity (`{"user_id": 1, "user_stats:clicks": {"value", "status", ...}}`).
fn online(dev: &QuiverProcess, features: &str, entities: &[&str]) -> Value {
    let mut args = vec!["features", "online", "--features", features];
    for e in entities {
        args.extend(["--entity", e]);
    }
    let out = dev.must_cli(&args);
    let mut values = serde_json::Map::new();
    let mut statuses = serde_json::Map::new();
    for line in out.lines() {
        let object: serde_json::Map<String, Value> = serde_json::from_str(line).unwrap();
        for (name, v) in object {
            let short = name.rsplit(':').next().unwrap().to_string();
            let (value, status) = match v.get("status") {
                Some(status) => (v["value"].clone(), status.clone()),
                None => (v, Value::Null),
            };
            let column = values.entry(short.clone()).or_insert(Value::Array(vec![]));
            column.as_array_mut().unwrap().push(value);
            let column = statuses.entry(short).or_insert(Value::Array(vec![]));
            column.as_array_mut().unwrap().push(status);
        }
    }
    serde_json::json!({"values": values, "statuses": statuses, "raw": out})
}

/// `quiver features historical --entities <entities> <extra>`: the set it prints, and the log
/// position it says it read at.
fn training_set(node: &QuiverProcess, entities: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["features", "historical", "--entities", entities];
    args.extend(extra);
    let (ok, stdout, stderr) = node.cli(&args);
    assert!(ok, "{stderr}");
    let position = stderr
        .split("--as-of-log ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap()
        .to_string();
    (stdout, position)
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn definitions_are_planned_applied_and_changed_only_as_of_the_version_read() {
    let dir = tempfile::tempdir().unwrap();
    let dev = must_spawn_dev(&dir.path().join("data"));
    let defs = write(dir.path(), "defs.yaml", DEFINITIONS);
    let plan = dev.must_cli(&["features", "apply", &defs, "--dry-run"]);
    assert!(plan.contains("planned (dry run): 3 created"), "{plan}");
    let listed: Value = serde_json::from_str(&dev.must_cli(&["features", "list"])).unwrap();
    assert_eq!(
        listed["feature_views"],
        Value::Array(vec![]),
        "a dry run applies nothing"
    );
    let applied = dev.must_cli(&["features", "apply", &defs]);
    assert!(applied.contains("applied: 3 created"), "{applied}");
    let again = dev.must_cli(&["features", "apply", &defs]);
    assert!(
        again.contains("applied: 0 created, 0 changed, 3 unchanged"),
        "{again}"
    );

    // a new field: a new version of the view, the old schema kept
    let changed = write(
        dir.path(),
        "defs2.yaml",
        &DEFINITIONS.replace(
            "      - {name: ctr, dtype: Float32}\n",
            "      - {name: ctr, dtype: Float32}\n      - {name: spend, dtype: Float64}\n",
        ),
    );
    let out = dev.must_cli(&["features", "apply", &changed]);
    assert!(
        out.contains("user_stats") && out.contains("changed    v2  (fields)"),
        "{out}"
    );
    let listed: Value = serde_json::from_str(&dev.must_cli(&["features", "list"])).unwrap();
    let view = &listed["feature_views"][0];
    assert_eq!(view["version"], 2);
    assert_eq!(view["ttl_seconds"], 172_800);
    assert_eq!(view["fields"].as_array().unwrap().len(), 3);
    assert_eq!(view["history"][0]["fields"].as_array().unwrap().len(), 2);

    // someone who read version 1 cannot overwrite version 2
    let stale = write(
        dir.path(),
        "stale.yaml",
        &DEFINITIONS.replace("    owner: growth\n", "    owner: other\n    version: 1\n"),
    );
    let (ok, _, err) = dev.cli(&["features", "apply", &stale]);
    assert!(!ok);
    assert!(
        err.contains("Aborted") && err.contains("version 2, not 1"),
        "{err}"
    );

    // mistakes are named, and change nothing
    for (text, says) in [
        (
            DEFINITIONS.replace("Float32", "Decimal"),
            "`Decimal` is not a type",
        ),
        (
            DEFINITIONS.replace("entities: [user]", "entities: [usr]"),
            "usr",
        ),
        (
            DEFINITIONS.replace("user_stats:clicks", "user_stats:klicks"),
            "klicks",
        ),
    ] {
        let bad = write(dir.path(), "bad.yaml", &text);
        let (ok, _, err) = dev.cli(&["features", "apply", &bad]);
        assert!(!ok && err.contains(says), "{says}: {err}");
    }
    let after: Value = serde_json::from_str(&dev.must_cli(&["features", "list"])).unwrap();
    assert_eq!(after, listed);
}

#[test]
fn pushed_rows_are_served_online_and_joined_point_in_time_and_survive_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut dev = must_spawn_dev(&data);
    let defs = write(dir.path(), "defs.yaml", DEFINITIONS);
    dev.must_cli(&["features", "apply", &defs]);

    // a bad cell anywhere refuses the whole file, named by line and column
    let bad = write(
        dir.path(),
        "bad.csv",
        "user_id,event_timestamp,clicks,ctr\n1,2024-01-01T00:00:00Z,5,0.5\n2,2024-01-01T00:00:00Z,many,0.5\n",
    );
    let (ok, _, err) = dev.cli(&["features", "push", "user_stats", "--file", &bad]);
    assert!(!ok);
    assert!(
        err.contains("bad.csv:3, column `clicks`: expected int64"),
        "{err}"
    );
    let read = online(&dev, "user_stats:clicks", &["user_id=1"]);
    assert_eq!(read["statuses"]["clicks"][0], "NOT_FOUND", "{read}");
    let (ok, _, err) = dev.cli(&["features", "push", "nope", "--file", &bad]);
    assert!(!ok && err.contains("`nope` is not defined"), "{err}");

    // history: user 1 on Jan 1 and Jan 3; user 2 on Jan 2 (created late, on Jan 9)
    let history = write(
        dir.path(),
        "history.csv",
        "user_id,event_timestamp,created_timestamp,clicks,ctr\n\
         1,2024-01-01T00:00:00Z,2024-01-01T00:00:00Z,5,0.1\n\
         1,2024-01-03T00:00:00Z,2024-01-03T00:00:00Z,7,0.2\n\
         2,2024-01-02T00:00:00Z,2024-01-09T00:00:00Z,3,\n",
    );
    let out = dev.must_cli(&[
        "features",
        "push",
        "user_stats",
        "--file",
        &history,
        "--to",
        "offline",
    ]);
    assert!(out.contains("pushed 3 rows"), "{out}");
    // recent values, online only; an older event pushed after a newer one does not replace it
    let now = now_seconds();
    let recent = write(
        dir.path(),
        "recent.jsonl",
        &format!(
            "{{\"user_id\": 1, \"event_timestamp\": {}, \"clicks\": 40, \"ctr\": 0.25}}\n\
             {{\"user_id\": 3, \"event_timestamp\": {}, \"clicks\": 9}}\n",
            now - 60,
            now - 5 * 86_400
        ),
    );
    dev.must_cli(&[
        "features",
        "push",
        "user_stats",
        "--file",
        &recent,
        "--to",
        "online",
    ]);
    let older = write(
        dir.path(),
        "older.jsonl",
        &format!(
            "{{\"user_id\": 1, \"event_timestamp\": {}, \"clicks\": 1}}\n",
            now - 3600
        ),
    );
    dev.must_cli(&[
        "features",
        "push",
        "user_stats",
        "--file",
        &older,
        "--to",
        "online",
    ]);

    let read = online(
        &dev,
        "user_stats:clicks,user_stats:ctr",
        &["user_id=1", "user_id=2", "user_id=3"],
    );
    assert_eq!(
        read["values"]["user_id"],
        serde_json::json!([1, 2, 3]),
        "{read}"
    );
    assert_eq!(
        read["values"]["clicks"][0], 40,
        "the newest event wins: {read}"
    );
    assert_eq!(read["values"]["ctr"][0], 0.25);
    assert_eq!(read["statuses"]["clicks"][0], "PRESENT");
    assert_eq!(
        read["statuses"]["clicks"][1], "NOT_FOUND",
        "offline rows are not online"
    );
    assert_eq!(
        read["statuses"]["clicks"][2], "OUTSIDE_MAX_AGE",
        "older than the 2d ttl"
    );
    assert_eq!(read["values"]["clicks"][2], Value::Null);
    let (ok, _, err) = dev.cli(&[
        "features",
        "online",
        "--features",
        "user_stats:clicks",
        "--entity",
        "user_id=abc",
    ]);
    assert!(!ok && err.contains("entities.user_id[0]"), "{err}");

    // materialisation: offline-only rows made online inside the database
    let offline = write(
        dir.path(),
        "offline.jsonl",
        &format!(
            "{{\"user_id\": 5, \"event_timestamp\": {}, \"clicks\": 50}}\n",
            now - 100
        ),
    );
    dev.must_cli(&[
        "features",
        "push",
        "user_stats",
        "--file",
        &offline,
        "--to",
        "offline",
    ]);
    let read = online(&dev, "user_stats:clicks", &["user_id=5"]);
    assert_eq!(read["statuses"]["clicks"][0], "NOT_FOUND", "{read}");
    let out = dev.must_cli(&["features", "materialize", "--incremental"]);
    assert!(out.contains("materialized `user_stats`"), "{out}");
    let read = online(&dev, "user_stats:clicks", &["user_id=5", "user_id=2"]);
    assert_eq!(read["values"]["clicks"][0], 50, "{read}");
    assert_eq!(
        read["statuses"]["clicks"][1], "OUTSIDE_MAX_AGE",
        "Jan 2024 is past the ttl"
    );
    // a range over older rows never moves a value back
    let (start, end) = ((now - 1000).to_string(), (now - 500).to_string());
    let older5 = write(
        dir.path(),
        "older5.jsonl",
        &format!(
            "{{\"user_id\": 5, \"event_timestamp\": {}, \"clicks\": 1}}\n",
            now - 800
        ),
    );
    dev.must_cli(&[
        "features",
        "push",
        "user_stats",
        "--file",
        &older5,
        "--to",
        "offline",
    ]);
    dev.must_cli(&[
        "features",
        "materialize",
        "user_stats",
        "--start",
        &start,
        "--end",
        &end,
    ]);
    let read = online(&dev, "user_stats:clicks", &["user_id=5"]);
    assert_eq!(read["values"]["clicks"][0], 50, "{read}");
    let (ok, _, err) = dev.cli(&["features", "materialize", "nope", "--incremental"]);
    assert!(!ok && err.contains("nope"), "{err}");

    // search results enriched with features in the same call, by a payload field
    dev.must_cli(&[
        "collection",
        "create",
        "posts",
        "--dim",
        "2",
        "--metric",
        "l2",
    ]);
    let posts = write(
        dir.path(),
        "posts.jsonl",
        "{\"id\": 1, \"vector\": [1, 0], \"payload\": {\"author\": 1}}\n\
         {\"id\": 2, \"vector\": [0, 1], \"payload\": {\"author\": 3}}\n\
         {\"id\": 3, \"vector\": [1, 1], \"payload\": {}}\n",
    );
    dev.must_cli(&["points", "import", "posts", "--file", &posts]);
    let out = dev.must_cli(&[
        "search",
        "posts",
        "--vector",
        "[1,0]",
        "--top-k",
        "3",
        "--format",
        "json",
        "--with-features",
        "user_stats:clicks,user_stats:ctr",
        "--features-key",
        "author",
    ]);
    let hits: Value = serde_json::from_str(out.trim()).unwrap();
    let hits = hits["results"].as_array().unwrap();
    assert_eq!(hits.len(), 3, "{out}");
    assert_eq!(hits[0]["id"], 1);
    assert_eq!(hits[0]["features"]["user_stats:clicks"], 40, "{out}");
    assert_eq!(hits[0]["features"]["user_stats:ctr"], 0.25, "{out}");
    assert!(
        hits[0].get("payload").is_none(),
        "payloads only when asked: {out}"
    );
    assert!(
        hits[1].get("features").is_none(),
        "no key, or past the ttl: {out}"
    );
    assert!(hits[2].get("features").is_none(), "{out}");
    let (ok, _, err) = dev.cli(&[
        "search",
        "posts",
        "--vector",
        "[1,0]",
        "--with-features",
        "user_stats:nope",
        "--features-key",
        "author",
    ]);
    assert!(!ok && err.contains("with_features.features"), "{err}");

    // the training set: greatest event at or before each row's time, within the ttl
    let entities = write(
        dir.path(),
        "entities.csv",
        "user_id,event_timestamp,label\n\
         1,2024-01-02T00:00:00Z,a\n\
         1,2024-01-04T00:00:00Z,b\n\
         1,2024-01-06T00:00:00Z,c\n\
         2,2024-01-03T00:00:00Z,d\n\
         9,2024-01-05T00:00:00Z,e\n",
    );
    let historical = |extra: &[&str]| training_set(&dev, &entities, extra);
    let (set, position) = historical(&["--service", "ranker"]);
    assert_eq!(
        set,
        "user_id,event_timestamp,label,clicks,ctr\n\
         1,2024-01-02T00:00:00Z,a,5,0.1\n\
         1,2024-01-04T00:00:00Z,b,7,0.2\n\
         1,2024-01-06T00:00:00Z,c,,\n\
         2,2024-01-03T00:00:00Z,d,3,\n\
         9,2024-01-05T00:00:00Z,e,,\n"
    );
    // as known at each row's time: user 2's row was created after Jan 3
    let (known, _) = historical(&["--service", "ranker", "--known-at"]);
    assert!(known.contains("2,2024-01-03T00:00:00Z,d,,\n"), "{known}");
    let (full, _) = historical(&[
        "--features",
        "user_stats:clicks",
        "--full-feature-names",
        "--format",
        "json",
    ]);
    let first: Value = serde_json::from_str(full.lines().next().unwrap()).unwrap();
    assert_eq!(first["user_stats__clicks"], 5, "{full}");
    assert_eq!(first["user_id"], 1);
    assert_eq!(first["label"], "a");

    // a late row arrives; the pinned set reads the same, an unpinned one sees it
    let late = write(
        dir.path(),
        "late.csv",
        "user_id,event_timestamp,clicks,ctr\n1,2024-01-05T00:00:00Z,11,0.3\n",
    );
    dev.must_cli(&["features", "push", "user_stats", "--file", &late]);
    let (pinned, same) = historical(&["--service", "ranker", "--as-of-log", &position]);
    assert_eq!(pinned, set);
    assert_eq!(same, position);
    let (fresh, moved) = historical(&["--service", "ranker"]);
    assert!(
        fresh.contains("1,2024-01-06T00:00:00Z,c,11,0.3\n"),
        "{fresh}"
    );
    assert_ne!(moved, position);

    // a version's schema can be pinned: v1 has no `spend`
    let v2 = write(
        dir.path(),
        "v2.yaml",
        &DEFINITIONS.replace(
            "      - {name: ctr, dtype: Float32}\n",
            "      - {name: ctr, dtype: Float32}\n      - {name: spend, dtype: Float64}\n",
        ),
    );
    dev.must_cli(&["features", "apply", &v2]);
    let read = online(
        &dev,
        "user_stats@v1:clicks,user_stats:spend",
        &["user_id=1"],
    );
    assert_eq!(read["values"]["clicks"][0], 40, "{read}");
    assert_eq!(read["statuses"]["spend"][0], "NULL_VALUE", "{read}");
    let (ok, _, err) = dev.cli(&[
        "features",
        "online",
        "--features",
        "user_stats@v1:spend",
        "--entity",
        "user_id=1",
    ]);
    assert!(!ok && err.contains("no feature `spend`"), "{err}");

    // statistics kept as rows are written; drift of a shifted day and not of a like one
    let mut days = String::from("user_id,event_timestamp,clicks,ctr\n");
    for (day, shift) in [("01", 0), ("02", 0), ("03", 80)] {
        for i in 0..500 {
            let clicks = 100 + (i * 37) % 50 + shift;
            let ctr = f64::from((i * 7) % 10) / 10.0;
            days.push_str(&format!(
                "{},2024-02-{day}T{:02}:00:00Z,{clicks},{ctr}\n",
                100 + i,
                i % 24
            ));
        }
    }
    let days = write(dir.path(), "days.csv", &days);
    dev.must_cli(&[
        "features",
        "push",
        "user_stats",
        "--file",
        &days,
        "--to",
        "offline",
    ]);
    let first_day_stats = |dev: &QuiverProcess| {
        dev.must_cli(&[
            "features",
            "stats",
            "user_stats",
            "--start",
            "2024-02-01T00:00:00Z",
            "--end",
            "2024-02-01T23:00:00Z",
        ])
    };
    let stats = first_day_stats(&dev);
    let clicks_line = stats.lines().find(|l| l.starts_with("clicks")).unwrap();
    let cells: Vec<&str> = clicks_line.split_whitespace().collect();
    assert_eq!(cells[1], "500", "{stats}");
    let mean: f64 = cells[3].parse().unwrap();
    assert!((mean - 124.5).abs() < 0.01, "{stats}");
    let drift = |window: &str| {
        dev.must_cli(&[
            "features",
            "drift",
            "user_stats",
            "--window",
            window,
            "--reference",
            "2024-02-01T00:00:00Z..2024-02-01T23:00:00Z",
        ])
    };
    let like = drift("2024-02-02T00:00:00Z..2024-02-02T23:00:00Z");
    assert!(like.contains("0 of 2 features drifted"), "{like}");
    let shifted = drift("2024-02-03T00:00:00Z..2024-02-03T23:00:00Z");
    assert!(shifted.contains("1 of 2 features drifted"), "{shifted}");
    let clicks_line = shifted.lines().find(|l| l.starts_with("clicks")).unwrap();
    assert!(clicks_line.ends_with("DRIFT"), "{shifted}");
    let (ok, _, err) = dev.cli(&[
        "features",
        "drift",
        "user_stats",
        "--window",
        "x",
        "--reference",
        "y",
    ]);
    assert!(!ok && err.contains("START..END"), "{err}");

    // kill -9: definitions, online values and the pinned set are all still there
    dev.kill9();
    let dev = must_spawn_dev(&data);
    let read = online(&dev, "user_stats:clicks", &["user_id=1"]);
    assert_eq!(read["values"]["clicks"][0], 40, "{read}");
    let mut args = vec!["features", "historical", "--entities", &entities];
    args.extend(["--service", "ranker", "--as-of-log", &position]);
    assert_eq!(dev.must_cli(&args), set);
    let again = first_day_stats(&dev);
    assert_eq!(again, stats, "statistics survive the kill");
}

/// Rows of `users` users, each with `clicks` = user × `factor`, at `at` (epoch seconds).
fn user_rows(users: i64, factor: i64, at: u64) -> String {
    let mut csv = String::from("user_id,event_timestamp,clicks,ctr\n");
    for u in 0..users {
        csv.push_str(&format!("{u},{at},{},0.5\n", u * factor));
    }
    csv
}

#[test]
fn a_three_node_cluster_serves_features_through_any_member_and_a_router_through_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, addresses) = crate::cluster::must_form_cluster(dir.path());
    let router = must_spawn(
        &["router", "--join", &addresses[1], "--listen", "127.0.0.1:0"],
        &[],
    );
    let defs = write(dir.path(), "defs.yaml", DEFINITIONS);
    // applied through a member that does not lead the meta group (forwarded to the leader)
    let out = nodes[1].must_cli(&["features", "apply", &defs]);
    assert!(out.contains("applied: 3 created"), "{out}");
    let now = now_seconds();
    let first = write(dir.path(), "first.csv", &user_rows(60, 1, now - 100));
    let out = router.must_cli(&["features", "push", "user_stats", "--file", &first]);
    assert!(out.contains("pushed 60 rows"), "{out}");

    let entities: Vec<String> = (0..60).map(|u| format!("user_id={u}")).collect();
    let refs: Vec<&str> = entities.iter().map(String::as_str).collect();
    let read = online(&nodes[0], "user_stats:clicks", &refs);
    let clicks: Vec<i64> = read["values"]["clicks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(clicks, (0..60).collect::<Vec<_>>(), "{read}");

    let entity_rows = write(
        dir.path(),
        "entities.csv",
        &(0..60).fold(String::from("user_id,event_timestamp\n"), |mut s, u| {
            s.push_str(&format!("{u},{now}\n"));
            s
        }),
    );
    let historical = |node: &QuiverProcess, extra: &[&str]| {
        let mut args = vec!["--features", "user_stats:clicks"];
        args.extend(extra);
        training_set(node, &entity_rows, &args)
    };
    let (set, position) = historical(&router, &[]);
    assert_eq!(
        position.split(',').count(),
        3,
        "one position per shard: {position}"
    );
    assert_eq!(set.lines().count(), 61);

    // a member is killed; writes and reads go on through the others
    nodes[2].kill9();
    let second = write(dir.path(), "second.csv", &user_rows(60, 2, now - 50));
    router.must_cli(&["features", "push", "user_stats", "--file", &second]);
    let read = online(&nodes[0], "user_stats:clicks", &refs);
    assert_eq!(read["values"]["clicks"][7], 14, "{read}");
    // the training set pinned before the kill reads the same through another member
    let (pinned, _) = historical(&nodes[1], &["--as-of-log", &position]);
    assert_eq!(pinned, set);
    let (fresh, _) = historical(&nodes[1], &[]);
    assert!(fresh.contains("\n7,"), "{fresh}");
    assert_ne!(fresh, set);
}
