//! The Qdrant-compatible REST API, driven by the real `qdrant-client` Python package
//! (`rest/tests/qdrant_client_compat.py`) against a real server.
//!
//! The package is installed once into a virtual environment under Cargo's test tmp directory
//! (PyPI is reachable where the tests run); `QUIVER_QDRANT_PYTHON` names a Python that has it
//! already instead.

use std::path::{Path, PathBuf};

use crate::support::*;

/// The qdrant-client version the compatibility claims are made against.
const QDRANT_CLIENT: &str = "qdrant-client==1.20.0";

/// A Python with qdrant-client, installing it into a virtual environment the first time.
fn qdrant_python() -> PathBuf {
    if let Ok(python) = std::env::var("QUIVER_QDRANT_PYTHON") {
        return PathBuf::from(python);
    }
    python_with("qdrant_client", QDRANT_CLIENT, "qdrant-client-venv", &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_qdrant_client_works_against_the_rest_api() {
    let python = tokio::task::spawn_blocking(qdrant_python).await.unwrap();
    let f = must_start().await;
    let url = format!("http://{}", f.server.rest_addr);
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../rest/tests/qdrant_client_compat.py");
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(&url)
        .output()
        .await
        .expect("run the qdrant-client script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "qdrant-client checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("passed"), "{stdout}");
    println!("{}", stdout.trim());
}
