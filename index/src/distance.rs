//! Metrics and distance kernels.
//!
//! Two kernels carry every metric: [`dot`] and [`l2_squared`]. Each has a scalar reference in
//! [`scalar`] and an AVX2+FMA version chosen once at run time when the CPU has both; tests check
//! the two agree. Cosine similarity is the dot product of vectors normalised at ingest (and of a
//! normalised query), so it costs the same as `dot`.
//!
//! Scores are what users see: cosine and dot are similarities (higher is better), l2 is the
//! Euclidean distance (lower is better). [`Metric::is_better`] orders them.

use std::sync::OnceLock;

/// How two vectors are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Cosine,
    L2,
    Dot,
}

impl Metric {
    /// The user-facing score of `a` against `b` (both already [`prepare`](Self::prepare)d).
    #[inline]
    pub fn score(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Metric::Cosine | Metric::Dot => dot(a, b),
            Metric::L2 => l2_squared(a, b).sqrt(),
        }
    }

    /// Whether larger scores are better (true for similarities, false for distances).
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Metric::L2)
    }

    /// Whether score `a` ranks strictly before score `b`.
    #[inline]
    pub fn is_better(self, a: f32, b: f32) -> bool {
        if self.higher_is_better() {
            a > b
        } else {
            a < b
        }
    }

    /// Turns a stored or query vector into the form the kernels expect: cosine vectors are
    /// normalised to unit length. Returns false (leaving `v` unchanged) for a zero vector under
    /// cosine, which has no direction.
    pub fn prepare(self, v: &mut [f32]) -> bool {
        match self {
            Metric::Cosine => normalize(v),
            Metric::L2 | Metric::Dot => true,
        }
    }

    /// The metric's name as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::L2 => "l2",
            Metric::Dot => "dot",
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Metric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "cosine" => Ok(Metric::Cosine),
            "l2" | "euclid" | "euclidean" => Ok(Metric::L2),
            "dot" | "ip" => Ok(Metric::Dot),
            _ => Err(format!("unknown metric `{s}`: expected cosine, l2 or dot")),
        }
    }
}

/// Scales `v` to unit length. Returns false for a zero (or non-finite-norm) vector.
pub fn normalize(v: &mut [f32]) -> bool {
    let norm = dot(v, v).sqrt();
    if !(norm.is_finite() && norm > 0.0) {
        return false;
    }
    let inv = 1.0 / norm;
    v.iter_mut().for_each(|x| *x *= inv);
    true
}

/// A distance kernel over two slices of one length.
pub type Kernel = fn(&[f32], &[f32]) -> f32;

/// Eight inner products: four queries by two rows, sharing their loads.
type TileKernel = fn([&[f32]; 4], [&[f32]; 2]) -> [f32; 8];

struct Kernels {
    dot: Kernel,
    l2_squared: Kernel,
    dot_tile: TileKernel,
    name: &'static str,
}

fn kernels() -> &'static Kernels {
    static KERNELS: OnceLock<Kernels> = OnceLock::new();
    KERNELS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Kernels {
                dot: avx2::dot,
                l2_squared: avx2::l2_squared,
                dot_tile: avx2::dot_tile,
                name: "avx2+fma",
            };
        }
        Kernels {
            dot: scalar::dot,
            l2_squared: scalar::l2_squared,
            dot_tile: scalar::dot_tile,
            name: "scalar",
        }
    })
}

/// Which kernel set this CPU runs: `"avx2+fma"` or `"scalar"`.
pub fn simd_backend() -> &'static str {
    kernels().name
}

/// The kernel behind [`dot`], for hot loops that fetch it once and call it directly.
pub fn dot_kernel() -> Kernel {
    kernels().dot
}

/// The kernel behind [`l2_squared`], for hot loops that fetch it once and call it directly.
pub fn l2_squared_kernel() -> Kernel {
    kernels().l2_squared
}

/// The inner products of four queries with two rows, `out[2·q + r]` (the micro-kernel of
/// batched exact search: each load of a row or a query feeds several multiply-adds, and the
/// eight sums stay in registers). All six slices must have one length.
#[inline]
pub fn dot_tile(queries: [&[f32]; 4], rows: [&[f32]; 2]) -> [f32; 8] {
    (kernels().dot_tile)(queries, rows)
}

/// Inner product. The slices must have the same length.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    (kernels().dot)(a, b)
}

/// Squared Euclidean distance. The slices must have the same length.
#[inline]
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    (kernels().l2_squared)(a, b)
}

