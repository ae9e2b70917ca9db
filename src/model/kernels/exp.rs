//! Vectorised `exp`: for the log-softmax normaliser, the attention softmax, and (in plain Rust
//! that the compiler vectorises) the int8 epilogue's SiLU and GELU.

/// Σ exp(x − max) over `row`, summed in f64 (the log-softmax normaliser over a vocabulary:
/// 60 000 exponentials per row per step). With AVX2/FMA eight at a time, Cephes-style (within
/// 2 ulp of libm's expf); otherwise libm.
pub(crate) fn sum_exp_shifted(row: &[f32], max: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if wide_exp() {
        // SAFETY: `wide_exp` holds only on a CPU with AVX-512F, AVX2 and FMA.
        return unsafe { exp_avx512::sum_exp_shifted(row, max) };
    }
    #[cfg(target_arch = "x86_64")]
    if super::gemm_f32::avx2_fma() {
        // SAFETY: avx2 and fma were detected at run time.
        return unsafe { exp_avx::sum_exp_shifted(row, max) };
    }
    row.iter().map(|&x| (x - max).exp() as f64).sum()
}

/// Whether the normaliser runs sixteen lanes at a time: the f32 kernels' widest family (so
/// `TARJAMA_KERNEL_ISA` caps it too) is AVX-512 (checked once). The same exponentials as the
/// AVX2 build, lane for lane; the f64 sum adds them in another order (1e-6 relative, tested).
#[cfg(target_arch = "x86_64")]
fn wide_exp() -> bool {
    static WIDE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WIDE.get_or_init(|| super::F32Path::detect().is_some_and(|p| p.is_avx512()))
}

/// `row[i] = exp(row[i] − max)` in place; returns the sum (f32, in lanes of eight when
/// `wide`). The softmax numerator of attention. `wide` (AVX2/FMA): the vectorised exp, within
/// 2 ulp of libm's, which the portable build uses. Either way, appending −∞ to a row changes
/// neither its values nor its sum (batched rows padded with masked keys equal rows alone).
pub(crate) fn exp_shifted_in_place(row: &mut [f32], max: f32, wide: Option<super::F32Path>) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if let Some(path) = wide {
        // SAFETY: an F32Path exists only on a CPU with AVX2 and FMA; an AVX-512 one also
        // has AVX-512F.
        return unsafe {
            if path.is_avx512() {
                exp_avx512::exp_shifted_in_place(row, max)
            } else {
                exp_avx::exp_shifted_in_place(row, max)
            }
        };
    }
    let _ = wide;
    let mut sum = 0f32;
    for x in row.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    sum
}

/// ln 2 in two parts: n·LN2_HI is exact for the n an f32 exp meets, so r keeps its low bits.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// Cephes expf's polynomial for exp(r) on |r| ≤ ln2/2 (highest degree first; the whole is
/// p(r)·r² + r + 1).
const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// `exp(x)` in plain Rust that vectorises (no libm call, no branch): Cephes' reduction
/// x = n·ln2 + r with ln 2 in two parts (n·LN2_HI is exact), its degree-7 polynomial, and
/// 2ⁿ built in the exponent bits. Without FMA, so every build (scalar, AVX2) gives the same
/// bits. Within 2 ulp of libm's over [−87, 88]; below −87.3 a tiny normal, above 88 about
/// 1.7e38 (the callers divide by it, never overflow it).
#[inline(always)]
pub(crate) fn exp_poly(x: f32) -> f32 {
    // 1.5·2²³: adding it rounds to an integer, which then sits in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + MAGIC;
    let n = shifted - MAGIC;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = EXP_POLY[0];
    for &c in &EXP_POLY[1..] {
        p = p * r + c;
    }
    let y = p * (r * r) + r + 1.0;
    let n = shifted.to_bits() as i32 - MAGIC.to_bits() as i32;
    y * f32::from_bits(((n + 127) << 23) as u32)
}

/// SiLU, v / (1 + e^−v), on [`exp_poly`].
#[inline(always)]
pub(crate) fn silu(v: f32) -> f32 {
    v / (1.0 + exp_poly(-v))
}

