//! What a benchmark reports: one [`Row`] per measured setting, printed as a JSON line (fields in
//! the order below, the schema the peer scripts in `peers/` print too) or as a table.

use serde::Serialize;

/// One measured setting.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Whose index: `quiver`, or the `hnsw_rs` reference.
    pub engine: &'static str,
    pub index: &'static str,
    pub params: Params,
    pub recall_at_10: f64,
    pub qps: f64,
    /// Queries per second when queries are not each a call of their own: in-process HNSW has
    /// no call overhead, so it equals `qps`; flat search times one `search_batch` over every
    /// query. The peers' scripts measure theirs (one batched call).
    pub batch_qps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub build_s: f64,
    pub index_bytes: usize,
}

/// Index parameters; the ones that do not apply (all of them for flat) are left out.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Params {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub m: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ef_construction: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ef: Option<usize>,
}

impl Row {
    /// The row as one JSON line, numbers rounded to what the measurement can tell.
    pub fn to_json_line(&self) -> String {
        let rounded = Row {
            recall_at_10: round(self.recall_at_10, 4),
            qps: round(self.qps, 1),
            batch_qps: round(self.batch_qps, 1),
            p50_us: round(self.p50_us, 1),
            p99_us: round(self.p99_us, 1),
            build_s: round(self.build_s, 3),
            ..self.clone()
        };
        serde_json::to_string(&rounded).expect("a row always serialises")
    }
}

impl std::fmt::Display for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = [
            ("m", self.m),
            ("efc", self.ef_construction),
            ("ef", self.ef),
        ]
        .iter()
        .filter_map(|(name, v)| v.map(|v| format!("{name}={v}")))
        .collect();
        if parts.is_empty() {
            f.write_str("-")
        } else {
            f.write_str(&parts.join(" "))
        }
    }
}

/// Prints rows as an aligned table.
pub fn print_table(rows: &[Row]) {
    println!(
        "{:<8} {:<6} {:<22} {:>9} {:>10} {:>9} {:>9} {:>9} {:>10}",
        "engine", "index", "params", "recall@10", "QPS", "p50 us", "p99 us", "build s", "index MiB"
    );
    for r in rows {
        println!(
            "{:<8} {:<6} {:<22} {:>9.4} {:>10.1} {:>9.1} {:>9.1} {:>9.3} {:>10.1}",
            r.engine,
            r.index,
            r.params.to_string(),
            r.recall_at_10,
            r.qps,
            r.p50_us,
            r.p99_us,
            r.build_s,
            r.index_bytes as f64 / (1 << 20) as f64,
        );
    }
}

/// `x` rounded to `digits` decimals.
pub fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_schema_order_and_drops_unused_params() {
        let row = Row {
            engine: "quiver",
            index: "hnsw",
            params: Params {
                m: Some(16),
                ef_construction: Some(200),
                ef: Some(64),
            },
            recall_at_10: 0.98765,
            qps: 1234.56,
            batch_qps: 1234.56,
            p50_us: 800.04,
            p99_us: 1500.0,
            build_s: 12.3456,
            index_bytes: 42,
        };
        assert_eq!(
            row.to_json_line(),
            r#"{"engine":"quiver","index":"hnsw","params":{"m":16,"ef_construction":200,"ef":64},"recall_at_10":0.9877,"qps":1234.6,"batch_qps":1234.6,"p50_us":800.0,"p99_us":1500.0,"build_s":12.346,"index_bytes":42}"#
        );
        let flat = Row {
            index: "flat",
            params: Params::default(),
            ..row
        };
        assert!(flat.to_json_line().contains(r#""params":{}"#));
        assert_eq!(flat.params.to_string(), "-");
    }
}
