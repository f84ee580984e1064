//! One `quiver serve` (or `quiver dev`) process: a storage node and, beside it, the router's
//! front for clients, on one gRPC listener.
//!
//! The node serves `Raft`, `Shard` and `Cluster`; the front serves `Collections` and `Points`,
//! reaching this node's replicas in-process and every other node's over `Shard`. Also served:
//! `grpc.health.v1` and server reflection. Changed HNSW graphs are dumped in the background, and
//! all of them once more when the process stops.

#[cfg(feature = "testing")]
pub mod testing;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use quiver_config::Config;
use quiver_core::convert::Limits;
use quiver_core::{Error, Result};
use quiver_node::service::{ClusterService, RaftService, ShardService};
use quiver_node::{LocalShards, Node};
use quiver_proto::v1::cluster_server::ClusterServer;
use quiver_proto::v1::collections_server::CollectionsServer;
use quiver_proto::v1::points_server::PointsServer;
use quiver_proto::v1::raft_server::RaftServer;
use quiver_proto::v1::shard_server::ShardServer;
use quiver_router::front::{CollectionsFront, PointsFront};
use quiver_router::{serve_rest, Front};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};

/// Opens the node described by `config`, listens on `config.node.listen` and serves until
/// `shutdown` completes.
pub async fn run(
    mut config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listen = config.node.listen;
    let data_dir = config.node.data_dir.clone();
    let node_id = config.cluster.node_id;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| Error::Serve(format!("cannot listen on {listen}: {e}")))?;
    let rest = match config.node.rest_address() {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
            Error::Serve(format!("cannot listen on {addr} (node.rest_listen): {e}"))
        })?),
        None => None,
    };
    let local = listener
        .local_addr()
        .map_err(|e| Error::Serve(e.to_string()))?;
    // With an ephemeral port, peers must learn the port actually bound.
    if config.cluster.advertise.is_empty() {
        config.cluster.advertise = local.to_string();
    }
    let node = Node::open(config).await?;
    info!(listen = %local, node_id, data_dir = %data_dir.display(), "quiver node serving gRPC");
    serve(node, listener, rest, shutdown).await
}

/// The front of `node`'s process.
pub fn front(node: &Arc<Node>) -> Front {
    let config = node.config();
    quiver_router::Front::beside_node(
        node.clone(),
        node.clone(),
        quiver_router::LocalShards {
            node: node.id(),
            address: node.address().to_string(),
            shards: Arc::new(LocalShards::new(node.clone())),
        },
        Limits {
            request: config.limits.clone(),
            max_ef: config.search.max_ef,
        },
        node.peers().clone(),
        Duration::from_millis(config.cluster.write_timeout_ms),
        node.embedder().clone(),
    )
    .keep_snapshots_in(config.node.data_dir.join("snapshots"))
}

/// Serves `node` and its front on `listener` (and the REST API on `rest`) until `shutdown`
/// completes, then dumps changed graphs.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    rest: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let shutdown = shutdown.shared();
    let max_bytes = node.config().limits.max_request_bytes;
    let (mut health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<CollectionsServer<CollectionsFront>>()
        .await;
    health.set_serving::<PointsServer<PointsFront>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(quiver_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Serve(format!("reflection: {e}")))?;
    let front = front(&node);
    // Accepted sockets are set TCP_NODELAY here: the builder's own `tcp_nodelay` applies only to
    // listeners it binds itself. Without it, the second of two answers in flight on one connection
    // waits for the peer's delayed ACK (~40 ms; Nagle).
    let incoming = TcpIncoming::from_listener(listener, true, None)
        .map_err(|e| Error::Serve(format!("listener: {e}")))?;
    // The REST API stops with the process, or when gRPC serving ends for any other reason.
    let (stop_rest, rest_stopped) = tokio::sync::oneshot::channel::<()>();
    let rest = rest.map(|listener| {
        let until = {
            let shutdown = shutdown.clone();
            async move {
                tokio::select! {
                    _ = shutdown => {}
                    _ = rest_stopped => {}
                }
            }
        };
        tokio::spawn(serve_rest(
            listener,
            front.rest_services(),
            max_bytes,
            until,
        ))
    });
    let result = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(front.collections(max_bytes))
        .add_service(front.points(max_bytes).max_encoding_message_size(max_bytes))
        .add_service(front.features(max_bytes))
        .add_service(front.snapshots())
        .add_service(
            ShardServer::new(ShardService::new(LocalShards::new(node.clone())))
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(
            RaftServer::new(RaftService::new(node.clone()))
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(ClusterServer::new(ClusterService::new(node.clone())))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::Serve(e.to_string()));
    let _ = stop_rest.send(());
    if let Some(rest) = rest {
        match rest.await {
            Ok(Err(e)) => warn!(error = %e, "the REST API stopped with an error"),
            Err(e) => warn!(error = %e, "the REST API task failed"),
            Ok(Ok(())) => {}
        }
    }
    node.shutdown().await;
    info!("quiver node stopped");
    result
}
