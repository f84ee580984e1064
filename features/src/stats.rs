//! Feature statistics kept at write time, and drift between two windows.
//!
//! A [`Summary`] of one feature over some rows is mergeable: shards and days are summarised
//! apart and merged when read, so any window made of whole days is answered without a scan.
//! It holds Welford's moments (count, mean, M2, min, max) and the nulls, and a quantile sketch
//! with relative accuracy ([`Sketch`], log-spaced buckets as in DDSketch), from which
//! quantiles, a CDF, the PSI and the two-sample Kolmogorov–Smirnov statistic are read.
//!
//! Drift of a window against a reference ([`drift`]): the z-score of the mean
//! (`|mean - mean_ref| / std_ref`) and of the std (`|std - std_ref| / std_ref`), flagged above a
//! threshold (2.0 by default); the PSI over the reference's deciles (flagged above 0.2); and KS,
//! flagged above its critical value at α = 0.05 (`1.358 · sqrt((n + m) / (n · m))`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The sketch's relative accuracy: a quantile is within 1% of a value of that rank.
const ALPHA: f64 = 0.01;
/// The most buckets a sketch keeps; beyond it the lowest are folded together.
const MAX_BUCKETS: usize = 2048;
/// Values nearer zero than this count as zero.
const MIN_MAGNITUDE: f64 = 1e-9;

/// A mergeable quantile sketch: counts of values in log-spaced buckets, by sign.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sketch {
    positive: BTreeMap<i32, u64>,
    negative: BTreeMap<i32, u64>,
    zeros: u64,
}

fn gamma() -> f64 {
    (1.0 + ALPHA) / (1.0 - ALPHA)
}

fn bucket_of(magnitude: f64) -> i32 {
    (magnitude.ln() / gamma().ln()).ceil() as i32
}

/// A value representative of bucket `i` (within ALPHA of every value in it).
fn bucket_value(i: i32) -> f64 {
    2.0 * gamma().powi(i) / (gamma() + 1.0)
}

fn fold(store: &mut BTreeMap<i32, u64>) {
    while store.len() > MAX_BUCKETS {
        let Some((&low, &count)) = store.iter().next() else {
            return;
        };
        store.remove(&low);
        if let Some((_, next)) = store.iter_mut().next() {
            *next += count;
        }
    }
}

impl Sketch {
    pub fn add(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        if x.abs() < MIN_MAGNITUDE {
            self.zeros += 1;
        } else if x > 0.0 {
            *self.positive.entry(bucket_of(x)).or_default() += 1;
            fold(&mut self.positive);
        } else {
            *self.negative.entry(bucket_of(-x)).or_default() += 1;
            fold(&mut self.negative);
        }
    }

    pub fn merge(&mut self, other: &Sketch) {
        for (k, c) in &other.positive {
            *self.positive.entry(*k).or_default() += c;
        }
        for (k, c) in &other.negative {
            *self.negative.entry(*k).or_default() += c;
        }
        self.zeros += other.zeros;
        fold(&mut self.positive);
        fold(&mut self.negative);
    }

    pub fn count(&self) -> u64 {
        self.zeros + self.positive.values().sum::<u64>() + self.negative.values().sum::<u64>()
    }

    /// Buckets in ascending order of value: (representative value, count).
    fn ascending(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let negative = self
            .negative
            .iter()
            .rev()
            .map(|(k, c)| (-bucket_value(*k), *c));
        let zeros = (self.zeros > 0).then_some((0.0, self.zeros));
        let positive = self.positive.iter().map(|(k, c)| (bucket_value(*k), *c));
        negative.chain(zeros).chain(positive)
    }

    /// The value at quantile `q` (0..=1); None when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (n - 1) as f64).floor() as u64;
        let mut seen = 0;
        for (value, count) in self.ascending() {
            seen += count;
            if seen > rank {
                return Some(value);
            }
        }
        None
    }

    /// The share of values at or below `x`.
    pub fn cdf(&self, x: f64) -> f64 {
        let n = self.count();
        if n == 0 {
            return 0.0;
        }
        let below: u64 = self
            .ascending()
            .take_while(|(v, _)| *v <= x)
            .map(|(_, c)| c)
            .sum();
        below as f64 / n as f64
    }
}

