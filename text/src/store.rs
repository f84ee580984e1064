//! The blob store a [`BlobDirectory`](crate::BlobDirectory) keeps its files in: an ordered
//! key-value store with atomic writes. The node implements it on a shard replica's RocksDB;
//! [`MemoryBlobStore`] is the in-memory one, for tests.

use std::collections::BTreeMap;
use std::fmt;
use std::io;

use parking_lot::RwLock;

/// An ordered key-value store with atomic batches.
pub trait BlobStore: Send + Sync + fmt::Debug + 'static {
    /// The value of `key`, if any.
    fn get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>>;

    /// Every entry whose key starts with `prefix`, in key order.
    fn scan(&self, prefix: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>>;

    /// Writes `puts` and removes `deletes`, all together or not at all, in the order a later
    /// write follows: a write is never seen without the writes made before it.
    fn write(&self, puts: Vec<(Vec<u8>, Vec<u8>)>, deletes: Vec<Vec<u8>>) -> io::Result<()>;
}

/// A [`BlobStore`] in memory.
#[derive(Debug, Default)]
pub struct MemoryBlobStore {
    entries: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryBlobStore {
    /// Total bytes of the values held.
    pub fn bytes(&self) -> usize {
        self.entries.read().values().map(Vec::len).sum()
    }
}

impl BlobStore for MemoryBlobStore {
    fn get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        Ok(self.entries.read().get(key).cloned())
    }

    fn scan(&self, prefix: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self
            .entries
            .read()
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn write(&self, puts: Vec<(Vec<u8>, Vec<u8>)>, deletes: Vec<Vec<u8>>) -> io::Result<()> {
        let mut entries = self.entries.write();
        for key in deletes {
            entries.remove(&key);
        }
        entries.extend(puts);
        Ok(())
    }
}
