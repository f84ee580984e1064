//! What a coordinator needs to know about the cluster: where collections' shards are
//! ([`Directory`]), and who can change the catalogue ([`Catalogue`]).
//!
//! A node answers from its own meta replica (no network); a standalone router from the shard map
//! it fetched from the cluster.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::convert::Limits;
use crate::error::Result;
use crate::placement::{AliasAction, NodeId, Placement};
use crate::point::CollectionSpec;
use quiver_features::{DefinitionSet, Plan, Registry};
use quiver_index::payload_index::FieldType;

/// Where collections' shards are and how to reach the nodes that hold them.
pub trait Directory: Send + Sync {
    /// The placement of collection `name` (or of the collection alias `name` points at) as
    /// last known.
    fn placement(&self, name: &str) -> Result<Placement>;
    /// Every alias and the collection it points at.
    fn aliases(&self) -> BTreeMap<String, String>;
    /// Every collection's placement as last known.
    fn placements(&self) -> Vec<Placement>;
    /// The address of node `node`.
    fn address(&self, node: NodeId) -> Option<String>;
    /// Learns the shard map again (after a stale answer).
    fn refresh(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
    /// The feature definitions as last known.
    fn feature_registry(&self) -> Arc<Registry>;
    /// The limits requests are checked against, when known (a router learns the cluster's with
    /// the shard map).
    fn limits(&self) -> Option<Limits>;
}

/// Changes of the catalogue, made on the meta group's leader: a node's own. Each fails with
/// [`crate::Error::NotLeader`] (naming the leader when known) on a node that does not lead the
/// meta group, so the caller can send the request there.
#[tonic::async_trait]
pub trait Catalogue: Send + Sync {
    /// Creates a collection of `shard_count` shards with `replication_factor` replicas each (None:
    /// min(3, nodes)), applied once per `request_id` when one is given; returns once every shard
    /// group has a leader.
    async fn create_collection(
        &self,
        spec: CollectionSpec,
        shard_count: u32,
        replication_factor: Option<u32>,
        request_id: &str,
    ) -> Result<()>;

    /// Drops collection `name` (by its own name, not an alias) and every alias of it.
    async fn drop_collection(&self, name: &str) -> Result<()>;

    /// Plans feature definitions `set` against the registry and, unless `dry_run`, applies it
    /// all or none (once per `request_id` when one is given); the first apply that defines a
    /// feature view also places the feature store's shards.
    async fn apply_features(
        &self,
        set: DefinitionSet,
        dry_run: bool,
        request_id: &str,
    ) -> Result<Plan>;

    /// Applies alias changes all together, or none of them.
    async fn update_aliases(&self, actions: Vec<AliasAction>) -> Result<()>;

    /// Indexes payload field `key` of collection `name` as `field_type`, or (None) drops that
    /// index; shards build the index in the background after this returns.
    async fn set_payload_index(
        &self,
        name: &str,
        key: &str,
        field_type: Option<FieldType>,
    ) -> Result<()>;
}
