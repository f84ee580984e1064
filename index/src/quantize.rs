//! Compact encodings of a sealed segment's vectors, and the distance kernels that read them.
//!
//! A vector is stored as 32-bit words, in one of three encodings:
//! - `f32`: as given (one word per dimension);
//! - `f16`: IEEE half precision, two dimensions per word (half the memory; rounding error about
//!   1e-3 of a value, so results barely move);
//! - `int8`: scalar quantization, one byte per dimension (a quarter of the memory) plus one word
//!   per vector. A segment has one `lo` and `step`, trained on a sample of its vectors: the bounds
//!   are the quantiles that leave [`TAIL`] (one in 100,000) of the sample's values outside at
//!   each end, so a stray extreme value does not widen the step for all; values beyond them are
//!   clamped. (Clipping more costs recall: leaving 0.5% outside at each end, as a 0.99 quantile
//!   does, took recall@10 with 20 rescored candidates from 0.97 to 0.77 on clustered 384-d
//!   embeddings.) A value `x` is stored as the byte
//!   `c = round((x − lo) / step)`, so `x ≈ lo + step·c`. Then, for vectors of `d` dimensions,
//!   `|x − y|² ≈ step²·Σ(cx − cy)²` and `x·y ≈ step²·Σ cx·cy + bias(x) + bias(y)` with
//!   `bias(x) = step·lo·Σcx + d·lo²/2`, which is the word stored after the codes. The sums are
//!   integer arithmetic (AVX2: 16 dimensions per multiply-add).
//!
//! A query is encoded like a stored vector, so both sides of a distance have one form. The
//! scores of an encoded segment are approximate; the shard rescores the best candidates against
//! the full-precision vectors it keeps on disk.

use std::sync::OnceLock;

/// How a collection stores the vectors of its sealed segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    /// Full precision (`f32`).
    #[default]
    None,
    #[serde(rename = "fp16")]
    F16,
    Int8,
}

impl Quantization {
    pub fn as_str(self) -> &'static str {
        match self {
            Quantization::None => "none",
            Quantization::F16 => "fp16",
            Quantization::Int8 => "int8",
        }
    }
}

impl Quantization {
    /// Bytes one vector of `dim` dimensions takes in this encoding.
    pub fn bytes_per_vector(self, dim: usize) -> usize {
        let words = match self {
            Quantization::None => dim,
            Quantization::F16 => dim.div_ceil(2),
            Quantization::Int8 => code_words(dim) + 1,
        };
        words * 4
    }
}

impl std::fmt::Display for Quantization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Quantization {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "f32" => Ok(Quantization::None),
            "fp16" | "f16" | "float16" => Ok(Quantization::F16),
            "int8" | "scalar" | "sq8" => Ok(Quantization::Int8),
            other => Err(format!(
                "unknown quantization {other:?}; expected none, fp16 or int8"
            )),
        }
    }
}

/// The largest finite f16.
const F16_MAX: f32 = 65_504.0;

/// The share of a sample's values left outside the int8 bounds at each end.
pub const TAIL: f64 = 1e-5;
/// At most this many vectors are sampled to train the int8 bounds.
const TRAINING_VECTORS: usize = 10_000;

/// How one segment's vectors are stored: an encoding with its trained parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Encoding {
    F32,
    F16,
    Int8 { lo: f32, step: f32 },
}

impl Encoding {
    /// The encoding `quantization` asks for, trained on `vectors` (`dim` floats each).
    pub fn train(quantization: Quantization, vectors: &[f32], dim: usize) -> Self {
        match quantization {
            Quantization::None => Encoding::F32,
            Quantization::F16 => Encoding::F16,
            Quantization::Int8 => {
                let (lo, hi) = bounds(vectors, dim.max(1));
                let step = (hi - lo) / 255.0;
                if step.is_finite() && step > f32::MIN_POSITIVE {
                    Encoding::Int8 { lo, step }
                } else {
                    // (one value, or a range f32 cannot step through: a unit range around it)
                    let lo = if lo.is_finite() { lo - 0.5 } else { -0.5 };
                    Encoding::Int8 {
                        lo,
                        step: 1.0 / 255.0,
                    }
                }
            }
        }
    }

    pub fn quantization(self) -> Quantization {
        match self {
            Encoding::F32 => Quantization::None,
            Encoding::F16 => Quantization::F16,
            Encoding::Int8 { .. } => Quantization::Int8,
        }
    }

