//! The meta group's namespace: the catalogue of collections, the shard map and the feature
//! store's definitions.
//!
//! Rows (table `meta` under `placement/` and `alias/`, and the feature [`Registry`] under
//! `feature_registry`) and, derived from them, [`Placements`], the applied map every part of a
//! node reads (routing, hosting replicas, reconciling). Changed only by [`MetaCommand`]s, each
//! checked against the map it was planned from; feature definitions are applied all or none,
//! each refused if its object changed since the version it names.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use parking_lot::RwLock;
use quiver_core::placement::{shard_group, AliasAction, NodeId, Placement, ShardPlacement};
use quiver_core::point::CollectionSpec;
use quiver_core::{Error, Result};
use quiver_features::{DefinitionSet, PlanAction, Registry};
use quiver_index::payload_index::FieldType;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{decode, encode, MachineKind, Namespace};
use crate::storage::{Storage, Table, WriteBatch};

const PLACEMENT_PREFIX: &[u8] = b"placement/";
const ALIAS_PREFIX: &[u8] = b"alias/";
const FEATURE_REGISTRY_KEY: &[u8] = b"feature_registry";

fn placement_key(name: &str) -> Vec<u8> {
    [PLACEMENT_PREFIX, name.as_bytes()].concat()
}

fn alias_key(alias: &str) -> Vec<u8> {
    [ALIAS_PREFIX, alias.as_bytes()].concat()
}

/// Changes of the catalogue and the shard map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// A new collection, with the replicas chosen for each shard.
    CreateCollection {
        spec: CollectionSpec,
        replication_factor: u32,
        replicas: Vec<Vec<NodeId>>,
    },
    /// Every shard group of collection `id` has been formed.
    MarkReady {
        name: String,
        id: u64,
    },
    DropCollection {
        name: String,
    },
    /// Indexes payload field `key` of collection `id` as `field_type`, or (None) drops that
    /// index. Applied to the spec as it is then, so concurrent changes of other fields all
    /// stay. Each shard group follows through its own log (see the node's reconciling).
    SetPayloadIndex {
        name: String,
        id: u64,
        key: String,
        field_type: Option<FieldType>,
    },
    /// Alias changes, applied all or none.
    UpdateAliases {
        actions: Vec<AliasAction>,
    },
    /// A shard's replicas changed (a replica moved). Rejected unless the shard is still at
    /// `epoch`, so two changes planned from the same map cannot overwrite each other.
    SetReplicas {
        group: u64,
        epoch: u64,
        replicas: Vec<NodeId>,
    },
    /// Feature definitions, applied all or none (see [`Registry::apply`]).
    ApplyFeatures {
        set: DefinitionSet,
    },
}

/// The placements a node's meta replica has applied, shared by the meta state machine (the
/// writer) and everything that routes or hosts shards. Every change bumps a version that
/// [`Placements::subscribe`] watches.
#[derive(Debug)]
pub struct Placements {
    map: RwLock<BTreeMap<String, Placement>>,
    /// Alias -> collection name.
    aliases: RwLock<BTreeMap<String, String>>,
    features: RwLock<Arc<Registry>>,
    version: watch::Sender<u64>,
}

impl Default for Placements {
    fn default() -> Self {
        Self {
            map: RwLock::default(),
            aliases: RwLock::default(),
            features: RwLock::default(),
            version: watch::channel(0).0,
        }
    }
}

impl Placements {
    /// The collection named `name` or, failing that, the one alias `name` points at.
    pub fn resolve(&self, name: &str) -> Result<Placement> {
        if let Some(placement) = self.map.read().get(name) {
            return Ok(placement.clone());
        }
        let target = self.aliases.read().get(name).cloned();
        match target {
            Some(collection) => self.get(&collection),
            None => Err(Error::NotFound(format!("collection `{name}`"))),
        }
    }

    /// Every alias and its collection.
    pub fn aliases(&self) -> BTreeMap<String, String> {
        self.aliases.read().clone()
    }

    pub fn get(&self, name: &str) -> Result<Placement> {
        self.map
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("collection `{name}`")))
    }

    pub fn list(&self) -> Vec<Placement> {
        self.map.read().values().cloned().collect()
    }

    /// The collection and shard of group `group`.
    pub fn by_group(&self, group: u64) -> Option<(Placement, ShardPlacement)> {
        self.map.read().values().find_map(|p| {
            p.shards
                .iter()
                .find(|s| s.group == group)
                .map(|s| (p.clone(), s.clone()))
        })
    }

    /// Replicas per node.
    pub fn load(&self) -> BTreeMap<NodeId, usize> {
        let mut load = BTreeMap::new();
        for p in self.map.read().values() {
            for s in &p.shards {
                for n in &s.replicas {
                    *load.entry(*n).or_default() += 1;
                }
            }
        }
        load
    }

    /// The feature definitions applied.
    pub fn feature_registry(&self) -> Arc<Registry> {
        self.features.read().clone()
    }

    fn set_features(&self, registry: Arc<Registry>) {
        *self.features.write() = registry;
        self.version.send_modify(|v| *v += 1);
    }

    /// Notified after every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn replace_all(&self, all: BTreeMap<String, Placement>, aliases: BTreeMap<String, String>) {
        *self.map.write() = all;
        *self.aliases.write() = aliases;
        self.version.send_modify(|v| *v += 1);
    }

    fn set_aliases(&self, aliases: BTreeMap<String, String>) {
        *self.aliases.write() = aliases;
        self.version.send_modify(|v| *v += 1);
    }

    fn put(&self, placement: Placement) {
        self.map
            .write()
            .insert(placement.spec.name.clone(), placement);
        self.version.send_modify(|v| *v += 1);
    }

    fn remove(&self, name: &str) {
        self.map.write().remove(name);
        self.aliases
            .write()
            .retain(|_, collection| collection != name);
        self.version.send_modify(|v| *v += 1);
    }
}

