//! The `quiver` binary: parses flags, sets up logging and calls into the libraries.

mod client;
mod dev_cluster;
mod logging;
mod server;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// quiver: a Raft-replicated database for vectors, hybrid search, features and models.
#[derive(Parser)]
#[command(name = "quiver", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node with no configuration: data under ./quiver-data, gRPC on 127.0.0.1:6334
    /// (with --nodes N: a local cluster of N node processes behind a router on that address).
    Dev(server::DevArgs),
    /// Run a node from a configuration file (QUIVER_* environment variables override it).
    Serve {
        /// TOML configuration file (see config/quiver.example.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Create, inspect, list and drop collections.
    #[command(subcommand)]
    Collection(client::CollectionCommand),
    /// Import, get, delete and scroll points.
    #[command(subcommand)]
    Points(client::PointsCommand),
    /// The feature store: apply definitions, push rows, read online features, build training
    /// sets.
    #[command(subcommand)]
    Features(client::FeaturesCommand),
    /// Search a collection by vector.
    Search(client::SearchArgs),
    /// Run a router: one endpoint for clients that spreads requests over the cluster's shards.
    Router(server::RouterArgs),
    /// Form a cluster, add and remove nodes, show status.
    #[command(subcommand)]
    Cluster(client::ClusterCommand),
    /// Move shard replicas between nodes.
    #[command(subcommand)]
    Shard(client::ShardCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // A reader that stopped reading (`quiver points scroll c | head`) is not a failure.
        Err(e) if is_broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Router(args) = &cli.command {
        builder.worker_threads(args.worker_threads());
    }
    let runtime = builder.enable_all().build()?;
    match cli.command {
        Command::Dev(args) => runtime.block_on(server::dev(args)),
        Command::Serve { config } => runtime.block_on(server::serve(config)),
        Command::Collection(cmd) => runtime.block_on(client::collection(cmd)),
        Command::Points(cmd) => runtime.block_on(client::points(cmd)),
        Command::Features(cmd) => runtime.block_on(client::features(cmd)),
        Command::Search(args) => runtime.block_on(client::search(args)),
        Command::Cluster(cmd) => runtime.block_on(client::cluster(cmd)),
        Command::Router(args) => runtime.block_on(server::router(args)),
        Command::Shard(cmd) => runtime.block_on(client::shard(cmd)),
    }
}
