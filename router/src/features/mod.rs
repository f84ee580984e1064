//! `Features`, for clients: feature definitions, pushes, online serving and point-in-time
//! retrieval.
//!
//! Definitions are a catalogue change, made on the meta leader as collections are ([`apply`]);
//! every front validates requests against the registry its directory holds. Feature values
//! live in the shards of the feature store's placement ([`FEATURE_STORE`]), sharded by entity
//! key: a push is checked whole and then split by shard ([`push`]); reads fan out to the shards
//! that hold the entities asked for ([`online`], [`historical`]); a materialisation is a
//! command through each shard's log ([`materialize`]). Searches may join features onto their
//! results ([`enrich`]); statistics and drift come from summaries kept at write time
//! ([`stats`]).

mod enrich;
mod historical;
mod materialize;
mod online;
mod push;
mod stats;

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::Stream;
use quiver_core::convert::features as convert;
use quiver_core::features::{FeaturesAnswer, FeaturesRead, FEATURE_STORE};
use quiver_core::placement::Placement;
use quiver_core::shard::{ReadConsistency, ShardRead};
use quiver_core::Error;
use quiver_features::definition::ViewSelection;
use quiver_features::value::Micros;
use quiver_features::{FeatureError, Registry};
use quiver_proto::v1 as pb;
use quiver_proto::v1::features_client::FeaturesClient;
use quiver_proto::v1::features_server::Features;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

pub(crate) use enrich::Enrichment;

use crate::coordinator::{route, Coordinator};
use crate::front::{forwarded, leader_elsewhere, CatalogueRoute};

/// `Features`, for clients.
pub struct FeaturesFront {
    pub(crate) coordinator: Arc<Coordinator>,
    pub(crate) route: Arc<CatalogueRoute>,
}

fn features_client(channel: Channel) -> FeaturesClient<Channel> {
    FeaturesClient::new(channel).max_decoding_message_size(usize::MAX)
}

/// The status of a feature-store error.
pub(crate) fn status(e: FeatureError) -> Status {
    Error::from(e).into()
}

/// The time now, in microseconds since the epoch.
pub(crate) fn now_micros() -> Micros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as Micros)
}

/// The definitions this front knows, learnt again once if they lack what `has` looks for: an
/// apply made through another front a moment ago may not have reached this one.
pub(crate) async fn registry_having(
    coordinator: &Coordinator,
    has: impl Fn(&Registry) -> bool,
) -> Arc<Registry> {
    let registry = coordinator.directory().feature_registry();
    if has(&registry) {
        return registry;
    }
    coordinator.directory().refresh().await;
    coordinator.directory().feature_registry()
}

/// The features `features` (or `service`'s) name, grouped by view, and the definitions they
/// were read from; `field` names the request's field in errors. The definitions are learnt
/// again once when they do not resolve, as [`registry_having`] does.
pub(crate) async fn selections(
    coordinator: &Coordinator,
    field: &str,
    features: &[String],
    service: Option<&str>,
) -> Result<(Arc<Registry>, Vec<ViewSelection>), Status> {
    let registry = coordinator.directory().feature_registry();
    if let Ok(selected) = registry.select(field, features, service) {
        return Ok((registry, selected));
    }
    coordinator.directory().refresh().await;
    let registry = coordinator.directory().feature_registry();
    let selected = registry.select(field, features, service).map_err(status)?;
    Ok((registry, selected))
}

