//! Entities, feature views and feature services, and the [`Registry`] that holds them.
//!
//! Every object has a version, 1 when created and bumped by every change. A change names the
//! version it replaces, so two writers that read the same version cannot both change it: the
//! second is refused ([`FeatureError::Conflict`]) and changes nothing. A set of definitions is
//! [planned](Registry::plan) (each object created, changed or unchanged) and
//! [applied](Registry::apply) as one: every object or none. Applying the same set again is a
//! no-op, so a retried apply is safe.
//!
//! A feature view keeps the schema of each of its versions ([`ViewVersion`]): rows are stored
//! with the version they were written at, and a read may pin one (`user_stats@v2:clicks`).
//! A view's entities never change (its rows are keyed by them); nor do the join keys of an
//! entity a view uses.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::value::{Value, ValueType};
use crate::{FeatureError, Result};

/// The most fields a view may have, join keys an entity may have, and features a service may
/// name.
pub const MAX_FIELDS: usize = 256;
/// The longest name of an object or field.
pub const MAX_NAME_LEN: usize = 64;
/// Column names of pushed rows and entity rows, which no field or join key may take.
pub const RESERVED_COLUMNS: [&str; 2] = ["event_timestamp", "created_timestamp"];

/// A join key of an entity: a column that identifies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinKey {
    pub name: String,
    pub value_type: ValueType,
}

/// Something features describe (a user, a driver), identified by its join keys.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Entity {
    pub name: String,
    pub join_keys: Vec<JoinKey>,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    /// As stored: the current version. In a change: the version it replaces (0: none).
    pub version: u64,
}

/// A typed feature of a view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    pub name: String,
    pub value_type: ValueType,
}

/// A view's schema as of one of its versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewVersion {
    pub version: u64,
    pub fields: Vec<Field>,
    /// 0: values never expire.
    pub ttl_seconds: u64,
}

impl ViewVersion {
    pub fn field(&self, name: &str) -> Option<(usize, &Field)> {
        self.fields.iter().enumerate().find(|(_, f)| f.name == name)
    }
}

/// A group of features of the same entities, written and read together.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FeatureView {
    pub name: String,
    pub entities: Vec<String>,
    pub fields: Vec<Field>,
    /// 0: values never expire.
    pub ttl_seconds: u64,
    pub owner: String,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    /// How the values are computed, as text (SQL, Python): recorded, not run.
    pub transformation: String,
    /// As stored: the current version. In a change: the version it replaces (0: none).
    pub version: u64,
    /// As stored: the meta log index that created the view, which its rows are keyed by (so a
    /// view of the same name made later never reads them). Ignored in a change.
    pub id: u64,
    /// As stored: the schema of every version that changed it, oldest first. Ignored in a change.
    pub history: Vec<ViewVersion>,
}

impl FeatureView {
    /// The schema as of version `version` (None: the current one).
    pub fn at(&self, version: Option<u64>) -> Result<ViewVersion> {
        match version {
            None => Ok(self.current()),
            Some(v) => self.recorded(v).cloned().ok_or_else(|| {
                FeatureError::NotFound(format!(
                    "version {v} of feature view `{}` (it is at version {})",
                    self.name, self.version
                ))
            }),
        }
    }

    /// The recorded schema that version `v` reads with, borrowed.
    fn recorded(&self, v: u64) -> Option<&ViewVersion> {
        self.history
            .iter()
            .rev()
            .find(|h| h.version <= v && v <= self.version)
    }

    /// The current schema.
    pub fn current(&self) -> ViewVersion {
        ViewVersion {
            version: self.version,
            fields: self.fields.clone(),
            ttl_seconds: self.ttl_seconds,
        }
    }

    /// The values of `wanted` in a row stored at version `version`: a feature that version
    /// lacks, or held with another type, reads null.
    pub fn project(&self, version: u64, values: &[Value], wanted: &[Field]) -> Vec<Value> {
        // (borrowed, not cloned: this runs once per entity of every online read)
        let schema = self.recorded(version);
        wanted
            .iter()
            .map(|w| {
                schema
                    .and_then(|s| s.field(&w.name))
                    .filter(|(_, f)| f.value_type == w.value_type)
                    .and_then(|(i, _)| values.get(i).cloned())
                    .unwrap_or(Value::Null)
            })
            .collect()
    }

    fn schema_differs(&self, other: &FeatureView) -> bool {
        self.fields != other.fields || self.ttl_seconds != other.ttl_seconds
    }
}

