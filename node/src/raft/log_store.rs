//! The Raft log on [`Storage`]: entries in [`Table::RaftLog`] keyed by big-endian index; vote,
//! committed and last-purged log ids in [`Table::RaftMeta`].
//!
//! Appends are one atomic batch, durable before the flush callback fires (when the storage
//! syncs writes). Entries and marks are in the versioned encoding ([`quiver_core::encoding`]). Purging records the new last-purged id in the same batch that deletes the
//! entries, so a crash never leaves a gap openraft cannot explain.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, StorageIOError, Vote};
use quiver_core::encoding;

use super::{Entry, LogId, NodeId, StorageError, TypeConfig};
use crate::storage::{Storage, Table, WriteBatch};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// A group's log. Cheap to clone: it is also the reader handed to replication tasks.
#[derive(Clone)]
pub struct LogStore {
    storage: Arc<dyn Storage>,
}

type StorageResult<T> = Result<T, StorageError>;

fn encode<T: serde::Serialize>(value: &T) -> StorageResult<Vec<u8>> {
    encoding::encode(value).map_err(|e| StorageIOError::write(&e).into())
}

impl LogStore {
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Self { storage }
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> StorageResult<Option<T>> {
        match self
            .storage
            .get(Table::RaftMeta, key)
            .map_err(|e| StorageIOError::read(&e))?
        {
            None => Ok(None),
            Some(bytes) => encoding::decode("raft state", &bytes)
                .map(Some)
                .map_err(|e| StorageIOError::read(&e).into()),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> StorageResult<()> {
        let mut batch = WriteBatch::default();
        batch.put(Table::RaftMeta, key, encode(value)?);
        self.storage
            .write(batch)
            .map_err(|e| StorageIOError::write(&e).into())
    }
}

fn decode_entry(bytes: &[u8]) -> StorageResult<Entry> {
    encoding::decode("log entry", bytes).map_err(|e| StorageIOError::read_logs(&e).into())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let mut entries = Vec::new();
        let mut failed = None;
        self.storage
            .for_each_from(Table::RaftLog, b"", &start.to_be_bytes(), &mut |k, v| {
                let index = u64::from_be_bytes(k.try_into().unwrap_or([0; 8]));
                if !range.contains(&index) {
                    return Ok(false);
                }
                match decode_entry(v) {
                    Ok(e) => entries.push(e),
                    Err(e) => {
                        failed = Some(e);
                        return Ok(false);
                    }
                }
                Ok(true)
            })
            .map_err(|e| StorageIOError::read_logs(&e))?;
        match failed {
            Some(e) => Err(e),
            None => Ok(entries),
        }
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged: Option<LogId> = self.meta(LAST_PURGED)?;
        let last = match self
            .storage
            .last(Table::RaftLog)
            .map_err(|e| StorageIOError::read_logs(&e))?
        {
            Some((_, v)) => Some(decode_entry(&v)?.log_id),
            None => None,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        self.put_meta(VOTE, vote)
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> StorageResult<()> {
        self.put_meta(COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId>> {
        Ok(self.meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put(
                Table::RaftLog,
                entry.log_id.index.to_be_bytes().to_vec(),
                encode(&entry)?,
            );
        }
        match self.storage.write(batch) {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(&e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> StorageResult<()> {
        let mut batch = WriteBatch::default();
        batch.delete_range(
            Table::RaftLog,
            log_id.index.to_be_bytes().to_vec(),
            vec![0xff; 9],
        );
        self.storage
            .write(batch)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> StorageResult<()> {
        let mut batch = WriteBatch::default();
        batch.put(Table::RaftMeta, LAST_PURGED, encode(&log_id)?);
        batch.delete_range(
            Table::RaftLog,
            0u64.to_be_bytes().to_vec(),
            (log_id.index + 1).to_be_bytes().to_vec(),
        );
        self.storage
            .write(batch)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
