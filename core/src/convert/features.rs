//! The feature store's messages between the wire and the domain: definitions (types read from
//! their names, every error naming its field), values coerced to a feature's type, and the log
//! position a point-in-time read is pinned at.

use std::collections::BTreeMap;

use quiver_features::online::FeatureStatus;
use quiver_features::value::{float32, seconds_to_micros, whole};
use quiver_features::{
    DefinitionSet, Entity, FeatureService, FeatureView, Field, JoinKey, PlanItem, Registry, Value,
    ValueType,
};
use quiver_proto::v1 as pb;

use super::invalid;
use crate::error::Result;

fn value_type(field: &str, name: &str) -> Result<ValueType> {
    ValueType::parse(name).ok_or_else(|| {
        invalid(
            field,
            format!(
                "`{name}` is not a type (int64, float64, float32, string, bool, timestamp, \
                 float32[])"
            ),
        )
    })
}

fn tags(map: &std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn tags_to_proto(map: &BTreeMap<String, String>) -> std::collections::HashMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn fields(at: &str, fields: &[pb::FeatureField]) -> Result<Vec<Field>> {
    fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            Ok(Field {
                name: f.name.clone(),
                value_type: value_type(&format!("{at}[{i}].type"), &f.r#type)?,
            })
        })
        .collect()
}

fn fields_to_proto(fields: &[Field]) -> Vec<pb::FeatureField> {
    fields
        .iter()
        .map(|f| pb::FeatureField {
            name: f.name.clone(),
            r#type: f.value_type.name().into(),
        })
        .collect()
}

/// The definitions an apply carries, with their types read (the set is validated as a whole
/// by [`DefinitionSet::validate`]).
pub fn definition_set(req: &pb::ApplyFeaturesRequest) -> Result<DefinitionSet> {
    let mut set = DefinitionSet::default();
    for (i, e) in req.entities.iter().enumerate() {
        let join_keys = e
            .join_keys
            .iter()
            .enumerate()
            .map(|(k, key)| {
                Ok(JoinKey {
                    name: key.name.clone(),
                    value_type: value_type(
                        &format!("entities[{i}].join_keys[{k}].type"),
                        &key.r#type,
                    )?,
                })
            })
            .collect::<Result<_>>()?;
        set.entities.push(Entity {
            name: e.name.clone(),
            join_keys,
            description: e.description.clone(),
            tags: tags(&e.tags),
            version: e.version,
        });
    }
    for (i, v) in req.feature_views.iter().enumerate() {
        set.feature_views.push(FeatureView {
            name: v.name.clone(),
            entities: v.entities.clone(),
            fields: fields(&format!("feature_views[{i}].fields"), &v.fields)?,
            ttl_seconds: v.ttl_seconds,
            owner: v.owner.clone(),
            description: v.description.clone(),
            tags: tags(&v.tags),
            transformation: v.transformation.clone(),
            version: v.version,
            id: 0,
            history: Vec::new(),
        });
    }
    for s in &req.feature_services {
        set.feature_services.push(FeatureService {
            name: s.name.clone(),
            features: s.features.clone(),
            owner: s.owner.clone(),
            description: s.description.clone(),
            tags: tags(&s.tags),
            version: s.version,
        });
    }
    set.validate()?;
    Ok(set)
}

/// Every definition `registry` holds, as stored.
pub fn definitions_to_proto(registry: &Registry) -> pb::FeatureDefinitions {
    pb::FeatureDefinitions {
        entities: registry
            .entities
            .values()
            .map(|e| pb::Entity {
                name: e.name.clone(),
                join_keys: e
                    .join_keys
                    .iter()
                    .map(|k| pb::JoinKey {
                        name: k.name.clone(),
                        r#type: k.value_type.name().into(),
                    })
                    .collect(),
                description: e.description.clone(),
                tags: tags_to_proto(&e.tags),
                version: e.version,
            })
            .collect(),
        feature_views: registry
            .feature_views
            .values()
            .map(|v| pb::FeatureView {
                name: v.name.clone(),
                entities: v.entities.clone(),
                fields: fields_to_proto(&v.fields),
                ttl_seconds: v.ttl_seconds,
                owner: v.owner.clone(),
                description: v.description.clone(),
                tags: tags_to_proto(&v.tags),
                transformation: v.transformation.clone(),
                version: v.version,
                history: v
                    .history
                    .iter()
                    .map(|h| pb::FeatureViewVersion {
                        version: h.version,
                        fields: fields_to_proto(&h.fields),
                        ttl_seconds: h.ttl_seconds,
                    })
                    .collect(),
            })
            .collect(),
        feature_services: registry
            .feature_services
            .values()
            .map(|s| pb::FeatureService {
                name: s.name.clone(),
                features: s.features.clone(),
                owner: s.owner.clone(),
                description: s.description.clone(),
                tags: tags_to_proto(&s.tags),
                version: s.version,
            })
            .collect(),
    }
}

