//! The payload filter language: a [`Filter`] tree, its JSON form (Mongo/Pinecone style) and its
//! evaluation against a payload (a JSON object).
//!
//! # JSON form
//!
//! - The top level is an object. An object with several keys is an implicit `$and` of its
//!   entries; the empty object `{}` is `And([])`, which matches everything.
//! - `{"$and": [f, ...]}` and `{"$or": [f, ...]}` take non-empty arrays of filter objects;
//!   `{"$not": f}` takes one filter object.
//! - `{"field": {"$op": v, ...}}` applies operators to a field addressed by a dotted path
//!   (`"meta.author.name"`). Several operators in one object are ANDed, except that
//!   `$gt`/`$gte`/`$lt`/`$lte` merge into one [`Range`]. `{"field": v}` with a scalar `v` is
//!   shorthand for `{"field": {"$eq": v}}`.
//! - Operators: `$eq` and `$ne` take a scalar (string, number or bool); `$in` and `$nin` a
//!   non-empty array of scalars; `$gt`, `$gte`, `$lt` and `$lte` a number or a datetime string
//!   that [`parse_datetime`] accepts (which becomes [`Bound::DateTime`]); `$exists` a bool.
//! - `null`, nested objects or arrays where a scalar is expected, unknown operators (any key
//!   starting with `$` other than the logical operators), empty keys, keys with an empty path
//!   segment (`"a..b"`) and filters nesting deeper than [`MAX_FILTER_DEPTH`] are errors. Every
//!   [`FilterError`] carries the JSON location of the problem, e.g. `$and[1].price.$gt`.
//!
//! # Evaluation
//!
//! - [`lookup`] follows the dots of a key through nested objects (it does not descend into
//!   arrays). A missing field or a JSON `null` counts as absent.
//! - `$eq` matches when the field value equals the scalar: strings by exact equality, numbers
//!   numerically (so `3 == 3.0`), bools by value; values of different types never match. When the
//!   field value is an array, `$eq` matches when any element equals.
//! - `$ne` is NOT `$eq`, so absent fields match `$ne` (as in MongoDB). `$in` matches when any of
//!   its values `$eq`-matches; `$nin` is NOT `$in`.
//! - A range matches when the field value (or, for an array, any one element) satisfies every
//!   present bound. [`Bound::Number`] bounds need a number value. [`Bound::DateTime`] bounds need
//!   a string that [`parse_datetime`] accepts, or a number, which is taken as seconds since the
//!   Unix epoch (fractions allowed, rounded to the microsecond); both are compared in
//!   microseconds. Any other value does not match.
//! - `$exists: true` matches a present, non-null field; `$exists: false` the opposite.
//! - NaN never compares equal or in range, so `$eq`, `$in` and range conditions holding a NaN
//!   match nothing, and their negations `$ne` and `$nin` match everything.
//!
//! # Invariants
//!
//! - A filter produced by [`Filter::from_json`] always passes [`Filter::validate`]: its depth is
//!   at most [`MAX_FILTER_DEPTH`], its keys are non-empty dotted paths without empty segments,
//!   `$or`, `$in` and `$nin` are non-empty and every range has a bound.
//! - Nothing here recurses more than [`MAX_FILTER_DEPTH`] levels: the parser checks the depth
//!   before descending, [`Filter::validate`] stops at the limit, and [`Filter::matches`]
//!   evaluates a filter nesting deeper than the limit (which `validate` rejects) to no match.

use chrono::{DateTime, NaiveDate};
use serde_json::{Map, Value};

/// The deepest a filter tree may nest: a lone condition has depth 1, and each `$and`, `$or` or
/// `$not` adds one level above its deepest child.
pub const MAX_FILTER_DEPTH: usize = 32;

/// A payload filter.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Filter {
    /// Every child matches; `And([])` matches everything.
    And(Vec<Filter>),
    /// At least one child matches.
    Or(Vec<Filter>),
    /// The child does not match.
    Not(Box<Filter>),
    /// A condition on one payload field.
    Condition(Condition),
}

