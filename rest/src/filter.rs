//! Qdrant's filter JSON, read into quiver's typed filter (`quiver.v1.Filter`), which the services
//! validate like any other.
//!
//! `must`, `should` and `must_not` nest as in Qdrant; a condition is `{"key", "match"}` (`value`,
//! `any`, `except`), `{"key", "range"}` (numbers), `{"key", "datetime_range"}` (RFC 3339),
//! `{"is_empty": {"key"}}` or `{"is_null": {"key"}}`, or a nested filter. quiver treats a JSON
//! `null` as an absent key, so `is_null` and `is_empty` both match a key that is absent or null
//! (`is_empty` does not match `[]`: an array field is tested element by element). `min_should`,
//! `has_id`, `nested`, `values_count`, geo conditions and full-text `match.text` are refused with
//! the field named.

use quiver_proto::v1 as pb;
use serde_json::{Map, Value};

use crate::reply::ApiError;

type Result<T> = std::result::Result<T, ApiError>;

/// The filter at `field` of a request body (None when absent or null).
pub fn filter(field: &str, value: Option<&Value>) -> Result<Option<pb::Filter>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => Ok(Some(clause(field, v)?)),
    }
}

fn object<'a>(field: &str, value: &'a Value) -> Result<&'a Map<String, Value>> {
    value
        .as_object()
        .ok_or_else(|| ApiError::invalid(field, "expected an object"))
}

/// A filter object: `must` / `should` / `must_not` lists of conditions or filters.
fn clause(field: &str, value: &Value) -> Result<pb::Filter> {
    let map = object(field, value)?;
    let mut out = pb::Filter::default();
    for (key, part) in map {
        let at = format!("{field}.{key}");
        let list = match key.as_str() {
            "must" => &mut out.must,
            "should" => &mut out.should,
            "must_not" => &mut out.must_not,
            "min_should" if part.is_null() => continue,
            other => {
                return Err(ApiError::invalid(
                    &at,
                    format!("`{other}` is not supported (must, should, must_not)"),
                ))
            }
        };
        match part {
            Value::Null => {}
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    list.push(condition(&format!("{at}[{i}]"), item)?);
                }
            }
            single => list.push(condition(&at, single)?),
        }
    }
    Ok(out)
}

/// One entry of a `must`/`should`/`must_not` list: a field condition or a nested filter.
fn condition(field: &str, value: &Value) -> Result<pb::Filter> {
    let map = object(field, value)?;
    let test = |key: &str, test: pb::condition::Test| pb::Filter {
        condition: Some(pb::Condition {
            key: key.to_string(),
            test: Some(test),
        }),
        ..Default::default()
    };
    if map.contains_key("must") || map.contains_key("should") || map.contains_key("must_not") {
        return clause(field, value);
    }
    if let Some(empty) = map.get("is_empty").or_else(|| map.get("is_null")) {
        let which = if map.contains_key("is_empty") {
            "is_empty"
        } else {
            "is_null"
        };
        let key = key_of(&format!("{field}.{which}"), empty)?;
        return Ok(test(&key, pb::condition::Test::Exists(false)));
    }
    for unsupported in ["has_id", "nested", "has_vector"] {
        if map.contains_key(unsupported) {
            return Err(ApiError::invalid(
                &format!("{field}.{unsupported}"),
                "is not supported by quiver",
            ));
        }
    }
    let key = key_of(field, value)?;
    let tests: Vec<&str> = ["match", "range", "datetime_range"]
        .into_iter()
        .filter(|t| map.contains_key(*t))
        .collect();
    if tests.len() > 1 {
        return Err(ApiError::invalid(
            field,
            format!("one test per condition, got {tests:?} (put each in its own condition)"),
        ));
    }
    if let Some(m) = map.get("match") {
        return Ok(test(&key, matching(&format!("{field}.match"), m)?));
    }
    if let Some(r) = map.get("range") {
        return Ok(test(&key, range(&format!("{field}.range"), r, false)?));
    }
    if let Some(r) = map.get("datetime_range") {
        return Ok(test(
            &key,
            range(&format!("{field}.datetime_range"), r, true)?,
        ));
    }
    let known: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "key")
        .collect();
    Err(ApiError::invalid(
        field,
        format!(
            "unsupported condition {known:?} (quiver reads match, range, datetime_range, is_empty, \
             is_null and nested filters)"
        ),
    ))
}

