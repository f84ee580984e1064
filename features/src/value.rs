//! The types a feature may have, typed values, and times as users write them.
//!
//! Timestamps are microseconds since the Unix epoch (UTC), written as RFC 3339
//! (`2024-01-15T10:00:00Z`), as `2024-01-15 10:00:00` (UTC, pandas' form) or as epoch seconds
//! (`1705312800`, `1705312800.5`). Durations are whole seconds, written `3600`, `3600s`, `90m`,
//! `1h`, `7d` or `2w`.

use serde::{Deserialize, Serialize};

/// Microseconds since the Unix epoch, UTC.
pub type Micros = i64;

/// The type of a feature or a join key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ValueType {
    Int64,
    Float64,
    Float32,
    String,
    Bool,
    Timestamp,
    /// An embedding: `float32[]`.
    Float32List,
}

impl ValueType {
    pub const ALL: [ValueType; 7] = [
        ValueType::Int64,
        ValueType::Float64,
        ValueType::Float32,
        ValueType::String,
        ValueType::Bool,
        ValueType::Timestamp,
        ValueType::Float32List,
    ];

    /// The type a name says: ours (`int64`, `float32[]`), or Feast's (`Int64`, `Float32`,
    /// `String`, `Bool`, `UnixTimestamp`, `Array(Float32)`), in any case.
    pub fn parse(name: &str) -> Option<Self> {
        let lower = name.trim().to_ascii_lowercase();
        Some(match lower.as_str() {
            "int64" | "int" | "long" => ValueType::Int64,
            "float64" | "double" => ValueType::Float64,
            "float32" | "float" => ValueType::Float32,
            "string" | "str" => ValueType::String,
            "bool" | "boolean" => ValueType::Bool,
            "timestamp" | "unixtimestamp" | "unix_timestamp" => ValueType::Timestamp,
            "float32[]" | "array(float32)" | "float32_list" | "float32list" | "embedding" => {
                ValueType::Float32List
            }
            _ => return None,
        })
    }

    /// The name [`parse`](Self::parse) reads back.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::Int64 => "int64",
            ValueType::Float64 => "float64",
            ValueType::Float32 => "float32",
            ValueType::String => "string",
            ValueType::Bool => "bool",
            ValueType::Timestamp => "timestamp",
            ValueType::Float32List => "float32[]",
        }
    }

    /// Whether a numeric summary (mean, quantiles) means something for the type.
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            ValueType::Int64 | ValueType::Float64 | ValueType::Float32
        )
    }

    /// `json` as a value of this type (null stays null); the error says what was expected.
    pub fn from_json(self, json: &serde_json::Value) -> Result<Value, String> {
        use serde_json::Value as J;
        let wrong = || format!("expected {}, got {}", self.name(), json_kind(json));
        Ok(match (self, json) {
            (_, J::Null) => Value::Null,
            (ValueType::Int64, J::Number(n)) => match n.as_i64() {
                Some(i) => Value::Int64(i),
                None => match n.as_f64().and_then(whole) {
                    Some(i) => Value::Int64(i),
                    None => return Err(format!("expected int64, got {n}")),
                },
            },
            (ValueType::Float64, J::Number(n)) => Value::Float64(n.as_f64().ok_or_else(wrong)?),
            (ValueType::Float32, J::Number(n)) => {
                Value::Float32(float32(n.as_f64().ok_or_else(wrong)?)?)
            }
            (ValueType::String, J::String(s)) => Value::String(s.clone()),
            (ValueType::Bool, J::Bool(b)) => Value::Bool(*b),
            (ValueType::Timestamp, J::String(s)) => Value::Timestamp(
                parse_timestamp(s).ok_or_else(|| format!("`{s}` is not a timestamp"))?,
            ),
            (ValueType::Timestamp, J::Number(n)) => Value::Timestamp(
                n.as_f64()
                    .and_then(seconds_to_micros)
                    .ok_or_else(|| format!("{n} is not a timestamp"))?,
            ),
            (ValueType::Float32List, J::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item.as_f64() {
                        Some(f) => out.push(float32(f).map_err(|e| format!("[{i}]: {e}"))?),
                        None => return Err(format!("[{i}]: expected a number")),
                    }
                }
                Value::Float32List(out)
            }
            _ => return Err(wrong()),
        })
    }

    /// `text` (a CSV cell) as a value of this type; an empty cell is null.
    pub fn from_text(self, text: &str) -> Result<Value, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Value::Null);
        }
        let number = |what: &str| format!("expected {what}, got `{text}`");
        Ok(match self {
            ValueType::Int64 => Value::Int64(text.parse().map_err(|_| number("int64"))?),
            ValueType::Float64 => Value::Float64(text.parse().map_err(|_| number("float64"))?),
            ValueType::Float32 => {
                Value::Float32(float32(text.parse().map_err(|_| number("float32"))?)?)
            }
            ValueType::String => Value::String(text.to_string()),
            ValueType::Bool => match text.to_ascii_lowercase().as_str() {
                "true" | "1" | "t" | "yes" => Value::Bool(true),
                "false" | "0" | "f" | "no" => Value::Bool(false),
                _ => return Err(number("bool")),
            },
            ValueType::Timestamp => Value::Timestamp(
                parse_timestamp(text).ok_or_else(|| format!("`{text}` is not a timestamp"))?,
            ),
            ValueType::Float32List => {
                let json: serde_json::Value = serde_json::from_str(text)
                    .map_err(|_| number("float32[] (a JSON array of numbers)"))?;
                return self.from_json(&json);
            }
        })
    }
}