/// A condition on one payload field.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Condition {
    /// Dotted path of the field, e.g. `"meta.author.name"`.
    pub key: String,
    /// What the field value must satisfy.
    pub op: Op,
}

/// An operator of a [`Condition`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    /// The value (or any element of an array value) equals the scalar.
    Eq(Scalar),
    /// NOT [`Op::Eq`]; absent fields match.
    Ne(Scalar),
    /// The value `$eq`-matches any of the scalars.
    In(Vec<Scalar>),
    /// NOT [`Op::In`]; absent fields match.
    Nin(Vec<Scalar>),
    /// The value (or any element of an array value) satisfies every present bound.
    Range(Range),
    /// `true`: the field is present and not null; `false`: the opposite.
    Exists(bool),
}

/// A scalar operand of `$eq`, `$ne`, `$in` and `$nin`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Scalar {
    /// A string, compared by exact equality.
    String(String),
    /// A number, compared numerically.
    Number(f64),
    /// A bool.
    Bool(bool),
}

/// The bounds of a range condition; every present bound must hold.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Range {
    /// Value strictly greater than this.
    pub gt: Option<Bound>,
    /// Value greater than or equal to this.
    pub gte: Option<Bound>,
    /// Value strictly less than this.
    pub lt: Option<Bound>,
    /// Value less than or equal to this.
    pub lte: Option<Bound>,
}

/// One bound of a [`Range`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Bound {
    /// Compared with number values.
    Number(f64),
    /// Microseconds since the Unix epoch (UTC), compared with datetime strings and with numbers
    /// taken as seconds since the epoch.
    DateTime(i64),
}

/// An invalid filter: `path` is the JSON location of the problem (`""` for the whole filter).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("filter at `{path}`: {message}")]
pub struct FilterError {
    /// Location in the JSON form, e.g. `$and[1].price.$gt`.
    pub path: String,
    /// What is wrong, lowercase without a trailing period.
    pub message: String,
}

impl FilterError {
    fn new(path: &str, message: impl Into<String>) -> Self {
        FilterError {
            path: path.to_string(),
            message: message.into(),
        }
    }

    fn too_deep(path: &str) -> Self {
        FilterError::new(
            path,
            format!("filter nests deeper than {MAX_FILTER_DEPTH} levels"),
        )
    }
}

impl Filter {
    /// Parses the JSON filter form (see the module docs).
    pub fn from_json(value: &Value) -> Result<Filter, FilterError> {
        let filter = match value {
            Value::Object(map) => parse_object(map, "", 1)?,
            other => {
                return Err(FilterError::new(
                    "",
                    format!("expected a filter object, got {}", describe(other)),
                ))
            }
        };
        // The parser enforces every rule itself; this is a cheap, bounded safety net.
        filter.validate()?;
        Ok(filter)
    }

