//! Benchmark data: texmex `.fvecs` vectors and `.ivecs` ground truth, read whole into memory and
//! checked against each other before anything is measured, so a wrong file fails with a message
//! instead of a recall of zero.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use quiver_index::distance::Metric;
use quiver_index::vecs::{parse_fvecs, parse_ivecs};

/// Reads a `.fvecs` file into rows.
pub fn read_fvecs(path: &Path) -> Result<Vec<Vec<f32>>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let rows = parse_fvecs(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    ensure!(!rows.is_empty(), "{}: no vectors", path.display());
    Ok(rows)
}

/// Reads a `.ivecs` file into rows.
pub fn read_ivecs(path: &Path) -> Result<Vec<Vec<i32>>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let rows = parse_ivecs(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    ensure!(!rows.is_empty(), "{}: no rows", path.display());
    Ok(rows)
}

/// Prepares every row for `metric` (cosine normalises); a zero vector under cosine is an error
/// because it has no direction to compare.
pub fn prepare_all(metric: Metric, rows: &mut [Vec<f32>], what: &str) -> Result<()> {
    for (i, row) in rows.iter_mut().enumerate() {
        if !metric.prepare(row) {
            bail!("{what} row {i}: zero vector cannot be used with metric {metric}");
        }
    }
    Ok(())
}

/// Base vectors, queries and their ground truth, prepared for one metric.
pub struct Dataset {
    pub dim: usize,
    pub base: Vec<Vec<f32>>,
    pub queries: Vec<Vec<f32>>,
    /// Exact neighbours of each query (row ids of `base`), nearest first.
    pub ground_truth: Vec<Vec<i32>>,
}

impl Dataset {
    /// Loads and checks the three files; keeps the first `limit_queries` queries when given.
    /// The ground truth must be at least `k` deep.
    pub fn load(
        base: &Path,
        query: &Path,
        gt: &Path,
        metric: Metric,
        limit_queries: Option<usize>,
        k: usize,
    ) -> Result<Self> {
        let mut base_rows = read_fvecs(base)?;
        let mut queries = read_fvecs(query)?;
        let mut ground_truth = read_ivecs(gt)?;
        let dim = base_rows[0].len();
        ensure!(
            queries[0].len() == dim,
            "dimension mismatch: base {} has {dim} dimensions, query {} has {}",
            base.display(),
            query.display(),
            queries[0].len()
        );
        ensure!(
            ground_truth[0].len() >= k,
            "ground truth {} is {} deep, recall@{k} needs at least {k}",
            gt.display(),
            ground_truth[0].len()
        );
        if let Some(limit) = limit_queries {
            ensure!(limit > 0, "--limit-queries must be at least 1");
            queries.truncate(limit);
        }
        ensure!(
            ground_truth.len() >= queries.len(),
            "ground truth {} has {} rows for {} queries",
            gt.display(),
            ground_truth.len(),
            queries.len()
        );
        ground_truth.truncate(queries.len());
        let n = base_rows.len();
        if let Some((q, id)) = ground_truth.iter().enumerate().find_map(|(q, row)| {
            row.iter()
                .find(|&&id| id < 0 || id as usize >= n)
                .map(|id| (q, *id))
        }) {
            bail!(
                "ground truth {} row {q} names base row {id}, but base has {n} rows",
                gt.display()
            );
        }
        prepare_all(metric, &mut base_rows, "base")?;
        prepare_all(metric, &mut queries, "query")?;
        Ok(Self {
            dim,
            base: base_rows,
            queries,
            ground_truth,
        })
    }
}
