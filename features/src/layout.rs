//! What the columns of pushed rows and of entity rows mean, checked once per request.
//!
//! A push names its columns: the view's join keys, `event_timestamp`, optionally
//! `created_timestamp`, and any of the view's features (a feature not named is null). An entity
//! row set (for a point-in-time join) names the join keys of every view it reads and
//! `event_timestamp`; any other column is carried through to the output as given.

use crate::definition::{JoinKey, ViewVersion, RESERVED_COLUMNS};
use crate::key::EntityKey;
use crate::row::FeatureRow;
use crate::value::{Micros, Value, ValueType};
use crate::{FeatureError, Result};

/// The column of entity rows and pushed rows that holds the event's time.
pub const EVENT_TIMESTAMP: &str = RESERVED_COLUMNS[0];
/// The column of pushed rows that holds when a row became known.
pub const CREATED_TIMESTAMP: &str = RESERVED_COLUMNS[1];

/// What a pushed column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The join key at this place of the view's keys.
    Key(usize),
    EventTs,
    CreatedTs,
    /// The field at this place of the view version's fields.
    Feature(usize),
}

/// The columns of a push, as one view version reads them.
#[derive(Debug, Clone)]
pub struct PushLayout {
    keys: Vec<JoinKey>,
    roles: Vec<(Role, ValueType)>,
    width: usize,
}

fn check_columns(field: &str, columns: &[String]) -> Result<()> {
    for (i, name) in columns.iter().enumerate() {
        if columns[..i].contains(name) {
            return Err(FeatureError::invalid(
                format!("{field}[{i}]"),
                format!("column `{name}` is named twice"),
            ));
        }
    }
    Ok(())
}

impl PushLayout {
    /// The layout of `columns` (named `field` in errors) for a view keyed by `keys` at
    /// `schema`.
    pub fn new(
        field: &str,
        keys: &[JoinKey],
        schema: &ViewVersion,
        columns: &[String],
    ) -> Result<Self> {
        check_columns(field, columns)?;
        let mut roles = Vec::with_capacity(columns.len());
        for (i, name) in columns.iter().enumerate() {
            let role = if let Some(k) = keys.iter().position(|k| &k.name == name) {
                (Role::Key(k), keys[k].value_type)
            } else if name == EVENT_TIMESTAMP {
                (Role::EventTs, ValueType::Timestamp)
            } else if name == CREATED_TIMESTAMP {
                (Role::CreatedTs, ValueType::Timestamp)
            } else if let Some((f, feature)) = schema.field(name) {
                (Role::Feature(f), feature.value_type)
            } else {
                return Err(FeatureError::invalid(
                    format!("{field}[{i}]"),
                    format!(
                        "`{name}` is not a join key, a feature of the view (version {}), \
                         {EVENT_TIMESTAMP} or {CREATED_TIMESTAMP}",
                        schema.version
                    ),
                ));
            };
            roles.push(role);
        }
        for (k, key) in keys.iter().enumerate() {
            if !roles.iter().any(|(r, _)| *r == Role::Key(k)) {
                return Err(FeatureError::invalid(
                    field,
                    format!("join key column `{}` is missing", key.name),
                ));
            }
        }
        if !roles.iter().any(|(r, _)| *r == Role::EventTs) {
            return Err(FeatureError::invalid(
                field,
                format!("column `{EVENT_TIMESTAMP}` is missing"),
            ));
        }
        Ok(Self {
            keys: keys.to_vec(),
            roles,
            width: schema.fields.len(),
        })
    }

    /// The type column `i`'s cells are read as.
    pub fn column_type(&self, i: usize) -> ValueType {
        self.roles[i].1
    }