pub fn plan_to_proto(plan: &[PlanItem]) -> Vec<pb::PlanItem> {
    plan.iter()
        .map(|p| pb::PlanItem {
            kind: p.kind.clone(),
            name: p.name.clone(),
            action: p.action.as_str().into(),
            version: p.version,
            changes: p.changes.clone(),
        })
        .collect()
}

fn kind_name(kind: &pb::feature_value::Kind) -> &'static str {
    use pb::feature_value::Kind;
    match kind {
        Kind::Int64Value(_) => "an int64",
        Kind::Float64Value(_) => "a float64",
        Kind::Float32Value(_) => "a float32",
        Kind::StringValue(_) => "a string",
        Kind::BoolValue(_) => "a bool",
        Kind::TimestampMicros(_) => "a timestamp",
        Kind::Float32ListValue(_) => "a float32 list",
    }
}

/// `value` as a value of type `t`: a string is read as a CSV cell is, numbers widen (and an
/// integral float64 narrows to int64), a number is a timestamp in epoch seconds. The error says
/// what was expected.
pub fn value_from_proto(value: &pb::FeatureValue, t: ValueType) -> Result<Value, String> {
    use pb::feature_value::Kind;
    let Some(kind) = &value.kind else {
        return Ok(Value::Null);
    };
    let wrong = || format!("expected {}, got {}", t.name(), kind_name(kind));
    let seconds = |s: f64| {
        seconds_to_micros(s)
            .map(Value::Timestamp)
            .ok_or_else(|| format!("{s} is not a timestamp"))
    };
    Ok(match (t, kind) {
        (ValueType::String, Kind::StringValue(s)) => Value::String(s.clone()),
        (_, Kind::StringValue(s)) => t.from_text(s)?,
        (ValueType::Int64, Kind::Int64Value(i)) => Value::Int64(*i),
        (ValueType::Int64, Kind::Float64Value(f)) => {
            Value::Int64(whole(*f).ok_or_else(|| format!("expected int64, got {f}"))?)
        }
        (ValueType::Float64, Kind::Int64Value(i)) => Value::Float64(*i as f64),
        (ValueType::Float64, Kind::Float64Value(f)) => Value::Float64(*f),
        (ValueType::Float64, Kind::Float32Value(f)) => Value::Float64(f64::from(*f)),
        (ValueType::Float32, Kind::Int64Value(i)) => Value::Float32(*i as f32),
        (ValueType::Float32, Kind::Float64Value(f)) => Value::Float32(float32(*f)?),
        (ValueType::Float32, Kind::Float32Value(f)) => Value::Float32(*f),
        (ValueType::Bool, Kind::BoolValue(b)) => Value::Bool(*b),
        (ValueType::Timestamp, Kind::TimestampMicros(t)) => Value::Timestamp(*t),
        (ValueType::Timestamp, Kind::Int64Value(s)) => seconds(*s as f64)?,
        (ValueType::Timestamp, Kind::Float64Value(s)) => seconds(*s)?,
        (ValueType::Float32List, Kind::Float32ListValue(l)) => Value::Float32List(l.values.clone()),
        _ => return Err(wrong()),
    })
}

pub fn value_to_proto(value: &Value) -> pb::FeatureValue {
    use pb::feature_value::Kind;
    let kind = match value {
        Value::Null => None,
        Value::Int64(i) => Some(Kind::Int64Value(*i)),
        Value::Float64(f) => Some(Kind::Float64Value(*f)),
        Value::Float32(f) => Some(Kind::Float32Value(*f)),
        Value::String(s) => Some(Kind::StringValue(s.clone())),
        Value::Bool(b) => Some(Kind::BoolValue(*b)),
        Value::Timestamp(t) => Some(Kind::TimestampMicros(*t)),
        Value::Float32List(v) => Some(Kind::Float32ListValue(pb::Float32List {
            values: v.clone(),
        })),
    };
    pb::FeatureValue { kind }
}

pub fn status_to_proto(status: FeatureStatus) -> pb::FeatureStatus {
    match status {
        FeatureStatus::Present => pb::FeatureStatus::Present,
        FeatureStatus::NotFound => pb::FeatureStatus::NotFound,
        FeatureStatus::Null => pb::FeatureStatus::NullValue,
        FeatureStatus::OutsideMaxAge => pb::FeatureStatus::OutsideMaxAge,
    }
}

/// Where a push goes, `(offline, online)`: `offline`, `online` or `both` (empty: both).
pub fn push_target(to: &str) -> Result<(bool, bool)> {
    match to.trim().to_ascii_lowercase().as_str() {
        "" | "both" => Ok((true, true)),
        "offline" => Ok((true, false)),
        "online" => Ok((false, true)),
        other => Err(invalid(
            "to",
            format!("`{other}` is not offline, online or both"),
        )),
    }
}

