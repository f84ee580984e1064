//! The embedding cache: vectors by (model, content hash), rows of each shard group's state
//! machine, so text embedded once is not embedded again — by another point of the shard, or,
//! since a shard leader looks in every replica on its node, by a point of another collection
//! there (as the seed's Redis cache of embeddings did, here replicated with the data).
//!
//! Rows are written by the command that sets the embedded vectors ([`plan_put`]), each with the
//! time the leader proposed it; a row older than [`TTL_MS`] at the time of a later such command
//! is deleted by it (a few at a time, oldest first, through an index by age), so every replica
//! expires the same rows, decided by time carried in the log, never by its own clock. A lookup
//! passes over rows past their age too.
//!
//! Keys (table `meta`): `embedding_cache/<model>\0<sha256>` → [`CachedVector`], and
//! `embedding_cache_age/<at_ms big-endian><model>\0<sha256>` → empty.

use quiver_core::Result;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{decode, encode};
use crate::storage::{Storage, Table, WriteBatch};

const ROW_PREFIX: &[u8] = b"embedding_cache/";
const AGE_PREFIX: &[u8] = b"embedding_cache_age/";

/// How long a cached vector is used: 7 days.
pub const TTL_MS: u64 = 7 * 24 * 3600 * 1000;
/// Expired rows one command deletes at most.
const EXPIRE_PER_COMMAND: usize = 256;

/// The sha256 of a text, as the cache keys it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    pub fn of(text: &str) -> Self {
        Self(Sha256::digest(text.as_bytes()).into())
    }
}

/// A cached vector and when (the proposing leader's clock, ms since the epoch) it was cached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedVector {
    pub at_ms: u64,
    #[serde(with = "quiver_core::encoding::f32s")]
    pub vector: Vec<f32>,
}

fn entry(model: &str, hash: &ContentHash) -> Vec<u8> {
    [model.as_bytes(), b"\0", &hash.0].concat()
}

fn row_key(model: &str, hash: &ContentHash) -> Vec<u8> {
    [ROW_PREFIX, &entry(model, hash)].concat()
}

fn age_key(at_ms: u64, model: &str, hash: &ContentHash) -> Vec<u8> {
    [AGE_PREFIX, &at_ms.to_be_bytes(), &entry(model, hash)].concat()
}

/// Caches `entries` (`(hash, vector)`) of `model` at `at_ms` into `batch`, and deletes up to
/// [`EXPIRE_PER_COMMAND`] rows older than [`TTL_MS`] at `at_ms`.
pub fn plan_put(
    storage: &dyn Storage,
    batch: &mut WriteBatch,
    model: &str,
    at_ms: u64,
    entries: &[(ContentHash, &[f32])],
) -> Result<()> {
    for (hash, vector) in entries {
        let key = row_key(model, hash);
        if let Some(old) = storage.get(Table::Meta, &key)? {
            let old: CachedVector = decode(&old)?;
            batch.delete(Table::Meta, age_key(old.at_ms, model, hash));
        }
        let row = CachedVector {
            at_ms,
            vector: vector.to_vec(),
        };
        batch.put(Table::Meta, key, encode(&row)?);
        batch.put(Table::Meta, age_key(at_ms, model, hash), Vec::new());
    }
    let oldest = storage.scan(Table::Meta, AGE_PREFIX, None, EXPIRE_PER_COMMAND)?;
    for (key, _) in oldest {
        let rest = &key[AGE_PREFIX.len()..];
        let Some((at, entry)) = rest.split_first_chunk::<8>() else {
            continue;
        };
        if u64::from_be_bytes(*at).saturating_add(TTL_MS) >= at_ms {
            break;
        }
        // (a row replaced in this very batch has a newer age key: keep it)
        let fresh = entries
            .iter()
            .any(|(hash, _)| entry == self::entry(model, hash).as_slice());
        if !fresh {
            batch.delete(Table::Meta, [ROW_PREFIX, entry].concat());
        }
        batch.delete(Table::Meta, key);
    }
    Ok(())
}

/// The cached vectors of `hashes` under `model`, in their order (None where there is none, or
/// it is older than [`TTL_MS`] at `now_ms`).
pub fn lookup(
    storage: &dyn Storage,
    model: &str,
    hashes: &[ContentHash],
    now_ms: u64,
) -> Result<Vec<Option<Vec<f32>>>> {
    let keys: Vec<Vec<u8>> = hashes.iter().map(|h| row_key(model, h)).collect();
    storage
        .multi_get(Table::Meta, &keys)?
        .into_iter()
        .map(|row| match row {
            None => Ok(None),
            Some(bytes) => {
                let cached: CachedVector = decode(&bytes)?;
                Ok((cached.at_ms.saturating_add(TTL_MS) >= now_ms).then_some(cached.vector))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::MemoryStorage;

    #[test]
    fn vectors_are_found_by_model_and_text_until_they_expire_and_are_then_deleted() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let (a, b) = (ContentHash::of("alpha"), ContentHash::of("beta"));
        assert_ne!(a, b);
        let day = 24 * 3600 * 1000;
        let mut batch = WriteBatch::default();
        plan_put(storage.as_ref(), &mut batch, "m1", day, &[(a, &[1.0, 0.0])]).unwrap();
        storage.write(batch).unwrap();
        let found = lookup(storage.as_ref(), "m1", &[a, b], 2 * day).unwrap();
        assert_eq!(found, vec![Some(vec![1.0, 0.0]), None]);
        // another model's vector of the same text is another row
        assert_eq!(
            lookup(storage.as_ref(), "m2", &[a], 2 * day).unwrap(),
            vec![None]
        );
        // past its age it is not used, and the next write deletes it
        assert_eq!(
            lookup(storage.as_ref(), "m1", &[a], day + TTL_MS + 1).unwrap(),
            vec![None]
        );
        let mut batch = WriteBatch::default();
        let later = day + TTL_MS + 1;
        plan_put(
            storage.as_ref(),
            &mut batch,
            "m1",
            later,
            &[(b, &[0.0, 1.0])],
        )
        .unwrap();
        storage.write(batch).unwrap();
        assert!(storage
            .get(Table::Meta, &row_key("m1", &a))
            .unwrap()
            .is_none());
        assert!(
            storage
                .scan(Table::Meta, AGE_PREFIX, None, 10)
                .unwrap()
                .len()
                == 1
        );
        // caching a text again renews it
        let mut batch = WriteBatch::default();
        plan_put(
            storage.as_ref(),
            &mut batch,
            "m1",
            later + day,
            &[(b, &[0.0, 1.0])],
        )
        .unwrap();
        storage.write(batch).unwrap();
        let ages = storage.scan(Table::Meta, AGE_PREFIX, None, 10).unwrap();
        assert_eq!(ages.len(), 1);
        assert_eq!(
            lookup(storage.as_ref(), "m1", &[b], later + TTL_MS + day / 2).unwrap(),
            vec![Some(vec![0.0, 1.0])]
        );
    }
}
