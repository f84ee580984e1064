//! The collection snapshot file: JSON lines, readable and restorable into any cluster.
//!
//! - line 1, the header: `{"quiver_snapshot": 1, "created_at": <unix s>, "collection": <spec>,
//!   "shard_count": N, "replication_factor": R}`;
//! - then one point per line, in the import format: `{"id": …, "vector": […], "payload": {…}}`
//!   (vectors as stored: cosine collections hold them normalised);
//! - last, the end line `{"quiver_snapshot_end": {"points": N}}`: a file without it, or whose
//!   count differs, was cut short and is refused.
//!
//! Restoring creates the collection from the header and upserts the points through the normal
//! write path, so a snapshot seeds a cluster of any size and shape.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::convert;
use crate::point::CollectionSpec;
use crate::{Error, Result};
use quiver_proto::v1 as pb;

/// The format this build writes and reads.
pub const FORMAT: u32 = 1;

/// What a snapshot's first line says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub quiver_snapshot: u32,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    pub collection: CollectionSpec,
    pub shard_count: u32,
    pub replication_factor: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct EndLine {
    quiver_snapshot_end: End,
}

#[derive(Debug, Serialize, Deserialize)]
struct End {
    points: u64,
}

impl Header {
    pub fn new(
        collection: CollectionSpec,
        shard_count: u32,
        replication_factor: u32,
        created_at: u64,
    ) -> Self {
        Self {
            quiver_snapshot: FORMAT,
            created_at,
            collection,
            shard_count,
            replication_factor,
        }
    }

    /// The header as its line (no newline).
    pub fn line(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|e| Error::Internal(e.to_string()))
    }

    /// Reads a header line, refusing other formats by name.
    pub fn parse(line: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(line)
            .map_err(|e| Error::invalid("snapshot", format!("the first line is not JSON: {e}")))?;
        match value.get("quiver_snapshot").and_then(Value::as_u64) {
            Some(v) if v == u64::from(FORMAT) => {}
            Some(v) => {
                return Err(Error::invalid(
                    "snapshot",
                    format!("format {v}; this build reads format {FORMAT}"),
                ))
            }
            None => {
                return Err(Error::invalid(
                    "snapshot",
                    "the first line is not a quiver snapshot header",
                ))
            }
        }
        serde_json::from_value(value)
            .map_err(|e| Error::invalid("snapshot", format!("bad header: {e}")))
    }

    /// The request that creates the snapshot's collection, under `name` if given.
    pub fn create_request(&self, name: Option<&str>) -> pb::CreateCollectionRequest {
        let info = convert::collection_info(&self.collection, 0, 0);
        pb::CreateCollectionRequest {
            name: name.unwrap_or(&self.collection.name).to_string(),
            dim: info.dim,
            metric: info.metric,
            index: info.index,
            payload_indexes: info.payload_indexes,
            search_defaults: info.search_defaults,
            shard_count: Some(self.shard_count),
            replication_factor: Some(self.replication_factor),
            request_id: String::new(),
            quantization: info.quantization,
            text_fields: info.text_fields,
            embed: info.embed,
        }
    }
}

/// One point as its line (no newline).
pub fn point_line(point: &pb::Point) -> Result<String> {
    let id = match point.id.as_ref().and_then(|i| i.kind.as_ref()) {
        Some(pb::point_id::Kind::Num(n)) => json!(n),
        Some(pb::point_id::Kind::Uuid(u)) => json!(u),
        None => return Err(Error::Internal("a stored point without an id".into())),
    };
    let mut line = json!({"id": id, "vector": point.vector});
    if let Some(payload) = &point.payload {
        line["payload"] = Value::Object(convert::struct_to_json("payload", payload)?);
    }
    Ok(line.to_string())
}

/// The end line for a file of `points` points.
pub fn end_line(points: u64) -> String {
    json!({"quiver_snapshot_end": {"points": points}}).to_string()
}

/// The point count an end line gives, or None if `line` is not an end line.
pub fn parse_end(line: &str) -> Option<u64> {
    serde_json::from_str::<EndLine>(line)
        .ok()
        .map(|e| e.quiver_snapshot_end.points)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::point::IndexKind;
    use quiver_index::distance::Metric;
    use quiver_index::params::HnswParams;
    use quiver_index::payload_index::FieldType;

    fn spec() -> CollectionSpec {
        CollectionSpec {
            name: "docs".into(),
            dim: 3,
            metric: Metric::Cosine,
            index: IndexKind::Hnsw(HnswParams {
                m: 8,
                ef_construction: 100,
            }),
            payload_indexes: vec![("tag".into(), FieldType::Keyword)],
            default_ef: Some(40),
            quantization: quiver_index::quantize::Quantization::Int8,
            text_fields: vec![crate::point::TextFieldSpec {
                name: "body".into(),
                analyzer: crate::point::TextAnalyzer::Simple,
            }],
            embed: Some("body".into()),
        }
    }

    #[test]
    fn a_header_reads_back_and_makes_the_same_collection() {
        let header = Header::new(spec(), 3, 2, 1_700_000_000);
        let read = Header::parse(&header.line().unwrap()).unwrap();
        assert_eq!(read, header);
        let request = read.create_request(Some("copy"));
        assert_eq!(request.name, "copy");
        let limits = quiver_config::LimitsConfig::default();
        let mut again = convert::collection_spec(&request, &limits, 4096).unwrap();
        again.name = "docs".into();
        assert_eq!(again, spec());
        assert_eq!(request.shard_count, Some(3));
        assert_eq!(request.replication_factor, Some(2));
    }

    #[test]
    fn other_files_and_formats_are_refused_by_name() {
        let not_json = Header::parse("id,vector").unwrap_err().to_string();
        assert!(not_json.contains("not JSON"), "{not_json}");
        let point = Header::parse(r#"{"id": 1, "vector": [1]}"#)
            .unwrap_err()
            .to_string();
        assert!(point.contains("not a quiver snapshot header"), "{point}");
        let newer = Header::parse(r#"{"quiver_snapshot": 2}"#)
            .unwrap_err()
            .to_string();
        assert!(
            newer.contains("format 2; this build reads format 1"),
            "{newer}"
        );
    }

    #[test]
    fn points_and_the_end_line_round_trip() {
        let point = pb::Point {
            id: Some(pb::PointId {
                kind: Some(pb::point_id::Kind::Num(7)),
            }),
            vector: vec![0.1, -2.5e-7, 3.4e38],
            payload: Some(quiver_proto::wire::json_to_struct(
                json!({"tag": "a", "n": 2}).as_object().unwrap(),
            )),
        };
        let line: Value = serde_json::from_str(&point_line(&point).unwrap()).unwrap();
        let vector: Vec<f32> = line["vector"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(
            vector, point.vector,
            "vectors survive the text form exactly"
        );
        assert_eq!(line["payload"], json!({"tag": "a", "n": 2}));
        assert_eq!(parse_end(&end_line(12)), Some(12));
        assert_eq!(parse_end(r#"{"id": 1}"#), None);
    }
}
