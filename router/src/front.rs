//! The public services a front serves: `Collections` and `Points` (and, on a standalone router,
//! the forwarding of `Cluster`).
//!
//! `Points` requests are coordinated here ([`Coordinator`]). `Collections` requests change or
//! describe the catalogue: a front beside a node serves them from the node's meta replica and
//! makes changes through its [`Catalogue`] when the node leads the meta group, and otherwise
//! forwards the request, once, to the leader's front; a standalone router forwards them to the
//! meta leader ([`Upstream`]), following it when it changes.

use std::sync::Arc;

use futures::future::join_all;
use quiver_core::convert;
use quiver_core::directory::Catalogue;
use quiver_core::Error;
use quiver_proto::v1 as pb;
use quiver_proto::v1::cluster_client::ClusterClient;
use quiver_proto::v1::cluster_server::Cluster;
use quiver_proto::v1::collections_client::CollectionsClient;
use quiver_proto::v1::collections_server::Collections;
use quiver_proto::v1::points_server::Points;
use quiver_proto::wire::headers::FORWARDED;
use quiver_proto::wire::Channels;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::coordinator::Coordinator;
use crate::features::Enrichment;
use crate::upstream::Upstream;

/// Where catalogue requests are served.
pub enum CatalogueRoute {
    /// By this process's node; when it does not lead the meta group, the front forwards the
    /// request, once, to the leader's front.
    Local {
        catalogue: Arc<dyn Catalogue>,
        channels: Channels,
    },
    /// By the meta leader, found from the cluster's members.
    Upstream(Arc<Upstream>),
}

/// `Collections`, for clients.
pub struct CollectionsFront {
    pub(crate) coordinator: Arc<Coordinator>,
    pub(crate) route: Arc<CatalogueRoute>,
}

/// `Points`, for clients.
pub struct PointsFront(pub(crate) Arc<Coordinator>);

/// `Cluster` on a standalone router: forwarded to the meta group's leader, so operators can point
/// the CLI at the router too.
pub struct ClusterForwarder(pub(crate) Arc<Upstream>);

fn collections(channel: Channel) -> CollectionsClient<Channel> {
    CollectionsClient::new(channel).max_decoding_message_size(usize::MAX)
}

/// `message` as a request forwarded on a client's behalf.
pub(crate) fn forwarded<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(FORWARDED, MetadataValue::from(1u64));
    request
}

/// Sends a `Collections` request to the meta leader through `$upstream`, cloned for each attempt.
macro_rules! upstream {
    ($upstream:expr, $request:ident, $rpc:ident) => {{
        let req = $request.into_inner();
        $upstream
            .call(|c| {
                let req = req.clone();
                async move { collections(c).$rpc(req).await }
            })
            .await
    }};
}

/// Where a refused catalogue change should go instead: the leader's address, unless the request
/// was forwarded once already (two fronts with stale views could bounce it).
pub(crate) fn leader_elsewhere<T>(error: &Error, request: &Request<T>) -> Option<String> {
    match error {
        Error::NotLeader {
            address: Some(address),
            ..
        } if !request.metadata().contains_key(FORWARDED) => Some(address.clone()),
        _ => None,
    }
}

impl CatalogueRoute {
    #[allow(clippy::result_large_err)] // tonic's Status, as every handler returns
    pub(crate) fn channel(channels: &Channels, address: &str) -> Result<Channel, Status> {
        channels
            .channel(address)
            .map_err(|e| Error::Internal(format!("address `{address}`: {e}")).into())
    }
}

/// The aliases `directory` knows, of `collection` only unless it is empty.
fn alias_list(
    directory: &dyn quiver_core::directory::Directory,
    collection: &str,
) -> pb::ListAliasesResponse {
    let aliases = directory
        .aliases()
        .into_iter()
        .filter(|(_, c)| collection.is_empty() || c == collection)
        .map(|(alias, collection)| pb::Alias { alias, collection })
        .collect();
    pb::ListAliasesResponse { aliases }
}

#[tonic::async_trait]
impl Collections for CollectionsFront {
    async fn update_aliases(
        &self,
        request: Request<pb::UpdateAliasesRequest>,
    ) -> Result<Response<pb::ListAliasesResponse>, Status> {
        let (catalogue, channels) = match self.route.as_ref() {
            CatalogueRoute::Upstream(upstream) => {
                let answer = upstream!(upstream, request, update_aliases);
                // Requests through this router follow the change at once.
                self.coordinator.directory().refresh().await;
                return answer;
            }
            CatalogueRoute::Local {
                catalogue,
                channels,
            } => (catalogue, channels),
        };
        let actions = convert::alias_actions(request.get_ref())?;
        match catalogue.update_aliases(actions).await {
            Ok(()) => Ok(Response::new(alias_list(
                self.coordinator.directory().as_ref(),
                "",
            ))),
            Err(e) => match leader_elsewhere(&e, &request) {
                Some(leader) => {
                    collections(CatalogueRoute::channel(channels, &leader)?)
                        .update_aliases(forwarded(request.into_inner()))
                        .await
                }
                None => Err(e.into()),
            },
        }
    }

