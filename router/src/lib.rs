//! The router: quiver's front door, as a library, and the standalone `quiver router`.
//!
//! A front serves clients' `Collections` and `Points` ([`front`]) and `Features`
//! ([`features`]): it validates each request once, splits writes by shard, fans reads out and merges them ([`coordinator`]), reaching shards
//! through a [`quiver_core::shard::ShardClient`] — this process's own replicas directly when it
//! runs beside a node, every other node's `Shard` service over gRPC ([`remote_shards`]).
//!
//! - Every `quiver serve` process runs a front beside its node ([`Front::beside_node`]): the shard
//!   map is the node's meta replica's, catalogue changes are the node's when it leads the meta
//!   group (forwarded to the leader's front otherwise).
//! - `quiver router` runs a front alone ([`run`]): stateless, with the shard map fetched from the
//!   cluster ([`RemoteDirectory`]) and fetched again when an answer says it is stale; `Collections`
//!   and `Cluster` calls go to the meta group's leader ([`Upstream`]).
//!
//! Collection snapshots are served by [`snapshots`], read at one point in time by `export`.
//!
//! This crate links no storage, no consensus and no index graph.

pub mod coordinator;
pub mod directory;
mod export;
pub mod features;
pub mod front;
mod query;
pub mod remote_shards;
pub mod snapshots;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use quiver_core::convert::Limits;
use quiver_core::directory::{Catalogue, Directory};
use quiver_proto::v1::cluster_server::ClusterServer;
use quiver_proto::v1::collections_server::CollectionsServer;
use quiver_proto::v1::features_server::FeaturesServer;
use quiver_proto::v1::points_server::PointsServer;
use quiver_proto::v1::snapshots_server::SnapshotsServer;
use quiver_proto::wire::Channels;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tracing::info;

pub use coordinator::{Coordinator, LocalShards};
pub use directory::RemoteDirectory;
use features::FeaturesFront;
use front::{CatalogueRoute, ClusterForwarder, CollectionsFront, PointsFront};
use snapshots::SnapshotsFront;
pub use upstream::Upstream;

/// Errors of running a router.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("router: cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("router: {0}")]
    Serve(String),
    #[error("router: no cluster members given (--join)")]
    NoMembers,
}

/// The public services, sharing one coordinator.
pub struct Front {
    coordinator: Arc<Coordinator>,
    route: Arc<CatalogueRoute>,
    /// Set on a standalone router.
    upstream: Option<Arc<Upstream>>,
    /// Where collection snapshots are kept (None: none are).
    snapshot_dir: Option<PathBuf>,
}

impl Front {
    /// The front of a node's process: `directory` and `catalogue` are the node's, `local` its
    /// replicas; `limits` check requests, `channels` reach other nodes; a request no replica of
    /// a shard could serve within `timeout` fails with UNAVAILABLE.
    pub fn beside_node(
        directory: Arc<dyn Directory>,
        catalogue: Arc<dyn Catalogue>,
        local: LocalShards,
        limits: Limits,
        channels: Channels,
        timeout: Duration,
        embedder: Arc<quiver_embed::LazyEmbedder>,
    ) -> Self {
        let coordinator = Coordinator::new(
            directory,
            Some(local),
            limits,
            channels.clone(),
            timeout,
            embedder,
        );
        Self {
            coordinator: Arc::new(coordinator),
            route: Arc::new(CatalogueRoute::Local {
                catalogue,
                channels,
            }),
            upstream: None,
            snapshot_dir: None,
        }
    }

    /// The same front, keeping collection snapshots under `dir`.
    pub fn keep_snapshots_in(mut self, dir: PathBuf) -> Self {
        self.snapshot_dir = Some(dir);
        self
    }

    /// A standalone front for the cluster `members` belong to; the shard map is fetched once
    /// before it returns (and whenever an answer says it is stale).
    pub async fn standalone(members: Vec<String>, timeout: Duration) -> Self {
        let channels = Channels::default();
        let upstream = Arc::new(Upstream::new(members.clone(), channels.clone()));
        let directory = RemoteDirectory::new(members, channels.clone());
        directory.fetch().await;
        spawn_refresher(Arc::downgrade(&directory));
        // Batches are checked whole before they are split, against the limits that come with
        // the shard map (the default ones until a member has answered).
        let limits = Limits {
            request: quiver_config::LimitsConfig::default(),
            max_ef: quiver_config::SearchConfig::default().max_ef,
        };
        // (the model a router alone finds: the Python package's, asked of python3)
        let c = quiver_config::EmbedderConfig::default();
        let embedder = Arc::new(quiver_embed::LazyEmbedder::new(
            &c.model_dir,
            &c.python,
            c.threads,
            c.batch,
            c.queue,
        ));
        let coordinator = Coordinator::new(directory, None, limits, channels, timeout, embedder);
        Self {
            coordinator: Arc::new(coordinator),
            route: Arc::new(CatalogueRoute::Upstream(upstream.clone())),
            upstream: Some(upstream),
            snapshot_dir: None,
        }
    }

    pub fn coordinator(&self) -> &Arc<Coordinator> {
        &self.coordinator
    }

    /// `Collections`, taking requests of up to `max_request_bytes`.
    pub fn collections(&self, max_request_bytes: usize) -> CollectionsServer<CollectionsFront> {
        CollectionsServer::from_arc(Arc::new(CollectionsFront {
            coordinator: self.coordinator.clone(),
            route: self.route.clone(),
        }))
        .max_decoding_message_size(max_request_bytes)
    }

