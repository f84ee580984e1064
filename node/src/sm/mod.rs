//! The state machine: applies a group's log, in order, onto storage and then onto memory.
//!
//! [`StateMachine`] is the dispatcher. It owns what every group shares and hands each command to
//! the group's [`Namespace`], which owns one table's rows (its own key prefixes or column
//! family) and what is derived from them in memory and in files:
//! - [`points`]: a shard group's collection and its points ([`ShardMachine`]);
//! - [`catalogue`]: the meta group's collections and shard map ([`MetaMachine`]);
//! - [`embedding_cache`]: a shard group's cached embeddings, written with the vectors they set;
//! - [`feature_values`]: a feature-store shard group's offline rows and online values.
//!
//! The two are distinct machine types, so a meta command cannot be proposed to a shard, and a
//! log entry carries the kind of machine it was proposed to ([`Proposal`]), so one that reaches
//! the other kind is refused, never applied.
//!
//! Invariants the dispatcher keeps:
//! - `apply(index, ..)` with `index <= last_applied` changes nothing (re-delivery is a no-op);
//! - the last applied index (with the replication layer's opaque `raft_state`) is written in the
//!   same atomic batch as the command's data, so after a crash storage holds a prefix of the log,
//!   never half an entry;
//! - a command that cannot take effect is still consumed: the index advances, nothing else
//!   changes, and the error is returned. The outcome depends only on the state and the command, so
//!   every replica agrees;
//! - memory is updated only after the batch is durable, and is always derivable from storage;
//! - a proposal with an idempotency key is applied at most once per key: its outcome is stored
//!   with it, in the same batch, for [`ONCE_WINDOW`] entries.
//!
//! Snapshots ([`snapshot`]) are the state-machine tables' rows plus the namespace's derived files
//! (segment files today), streamed and checksummed; installing one writes its rows in bounded
//! batches and is finished on the next open if a crash cuts it short. Every row is in the
//! versioned encoding of [`quiver_core::encoding`], and the format is recorded with the state.

pub mod catalogue;
pub mod embedding_cache;
pub mod feature_values;
pub mod points;
pub mod snapshot;

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use quiver_core::encoding;
use quiver_core::{Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::sm::snapshot::{read_snapshot, SnapshotEntry};
use crate::storage::{Storage, Table, WriteBatch};

pub use catalogue::{Catalogue, MetaCommand};
pub use points::{Points, ShardCommand};

/// The meta group's state machine.
pub type MetaMachine = StateMachine<Catalogue>;
/// A shard group's state machine.
pub type ShardMachine = StateMachine<Points>;

const APPLIED_KEY: &[u8] = b"applied";
const INSTALLING_KEY: &[u8] = b"installing";
/// The encoding format the state was written in (one byte, [`encoding::FORMAT`]).
const FORMAT_KEY: &[u8] = b"format";
const ONCE_PREFIX: &[u8] = b"once/";
const ONCE_ORDER_PREFIX: &[u8] = b"once_order/";

/// How many log entries an idempotency key is remembered for.
pub const ONCE_WINDOW: u64 = 100_000;

/// Which kind of group a proposal is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MachineKind {
    Meta,
    Shard,
}

/// One table's part of a group's state.
pub trait Namespace: Default + Send + 'static {
    /// The kind of group this namespace is the state of.
    const KIND: MachineKind;
    /// Its mutations, as the log carries them.
    type Command: Serialize + DeserializeOwned + Clone + Debug + PartialEq + Send + Sync;
    /// What to do in memory once a command's batch is durable.
    type Effect;
    /// What readers share of it (collections, the shard map).
    type View: Clone + Send + Sync;

    fn view(&self) -> Self::View;

    /// The namespace as the node's configuration sets it up (before [`load`](Self::load)).
    fn configured(_config: &quiver_config::Config) -> Self {
        Self::default()
    }

    /// Rebuilds memory from `storage`, and from the derived files under `derived` when present.
    /// The namespace may keep `storage` to read rows its memory does not hold.
    fn load(&mut self, storage: &Arc<dyn Storage>, derived: &Path) -> Result<()>;

    /// Validates `command` (at log position `index`) against the state and fills `batch` with its
    /// data changes; returns the effect and how many things it affects. An error other than
    /// [`Error::Storage`] or [`Error::Internal`] is a rejection every replica agrees on.
    fn plan(
        &self,
        storage: &dyn Storage,
        index: u64,
        command: &Self::Command,
        batch: &mut WriteBatch,
    ) -> Result<(Self::Effect, u64)>;

    /// Applies `effect`, of the command at log position `index`, to memory (and to the derived
    /// files under `derived`).
    fn install(&mut self, index: u64, effect: Self::Effect, derived: &Path);

    /// Stops whatever writes the state-machine tables off the apply path (the text index's
    /// commits), before a snapshot replaces them; [`load`](Self::load) starts afresh after.
    fn suspend(&mut self) {}

    /// Puts a consistent copy of the derived files under `derived` at `into` (hard links), for a
    /// snapshot taken at the current state.
    fn link_derived(&self, derived: &Path, into: &Path);
}

