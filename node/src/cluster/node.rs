//! A node: the meta group's replica, the shard replicas placed on it, and the cluster operations
//! that change where shards live.
//!
//! Layout on disk: `<data_dir>/meta/` holds the meta group (group 0: the shard map), and
//! `<data_dir>/shards/<group>/` one directory per shard replica, each with its own RocksDB.
//!
//! The node follows the shard map its meta replica applies ([`Node::reconcile`], run at start
//! and on every change, in `reconcile`): it opens the shard groups placed on it and closes and
//! deletes the ones moved away. Replica moves and node removal are in `moves`; leadership
//! spreading back out after failovers in `leadership`.
//!
//! Creating a collection runs on the meta leader: it places the shards, commits the placement,
//! has each shard's first replica form the group and serve the collection, then marks the
//! collection ready. If the leader fails half-way, whichever node leads next finishes the job.

mod embedding;
mod features;
mod leadership;
mod moves;
mod reconcile;

use embedding::spawn_embedding;
use reconcile::spawn_reconciler;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use openraft::BasicNode;
use parking_lot::RwLock;
use quiver_config::Config;
use quiver_embed::LazyEmbedder;
use quiver_proto::v1 as pb;
use quiver_proto::v1::cluster_client::ClusterClient;
use tracing::{info, warn};

use crate::cluster::group::{MetaGroup, ShardGroup};
use crate::cluster::placement::place;
use crate::raft::NodeId;
use crate::raft::Raft;
use crate::sm::catalogue::Placements;
use crate::sm::{MetaCommand, ShardCommand};
use crate::storage::RocksEnv;
use quiver_core::convert::Limits;
use quiver_core::directory::{Catalogue, Directory};
use quiver_core::placement::{AliasAction, Placement, ShardPlacement, META_GROUP};
use quiver_core::point::{CollectionMeta, CollectionSpec};
use quiver_core::{Error, Result};
use quiver_features::{DefinitionSet, Plan, Registry};
use quiver_index::payload_index::FieldType;
use quiver_proto::wire::{classify, Channels, Failure};

/// How long a single-member group may take to elect itself at start.
const ELECTION_WAIT: Duration = Duration::from_secs(30);
/// How long a new shard group may take to elect its first leader.
const SHARD_ELECTION_WAIT: Duration = Duration::from_secs(10);
/// How often the node re-reads the shard map even without a change (to finish interrupted work).
const RECONCILE_EVERY: Duration = Duration::from_secs(2);
/// How long a call to another node may take (forming a shard group included).
const PEER_RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node may take to answer the ping that tells whether it is up.
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a new replica (a moved shard's, a joining node's) may take to catch up before the
/// change is given up.
pub(crate) const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(600);

/// A storage node.
pub struct Node {
    config: Arc<Config>,
    id: NodeId,
    address: String,
    peers: Channels,
    /// What every replica's RocksDB shares (one block cache).
    rocks: RocksEnv,
    meta: Arc<MetaGroup>,
    shards: RwLock<BTreeMap<u64, Arc<ShardGroup>>>,
    shards_dir: PathBuf,
    /// One reconciliation at a time.
    reconciling: tokio::sync::Mutex<()>,
    /// One shard group formed at a time (creation and its resumption may race).
    initializing: tokio::sync::Mutex<()>,
    /// One replica move (or node removal) at a time.
    moving: tokio::sync::Mutex<()>,
    /// Set while a task finishes collections whose creation was interrupted.
    finishing: AtomicBool,
    /// Since when each shard group this node is the preferred leader of has been led by
    /// another node (see `leadership`).
    following_since: parking_lot::Mutex<BTreeMap<u64, std::time::Instant>>,
    stopped: AtomicBool,
    /// The text embedding model (loaded when first needed), shared with the process's front.
    embedder: Arc<LazyEmbedder>,
}

