//! Vectorised `exp` for the log-softmax normaliser.

/// Σ exp(x − max) over `row`, summed in f64 (the log-softmax normaliser over a vocabulary:
/// 60 000 exponentials per row per step). With AVX2/FMA eight at a time, Cephes-style (within
/// 2 ulp of libm's expf); otherwise libm.
pub(crate) fn sum_exp_shifted(row: &[f32], max: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if super::gemm_f32::avx2_fma() {
        // SAFETY: avx2 and fma were detected at run time.
        return unsafe { exp_avx::sum_exp_shifted(row, max) };
    }
    row.iter().map(|&x| (x - max).exp() as f64).sum()
}

#[cfg(target_arch = "x86_64")]
mod exp_avx {
    use std::arch::x86_64::*;

    /// exp of eight lanes: x = n·ln2 + r, exp(r) by a degree-7 polynomial (Cephes expf).
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
        // ln 2 in two parts so r keeps its low bits.
        let r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut y = _mm256_set1_ps(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ] {
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
            let fast = super::super::sum_exp_shifted(&row, max);
            assert!(
                ((fast - scalar) / scalar).abs() < 1e-6,
                "{fast} vs {scalar}"
            );
        }
    }
}
