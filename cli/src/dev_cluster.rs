//! `quiver dev --nodes N`: a local cluster in one command. N `quiver serve` child processes on
//! loopback, formed into one cluster, and a router in this process on `--listen`.
//!
//! Each node's configuration is written once under `DATA_DIR/nodeI.toml`. Node I listens on the
//! router's port + 10 + I (6345, 6346, ... beside the default 6334), outside the ephemeral range,
//! so a restart finds its members where the membership says they are (with `--listen` port 0, on
//! free ports chosen at first start). A node that exits is reported and restarted; on stop, the
//! children get SIGTERM (and SIGKILL if they do not stop within 30 s), and SIGTERM too when this
//! process dies without stopping them (a kill -9).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use quiver_proto::v1 as pb;
use quiver_proto::v1::cluster_client::ClusterClient;
use quiver_proto::wire::leader_address;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Node ports sit this far above the router's port (node 1 at +11).
const NODE_PORT_OFFSET: u16 = 10;
/// How long the nodes may take to form (or re-form) the cluster.
const FORM_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the router listens.
pub struct Listen {
    pub grpc: SocketAddr,
    /// The REST API's address.
    pub rest: SocketAddr,
}

/// Starts the cluster and the router; returns when `shutdown` completes.
pub async fn run(
    nodes: usize,
    data_dir: &Path,
    listen: Listen,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let exe = std::env::current_exe().context("cannot find the quiver binary")?;
    let mut addresses = Vec::new();
    for id in 1..=nodes as u64 {
        addresses.push(node_config(data_dir, id, listen.grpc)?);
    }
    let (stop, stopping) = watch::channel(false);
    let supervisors: Vec<JoinHandle<()>> = (1..=nodes as u64)
        .map(|id| {
            let config = data_dir.join(format!("node{id}.toml"));
            tokio::spawn(supervise(exe.clone(), config, id, stopping.clone()))
        })
        .collect();
    let result = async {
        form_cluster(&addresses).await?;
        tracing::info!(nodes, router = %listen.grpc, "local cluster ready");
        let timeout =
            Duration::from_millis(quiver_config::ClusterConfig::default().write_timeout_ms);
        let snapshots = Some(data_dir.join("snapshots"));
        quiver_router::run(
            listen.grpc,
            Some(listen.rest),
            addresses,
            timeout,
            snapshots,
            shutdown,
        )
        .await
        .context("router failed")
    }
    .await;
    let _ = stop.send(true);
    for supervisor in supervisors {
        let _ = supervisor.await;
    }
    result
}

/// Writes node `id`'s configuration on first start and returns its address.
fn node_config(data_dir: &Path, id: u64, router: SocketAddr) -> anyhow::Result<String> {
    let path = data_dir.join(format!("node{id}.toml"));
    if !path.exists() {
        let port = match router.port() {
            0 => std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port(),
            p => {
                let port = u16::try_from(id)
                    .ok()
                    .and_then(|id| p.checked_add(NODE_PORT_OFFSET)?.checked_add(id))
                    .with_context(|| {
                        format!("no port for node {id} above the router's port {p}")
                    })?;
                if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                    bail!(
                        "port {port} for node {id} (the router's port + {NODE_PORT_OFFSET} + {id}) \
                         is in use; free it or choose another --listen"
                    );
                }
                port
            }
        };
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

/// Runs node `id` until `stopping` turns true, restarting it whenever it exits: at once after a
/// long run, after a pause that doubles (up to 30 s) while it keeps exiting soon after start.
async fn supervise(exe: PathBuf, config: PathBuf, id: u64, mut stopping: watch::Receiver<bool>) {
    let mut pause = Duration::from_secs(1);
    loop {
        let started = Instant::now();
        let mut command = Command::new(&exe);
        command
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        stop_with_parent(&mut command);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                tracing::error!(node = id, "cannot start node {id}: {e}");
                return;
            }
        };
        relay_logs(&mut child, id);
        let exited = tokio::select! {
            status = child.wait() => Some(status),
            _ = stopping.wait_for(|s| *s) => None,
        };
        let Some(status) = exited else {
            terminate(&mut child).await;
            return;
        };
        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        if started.elapsed() > Duration::from_secs(30) {
            pause = Duration::from_secs(1);
        }
        tracing::warn!(
            node = id,
            "node {id} exited ({status}); restarting it in {} s",
            pause.as_secs()
        );
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}

/// Has the node get SIGTERM when this process dies, however it dies (kill -9 included), so no
/// node outlives its `dev`. (Linux's parent-death signal, set in the child before it runs.)
fn stop_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: between fork and exec the closure calls only async-signal-safe functions
        // (prctl, getppid, _exit) and touches no memory of the parent.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent died before the signal was set up.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
}

/// SIGTERM, then SIGKILL if the node has not stopped within 30 s.
async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    if tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
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

/// Forms the cluster: initializes it on the first node (once), then adds each node the
/// membership does not list yet, through whichever node leads the meta group. On a restart
/// every node is already a member and nothing is changed.
async fn form_cluster(addresses: &[String]) -> anyhow::Result<()> {
    let deadline = Instant::now() + FORM_TIMEOUT;
    let mut last_error = String::from("no node answered");
    while Instant::now() < deadline {
        match try_form(addresses).await {
            Ok(()) => return Ok(()),
            Err(e) => last_error = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!(
        "the nodes did not form a cluster within {} s: {last_error}",
        FORM_TIMEOUT.as_secs()
    )
}

async fn try_form(addresses: &[String]) -> anyhow::Result<()> {
    let mut client = connect(&addresses[0]).await?;
    match client.init(pb::InitRequest {}).await {
        Ok(_) => {}
        Err(e) if e.code() == tonic::Code::AlreadyExists => {}
        Err(e) => bail!("cannot form the cluster: {}", e.message()),
    }
    let status = client
        .status(pb::StatusRequest {})
        .await
        .map_err(|e| anyhow::anyhow!("node 1: {}", e.message()))?
        .into_inner();
    for address in addresses {
        if status.members.iter().any(|m| &m.address == address) {
            continue;
        }
        add_node(&mut client, address).await?;
    }
    Ok(())
}

/// Adds the node at `address`, following one "not the leader" answer to the leader.
async fn add_node(
    client: &mut ClusterClient<tonic::transport::Channel>,
    address: &str,
) -> anyhow::Result<()> {
    let request = || pb::AddNodeRequest {
        address: address.to_string(),
    };
    let failed =
        |e: tonic::Status| anyhow::anyhow!("cannot add the node at {address}: {}", e.message());
    match client.add_node(request()).await {
        Ok(_) => Ok(()),
        Err(e) => match leader_address(&e) {
            Some(leader) => {
                connect(&leader)
                    .await?
                    .add_node(request())
                    .await
                    .map_err(failed)?;
                Ok(())
            }
            None => Err(failed(e)),
        },
    }
}

async fn connect(address: &str) -> anyhow::Result<ClusterClient<tonic::transport::Channel>> {
    ClusterClient::connect(format!("http://{address}"))
        .await
        .with_context(|| format!("node at {address} does not answer"))
}
