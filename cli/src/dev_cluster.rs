//! `quiver dev --nodes N`: a local cluster in one command. N `quiver serve` child processes on
//! loopback, formed into one cluster, and a router in this process on `--listen`.
//!
//! Each node's configuration is written once under `DATA_DIR/nodeI.toml` with a port chosen at
//! first start, so a restart finds its members where the membership says they are. Children get
//! SIGTERM when the command stops (and SIGKILL if it is dropped without that).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use quiver_proto::v1 as pb;
use quiver_proto::v1::cluster_client::ClusterClient;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Starts the cluster and the router; returns when `shutdown` completes.
pub async fn run(
    nodes: usize,
    data_dir: &Path,
    listen: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let exe = std::env::current_exe().context("cannot find the quiver binary")?;
    let mut children = Vec::new();
    let mut addresses = Vec::new();
    for id in 1..=nodes as u64 {
        let address = node_config(data_dir, id)?;
        let config = data_dir.join(format!("node{id}.toml"));
        let mut child = Command::new(&exe)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a node")?;
        relay_logs(&mut child, id);
        children.push(child);
        addresses.push(address);
    }
    form_cluster(&addresses).await?;
    tracing::info!(nodes, router = %listen, "local cluster ready");
    let timeout = Duration::from_millis(quiver_config::ClusterConfig::default().write_timeout_ms);
    let result = quiver_router::run(listen, addresses, timeout, shutdown).await;
    for child in &mut children {
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
    for child in &mut children {
        let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    }
    result.context("router failed")
}

/// Writes node `id`'s configuration on first start (with a free loopback port) and returns its
/// address.
fn node_config(data_dir: &Path, id: u64) -> anyhow::Result<String> {
    let path = data_dir.join(format!("node{id}.toml"));
    if !path.exists() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let text = format!(
            "# written by `quiver dev --nodes`; keep the port: the cluster's membership records it\n\
             [node]\ndata_dir = {:?}\nlisten = \"127.0.0.1:{port}\"\n\n[cluster]\nnode_id = {id}\nbootstrap = false\n",
            data_dir.join(format!("node{id}")),
        );
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let config = quiver_config::Config::load_from(Some(&path), std::iter::empty())?;
    Ok(config.node.listen.to_string())
}

fn relay_logs(child: &mut Child, id: u64) {
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[node {id}] {line}");
            }
        });
    }
}

/// Initializes the cluster on the first node (once) and adds the others.
async fn form_cluster(addresses: &[String]) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let first = format!("http://{}", addresses[0]);
    let mut client = loop {
        if let Ok(c) = ClusterClient::connect(first.clone()).await {
            break c;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("node 1 did not start");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    match client.init(pb::InitRequest {}).await {
        Ok(_) => {}
        Err(e) if e.code() == tonic::Code::AlreadyExists => {}
        Err(e) => bail!("cannot form the cluster: {}", e.message()),
    }
    for address in &addresses[1..] {
        loop {
            match client
                .add_node(pb::AddNodeRequest {
                    address: address.clone(),
                })
                .await
            {
                Ok(_) => break,
                Err(e) if tokio::time::Instant::now() > deadline => {
                    bail!("cannot add the node at {address}: {}", e.message())
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    Ok(())
}