/// Portable reference kernels.
pub mod scalar {
    /// Inner product, four accumulators so the compiler can vectorise it.
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let mut acc = [0.0f32; 4];
        let chunks = n / 4;
        for i in 0..chunks {
            for j in 0..4 {
                acc[j] += a[i * 4 + j] * b[i * 4 + j];
            }
        }
        let mut sum = acc[0] + acc[1] + acc[2] + acc[3];
        for i in chunks * 4..n {
            sum += a[i] * b[i];
        }
        sum
    }

    /// Eight inner products: four queries with two rows, `out[2·q + r]`.
    pub fn dot_tile(queries: [&[f32]; 4], rows: [&[f32]; 2]) -> [f32; 8] {
        let mut out = [0.0; 8];
        for (i, q) in queries.iter().enumerate() {
            for (j, r) in rows.iter().enumerate() {
                out[2 * i + j] = dot(q, r);
            }
        }
        out
    }

    /// Squared Euclidean distance.
    pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let mut acc = [0.0f32; 4];
        let chunks = n / 4;
        for i in 0..chunks {
            for j in 0..4 {
                let d = a[i * 4 + j] - b[i * 4 + j];
                acc[j] += d * d;
            }
        }
        let mut sum = acc[0] + acc[1] + acc[2] + acc[3];
        for i in chunks * 4..n {
            let d = a[i] - b[i];
            sum += d * d;
        }
        sum
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: only installed by `kernels()` after detecting avx2 and fma.
        unsafe { dot_avx2(a, b) }
    }

    pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: only installed by `kernels()` after detecting avx2 and fma.
        unsafe { l2_avx2(a, b) }
    }

    pub fn dot_tile(queries: [&[f32]; 4], rows: [&[f32]; 2]) -> [f32; 8] {
        // SAFETY: only installed by `kernels()` after detecting avx2 and fma.
        unsafe { dot_tile_avx2(queries, rows) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_tile_avx2(q: [&[f32]; 4], r: [&[f32]; 2]) -> [f32; 8] {
        let n = q.iter().chain(&r).map(|s| s.len()).min().unwrap_or(0);
        let (p0, p1, p2, p3) = (q[0].as_ptr(), q[1].as_ptr(), q[2].as_ptr(), q[3].as_ptr());
        let (r0, r1) = (r[0].as_ptr(), r[1].as_ptr());
        let mut acc = [_mm256_setzero_ps(); 8];
        let mut i = 0;
        // SAFETY: every load reads 8 floats at i <= n - 8, inside all six slices.
        unsafe {
            while i + 8 <= n {
                let x0 = _mm256_loadu_ps(r0.add(i));
                let x1 = _mm256_loadu_ps(r1.add(i));
                let y = _mm256_loadu_ps(p0.add(i));
                acc[0] = _mm256_fmadd_ps(y, x0, acc[0]);
                acc[1] = _mm256_fmadd_ps(y, x1, acc[1]);
                let y = _mm256_loadu_ps(p1.add(i));
                acc[2] = _mm256_fmadd_ps(y, x0, acc[2]);
                acc[3] = _mm256_fmadd_ps(y, x1, acc[3]);
                let y = _mm256_loadu_ps(p2.add(i));
                acc[4] = _mm256_fmadd_ps(y, x0, acc[4]);
                acc[5] = _mm256_fmadd_ps(y, x1, acc[5]);
                let y = _mm256_loadu_ps(p3.add(i));
                acc[6] = _mm256_fmadd_ps(y, x0, acc[6]);
                acc[7] = _mm256_fmadd_ps(y, x1, acc[7]);
                i += 8;
            }
            let mut out = [0.0f32; 8];
            _mm256_storeu_ps(out.as_mut_ptr(), hsum8(acc));
            while i < n {
                let (x0, x1) = (*r0.add(i), *r1.add(i));
                for (k, p) in [p0, p1, p2, p3].into_iter().enumerate() {
                    out[2 * k] += *p.add(i) * x0;
                    out[2 * k + 1] += *p.add(i) * x1;
                }
                i += 1;
            }
            out
        }
    }

    /// The sums of eight vectors' lanes, in order, in one vector.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum8(a: [__m256; 8]) -> __m256 {
        // two rounds of pairwise adds leave, in each 128-bit half, one partial sum per input
        // (a0..a3 in u0, a4..a7 in u1); the halves are then added across
        let t0 = _mm256_hadd_ps(a[0], a[1]);
        let t1 = _mm256_hadd_ps(a[2], a[3]);
        let t2 = _mm256_hadd_ps(a[4], a[5]);
        let t3 = _mm256_hadd_ps(a[6], a[7]);
        let u0 = _mm256_hadd_ps(t0, t1);
        let u1 = _mm256_hadd_ps(t2, t3);
        let low = _mm256_permute2f128_ps(u0, u1, 0x20);
        let high = _mm256_permute2f128_ps(u0, u1, 0x31);
        _mm256_add_ps(low, high)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let hi = _mm256_extractf128_ps(v, 1);
        let lo = _mm256_castps256_ps128(v);
        let s = _mm_add_ps(hi, lo);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0x55));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        // SAFETY: every load reads 8 floats at i < n - 15 or n - 7, inside both slices.
        unsafe {
            while i + 16 <= n {
                acc0 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
                acc1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 8)),
                    _mm256_loadu_ps(pb.add(i + 8)),
                    acc1,
                );
                i += 16;
            }
            if i + 8 <= n {
                acc0 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
                i += 8;
            }
            let mut sum = hsum(_mm256_add_ps(acc0, acc1));
            while i < n {
                sum += *pa.add(i) * *pb.add(i);
                i += 1;
            }
            sum
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn l2_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        // SAFETY: as in `dot_avx2`.
        unsafe {
            while i + 16 <= n {
                let d0 = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
                let d1 = _mm256_sub_ps(
                    _mm256_loadu_ps(pa.add(i + 8)),
                    _mm256_loadu_ps(pb.add(i + 8)),
                );
                acc0 = _mm256_fmadd_ps(d0, d0, acc0);
                acc1 = _mm256_fmadd_ps(d1, d1, acc1);
                i += 16;
            }
            if i + 8 <= n {
                let d0 = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
                acc0 = _mm256_fmadd_ps(d0, d0, acc0);
                i += 8;
            }
            let mut sum = hsum(_mm256_add_ps(acc0, acc1));
            while i < n {
                let d = *pa.add(i) - *pb.add(i);
                sum += d * d;
                i += 1;
            }
            sum
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() <= 1e-4 * (1.0 + a.abs().max(b.abs()))
    }

    #[test]
    fn dispatched_kernels_match_scalar_reference_for_every_length() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for len in 0..70 {
            let a: Vec<f32> = (0..len).map(|_| rng.gen_range(-10.0..10.0)).collect();
            let b: Vec<f32> = (0..len).map(|_| rng.gen_range(-10.0..10.0)).collect();
            assert!(close(dot(&a, &b), scalar::dot(&a, &b)), "dot, len {len}");
            assert!(
                close(l2_squared(&a, &b), scalar::l2_squared(&a, &b)),
                "l2, len {len}"
            );
        }
    }

    #[test]
    fn a_tile_matches_one_product_at_a_time() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        for len in [0, 1, 7, 8, 9, 16, 33, 128, 130] {
            let mut vector =
                || -> Vec<f32> { (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect() };
            let rows = [vector(), vector()];
            let qs: Vec<Vec<f32>> = (0..4).map(|_| vector()).collect();
            let tile = dot_tile([&qs[0], &qs[1], &qs[2], &qs[3]], [&rows[0], &rows[1]]);
            for (i, q) in qs.iter().enumerate() {
                for (j, row) in rows.iter().enumerate() {
                    assert!(close(tile[2 * i + j], scalar::dot(q, row)), "len {len}");
                }
            }
        }
    }

    #[test]
    fn scalar_kernels_match_naive_sums() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0];
        let b = [5.0, 4.0, 3.0, 2.0, 1.0];
        assert_eq!(scalar::dot(&a, &b), 35.0);
        assert_eq!(scalar::l2_squared(&a, &b), 40.0);
    }

    #[test]
    fn cosine_prepares_unit_vectors_and_rejects_zero() {
        let mut v = vec![3.0, 4.0];
        assert!(Metric::Cosine.prepare(&mut v));
        assert!(close(v[0], 0.6) && close(v[1], 0.8));
        let mut zero = vec![0.0, 0.0];
        assert!(!Metric::Cosine.prepare(&mut zero));
        assert!(Metric::L2.prepare(&mut zero));
    }

    #[test]
    fn scores_and_order() {
        let a = [1.0, 0.0];
        let b = [0.0, 2.0];
        assert!(close(Metric::L2.score(&a, &b), 5.0f32.sqrt()));
        assert_eq!(Metric::Dot.score(&a, &b), 0.0);
        assert!(Metric::L2.is_better(1.0, 2.0));
        assert!(Metric::Dot.is_better(2.0, 1.0));
        assert_eq!("L2".parse::<Metric>(), Ok(Metric::L2));
        assert!("manhattan".parse::<Metric>().is_err());
    }

    #[test]
    fn backend_is_named() {
        assert!(["avx2+fma", "scalar"].contains(&simd_backend()));
    }
}
