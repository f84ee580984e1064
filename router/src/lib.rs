//! The router: a stateless gRPC front for a quiver cluster.
//!
//! Clients talk to the router as they would to a node (`Collections`, `Points`).
//! - `Points` requests are coordinated here ([`Coordinator`]) over a cached shard map
//!   ([`RemoteDirectory`]): a write's points go to the leaders of the shards they hash to, reads
//!   fan out to every shard and are merged. "Not the leader" answers are followed, and a stale
//!   answer (a moved replica, an unknown collection) fetches the map again.
//! - `Collections` requests change or describe the shard map, so they go to the meta group's
//!   leader ([`Upstream`]), learned from any member and followed when it changes; so do
//!   `Cluster` requests (status, joins, removals, replica moves), for operators.
//!
//! A shard request that a replica could not serve (not the leader, no replica there, no quorum,
//! no answer in time) is tried at another replica until a deadline; writes carry idempotency
//! keys, so a retried write is applied once. `Collections` requests are retried only when they
//! certainly were not applied.

mod directory;
mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quiver_proto::v1 as pb;
use quiver_proto::v1::cluster_client::ClusterClient;
use quiver_proto::v1::cluster_server::{Cluster, ClusterServer};
use quiver_proto::v1::collections_client::CollectionsClient;
use quiver_proto::v1::collections_server::{Collections, CollectionsServer};
use quiver_proto::v1::points_server::{Points, PointsServer};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tracing::info;

pub use directory::RemoteDirectory;
use quiver_config::LimitsConfig;
use quiver_node::coordinator::Coordinator;
use quiver_node::raft::network::Peers;
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

/// Serves the router on `listen` for the cluster that `members` belong to, until `shutdown`
/// completes; see [`serve`].
pub async fn run(
    listen: SocketAddr,
    members: Vec<String>,
    timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RouterError> {
    if members.is_empty() {
        return Err(RouterError::NoMembers);
    }
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| RouterError::Listen {
            addr: listen,
            source,
        })?;
    let local = listener
        .local_addr()
        .map_err(|e| RouterError::Serve(e.to_string()))?;
    info!(listen = %local, members = ?members, "quiver router serving gRPC");
    serve(members, timeout, listener, shutdown).await
}

