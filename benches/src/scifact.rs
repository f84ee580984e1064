//! SciFact in BEIR's layout (`corpus.jsonl`, `queries.jsonl`, `qrels/train.tsv`): documents as
//! "title text", claims, the train split's judgments, and the quality of a ranking against them.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

/// The corpus, the claims and the judgments (claim id -> relevant document ids).
pub struct SciFact {
    /// `(id, "title text")`, in the corpus file's order.
    pub docs: Vec<(String, String)>,
    /// `(id, text)`, in the queries file's order.
    pub claims: Vec<(String, String)>,
    /// The texts of the test split's claims (whose judgments are held back).
    pub test_claims: Vec<String>,
    pub judged: HashMap<String, HashSet<String>>,
}

fn jsonl(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{path:?}"))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}

fn field(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or("").to_owned()
}

impl SciFact {
    pub fn load(dir: &Path) -> Result<Self> {
        let docs = jsonl(&dir.join("corpus.jsonl"))?
            .iter()
            .map(|d| {
                let text = format!("{} {}", field(d, "title"), field(d, "text"));
                (field(d, "_id"), text.trim().to_owned())
            })
            .collect();
        let queries = jsonl(&dir.join("queries.jsonl"))?;
        let claims = queries
            .iter()
            .map(|q| (field(q, "_id"), field(q, "text")))
            .collect();
        let test_claims = queries
            .iter()
            .filter(|q| q["metadata"]["split"] == "test")
            .map(|q| field(q, "text"))
            .collect();
        let mut judged: HashMap<String, HashSet<String>> = HashMap::new();
        let qrels = std::fs::read_to_string(dir.join("qrels/train.tsv"))?;
        for line in qrels.lines().skip(1) {
            let cols: Vec<&str> = line.split('\t').collect();
            if cols.len() >= 3 && cols[2].trim() != "0" {
                judged
                    .entry(cols[0].to_owned())
                    .or_default()
                    .insert(cols[1].to_owned());
            }
        }
        Ok(Self {
            docs,
            claims,
            test_claims,
            judged,
        })
    }
}

/// nDCG@10 and recall@100 of `ranked` (document ids, best first) against binary judgments.
pub fn quality(ranked: &[String], relevant: &HashSet<String>) -> (f64, f64) {
    let dcg: f64 = ranked
        .iter()
        .take(10)
        .enumerate()
        .filter(|(_, d)| relevant.contains(*d))
        .map(|(i, _)| 1.0 / ((i + 2) as f64).log2())
        .sum();
    let ideal: f64 = (0..relevant.len().min(10))
        .map(|i| 1.0 / ((i + 2) as f64).log2())
        .sum();
    let found = ranked
        .iter()
        .take(100)
        .filter(|d| relevant.contains(*d))
        .count();
    (dcg / ideal, found as f64 / relevant.len() as f64)
}
