//! Key-value storage behind a small trait that does not mention RocksDB.
//!
//! Data lives in a few [`Table`]s (RocksDB column families). A [`WriteBatch`] is applied
//! atomically: the state machine puts its data changes and its last applied index in one batch,
//! so after a crash either both are there or neither is. [`RocksStorage`] is the real engine;
//! [`MemoryStorage`] serves unit tests and model checks.

mod memory;
mod rocks;
pub mod text;

pub use memory::MemoryStorage;
pub use rocks::{RocksEnv, RocksStorage};
pub use text::TextStore;

use std::path::Path;
use std::sync::Arc;

use quiver_core::Result;

/// A column family.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Table {
    /// State-machine bookkeeping and collection definitions.
    Meta,
    /// Points, keyed by collection id then point id.
    Points,
    /// Raft log entries, keyed by big-endian log index.
    RaftLog,
    /// Raft's own durable state: vote, committed and last purged log ids.
    RaftMeta,
    /// Full-text index files, chunked, keyed by collection id then file path
    /// ([`TextStore`]).
    Text,
    /// Feature values: offline rows and online values, keyed by view id then entity key.
    Features,
}

impl Table {
    pub const ALL: [Table; 6] = [
        Table::Meta,
        Table::Points,
        Table::RaftLog,
        Table::RaftMeta,
        Table::Text,
        Table::Features,
    ];
    /// The tables the state machine owns, which a Raft snapshot carries.
    pub const STATE_MACHINE: [Table; 4] =
        [Table::Meta, Table::Points, Table::Text, Table::Features];

    /// The table's byte in a snapshot file: fixed per table, never reused, whatever the order
    /// of the variants.
    pub fn tag(self) -> u8 {
        match self {
            Table::Meta => 1,
            Table::Points => 2,
            Table::RaftLog => 3,
            Table::RaftMeta => 4,
            Table::Text => 5,
            Table::Features => 6,
        }
    }

    pub fn from_tag(tag: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.tag() == tag)
    }

    pub fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Points => "points",
            Table::RaftLog => "raft_log",
            Table::RaftMeta => "raft_meta",
            Table::Text => "text",
            Table::Features => "features",
        }
    }
}

/// One change inside a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    Put {
        table: Table,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        table: Table,
        key: Vec<u8>,
    },
    /// Deletes every key in `[from, to)`.
    DeleteRange {
        table: Table,
        from: Vec<u8>,
        to: Vec<u8>,
    },
}

/// Changes applied all together or not at all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    pub ops: Vec<WriteOp>,
    /// Whether the batch may skip its own sync: what it writes is rebuilt from something already
    /// durable if it is lost (a state machine's apply, from the synced Raft log), and the next
    /// synced write to the same store makes it durable in any case (one write-ahead log, written
    /// in order). A process killed keeps it either way: only a power loss can drop it.
    pub replayable: bool,
}

impl WriteBatch {
    /// An empty batch that may skip its own sync (see [`WriteBatch::replayable`]).
    pub fn replayable() -> Self {
        Self {
            ops: Vec::new(),
            replayable: true,
        }
    }

    pub fn put(&mut self, table: Table, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(WriteOp::Put {
            table,
            key: key.into(),
            value: value.into(),
        });
    }

    pub fn delete(&mut self, table: Table, key: impl Into<Vec<u8>>) {
        self.ops.push(WriteOp::Delete {
            table,
            key: key.into(),
        });
    }

    pub fn delete_range(&mut self, table: Table, from: Vec<u8>, to: Vec<u8>) {
        self.ops.push(WriteOp::DeleteRange { table, from, to });
    }
}

/// Called per entry by [`Storage::for_each`]; returns whether to go on.
pub type Visitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<bool> + 'a;