    /// Words one vector of `dim` dimensions takes.
    pub fn words(self, dim: usize) -> usize {
        self.quantization().bytes_per_vector(dim) / 4
    }

    /// Appends the encoding of `vector` ([`words`](Self::words) words) to `out`.
    pub fn encode(self, vector: &[f32], out: &mut Vec<u32>) {
        match self {
            Encoding::F32 => out.extend(vector.iter().map(|x| x.to_bits())),
            Encoding::F16 => out.extend(vector.chunks(2).map(|pair| {
                // (values beyond f16's range are clamped to it, never infinite)
                let half = |x: f32| half::f16::from_f32(x.clamp(-F16_MAX, F16_MAX)).to_bits();
                let lo = half(pair[0]) as u32;
                let hi = pair.get(1).map_or(0, |x| half(*x)) as u32;
                lo | hi << 16
            })),
            Encoding::Int8 { lo, step } => {
                let mut sum = 0u64;
                let code = |x: f32| {
                    let c = ((x - lo) / step).round();
                    // NaN becomes 0 (`as` saturates)
                    c.clamp(0.0, 255.0) as u8
                };
                out.extend(vector.chunks(4).map(|four| {
                    let mut word = [0u8; 4];
                    for (byte, &x) in word.iter_mut().zip(four) {
                        *byte = code(x);
                        sum += *byte as u64;
                    }
                    u32::from_le_bytes(word)
                }));
                let d = vector.len() as f32;
                let bias = step * lo * sum as f32 + d * lo * lo / 2.0;
                out.push(bias.to_bits());
            }
        }
    }

    /// Appends the values `words` stand for (`dim` floats) to `out`.
    pub fn decode(self, words: &[u32], dim: usize, out: &mut Vec<f32>) {
        let start = out.len();
        match self {
            Encoding::F32 => out.extend(words.iter().take(dim).map(|w| f32::from_bits(*w))),
            Encoding::F16 => out.extend(
                words
                    .iter()
                    .flat_map(|w| [*w as u16, (*w >> 16) as u16])
                    .take(dim)
                    .map(|h| half::f16::from_bits(h).to_f32()),
            ),
            Encoding::Int8 { lo, step } => out.extend(
                words
                    .iter()
                    .take(code_words(dim))
                    .flat_map(|w| w.to_le_bytes())
                    .take(dim)
                    .map(|c| lo + step * c as f32),
            ),
        }
        out.truncate(start + dim);
    }
}

fn code_words(dim: usize) -> usize {
    dim.div_ceil(4)
}

/// The int8 bounds of a sample of `vectors`: the [`TAIL`] and `1 − TAIL` quantiles of their
/// values.
fn bounds(vectors: &[f32], dim: usize) -> (f32, f32) {
    let n = vectors.len() / dim;
    if n == 0 {
        return (0.0, 0.0);
    }
    let every = n.div_ceil(TRAINING_VECTORS);
    let mut values: Vec<f32> = vectors
        .chunks_exact(dim)
        .step_by(every)
        .flatten()
        .copied()
        .filter(|x| x.is_finite())
        .collect();
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let at = |q: f64| ((values.len() - 1) as f64 * q).round() as usize;
    let (low, high) = (at(TAIL), at(1.0 - TAIL));
    let lo = *values.select_nth_unstable_by(low, f32::total_cmp).1;
    let hi = *values.select_nth_unstable_by(high, f32::total_cmp).1;
    (lo, hi)
}

/// A kernel over two encoded vectors of one length (in words).
pub type WordKernel = fn(&[u32], &[u32]) -> f32;

/// The kernels for encoded vectors this CPU runs.
pub struct WordKernels {
    /// Inner product of two f16 vectors.
    pub half_dot: WordKernel,
    /// Squared distance between two f16 vectors.
    pub half_l2: WordKernel,
    /// `Σ a·b` over the bytes of two int8 code blocks (no scale, no bias; summed in `u32`,
    /// which holds it for any dimension quiver accepts: 65,536 × 255²).
    pub byte_dot: WordKernel,
    /// `Σ (a − b)²` over the bytes of two int8 code blocks.
    pub byte_l2: WordKernel,
}