/// A named set of features, as a model consumes them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FeatureService {
    pub name: String,
    /// `view:feature`, `view@v2:feature`, or `view` for all of a view's features.
    pub features: Vec<String>,
    pub owner: String,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    /// As stored: the current version. In a change: the version it replaces (0: none).
    pub version: u64,
}

/// A reference to features: `view:feature`, `view@v2:feature`, or `view` (every feature).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FeatureRef {
    pub view: String,
    /// A pinned version (None: the current one).
    pub version: Option<u64>,
    /// None: every feature of the view.
    pub feature: Option<String>,
}

impl FeatureRef {
    /// Reads `view[@vN][:feature]`; `field` names it in errors.
    pub fn parse(field: &str, text: &str) -> Result<Self> {
        let bad = |why: &str| FeatureError::invalid(field, format!("`{text}`: {why}"));
        let (view_part, feature) = match text.split_once(':') {
            Some((v, f)) if !f.is_empty() && f != "*" => (v, Some(f.to_string())),
            Some((v, _)) => (v, None),
            None => (text, None),
        };
        let (view, version) = match view_part.split_once('@') {
            Some((v, ver)) => {
                let n = ver
                    .strip_prefix('v')
                    .unwrap_or(ver)
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad("a pinned version reads `view@v2`"))?;
                (v, Some(n))
            }
            None => (view_part, None),
        };
        if view.is_empty() {
            return Err(bad("names no feature view (write `view:feature`)"));
        }
        Ok(Self {
            view: view.to_string(),
            version,
            feature,
        })
    }
}

impl std::fmt::Display for FeatureRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.view)?;
        if let Some(v) = self.version {
            write!(f, "@v{v}")?;
        }
        if let Some(feature) = &self.feature {
            write!(f, ":{feature}")?;
        }
        Ok(())
    }
}

/// Definitions to apply together (a file's content).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DefinitionSet {
    pub entities: Vec<Entity>,
    pub feature_views: Vec<FeatureView>,
    pub feature_services: Vec<FeatureService>,
}

/// What applying a set does to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlanAction {
    Created,
    Changed,
    Unchanged,
}

impl PlanAction {
    pub fn as_str(self) -> &'static str {
        match self {
            PlanAction::Created => "created",
            PlanAction::Changed => "changed",
            PlanAction::Unchanged => "unchanged",
        }
    }
}

/// One object of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanItem {
    /// `entity`, `feature_view` or `feature_service`.
    pub kind: String,
    pub name: String,
    pub action: PlanAction,
    /// The version it has after the apply.
    pub version: u64,
    /// What changes (`fields`, `ttl`, `description`), for a changed object.
    pub changes: Vec<String>,
}

/// What applying a set does, object by object.
pub type Plan = Vec<PlanItem>;

/// Every feature definition, as the meta group holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Registry {
    pub entities: BTreeMap<String, Entity>,
    pub feature_views: BTreeMap<String, FeatureView>,
    pub feature_services: BTreeMap<String, FeatureService>,
}

fn check_name(field: &str, name: &str) -> Result<()> {
    let ok_start = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if name.is_empty() {
        return Err(FeatureError::invalid(field, "must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(FeatureError::invalid(
            field,
            format!("longer than {MAX_NAME_LEN} characters"),
        ));
    }
    if !ok_start || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(FeatureError::invalid(
            field,
            format!(
                "`{name}` must start with a letter or `_` and hold only letters, digits and `_`"
            ),
        ));
    }
    Ok(())
}

fn check_unique<'a>(field: &str, what: &str, names: impl Iterator<Item = &'a str>) -> Result<()> {
    let mut seen = BTreeSet::new();
    for (i, name) in names.enumerate() {
        if !seen.insert(name) {
            return Err(FeatureError::invalid(
                format!("{field}[{i}]"),
                format!("{what} `{name}` is named twice"),
            ));
        }
    }
    Ok(())
}

