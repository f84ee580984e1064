//! The background embedding of points written without a vector, in collections that declare
//! `embed`: each shard's leader takes a batch of its waiting points, embeds their text with the
//! node's model, and writes the vectors through the group's log ([`ShardCommand::SetEmbedded`]),
//! so every replica gets the same vector and no follower runs the model.
//!
//! Nothing here needs to survive a crash: the waiting points are the stored ones with no vector,
//! found again when a replica opens, so a new leader (or the same one after a restart) goes on
//! with the backlog. A vector is set only while the point still has the slot it was embedded
//! for and no vector, so a repeated or late write changes nothing, and a point re-written
//! meanwhile is embedded again from its new text.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use quiver_embed::EmbedError;
use roaring::RoaringBitmap;
use tracing::warn;

use super::Node;
use crate::cluster::group::{blocking, ShardGroup};
use crate::shard::Collection;
use crate::sm::points::EmbeddedVector;
use crate::sm::ShardCommand;

/// How often a node with nothing to embed looks again.
const IDLE: Duration = Duration::from_millis(200);
/// How long a node whose model cannot be loaded waits before trying again.
const NO_MODEL_BACKOFF: Duration = Duration::from_secs(5);

/// Embeds the waiting points of the shards this node leads, until the node is dropped.
pub(super) fn spawn_embedding(node: Weak<Node>) {
    tokio::spawn(async move {
        let mut worker = Worker::default();
        loop {
            let Some(node) = node.upgrade() else {
                return;
            };
            let worked = worker.round(&node).await;
            drop(node);
            if !worked {
                tokio::time::sleep(IDLE).await;
            }
        }
    });
}

/// What the embedding loop remembers between rounds.
#[derive(Default)]
struct Worker {
    /// Per collection id, the slots whose text could not be embedded (tried again after a
    /// restart).
    failed: HashMap<u64, RoaringBitmap>,
    /// No model until then.
    no_model_until: Option<Instant>,
}

impl Worker {
    /// One batch for each collection that has points waiting in a shard this node leads; true
    /// if any was written.
    async fn round(&mut self, node: &Arc<Node>) -> bool {
        if node.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            return false;
        }
        let replicas: Vec<Arc<ShardGroup>> = node.shards.read().values().cloned().collect();
        let mut worked = false;
        for replica in replicas {
            if !replica.is_leader() {
                continue;
            }
            for collection in replica.collections() {
                if collection.meta.spec.embed.is_none() || collection.unembedded_count() == 0 {
                    continue;
                }
                if self.no_model_until.is_some_and(|t| Instant::now() < t) {
                    return worked;
                }
                worked |= self.embed_batch(node, &replica, &collection).await;
            }
        }
        worked
    }

    /// Embeds one batch of `collection`'s waiting points and writes their vectors.
    async fn embed_batch(
        &mut self,
        node: &Arc<Node>,
        replica: &ShardGroup,
        collection: &Collection,
    ) -> bool {
        let embedder = node.embedder.clone();
        let pool = match blocking("load the embedding model", move || {
            embedder
                .get()
                .map_err(|e| quiver_core::Error::Unavailable(e.to_string()))
        })
        .await
        {
            Ok(pool) => pool,
            Err(e) => {
                collection.embedding().failed(0, e.to_string());
                self.no_model_until = Some(Instant::now() + NO_MODEL_BACKOFF);
                return false;
            }
        };
        self.no_model_until = None;
        let skip = self.failed.entry(collection.meta.id).or_default();
        let batch = collection.unembedded(pool.batch().max(1) * 2, skip);
        if batch.is_empty() {
            return false;
        }
        let texts = batch.iter().map(|(_, _, text)| text.clone()).collect();
        let vectors = match pool.embed(texts).await {
            Ok(vectors) => vectors,
            Err(EmbedError::Busy) => return false,
            Err(e) => {
                warn!(collection = %collection.name(), points = batch.len(), error = %e, "embedding failed");
                batch.iter().for_each(|(_, slot, _)| {
                    skip.insert(*slot);
                });
                collection
                    .embedding()
                    .failed(batch.len() as u64, e.to_string());
                return false;
            }
        };
        let metric = collection.meta.spec.metric;
        let mut points = Vec::with_capacity(batch.len());
        for ((id, slot, _), mut vector) in batch.into_iter().zip(vectors) {
            if metric.prepare(&mut vector) {
                points.push((id, slot, EmbeddedVector(vector)));
            } else {
                skip.insert(slot);
                collection
                    .embedding()
                    .failed(1, format!("point {id}'s text embeds to a zero vector"));
            }
        }
        let command = ShardCommand::SetEmbedded {
            collection_id: collection.meta.id,
            points,
        };
        // (through the write fence: a snapshot's cut holds these writes as any other)
        let timeout = Duration::from_millis(node.config.cluster.write_timeout_ms);
        let written = async {
            replica.check_writable()?;
            let _passed = replica
                .fence()
                .pass(tokio::time::Instant::now() + timeout)
                .await?;
            replica.write("", command).await
        };
        match written.await {
            Ok(_) => {
                collection.embedding().recovered();
                true
            }
            Err(e) => {
                warn!(collection = %collection.name(), error = %e, "embedded vectors not written; trying again");
                false
            }
        }
    }
}