/// A log position as answers carry it: each feature store shard's, in shard order.
pub fn log_position(indexes: &[u64]) -> String {
    indexes
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The log position `text` names (from an earlier answer) for a feature store of `shards`
/// shards; `field` names it in errors.
pub fn parse_log_position(field: &str, text: &str, shards: usize) -> Result<Vec<u64>> {
    let indexes = text
        .split(',')
        .map(|part| part.trim().parse::<u64>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| {
            invalid(
                field,
                format!("`{text}` is not a log position (as an answer gives it: `120,98`)"),
            )
        })?;
    if indexes.len() != shards {
        return Err(invalid(
            field,
            format!(
                "names {} shards' positions; the feature store has {shards} shards",
                indexes.len()
            ),
        ));
    }
    Ok(indexes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::feature_value::Kind;

    fn v(kind: Kind) -> pb::FeatureValue {
        pb::FeatureValue { kind: Some(kind) }
    }

    #[test]
    fn values_are_coerced_to_the_field_type_or_refused() {
        let ok = [
            (
                v(Kind::StringValue("12".into())),
                ValueType::Int64,
                Value::Int64(12),
            ),
            (
                v(Kind::Float64Value(3.0)),
                ValueType::Int64,
                Value::Int64(3),
            ),
            (
                v(Kind::Int64Value(2)),
                ValueType::Float32,
                Value::Float32(2.0),
            ),
            (
                v(Kind::Int64Value(1_705_312_800)),
                ValueType::Timestamp,
                Value::Timestamp(1_705_312_800_000_000),
            ),
            (
                v(Kind::StringValue("2024-01-15T10:00:00Z".into())),
                ValueType::Timestamp,
                Value::Timestamp(1_705_312_800_000_000),
            ),
            (
                v(Kind::StringValue(" a ".into())),
                ValueType::String,
                Value::String(" a ".into()),
            ),
            (
                pb::FeatureValue { kind: None },
                ValueType::Bool,
                Value::Null,
            ),
        ];
        for (given, t, want) in ok {
            assert_eq!(value_from_proto(&given, t).unwrap(), want, "{given:?}");
            assert_eq!(
                value_from_proto(&value_to_proto(&want), t).unwrap(),
                want,
                "round trip"
            );
        }
        for (given, t) in [
            (v(Kind::BoolValue(true)), ValueType::Int64),
            (v(Kind::Float64Value(2.5)), ValueType::Int64),
            (v(Kind::StringValue("x".into())), ValueType::Float64),
            (v(Kind::Float64Value(1e40)), ValueType::Float32),
            (v(Kind::Int64Value(1)), ValueType::Float32List),
        ] {
            assert!(value_from_proto(&given, t).is_err(), "{given:?} as {t:?}");
        }
    }

    #[test]
    fn definitions_name_a_bad_type_and_round_trip() {
        let mut req = pb::ApplyFeaturesRequest {
            entities: vec![pb::Entity {
                name: "user".into(),
                join_keys: vec![pb::JoinKey {
                    name: "user_id".into(),
                    r#type: "Int64".into(),
                }],
                ..Default::default()
            }],
            feature_views: vec![pb::FeatureView {
                name: "stats".into(),
                entities: vec!["user".into()],
                fields: vec![pb::FeatureField {
                    name: "emb".into(),
                    r#type: "Array(Float32)".into(),
                }],
                ttl_seconds: 60,
                ..Default::default()
            }],
            ..Default::default()
        };
        let set = definition_set(&req).unwrap();
        assert_eq!(
            set.feature_views[0].fields[0].value_type,
            ValueType::Float32List
        );
        let mut registry = Registry::default();
        registry.apply(&set, 3).unwrap();
        let back = definitions_to_proto(&registry);
        assert_eq!(back.feature_views[0].fields[0].r#type, "float32[]");
        assert_eq!(back.feature_views[0].version, 1);
        assert_eq!(back.entities[0].join_keys[0].r#type, "int64");
        req.feature_views[0].fields[0].r#type = "decimal".into();
        let e = definition_set(&req).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("feature_views[0].fields[0].type:"),
            "{e}"
        );
    }

    #[test]
    fn log_positions_round_trip_and_must_match_the_shards() {
        assert_eq!(log_position(&[120, 98]), "120,98");
        assert_eq!(
            parse_log_position("as_of_log", "120, 98", 2).unwrap(),
            [120, 98]
        );
        assert!(parse_log_position("as_of_log", "120", 2).is_err());
        assert!(parse_log_position("as_of_log", "12x,3", 2).is_err());
        assert_eq!(push_target("").unwrap(), (true, true));
        assert_eq!(push_target("Online").unwrap(), (false, true));
        assert!(push_target("disk").is_err());
    }
}
