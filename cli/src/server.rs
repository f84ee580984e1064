//! `quiver dev`, `quiver serve` and `quiver router`: build the configuration, start logging, run
//! until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use quiver_config::Config;

#[derive(Args)]
pub struct DevArgs {
    /// Where data lives.
    #[arg(long, default_value = "./quiver-data")]
    data_dir: PathBuf,
    /// gRPC listen address (with --nodes: the router's).
    #[arg(long, default_value = "127.0.0.1:6334")]
    listen: SocketAddr,
    /// Run a local cluster of this many node processes behind a router instead of one process.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// The Qdrant-compatible REST API's listen address.
    #[arg(long, default_value = "127.0.0.1:6333")]
    rest_listen: SocketAddr,
}

#[derive(Args)]
pub struct RouterArgs {
    /// Addresses (ip:port) of cluster members, comma-separated; the router learns the rest.
    #[arg(long, value_delimiter = ',', required = true)]
    join: Vec<String>,
    /// gRPC listen address for clients.
    #[arg(long, default_value = "127.0.0.1:6335")]
    listen: SocketAddr,
    /// Also serve the Qdrant-compatible REST API on this address.
    #[arg(long)]
    rest_listen: Option<SocketAddr>,
    /// Keep collection snapshots made through this router here (none are kept without it).
    #[arg(long)]
    snapshot_dir: Option<PathBuf>,
    /// How long a request may spend finding a replica that serves it (leader changes, moved
    /// replicas, no quorum) before it fails with UNAVAILABLE, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Threads that run the router's requests. A router mostly waits on the network; one
    /// thread hands each request on without waking another (cross-thread wake-ups were most of
    /// its time per request); raise it when one core is not enough for the load.
    #[arg(long, default_value_t = 1)]
    worker_threads: usize,
}

impl RouterArgs {
    pub fn worker_threads(&self) -> usize {
        self.worker_threads.max(1)
    }
}

pub async fn router(args: RouterArgs) -> anyhow::Result<()> {
    crate::logging::init("info")?;
    let timeout = std::time::Duration::from_millis(args.timeout_ms);
    quiver_router::run(
        args.listen,
        args.rest_listen,
        args.join,
        timeout,
        args.snapshot_dir,
        shutdown_signal(),
    )
    .await
    .context("quiver router failed")
}

pub async fn dev(args: DevArgs) -> anyhow::Result<()> {
    if args.nodes > 1 {
        crate::logging::init("info")?;
        let listen = crate::dev_cluster::Listen {
            grpc: args.listen,
            rest: args.rest_listen,
        };
        return crate::dev_cluster::run(args.nodes, &args.data_dir, listen, shutdown_signal())
            .await;
    }
    let mut config = Config::default();
    config.node.data_dir = args.data_dir;
    config.node.listen = args.listen;
    config.node.rest_listen = args.rest_listen.to_string();
    config.validate()?;
    run(config).await
}

pub async fn serve(file: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(file.as_deref())?;
    run(config).await
}

async fn run(config: Config) -> anyhow::Result<()> {
    crate::logging::init(&config.log.level)?;
    quiver_server::run(config, shutdown_signal())
        .await
        .context("quiver node failed")
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested");
}