/// Serves the router for the cluster `members` belong to on `listener`; a shard request that no
/// replica could serve within `timeout` fails with UNAVAILABLE.
pub async fn serve(
    members: Vec<String>,
    timeout: Duration,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RouterError> {
    let upstream = Arc::new(Upstream::new(members.clone()));
    let directory = RemoteDirectory::new(members);
    directory.fetch().await;
    // The router checks a batch whole before splitting it, against the limits that come with
    // the shard map (the default ones until a member has answered).
    let coordinator = Arc::new(Coordinator::new(
        directory,
        LimitsConfig::default(),
        Peers::default(),
        timeout,
    ));
    let (mut health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<CollectionsServer<CollectionsRouter>>()
        .await;
    health.set_serving::<PointsServer<PointsRouter>>().await;
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(ClusterServer::new(ClusterRouter(upstream.clone())))
        .add_service(
            CollectionsServer::new(CollectionsRouter(upstream.clone()))
                .max_decoding_message_size(usize::MAX),
        )
        .add_service(
            PointsServer::new(PointsRouter(coordinator))
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
        )
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
        .map_err(|e| RouterError::Serve(e.to_string()))
}

/// Forwards `Collections` calls to the meta group's leader.
pub struct CollectionsRouter(Arc<Upstream>);

/// Forwards `Cluster` calls (status, membership, replica moves) to the meta group's leader, so
/// operators can point the CLI at the router too.
pub struct ClusterRouter(Arc<Upstream>);

/// Coordinates `Points` calls over the collection's shards.
pub struct PointsRouter(Arc<Coordinator>);

/// Sends a request through the upstream; it is cloned for each attempt.
async fn forward<Req, Resp, F, Fut>(
    upstream: &Upstream,
    request: Request<Req>,
    send: F,
) -> Result<Response<Resp>, Status>
where
    Req: Clone,
    F: Fn(Channel, Req) -> Fut,
    Fut: Future<Output = Result<Response<Resp>, Status>>,
{
    let request = request.into_inner();
    upstream
        .call(|channel| send(channel, request.clone()))
        .await
}

fn collections(channel: Channel) -> CollectionsClient<Channel> {
    CollectionsClient::new(channel).max_decoding_message_size(usize::MAX)
}

#[tonic::async_trait]
impl Collections for CollectionsRouter {
    async fn create(
        &self,
        r: Request<pb::CreateCollectionRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        forward(
            &self.0,
            r,
            |c, q| async move { collections(c).create(q).await },
        )
        .await
    }

    async fn get(
        &self,
        r: Request<pb::GetCollectionRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        forward(
            &self.0,
            r,
            |c, q| async move { collections(c).get(q).await },
        )
        .await
    }

    async fn list(
        &self,
        r: Request<pb::ListCollectionsRequest>,
    ) -> Result<Response<pb::ListCollectionsResponse>, Status> {
        forward(
            &self.0,
            r,
            |c, q| async move { collections(c).list(q).await },
        )
        .await
    }

    async fn delete(
        &self,
        r: Request<pb::DeleteCollectionRequest>,
    ) -> Result<Response<pb::DeleteCollectionResponse>, Status> {
        forward(
            &self.0,
            r,
            |c, q| async move { collections(c).delete(q).await },
        )
        .await
    }
}

fn cluster(channel: Channel) -> ClusterClient<Channel> {
    ClusterClient::new(channel)
}

#[tonic::async_trait]
impl Cluster for ClusterRouter {
    async fn identify(
        &self,
        r: Request<pb::IdentifyRequest>,
    ) -> Result<Response<pb::NodeInfo>, Status> {
        forward(
            &self.0,
            r,
            |c, q| async move { cluster(c).identify(q).await },
        )
        .await
    }

    async fn init(
        &self,
        _r: Request<pb::InitRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        Err(Status::invalid_argument(
            "init forms a cluster of one node: call it on that node, not on a router",
        ))
    }

    async fn add_node(
        &self,
        r: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        forward(
            &self.0,
            r,
            |c, q| async move { cluster(c).add_node(q).await },
        )
        .await
    }

    async fn remove_node(
        &self,
        r: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        forward(
            &self.0,
            r,
            |c, q| async move { cluster(c).remove_node(q).await },
        )
        .await
    }

    async fn status(
        &self,
        r: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        forward(&self.0, r, |c, q| async move { cluster(c).status(q).await }).await
    }

    async fn placements(
        &self,
        r: Request<pb::PlacementsRequest>,
    ) -> Result<Response<pb::PlacementsResponse>, Status> {
        forward(
            &self.0,
            r,
            |c, q| async move { cluster(c).placements(q).await },
        )
        .await
    }

    async fn move_shard(
        &self,
        r: Request<pb::MoveShardRequest>,
    ) -> Result<Response<pb::MoveShardResponse>, Status> {
        forward(
            &self.0,
            r,
            |c, q| async move { cluster(c).move_shard(q).await },
        )
        .await
    }

    async fn init_shard(
        &self,
        _r: Request<pb::InitShardRequest>,
    ) -> Result<Response<pb::GroupStatus>, Status> {
        Err(Status::invalid_argument(
            "init_shard is for nodes, not routers",
        ))
    }

    async fn change_shard_replicas(
        &self,
        _r: Request<pb::ChangeShardReplicasRequest>,
    ) -> Result<Response<pb::GroupStatus>, Status> {
        Err(Status::invalid_argument(
            "change_shard_replicas is for nodes, not routers",
        ))
    }
}

#[tonic::async_trait]
impl Points for PointsRouter {
    async fn upsert(
        &self,
        r: Request<pb::UpsertRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        self.0.upsert(r.into_inner()).await.map(Response::new)
    }

    async fn get(
        &self,
        r: Request<pb::GetPointsRequest>,
    ) -> Result<Response<pb::GetPointsResponse>, Status> {
        self.0.get(r.into_inner()).await.map(Response::new)
    }

    async fn delete(
        &self,
        r: Request<pb::DeletePointsRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        self.0.delete(r.into_inner()).await.map(Response::new)
    }

    async fn search(
        &self,
        r: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        self.0.search(r.into_inner()).await.map(Response::new)
    }

    async fn scroll(
        &self,
        r: Request<pb::ScrollRequest>,
    ) -> Result<Response<pb::ScrollResponse>, Status> {
        self.0.scroll(r.into_inner()).await.map(Response::new)
    }
}