    /// The services the REST API calls (the same `Collections`, `Points` and `Snapshots`,
    /// in-process).
    pub fn rest_services(&self) -> quiver_rest::Services {
        quiver_rest::Services {
            collections: Arc::new(CollectionsFront {
                coordinator: self.coordinator.clone(),
                route: self.route.clone(),
            }),
            points: Arc::new(PointsFront(self.coordinator.clone())),
            snapshots: Arc::new(SnapshotsFront {
                coordinator: self.coordinator.clone(),
                dir: self.snapshot_dir.clone(),
            }),
        }
    }

    /// `Snapshots`.
    pub fn snapshots(&self) -> SnapshotsServer<SnapshotsFront> {
        SnapshotsServer::new(SnapshotsFront {
            coordinator: self.coordinator.clone(),
            dir: self.snapshot_dir.clone(),
        })
    }

    /// `Features`, taking requests of up to `max_request_bytes`.
    pub fn features(&self, max_request_bytes: usize) -> FeaturesServer<FeaturesFront> {
        FeaturesServer::new(FeaturesFront {
            coordinator: self.coordinator.clone(),
            route: self.route.clone(),
        })
        .max_decoding_message_size(max_request_bytes)
        .max_encoding_message_size(usize::MAX)
    }

    /// `Points`, taking requests of up to `max_request_bytes`.
    pub fn points(&self, max_request_bytes: usize) -> PointsServer<PointsFront> {
        PointsServer::new(PointsFront(self.coordinator.clone()))
            .max_decoding_message_size(max_request_bytes)
            .max_encoding_message_size(usize::MAX)
    }
}

/// How often a standalone router fetches the shard map again even when no answer said it was
/// stale, so changes made through other fronts (an alias moved, a collection created or dropped)
/// reach it.
const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// Fetches the shard map every [`REFRESH_EVERY`] until the directory is dropped.
fn spawn_refresher(directory: std::sync::Weak<RemoteDirectory>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(REFRESH_EVERY).await;
            let Some(directory) = directory.upgrade() else {
                return;
            };
            directory.fetch().await;
        }
    });
}

/// Serves a standalone router on `listen` (and, given `rest_listen`, the REST API there) for the
/// cluster that `members` belong to, keeping collection snapshots in `snapshot_dir` if given,
/// until `shutdown` completes; see [`serve`].
pub async fn run(
    listen: SocketAddr,
    rest_listen: Option<SocketAddr>,
    members: Vec<String>,
    timeout: Duration,
    snapshot_dir: Option<PathBuf>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RouterError> {
    if members.is_empty() {
        return Err(RouterError::NoMembers);
    }
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| RouterError::Listen { addr, source })
    };
    let listener = bind(listen).await?;
    let rest = match rest_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let local = listener
        .local_addr()
        .map_err(|e| RouterError::Serve(e.to_string()))?;
    info!(listen = %local, members = ?members, "quiver router serving gRPC");
    serve(members, timeout, snapshot_dir, listener, rest, shutdown).await
}

/// Serves a standalone router for the cluster `members` belong to on `listener` (and the REST
/// API on `rest`); a shard request that no replica could serve within `timeout` fails with
/// UNAVAILABLE.
pub async fn serve(
    members: Vec<String>,
    timeout: Duration,
    snapshot_dir: Option<PathBuf>,
    listener: TcpListener,
    rest: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RouterError> {
    let mut front = Front::standalone(members, timeout).await;
    if let Some(dir) = snapshot_dir {
        front = front.keep_snapshots_in(dir);
    }
    let (mut health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<CollectionsServer<CollectionsFront>>()
        .await;
    health.set_serving::<PointsServer<PointsFront>>().await;
    let upstream = front
        .upstream
        .clone()
        .ok_or_else(|| RouterError::Serve("a standalone front has an upstream".into()))?;
    let shutdown = shutdown.shared();
    // Accepted sockets are set TCP_NODELAY here: the builder's own `tcp_nodelay` applies only to
    // listeners it binds itself. Without it, the second of two answers in flight on one connection
    // waits for the peer's delayed ACK (~40 ms; Nagle).
    let incoming = TcpIncoming::from_listener(listener, true, None)
        .map_err(|e| RouterError::Serve(format!("listener: {e}")))?;
    // The REST API stops with the process, or when gRPC serving ends for any other reason.
    let (stop_rest, rest_stopped) = tokio::sync::oneshot::channel::<()>();
    let rest = rest.map(|listener| {
        let services = front.rest_services();
        let limit = front.coordinator.limits().request.max_request_bytes;
        let until = {
            let shutdown = shutdown.clone();
            async move {
                tokio::select! {
                    _ = shutdown => {}
                    _ = rest_stopped => {}
                }
            }
        };
        tokio::spawn(serve_rest(listener, services, limit, until))
    });
    let grpc = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(ClusterServer::new(ClusterForwarder(upstream)))
        .add_service(front.collections(usize::MAX))
        .add_service(front.points(usize::MAX))
        .add_service(front.features(usize::MAX))
        .add_service(front.snapshots())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    let _ = stop_rest.send(());
    let rest = match rest {
        Some(task) => task
            .await
            .map_err(|e| RouterError::Serve(format!("REST API: {e}")))?,
        None => Ok(()),
    };
    grpc.map_err(|e| RouterError::Serve(e.to_string()))?;
    rest.map_err(|e| RouterError::Serve(format!("REST API: {e}")))
}

/// Serves the REST API with `services` on `listener` until `shutdown` completes.
pub async fn serve_rest(
    listener: TcpListener,
    services: quiver_rest::Services,
    max_body_bytes: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(local) = listener.local_addr() {
        info!(listen = %local, "quiver REST API (Qdrant-compatible) serving");
    }
    quiver_rest::serve(listener, services, max_body_bytes, shutdown).await
}