impl DefinitionSet {
    /// Checks each object on its own (names, types, sizes); references are checked by
    /// [`Registry::plan`], which sees what exists already.
    pub fn validate(&self) -> Result<()> {
        check_unique(
            "entities",
            "entity",
            self.entities.iter().map(|e| e.name.as_str()),
        )?;
        check_unique(
            "feature_views",
            "feature view",
            self.feature_views.iter().map(|v| v.name.as_str()),
        )?;
        check_unique(
            "feature_services",
            "feature service",
            self.feature_services.iter().map(|s| s.name.as_str()),
        )?;
        for (i, entity) in self.entities.iter().enumerate() {
            let at = format!("entities[{i}]");
            check_name(&format!("{at}.name"), &entity.name)?;
            if entity.join_keys.is_empty() {
                return Err(FeatureError::invalid(
                    format!("{at}.join_keys"),
                    "an entity needs at least one join key",
                ));
            }
            if entity.join_keys.len() > 8 {
                return Err(FeatureError::invalid(
                    format!("{at}.join_keys"),
                    "at most 8 join keys",
                ));
            }
            check_unique(
                &format!("{at}.join_keys"),
                "join key",
                entity.join_keys.iter().map(|k| k.name.as_str()),
            )?;
            for (k, key) in entity.join_keys.iter().enumerate() {
                let at = format!("{at}.join_keys[{k}]");
                check_name(&format!("{at}.name"), &key.name)?;
                if RESERVED_COLUMNS.contains(&key.name.as_str()) {
                    return Err(FeatureError::invalid(
                        format!("{at}.name"),
                        format!("`{}` is a reserved column", key.name),
                    ));
                }
                if !matches!(key.value_type, ValueType::Int64 | ValueType::String) {
                    return Err(FeatureError::invalid(
                        format!("{at}.type"),
                        format!(
                            "a join key is int64 or string, not {}",
                            key.value_type.name()
                        ),
                    ));
                }
            }
        }
        for (i, view) in self.feature_views.iter().enumerate() {
            let at = format!("feature_views[{i}]");
            check_name(&format!("{at}.name"), &view.name)?;
            if view.entities.is_empty() {
                return Err(FeatureError::invalid(
                    format!("{at}.entities"),
                    "a feature view needs at least one entity",
                ));
            }
            check_unique(
                &format!("{at}.entities"),
                "entity",
                view.entities.iter().map(String::as_str),
            )?;
            if view.fields.is_empty() {
                return Err(FeatureError::invalid(
                    format!("{at}.fields"),
                    "a feature view needs at least one field",
                ));
            }
            if view.fields.len() > MAX_FIELDS {
                return Err(FeatureError::invalid(
                    format!("{at}.fields"),
                    format!("at most {MAX_FIELDS} fields"),
                ));
            }
            check_unique(
                &format!("{at}.fields"),
                "field",
                view.fields.iter().map(|f| f.name.as_str()),
            )?;
            for (f, field) in view.fields.iter().enumerate() {
                let name_at = format!("{at}.fields[{f}].name");
                check_name(&name_at, &field.name)?;
                if RESERVED_COLUMNS.contains(&field.name.as_str()) {
                    return Err(FeatureError::invalid(
                        name_at,
                        format!("`{}` is a reserved column", field.name),
                    ));
                }
            }
        }
        for (i, service) in self.feature_services.iter().enumerate() {
            let at = format!("feature_services[{i}]");
            check_name(&format!("{at}.name"), &service.name)?;
            if service.features.is_empty() {
                return Err(FeatureError::invalid(
                    format!("{at}.features"),
                    "a feature service names at least one feature",
                ));
            }
            if service.features.len() > MAX_FIELDS * 4 {
                return Err(FeatureError::invalid(
                    format!("{at}.features"),
                    format!("at most {} features", MAX_FIELDS * 4),
                ));
            }
            for (f, feature) in service.features.iter().enumerate() {
                FeatureRef::parse(&format!("{at}.features[{f}]"), feature)?;
            }
        }
        Ok(())
    }
}

fn tag_changes<T: PartialEq>(changes: &mut Vec<String>, what: &str, a: &T, b: &T) {
    if a != b {
        changes.push(what.to_string());
    }
}

fn conflict(kind: &str, name: &str, current: u64, replaces: u64) -> FeatureError {
    FeatureError::Conflict(if replaces == 0 {
        format!(
            "{kind} `{name}` exists at version {current}; a change must name the version it \
             replaces (plan again to read it)"
        )
    } else {
        format!(
            "{kind} `{name}` is at version {current}, not {replaces}: it changed since it was \
             read (plan again)"
        )
    })
}

