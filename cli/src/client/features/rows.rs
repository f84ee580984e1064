//! Rows from a file: CSV with a header line, or JSON lines (one object per line). Each row keeps
//! the line it came from, so the server's errors name it too. Cells are sent as they are
//! written (a CSV cell as text, a JSON number as a number); the server reads them as the
//! column's type, and an empty CSV cell or a JSON `null` is null.

use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use quiver_proto::v1 as pb;
use serde_json::Value;

/// A file's columns and rows.
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<pb::FeatureRow>,
}

/// Reads `path` by its extension: `.csv`, or `.jsonl` / `.ndjson` / `.json`.
pub fn read(path: &Path) -> anyhow::Result<Rows> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    match ext.as_str() {
        "csv" => read_csv(path),
        "jsonl" | "ndjson" | "json" => read_jsonl(path),
        "parquet" => bail!(
            "{}: Parquet is not read yet; write the rows as CSV or JSON lines",
            path.display()
        ),
        _ => bail!(
            "{}: expected a .csv or .jsonl file (by its extension)",
            path.display()
        ),
    }
}

fn text(s: &str) -> pb::FeatureValue {
    use pb::feature_value::Kind;
    pb::FeatureValue {
        kind: (!s.is_empty()).then(|| Kind::StringValue(s.to_string())),
    }
}

fn read_csv(path: &Path) -> anyhow::Result<Rows> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_path(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let columns: Vec<String> = reader
        .headers()
        .map_err(|e| anyhow!("{}: {e}", path.display()))?
        .iter()
        .map(|c| c.trim().to_string())
        .collect();
    if columns.iter().all(String::is_empty) {
        bail!("{}: the first line names no columns", path.display());
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let line = record.position().map_or(0, |p| p.line());
        rows.push(pb::FeatureRow {
            values: record.iter().map(text).collect(),
            line,
        });
    }
    Ok(Rows { columns, rows })
}

/// A JSON value as a feature value (numbers stay numbers; arrays are vectors).
fn json_value(v: &Value) -> Result<pb::FeatureValue, String> {
    use pb::feature_value::Kind;
    let kind = match v {
        Value::Null => None,
        Value::Bool(b) => Some(Kind::BoolValue(*b)),
        Value::Number(n) => Some(match n.as_i64() {
            Some(i) => Kind::Int64Value(i),
            None => Kind::Float64Value(n.as_f64().unwrap_or(f64::NAN)),
        }),
        Value::String(s) => Some(Kind::StringValue(s.clone())),
        Value::Array(items) => {
            let mut values = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let f = item
                    .as_f64()
                    .ok_or_else(|| format!("[{i}]: expected a number, got {item}"))?;
                values.push(f as f32);
            }
            Some(Kind::Float32ListValue(pb::Float32List { values }))
        }
        Value::Object(_) => return Err("an object is not a feature value".into()),
    };
    Ok(pb::FeatureValue { kind })
}

fn read_jsonl(path: &Path) -> anyhow::Result<Rows> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut objects = Vec::new();
    let mut columns: Vec<String> = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line_no = i as u64 + 1;
        let line = line.with_context(|| format!("{}:{line_no}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(&line)
            .map_err(|e| anyhow!("{}:{line_no}: not JSON: {e}", path.display()))?;
        let Value::Object(object) = value else {
            bail!("{}:{line_no}: expected an object", path.display());
        };
        for key in object.keys() {
            if !columns.contains(key) {
                columns.push(key.clone());
            }
        }
        objects.push((line_no, object));
    }
    let mut rows = Vec::with_capacity(objects.len());
    for (line, object) in objects {
        let mut values = Vec::with_capacity(columns.len());
        for column in &columns {
            let value = object.get(column).unwrap_or(&Value::Null);
            values.push(
                json_value(value)
                    .map_err(|m| anyhow!("{}:{line}, column `{column}`: {m}", path.display()))?,
            );
        }
        rows.push(pb::FeatureRow { values, line });
    }
    Ok(Rows { columns, rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_json_lines_keep_their_lines_and_columns() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("r.csv");
        std::fs::write(&csv, "user_id,clicks\n1,5\n2,\n").unwrap();
        let rows = read(&csv).unwrap();
        assert_eq!(rows.columns, ["user_id", "clicks"]);
        assert_eq!(rows.rows[1].line, 3);
        assert_eq!(rows.rows[1].values[1].kind, None, "an empty cell is null");
        let jsonl = dir.path().join("r.jsonl");
        std::fs::write(&jsonl, "{\"a\": 1}\n\n{\"b\": [0.5, 1], \"a\": 2.5}\n").unwrap();
        let rows = read(&jsonl).unwrap();
        assert_eq!(rows.columns, ["a", "b"]);
        assert_eq!(rows.rows[1].line, 3);
        assert_eq!(rows.rows[0].values[1].kind, None);
        std::fs::write(&jsonl, "{\"a\": {\"x\": 1}}\n").unwrap();
        let e = read(&jsonl).err().unwrap().to_string();
        assert!(e.contains(":1, column `a`"), "{e}");
        let e = read(&dir.path().join("r.parquet"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("Parquet"), "{e}");
    }
}
