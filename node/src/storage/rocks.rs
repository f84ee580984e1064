//! [`Storage`] on RocksDB: one column family per [`Table`], batches as RocksDB `WriteBatch`es.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteOptions, DB};

use super::{Storage, Table, Visitor, WriteBatch, WriteOp};
use quiver_core::{Error, Result};

/// A RocksDB instance holding every table.
pub struct RocksStorage {
    db: DB,
    sync_writes: bool,
}

impl std::fmt::Debug for RocksStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStorage")
            .field("path", &self.db.path())
            .finish()
    }
}

fn storage_err(e: rocksdb::Error) -> Error {
    Error::Storage(e.into_string())
}

impl RocksStorage {
    /// Opens (creating if needed) the database in `dir`. With `sync_writes`, every batch is
    /// fsynced to the WAL before [`Storage::write`] returns.
    pub fn open(dir: &Path, sync_writes: bool) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let cfs = Table::ALL
            .iter()
            .map(|t| ColumnFamilyDescriptor::new(t.name(), Options::default()));
        let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(storage_err)?;
        Ok(Self { db, sync_writes })
    }

    fn cf(&self, table: Table) -> Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(table.name())
            .ok_or_else(|| Error::Internal(format!("missing column family {}", table.name())))
    }
}

impl Storage for RocksStorage {
    fn checkpoint(&self, dir: &Path) -> Result<Arc<dyn Storage>> {
        rocksdb::checkpoint::Checkpoint::new(&self.db)
            .and_then(|c| c.create_checkpoint(dir))
            .map_err(storage_err)?;
        Ok(Arc::new(RocksStorage::open(dir, false)?))
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(table)?, key).map_err(storage_err)
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        let mut wb = rocksdb::WriteBatch::default();
        for op in &batch.ops {
            match op {
                WriteOp::Put { table, key, value } => wb.put_cf(self.cf(*table)?, key, value),
                WriteOp::Delete { table, key } => wb.delete_cf(self.cf(*table)?, key),
                WriteOp::DeleteRange { table, from, to } => {
                    wb.delete_range_cf(self.cf(*table)?, from, to)
                }
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(self.sync_writes);
        self.db.write_opt(wb, &wo).map_err(storage_err)
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let start = after.unwrap_or(prefix);
        let iter = self.db.iterator_cf(
            self.cf(table)?,
            IteratorMode::From(start, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item.map_err(storage_err)?;
            if !k.starts_with(prefix) || out.len() >= limit {
                break;
            }
            if after.is_some_and(|a| &*k <= a) {
                continue;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn last(&self, table: Table) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        match self
            .db
            .iterator_cf(self.cf(table)?, IteratorMode::End)
            .next()
        {
            None => Ok(None),
            Some(item) => {
                let (k, v) = item.map_err(storage_err)?;
                Ok(Some((k.to_vec(), v.to_vec())))
            }
        }
    }

    fn for_each_from(
        &self,
        table: Table,
        prefix: &[u8],
        from: &[u8],
        visit: &mut Visitor<'_>,
    ) -> Result<()> {
        let iter = self.db.iterator_cf(
            self.cf(table)?,
            IteratorMode::From(from.max(prefix), Direction::Forward),
        );
        for item in iter {
            let (k, v) = item.map_err(storage_err)?;
            if !k.starts_with(prefix) || !visit(&k, &v)? {
                break;
            }
        }
        Ok(())
    }
}
