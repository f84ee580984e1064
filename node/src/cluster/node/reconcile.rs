//! Following the shard map: the node opens the shard replicas placed on it and closes and deletes
//! the ones moved away, at start, on every change its meta replica applies, and every few
//! seconds; on the meta leader it also finishes collections whose creation was interrupted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use quiver_core::point::CollectionMeta;
use quiver_core::Result;
use tracing::{info, warn};

use super::{Node, RECONCILE_EVERY};
use crate::cluster::group::{blocking, ShardGroup};
use crate::sm::ShardCommand;
use quiver_core::placement::Placement;

impl Node {
    /// Brings the shard replicas on this node in line with the shard map: opens those placed
    /// here, closes and deletes those moved away. On the meta leader, also finishes creating
    /// collections whose creation was interrupted.
    pub async fn reconcile(self: &Arc<Self>) -> Result<()> {
        self.sync_replicas().await?;
        self.sync_payload_indexes().await;
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

    /// Has each shard group this node leads index the payload fields its collection's spec
    /// names: an index created or dropped in the catalogue reaches every shard through the
    /// shard's own log. (The command sets the whole list, so sending it again is harmless.)
    async fn sync_payload_indexes(&self) {
        for placement in self.placements().list() {
            let mut wanted = placement.spec.payload_indexes.clone();
            wanted.sort_by(|a, b| a.0.cmp(&b.0));
            for shard in &placement.shards {
                let replica = self.shards.read().get(&shard.group).cloned();
                let Some(replica) = replica.filter(|r| r.is_leader()) else {
                    continue;
                };
                let Ok(collection) = replica.collection(&placement.spec.name) else {
                    continue;
                };
                let mut indexed = collection.payload_indexes();
                indexed.sort_by(|a, b| a.0.cmp(&b.0));
                if indexed == wanted {
                    continue;
                }
                let command = ShardCommand::SetPayloadIndexes {
                    collection_id: shard.group,
                    indexes: placement.spec.payload_indexes.clone(),
                };
                match replica.write("", command).await {
                    Ok(_) => {
                        info!(group = shard.group, collection = %placement.spec.name, "payload indexes changed")
                    }
                    Err(e) => {
                        warn!(group = shard.group, error = %e, "payload indexes not changed yet")
                    }
                }
            }
        }
    }

    /// Opens the shard replicas placed on this node and closes and deletes the others.
    pub(super) async fn sync_replicas(&self) -> Result<()> {
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
            let replica = ShardGroup::open(
                self.config.clone(),
                *group,
                &dir,
                self.peers.clone(),
                &self.rocks,
            )
            .await?;
            info!(group, collection = %meta.spec.name, "shard replica opened");
            self.shards.write().insert(*group, Arc::new(replica));
        }
        for group in hosted.iter().filter(|g| !wanted.contains_key(g)) {
            let removed = self.shards.write().remove(group);
            if let Some(replica) = removed {
                // its optimizer writes nothing more into the directory deleted below
                replica.collections().iter().for_each(|c| c.close());
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
}

/// Re-runs [`Node::reconcile`] whenever the shard map changes, and every few seconds, until the
/// node is dropped; and each time, spreads leadership back out (`leadership`).
pub(super) fn spawn_reconciler(node: Weak<Node>, mut changes: tokio::sync::watch::Receiver<u64>) {
    tokio::spawn(async move {
        loop {
            let _ = tokio::time::timeout(RECONCILE_EVERY, changes.changed()).await;
            let Some(node) = node.upgrade() else {
                return;
            };
            if let Err(e) = node.reconcile().await {
                warn!(error = %e, "reconciling shard replicas failed");
            }
            node.rebalance_leaders().await;
        }
    });
}