/// The feature store's placement, learning the shard map again (a few times, briefly) if it is
/// not known yet: the apply that placed it may not have reached this directory.
pub(crate) async fn feature_store(coordinator: &Coordinator) -> Result<Placement, Status> {
    let directory = coordinator.directory();
    for _ in 0..3 {
        match directory.placement(FEATURE_STORE) {
            Err(Error::NotFound(_)) => {
                directory.refresh().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return Ok(other?),
        }
    }
    directory.placement(FEATURE_STORE).map_err(|e| match e {
        Error::NotFound(_) => Status::failed_precondition(
            "the feature store holds no values yet: apply a feature view first",
        ),
        other => other.into(),
    })
}

/// Reads shard `shard` of the feature store with `request`, from a replica `consistency`
/// allows (ANY: the nearest; otherwise its leader).
pub(crate) async fn read_shard(
    coordinator: &Coordinator,
    placement: &Placement,
    shard: usize,
    consistency: ReadConsistency,
    request: &FeaturesRead,
) -> Result<FeaturesAnswer, Status> {
    coordinator
        .on_shard(
            placement,
            shard,
            route(consistency),
            |group, client| async move {
                let read = ShardRead {
                    group,
                    collection: FEATURE_STORE.into(),
                    consistency,
                };
                client.features_read(&read, request).await
            },
        )
        .await
}

/// Reads every shard of the feature store with `request`, from its leader, in shard order.
pub(crate) async fn read_every_shard(
    coordinator: &Coordinator,
    placement: &Placement,
    request: &FeaturesRead,
) -> Result<Vec<FeaturesAnswer>, Status> {
    let reads = (0..placement.shards.len()).map(|shard| {
        read_shard(
            coordinator,
            placement,
            shard,
            ReadConsistency::Leader,
            request,
        )
    });
    futures::future::join_all(reads).await.into_iter().collect()
}

/// Refuses selections whose features would share an output name.
#[allow(clippy::result_large_err)] // tonic's Status, as every handler returns
pub(crate) fn check_output_names(
    selections: &[ViewSelection],
    full_feature_names: bool,
    taken: &[String],
) -> Result<Vec<String>, Status> {
    let mut names: Vec<String> = taken.to_vec();
    let mut out = Vec::new();
    for s in selections {
        for f in &s.features {
            let name = s.output_name(&f.name, full_feature_names);
            if names.contains(&name) {
                return Err(Error::invalid(
                    "features",
                    format!(
                        "`{name}` would name two columns; ask for full_feature_names \
                         (view__feature)"
                    ),
                )
                .into());
            }
            names.push(name.clone());
            out.push(name);
        }
    }
    Ok(out)
}

type HistoricalStream =
    Pin<Box<dyn Stream<Item = Result<pb::HistoricalFeaturesChunk, Status>> + Send>>;
type MaterializeStream =
    Pin<Box<dyn Stream<Item = Result<pb::MaterializeProgress, Status>> + Send>>;

#[tonic::async_trait]
impl Features for FeaturesFront {
    async fn apply(
        &self,
        request: Request<pb::ApplyFeaturesRequest>,
    ) -> Result<Response<pb::ApplyFeaturesResponse>, Status> {
        let (catalogue, channels) = match self.route.as_ref() {
            CatalogueRoute::Upstream(upstream) => {
                let req = request.into_inner();
                let answer = upstream
                    .call(|c| {
                        let req = req.clone();
                        async move { features_client(c).apply(req).await }
                    })
                    .await;
                // Requests through this router see the new definitions at once.
                self.coordinator.directory().refresh().await;
                return answer;
            }
            CatalogueRoute::Local {
                catalogue,
                channels,
            } => (catalogue, channels),
        };
        let req = request.get_ref();
        let set = convert::definition_set(req)?;
        match catalogue
            .apply_features(set, req.dry_run, &req.request_id)
            .await
        {
            Ok(plan) => Ok(Response::new(pb::ApplyFeaturesResponse {
                plan: convert::plan_to_proto(&plan),
                applied: !req.dry_run,
            })),
            Err(e) => match leader_elsewhere(&e, &request) {
                Some(leader) => {
                    features_client(CatalogueRoute::channel(channels, &leader)?)
                        .apply(forwarded(request.into_inner()))
                        .await
                }
                None => Err(e.into()),
            },
        }
    }

    async fn list_definitions(
        &self,
        request: Request<pb::ListDefinitionsRequest>,
    ) -> Result<Response<pb::FeatureDefinitions>, Status> {
        // (a standalone router asks the meta leader: an apply plans against what this says)
        if let CatalogueRoute::Upstream(upstream) = self.route.as_ref() {
            let req = request.into_inner();
            return upstream
                .call(|c| async move { features_client(c).list_definitions(req).await })
                .await;
        }
        let registry = self.coordinator.directory().feature_registry();
        Ok(Response::new(convert::definitions_to_proto(&registry)))
    }

    async fn push(
        &self,
        request: Request<Streaming<pb::PushFeaturesRequest>>,
    ) -> Result<Response<pb::PushFeaturesResponse>, Status> {
        let rows = push::push(&self.coordinator, request.into_inner()).await?;
        Ok(Response::new(pb::PushFeaturesResponse { rows }))
    }

    async fn get_online_features(
        &self,
        request: Request<pb::GetOnlineFeaturesRequest>,
    ) -> Result<Response<pb::GetOnlineFeaturesResponse>, Status> {
        Ok(Response::new(
            online::get(&self.coordinator, request.into_inner()).await?,
        ))
    }

    type GetHistoricalFeaturesStream = HistoricalStream;

    async fn get_historical_features(
        &self,
        request: Request<pb::GetHistoricalFeaturesRequest>,
    ) -> Result<Response<HistoricalStream>, Status> {
        let stream = historical::get(self.coordinator.clone(), request.into_inner()).await?;
        Ok(Response::new(stream))
    }

    async fn get_stats(
        &self,
        request: Request<pb::FeatureStatsRequest>,
    ) -> Result<Response<pb::FeatureStatsResponse>, Status> {
        Ok(Response::new(
            stats::get(&self.coordinator, request.into_inner()).await?,
        ))
    }

    type MaterializeStream = MaterializeStream;

    async fn materialize(
        &self,
        request: Request<pb::MaterializeRequest>,
    ) -> Result<Response<MaterializeStream>, Status> {
        let progress = materialize::run(self.coordinator.clone(), request.into_inner()).await?;
        Ok(Response::new(Box::pin(progress)))
    }
}