/// `f` as an int64 when it is a whole number well within range (None otherwise).
pub fn whole(f: f64) -> Option<i64> {
    (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}

/// `f` as a float32, refused when out of its range (the error says so).
pub fn float32(f: f64) -> Result<f32, String> {
    if f.is_finite() && f.abs() > f64::from(f32::MAX) {
        return Err(format!("{f} is out of float32's range"));
    }
    Ok(f as f32)
}

fn json_kind(json: &serde_json::Value) -> &'static str {
    match json {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a bool",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A feature's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Null,
    Int64(i64),
    Float64(f64),
    Float32(f32),
    String(String),
    Bool(bool),
    Timestamp(Micros),
    Float32List(Vec<f32>),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The value as a number, for statistics (None: null or not numeric).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int64(i) => Some(*i as f64),
            Value::Float64(f) => Some(*f),
            Value::Float32(f) => Some(f64::from(*f)),
            _ => None,
        }
    }

    /// Its JSON form (a timestamp as RFC 3339).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Int64(i) => J::from(*i),
            Value::Float64(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Float32(f) => float32_json(*f),
            Value::String(s) => J::String(s.clone()),
            Value::Bool(b) => J::Bool(*b),
            Value::Timestamp(t) => J::String(format_timestamp(*t)),
            Value::Float32List(v) => J::Array(v.iter().map(|f| float32_json(*f)).collect()),
        }
    }

    /// Its form in a CSV cell (null: empty).
    pub fn to_text(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => match other.to_json() {
                serde_json::Value::String(s) => s,
                json => json.to_string(),
            },
        }
    }

    /// Whether the value is one of type `t` (null is of every type).
    pub fn is_of(&self, t: ValueType) -> bool {
        matches!(
            (self, t),
            (Value::Null, _)
                | (Value::Int64(_), ValueType::Int64)
                | (Value::Float64(_), ValueType::Float64)
                | (Value::Float32(_), ValueType::Float32)
                | (Value::String(_), ValueType::String)
                | (Value::Bool(_), ValueType::Bool)
                | (Value::Timestamp(_), ValueType::Timestamp)
                | (Value::Float32List(_), ValueType::Float32List)
        )
    }
}