/// The action for one object: unchanged, or created/changed when its version is the one the
/// change replaces.
fn action(
    kind: &str,
    name: &str,
    current: Option<u64>,
    replaces: u64,
    same: bool,
) -> Result<PlanAction> {
    match current {
        None if replaces == 0 => Ok(PlanAction::Created),
        None => Err(FeatureError::Conflict(format!(
            "{kind} `{name}` does not exist, but the change replaces its version {replaces}"
        ))),
        Some(_) if same => Ok(PlanAction::Unchanged),
        Some(v) if v == replaces => Ok(PlanAction::Changed),
        Some(v) => Err(conflict(kind, name, v, replaces)),
    }
}

impl Registry {
    /// What applying `set` would do; refused if an object's version is not the one the change
    /// replaces, or if a reference does not resolve. `set` must be [valid](DefinitionSet::validate).
    pub fn plan(&self, set: &DefinitionSet) -> Result<Plan> {
        let mut plan = Vec::new();
        let set_entities: BTreeMap<&str, &Entity> =
            set.entities.iter().map(|e| (e.name.as_str(), e)).collect();
        for entity in &set.entities {
            let current = self.entities.get(&entity.name);
            let same = current.is_some_and(|c| {
                c.join_keys == entity.join_keys
                    && c.description == entity.description
                    && c.tags == entity.tags
            });
            let action = action(
                "entity",
                &entity.name,
                current.map(|c| c.version),
                entity.version,
                same,
            )?;
            let mut changes = Vec::new();
            if let (Some(c), PlanAction::Changed) = (current, action) {
                if c.join_keys != entity.join_keys {
                    if let Some(view) = self
                        .feature_views
                        .values()
                        .find(|v| v.entities.contains(&entity.name))
                    {
                        return Err(FeatureError::invalid(
                            format!("entities[{}].join_keys", index_of(&set.entities, |e| e.name == entity.name)),
                            format!(
                                "entity `{}` keys the rows of feature view `{}`: its join keys cannot change",
                                entity.name, view.name
                            ),
                        ));
                    }
                    changes.push("join_keys".into());
                }
                tag_changes(
                    &mut changes,
                    "description",
                    &c.description,
                    &entity.description,
                );
                tag_changes(&mut changes, "tags", &c.tags, &entity.tags);
            }
            plan.push(item(
                "entity",
                &entity.name,
                action,
                current.map(|c| c.version),
                changes,
            ));
        }
        let set_views: BTreeMap<&str, &FeatureView> = set
            .feature_views
            .iter()
            .map(|v| (v.name.as_str(), v))
            .collect();
        for (i, view) in set.feature_views.iter().enumerate() {
            for (e, entity) in view.entities.iter().enumerate() {
                if !set_entities.contains_key(entity.as_str())
                    && !self.entities.contains_key(entity)
                {
                    return Err(FeatureError::invalid(
                        format!("feature_views[{i}].entities[{e}]"),
                        format!("entity `{entity}` is not defined"),
                    ));
                }
            }
            let keys = self.join_keys_with(&set_entities, &view.entities);
            if let Some(field) = view.fields.iter().find(|f| keys.contains(&f.name)) {
                return Err(FeatureError::invalid(
                    format!("feature_views[{i}].fields"),
                    format!("`{}` is a join key of the view's entities", field.name),
                ));
            }
            let current = self.feature_views.get(&view.name);
            let same = current.is_some_and(|c| {
                !c.schema_differs(view)
                    && c.entities == view.entities
                    && c.owner == view.owner
                    && c.description == view.description
                    && c.tags == view.tags
                    && c.transformation == view.transformation
            });
            let action = action(
                "feature view",
                &view.name,
                current.map(|c| c.version),
                view.version,
                same,
            )?;
            let mut changes = Vec::new();
            if let (Some(c), PlanAction::Changed) = (current, action) {
                if c.entities != view.entities {
                    return Err(FeatureError::invalid(
                        format!("feature_views[{i}].entities"),
                        format!(
                            "feature view `{}` is keyed by {:?}: its entities cannot change (define a new view)",
                            view.name, c.entities
                        ),
                    ));
                }
                tag_changes(&mut changes, "fields", &c.fields, &view.fields);
                tag_changes(&mut changes, "ttl", &c.ttl_seconds, &view.ttl_seconds);
                tag_changes(&mut changes, "owner", &c.owner, &view.owner);
                tag_changes(
                    &mut changes,
                    "description",
                    &c.description,
                    &view.description,
                );
                tag_changes(&mut changes, "tags", &c.tags, &view.tags);
                tag_changes(
                    &mut changes,
                    "transformation",
                    &c.transformation,
                    &view.transformation,
                );
            }
            plan.push(item(
                "feature_view",
                &view.name,
                action,
                current.map(|c| c.version),
                changes,
            ));
        }
        for (i, service) in set.feature_services.iter().enumerate() {
            for (f, text) in service.features.iter().enumerate() {
                let field = format!("feature_services[{i}].features[{f}]");
                let feature = FeatureRef::parse(&field, text)?;
                let fields: Vec<Field> = match set_views.get(feature.view.as_str()) {
                    Some(v) if feature.version.is_none() => v.fields.clone(),
                    _ => match self.feature_views.get(&feature.view) {
                        Some(v) => {
                            v.at(feature.version)
                                .map_err(|e| FeatureError::invalid(&field, e.to_string()))?
                                .fields
                        }
                        None => {
                            return Err(FeatureError::invalid(
                                field,
                                format!("feature view `{}` is not defined", feature.view),
                            ))
                        }
                    },
                };
                if let Some(name) = &feature.feature {
                    if !fields.iter().any(|f| &f.name == name) {
                        return Err(FeatureError::invalid(
                            field,
                            format!("feature view `{}` has no feature `{name}`", feature.view),
                        ));
                    }
                }
            }
            let current = self.feature_services.get(&service.name);
            let same = current.is_some_and(|c| {
                c.features == service.features
                    && c.owner == service.owner
                    && c.description == service.description
                    && c.tags == service.tags
            });
            let action = action(
                "feature service",
                &service.name,
                current.map(|c| c.version),
                service.version,
                same,
            )?;
            let mut changes = Vec::new();
            if let (Some(c), PlanAction::Changed) = (current, action) {
                tag_changes(&mut changes, "features", &c.features, &service.features);
                tag_changes(&mut changes, "owner", &c.owner, &service.owner);
                tag_changes(
                    &mut changes,
                    "description",
                    &c.description,
                    &service.description,
                );
                tag_changes(&mut changes, "tags", &c.tags, &service.tags);
            }
            plan.push(item(
                "feature_service",
                &service.name,
                action,
                current.map(|c| c.version),
                changes,
            ));
        }
        Ok(plan)
    }