/// One feature's statistics over some rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Rows with a value (numeric or not).
    pub count: u64,
    pub nulls: u64,
    /// Welford's running moments of the numeric values.
    pub numeric: u64,
    pub mean: f64,
    pub m2: f64,
    pub min: f64,
    pub max: f64,
    pub sketch: Sketch,
}

impl Summary {
    /// A null was written.
    pub fn add_null(&mut self) {
        self.nulls += 1;
    }

    /// A value was written; `number` is its numeric value, if it has one.
    pub fn add(&mut self, number: Option<f64>) {
        self.count += 1;
        let Some(x) = number.filter(|x| x.is_finite()) else {
            return;
        };
        self.numeric += 1;
        if self.numeric == 1 {
            (self.min, self.max) = (x, x);
        } else {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
        let delta = x - self.mean;
        self.mean += delta / self.numeric as f64;
        self.m2 += delta * (x - self.mean);
        self.sketch.add(x);
    }

    /// Both as one (Chan's parallel combination of the moments).
    pub fn merge(&mut self, other: &Summary) {
        self.count += other.count;
        self.nulls += other.nulls;
        if other.numeric == 0 {
            return;
        }
        if self.numeric == 0 {
            (self.min, self.max) = (other.min, other.max);
        } else {
            self.min = self.min.min(other.min);
            self.max = self.max.max(other.max);
        }
        let (na, nb) = (self.numeric as f64, other.numeric as f64);
        let n = na + nb;
        let delta = other.mean - self.mean;
        self.mean += delta * nb / n;
        self.m2 += other.m2 + delta * delta * na * nb / n;
        self.numeric += other.numeric;
        self.sketch.merge(&other.sketch);
    }

    /// The sample standard deviation (0 with fewer than two values).
    pub fn std(&self) -> f64 {
        match self.numeric {
            0 | 1 => 0.0,
            n => (self.m2 / (n - 1) as f64).max(0.0).sqrt(),
        }
    }
}

/// How far a window has drifted from a reference, feature by feature.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    pub z_mean: f64,
    pub z_std: f64,
    pub psi: f64,
    pub ks: f64,
    /// KS's critical value at α = 0.05 for the two sizes.
    pub ks_critical: f64,
    pub drifted: bool,
}

/// The PSI above which a feature has drifted.
pub const PSI_THRESHOLD: f64 = 0.2;