    /// Parses a JSON string; a JSON syntax error is reported at path `""` with its line and
    /// column.
    pub fn from_json_str(text: &str) -> Result<Filter, FilterError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| FilterError::new("", format!("invalid JSON: {e}")))?;
        Filter::from_json(&value)
    }

    /// Whether a payload (a JSON object) matches. A filter nesting deeper than
    /// [`MAX_FILTER_DEPTH`] (which [`Filter::validate`] rejects) matches nothing.
    pub fn matches(&self, payload: &Map<String, Value>) -> bool {
        self.eval(payload, 1).unwrap_or(false)
    }

    /// `None` when the filter nests deeper than the limit below `depth`.
    fn eval(&self, payload: &Map<String, Value>, depth: usize) -> Option<bool> {
        if depth > MAX_FILTER_DEPTH {
            return None;
        }
        match self {
            Filter::And(children) => {
                for child in children {
                    if !child.eval(payload, depth + 1)? {
                        return Some(false);
                    }
                }
                Some(true)
            }
            Filter::Or(children) => {
                for child in children {
                    if child.eval(payload, depth + 1)? {
                        return Some(true);
                    }
                }
                Some(false)
            }
            Filter::Not(child) => Some(!child.eval(payload, depth + 1)?),
            Filter::Condition(condition) => Some(condition.matches(payload)),
        }
    }

    /// Checks what [`Filter::from_json`] enforces, for filters built from another
    /// representation: depth at most [`MAX_FILTER_DEPTH`], keys that are non-empty dotted paths
    /// without empty segments and not starting with `$`, non-empty `$or`, `$in` and `$nin`, and
    /// ranges with at least one bound. Paths in errors use the JSON form (`$and[0].$not.price`).
    pub fn validate(&self) -> Result<(), FilterError> {
        self.validate_at("", 1)
    }

    fn validate_at(&self, path: &str, depth: usize) -> Result<(), FilterError> {
        if depth > MAX_FILTER_DEPTH {
            return Err(FilterError::too_deep(path));
        }
        match self {
            Filter::And(children) => {
                for (i, child) in children.iter().enumerate() {
                    child.validate_at(&index_path(&join(path, "$and"), i), depth + 1)?;
                }
                Ok(())
            }
            Filter::Or(children) => {
                let or_path = join(path, "$or");
                if children.is_empty() {
                    return Err(FilterError::new(
                        &or_path,
                        "expected a non-empty array of filters, got an empty array",
                    ));
                }
                for (i, child) in children.iter().enumerate() {
                    child.validate_at(&index_path(&or_path, i), depth + 1)?;
                }
                Ok(())
            }
            Filter::Not(child) => child.validate_at(&join(path, "$not"), depth + 1),
            Filter::Condition(condition) => {
                if condition.key.starts_with('$') {
                    return Err(FilterError::new(
                        &join(path, &condition.key),
                        format!("field key `{}` starts with `$`", condition.key),
                    ));
                }
                check_key(path, &condition.key)?;
                let key_path = join(path, &condition.key);
                match &condition.op {
                    Op::In(values) | Op::Nin(values) if values.is_empty() => {
                        let name = if matches!(condition.op, Op::In(_)) {
                            "$in"
                        } else {
                            "$nin"
                        };
                        Err(FilterError::new(
                            &join(&key_path, name),
                            "expected a non-empty array of values, got an empty array",
                        ))
                    }
                    Op::Range(range) if range.is_unbounded() => {
                        Err(FilterError::new(&key_path, "range has no bounds"))
                    }
                    _ => Ok(()),
                }
            }
        }
    }
}

impl Condition {
    /// Whether a payload satisfies this condition (see the module docs for the semantics).
    pub fn matches(&self, payload: &Map<String, Value>) -> bool {
        let value = lookup(payload, &self.key);
        match &self.op {
            Op::Eq(scalar) => value.is_some_and(|v| value_eq(v, scalar)),
            Op::Ne(scalar) => !value.is_some_and(|v| value_eq(v, scalar)),
            Op::In(scalars) => value.is_some_and(|v| scalars.iter().any(|s| value_eq(v, s))),
            Op::Nin(scalars) => !value.is_some_and(|v| scalars.iter().any(|s| value_eq(v, s))),
            Op::Range(range) => value.is_some_and(|v| match v {
                Value::Array(items) => items.iter().any(|item| range.contains(item)),
                other => range.contains(other),
            }),
            Op::Exists(wanted) => value.is_some() == *wanted,
        }
    }
}

impl Range {
    /// Whether no bound is present.
    pub fn is_unbounded(&self) -> bool {
        self.gt.is_none() && self.gte.is_none() && self.lt.is_none() && self.lte.is_none()
    }

