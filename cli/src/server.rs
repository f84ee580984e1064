//! `quiver dev` and `quiver serve`: build the configuration, start logging, run the node until
//! SIGTERM or Ctrl-C.

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
    /// gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:6334")]
    listen: SocketAddr,
}

pub async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let mut config = Config::default();
    config.node.data_dir = args.data_dir;
    config.node.listen = args.listen;
    config.validate()?;
    run(config).await
}

pub async fn serve(file: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(file.as_deref())?;
    run(config).await
}

async fn run(config: Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .with_context(|| format!("log.level `{}` is not a valid filter", config.log.level))?;
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    quiver_node::run(config, shutdown_signal())
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
