//! The background embedding of points written without a vector, in collections that declare
//! `embed`: each shard's leader takes a batch of its waiting points, embeds their text with the
//! node's model, and writes the vectors through the group's log ([`ShardCommand::SetEmbedded`]),
//! so every replica gets the same vector and no follower runs the model.
//!
//! Before embedding, the leader looks for each text's vector in the embedding cache of every
//! replica on its node (rows written with the vectors, aged out after 7 days;
//! [`embedding_cache`]), so identical text across points and collections is embedded once.
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
use crate::sm::embedding_cache::{self, ContentHash};
use crate::sm::points::{EmbeddedPoint, EmbeddedVector};
use crate::sm::ShardCommand;

/// How often a node with nothing to embed looks again.
const IDLE: Duration = Duration::from_millis(200);
/// Points a leader embeds per call to the model. Small, so a query's text waits behind at
/// most one such call in the model's queue (long documents take ~0.1 s each on two cores).
const BATCH: usize = 8;
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

/// The cached vectors of `hashes` (`model`'s) in any replica on this node, in their order.
async fn cached(node: &Node, model: &str, hashes: &[ContentHash]) -> Vec<Option<Vec<f32>>> {
    let stores: Vec<_> = node
        .shards
        .read()
        .values()
        .map(|r| r.storage().clone())
        .collect();
    let (model, wanted) = (model.to_owned(), hashes.to_vec());
    let now_ms = now_ms();
    let found = blocking("embedding cache", move || {
        let mut found: Vec<Option<Vec<f32>>> = vec![None; wanted.len()];
        for storage in stores {
            let missing: Vec<usize> = (0..wanted.len()).filter(|&i| found[i].is_none()).collect();
            if missing.is_empty() {
                break;
            }
            let keys: Vec<ContentHash> = missing.iter().map(|&i| wanted[i]).collect();
            let rows = embedding_cache::lookup(storage.as_ref(), &model, &keys, now_ms)?;
            for (i, row) in missing.into_iter().zip(rows) {
                found[i] = row;
            }
        }
        Ok(found)
    })
    .await;
    found.unwrap_or_else(|e| {
        warn!(error = %e, "the embedding cache cannot be read");
        vec![None; hashes.len()]
    })
}

/// This node's clock, in ms since the epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
        let batch = collection.unembedded(BATCH, skip);
        if batch.is_empty() {
            return false;
        }
        let model = pool.model_id().to_owned();
        let hashes: Vec<ContentHash> = batch.iter().map(|(_, _, t)| ContentHash::of(t)).collect();
        let mut vectors = cached(node, &model, &hashes).await;
        let missing: Vec<usize> = (0..batch.len()).filter(|&i| vectors[i].is_none()).collect();
        let hits = (batch.len() - missing.len()) as u64;
        let texts = missing.iter().map(|&i| batch[i].2.clone()).collect();
        match pool.embed(texts).await {
            Ok(embedded) => {
                for (i, vector) in missing.into_iter().zip(embedded) {
                    vectors[i] = Some(vector);
                }
            }
            Err(EmbedError::Busy) => return false,
            Err(e) => {
                warn!(collection = %collection.name(), points = missing.len(), error = %e, "embedding failed");
                for &i in &missing {
                    skip.insert(batch[i].1);
                }
                collection
                    .embedding()
                    .failed(missing.len() as u64, e.to_string());
                return false;
            }
        }
        let metric = collection.meta.spec.metric;
        let mut points = Vec::with_capacity(batch.len());
        for (((id, slot, _), hash), vector) in batch.into_iter().zip(hashes).zip(vectors) {
            let Some(mut vector) = vector else { continue };
            if metric.prepare(&mut vector) {
                points.push(EmbeddedPoint {
                    id,
                    slot,
                    hash,
                    vector: EmbeddedVector(vector),
                });
            } else {
                skip.insert(slot);
                collection
                    .embedding()
                    .failed(1, format!("point {id}'s text embeds to a zero vector"));
            }
        }
        let at_ms = now_ms();
        let command = ShardCommand::SetEmbedded {
            collection_id: collection.meta.id,
            model,
            at_ms,
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
                collection.embedding().from_cache(hits);
                true
            }
            Err(e) => {
                warn!(collection = %collection.name(), error = %e, "embedded vectors not written; trying again");
                false
            }
        }
    }
}