    /// Whether a single (non-array) value satisfies every present bound.
    pub fn contains(&self, value: &Value) -> bool {
        type Accept = fn(std::cmp::Ordering) -> bool;
        let checks: [(Option<Bound>, Accept); 4] = [
            (self.gt, |o| o.is_gt()),
            (self.gte, |o| o.is_ge()),
            (self.lt, |o| o.is_lt()),
            (self.lte, |o| o.is_le()),
        ];
        checks.iter().all(|(bound, accept)| match bound {
            None => true,
            Some(bound) => compare_to_bound(value, bound).is_some_and(accept),
        })
    }
}

/// How `value` compares to `bound`, or `None` when they cannot be compared (type mismatch,
/// unparseable datetime, NaN).
fn compare_to_bound(value: &Value, bound: &Bound) -> Option<std::cmp::Ordering> {
    match bound {
        Bound::Number(b) => value.as_f64()?.partial_cmp(b),
        Bound::DateTime(b) => Some(value_micros(value)?.cmp(b)),
    }
}

/// The microseconds since the epoch that a value stands for against a [`Bound::DateTime`]: a
/// string [`parse_datetime`] accepts, or a number of seconds since the epoch.
pub(crate) fn value_micros(value: &Value) -> Option<i64> {
    match value {
        Value::String(s) => parse_datetime(s),
        Value::Number(n) => seconds_to_micros(n.as_f64()?),
        _ => None,
    }
}

/// Seconds since the epoch to whole microseconds (rounded), `None` when not finite or out of
/// the `i64` range.
fn seconds_to_micros(seconds: f64) -> Option<i64> {
    let micros = (seconds * 1_000_000.0).round();
    // i64::MIN is exactly -2^63; 2^63 itself is out of range.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if micros.is_finite() && (-LIMIT..LIMIT).contains(&micros) {
        Some(micros as i64)
    } else {
        None
    }
}

/// `$eq` on a field value: an array matches when any element does.
fn value_eq(value: &Value, scalar: &Scalar) -> bool {
    match value {
        Value::Array(items) => items.iter().any(|item| scalar_eq(item, scalar)),
        other => scalar_eq(other, scalar),
    }
}

fn scalar_eq(value: &Value, scalar: &Scalar) -> bool {
    match (value, scalar) {
        (Value::String(v), Scalar::String(s)) => v == s,
        (Value::Number(v), Scalar::Number(s)) => v.as_f64().is_some_and(|v| v == *s),
        (Value::Bool(v), Scalar::Bool(s)) => v == s,
        _ => false,
    }
}

/// Parses an RFC 3339 datetime (`"2024-01-15T10:00:00Z"`, with a UTC offset such as `+02:00`
/// and optional fractional seconds) or a plain date `"2024-01-15"` (midnight UTC) into
/// microseconds since the Unix epoch. Sub-microsecond digits are truncated.
pub fn parse_datetime(s: &str) -> Option<i64> {
    let bytes = s.as_bytes();
    if bytes.len() == 10 {
        let shape_ok = bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        });
        if !shape_ok {
            return None;
        }
        let year = s.get(0..4)?.parse().ok()?;
        let month = s.get(5..7)?.parse().ok()?;
        let day = s.get(8..10)?.parse().ok()?;
        let date = NaiveDate::from_ymd_opt(year, month, day)?;
        return Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros());
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|dt| dt.timestamp_micros())
}