/// A command as proposed to a group's log: for which kind of group, and the idempotency key it
/// is applied once under (None: every time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal<C> {
    pub kind: MachineKind,
    pub key: Option<String>,
    pub command: C,
}

/// A proposal in its versioned encoding: what a Raft log entry carries, so an entry written by
/// one build is read by another or refused, never misread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncodedCommand(#[serde(with = "quiver_core::encoding::bytes")] pub Vec<u8>);

impl<C: Serialize + DeserializeOwned> Proposal<C> {
    /// `command` for a group of `kind`, applied once per `key` unless `key` is empty.
    pub fn new(kind: MachineKind, key: &str, command: C) -> Self {
        Self {
            kind,
            key: (!key.is_empty()).then(|| key.to_string()),
            command,
        }
    }

    pub fn encode(&self) -> Result<EncodedCommand> {
        encoding::encode(self).map(EncodedCommand)
    }

    /// Decodes a log entry proposed to a group of `kind`.
    pub fn decode(kind: MachineKind, entry: &EncodedCommand) -> Result<Self> {
        /// The kind alone (the rest is skipped), read first so a command for the other kind
        /// of group is refused as such rather than as an unknown variant.
        #[derive(Deserialize)]
        struct Kind {
            kind: MachineKind,
        }
        let proposed: Kind = encoding::decode("command", &entry.0)?;
        if proposed.kind != kind {
            return Err(Error::Internal(format!(
                "a command for a {:?} group reached a {kind:?} group's log",
                proposed.kind
            )));
        }
        encoding::decode("command", &entry.0)
    }
}

/// The result of applying one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub index: u64,
    /// Points written or deleted, or collections created or dropped.
    pub affected: u64,
    /// True when the index had been applied before and nothing was done.
    pub duplicate: bool,
}

/// The position the state machine has applied up to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppliedRecord {
    /// Log index of the last applied entry (None: nothing applied yet; Raft logs start at 0).
    pub index: Option<u64>,
    /// Opaque state of the replication layer at that entry.
    #[serde(with = "encoding::bytes")]
    pub raft_state: Vec<u8>,
}

/// A consistent copy of the state, made by [`StateMachine::checkpoint`].
pub struct Checkpoint {
    pub state: Arc<dyn Storage>,
    /// The derived files that go with `state`.
    pub derived: PathBuf,
    pub applied: AppliedRecord,
}

/// Written before a snapshot's rows replace the state, removed with the last of them: while it
/// is there the tables are incomplete, and opening the state finishes the install from the
/// snapshot file it names.
#[derive(Debug, Serialize, Deserialize)]
struct Installing {
    snapshot: PathBuf,
    applied: AppliedRecord,
}

/// A snapshot's rows are written in batches of about this many bytes, so installing a large
/// shard does not hold it all in memory.
const INSTALL_BATCH_BYTES: usize = 4 << 20;

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    encoding::encode(value)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    encoding::decode("stored record", bytes)
}

/// Records the encoding format of a new state, or checks the one an existing state recorded:
/// data written in another format is refused, naming both, rather than misread.
fn check_format(storage: &dyn Storage) -> Result<()> {
    let recorded = storage.get(Table::Meta, FORMAT_KEY)?;
    if recorded.is_none() {
        let mut empty = true;
        for table in Table::ALL {
            empty &= storage.last(table)?.is_none();
        }
        if empty {
            let mut batch = WriteBatch::default();
            batch.put(Table::Meta, FORMAT_KEY, vec![encoding::FORMAT]);
            return storage.write(batch);
        }
    }
    encoding::check_format("this replica's data", recorded.as_deref())
}