fn key_of(field: &str, value: &Value) -> Result<String> {
    match object(field, value)?.get("key") {
        Some(Value::String(k)) if !k.is_empty() => Ok(k.clone()),
        _ => Err(ApiError::invalid(
            &format!("{field}.key"),
            "expected a field name",
        )),
    }
}

fn scalar(field: &str, value: &Value) -> Result<pb::FilterValue> {
    use pb::filter_value::Kind;
    let kind = match value {
        Value::String(s) => Kind::String(s.clone()),
        Value::Bool(b) => Kind::Boolean(*b),
        Value::Number(n) => Kind::Number(
            n.as_f64()
                .ok_or_else(|| ApiError::invalid(field, "not a number"))?,
        ),
        _ => {
            return Err(ApiError::invalid(
                field,
                "expected a string, number or boolean",
            ))
        }
    };
    Ok(pb::FilterValue { kind: Some(kind) })
}

fn scalars(field: &str, value: &Value) -> Result<pb::FilterValues> {
    let items = value
        .as_array()
        .ok_or_else(|| ApiError::invalid(field, "expected an array"))?;
    let values = items
        .iter()
        .enumerate()
        .map(|(i, v)| scalar(&format!("{field}[{i}]"), v))
        .collect::<Result<_>>()?;
    Ok(pb::FilterValues { values })
}

fn matching(field: &str, value: &Value) -> Result<pb::condition::Test> {
    use pb::condition::Test;
    let map = object(field, value)?;
    if let Some(v) = map.get("value") {
        return Ok(Test::Eq(scalar(&format!("{field}.value"), v)?));
    }
    if let Some(v) = map.get("any") {
        return Ok(Test::In(scalars(&format!("{field}.any"), v)?));
    }
    if let Some(v) = map.get("except") {
        return Ok(Test::NotIn(scalars(&format!("{field}.except"), v)?));
    }
    Err(ApiError::invalid(
        field,
        "expected value, any or except (full-text `text` matching is not supported)",
    ))
}

fn range(field: &str, value: &Value, datetimes: bool) -> Result<pb::condition::Test> {
    use pb::range_bound::Kind;
    let map = object(field, value)?;
    let bound = |name: &str| -> Result<Option<pb::RangeBound>> {
        let at = format!("{field}.{name}");
        let kind = match map.get(name) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Number(n)) if !datetimes => Kind::Number(
                n.as_f64()
                    .ok_or_else(|| ApiError::invalid(&at, "not a number"))?,
            ),
            Some(Value::String(s)) if datetimes => Kind::Datetime(s.clone()),
            Some(_) if datetimes => {
                return Err(ApiError::invalid(
                    &at,
                    "expected an RFC 3339 datetime string",
                ))
            }
            Some(_) => return Err(ApiError::invalid(&at, "expected a number")),
        };
        Ok(Some(pb::RangeBound { kind: Some(kind) }))
    };
    Ok(pb::condition::Test::Range(pb::Range {
        gt: bound("gt")?,
        gte: bound("gte")?,
        lt: bound("lt")?,
        lte: bound("lte")?,
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn qdrant_filters_read_into_typed_ones() {
        let f = filter(
            "filter",
            Some(&json!({
                "must": [
                    {"key": "city", "match": {"value": "London"}},
                    {"key": "price", "range": {"gte": 10, "lt": 20.5}},
                    {"should": [{"key": "tag", "match": {"any": ["a", "b"]}}]}
                ],
                "must_not": [{"is_null": {"key": "deleted_at"}}]
            })),
        )
        .unwrap()
        .unwrap();
        assert_eq!(f.must.len(), 3);
        assert_eq!(f.must[2].should.len(), 1);
        assert_eq!(
            f.must_not[0].condition.as_ref().unwrap().test,
            Some(pb::condition::Test::Exists(false))
        );
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_with_the_field_named() {
        let err = |v: Value| format!("{:?}", filter("filter", Some(&v)).unwrap_err());
        assert!(err(json!({"must": [{"has_id": [1]}]})).contains("filter.must[0].has_id"));
        assert!(err(json!({"must": [{"key": "t", "match": {"text": "x"}}]}))
            .contains("filter.must[0].match"));
        assert!(err(json!({"must": [{"key": "t", "range": {"gt": "x"}}]}))
            .contains("filter.must[0].range.gt"));
        assert!(err(json!({"must": [{"key": "t", "geo_radius": {}}]})).contains("geo_radius"));
        assert!(err(json!({"must": [{"match": {"value": 1}}]})).contains("filter.must[0].key"));
    }
}
