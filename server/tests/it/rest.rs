//! The Qdrant-compatible REST API, driven by the real `qdrant-client` Python package
//! (`rest/tests/qdrant_client_compat.py`) against a real server.
//!
//! The package is installed once into a virtual environment under Cargo's test tmp directory
//! (PyPI is reachable where the tests run); `QUIVER_QDRANT_PYTHON` names a Python that has it
//! already instead.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// The qdrant-client version the compatibility claims are made against.
const QDRANT_CLIENT: &str = "qdrant-client==1.20.0";

fn has_qdrant_client(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import qdrant_client"])
        .status()
        .is_ok_and(|s| s.success())
}

/// A Python with qdrant-client, installing it into a virtual environment the first time.
fn qdrant_python() -> PathBuf {
    if let Ok(python) = std::env::var("QUIVER_QDRANT_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("qdrant-client-venv");
    let python = venv.join("bin").join("python");
    if has_qdrant_client(&python) {
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
        .args(["-m", "pip", "install", "--quiet", QDRANT_CLIENT])
        .status()
        .expect("pip");
    assert!(installed.success(), "pip install {QDRANT_CLIENT} failed");
    python
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
