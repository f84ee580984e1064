//! [`Storage`] on RocksDB: one column family per [`Table`], batches as RocksDB `WriteBatch`es.
//!
//! A node runs many small instances (its meta replica and one per shard replica), so they are
//! tuned to share, through one [`RocksEnv`]: one block cache for all of them, and a bound on each
//! instance's memtables (`storage.write_buffer_mb`). That bound also caps the space RocksDB gives
//! each write-ahead log file in advance (its default, 1.1 x 64 MiB, made an empty replica take
//! ~75 MB on disk), and the manifest is preallocated small.

use std::path::Path;
use std::sync::Arc;

use quiver_config::StorageConfig;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, Direction, IteratorMode, Options,
    WriteOptions, DB,
};

use super::{Storage, Table, Visitor, WriteBatch, WriteOp};
use quiver_core::{Error, Result};

/// What a node's RocksDB instances share: the block cache, and how each is tuned.
#[derive(Clone)]
pub struct RocksEnv {
    cache: Cache,
    write_buffer_bytes: usize,
    sync_writes: bool,
}

impl RocksEnv {
    pub fn new(config: &StorageConfig) -> Self {
        Self {
            cache: Cache::new_lru_cache(config.block_cache_mb.max(1) << 20),
            write_buffer_bytes: config.write_buffer_mb.max(1) << 20,
            sync_writes: config.sync_writes,
        }
    }

    /// Small defaults, no fsync: for tests.
    pub fn for_tests() -> Self {
        Self::new(&StorageConfig {
            sync_writes: false,
            block_cache_mb: 8,
            write_buffer_mb: 1,
            ..StorageConfig::default()
        })
    }

    fn without_sync(&self) -> Self {
        Self {
            sync_writes: false,
            ..self.clone()
        }
    }

    fn table_options(&self) -> Options {
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&self.cache);
        let mut opts = Options::default();
        opts.set_block_based_table_factory(&table);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // Each table's memtable gets a share of the instance's bound.
        opts.set_write_buffer_size((self.write_buffer_bytes / Table::ALL.len()).max(64 << 10));
        opts
    }

    fn db_options(&self) -> Options {
        let mut opts = self.table_options();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_db_write_buffer_size(self.write_buffer_bytes);
        opts.set_max_total_wal_size(4 * self.write_buffer_bytes as u64);
        opts.set_manifest_preallocation_size(64 << 10);
        opts.set_keep_log_file_num(2);
        opts.set_max_log_file_size(1 << 20);
        opts
    }
}

/// A RocksDB instance holding every table.
pub struct RocksStorage {
    db: DB,
    env: RocksEnv,
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
    /// Opens (creating if needed) the database in `dir`. With `env`'s `sync_writes`, every
    /// batch is fsynced to the WAL before [`Storage::write`] returns.
    pub fn open(dir: &Path, env: &RocksEnv) -> Result<Self> {
        let cfs = Table::ALL
            .iter()
            .map(|t| ColumnFamilyDescriptor::new(t.name(), env.table_options()));
        let db = DB::open_cf_descriptors(&env.db_options(), dir, cfs).map_err(storage_err)?;
        Ok(Self {
            db,
            env: env.clone(),
        })
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
        Ok(Arc::new(RocksStorage::open(dir, &self.env.without_sync())?))
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(table)?, key).map_err(storage_err)
    }

    fn multi_get(&self, table: Table, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        self.db
            .batched_multi_get_cf(self.cf(table)?, keys, false)
            .into_iter()
            .map(|value| Ok(value.map_err(storage_err)?.map(|v| v.to_vec())))
            .collect()
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
        wo.set_sync(self.env.sync_writes && !batch.replayable);
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