    /// The row of `cells` (typed as [`column_type`](Self::column_type) says, in column order);
    /// `created` is its created time unless a column gives one. `at` names the row in errors.
    pub fn row(&self, cells: Vec<Value>, created: Micros, at: &str) -> Result<FeatureRow> {
        if cells.len() != self.roles.len() {
            return Err(FeatureError::invalid(
                at,
                format!("{} values for {} columns", cells.len(), self.roles.len()),
            ));
        }
        let mut key_values = vec![Value::Null; self.keys.len()];
        let mut values = vec![Value::Null; self.width];
        let (mut event_ts, mut created_ts) = (None, None);
        for ((role, _), cell) in self.roles.iter().zip(cells) {
            match (role, cell) {
                (Role::Key(k), v) => key_values[*k] = v,
                (Role::EventTs, Value::Timestamp(t)) => event_ts = Some(t),
                (Role::CreatedTs, Value::Timestamp(t)) => created_ts = Some(t),
                (Role::EventTs | Role::CreatedTs, _) => {}
                (Role::Feature(f), v) => values[*f] = v,
            }
        }
        let key =
            EntityKey::new(&self.keys, &key_values).map_err(|m| FeatureError::invalid(at, m))?;
        let event_ts = event_ts.ok_or_else(|| {
            FeatureError::invalid(at, format!("column `{EVENT_TIMESTAMP}` is empty"))
        })?;
        Ok(FeatureRow {
            key,
            event_ts,
            created_ts: created_ts.unwrap_or(created),
            values,
        })
    }
}

/// What an entity row's column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityColumn {
    /// A join key of a view read, of this type.
    Key(ValueType),
    EventTs,
    /// Carried to the output as given.
    Other,
}

/// The columns of entity rows, for views keyed by `keys` (each view's join keys).
#[derive(Debug, Clone)]
pub struct EntityLayout {
    columns: Vec<String>,
    kinds: Vec<EntityColumn>,
    event_ts: usize,
}

impl EntityLayout {
    /// The layout of `columns` (named `field` in errors) for views keyed by `keys`.
    pub fn new(field: &str, keys: &[&[JoinKey]], columns: &[String]) -> Result<Self> {
        check_columns(field, columns)?;
        let mut kinds = Vec::with_capacity(columns.len());
        for name in columns {
            let key = keys.iter().flat_map(|k| k.iter()).find(|k| &k.name == name);
            kinds.push(match key {
                Some(k) => EntityColumn::Key(k.value_type),
                None if name == EVENT_TIMESTAMP => EntityColumn::EventTs,
                None => EntityColumn::Other,
            });
        }
        for key in keys.iter().flat_map(|k| k.iter()) {
            if !columns.contains(&key.name) {
                return Err(FeatureError::invalid(
                    field,
                    format!("join key column `{}` is missing", key.name),
                ));
            }
            let other = keys
                .iter()
                .flat_map(|k| k.iter())
                .find(|o| o.name == key.name && o.value_type != key.value_type);
            if let Some(other) = other {
                return Err(FeatureError::invalid(
                    field,
                    format!(
                        "join key `{}` is {} in one view and {} in another",
                        key.name,
                        key.value_type.name(),
                        other.value_type.name()
                    ),
                ));
            }
        }
        let event_ts = columns
            .iter()
            .position(|c| c == EVENT_TIMESTAMP)
            .ok_or_else(|| {
                FeatureError::invalid(field, format!("column `{EVENT_TIMESTAMP}` is missing"))
            })?;
        Ok(Self {
            columns: columns.to_vec(),
            kinds,
            event_ts,
        })
    }

    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    pub fn kind(&self, i: usize) -> EntityColumn {
        self.kinds[i]
    }

    /// The entity key for a view keyed by `keys` in a row of typed `cells` (a column the
    /// layout carries may be anything); `at` names the row in errors.
    pub fn key(&self, keys: &[JoinKey], cells: &[Value], at: &str) -> Result<EntityKey> {
        let values: Vec<Value> = keys
            .iter()
            .map(|k| {
                self.columns
                    .iter()
                    .position(|c| *c == k.name)
                    .and_then(|i| cells.get(i).cloned())
                    .unwrap_or(Value::Null)
            })
            .collect();
        EntityKey::new(keys, &values).map_err(|m| FeatureError::invalid(at, m))
    }