/// GELU with erf, v/2 · (1 + erf(v/√2)), erf by Abramowitz & Stegun 7.1.26 (absolute error
/// 1.5e-7) on [`exp_poly`], as PyTorch's vectorised CPU kernel computes it. For v < 0 the
/// factor 1 + erf is the series itself (erfc of |x|), with no cancellation. libm's scalar
/// `erff` was 60 % of an int8 fc1 with GELU (600 × 1024 × 4096 took 69 ms, 28 without it).
#[inline(always)]
pub(crate) fn gelu(v: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152,
        1.061_405_4,
    ];
    let x = (v * std::f32::consts::FRAC_1_SQRT_2).abs();
    let t = 1.0 / (1.0 + P * x);
    let mut poly = A[4];
    for a in [A[3], A[2], A[1], A[0]] {
        poly = poly * t + a;
    }
    let erfc = poly * t * exp_poly(-(x * x));
    let one_plus_erf = if v >= 0.0 { 2.0 - erfc } else { erfc };
    0.5 * v * one_plus_erf
}

/// The normaliser sixteen lanes at a time: over a 62 834-word vocabulary it was 5–9 % of a
/// batched decoding step in the AVX2 build.
#[cfg(target_arch = "x86_64")]
mod exp_avx512 {
    use super::{EXP_POLY, LN2_HI, LN2_LO};
    use std::arch::x86_64::*;

    /// [`super::exp_avx::exp8`] on sixteen lanes: the same operations, so the same values.
    ///
    /// # Safety
    /// The CPU runs AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn exp16(x: __m512) -> __m512 {
        let x = _mm512_min_ps(
            _mm512_max_ps(x, _mm512_set1_ps(-88.376_26)),
            _mm512_set1_ps(88.376_26),
        );
        let fx =
            _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(_mm512_fmadd_ps(
                x,
                _mm512_set1_ps(std::f32::consts::LOG2_E),
                _mm512_set1_ps(0.5),
            ));
        let r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(LN2_LO), r);
        let mut y = _mm512_set1_ps(EXP_POLY[0]);
        for &c in &EXP_POLY[1..] {
            y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(c));
        }
        let y = _mm512_fmadd_ps(
            y,
            _mm512_mul_ps(r, r),
            _mm512_add_ps(r, _mm512_set1_ps(1.0)),
        );
        let n = _mm512_cvtps_epi32(fx);
        let pow2n = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
            n,
            _mm512_set1_epi32(127),
        )));
        _mm512_mul_ps(y, pow2n)
    }

    /// # Safety
    /// The CPU runs AVX-512F, AVX2 and FMA.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn sum_exp_shifted(row: &[f32], max: f32) -> f64 {
        let m = _mm512_set1_ps(max);
        let (mut lo, mut hi) = (_mm512_setzero_pd(), _mm512_setzero_pd());
        let chunks = row.chunks_exact(16);
        let tail = chunks.remainder();
        for c in chunks {
            let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(c.as_ptr()), m));
            let upper = _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(e));
            lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
            hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_castpd_ps(upper)));
        }
        let mut lanes = [0f64; 8];
        _mm512_storeu_pd(lanes.as_mut_ptr(), _mm512_add_pd(lo, hi));
        lanes.iter().sum::<f64>() + super::exp_avx::sum_exp_shifted(tail, max)
    }

    /// [`super::exp_avx::exp_shifted_in_place`] sixteen lanes at a time, with the same bits:
    /// each half of a vector is added to the eight running sums in turn, as two chunks of
    /// eight are there (the encoder's attention softmax over a 600-token article spent 5 % of
    /// the summary job in the AVX2 one).
    ///
    /// # Safety
    /// The CPU runs AVX-512F, AVX2 and FMA.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn exp_shifted_in_place(row: &mut [f32], max: f32) -> f32 {
        let m = _mm512_set1_ps(max);
        let mut acc = _mm256_setzero_ps();
        let mut chunks = row.chunks_exact_mut(16);
        for c in &mut chunks {
            let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(c.as_ptr()), m));
            _mm512_storeu_ps(c.as_mut_ptr(), e);
            acc = _mm256_add_ps(acc, _mm512_castps512_ps256(e));
            let upper = _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(e));
            acc = _mm256_add_ps(acc, _mm256_castpd_ps(upper));
        }
        // The rest (fewer than 16) as the AVX2 build ends: a chunk of eight if any, then the
        // padded tail, into the same running sums.
        super::exp_avx::exp_shifted_from(chunks.into_remainder(), max, acc)
    }
}