    /// Applies `set` (at meta log position `index`, which becomes a new view's id): every object
    /// or, if [`plan`](Self::plan) refuses, none.
    pub fn apply(&mut self, set: &DefinitionSet, index: u64) -> Result<Plan> {
        let plan = self.plan(set)?;
        for entity in &set.entities {
            let version = next_version(&plan, "entity", &entity.name);
            self.entities.insert(
                entity.name.clone(),
                Entity {
                    version,
                    ..entity.clone()
                },
            );
        }
        for view in &set.feature_views {
            let version = next_version(&plan, "feature_view", &view.name);
            let (id, mut history) = match self.feature_views.get(&view.name) {
                Some(c) => (c.id, c.history.clone()),
                None => (index, Vec::new()),
            };
            let schema_changed = self
                .feature_views
                .get(&view.name)
                .is_none_or(|c| c.schema_differs(view));
            let stored = FeatureView {
                version,
                id,
                history: Vec::new(),
                ..view.clone()
            };
            if schema_changed {
                history.push(stored.current());
            }
            self.feature_views
                .insert(view.name.clone(), FeatureView { history, ..stored });
        }
        for service in &set.feature_services {
            let version = next_version(&plan, "feature_service", &service.name);
            self.feature_services.insert(
                service.name.clone(),
                FeatureService {
                    version,
                    ..service.clone()
                },
            );
        }
        Ok(plan)
    }

    pub fn view(&self, name: &str) -> Result<&FeatureView> {
        self.feature_views
            .get(name)
            .ok_or_else(|| FeatureError::NotFound(format!("feature view `{name}`")))
    }

    /// The join keys of a view's entities, in order.
    pub fn view_keys(&self, view: &FeatureView) -> Result<Vec<JoinKey>> {
        let mut keys = Vec::new();
        for name in &view.entities {
            let entity = self
                .entities
                .get(name)
                .ok_or_else(|| FeatureError::NotFound(format!("entity `{name}`")))?;
            keys.extend(entity.join_keys.iter().cloned());
        }
        Ok(keys)
    }

    fn join_keys_with(
        &self,
        set: &BTreeMap<&str, &Entity>,
        entities: &[String],
    ) -> BTreeSet<String> {
        entities
            .iter()
            .filter_map(|e| {
                set.get(e.as_str())
                    .copied()
                    .or_else(|| self.entities.get(e))
            })
            .flat_map(|e| e.join_keys.iter().map(|k| k.name.clone()))
            .collect()
    }

