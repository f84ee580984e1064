//! The README's tour, run through the CLI against `quiver dev` and `quiver serve`.

use std::io::Write;

use serde_json::Value;

use crate::support::*;

#[test]
fn tour_create_import_search_with_filter() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = must_spawn_dev(&dir.path().join("data"));
    node.must_cli(&[
        "collection",
        "create",
        "docs",
        "--dim",
        "4",
        "--metric",
        "cosine",
        "--index",
        "hnsw",
        "--m",
        "16",
        "--ef-construction",
        "100",
        "--payload-index",
        "category:keyword",
    ]);
    let file = dir.path().join("points.jsonl");
    let mut f = std::fs::File::create(&file).unwrap();
    for i in 0..300u32 {
        let cat = ["ml", "db", "os"][(i % 3) as usize];
        let x = i as f32;
        writeln!(
            f,
            r#"{{"id": {i}, "vector": [{}, {}, {}, 1.0], "payload": {{"category": "{cat}", "year": {}}}}}"#,
            x.sin(),
            x.cos(),
            (x / 10.0).sin(),
            2000 + i % 25
        )
        .unwrap();
    }
    drop(f);
    let out = node.must_cli(&[
        "points",
        "import",
        "docs",
        "--file",
        file.to_str().unwrap(),
        "--batch-size",
        "64",
    ]);
    assert!(out.contains("imported 300 points"), "{out}");

    let out = node.must_cli(&[
        "search",
        "docs",
        "--vector",
        "[0.0, 1.0, 0.0, 1.0]",
        "--top-k",
        "5",
        "--filter",
        r#"{"category": {"$eq": "ml"}, "year": {"$gte": 2010}}"#,
        "--format",
        "json",
        "--with-payload",
    ]);
    let line: Value = serde_json::from_str(out.trim()).unwrap();
    let results = line["results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    for r in results {
        assert_eq!(r["payload"]["category"], "ml");
        assert!(r["payload"]["year"].as_i64().unwrap() >= 2010);
        assert!(r["id"].as_u64().unwrap() % 3 == 0);
        assert!(r["score"].as_f64().is_some());
    }

    // several queries from an .fvecs file: one JSON object per query
    let queries = dir.path().join("q.fvecs");
    let rows = vec![
        vec![0.0, 1.0, 0.0, 1.0],
        vec![1.0, 0.0, 0.0, 1.0],
        vec![0.5, 0.5, 0.5, 1.0],
    ];
    std::fs::write(&queries, quiver_index::vecs::encode_fvecs(&rows)).unwrap();
    let out = node.must_cli(&[
        "search",
        "docs",
        "--query-file",
        queries.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(out.lines().count(), 3);
    for l in out.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["results"].as_array().unwrap().len(), 10);
    }

    let info: Value =
        serde_json::from_str(&node.must_cli(&["collection", "info", "docs"])).unwrap();
    assert_eq!(info["points"], 300);
    let list = node.must_cli(&["collection", "list"]);
    assert_eq!(list.lines().count(), 1);
    let got = node.must_cli(&["points", "get", "docs", "3", "4"]);
    assert_eq!(got.lines().count(), 2);
    let table = node.must_cli(&["points", "get", "docs", "3", "--format", "table"]);
    let rows: Vec<&str> = table.lines().collect();
    assert!(rows.len() == 2 && rows[0].starts_with("id"), "{table}");
    assert!(
        rows[1].starts_with('3') && rows[1].contains(r#""category":"ml""#),
        "{table}"
    );
    let out = node.must_cli(&[
        "search",
        "docs",
        "--vector",
        "[0.0, 1.0, 0.0, 1.0]",
        "--top-k",
        "2",
        "--format",
        "json",
        "--with-vector",
    ]);
    let line: Value = serde_json::from_str(out.trim()).unwrap();
    for r in line["results"].as_array().unwrap() {
        assert_eq!(r["vector"].as_array().map(Vec::len), Some(4), "{out}");
    }

    // a payload index created on the collection as it is, then dropped
    let indexed = |info: &str| -> Vec<Value> {
        let info: Value = serde_json::from_str(info).unwrap();
        info["payload_indexes"].as_array().unwrap().clone()
    };
    let created = node.must_cli(&["collection", "index", "create", "docs", "year:integer"]);
    assert!(
        indexed(&created).contains(&serde_json::json!({"key": "year", "type": "integer"})),
        "{created}"
    );
    let dropped = node.must_cli(&["collection", "index", "drop", "docs", "year"]);
    assert_eq!(
        indexed(&dropped),
        vec![serde_json::json!({"key": "category", "type": "keyword"})],
        "{dropped}"
    );
    let deleted = node.must_cli(&[
        "points",
        "delete",
        "docs",
        "--filter",
        r#"{"category": "os"}"#,
    ]);
    assert!(deleted.contains("deleted 100 points"), "{deleted}");
    let scrolled = node.must_cli(&["points", "scroll", "docs"]);
    assert_eq!(scrolled.lines().count(), 200);

    // errors: a clear message and a failing exit code
    let (ok, _, err) = node.cli(&["search", "nope", "--vector", "[1,0,0,0]"]);
    assert!(
        !ok && err.contains("NotFound") && err.contains("nope"),
        "{err}"
    );
    let (ok, _, err) = node.cli(&["search", "docs", "--vector", "[1,0]"]);
    assert!(
        !ok && err.contains("vector") && err.contains("expected 4 dimensions"),
        "{err}"
    );
    let (ok, _, err) = node.cli(&[
        "search",
        "docs",
        "--vector",
        "[1,0,0,0]",
        "--filter",
        r#"{"year": {"$foo": 1}}"#,
    ]);
    assert!(!ok && err.contains("filter_json.year.$foo"), "{err}");
    assert!(!err.contains("backtrace"), "{err}");

    node.must_cli(&["collection", "drop", "docs"]);
    assert!(node.must_cli(&["collection", "list"]).trim().is_empty());

    // SIGTERM stops the node cleanly
    let status = node.must_terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn serve_reads_a_config_file_and_environment_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("quiver.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\ndata_dir = {:?}\nlisten = \"127.0.0.1:0\"\n\n[limits]\nmax_batch_points = 100\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let node = must_spawn(
        &["serve", "--config", config.to_str().unwrap()],
        &[("QUIVER_LIMITS__MAX_BATCH_POINTS", "2")],
    );
    node.must_cli(&["collection", "create", "c", "--dim", "2", "--metric", "l2"]);
    let file = dir.path().join("p.jsonl");
    std::fs::write(
        &file,
        "{\"id\":1,\"vector\":[1,2]}\n{\"id\":2,\"vector\":[1,3]}\n{\"id\":3,\"vector\":[1,4]}\n",
    )
    .unwrap();
    let (ok, _, err) = node.cli(&[
        "points",
        "import",
        "c",
        "--file",
        file.to_str().unwrap(),
        "--batch-size",
        "3",
    ]);
    assert!(!ok && err.contains("limits.max_batch_points"), "{err}");

    // a bad config is refused at start with every problem named
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[limits]\nmax_batch_points = 0\nmax_top_k = 0\n[nodes]\n",
    )
    .unwrap();
    let out = quiver()
        .args(["serve", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("nodes"), "{err}");
    std::fs::write(&bad, "[limits]\nmax_batch_points = 0\nmax_top_k = 0\n").unwrap();
    let out = quiver()
        .args(["serve", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("limits.max_batch_points") && err.contains("limits.max_top_k"),
        "{err}"
    );
}

/// The README's full-text steps without a model: text fields declared, lines that carry them
/// beside the vector, `--wait` until searchable, then BM25, hybrid with a vector and a BEIR
/// query file whose answers carry their query ids.
#[test]
fn tour_text_fields_bm25_hybrid_and_query_files() {
    let dir = tempfile::tempdir().unwrap();
    let node = must_spawn_dev(&dir.path().join("data"));
    node.must_cli(&[
        "collection",
        "create",
        "papers",
        "--dim",
        "2",
        "--metric",
        "cosine",
        "--text-field",
        "text",
        "--text-field",
        "tags:whitespace",
    ]);
    let file = dir.path().join("papers.jsonl");
    std::fs::write(
        &file,
        concat!(
            "{\"id\": 1, \"vector\": [1, 0], \"text\": \"BRCA1 mutations raise the risk of breast cancer\"}\n",
            "{\"id\": 2, \"vector\": [0, 1], \"text\": \"Mitochondria power the cell\", \"tags\": [\"Biology\"]}\n",
            "{\"id\": 3, \"vector\": [1, 1], \"payload\": {\"year\": 2024}, \"text\": \"Cancer cells divide\"}\n",
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    node.must_cli(&["points", "import", "papers", "--file", file, "--wait"]);
    let json = |out: &str| -> Vec<Value> {
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let ids = |answer: &Value| -> Vec<u64> {
        answer["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_u64().unwrap())
            .collect()
    };
    // searchable at once after --wait; stemmed ("cancers" finds "cancer")
    let out = node.must_cli(&[
        "search",
        "papers",
        "--text",
        "cancers",
        "--mode",
        "bm25",
        "--format",
        "json",
        "--with-payload",
    ]);
    let answer = &json(&out)[0];
    let mut found = ids(answer);
    found.sort();
    assert_eq!(found, [1, 3], "{out}");
    let third = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == 3);
    assert_eq!(third.unwrap()["payload"]["year"], 2024, "{out}");
    // hybrid: the vector and the text, fused and explained
    let out = node.must_cli(&[
        "search",
        "papers",
        "--text",
        "cell",
        "--vector",
        "[0, 1]",
        "--explain",
        "--format",
        "json",
    ]);
    let answer = &json(&out)[0];
    assert_eq!(ids(answer)[0], 2, "{out}");
    assert!(
        answer["results"][0]["explain"]["text"]["rank"].as_u64() == Some(1),
        "{out}"
    );
    // BEIR queries, one answer line each with its id
    let queries = dir.path().join("q.jsonl");
    std::fs::write(
        &queries,
        "{\"_id\": \"q1\", \"text\": \"breast cancer\"}\n{\"_id\": \"q2\", \"text\": \"Biology\"}\n",
    )
    .unwrap();
    let out = node.must_cli(&[
        "search",
        "papers",
        "--query-file",
        queries.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let answers = json(&out);
    assert_eq!(answers.len(), 2, "{out}");
    assert_eq!(answers[0]["query_id"], "q1");
    assert_eq!(ids(&answers[0])[0], 1);
    assert_eq!(answers[1]["query_id"], "q2");
    assert_eq!(ids(&answers[1]), [2]);
    // a key that is neither a point's nor a text field is refused, naming the text fields
    std::fs::write(
        dir.path().join("typo.jsonl"),
        "{\"id\": 9, \"vector\": [1, 0], \"txt\": \"x\"}\n",
    )
    .unwrap();
    let typo = dir.path().join("typo.jsonl");
    let (ok, _, err) = node.cli(&[
        "points",
        "import",
        "papers",
        "--file",
        typo.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("`txt`") && err.contains("text, tags"), "{err}");
    // and a query for text of a collection without text fields says so
    node.must_cli(&[
        "collection",
        "create",
        "plain",
        "--dim",
        "2",
        "--metric",
        "l2",
    ]);
    let (ok, _, err) = node.cli(&["search", "plain", "--text", "cancer"]);
    assert!(!ok);
    assert!(
        err.contains("text: collection `plain` declares no text fields"),
        "{err}"
    );
}
