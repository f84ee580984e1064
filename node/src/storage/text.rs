//! The full-text index's files in a replica's own store: [`TextStore`] is the
//! [`BlobStore`] a [`quiver_text::BlobDirectory`] keeps its chunks in, on [`Table::Text`]. The
//! table is part of the state machine's tables, so a snapshot (a RocksDB checkpoint streamed
//! whole) carries the text index with the points it was built from.
//!
//! Its writes skip their own sync ([`WriteBatch::replayable`]): a text commit lost to a power cut
//! is rebuilt from the points, which the synced Raft log holds, and one write-ahead log keeps the
//! order of the writes, which is all the directory asks.

use std::fmt;
use std::io;
use std::sync::{Arc, Weak};

use quiver_text::BlobStore;

use super::{Storage, Table, WriteBatch};

/// [`Table::Text`] of one replica's store, as a [`BlobStore`]. It holds the store weakly, so an
/// index still open somewhere (a search under way, a merge finishing) does not keep a removed
/// replica's RocksDB open; once the store is gone, reads and writes fail.
#[derive(Clone)]
pub struct TextStore {
    storage: Weak<dyn Storage>,
}

impl TextStore {
    pub fn new(storage: &Arc<dyn Storage>) -> Self {
        Self {
            storage: Arc::downgrade(storage),
        }
    }

    fn storage(&self) -> io::Result<Arc<dyn Storage>> {
        self.storage
            .upgrade()
            .ok_or_else(|| io::Error::other("the replica's store is closed"))
    }

    /// Removes every row under `prefix` (an index's files, to rebuild it).
    pub fn clear(&self, prefix: &[u8]) -> quiver_core::Result<()> {
        let gone = |e: io::Error| quiver_core::Error::Storage(e.to_string());
        let storage = self.storage().map_err(gone)?;
        let mut batch = WriteBatch::replayable();
        storage.for_each(Table::Text, prefix, &mut |k, _| {
            batch.delete(Table::Text, k.to_vec());
            Ok(true)
        })?;
        storage.write(batch)
    }
}

impl fmt::Debug for TextStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TextStore")
    }
}

fn io_error(e: quiver_core::Error) -> io::Error {
    io::Error::other(e.to_string())
}

impl BlobStore for TextStore {
    fn get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        self.storage()?.get(Table::Text, key).map_err(io_error)
    }

    fn scan(&self, prefix: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        self.storage()?
            .for_each(Table::Text, prefix, &mut |k, v| {
                out.push((k.to_vec(), v.to_vec()));
                Ok(true)
            })
            .map_err(io_error)?;
        Ok(out)
    }

    fn write(&self, puts: Vec<(Vec<u8>, Vec<u8>)>, deletes: Vec<Vec<u8>>) -> io::Result<()> {
        let mut batch = WriteBatch::replayable();
        for key in deletes {
            batch.delete(Table::Text, key);
        }
        for (key, value) in puts {
            batch.put(Table::Text, key, value);
        }
        self.storage()?.write(batch).map_err(io_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{RocksEnv, RocksStorage};
    use quiver_text::{Analyzer, BlobDirectory, TextField, TextIndex};

    fn fields() -> Vec<TextField> {
        vec![TextField {
            name: "body".into(),
            analyzer: Analyzer::English,
        }]
    }

    fn open(storage: &Arc<dyn Storage>, collection: u64) -> TextIndex {
        let store: Arc<dyn BlobStore> = Arc::new(TextStore::new(storage));
        let directory = BlobDirectory::new(store, collection.to_be_bytes().to_vec());
        TextIndex::open(directory, &fields()).unwrap()
    }

    /// A text index kept in RocksDB is found again after the store is reopened, and a
    /// checkpoint of the store (what a snapshot streams) holds the same index; two collections
    /// in one store keep apart.
    #[test]
    fn a_text_index_in_rocksdb_survives_a_reopen_and_travels_in_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let env = RocksEnv::for_tests();
        let docs = [
            (1, "Gene BRCA1 mutations raise the risk of breast cancer"),
            (2, "Error code E42 means the disk is full"),
            (3, "Mutated genes and their effect on cancer risk"),
        ];
        {
            let storage: Arc<dyn Storage> =
                Arc::new(RocksStorage::open(&dir.path().join("db"), &env).unwrap());
            let index = open(&storage, 7);
            for (slot, text) in docs {
                index.add(slot, &[("body", text)]).unwrap();
            }
            index.commit("applied=3").unwrap();
            let other = open(&storage, 8);
            other
                .add(1, &[("body", "nothing about cancer here, or is it")])
                .unwrap();
            other.commit("applied=1").unwrap();
            storage.checkpoint(&dir.path().join("copy")).unwrap();
            drop((index, other));
            crate::storage::release(storage);
        }
        for db in ["db", "copy"] {
            let storage: Arc<dyn Storage> =
                Arc::new(RocksStorage::open(&dir.path().join(db), &env).unwrap());
            let index = open(&storage, 7);
            assert_eq!(
                index.committed_payload().unwrap().as_deref(),
                Some("applied=3")
            );
            assert_eq!(index.docs(), 3, "{db}");
            let hits = index.search("cancer genes", None, 10, None).unwrap();
            let slots: Vec<u64> = hits.iter().map(|h| h.slot).collect();
            assert_eq!(slots.len(), 2, "{db}: {slots:?}");
            assert!(slots.contains(&1) && slots.contains(&3), "{db}: {slots:?}");
            assert!(hits[0].score > 0.0);
            assert_eq!(open(&storage, 8).docs(), 1, "{db}");
        }
    }
}