    async fn list_aliases(
        &self,
        request: Request<pb::ListAliasesRequest>,
    ) -> Result<Response<pb::ListAliasesResponse>, Status> {
        if let CatalogueRoute::Upstream(upstream) = self.route.as_ref() {
            return upstream!(upstream, request, list_aliases);
        }
        let collection = request.into_inner().collection;
        Ok(Response::new(alias_list(
            self.coordinator.directory().as_ref(),
            &collection,
        )))
    }

    async fn create_payload_index(
        &self,
        request: Request<pb::CreatePayloadIndexRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        if let CatalogueRoute::Upstream(upstream) = self.route.as_ref() {
            return upstream!(upstream, request, create_payload_index);
        }
        let req = request.get_ref();
        let field = req
            .field
            .as_ref()
            .ok_or_else(|| Error::invalid("field", "required: {key, type}"))?;
        let (key, field_type) = convert::payload_index_field("field", field)?;
        let collection = req.collection.clone();
        self.set_payload_index(
            request,
            &collection,
            &key,
            Some(field_type),
            |mut c, r| async move { c.create_payload_index(r).await },
        )
        .await
    }

    async fn drop_payload_index(
        &self,
        request: Request<pb::DropPayloadIndexRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        if let CatalogueRoute::Upstream(upstream) = self.route.as_ref() {
            return upstream!(upstream, request, drop_payload_index);
        }
        let req = request.get_ref();
        convert::payload_path("key", &req.key)?;
        let (collection, key) = (req.collection.clone(), req.key.clone());
        self.set_payload_index(request, &collection, &key, None, |mut c, r| async move {
            c.drop_payload_index(r).await
        })
        .await
    }

    async fn create(
        &self,
        request: Request<pb::CreateCollectionRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        let (catalogue, channels) = match self.route.as_ref() {
            CatalogueRoute::Upstream(upstream) => {
                return upstream!(upstream, request, create);
            }
            CatalogueRoute::Local {
                catalogue,
                channels,
            } => (catalogue, channels),
        };
        let limits = self.coordinator.limits();
        let spec = convert::collection_spec(request.get_ref(), &limits.request, limits.max_ef)?;
        if spec.embed.is_some() {
            let model = self.coordinator.embedding_pool().await?;
            if model.dim() != spec.dim as usize {
                return Err(Status::invalid_argument(format!(
                    "dim: {} differs from the embedding model's {} (embed needs vectors of the \
                     model's length)",
                    spec.dim,
                    model.dim()
                )));
            }
        }
        let shard_count = convert::shard_count(request.get_ref().shard_count)?;
        let replication_factor = convert::replication_factor(request.get_ref().replication_factor)?;
        let name = spec.name.clone();
        let created = catalogue
            .create_collection(
                spec,
                shard_count,
                replication_factor,
                &request.get_ref().request_id,
            )
            .await;
        match created {
            Ok(()) => Ok(Response::new(self.coordinator.info(&name).await?)),
            Err(e) => match leader_elsewhere(&e, &request) {
                Some(leader) => {
                    collections(CatalogueRoute::channel(channels, &leader)?)
                        .create(forwarded(request.into_inner()))
                        .await
                }
                None => Err(e.into()),
            },
        }
    }

    async fn get(
        &self,
        request: Request<pb::GetCollectionRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        if let CatalogueRoute::Upstream(upstream) = self.route.as_ref() {
            return upstream!(upstream, request, get);
        }
        Ok(Response::new(
            self.coordinator.info(&request.get_ref().name).await?,
        ))
    }