/// Replaces the state-machine tables of `storage` with the rows of the snapshot file at
/// `snapshot`, the applied record with `applied`, and the derived files under `derived` with the
/// snapshot's (what has none is rebuilt from the installed rows). The file is checked whole
/// before anything changes; after that a crash leaves the [`Installing`] record, and
/// [`StateMachine::open`] runs this again.
fn install_snapshot(
    storage: &dyn Storage,
    snapshot: &Path,
    applied: &AppliedRecord,
    derived: &Path,
) -> Result<()> {
    let open = || {
        std::fs::File::open(snapshot)
            .map_err(|e| Error::Storage(format!("snapshot {}: {e}", snapshot.display())))
    };
    read_snapshot(open()?, &mut |_| Ok(()))?;
    let mut batch = WriteBatch::default();
    for table in Table::STATE_MACHINE {
        if let Some((last, _)) = storage.last(table)? {
            batch.delete_range(table, Vec::new(), last.clone());
            batch.delete(table, last);
        }
    }
    let installing = Installing {
        // (absolute: the next start may run from another directory)
        snapshot: std::fs::canonicalize(snapshot)
            .map_err(|e| Error::Storage(format!("snapshot {}: {e}", snapshot.display())))?,
        applied: applied.clone(),
    };
    batch.put(Table::Meta, INSTALLING_KEY, encode(&installing)?);
    storage.write(batch)?;
    let _ = std::fs::remove_dir_all(derived);
    let mut batch = WriteBatch::default();
    let mut bytes = 0;
    read_snapshot(open()?, &mut |entry| {
        match entry {
            SnapshotEntry::Row(table, k, v) => {
                bytes += k.len() + v.len();
                batch.put(table, k, v);
                if bytes >= INSTALL_BATCH_BYTES {
                    storage.write(std::mem::take(&mut batch))?;
                    bytes = 0;
                }
            }
            SnapshotEntry::File(relative, content) => {
                let path = derived.join(relative);
                let io =
                    |e: std::io::Error| Error::Storage(format!("install {}: {e}", path.display()));
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                let mut file = std::fs::File::create(&path).map_err(io)?;
                std::io::copy(content, &mut file).map_err(io)?;
                file.sync_all().map_err(io)?;
            }
        }
        Ok(())
    })?;
    batch.put(Table::Meta, APPLIED_KEY, encode(applied)?);
    batch.delete(Table::Meta, INSTALLING_KEY);
    storage.write(batch)
}

/// Applies a group's commands to storage and to its namespace.
pub struct StateMachine<N: Namespace> {
    storage: Arc<dyn Storage>,
    namespace: N,
    derived: PathBuf,
    applied: AppliedRecord,
}

impl<N: Namespace> StateMachine<N> {
    /// Opens the state in `storage`, with its derived files under `derived`, finishing an
    /// interrupted snapshot install first.
    pub fn open(storage: Arc<dyn Storage>, derived: &Path) -> Result<Self> {
        Self::open_with(storage, derived, N::default())
    }

    /// [`open`](Self::open) with `namespace` as it starts out (see [`Namespace::configured`]).
    pub fn open_with(storage: Arc<dyn Storage>, derived: &Path, namespace: N) -> Result<Self> {
        if let Some(bytes) = storage.get(Table::Meta, INSTALLING_KEY)? {
            let installing: Installing = decode(&bytes)?;
            info!(snapshot = %installing.snapshot.display(), "finishing an interrupted snapshot install");
            install_snapshot(
                storage.as_ref(),
                &installing.snapshot,
                &installing.applied,
                derived,
            )?;
        }
        check_format(storage.as_ref())?;
        let mut machine = Self {
            storage,
            namespace,
            derived: derived.to_path_buf(),
            applied: AppliedRecord::default(),
        };
        machine.load()?;
        Ok(machine)
    }

    fn load(&mut self) -> Result<()> {
        self.applied = match self.storage.get(Table::Meta, APPLIED_KEY)? {
            Some(b) => decode(&b)?,
            None => AppliedRecord::default(),
        };
        self.namespace.load(&self.storage, &self.derived)
    }

    /// What readers share of the namespace.
    pub fn view(&self) -> N::View {
        self.namespace.view()
    }

    pub fn last_applied(&self) -> Option<u64> {
        self.applied.index
    }

    /// The replication layer's state as of the last applied entry.
    pub fn raft_state(&self) -> &[u8] {
        &self.applied.raft_state
    }

    /// Applies `command` at log position `index`, with no idempotency key.
    pub fn apply(&mut self, index: u64, command: &N::Command) -> Result<Applied> {
        let proposal = Proposal::new(N::KIND, "", command.clone());
        self.apply_entry(index, Some(&proposal), None)
    }

