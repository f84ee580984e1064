//! A node: the meta group's replica, the shard replicas placed on it, and the cluster operations
//! that change where shards live.
//!
//! Layout on disk: `<data_dir>/meta/` holds the meta group (group 0: the shard map), and
//! `<data_dir>/shards/<group>/` one directory per shard replica, each with its own RocksDB.
//!
//! The node follows the shard map its meta replica applies ([`Node::reconcile`], run at start
//! and on every change): it opens the shard groups placed on it and closes and deletes the ones
//! moved away. Creating a collection runs on the meta leader: it places the shards, commits the
//! placement, has each shard's first replica form the group, then marks the collection ready.
//! If the leader fails half-way, whichever node leads next finishes the job.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::join_all;
use openraft::BasicNode;
use parking_lot::RwLock;
use quiver_config::Config;
use quiver_proto::v1 as pb;
use quiver_proto::v1::cluster_client::ClusterClient;
use tracing::{info, warn};

use crate::cluster::group::{blocking, MetaGroup, ShardGroup};
use crate::cluster::placement::place;
use crate::raft::NodeId;
use crate::raft::Raft;
use crate::sm::catalogue::Placements;
use crate::sm::{MetaCommand, ShardCommand};
use quiver_core::convert::Limits;
use quiver_core::directory::{Catalogue, Directory};
use quiver_core::placement::{Placement, ShardPlacement, META_GROUP};
use quiver_core::point::{CollectionMeta, CollectionSpec};
use quiver_core::{Error, Result};
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
/// How long a moved replica may take to catch up before the move is given up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(600);

/// A storage node.
pub struct Node {
    config: Arc<Config>,
    id: NodeId,
    address: String,
    peers: Channels,
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
    stopped: AtomicBool,
}