impl Node {
    /// Opens the node's data under `config.node.data_dir`, creating it if needed, opens the shard
    /// replicas placed on it and starts following the shard map. With `cluster.bootstrap`, a node
    /// that never joined a cluster forms one of itself alone (`quiver dev`).
    pub async fn open(config: Config) -> Result<Arc<Self>> {
        let config = Arc::new(config);
        let peers = Channels::with_routes(config.cluster.peer_routes.clone());
        let data_dir = config.node.data_dir.clone();
        let rocks = RocksEnv::new(&config.storage);
        let meta = MetaGroup::open(
            config.clone(),
            META_GROUP,
            &data_dir.join("meta"),
            peers.clone(),
            &rocks,
        )
        .await?;
        let e = &config.embedder;
        let embedder = Arc::new(LazyEmbedder::new(
            &e.model_dir,
            &e.python,
            e.threads,
            e.batch,
            e.queue,
        ));
        let node = Arc::new(Self {
            id: config.cluster.node_id,
            address: config.cluster.advertised(config.node.listen),
            config,
            peers,
            rocks,
            meta: Arc::new(meta),
            shards: RwLock::default(),
            shards_dir: data_dir.join("shards"),
            reconciling: tokio::sync::Mutex::new(()),
            initializing: tokio::sync::Mutex::new(()),
            moving: tokio::sync::Mutex::new(()),
            finishing: AtomicBool::new(false),
            following_since: parking_lot::Mutex::default(),
            stopped: AtomicBool::new(false),
            embedder,
        });
        if node.config.cluster.bootstrap {
            node.bootstrap().await?;
        }
        node.reconcile().await?;
        spawn_reconciler(Arc::downgrade(&node), node.placements().subscribe());
        spawn_embedding(Arc::downgrade(&node));
        Ok(node)
    }

