//! An in-memory [`Storage`] over ordered maps, for unit tests and model checks.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use super::{Storage, Table, Visitor, WriteBatch, WriteOp};
use quiver_core::Result;

type Entries = BTreeMap<Vec<u8>, Vec<u8>>;

/// Tables as `BTreeMap`s behind one lock, so a batch is atomic.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    tables: RwLock<BTreeMap<Table, Entries>>,
    /// How many batches were written that a store syncing its writes would have synced.
    synced_writes: AtomicU64,
}

impl MemoryStorage {
    /// How many batches written were not [`WriteBatch::replayable`] (each a sync, on a store
    /// that syncs its writes).
    pub fn synced_writes(&self) -> u64 {
        self.synced_writes.load(Ordering::Relaxed)
    }
}

impl Storage for MemoryStorage {
    fn checkpoint(&self, _dir: &Path) -> Result<Arc<dyn Storage>> {
        Ok(Arc::new(MemoryStorage {
            tables: RwLock::new(self.tables.read().clone()),
            synced_writes: AtomicU64::new(0),
        }))
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .tables
            .read()
            .get(&table)
            .and_then(|t| t.get(key).cloned()))
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        if !batch.replayable {
            self.synced_writes.fetch_add(1, Ordering::Relaxed);
        }
        let mut tables = self.tables.write();
        for op in batch.ops {
            match op {
                WriteOp::Put { table, key, value } => {
                    tables.entry(table).or_default().insert(key, value);
                }
                WriteOp::Delete { table, key } => {
                    tables.entry(table).or_default().remove(&key);
                }
                WriteOp::DeleteRange { table, from, to } => {
                    let t = tables.entry(table).or_default();
                    let doomed: Vec<Vec<u8>> = t.range(from..to).map(|(k, _)| k.clone()).collect();
                    for k in doomed {
                        t.remove(&k);
                    }
                }
            }
        }
        Ok(())
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let tables = self.tables.read();
        let Some(t) = tables.get(&table) else {
            return Ok(Vec::new());
        };
        Ok(t.range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, _)| after.is_none_or(|a| k.as_slice() > a))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn last(&self, table: Table) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        Ok(self
            .tables
            .read()
            .get(&table)
            .and_then(|t| t.last_key_value().map(|(k, v)| (k.clone(), v.clone()))))
    }

    fn for_each_from(
        &self,
        table: Table,
        prefix: &[u8],
        from: &[u8],
        visit: &mut Visitor<'_>,
    ) -> Result<()> {
        let tables = self.tables.read();
        let Some(t) = tables.get(&table) else {
            return Ok(());
        };
        for (k, v) in t.range(from.max(prefix).to_vec()..) {
            if !k.starts_with(prefix) || !visit(k, v)? {
                break;
            }
        }
        Ok(())
    }
}