    /// Applies a log entry: a proposal, or nothing (a Raft blank or membership entry, which only
    /// advances the position). `raft_state`, when given, replaces the stored replication state in
    /// the same batch. The batch is not synced on its own ([`WriteBatch::replayable`]): the entry
    /// is in the synced Raft log, which replays it if a power loss drops the batch.
    pub fn apply_entry(
        &mut self,
        index: u64,
        proposal: Option<&Proposal<N::Command>>,
        raft_state: Option<Vec<u8>>,
    ) -> Result<Applied> {
        if self.applied.index.is_some_and(|applied| index <= applied) {
            return Ok(Applied {
                index,
                affected: 0,
                duplicate: true,
            });
        }
        let applied = AppliedRecord {
            index: Some(index),
            raft_state: raft_state.unwrap_or_else(|| self.applied.raft_state.clone()),
        };
        let once = proposal.and_then(|p| p.key.as_deref());
        let mut batch = WriteBatch::replayable();
        if let Some(key) = once {
            if let Some(first) = self.storage.get(Table::Meta, &once_key(key))? {
                // Applied before under this key: consume the index, repeat the first outcome.
                batch.put(Table::Meta, APPLIED_KEY, encode(&applied)?);
                self.storage.write(batch)?;
                self.applied = applied;
                let outcome: Result<Applied> = decode(&first)?;
                return outcome.map(|a| Applied {
                    duplicate: true,
                    ..a
                });
            }
        }
        let planned = match proposal {
            Some(p) => self
                .namespace
                .plan(self.storage.as_ref(), index, &p.command, &mut batch)
                .map(|(e, n)| (Some(e), n)),
            None => Ok((None, 0)),
        };
        let (effect, affected) = match planned {
            Ok(x) => x,
            Err(e @ Error::Storage(_)) | Err(e @ Error::Internal(_)) => return Err(e),
            Err(rejected) => {
                // Consume the index so the log and the state stay in step; change nothing else.
                let mut only_index = WriteBatch::replayable();
                only_index.put(Table::Meta, APPLIED_KEY, encode(&applied)?);
                if let Some(key) = once {
                    self.remember(&mut only_index, key, index, &Err(rejected.clone()))?;
                }
                self.storage.write(only_index)?;
                self.applied = applied;
                return Err(rejected);
            }
        };
        let outcome = Applied {
            index,
            affected,
            duplicate: false,
        };
        if let Some(key) = once {
            self.remember(&mut batch, key, index, &Ok(outcome))?;
        }
        batch.put(Table::Meta, APPLIED_KEY, encode(&applied)?);
        self.storage.write(batch)?;
        self.applied = applied;
        if let Some(effect) = effect {
            self.namespace.install(index, effect, &self.derived);
        }
        Ok(outcome)
    }

    /// Records the outcome of the command applied once under `key` at `index`, and forgets
    /// keys applied more than [`ONCE_WINDOW`] entries ago (a few at a time, oldest first).
    fn remember(
        &self,
        batch: &mut WriteBatch,
        key: &str,
        index: u64,
        outcome: &Result<Applied>,
    ) -> Result<()> {
        batch.put(Table::Meta, once_key(key), encode(outcome)?);
        let order_key = |i: u64| [ONCE_ORDER_PREFIX, &i.to_be_bytes()].concat();
        batch.put(Table::Meta, order_key(index), key.as_bytes().to_vec());
        for (k, old_key) in self.storage.scan(Table::Meta, ONCE_ORDER_PREFIX, None, 8)? {
            let at = k[ONCE_ORDER_PREFIX.len()..]
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| Error::Storage("corrupt once-order key".into()))?;
            if at + ONCE_WINDOW >= index {
                break;
            }
            batch.delete(Table::Meta, k);
            batch.delete(Table::Meta, once_key(&String::from_utf8_lossy(&old_key)));
        }
        Ok(())
    }

    /// A consistent copy of the state in `dir`, to build a snapshot from while applying goes
    /// on: the tables (see [`Storage::checkpoint`]), the derived files (hard links; each at or
    /// behind this state) and the position. `&self` keeps anything from applying meanwhile.
    pub fn checkpoint(&self, dir: &Path) -> Result<Checkpoint> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Storage(format!("{}: {e}", dir.display())))?;
        let state = self.storage.checkpoint(&dir.join("db"))?;
        let derived = dir.join("derived");
        self.namespace.link_derived(&self.derived, &derived);
        Ok(Checkpoint {
            state,
            derived,
            applied: self.applied.clone(),
        })
    }

    /// Replaces the whole state with the snapshot file at `snapshot` (see
    /// [`snapshot::write_snapshot`]) and `applied`, then rebuilds memory. A file that is not
    /// whole changes nothing; an install cut short by a crash is finished when the state is next
    /// opened, so the file must stay until this returns.
    pub fn import(&mut self, snapshot: &Path, applied: AppliedRecord) -> Result<()> {
        self.namespace.suspend();
        install_snapshot(self.storage.as_ref(), snapshot, &applied, &self.derived)?;
        self.load()
    }
}

fn once_key(key: &str) -> Vec<u8> {
    [ONCE_PREFIX, key.as_bytes()].concat()
}

#[cfg(test)]
mod feature_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod text_tests;