    /// The text embedding model.
    pub fn embedder(&self) -> &Arc<LazyEmbedder> {
        &self.embedder
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The address peers and clients reach this node at.
    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Connections to other nodes.
    pub fn peers(&self) -> &Channels {
        &self.peers
    }

    /// The meta group's replica on this node.
    pub fn meta(&self) -> &Arc<MetaGroup> {
        &self.meta
    }

    /// The shard map as this node's meta replica has applied it.
    pub fn placements(&self) -> &Arc<Placements> {
        self.meta.placements()
    }

    /// This node's replica of shard group `group`.
    pub fn shard(&self, group: u64) -> Result<Arc<ShardGroup>> {
        self.shards
            .read()
            .get(&group)
            .cloned()
            .ok_or(Error::NoReplica { group })
    }

    /// The Raft instance of group `group` on this node: the meta group's or a shard replica's.
    pub fn raft(&self, group: u64) -> Result<Raft> {
        if group == META_GROUP {
            return Ok(self.meta.raft().clone());
        }
        Ok(self.shard(group)?.raft().clone())
    }

    /// Every shard replica on this node.
    pub fn shards(&self) -> Vec<Arc<ShardGroup>> {
        self.shards.read().values().cloned().collect()
    }

    /// The address of cluster member `node`, from the meta group's membership.
    pub fn address_of(&self, node: NodeId) -> Option<String> {
        self.meta
            .membership()
            .get_node(&node)
            .map(|n| n.addr.clone())
    }

    /// Every cluster member and its address.
    pub fn members(&self) -> BTreeMap<NodeId, String> {
        self.meta
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect()
    }

    /// A channel to the meta group's leader when another node leads it; None when this node
    /// does. Cluster-wide changes (collections, membership) run on the meta leader.
    pub fn meta_leader_elsewhere(&self) -> Result<Option<tonic::transport::Channel>> {
        match self.meta.leader() {
            Some(leader) if leader == self.id => Ok(None),
            Some(leader) => {
                let address = self
                    .address_of(leader)
                    .ok_or_else(|| self.meta.not_leader(Some(leader)))?;
                Ok(Some(self.peer(&address)?))
            }
            None => Err(Error::Unavailable(
                "the meta group has no leader: an election is under way or a majority of \
                 nodes is down"
                    .into(),
            )),
        }
    }

    /// Ok when this node leads the meta group; else where the leader is, or that none is known
    /// (an election, or no majority), so a catalogue change fails at once instead of waiting.
    fn leads_meta(&self) -> Result<()> {
        self.meta_leader_elsewhere()
            .and_then(|elsewhere| match elsewhere {
                None => Ok(()),
                Some(_) => Err(self.meta.not_leader(self.meta.leader())),
            })
    }

    /// Forms a cluster of this node alone if its meta group was never formed, and waits until a
    /// group of this node alone has elected it.
    pub async fn bootstrap(&self) -> Result<()> {
        let members = BTreeMap::from([(self.id, BasicNode::new(self.address.clone()))]);
        if !self.meta.is_initialized().await? {
            self.meta.initialize(members, ELECTION_WAIT).await?;
        }
        let voters: Vec<NodeId> = self.meta.membership().voter_ids().collect();
        if voters == [self.id] {
            self.meta
                .raft()
                .wait(Some(ELECTION_WAIT))
                .state(
                    openraft::ServerState::Leader,
                    "a single-member group elects itself",
                )
                .await
                .map_err(|e| Error::Unavailable(format!("no leader: {e}")))?;
        }
        Ok(())
    }

    /// Creates a collection of `shard_count` shards with `replication_factor` replicas each
    /// (None: min(3, nodes)). Runs on the meta leader; returns once every shard group has a leader.
    pub async fn create_collection(
        &self,
        spec: CollectionSpec,
        shard_count: u32,
        replication_factor: Option<u32>,
        request_id: &str,
    ) -> Result<Placement> {
        self.meta.check_writable()?;
        let nodes: Vec<NodeId> = self.meta.membership().voter_ids().collect();
        let rf = replication_factor.unwrap_or(nodes.len().min(3) as u32);
        let live = self.answering(&nodes).await;
        let replicas = place(
            &nodes,
            &live,
            &mut self.placements().load(),
            shard_count,
            rf,
        )?;
        let name = spec.name.clone();
        let command = MetaCommand::CreateCollection {
            spec,
            replication_factor: rf,
            replicas,
        };
        self.meta.write(request_id, command).await?;
        let placement = self.placements().get(&name)?;
        if !placement.ready {
            self.finish_create(&placement).await?;
        }
        self.placements().get(&name)
    }

    /// The nodes of `nodes` that answer a ping within [`PING_TIMEOUT`] (this one always does).
    async fn answering(&self, nodes: &[NodeId]) -> BTreeSet<NodeId> {
        let pings = nodes.iter().map(|&node| async move {
            if node == self.id {
                return Some(node);
            }
            let channel = self.peer(&self.address_of(node)?).ok()?;
            let mut client = ClusterClient::new(channel);
            let ping = client.identify(pb::IdentifyRequest {});
            matches!(tokio::time::timeout(PING_TIMEOUT, ping).await, Ok(Ok(_))).then_some(node)
        });
        join_all(pings).await.into_iter().flatten().collect()
    }

    /// Drops a collection; every node deletes its shard replicas as it applies the drop.
    pub async fn drop_collection(&self, name: &str) -> Result<()> {
        self.meta.check_writable()?;
        self.meta
            .write(
                "",
                MetaCommand::DropCollection {
                    name: name.to_string(),
                },
            )
            .await?;
        Ok(())
    }

    /// Indexes payload field `key` of collection `name` as `field_type` (None: drops its index).
    /// Returns once the catalogue has the change; each shard builds or drops the index soon
    /// after, in the background. Creating an index that exists with the same type, or dropping
    /// one that does not exist, changes nothing.
    pub async fn set_payload_index(
        &self,
        name: &str,
        key: &str,
        field_type: Option<FieldType>,
    ) -> Result<()> {
        self.meta.check_writable()?;
        // An alias names its collection here too.
        let placement = self.placements().resolve(name)?;
        let command = MetaCommand::SetPayloadIndex {
            name: placement.spec.name.clone(),
            id: placement.id,
            key: key.to_string(),
            field_type,
        };
        self.meta.write("", command).await?;
        Ok(())
    }

    /// Has each shard's first replica form its group, then marks the collection ready.
    async fn finish_create(&self, placement: &Placement) -> Result<()> {
        for shard in &placement.shards {
            let first = shard.replicas[0];
            if first == self.id {
                self.init_shard(shard.group).await?;
            } else {
                let address = self.address_of(first).ok_or_else(|| {
                    Error::Unavailable(format!("node {first} is not a cluster member"))
                })?;
                let channel = self.peer(&address)?;
                tokio::time::timeout(
                    PEER_RPC_TIMEOUT,
                    ClusterClient::new(channel)
                        .init_shard(pb::InitShardRequest { group: shard.group }),
                )
                .await
                .map_err(|_| unanswered(first, &address))?
                .map_err(|e| {
                    Error::Unavailable(format!(
                        "shard group {} on node {first}: {}",
                        shard.group,
                        e.message()
                    ))
                })?;
            }
        }
        self.meta
            .write(
                "",
                MetaCommand::MarkReady {
                    name: placement.spec.name.clone(),
                    id: placement.id,
                },
            )
            .await?;
        info!(collection = %placement.spec.name, shards = placement.shards.len(), "collection ready");
        Ok(())
    }

    /// Opens this node's replica of a new shard group, forms the group with its placed replicas
    /// unless it was formed before, and has it serve its collection: the group's first command,
    /// [`ShardCommand::Serve`], proposed through its leader (this replica, or the one it names).
    /// Only a collection's creation (or its resumption) calls this, and only on each shard's
    /// first replica, so a group is formed once; on a replica of a group formed already it only
    /// makes sure the group serves its collection.
    pub async fn init_shard(&self, group: u64) -> Result<pb::GroupStatus> {
        let (replica, placement) = self.form_shard(group).await?;
        if placement.ready {
            // Formed and serving already (creation and its resumption may both ask).
            return Ok(replica.status());
        }
        let meta = CollectionMeta {
            id: group,
            spec: placement.spec.clone(),
        };
        self.serve_collection(&replica, meta).await?;
        Ok(replica.status())
    }

    /// This node's replica of shard group `group`, with the group formed (by this node, its
    /// first replica, unless it was formed before). One group is formed at a time.
    async fn form_shard(&self, group: u64) -> Result<(Arc<ShardGroup>, Placement)> {
        let _one_at_a_time = self.initializing.lock().await;
        let (placement, shard) = self.wait_for_placement(group).await?;
        self.sync_replicas().await?;
        let replica = self.shard(group)?;
        if replica.is_initialized().await? {
            return Ok((replica, placement));
        }
        if shard.replicas.first() != Some(&self.id) {
            return Err(Error::invalid(
                "group",
                format!("only shard group {group}'s first replica forms it"),
            ));
        }
        if placement.ready {
            return Err(Error::invalid(
                "group",
                format!("shard group {group} was formed already, without this replica"),
            ));
        }
        let mut members = BTreeMap::new();
        for node in &shard.replicas {
            let address = self.address_of(*node).ok_or_else(|| {
                Error::Unavailable(format!("node {node} is not a cluster member"))
            })?;
            members.insert(*node, BasicNode::new(address));
        }
        replica.initialize(members, SHARD_ELECTION_WAIT).await?;
        Ok((replica, placement))
    }

    /// Has a newly formed shard group serve `meta` (its first command), through the group's
    /// leader: this replica, or the one it names, asked to do the same. A repeat is a no-op, so
    /// an attempt whose outcome is unknown is simply made again, until [`SHARD_ELECTION_WAIT`].
    async fn serve_collection(&self, replica: &ShardGroup, meta: CollectionMeta) -> Result<()> {
        let group = replica.id();
        let deadline = tokio::time::Instant::now() + SHARD_ELECTION_WAIT;
        loop {
            let served = match replica.write("", ShardCommand::Serve(meta.clone())).await {
                Ok(_) => return Ok(()),
                Err(e @ Error::AlreadyExists(_)) => return Err(e),
                Err(Error::NotLeader {
                    address: Some(address),
                    ..
                }) => {
                    let request = pb::InitShardRequest { group };
                    let asked = match self.peer(&address) {
                        Ok(channel) => tokio::time::timeout_at(
                            deadline,
                            ClusterClient::new(channel).init_shard(request),
                        )
                        .await
                        .map_err(|_| {
                            Error::Unavailable(format!(
                                "the leader of shard group {group} at {address} did not answer"
                            ))
                        }),
                        Err(e) => Err(e),
                    };
                    match asked {
                        Ok(Ok(_)) => return Ok(()),
                        Ok(Err(status)) if classify(&status) == Failure::Final => {
                            return Err(Error::Unavailable(format!(
                                "shard group {group} at {address}: {}",
                                status.message()
                            )))
                        }
                        Ok(Err(status)) => Error::Unavailable(status.message().to_string()),
                        Err(e) => e,
                    }
                }
                Err(e) => e,
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(served);
            }
            warn!(group, error = %served, "shard group does not serve its collection yet");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The placement of shard group `group`, waiting briefly for this node's meta replica to
    /// apply it.
    async fn wait_for_placement(&self, group: u64) -> Result<(Placement, ShardPlacement)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(found) = self.placements().by_group(group) {
                return Ok(found);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::NotFound(format!("shard group {group}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops every group on this node.
    pub async fn shutdown(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let _no_reconciliation = self.reconciling.lock().await;
        for shard in self.shards() {
            shard.shutdown().await;
        }
        self.meta.shutdown().await;
    }

    fn peer(&self, address: &str) -> Result<tonic::transport::Channel> {
        self.peers
            .channel(address)
            .map_err(|e| Error::Internal(format!("address `{address}`: {e}")))
    }
}

impl Directory for Node {
    fn placement(&self, name: &str) -> Result<Placement> {
        self.placements().resolve(name)
    }

    fn aliases(&self) -> BTreeMap<String, String> {
        Node::placements(self).aliases()
    }

    fn placements(&self) -> Vec<Placement> {
        Node::placements(self).list()
    }

    fn address(&self, node: NodeId) -> Option<String> {
        self.address_of(node)
    }

    /// This node's meta replica applies changes on its own; wait briefly for the next one.
    fn refresh(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let mut changes = Node::placements(self).subscribe();
        Box::pin(async move {
            let _ = tokio::time::timeout(Duration::from_millis(500), changes.changed()).await;
        })
    }

    fn feature_registry(&self) -> Arc<Registry> {
        Node::placements(self).feature_registry()
    }

    fn limits(&self) -> Option<Limits> {
        Some(Limits {
            request: self.config.limits.clone(),
            max_ef: self.config.search.max_ef,
        })
    }
}

#[tonic::async_trait]
impl Catalogue for Node {
    async fn create_collection(
        &self,
        spec: CollectionSpec,
        shard_count: u32,
        replication_factor: Option<u32>,
        request_id: &str,
    ) -> Result<()> {
        self.leads_meta()?;
        Node::create_collection(self, spec, shard_count, replication_factor, request_id).await?;
        Ok(())
    }

    async fn drop_collection(&self, name: &str) -> Result<()> {
        self.leads_meta()?;
        Node::drop_collection(self, name).await
    }

    async fn set_payload_index(
        &self,
        name: &str,
        key: &str,
        field_type: Option<FieldType>,
    ) -> Result<()> {
        self.leads_meta()?;
        Node::set_payload_index(self, name, key, field_type).await
    }

    async fn apply_features(
        &self,
        set: DefinitionSet,
        dry_run: bool,
        request_id: &str,
    ) -> Result<Plan> {
        self.leads_meta()?;
        Node::apply_features(self, set, dry_run, request_id).await
    }

    async fn update_aliases(&self, actions: Vec<AliasAction>) -> Result<()> {
        self.leads_meta()?;
        self.meta.check_writable()?;
        self.meta
            .write("", MetaCommand::UpdateAliases { actions })
            .await?;
        Ok(())
    }
}

fn unanswered(node: NodeId, address: &str) -> Error {
    Error::Unavailable(format!("node {node} at {address} did not answer"))
}
