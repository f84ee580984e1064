//! The router is the front door, not storage: it must build without the node, the storage
//! engine, consensus or the index graph. Checked on the resolved dependency tree.

use std::process::Command;

#[test]
fn the_router_links_no_storage_consensus_or_graph() {
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "--locked",
            "-p",
            "quiver-router",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8_lossy(&output.stdout);
    assert!(tree.contains("quiver-core"), "{tree}");
    for crate_name in ["quiver-node", "rocksdb", "openraft", "hnsw_rs"] {
        assert!(
            !tree
                .lines()
                .any(|l| l.starts_with(&format!("{crate_name} "))),
            "quiver-router depends on {crate_name}:\n{tree}"
        );
    }
}