/// Resolves a dotted path (`"a.b.c"`) through nested objects of a payload. Returns `None` when a
/// segment is missing, when an intermediate value is not an object, or when the value is JSON
/// `null` (which counts as absent).
pub fn lookup<'a>(payload: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    let mut segments = key.split('.');
    let mut current = payload.get(segments.next()?)?;
    for segment in segments {
        current = current.as_object()?.get(segment)?;
    }
    if current.is_null() {
        None
    } else {
        Some(current)
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// Appends `.segment` to a path (or starts it).
fn join(path: &str, segment: &str) -> String {
    if path.is_empty() {
        segment.to_string()
    } else {
        format!("{path}.{segment}")
    }
}

/// Appends `[i]` to a path.
fn index_path(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// A short description of a JSON value for error messages: scalars as JSON text (long strings
/// cut), containers by kind.
fn describe(value: &Value) -> String {
    const MAX_CHARS: usize = 64;
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            if s.chars().count() > MAX_CHARS {
                let cut: String = s.chars().take(MAX_CHARS).collect();
                format!("{}…", Value::String(cut))
            } else {
                Value::String(s.clone()).to_string()
            }
        }
        Value::Array(items) if items.is_empty() => "an empty array".to_string(),
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}

/// Checks a field key: non-empty, no empty path segment. `parent` is the path of the object
/// holding the key.
fn check_key(parent: &str, key: &str) -> Result<(), FilterError> {
    if key.is_empty() {
        return Err(FilterError::new(parent, "empty field key"));
    }
    if key.split('.').any(str::is_empty) {
        return Err(FilterError::new(
            &join(parent, key),
            format!("field key `{key}` has an empty path segment"),
        ));
    }
    Ok(())
}

/// Parses a filter object whose node sits at `level` of the tree (the root is level 1).
fn parse_object(map: &Map<String, Value>, path: &str, level: usize) -> Result<Filter, FilterError> {
    if level > MAX_FILTER_DEPTH {
        return Err(FilterError::too_deep(path));
    }
    match map.len() {
        0 => Ok(Filter::And(Vec::new())),
        1 => {
            let (key, value) = map
                .iter()
                .next()
                .ok_or_else(|| FilterError::new(path, "expected a filter object with one entry"))?;
            parse_entry(key, value, path, level)
        }
        _ => map
            .iter()
            .map(|(key, value)| parse_entry(key, value, path, level + 1))
            .collect::<Result<Vec<_>, _>>()
            .map(Filter::And),
    }
}

/// Parses one entry of a filter object (`path` is the object's path) into a node at `level`.
fn parse_entry(key: &str, value: &Value, path: &str, level: usize) -> Result<Filter, FilterError> {
    let entry_path = join(path, key);
    if level > MAX_FILTER_DEPTH {
        return Err(FilterError::too_deep(&entry_path));
    }
    match key {
        "$and" | "$or" => {
            let items = match value {
                Value::Array(items) if !items.is_empty() => items,
                other => {
                    return Err(FilterError::new(
                        &entry_path,
                        format!(
                            "expected a non-empty array of filters, got {}",
                            describe(other)
                        ),
                    ))
                }
            };
            let children = items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let item_path = index_path(&entry_path, i);
                    match item {
                        Value::Object(map) => parse_object(map, &item_path, level + 1),
                        other => Err(FilterError::new(
                            &item_path,
                            format!("expected a filter object, got {}", describe(other)),
                        )),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(if key == "$and" {
                Filter::And(children)
            } else {
                Filter::Or(children)
            })
        }
        "$not" => match value {
            Value::Object(map) => Ok(Filter::Not(Box::new(parse_object(
                map,
                &entry_path,
                level + 1,
            )?))),
            other => Err(FilterError::new(
                &entry_path,
                format!("expected a filter object, got {}", describe(other)),
            )),
        },
        _ if key.starts_with('$') => Err(FilterError::new(
            &entry_path,
            format!("unknown operator `{key}`"),
        )),
        _ => {
            check_key(path, key)?;
            match value {
                Value::Object(ops) => parse_field_ops(key, ops, &entry_path, level),
                other => Ok(Filter::Condition(Condition {
                    key: key.to_string(),
                    op: Op::Eq(parse_scalar(other, &entry_path)?),
                })),
            }
        }
    }
}

/// Parses `{"$op": v, ...}` for field `key` (at `path`) into a node at `level`.
fn parse_field_ops(
    key: &str,
    ops: &Map<String, Value>,
    path: &str,
    level: usize,
) -> Result<Filter, FilterError> {
    if ops.is_empty() {
        return Err(FilterError::new(
            path,
            "expected a scalar or an object of operators, got an empty object",
        ));
    }
    let mut conditions: Vec<Op> = Vec::new();
    // Index in `conditions` of the merged range, once a range operator has been seen.
    let mut range_at: Option<usize> = None;
    for (name, value) in ops {
        let op_path = join(path, name);
        let op = match name.as_str() {
            "$eq" => Op::Eq(parse_scalar(value, &op_path)?),
            "$ne" => Op::Ne(parse_scalar(value, &op_path)?),
            "$in" => Op::In(parse_scalars(value, &op_path)?),
            "$nin" => Op::Nin(parse_scalars(value, &op_path)?),
            "$exists" => match value {
                Value::Bool(b) => Op::Exists(*b),
                other => {
                    return Err(FilterError::new(
                        &op_path,
                        format!("expected a bool, got {}", describe(other)),
                    ))
                }
            },
            "$gt" | "$gte" | "$lt" | "$lte" => {
                let bound = parse_bound(value, &op_path)?;
                let index = match range_at {
                    Some(index) => index,
                    None => {
                        conditions.push(Op::Range(Range::default()));
                        range_at = Some(conditions.len() - 1);
                        conditions.len() - 1
                    }
                };
                if let Some(Op::Range(range)) = conditions.get_mut(index) {
                    let slot = match name.as_str() {
                        "$gt" => &mut range.gt,
                        "$gte" => &mut range.gte,
                        "$lt" => &mut range.lt,
                        _ => &mut range.lte,
                    };
                    *slot = Some(bound);
                }
                continue;
            }
            "$and" | "$or" | "$not" => {
                return Err(FilterError::new(
                    &op_path,
                    format!("logical operator `{name}` cannot be used inside a field condition"),
                ))
            }
            _ if name.starts_with('$') => {
                return Err(FilterError::new(
                    &op_path,
                    format!("unknown operator `{name}`"),
                ))
            }
            _ => {
                return Err(FilterError::new(
                    &op_path,
                    format!(
                        "expected an operator, got `{name}` (address nested fields with a dotted key such as `{key}.{name}`)"
                    ),
                ))
            }
        };
        conditions.push(op);
    }
    let mut conditions: Vec<Filter> = conditions
        .into_iter()
        .map(|op| {
            Filter::Condition(Condition {
                key: key.to_string(),
                op,
            })
        })
        .collect();
    if conditions.len() == 1 {
        if let Some(only) = conditions.pop() {
            return Ok(only);
        }
    }
    if level + 1 > MAX_FILTER_DEPTH {
        return Err(FilterError::too_deep(path));
    }
    Ok(Filter::And(conditions))
}

fn parse_scalar(value: &Value, path: &str) -> Result<Scalar, FilterError> {
    match value {
        Value::String(s) => Ok(Scalar::String(s.clone())),
        Value::Bool(b) => Ok(Scalar::Bool(*b)),
        Value::Number(n) => n.as_f64().map(Scalar::Number).ok_or_else(|| {
            FilterError::new(path, format!("number {n} is not representable as a float"))
        }),
        other => Err(FilterError::new(
            path,
            format!("expected a string, number or bool, got {}", describe(other)),
        )),
    }
}

fn parse_scalars(value: &Value, path: &str) -> Result<Vec<Scalar>, FilterError> {
    match value {
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, item)| parse_scalar(item, &index_path(path, i)))
            .collect(),
        other => Err(FilterError::new(
            path,
            format!(
                "expected a non-empty array of values, got {}",
                describe(other)
            ),
        )),
    }
}

fn parse_bound(value: &Value, path: &str) -> Result<Bound, FilterError> {
    let parsed = match value {
        Value::Number(n) => n.as_f64().map(Bound::Number),
        Value::String(s) => parse_datetime(s).map(Bound::DateTime),
        _ => None,
    };
    parsed.ok_or_else(|| {
        FilterError::new(
            path,
            format!(
                "expected a number or an RFC 3339 datetime, got {}",
                describe(value)
            ),
        )
    })
}

#[cfg(test)]
mod tests;