#[cfg(target_arch = "x86_64")]
mod exp_avx {
    use super::{EXP_POLY, LN2_HI, LN2_LO};
    use std::arch::x86_64::*;

    /// exp of eight lanes: x = n·ln2 + r, exp(r) by a degree-7 polynomial (Cephes expf).
    ///
    /// # Safety
    /// The CPU runs AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn exp8(x: __m256) -> __m256 {
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(-88.376_26)),
            _mm256_set1_ps(88.376_26),
        );
        let fx = _mm256_floor_ps(_mm256_fmadd_ps(
            x,
            _mm256_set1_ps(std::f32::consts::LOG2_E),
            _mm256_set1_ps(0.5),
        ));
        let r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(LN2_LO), r);
        let mut y = _mm256_set1_ps(EXP_POLY[0]);
        for &c in &EXP_POLY[1..] {
            y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(c));
        }
        let y = _mm256_fmadd_ps(
            y,
            _mm256_mul_ps(r, r),
            _mm256_add_ps(r, _mm256_set1_ps(1.0)),
        );
        let n = _mm256_cvtps_epi32(fx);
        let pow2n = _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_add_epi32(n, _mm256_set1_epi32(127)),
            23,
        ));
        _mm256_mul_ps(y, pow2n)
    }

    /// # Safety
    /// The CPU runs AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sum_exp_shifted(row: &[f32], max: f32) -> f64 {
        let m = _mm256_set1_ps(max);
        let (mut lo, mut hi) = (_mm256_setzero_pd(), _mm256_setzero_pd());
        let chunks = row.chunks_exact(8);
        let tail: f64 = chunks
            .remainder()
            .iter()
            .map(|&x| (x - max).exp() as f64)
            .sum();
        for c in chunks {
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), m));
            lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
            hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
        }
        let mut lanes = [0f64; 4];
        _mm256_storeu_pd(lanes.as_mut_ptr(), _mm256_add_pd(lo, hi));
        lanes.iter().sum::<f64>() + tail
    }

    /// # Safety
    /// The CPU runs AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_shifted_in_place(row: &mut [f32], max: f32) -> f32 {
        exp_shifted_from(row, max, _mm256_setzero_ps())
    }

    /// [`exp_shifted_in_place`] continuing the eight running sums `acc` (the AVX-512 build
    /// hands over what is left after its 16-wide chunks, so both sum the same way).
    ///
    /// # Safety
    /// The CPU runs AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn exp_shifted_from(row: &mut [f32], max: f32, mut acc: __m256) -> f32 {
        let m = _mm256_set1_ps(max);
        let mut chunks = row.chunks_exact_mut(8);
        for c in &mut chunks {
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), m));
            _mm256_storeu_ps(c.as_mut_ptr(), e);
            acc = _mm256_add_ps(acc, e);
        }
        // The tail as a chunk padded with −∞ (exp 0): each element gets the same exp and
        // lane whatever the row's length, so a row padded with masked keys sums the same
        // bits as the row alone (int8 activations downstream amplify any last-bit change).
        let tail = chunks.into_remainder();
        let mut last = [f32::NEG_INFINITY; 8];
        last[..tail.len()].copy_from_slice(tail);
        let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(last.as_ptr()), m));
        _mm256_storeu_ps(last.as_mut_ptr(), e);
        tail.copy_from_slice(&last[..tail.len()]);
        acc = _mm256_add_ps(acc, e);
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        lanes.iter().sum()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn exp8_is_within_two_ulp_of_libm() {
            if !super::super::super::gemm_f32::avx2_fma() {
                return;
            }
            let mut worst = 0f32;
            let mut x = -87.0f32;
            while x <= 0.0 {
                let xs = [
                    x,
                    x * 0.5,
                    x * 0.25,
                    x * 0.125,
                    x * 1e-3,
                    x * 1e-6,
                    -x * 0.9,
                    0.0,
                ];
                let mut got = [0f32; 8];
                unsafe { _mm256_storeu_ps(got.as_mut_ptr(), exp8(_mm256_loadu_ps(xs.as_ptr()))) };
                for (g, v) in got.iter().zip(xs) {
                    let want = v.exp();
                    worst = worst.max(((g - want) / want).abs());
                }
                x += 0.013;
            }
            assert!(worst < 2.5e-7, "relative error {worst}");
            let mut got = [1f32; 8];
            let xs = [f32::NEG_INFINITY, -100.0, -88.0, -87.5, 0.0, 0.0, 0.0, 0.0];
            unsafe { _mm256_storeu_ps(got.as_mut_ptr(), exp8(_mm256_loadu_ps(xs.as_ptr()))) };
            // Below about −87.3 the result flushes to zero (libm gives denormals < 1.2e-38,
            // nothing next to the row's maximum, whose exp is 1).
            assert_eq!(got[0], 0.0);
            assert!(
                got[1..4].iter().all(|&g| (0.0..1.2e-38).contains(&g)),
                "{got:?}"
            );
            assert_eq!(got[4], 1.0);
        }

        #[test]
        fn sum_matches_scalar() {
            let row: Vec<f32> = (0..62_837)
                .map(|i| ((i * 7919) % 1000) as f32 * 0.037 - 20.0)
                .collect();
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let scalar: f64 = row.iter().map(|&x| (x - max).exp() as f64).sum();
            let mut paths = vec![("dispatched", super::super::sum_exp_shifted(&row, max))];
            if super::super::super::gemm_f32::avx2_fma() {
                // SAFETY: AVX2 and FMA detected.
                paths.push(("avx2", unsafe { sum_exp_shifted(&row, max) }));
            }
            if super::super::wide_exp() {
                // SAFETY: `wide_exp` implies AVX-512F, AVX2 and FMA.
                let wide = unsafe { super::super::exp_avx512::sum_exp_shifted(&row, max) };
                paths.push(("avx512", wide));
            }
            for (name, fast) in paths {
                assert!(
                    ((fast - scalar) / scalar).abs() < 1e-6,
                    "{name}: {fast} vs {scalar}"
                );
            }
        }

        /// The AVX-512 softmax numerator gives the AVX2 one's values and sum, bit for bit,
        /// at every tail length.
        #[test]
        fn exp_shifted_in_place_avx512_equals_avx2() {
            if !super::super::wide_exp() {
                return;
            }
            for len in (0..70).chain([600]) {
                let row: Vec<f32> = (0..len)
                    .map(|i| (i as u64 * 2_654_435_761 % 1009) as f32 * 0.0131 - 7.0)
                    .collect();
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let (mut a, mut b) = (row.clone(), row.clone());
                // SAFETY: `wide_exp` implies AVX-512F, AVX2 and FMA.
                let (sa, sb) = unsafe {
                    (
                        super::super::exp_avx512::exp_shifted_in_place(&mut a, max),
                        exp_shifted_in_place(&mut b, max),
                    )
                };
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a), bits(&b), "len {len}");
                assert_eq!(sa.to_bits(), sb.to_bits(), "len {len}");
            }
        }

        /// The AVX-512 exponentials are the AVX2 ones, lane for lane.
        #[test]
        fn exp16_equals_exp8() {
            use super::super::exp_avx512::exp16;
            if !super::super::wide_exp() {
                return;
            }
            let xs: Vec<f32> = (0..4096).map(|i| i as f32 * 0.047 - 100.0).collect();
            for c in xs.chunks_exact(16) {
                let (mut a, mut b) = ([0f32; 16], [0f32; 16]);
                // SAFETY: `wide_exp` implies AVX-512F, AVX2 and FMA.
                unsafe {
                    _mm512_storeu_ps(a.as_mut_ptr(), exp16(_mm512_loadu_ps(c.as_ptr())));
                    for h in 0..2 {
                        let x = _mm256_loadu_ps(c[8 * h..].as_ptr());
                        _mm256_storeu_ps(b[8 * h..].as_mut_ptr(), exp8(x));
                    }
                }
                let bits = |v: &[f32; 16]| v.map(f32::to_bits);
                assert_eq!(bits(&a), bits(&b), "{c:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row and the same row padded with −∞ (masked keys) give the same values and the same
    /// sum, bit for bit, on every path; and the values are the exponentials.
    #[test]
    fn padding_with_minus_infinity_changes_nothing() {
        let paths = std::iter::once(None).chain(super::super::F32Path::all().into_iter().map(Some));
        for wide in paths {
            for len in 1..40 {
                let row: Vec<f32> = (0..len).map(|i| (i * 37 % 11) as f32 * 0.7 - 3.0).collect();
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut alone = row.clone();
                let sum = exp_shifted_in_place(&mut alone, max, wide);
                for pad in [1, 5, 8, 13] {
                    let mut padded = row.clone();
                    padded.extend(std::iter::repeat_n(f32::NEG_INFINITY, pad));
                    let padded_sum = exp_shifted_in_place(&mut padded, max, wide);
                    assert_eq!(padded_sum.to_bits(), sum.to_bits(), "len {len} pad {pad}");
                    assert_eq!(&padded[..len], &alone[..]);
                    assert!(padded[len..].iter().all(|&x| x == 0.0));
                }
                for (&e, &x) in alone.iter().zip(&row) {
                    let want = (x - max).exp();
                    assert!(((e - want) / want).abs() < 3e-7, "{e} vs {want}");
                }
                let want: f32 = row.iter().map(|&x| (x - max).exp()).sum();
                assert!(((sum - want) / want).abs() < 1e-6);
            }
        }
    }

    /// The plain-Rust exp, SiLU and GELU against f64 references.
    #[test]
    fn plain_exp_silu_and_gelu_are_accurate() {
        let mut worst = [0f64; 3];
        let mut x = -87.0f32;
        while x <= 88.0 {
            let want = (x as f64).exp();
            worst[0] = worst[0].max(((exp_poly(x) as f64 - want) / want).abs());
            x += 0.0037;
        }
        let mut v = -12.0f32;
        while v <= 12.0 {
            let vd = v as f64;
            let silu_want = vd / (1.0 + (-vd).exp());
            worst[1] =
                worst[1].max((silu(v) as f64 - silu_want).abs() / silu_want.abs().max(1e-30));
            let gelu_want = 0.5 * vd * (1.0 + libm::erf(vd / std::f64::consts::SQRT_2));
            worst[2] = worst[2].max((gelu(v) as f64 - gelu_want).abs() / vd.abs().max(1.0));
            v += 0.00071;
        }
        assert!(worst[0] < 2.5e-7, "exp relative error {}", worst[0]);
        assert!(worst[1] < 5e-7, "silu relative error {}", worst[1]);
        assert!(worst[2] < 2e-7, "gelu error {}", worst[2]);
        assert_eq!(exp_poly(0.0), 1.0);
        assert_eq!(gelu(0.0), 0.0);
        assert_eq!(silu(0.0), 0.0);
        assert!(exp_poly(-1000.0) < 1.3e-38 && exp_poly(-1000.0) >= 0.0);
        assert!(exp_poly(1000.0).is_finite());
        assert!(gelu(-1000.0).abs() < 1e-30);
        assert_eq!(gelu(1000.0), 1000.0);
        assert!(silu(-1000.0).abs() < 1e-30);
        assert_eq!(silu(1000.0), 1000.0);
    }
}