    /// The row's time; `at` names the row in errors.
    pub fn event_ts(&self, cells: &[Value], at: &str) -> Result<Micros> {
        match cells.get(self.event_ts) {
            Some(Value::Timestamp(t)) => Ok(*t),
            _ => Err(FeatureError::invalid(
                at,
                format!("column `{EVENT_TIMESTAMP}` is empty"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::Field;

    fn keys() -> Vec<JoinKey> {
        vec![JoinKey {
            name: "user_id".into(),
            value_type: ValueType::Int64,
        }]
    }

    fn schema() -> ViewVersion {
        ViewVersion {
            version: 2,
            fields: vec![
                Field {
                    name: "clicks".into(),
                    value_type: ValueType::Int64,
                },
                Field {
                    name: "ctr".into(),
                    value_type: ValueType::Float32,
                },
            ],
            ttl_seconds: 0,
        }
    }

    fn cols(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_push_layout_places_keys_times_and_features() {
        let layout = PushLayout::new(
            "columns",
            &keys(),
            &schema(),
            &cols(&["ctr", "user_id", "event_timestamp"]),
        )
        .unwrap();
        assert_eq!(layout.column_type(0), ValueType::Float32);
        assert_eq!(layout.column_type(2), ValueType::Timestamp);
        let row = layout
            .row(
                vec![Value::Float32(0.5), Value::Int64(7), Value::Timestamp(10)],
                99,
                "line 2",
            )
            .unwrap();
        assert_eq!(row.values, vec![Value::Null, Value::Float32(0.5)]);
        assert_eq!((row.event_ts, row.created_ts), (10, 99));
        assert_eq!(row.key.values(), vec![Value::Int64(7)]);
        let missing_key = layout.row(
            vec![Value::Float32(0.5), Value::Null, Value::Timestamp(10)],
            99,
            "line 3",
        );
        assert!(
            matches!(missing_key, Err(FeatureError::Invalid { ref field, .. }) if field == "line 3")
        );
        assert!(layout
            .row(vec![Value::Null, Value::Int64(7), Value::Null], 0, "line 4")
            .is_err());
    }

    #[test]
    fn push_columns_must_be_known_named_once_and_complete() {
        for (columns, field) in [
            (cols(&["user_id", "event_timestamp", "views"]), "columns[2]"),
            (
                cols(&["user_id", "user_id", "event_timestamp"]),
                "columns[1]",
            ),
            (cols(&["event_timestamp", "clicks"]), "columns"),
            (cols(&["user_id", "clicks"]), "columns"),
        ] {
            let e = PushLayout::new("columns", &keys(), &schema(), &columns).unwrap_err();
            assert!(
                matches!(&e, FeatureError::Invalid { field: f, .. } if f == field),
                "{columns:?}: {e}"
            );
        }
    }

    #[test]
    fn an_entity_layout_keys_each_view_and_carries_other_columns() {
        let user = keys();
        let item = vec![JoinKey {
            name: "item".into(),
            value_type: ValueType::String,
        }];
        let layout = EntityLayout::new(
            "columns",
            &[&user, &item],
            &cols(&["label", "item", "event_timestamp", "user_id"]),
        )
        .unwrap();
        assert_eq!(layout.kind(0), EntityColumn::Other);
        assert_eq!(layout.kind(1), EntityColumn::Key(ValueType::String));
        let cells = vec![
            Value::String("yes".into()),
            Value::String("i9".into()),
            Value::Timestamp(5),
            Value::Int64(3),
        ];
        assert_eq!(
            layout.key(&user, &cells, "row").unwrap().values(),
            vec![Value::Int64(3)]
        );
        assert_eq!(layout.event_ts(&cells, "row").unwrap(), 5);
        assert!(EntityLayout::new("columns", &[&user], &cols(&["event_timestamp"])).is_err());
        assert!(EntityLayout::new("columns", &[&user], &cols(&["user_id"])).is_err());
    }
}