    async fn list(
        &self,
        request: Request<pb::ListCollectionsRequest>,
    ) -> Result<Response<pb::ListCollectionsResponse>, Status> {
        if let CatalogueRoute::Upstream(upstream) = self.route.as_ref() {
            return upstream!(upstream, request, list);
        }
        // Placements named with a `.` are the database's own (the feature store's), not
        // collections.
        let placements = self.coordinator.directory().placements();
        let infos = join_all(
            placements
                .iter()
                .filter(|p| !p.spec.name.starts_with('.'))
                .map(|p| self.coordinator.info(&p.spec.name)),
        )
        .await;
        let collections = infos.into_iter().collect::<Result<_, _>>()?;
        Ok(Response::new(pb::ListCollectionsResponse { collections }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteCollectionRequest>,
    ) -> Result<Response<pb::DeleteCollectionResponse>, Status> {
        let (catalogue, channels) = match self.route.as_ref() {
            CatalogueRoute::Upstream(upstream) => {
                return upstream!(upstream, request, delete);
            }
            CatalogueRoute::Local {
                catalogue,
                channels,
            } => (catalogue, channels),
        };
        let name = convert::collection_name("name", &request.get_ref().name)?;
        match catalogue.drop_collection(&name).await {
            Ok(()) => Ok(Response::new(pb::DeleteCollectionResponse {})),
            Err(e) => match leader_elsewhere(&e, &request) {
                Some(leader) => {
                    collections(CatalogueRoute::channel(channels, &leader)?)
                        .delete(forwarded(request.into_inner()))
                        .await
                }
                None => Err(e.into()),
            },
        }
    }
}

impl CollectionsFront {
    /// Creates or (`field_type` None) drops a payload index through the catalogue, forwarding
    /// to the meta leader's front as `forward` does when this node does not lead.
    async fn set_payload_index<T, F, Fut>(
        &self,
        request: Request<T>,
        collection: &str,
        key: &str,
        field_type: Option<quiver_index::payload_index::FieldType>,
        forward: F,
    ) -> Result<Response<pb::CollectionInfo>, Status>
    where
        F: FnOnce(CollectionsClient<Channel>, Request<T>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<pb::CollectionInfo>, Status>>,
    {
        let CatalogueRoute::Local {
            catalogue,
            channels,
        } = self.route.as_ref()
        else {
            return Err(
                Error::Internal("a standalone front forwards catalogue changes".into()).into(),
            );
        };
        let name = convert::collection_name("collection", collection)?;
        match catalogue.set_payload_index(&name, key, field_type).await {
            Ok(()) => Ok(Response::new(self.coordinator.info(&name).await?)),
            Err(e) => match leader_elsewhere(&e, &request) {
                Some(leader) => {
                    let client = collections(CatalogueRoute::channel(channels, &leader)?);
                    forward(client, forwarded(request.into_inner())).await
                }
                None => Err(e.into()),
            },
        }
    }
}

#[tonic::async_trait]
impl Points for PointsFront {
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
        let mut req = r.into_inner();
        let enrich =
            Enrichment::prepare(&self.0, req.with_features.take(), &mut req.with_payload).await?;
        let mut response = self.0.search(req).await?;
        if let Some(enrich) = enrich {
            enrich.apply(&self.0, &mut response.results).await?;
        }
        Ok(Response::new(response))
    }

    async fn search_batch(
        &self,
        r: Request<pb::SearchBatchRequest>,
    ) -> Result<Response<pb::SearchBatchResponse>, Status> {
        self.0.search_batch(r.into_inner()).await.map(Response::new)
    }

    async fn query(
        &self,
        r: Request<pb::QueryRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let mut req = r.into_inner();
        let enrich =
            Enrichment::prepare(&self.0, req.with_features.take(), &mut req.with_payload).await?;
        let mut response = self.0.query(req).await?;
        if let Some(enrich) = enrich {
            enrich.apply(&self.0, &mut response.results).await?;
        }
        Ok(Response::new(response))
    }

    async fn scroll(
        &self,
        r: Request<pb::ScrollRequest>,
    ) -> Result<Response<pb::ScrollResponse>, Status> {
        self.0.scroll(r.into_inner()).await.map(Response::new)
    }

    async fn count(
        &self,
        r: Request<pb::CountRequest>,
    ) -> Result<Response<pb::CountResponse>, Status> {
        self.0.count(r.into_inner()).await.map(Response::new)
    }

    async fn update_payload(
        &self,
        r: Request<pb::UpdatePayloadRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        self.0
            .update_payload(r.into_inner())
            .await
            .map(Response::new)
    }

    async fn update_vectors(
        &self,
        r: Request<pb::UpdateVectorsRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        self.0
            .update_vectors(r.into_inner())
            .await
            .map(Response::new)
    }
}

/// Sends a request to the meta leader through the upstream; it is cloned for each attempt.
macro_rules! forward {
    ($self:ident, $request:ident, $rpc:ident) => {{
        let req = $request.into_inner();
        $self
            .0
            .call(|c| {
                let req = req.clone();
                async move { ClusterClient::new(c).$rpc(req).await }
            })
            .await
    }};
}

#[tonic::async_trait]
impl Cluster for ClusterForwarder {
    async fn identify(
        &self,
        r: Request<pb::IdentifyRequest>,
    ) -> Result<Response<pb::NodeInfo>, Status> {
        forward!(self, r, identify)
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
        forward!(self, r, add_node)
    }

    async fn remove_node(
        &self,
        r: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        forward!(self, r, remove_node)
    }

    async fn status(
        &self,
        r: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        forward!(self, r, status)
    }

    async fn placements(
        &self,
        r: Request<pb::PlacementsRequest>,
    ) -> Result<Response<pb::PlacementsResponse>, Status> {
        forward!(self, r, placements)
    }

    async fn move_shard(
        &self,
        r: Request<pb::MoveShardRequest>,
    ) -> Result<Response<pb::MoveShardResponse>, Status> {
        forward!(self, r, move_shard)
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
