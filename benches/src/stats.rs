//! From raw measurements to reported numbers: recall@k against ground truth, latency
//! percentiles, and the process's resident memory (for a second opinion on index sizes that are
//! computed rather than measured).

use std::time::Duration;

/// |approx top-k ∩ exact top-k| / k for one query.
pub fn recall_at(k: usize, approx: &[u32], exact: &[i32]) -> f64 {
    let exact = &exact[..k.min(exact.len())];
    let found = approx
        .iter()
        .take(k)
        .filter(|slot| exact.contains(&(**slot as i32)))
        .count();
    found as f64 / k as f64
}

/// The `p`-th percentile (0..=100, nearest rank) of `sorted` latencies, in microseconds.
pub fn percentile_us(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e6
}

/// Resident set size of this process in bytes (Linux `/proc/self/statm`), if readable.
pub fn rss_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recall_counts_overlap_of_top_k() {
        assert_eq!(recall_at(2, &[1, 2, 3], &[2, 9, 1]), 0.5);
        assert_eq!(recall_at(3, &[1, 2, 3], &[3, 2, 1]), 1.0);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile_us(&v, 50.0), 50.0);
        assert_eq!(percentile_us(&v, 99.0), 99.0);
        assert_eq!(percentile_us(&v, 100.0), 100.0);
        assert_eq!(percentile_us(&[], 50.0), 0.0);
    }
}
