//! Points and collections: ids, payloads, records and specs, as node and router both know them.
//!
//! A point id is a u64 or a UUID. Its storage key sorts numbers before UUIDs and each kind in its
//! natural order, which is the order `scroll` pages in.

use quiver_index::distance::Metric;
use quiver_index::params::HnswParams;
use quiver_index::payload_index::FieldType;
use quiver_index::quantize::Quantization;
use quiver_index::Slot;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A JSON object.
pub use quiver_proto::wire::JsonMap;

/// A point id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PointId {
    Num(u64),
    Uuid(uuid::Uuid),
}

impl PointId {
    /// Sortable bytes: tag 0 + big-endian u64, or tag 1 + the 16 UUID bytes.
    pub fn to_key(&self) -> Vec<u8> {
        match self {
            PointId::Num(n) => {
                let mut k = Vec::with_capacity(9);
                k.push(0);
                k.extend_from_slice(&n.to_be_bytes());
                k
            }
            PointId::Uuid(u) => {
                let mut k = Vec::with_capacity(17);
                k.push(1);
                k.extend_from_slice(u.as_bytes());
                k
            }
        }
    }

    pub fn from_key(key: &[u8]) -> Result<Self> {
        match key {
            [0, rest @ ..] if rest.len() == 8 => Ok(PointId::Num(u64::from_be_bytes(
                rest.try_into().unwrap_or([0; 8]),
            ))),
            [1, rest @ ..] if rest.len() == 16 => Ok(PointId::Uuid(
                uuid::Uuid::from_slice(rest).map_err(|e| Error::Internal(e.to_string()))?,
            )),
            _ => Err(Error::Internal(format!("malformed point key {key:?}"))),
        }
    }

    /// Parses a JSON id: a non-negative integer or a UUID string.
    pub fn from_json(field: &str, value: &serde_json::Value) -> Result<Self> {
        match value {
            serde_json::Value::Number(n) => n.as_u64().map(PointId::Num).ok_or_else(|| {
                Error::invalid(field, format!("id {n} is not an unsigned 64-bit integer"))
            }),
            serde_json::Value::String(s) => Self::parse_uuid(field, s),
            other => Err(Error::invalid(
                field,
                format!("id must be an unsigned integer or a UUID string, got {other}"),
            )),
        }
    }

    pub fn parse_uuid(field: &str, s: &str) -> Result<Self> {
        uuid::Uuid::parse_str(s)
            .map(PointId::Uuid)
            .map_err(|_| Error::invalid(field, format!("`{s}` is not a UUID")))
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            PointId::Num(n) => serde_json::Value::from(*n),
            PointId::Uuid(u) => serde_json::Value::from(u.to_string()),
        }
    }
}

impl std::fmt::Display for PointId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PointId::Num(n) => write!(f, "{n}"),
            PointId::Uuid(u) => write!(f, "{u}"),
        }
    }
}

/// Serialises a JSON object as its JSON text: one string, cheap to carry through the encoding and
/// exactly the JSON the user sent.
pub mod json_text {
    use super::JsonMap;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(map: &JsonMap, s: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(map).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<JsonMap, D::Error> {
        let text = String::deserialize(d)?;
        serde_json::from_str(&text).map_err(serde::de::Error::custom)
    }
}

/// A point to write: the vector is already validated and prepared for the metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewPoint {
    pub id: PointId,
    #[serde(with = "crate::encoding::f32s")]
    pub vector: Vec<f32>,
    #[serde(with = "json_text")]
    pub payload: JsonMap,
}

/// A stored point: its current slot, vector and payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointRecord {
    pub slot: Slot,
    #[serde(with = "crate::encoding::f32s")]
    pub vector: Vec<f32>,
    #[serde(with = "json_text")]
    pub payload: JsonMap,
}

/// A stored [`PointRecord`] read for its vector alone: the payload is skipped, not parsed.
/// (Records are encoded as arrays, so the fields keep [`PointRecord`]'s order, slot included.)
#[derive(Debug, Deserialize)]
pub struct StoredVector {
    pub slot: Slot,
    #[serde(with = "crate::encoding::f32s")]
    pub vector: Vec<f32>,
    #[serde(rename = "payload")]
    _payload: serde::de::IgnoredAny,
}

/// How a collection's vectors are indexed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum IndexKind {
    /// Exact search only.
    Flat,
    /// An HNSW graph.
    Hnsw(HnswParams),
}

/// What a user asks for when creating a collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionSpec {
    pub name: String,
    pub dim: u32,
    pub metric: Metric,
    pub index: IndexKind,
    pub payload_indexes: Vec<(String, FieldType)>,
    /// HNSW `ef` used when a search does not set one (None: the server's default).
    pub default_ef: Option<u32>,
    /// How sealed segments store vectors (the full-precision ones stay in the points' rows).
    #[serde(default)]
    pub quantization: Quantization,
    /// Payload keys whose string values are indexed for full-text search.
    #[serde(default)]
    pub text_fields: Vec<TextFieldSpec>,
    /// The payload key whose text the server embeds into a point's vector, and a query's text
    /// into its vector (None: vectors come from the client).
    #[serde(default)]
    pub embed: Option<String>,
}

/// How a text field's text is split into terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TextAnalyzer {
    /// Words, lowercased, English stop words dropped, stemmed.
    #[default]
    English,
    /// Words, lowercased.
    Simple,
    /// Split on whitespace only, case kept.
    Whitespace,
}

/// A payload key whose string value is indexed for full-text (BM25) search.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextFieldSpec {
    pub name: String,
    pub analyzer: TextAnalyzer,
}

/// A collection as stored: its spec and the id its points are keyed under. The id is the log
/// index of the command that created it, so a dropped and re-created collection never sees the
/// old one's data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionMeta {
    pub id: u64,
    pub spec: CollectionSpec,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sort_numbers_first() {
        let a = PointId::Num(5);
        let b = PointId::Num(300);
        let c = PointId::Uuid(uuid::Uuid::nil());
        for id in [a, b, c] {
            assert_eq!(PointId::from_key(&id.to_key()).unwrap(), id);
        }
        assert!(a.to_key() < b.to_key() && b.to_key() < c.to_key());
        assert!(PointId::from_key(&[9, 9]).is_err());
    }

    #[test]
    fn json_ids() {
        assert_eq!(
            PointId::from_json("id", &serde_json::json!(7)).unwrap(),
            PointId::Num(7)
        );
        assert!(PointId::from_json("id", &serde_json::json!(-1)).is_err());
        assert!(PointId::from_json("id", &serde_json::json!("nope")).is_err());
    }
}