    /// The features `refs` (or, when `service` is given, the service's) name, grouped by view
    /// in the order they are first named. `field` names the request's field in errors.
    pub fn select(
        &self,
        field: &str,
        refs: &[String],
        service: Option<&str>,
    ) -> Result<Vec<ViewSelection>> {
        let (refs, field): (Vec<String>, String) = match service {
            Some(name) => {
                let s = self
                    .feature_services
                    .get(name)
                    .ok_or_else(|| FeatureError::NotFound(format!("feature service `{name}`")))?;
                (s.features.clone(), format!("feature service `{name}`"))
            }
            None => (refs.to_vec(), field.to_string()),
        };
        if refs.is_empty() {
            return Err(FeatureError::invalid(
                field,
                "name at least one feature (`view:feature`) or a feature service",
            ));
        }
        let mut out: Vec<ViewSelection> = Vec::new();
        for (i, text) in refs.iter().enumerate() {
            let at = format!("{field}[{i}]");
            let r = FeatureRef::parse(&at, text)?;
            let view = self.feature_views.get(&r.view).ok_or_else(|| {
                FeatureError::invalid(&at, format!("feature view `{}` is not defined", r.view))
            })?;
            let schema = view
                .at(r.version)
                .map_err(|e| FeatureError::invalid(&at, e.to_string()))?;
            let names: Vec<String> = match &r.feature {
                Some(f) => {
                    if schema.field(f).is_none() {
                        return Err(FeatureError::invalid(
                            &at,
                            format!(
                                "feature view `{}` (version {}) has no feature `{f}`",
                                r.view, schema.version
                            ),
                        ));
                    }
                    vec![f.clone()]
                }
                None => schema.fields.iter().map(|f| f.name.clone()).collect(),
            };
            let label = match r.version {
                Some(v) => format!("{}@v{v}", r.view),
                None => r.view.clone(),
            };
            let pos = match out.iter().position(|s| s.label == label) {
                Some(p) => p,
                None => {
                    out.push(ViewSelection {
                        label,
                        view: view.name.clone(),
                        view_id: view.id,
                        keys: self.view_keys(view)?,
                        schema: schema.clone(),
                        features: Vec::new(),
                    });
                    out.len() - 1
                }
            };
            for name in names {
                let selection = &mut out[pos];
                if !selection.features.iter().any(|f| f.name == name) {
                    let (_, f) = schema.field(&name).expect("checked above");
                    selection.features.push(f.clone());
                }
            }
        }
        Ok(out)
    }
}

/// The features read from one view (at one version).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewSelection {
    /// `view` or `view@v2`, as the features' names say it.
    pub label: String,
    pub view: String,
    pub view_id: u64,
    /// The join keys its rows are keyed by.
    pub keys: Vec<JoinKey>,
    /// The schema read with.
    pub schema: ViewVersion,
    pub features: Vec<Field>,
}

impl ViewSelection {
    /// A feature's name in results: `feature`, or with `full` names `view__feature`.
    pub fn output_name(&self, feature: &str, full: bool) -> String {
        match full {
            true => format!("{}__{feature}", self.label.replace('@', "_")),
            false => feature.to_string(),
        }
    }

    /// A feature's reference as online results name it: `view:feature`.
    pub fn reference(&self, feature: &str) -> String {
        format!("{}:{feature}", self.label)
    }
}

fn index_of<T>(items: &[T], matches: impl Fn(&T) -> bool) -> usize {
    items.iter().position(matches).unwrap_or(0)
}

fn item(
    kind: &str,
    name: &str,
    action: PlanAction,
    current: Option<u64>,
    changes: Vec<String>,
) -> PlanItem {
    let version = match action {
        PlanAction::Created => 1,
        PlanAction::Changed => current.unwrap_or(0) + 1,
        PlanAction::Unchanged => current.unwrap_or(0),
    };
    PlanItem {
        kind: kind.to_string(),
        name: name.to_string(),
        action,
        version,
        changes,
    }
}

fn next_version(plan: &Plan, kind: &str, name: &str) -> u64 {
    plan.iter()
        .find(|p| p.kind == kind && p.name == name)
        .map_or(1, |p| p.version)
}

#[cfg(test)]
mod tests;