/// A float32 as the JSON number it was written as (`0.1`, not `0.10000000149011612`): the
/// shortest decimal that reads back as the same float32.
pub fn float32_json(f: f32) -> serde_json::Value {
    f.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// Epoch seconds as microseconds (None: out of range).
pub fn seconds_to_micros(seconds: f64) -> Option<Micros> {
    let micros = (seconds * 1e6).round();
    (micros.is_finite() && micros.abs() < 9.0e18).then_some(micros as i64)
}

/// A timestamp as users write it (see the module's doc), in microseconds since the epoch.
pub fn parse_timestamp(text: &str) -> Option<Micros> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return seconds_to_micros(seconds);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_micros());
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc().timestamp_micros());
        }
    }
    // `2024-01-15 10:00:00+00:00`, as pandas writes an aware time.
    if let Ok(t) = chrono::DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%:z") {
        return Some(t.timestamp_micros());
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_micros())
}

/// RFC 3339 in UTC, with microseconds when there are any.
pub fn format_timestamp(micros: Micros) -> String {
    match chrono::DateTime::from_timestamp_micros(micros) {
        Some(t) if micros % 1_000_000 == 0 => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        None => micros.to_string(),
    }
}

/// A duration as users write it (see the module's doc), in whole seconds.
pub fn parse_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let scale = match unit.trim() {
        "" | "s" | "sec" | "secs" | "seconds" => 1,
        "m" | "min" | "mins" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 604_800,
        _ => return None,
    };
    n.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_read_in_every_form_users_write() {
        let t = 1_705_312_800_000_000;
        for text in [
            "2024-01-15T10:00:00Z",
            "2024-01-15T11:00:00+01:00",
            "2024-01-15 10:00:00",
            "2024-01-15T10:00:00",
            "2024-01-15 10:00:00+00:00",
            "1705312800",
            "1705312800.0",
        ] {
            assert_eq!(parse_timestamp(text), Some(t), "{text}");
        }
        assert_eq!(parse_timestamp("1705312800.5"), Some(t + 500_000));
        assert_eq!(parse_timestamp("2024-01-15"), Some(t - 36_000_000_000));
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(format_timestamp(t), "2024-01-15T10:00:00Z");
        assert_eq!(format_timestamp(t + 5), "2024-01-15T10:00:00.000005Z");
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("3600s"), Some(3600));
        assert_eq!(parse_duration("3600"), Some(3600));
        assert_eq!(parse_duration("90m"), Some(5400));
        assert_eq!(parse_duration("7d"), Some(604_800));
        assert_eq!(parse_duration("2w"), Some(1_209_600));
        assert_eq!(parse_duration("1 h"), Some(3600));
        assert_eq!(parse_duration("h"), None);
        assert_eq!(parse_duration("-5s"), None);
        assert_eq!(parse_duration("5y"), None);
    }

    #[test]
    fn values_are_checked_against_their_type() {
        use serde_json::json;
        assert_eq!(
            ValueType::Int64.from_json(&json!(3)).unwrap(),
            Value::Int64(3)
        );
        assert_eq!(
            ValueType::Int64.from_json(&json!(3.0)).unwrap(),
            Value::Int64(3)
        );
        assert!(ValueType::Int64.from_json(&json!(3.5)).is_err());
        assert!(ValueType::Int64.from_json(&json!("3")).is_err());
        assert_eq!(
            ValueType::Float32List.from_text("[1, 2.5]").unwrap(),
            Value::Float32List(vec![1.0, 2.5])
        );
        assert!(ValueType::Float32List
            .from_json(&json!([1, "x"]))
            .unwrap_err()
            .starts_with("[1]"));
        assert_eq!(ValueType::Bool.from_text("").unwrap(), Value::Null);
        assert!(ValueType::Float32.from_json(&json!(1e300)).is_err());
        assert_eq!(
            ValueType::Timestamp
                .from_text("2024-01-15T10:00:00Z")
                .unwrap(),
            Value::Timestamp(1_705_312_800_000_000)
        );
        for t in ValueType::ALL {
            assert_eq!(ValueType::parse(t.name()), Some(t));
        }
        assert_eq!(
            ValueType::parse("Array(Float32)"),
            Some(ValueType::Float32List)
        );
        assert_eq!(
            ValueType::parse("UnixTimestamp"),
            Some(ValueType::Timestamp)
        );
    }
}