/// An ordered key-value store with atomic batches.
pub trait Storage: Send + Sync + 'static {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// The values of `keys` in `table`, in the order of `keys` (None where a key is absent):
    /// one lookup for all of them where the store can batch it.
    fn multi_get(&self, table: Table, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        keys.iter().map(|key| self.get(table, key)).collect()
    }

    /// Applies every op of `batch` atomically; durable before returning when the store was
    /// opened with synchronous writes and the batch is not [`WriteBatch::replayable`].
    fn write(&self, batch: WriteBatch) -> Result<()>;

    /// Up to `limit` entries with keys starting with `prefix`, in key order, beginning strictly
    /// after `after` when given.
    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;

    /// The entry with the greatest key in `table`, if any.
    fn last(&self, table: Table) -> Result<Option<(Vec<u8>, Vec<u8>)>>;

    /// Calls `visit` for every entry under `prefix` with a key at or after `from`, in key
    /// order, until it returns false.
    fn for_each_from(
        &self,
        table: Table,
        prefix: &[u8],
        from: &[u8],
        visit: &mut Visitor<'_>,
    ) -> Result<()>;

    /// Calls `visit` for every entry under `prefix`, in key order, until it returns false.
    fn for_each(&self, table: Table, prefix: &[u8], visit: &mut Visitor<'_>) -> Result<()> {
        self.for_each_from(table, prefix, prefix, visit)
    }

    /// A consistent, read-only copy of the store as it is now, to read from while writes go on.
    /// RocksDB makes a checkpoint in `dir` (hard links to its files, so it is cheap); the
    /// caller removes `dir` when done with the copy.
    fn checkpoint(&self, dir: &Path) -> Result<Arc<dyn Storage>>;
}

/// The smallest key greater than every key that starts with `prefix` (None if there is none).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Drops `storage` and waits until no thread holds it any more (a text index's thread may hold
/// it for a moment past its close), so a test can open the same files again.
#[cfg(test)]
pub(crate) fn release(storage: Arc<dyn Storage>) {
    let weak = Arc::downgrade(&storage);
    drop(storage);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while weak.strong_count() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the store is still held"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract both engines keep.
    pub(crate) fn exercise(storage: &dyn Storage) {
        let mut b = WriteBatch::default();
        for k in [b"a1".as_slice(), b"a2", b"a3", b"b1"] {
            b.put(Table::Points, k, k);
        }
        b.put(Table::Meta, b"a1".as_slice(), b"meta".as_slice());
        storage.write(b).unwrap();
        assert_eq!(
            storage.get(Table::Meta, b"a1").unwrap().as_deref(),
            Some(b"meta".as_slice())
        );
        let all = storage.scan(Table::Points, b"a", None, 10).unwrap();
        assert_eq!(all.len(), 3);
        let after = storage.scan(Table::Points, b"a", Some(b"a1"), 1).unwrap();
        assert_eq!(after, vec![(b"a2".to_vec(), b"a2".to_vec())]);
        let mut b = WriteBatch::default();
        b.delete_range(Table::Points, b"a".to_vec(), prefix_end(b"a").unwrap());
        b.delete(Table::Meta, b"a1".as_slice());
        storage.write(b).unwrap();
        assert!(storage
            .scan(Table::Points, b"a", None, 10)
            .unwrap()
            .is_empty());
        assert_eq!(storage.get(Table::Meta, b"a1").unwrap(), None);
        let mut seen = Vec::new();
        storage
            .for_each(Table::Points, b"", &mut |k, _| {
                seen.push(k.to_vec());
                Ok(true)
            })
            .unwrap();
        assert_eq!(seen, vec![b"b1".to_vec()]);
        let mut b = WriteBatch::default();
        for k in [b"c1".as_slice(), b"c2", b"c3"] {
            b.put(Table::Points, k, k);
        }
        storage.write(b).unwrap();
        let mut from_c2 = Vec::new();
        storage
            .for_each_from(Table::Points, b"c", b"c2", &mut |k, _| {
                from_c2.push(k.to_vec());
                Ok(true)
            })
            .unwrap();
        assert_eq!(from_c2, vec![b"c2".to_vec(), b"c3".to_vec()]);
        assert_eq!(
            storage.last(Table::Points).unwrap().map(|(k, _)| k),
            Some(b"c3".to_vec())
        );
        assert_eq!(storage.last(Table::RaftLog).unwrap(), None);
    }

    #[test]
    fn memory_storage_keeps_the_contract() {
        exercise(&MemoryStorage::default());
    }

    #[test]
    fn rocks_storage_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        exercise(&RocksStorage::open(dir.path(), &RocksEnv::for_tests()).unwrap());
    }

    #[test]
    fn prefix_end_carries() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff]), None);
    }
}