/// Drift of `current` from `reference`, the z-scores flagged above `z_threshold`; None when
/// either has no numeric values.
pub fn drift(current: &Summary, reference: &Summary, z_threshold: f64) -> Option<Drift> {
    if current.numeric == 0 || reference.numeric == 0 {
        return None;
    }
    let std_ref = reference.std();
    let z = |d: f64| match std_ref {
        s if s > 0.0 => d.abs() / s,
        _ if d.abs() > 0.0 => f64::INFINITY,
        _ => 0.0,
    };
    let z_mean = z(current.mean - reference.mean);
    let z_std = z(current.std() - std_ref);
    // PSI over the reference's deciles (edges where the reference's CDF crosses each tenth).
    let edges: Vec<f64> = (1..10)
        .filter_map(|d| reference.sketch.quantile(f64::from(d) / 10.0))
        .collect();
    let share = |s: &Sketch| -> Vec<f64> {
        let mut out = Vec::with_capacity(edges.len() + 1);
        let mut below = 0.0;
        for e in &edges {
            let c = s.cdf(*e);
            out.push(c - below);
            below = c;
        }
        out.push(1.0 - below);
        out
    };
    let eps = 1e-4;
    let psi: f64 = share(&current.sketch)
        .iter()
        .zip(share(&reference.sketch))
        .map(|(c, r)| {
            let (c, r) = (c.max(eps), r.max(eps));
            (c - r) * (c / r).ln()
        })
        .sum();
    // KS over every bucket either sketch has.
    let points: Vec<f64> = current
        .sketch
        .ascending()
        .chain(reference.sketch.ascending())
        .map(|(v, _)| v)
        .collect();
    let ks = points
        .iter()
        .map(|x| (current.sketch.cdf(*x) - reference.sketch.cdf(*x)).abs())
        .fold(0.0, f64::max);
    let (n, m) = (current.numeric as f64, reference.numeric as f64);
    let ks_critical = 1.358 * ((n + m) / (n * m)).sqrt();
    let drifted =
        z_mean > z_threshold || z_std > z_threshold || psi > PSI_THRESHOLD || ks > ks_critical;
    Some(Drift {
        z_mean,
        z_std,
        psi,
        ks,
        ks_critical,
        drifted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic stream of roughly normal values (sum of uniforms from a linear
    /// congruential generator) with mean `mean` and std about `std`.
    fn normal(seed: u64, n: usize, mean: f64, std: f64) -> Vec<f64> {
        let mut state = seed;
        let mut uniform = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let s: f64 = (0..12).map(|_| uniform()).sum::<f64>() - 6.0;
                mean + std * s
            })
            .collect()
    }

    fn summary(values: &[f64]) -> Summary {
        let mut s = Summary::default();
        for v in values {
            s.add(Some(*v));
        }
        s
    }

    #[test]
    fn moments_and_quantiles_merge_as_if_summarised_at_once() {
        let values = normal(1, 10_000, 50.0, 10.0);
        let whole = summary(&values);
        let mut merged = summary(&values[..3000]);
        merged.merge(&summary(&values[3000..7000]));
        merged.merge(&summary(&values[7000..]));
        assert_eq!(merged.numeric, 10_000);
        assert!((merged.mean - whole.mean).abs() < 1e-9);
        assert!((merged.std() - whole.std()).abs() < 1e-9);
        assert_eq!((merged.min, merged.max), (whole.min, whole.max));
        assert_eq!(merged.sketch, whole.sketch);
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        for q in [0.01, 0.5, 0.9, 0.99] {
            let exact = sorted[(q * (sorted.len() - 1) as f64) as usize];
            let got = merged.sketch.quantile(q).unwrap();
            assert!(
                (got - exact).abs() <= 0.02 * exact.abs(),
                "q{q}: {got} vs {exact}"
            );
        }
        assert!((whole.mean - 50.0).abs() < 0.5 && (whole.std() - 10.0).abs() < 0.5);
        // negative values and zeros sort below positive ones
        let mixed = summary(&[-5.0, 0.0, 3.0]);
        assert_eq!(mixed.sketch.quantile(0.0).map(f64::round), Some(-5.0));
        assert_eq!(mixed.sketch.quantile(0.5), Some(0.0));
    }

    #[test]
    fn a_shifted_distribution_drifts_and_another_sample_of_the_same_does_not() {
        let reference = summary(&normal(1, 5000, 100.0, 15.0));
        let same = summary(&normal(2, 5000, 100.0, 15.0));
        let d = drift(&same, &reference, 2.0).unwrap();
        assert!(!d.drifted, "{d:?}");
        assert!(
            d.z_mean < 0.2 && d.psi < 0.05 && d.ks < d.ks_critical,
            "{d:?}"
        );

        let shifted = summary(&normal(3, 5000, 140.0, 15.0));
        let d = drift(&shifted, &reference, 2.0).unwrap();
        assert!(d.drifted, "{d:?}");
        assert!(
            d.z_mean > 2.0 && d.psi > 0.2 && d.ks > d.ks_critical,
            "{d:?}"
        );

        // a change of spread alone is seen by PSI and KS
        let wider = summary(&normal(4, 5000, 100.0, 40.0));
        let d = drift(&wider, &reference, 2.0).unwrap();
        assert!(d.drifted && d.psi > 0.2 && d.ks > d.ks_critical, "{d:?}");
        assert!(drift(&Summary::default(), &reference, 2.0).is_none());
    }
}