impl Node {
    /// Opens the node's data under `config.node.data_dir`, creating it if needed, opens the shard
    /// replicas placed on it and starts following the shard map. With `cluster.bootstrap`, a node
    /// that never joined a cluster forms one of itself alone (`quiver dev`).
    pub async fn open(config: Config) -> Result<Arc<Self>> {
        let config = Arc::new(config);
        let peers = Channels::with_routes(config.cluster.peer_routes.clone());
        let data_dir = config.node.data_dir.clone();
        let meta = MetaGroup::open(
            config.clone(),
            META_GROUP,
            &data_dir.join("meta"),
            peers.clone(),
        )
        .await?;
        let node = Arc::new(Self {
            id: config.cluster.node_id,
            address: config.cluster.advertised(config.node.listen),
            config,
            peers,
            meta: Arc::new(meta),
            shards: RwLock::default(),
            shards_dir: data_dir.join("shards"),
            reconciling: tokio::sync::Mutex::new(()),
            initializing: tokio::sync::Mutex::new(()),
            moving: tokio::sync::Mutex::new(()),
            finishing: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
        });
        if node.config.cluster.bootstrap {
            node.bootstrap().await?;
        }
        node.reconcile().await?;
        spawn_reconciler(Arc::downgrade(&node), node.placements().subscribe());
        Ok(node)
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
    /// (0: min(3, nodes)). Runs on the meta leader; returns once every shard group has a leader.
    pub async fn create_collection(
        &self,
        spec: CollectionSpec,
        shard_count: u32,
        replication_factor: u32,
        request_id: &str,
    ) -> Result<Placement> {
        self.meta.check_writable()?;
        let nodes: Vec<NodeId> = self.meta.membership().voter_ids().collect();
        let rf = match replication_factor {
            0 => nodes.len().min(3) as u32,
            rf => rf,
        };
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

    /// Moves shard group `group`'s replica from node `from` to node `to`: `to` joins the group
    /// as a learner, catches up and becomes a voter in `from`'s place; then `from` drops its copy.
    /// Runs on the meta leader, one replica change at a time. Running a move again finishes it if
    /// it was cut short, and answers the same if it is done.
    pub async fn move_shard(&self, group: u64, from: NodeId, to: NodeId) -> Result<Vec<NodeId>> {
        let _one_at_a_time = self.moving.lock().await;
        self.move_shard_locked(group, from, to).await
    }

    async fn move_shard_locked(&self, group: u64, from: NodeId, to: NodeId) -> Result<Vec<NodeId>> {
        self.meta.check_writable()?;
        let (placement, shard) = self
            .placements()
            .by_group(group)
            .ok_or_else(|| Error::NotFound(format!("shard group {group}")))?;
        if !placement.ready {
            return Err(Error::Unavailable(format!(
                "collection `{}` is still being created",
                placement.spec.name
            )));
        }
        let moved_already = self.address_of(from).is_some()
            && !shard.replicas.contains(&from)
            && shard.replicas.contains(&to);
        if moved_already {
            // A member's replica moved before (a move run again after its answer was lost): the
            // same answer.
            return Ok(shard.replicas.clone());
        }
        if !shard.replicas.contains(&from) {
            return Err(Error::invalid(
                "from",
                format!("node {from} holds no replica of shard group {group}"),
            ));
        }
        if self.address_of(to).is_none() {
            return Err(Error::invalid(
                "to",
                format!("node {to} is not a cluster member"),
            ));
        }
        if from == to {
            return Err(Error::invalid("to", "is the same node as `from`"));
        }
        // 1. `to` hosts a (still empty) replica, so the group can reach it.
        let mut widened = shard.replicas.clone();
        let mut epoch = shard.epoch;
        if !widened.contains(&to) {
            widened.push(to);
            self.set_replicas(group, epoch, widened.clone()).await?;
            epoch += 1;
        }
        // 2. The shard's leader adds `to` (caught up as a learner first) and removes `from`. On
        // failure the widened map stays: the change may have been made after all, and a map
        // listing one replica too many is safe where one missing a voter is not. Running the
        // move again finishes it.
        self.change_shard_replicas_on_leader(group, &widened, to, from)
            .await?;
        // 3. `from` drops its copy once it applies this.
        let narrowed: Vec<NodeId> = widened.into_iter().filter(|n| *n != from).collect();
        self.set_replicas(group, epoch, narrowed.clone()).await?;
        info!(group, from, to, "shard replica moved");
        Ok(narrowed)
    }

    async fn set_replicas(&self, group: u64, epoch: u64, replicas: Vec<NodeId>) -> Result<()> {
        self.meta
            .write(
                "",
                MetaCommand::SetReplicas {
                    group,
                    epoch,
                    replicas,
                },
            )
            .await?;
        Ok(())
    }

    /// Asks the shard's leader (found among `replicas`) to add `add` and remove `remove`.
    async fn change_shard_replicas_on_leader(
        &self,
        group: u64,
        replicas: &[NodeId],
        add: NodeId,
        remove: NodeId,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + CATCH_UP_TIMEOUT;
        let mut last = Error::Unavailable(format!("shard group {group} has no leader"));
        while tokio::time::Instant::now() < deadline {
            for node in replicas {
                let request = pb::ChangeShardReplicasRequest { group, add, remove };
                let result = if *node == self.id {
                    self.change_shard_replicas(group, add, remove).await
                } else {
                    let Some(address) = self.address_of(*node) else {
                        continue;
                    };
                    let channel = self.peer(&address)?;
                    match tokio::time::timeout(
                        CATCH_UP_TIMEOUT,
                        ClusterClient::new(channel).change_shard_replicas(request),
                    )
                    .await
                    {
                        Err(_) => Err(unanswered(*node, &address)),
                        Ok(Ok(_)) => Ok(pb::GroupStatus::default()),
                        Ok(Err(status)) => Err(Error::Unavailable(format!(
                            "node {node}: {}",
                            status.message()
                        ))),
                    }
                };
                match result {
                    Ok(_) => return Ok(()),
                    Err(e) => last = e,
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(last)
    }

    /// On the shard's leader: adds `add` as a learner, waits for it to catch up, then makes the
    /// voters the old ones plus `add` minus `remove` (0: none).
    pub async fn change_shard_replicas(
        &self,
        group: u64,
        add: NodeId,
        remove: NodeId,
    ) -> Result<pb::GroupStatus> {
        let replica = self.shard(group)?;
        replica.check_writable()?;
        if !replica.is_leader() {
            return Err(replica.not_leader(replica.leader()));
        }
        let membership = replica.membership();
        let mut voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let raft_error = |e: openraft::error::RaftError<NodeId, _>| {
            Error::Unavailable(format!("shard group {group}: {e}"))
        };
        if add != 0 && !voters.contains(&add) {
            let address = self
                .address_of(add)
                .ok_or_else(|| Error::invalid("add", format!("node {add} is not a member")))?;
            replica
                .raft()
                .add_learner(add, BasicNode::new(address), true)
                .await
                .map_err(raft_error)?;
            voters.insert(add);
        }
        if remove != 0 {
            voters.remove(&remove);
        }
        if voters.is_empty() {
            return Err(Error::invalid("remove", "a shard needs one voter"));
        }
        replica
            .raft()
            .change_membership(voters, false)
            .await
            .map_err(raft_error)?;
        Ok(replica.status())
    }

    /// Moves every replica off node `node` (to the least loaded node without one), then
    /// removes it from the meta group. Runs on the meta leader.
    pub async fn remove_node(&self, node: NodeId) -> Result<()> {
        let _one_at_a_time = self.moving.lock().await;
        self.meta.check_writable()?;
        let membership = self.meta.membership();
        if membership.get_node(&node).is_none() {
            return Err(Error::NotFound(format!("node {node}")));
        }
        let mut voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        voters.remove(&node);
        if voters.is_empty() {
            return Err(Error::invalid("id", "cannot remove the last voter"));
        }
        for placement in self.placements().list() {
            for shard in placement.shards {
                if !shard.replicas.contains(&node) {
                    continue;
                }
                let load = self.placements().load();
                let target = voters
                    .iter()
                    .filter(|n| !shard.replicas.contains(n))
                    .min_by_key(|n| load.get(n).copied().unwrap_or(0));
                match target {
                    Some(to) => {
                        self.move_shard_locked(shard.group, node, *to).await?;
                    }
                    None if shard.replicas.len() > 1 => {
                        // Every other node has a replica already: shrink the group instead.
                        let rest: Vec<NodeId> = shard
                            .replicas
                            .iter()
                            .copied()
                            .filter(|n| *n != node)
                            .collect();
                        self.change_shard_replicas_on_leader(shard.group, &shard.replicas, 0, node)
                            .await?;
                        self.set_replicas(shard.group, shard.epoch, rest).await?;
                    }
                    None => {
                        return Err(Error::invalid(
                            "id",
                            format!(
                                "node {node} holds the only replica of shard group {} and no \
                                 other node can take it",
                                shard.group
                            ),
                        ))
                    }
                }
            }
        }
        self.meta
            .raft()
            .change_membership(voters, false)
            .await
            .map_err(|e| Error::Unavailable(format!("change membership: {e}")))?;
        Ok(())
    }

    /// Brings the shard replicas on this node in line with the shard map: opens those placed
    /// here, closes and deletes those moved away. On the meta leader, also finishes creating
    /// collections whose creation was interrupted.
    pub async fn reconcile(self: &Arc<Self>) -> Result<()> {
        self.sync_replicas().await?;
        let unready: Vec<Placement> = self
            .placements()
            .list()
            .into_iter()
            .filter(|p| !p.ready)
            .collect();
        // Off this task, so an unreachable first replica does not hold up replica changes.
        if self.meta.is_leader()
            && !unready.is_empty()
            && !self.finishing.swap(true, Ordering::SeqCst)
        {
            let node = self.clone();
            tokio::spawn(async move {
                /// Clears `finishing` however the task ends.
                struct Done(Arc<Node>);
                impl Drop for Done {
                    fn drop(&mut self) {
                        self.0.finishing.store(false, Ordering::SeqCst);
                    }
                }
                let done = Done(node);
                for p in &unready {
                    if let Err(e) = done.0.finish_create(p).await {
                        warn!(collection = %p.spec.name, error = %e, "collection not ready yet");
                    }
                }
            });
        }
        Ok(())
    }

    /// Opens the shard replicas placed on this node and closes and deletes the others.
    async fn sync_replicas(&self) -> Result<()> {
        let _one_at_a_time = self.reconciling.lock().await;
        if self.stopped.load(Ordering::SeqCst) {
            return Ok(());
        }
        let placements = self.placements().list();
        let mut wanted: BTreeMap<u64, CollectionMeta> = BTreeMap::new();
        for p in &placements {
            for s in &p.shards {
                if s.replicas.contains(&self.id) {
                    let meta = CollectionMeta {
                        id: s.group,
                        spec: p.spec.clone(),
                    };
                    wanted.insert(s.group, meta);
                }
            }
        }
        let hosted: BTreeSet<u64> = self.shards.read().keys().copied().collect();
        for (group, meta) in &wanted {
            if hosted.contains(group) {
                continue;
            }
            let dir = self.shards_dir.join(group.to_string());
            let replica =
                ShardGroup::open(self.config.clone(), *group, &dir, self.peers.clone()).await?;
            info!(group, collection = %meta.spec.name, "shard replica opened");
            self.shards.write().insert(*group, Arc::new(replica));
        }
        for group in hosted.iter().filter(|g| !wanted.contains_key(g)) {
            let removed = self.shards.write().remove(group);
            if let Some(replica) = removed {
                replica.shutdown().await;
            }
        }
        // Delete every replica not placed here: those just closed, and any left from before a
        // restart (dropped or moved away while the node was down).
        let shards_dir = self.shards_dir.clone();
        let keep: BTreeSet<String> = wanted.keys().map(|g| g.to_string()).collect();
        blocking("remove shard replicas", move || {
            for entry in std::fs::read_dir(&shards_dir)
                .into_iter()
                .flatten()
                .flatten()
            {
                let group = entry.file_name().to_string_lossy().to_string();
                if keep.contains(&group) {
                    continue;
                }
                // Renamed first, so a crash part-way leaves no half-deleted replica where the
                // group would be opened again if it came back to this node.
                let doomed = shards_dir.join(format!("{group}.removing"));
                let removed = match group.ends_with(".removing") {
                    true => std::fs::remove_dir_all(entry.path()),
                    false => std::fs::rename(entry.path(), &doomed)
                        .and_then(|()| std::fs::remove_dir_all(&doomed)),
                };
                match removed {
                    Ok(()) => info!(group, "shard replica removed"),
                    Err(e) => warn!(group, error = %e, "cannot remove a shard replica's data"),
                }
            }
            Ok(())
        })
        .await
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

    /// Dumps changed graphs of every shard replica. Blocking: call from a blocking thread.
    pub fn dump_graphs(&self, force: bool) {
        for shard in self.shards() {
            shard.dump_graphs(force);
        }
    }

    fn peer(&self, address: &str) -> Result<tonic::transport::Channel> {
        self.peers
            .channel(address)
            .map_err(|e| Error::Internal(format!("address `{address}`: {e}")))
    }
}

impl Directory for Node {
    fn placement(&self, name: &str) -> Result<Placement> {
        self.placements().get(name)
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
        replication_factor: u32,
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
}

fn unanswered(node: NodeId, address: &str) -> Error {
    Error::Unavailable(format!("node {node} at {address} did not answer"))
}

/// Re-runs [`Node::reconcile`] whenever the shard map changes, and every few seconds, until the
/// node is dropped.
fn spawn_reconciler(node: Weak<Node>, mut changes: tokio::sync::watch::Receiver<u64>) {
    tokio::spawn(async move {
        loop {
            let _ = tokio::time::timeout(RECONCILE_EVERY, changes.changed()).await;
            let Some(node) = node.upgrade() else {
                return;
            };
            if let Err(e) = node.reconcile().await {
                warn!(error = %e, "reconciling shard replicas failed");
            }
        }
    });
}