pub fn word_kernels() -> &'static WordKernels {
    static KERNELS: OnceLock<WordKernels> = OnceLock::new();
    KERNELS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
        {
            return WordKernels {
                half_dot: avx2::half_dot,
                half_l2: avx2::half_l2,
                byte_dot: avx2::byte_dot,
                byte_l2: avx2::byte_l2,
            };
        }
        WordKernels {
            half_dot: scalar::half_dot,
            half_l2: scalar::half_l2,
            byte_dot: scalar::byte_dot,
            byte_l2: scalar::byte_l2,
        }
    })
}

/// Portable reference kernels.
pub mod scalar {
    fn halves(words: &[u32]) -> impl Iterator<Item = f32> + '_ {
        words
            .iter()
            .flat_map(|w| [*w as u16, (*w >> 16) as u16])
            .map(|h| half::f16::from_bits(h).to_f32())
    }

    fn bytes(words: &[u32]) -> impl Iterator<Item = i64> + '_ {
        words.iter().flat_map(|w| w.to_le_bytes()).map(i64::from)
    }

    pub fn half_dot(a: &[u32], b: &[u32]) -> f32 {
        halves(a).zip(halves(b)).map(|(x, y)| x * y).sum()
    }

    pub fn half_l2(a: &[u32], b: &[u32]) -> f32 {
        halves(a)
            .zip(halves(b))
            .map(|(x, y)| (x - y) * (x - y))
            .sum()
    }

    pub fn byte_dot(a: &[u32], b: &[u32]) -> f32 {
        bytes(a).zip(bytes(b)).map(|(x, y)| x * y).sum::<i64>() as f32
    }

    pub fn byte_l2(a: &[u32], b: &[u32]) -> f32 {
        bytes(a)
            .zip(bytes(b))
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<i64>() as f32
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    pub fn half_dot(a: &[u32], b: &[u32]) -> f32 {
        // SAFETY: chosen only when the CPU has AVX2, FMA and F16C.
        unsafe { half_avx2::<false>(a, b) }
    }

    pub fn half_l2(a: &[u32], b: &[u32]) -> f32 {
        // SAFETY: as above.
        unsafe { half_avx2::<true>(a, b) }
    }

    pub fn byte_dot(a: &[u32], b: &[u32]) -> f32 {
        // SAFETY: chosen only when the CPU has AVX2.
        unsafe { bytes_avx2::<false>(a, b) }
    }

    pub fn byte_l2(a: &[u32], b: &[u32]) -> f32 {
        // SAFETY: as above.
        unsafe { bytes_avx2::<true>(a, b) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn half_avx2<const L2: bool>(a: &[u32], b: &[u32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        // 8 words = 16 halves per step.
        // SAFETY: the loads read words i..i + 8, and i + 8 <= n: inside both slices.
        unsafe {
            while i + 8 <= n {
                let a0 = _mm256_cvtph_ps(_mm_loadu_si128(pa.add(i).cast()));
                let b0 = _mm256_cvtph_ps(_mm_loadu_si128(pb.add(i).cast()));
                let a1 = _mm256_cvtph_ps(_mm_loadu_si128(pa.add(i + 4).cast()));
                let b1 = _mm256_cvtph_ps(_mm_loadu_si128(pb.add(i + 4).cast()));
                if L2 {
                    let d0 = _mm256_sub_ps(a0, b0);
                    let d1 = _mm256_sub_ps(a1, b1);
                    acc0 = _mm256_fmadd_ps(d0, d0, acc0);
                    acc1 = _mm256_fmadd_ps(d1, d1, acc1);
                } else {
                    acc0 = _mm256_fmadd_ps(a0, b0, acc0);
                    acc1 = _mm256_fmadd_ps(a1, b1, acc1);
                }
                i += 8;
            }
        }
        // SAFETY: register arithmetic only.
        let mut sum = unsafe { hsum_ps(_mm256_add_ps(acc0, acc1)) };
        let tail = if L2 {
            super::scalar::half_l2(&a[i..n], &b[i..n])
        } else {
            super::scalar::half_dot(&a[i..n], &b[i..n])
        };
        sum += tail;
        sum
    }

    /// The sum, in `u32` lanes: each term is at most 255², so a lane (`n / 8` steps of at most
    /// 2 · 255²) and the total (at most 65,536 · 255² < 2³²) fit.
    #[target_feature(enable = "avx2")]
    unsafe fn bytes_avx2<const L2: bool>(a: &[u32], b: &[u32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_si256();
        let mut acc1 = _mm256_setzero_si256();
        let mut i = 0;
        // 8 words = 32 bytes per step, widened to two vectors of 16 i16.
        // SAFETY: the loads read words i..i + 8, and i + 8 <= n: inside both slices.
        unsafe {
            while i + 8 <= n {
                let a0 = _mm256_cvtepu8_epi16(_mm_loadu_si128(pa.add(i).cast()));
                let b0 = _mm256_cvtepu8_epi16(_mm_loadu_si128(pb.add(i).cast()));
                let a1 = _mm256_cvtepu8_epi16(_mm_loadu_si128(pa.add(i + 4).cast()));
                let b1 = _mm256_cvtepu8_epi16(_mm_loadu_si128(pb.add(i + 4).cast()));
                if L2 {
                    let d0 = _mm256_sub_epi16(a0, b0);
                    let d1 = _mm256_sub_epi16(a1, b1);
                    acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(d0, d0));
                    acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(d1, d1));
                } else {
                    acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(a0, b0));
                    acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(a1, b1));
                }
                i += 8;
            }
        }
        let acc = _mm256_add_epi32(acc0, acc1);
        let half = _mm_add_epi32(
            _mm256_castsi256_si128(acc),
            _mm256_extracti128_si256(acc, 1),
        );
        let half = _mm_add_epi32(half, _mm_shuffle_epi32(half, 0b01_00_11_10));
        let half = _mm_add_epi32(half, _mm_shuffle_epi32(half, 0b10_11_00_01));
        // (the lanes' sums wrap as i32 but never as u32)
        let sum = _mm_cvtsi128_si32(half) as u32;
        let tail = if L2 {
            super::scalar::byte_l2(&a[i..n], &b[i..n])
        } else {
            super::scalar::byte_dot(&a[i..n], &b[i..n])
        };
        sum as f32 + tail
    }

    #[target_feature(enable = "avx2")]
    unsafe fn hsum_ps(v: __m256) -> f32 {
        let half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let half = _mm_add_ps(half, _mm_movehl_ps(half, half));
        let half = _mm_add_ss(half, _mm_shuffle_ps(half, half, 0b01));
        _mm_cvtss_f32(half)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..n * dim)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn names_parse_and_print() {
        for q in [Quantization::None, Quantization::F16, Quantization::Int8] {
            assert_eq!(q.as_str().parse::<Quantization>(), Ok(q));
        }
        assert!("int4".parse::<Quantization>().unwrap_err().contains("int8"));
    }

    #[test]
    fn every_encoding_round_trips_within_its_precision() {
        for dim in [1, 3, 4, 7, 16, 33, 128] {
            let data = vectors(50, dim, dim as u64);
            for q in [Quantization::None, Quantization::F16, Quantization::Int8] {
                let encoding = Encoding::train(q, &data, dim);
                // what a value comes back as: itself (f32), rounded to 11 bits (f16), or clamped
                // to the bounds and rounded to the nearest of 256 steps (int8)
                let (expected, tolerance): (Box<dyn Fn(f32) -> f32>, f32) = match encoding {
                    Encoding::F32 => (Box::new(|x| x), 0.0),
                    Encoding::F16 => (Box::new(|x| x), 1e-3),
                    Encoding::Int8 { lo, step } => (
                        Box::new(move |x: f32| x.clamp(lo, lo + 255.0 * step)),
                        step * 0.501,
                    ),
                };
                for v in data.chunks_exact(dim) {
                    let mut words = Vec::new();
                    encoding.encode(v, &mut words);
                    assert_eq!(words.len(), encoding.words(dim));
                    let mut back = Vec::new();
                    encoding.decode(&words, dim, &mut back);
                    assert_eq!(back.len(), dim);
                    for (x, y) in v.iter().zip(&back) {
                        assert!((expected(*x) - y).abs() <= tolerance, "{q:?} {x} {y}");
                    }
                }
            }
        }
    }

    #[test]
    fn int8_bounds_leave_out_a_stray_value_and_clamp_it() {
        let mut data = vectors(10_000, 10, 1);
        data[5] = 1e6;
        let Encoding::Int8 { lo, step } = Encoding::train(Quantization::Int8, &data, 10) else {
            panic!("int8");
        };
        assert!(lo > -1.01 && lo < -0.9, "{lo}");
        assert!(lo + 255.0 * step < 1.01, "{step}");
        let mut words = Vec::new();
        Encoding::Int8 { lo, step }.encode(&[1e6, f32::NAN, -1e6, 0.0], &mut words);
        assert_eq!(words[0].to_le_bytes()[..3], [255, 0, 0]);
    }

    #[test]
    fn one_value_ranges_and_huge_values_still_encode() {
        let same = vec![0.25f32; 64];
        let encoding = Encoding::train(Quantization::Int8, &same, 8);
        let Encoding::Int8 { step, .. } = encoding else {
            panic!("int8");
        };
        assert!(step > 0.0 && step.is_finite());
        let (mut words, mut back) = (Vec::new(), Vec::new());
        encoding.encode(&same[..8], &mut words);
        encoding.decode(&words, 8, &mut back);
        assert!(back.iter().all(|x| (x - 0.25).abs() <= step));
        // beyond f16's range: clamped, finite
        let (mut words, mut back) = (Vec::new(), Vec::new());
        Encoding::F16.encode(&[1e9, -1e9], &mut words);
        Encoding::F16.decode(&words, 2, &mut back);
        assert_eq!(back, vec![65_504.0, -65_504.0]);
    }

    #[test]
    fn byte_sums_hold_the_largest_dimension() {
        let k = word_kernels();
        // 65,536 dimensions of 255 against 0: 65,536 · 255² overflows i32, not u32
        let (full, zero) = (vec![u32::MAX; 16_384], vec![0u32; 16_384]);
        let expected = 65_536.0 * 255.0 * 255.0;
        assert_eq!((k.byte_l2)(&full, &zero), expected);
        assert_eq!((k.byte_dot)(&full, &full), expected);
        assert_eq!(scalar::byte_l2(&full, &zero), expected);
    }

    #[test]
    fn dispatched_kernels_match_the_scalar_ones() {
        let k = word_kernels();
        for words in [0, 1, 5, 8, 9, 17, 64, 97] {
            let a: Vec<u32> = (0..words as u32)
                .map(|i| i.wrapping_mul(2654435761))
                .collect();
            let b: Vec<u32> = (0..words as u32)
                .map(|i| i.wrapping_mul(40503) ^ 0x5a5a)
                .collect();
            assert_eq!((k.byte_dot)(&a, &b), scalar::byte_dot(&a, &b));
            assert_eq!((k.byte_l2)(&a, &b), scalar::byte_l2(&a, &b));
            // halves from small floats, so sums stay finite
            let halves = |seed: u64| -> Vec<u32> {
                let mut out = Vec::new();
                Encoding::F16.encode(&vectors(1, words * 2, seed), &mut out);
                out
            };
            let (ha, hb) = (halves(1), halves(2));
            let close = |x: f32, y: f32| (x - y).abs() <= 1e-4 * (1.0 + x.abs());
            assert!(close((k.half_dot)(&ha, &hb), scalar::half_dot(&ha, &hb)));
            assert!(close((k.half_l2)(&ha, &hb), scalar::half_l2(&ha, &hb)));
        }
    }

    #[test]
    fn int8_distances_follow_the_true_ones() {
        let dim = 64;
        let data = vectors(200, dim, 9);
        let encoding = Encoding::train(Quantization::Int8, &data, dim);
        let Encoding::Int8 { step, .. } = encoding else {
            panic!("int8");
        };
        let k = word_kernels();
        let words = encoding.words(dim);
        let mut codes = Vec::new();
        for v in data.chunks_exact(dim) {
            encoding.encode(v, &mut codes);
        }
        let (a, b) = (&data[..dim], &data[dim..2 * dim]);
        let (ca, cb) = (&codes[..words], &codes[words..2 * words]);
        let bias = |c: &[u32]| f32::from_bits(c[words - 1]);
        let l2 = step * step * (k.byte_l2)(&ca[..words - 1], &cb[..words - 1]);
        let dot =
            step * step * (k.byte_dot)(&ca[..words - 1], &cb[..words - 1]) + bias(ca) + bias(cb);
        let true_l2 = crate::distance::scalar::l2_squared(a, b);
        let true_dot = crate::distance::scalar::dot(a, b);
        assert!((l2 - true_l2).abs() < 0.05 * true_l2, "{l2} {true_l2}");
        assert!((dot - true_dot).abs() < 0.1, "{dot} {true_dot}");
    }
}