/// What to do in memory once a batch is durable.
pub enum CatalogueEffect {
    Place(Placement),
    Unplace(String),
    Aliases(BTreeMap<String, String>),
    Features(Arc<Registry>),
}

/// The catalogue namespace of the meta group.
#[derive(Default)]
pub struct Catalogue {
    placements: Arc<Placements>,
}

impl Catalogue {
    /// The aliases after `actions`, applied in order to the current ones; the first action that
    /// cannot be applied refuses them all.
    fn plan_aliases(&self, actions: &[AliasAction]) -> Result<BTreeMap<String, String>> {
        let mut aliases = self.placements.aliases();
        let collections = self.placements.map.read();
        let free = |alias: &str, aliases: &BTreeMap<String, String>| -> Result<()> {
            if collections.contains_key(alias) {
                return Err(Error::AlreadyExists(format!(
                    "a collection named `{alias}` (an alias cannot take a collection's name)"
                )));
            }
            if aliases.contains_key(alias) {
                return Err(Error::AlreadyExists(format!("alias `{alias}`")));
            }
            Ok(())
        };
        for action in actions {
            match action {
                AliasAction::Create { alias, collection } => {
                    if !collections.contains_key(collection) {
                        return Err(Error::NotFound(format!("collection `{collection}`")));
                    }
                    free(alias, &aliases)?;
                    aliases.insert(alias.clone(), collection.clone());
                }
                AliasAction::Delete { alias } => {
                    aliases
                        .remove(alias)
                        .ok_or_else(|| Error::NotFound(format!("alias `{alias}`")))?;
                }
                AliasAction::Rename { from, to } => {
                    let collection = aliases
                        .remove(from)
                        .ok_or_else(|| Error::NotFound(format!("alias `{from}`")))?;
                    free(to, &aliases)?;
                    aliases.insert(to.clone(), collection);
                }
            }
        }
        Ok(aliases)
    }

    /// The placement a meta command creates or changes (for a drop: the one it removes).
    fn plan_meta(&self, index: u64, command: &MetaCommand) -> Result<Placement> {
        match command {
            MetaCommand::CreateCollection {
                spec,
                replication_factor,
                replicas,
            } => {
                if self.placements.get(&spec.name).is_ok() {
                    return Err(Error::AlreadyExists(format!("collection `{}`", spec.name)));
                }
                if self.placements.aliases.read().contains_key(&spec.name) {
                    return Err(Error::AlreadyExists(format!(
                        "an alias named `{}` (drop it, or choose another name)",
                        spec.name
                    )));
                }
                let shards = replicas
                    .iter()
                    .enumerate()
                    .map(|(shard, replicas)| ShardPlacement {
                        shard: shard as u32,
                        group: shard_group(index, shard as u32),
                        replicas: replicas.clone(),
                        epoch: 0,
                    })
                    .collect();
                Ok(Placement {
                    id: index,
                    spec: spec.clone(),
                    replication_factor: *replication_factor,
                    shards,
                    ready: false,
                })
            }
            MetaCommand::MarkReady { name, id } => {
                let mut placement = self.placements.get(name)?;
                if placement.id != *id {
                    return Err(Error::NotFound(format!(
                        "collection `{name}` as it was when its shards were formed"
                    )));
                }
                placement.ready = true;
                Ok(placement)
            }
            MetaCommand::DropCollection { name } => self.placements.get(name),
            MetaCommand::UpdateAliases { .. } | MetaCommand::ApplyFeatures { .. } => Err(
                Error::Internal("alias and feature changes are planned on their own".into()),
            ),
            MetaCommand::SetPayloadIndex {
                name,
                id,
                key,
                field_type,
            } => {
                let mut placement = self.placements.get(name)?;
                if placement.id != *id {
                    return Err(Error::NotFound(format!(
                        "collection `{name}` as it was when the index change was checked"
                    )));
                }
                let indexes = &mut placement.spec.payload_indexes;
                let existing = indexes.iter().find(|(k, _)| k == key).map(|(_, t)| *t);
                match (existing, field_type) {
                    (Some(t), Some(wanted)) if t != *wanted => {
                        return Err(Error::AlreadyExists(format!(
                            "an index on `{key}` as {t} (drop it first to index it as {wanted})"
                        )))
                    }
                    (None, Some(wanted)) => indexes.push((key.clone(), *wanted)),
                    (Some(_), None) => indexes.retain(|(k, _)| k != key),
                    _ => {}
                }
                Ok(placement)
            }
            MetaCommand::SetReplicas {
                group,
                epoch,
                replicas,
            } => {
                let (mut placement, _) = self
                    .placements
                    .by_group(*group)
                    .ok_or_else(|| Error::NotFound(format!("shard group {group}")))?;
                let shard = placement
                    .shards
                    .iter_mut()
                    .find(|s| s.group == *group)
                    .ok_or_else(|| Error::Internal(format!("shard group {group}")))?;
                if shard.epoch != *epoch {
                    return Err(Error::Conflict(format!(
                        "shard group {group} changed meanwhile (epoch {} is now {})",
                        epoch, shard.epoch
                    )));
                }
                shard.replicas = replicas.clone();
                shard.epoch += 1;
                Ok(placement)
            }
        }
    }
}

