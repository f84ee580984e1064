//! The router's shard map: fetched from any cluster member (`Cluster.Placements`), cached, and
//! fetched again when a coordinator meets a stale answer (a moved replica, an unknown
//! collection). The meta leader's request limits come with it.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use quiver_core::convert::{self, Limits};
use quiver_core::directory::Directory;
use quiver_core::encoding;
use quiver_core::placement::{NodeId, Placement, ShardPlacement};
use quiver_core::Error;
use quiver_features::Registry;
use quiver_proto::v1 as pb;
use quiver_proto::v1::cluster_client::ClusterClient;
use quiver_proto::wire::Channels;
use tracing::{debug, warn};

const FETCH_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Default)]
struct ShardMap {
    placements: BTreeMap<String, Placement>,
    /// Alias -> collection name.
    aliases: BTreeMap<String, String>,
    addresses: BTreeMap<NodeId, String>,
    /// The meta leader's request limits.
    limits: Option<Limits>,
    features: Arc<Registry>,
}

/// The shard map as this router last fetched it.
pub struct RemoteDirectory {
    members: Mutex<Vec<String>>,
    map: RwLock<ShardMap>,
    channels: Channels,
    /// Completed fetches; callers that waited for a fetch in progress take its result.
    fetches: tokio::sync::Mutex<u64>,
}

impl RemoteDirectory {
    /// `members`: addresses (`ip:port`) of some cluster members.
    pub fn new(members: Vec<String>, channels: Channels) -> Arc<Self> {
        Arc::new(Self {
            members: Mutex::new(members),
            map: RwLock::default(),
            channels,
            fetches: tokio::sync::Mutex::new(0),
        })
    }

    /// Fetches the shard map from the first member that answers. Concurrent callers share one
    /// fetch: whoever waited while another fetch ran takes that one's result.
    pub async fn fetch(&self) {
        let seen = self.fetches.try_lock().map(|n| *n).ok();
        let mut fetches = self.fetches.lock().await;
        if seen.is_none_or(|n| n != *fetches) {
            return;
        }
        *fetches += 1;
        let members = self.members.lock().clone();
        for member in members {
            let Ok(channel) = self.channels.channel(&member) else {
                continue;
            };
            let answer = tokio::time::timeout(
                FETCH_TIMEOUT,
                ClusterClient::new(channel).placements(pb::PlacementsRequest {}),
            )
            .await;
            let Ok(Ok(answer)) = answer else {
                debug!(member, "member did not answer a placements request");
                continue;
            };
            match shard_map(answer.into_inner()) {
                Ok(map) => {
                    if !map.addresses.is_empty() {
                        *self.members.lock() = map.addresses.values().cloned().collect();
                    }
                    *self.map.write() = map;
                    return;
                }
                Err(e) => warn!(member, error = %e, "unreadable shard map"),
            }
        }
    }
}

fn shard_map(answer: pb::PlacementsResponse) -> Result<ShardMap, Error> {
    let mut placements = BTreeMap::new();
    for info in answer.collections {
        let spec = match convert::spec_from_info(&info) {
            Ok(spec) => spec,
            Err(e) => {
                warn!(collection = %info.name, error = %e, "skipping an unreadable collection");
                continue;
            }
        };
        let shards = info
            .shards
            .iter()
            .map(|s| ShardPlacement {
                shard: s.shard,
                group: s.group,
                replicas: s.replicas.iter().map(|r| r.node).collect(),
                epoch: 0,
            })
            .collect();
        placements.insert(
            info.name.clone(),
            Placement {
                id: info.collection_id,
                spec,
                replication_factor: info.replication_factor,
                shards,
                ready: true,
            },
        );
    }
    let addresses = answer
        .nodes
        .into_iter()
        .map(|n| (n.id, n.address))
        .collect();
    let aliases = answer
        .aliases
        .into_iter()
        .map(|a| (a.alias, a.collection))
        .collect();
    let features = match answer.feature_registry.is_empty() {
        true => Registry::default(),
        false => encoding::decode("feature_registry", &answer.feature_registry)?,
    };
    Ok(ShardMap {
        placements,
        aliases,
        addresses,
        features: Arc::new(features),
        limits: answer.limits.as_ref().map(convert::limits_from_pb),
    })
}

impl Directory for RemoteDirectory {
    fn aliases(&self) -> BTreeMap<String, String> {
        self.map.read().aliases.clone()
    }

    fn placement(&self, name: &str) -> Result<Placement, Error> {
        let map = self.map.read();
        let name = map.aliases.get(name).map_or(name, String::as_str);
        map.placements
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("collection `{name}`")))
    }

    fn placements(&self) -> Vec<Placement> {
        self.map.read().placements.values().cloned().collect()
    }

    fn address(&self, node: NodeId) -> Option<String> {
        self.map.read().addresses.get(&node).cloned()
    }

    fn refresh(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.fetch())
    }

    fn feature_registry(&self) -> Arc<Registry> {
        self.map.read().features.clone()
    }

    fn limits(&self) -> Option<Limits> {
        self.map.read().limits.clone()
    }
}