impl Namespace for Catalogue {
    const KIND: MachineKind = MachineKind::Meta;
    type Command = MetaCommand;
    type Effect = CatalogueEffect;
    type View = Arc<Placements>;

    fn view(&self) -> Arc<Placements> {
        self.placements.clone()
    }

    fn load(&mut self, storage: &Arc<dyn Storage>, _derived: &Path) -> Result<()> {
        let mut all = BTreeMap::new();
        for (_, v) in storage.scan(Table::Meta, PLACEMENT_PREFIX, None, usize::MAX)? {
            let p: Placement = decode(&v)?;
            all.insert(p.spec.name.clone(), p);
        }
        let mut aliases = BTreeMap::new();
        for (k, v) in storage.scan(Table::Meta, ALIAS_PREFIX, None, usize::MAX)? {
            let alias = String::from_utf8_lossy(&k[ALIAS_PREFIX.len()..]).into_owned();
            aliases.insert(alias, decode::<String>(&v)?);
        }
        self.placements.replace_all(all, aliases);
        let registry = match storage.get(Table::Meta, FEATURE_REGISTRY_KEY)? {
            Some(bytes) => decode(&bytes)?,
            None => Registry::default(),
        };
        self.placements.set_features(Arc::new(registry));
        Ok(())
    }

    fn plan(
        &self,
        _storage: &dyn Storage,
        index: u64,
        command: &MetaCommand,
        batch: &mut WriteBatch,
    ) -> Result<(CatalogueEffect, u64)> {
        if let MetaCommand::UpdateAliases { actions } = command {
            let aliases = self.plan_aliases(actions)?;
            for old in self.placements.aliases().keys() {
                if !aliases.contains_key(old) {
                    batch.delete(Table::Meta, alias_key(old));
                }
            }
            for (alias, collection) in &aliases {
                batch.put(Table::Meta, alias_key(alias), encode(collection)?);
            }
            return Ok((CatalogueEffect::Aliases(aliases), actions.len() as u64));
        }
        if let MetaCommand::ApplyFeatures { set } = command {
            set.validate()?;
            let mut registry = (*self.placements.feature_registry()).clone();
            let plan = registry.apply(set, index)?;
            let changed = plan
                .iter()
                .filter(|p| p.action != PlanAction::Unchanged)
                .count();
            batch.put(Table::Meta, FEATURE_REGISTRY_KEY, encode(&registry)?);
            return Ok((
                CatalogueEffect::Features(Arc::new(registry)),
                changed as u64,
            ));
        }
        let placement = self.plan_meta(index, command)?;
        let name = placement.spec.name.clone();
        if matches!(command, MetaCommand::DropCollection { .. }) {
            batch.delete(Table::Meta, placement_key(&name));
            // A dropped collection's aliases go with it.
            for (alias, collection) in self.placements.aliases() {
                if collection == name {
                    batch.delete(Table::Meta, alias_key(&alias));
                }
            }
            Ok((CatalogueEffect::Unplace(name), 1))
        } else {
            batch.put(Table::Meta, placement_key(&name), encode(&placement)?);
            Ok((CatalogueEffect::Place(placement), 1))
        }
    }

    fn install(&mut self, _index: u64, effect: CatalogueEffect, _derived: &Path) {
        match effect {
            CatalogueEffect::Place(placement) => self.placements.put(placement),
            CatalogueEffect::Unplace(name) => self.placements.remove(&name),
            CatalogueEffect::Aliases(aliases) => self.placements.set_aliases(aliases),
            CatalogueEffect::Features(registry) => self.placements.set_features(registry),
        }
    }

    /// The catalogue derives no files.
    fn link_derived(&self, _derived: &Path, _into: &Path) {}
}
