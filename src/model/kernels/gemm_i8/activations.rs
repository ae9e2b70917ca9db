//! Activations quantised per row to u8 with a zero point: `x ≈ (u − zero) · scale`.
//!
//! Why not symmetric int8 (as CTranslate2 quantises activations): a symmetric row spends half
//! its 255 levels on values that may not occur. After SiLU (≥ −0.28) or GELU (≥ −0.17) almost
//! the whole range is positive, so fc2's input gets nearly twice the resolution here; rows
//! that are symmetric get exactly the symmetric scheme (zero 128, scale `max|x| / 127`, the
//! same bits). The step is never coarser than the symmetric one (tested). The kernels need no
//! change: they took symmetric int8 as `x + 128` in u8 and cancel `128 · Σw` per column, so
//! given the levels `u` they sum `Σ (u − 128) · w`; the epilogue adds the row's
//! `(128 − zero) · Σw` exactly in i32.
//!
//! Measured against symmetric activations (int8 vs f32 of the same engine, 240 inputs, AMX):
//! the opus-mt-shaped bench model went from 179 to 189 identical greedy outputs, max |Δ logit|
//! 0.338 → 0.298, top-1 agreement 0.897 → 0.917; the tiny Marian's max |Δ| 0.145 → 0.115. A
//! transformers simulation of both schemes gave 7–12 % lower logit RMS error.

use super::{min_max, round_clamped};

/// `x ≈ (u − zero) · scale` for one row, `u` and `zero` in [0, 255].
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct RowScale {
    pub(crate) scale: f32,
    pub(crate) zero: i32,
}

impl RowScale {
    /// An all-zero row's: every value at level 128, scale 0.
    pub(crate) const ZERO_ROW: Self = Self {
        scale: 0.0,
        zero: 128,
    };

    /// What the kernels' sums `Σ (u − 128) · w` lack of `Σ (u − zero) · w`, per unit of the
    /// column's `Σ w`.
    pub(crate) fn correction(self) -> i32 {
        128 - self.zero
    }
}

/// Quantises `v` into `out[..v.len()]`. A zero row gets scale 0 (and u = 128), a row with an
/// infinity scale NaN (so its outputs are NaN, as f32 would give); NaN values count as 0.
#[inline(always)]
pub(crate) fn quantize_row(v: &[f32], out: &mut [u8]) -> RowScale {
    let (lo, hi) = min_max(v);
    if !(lo.is_finite() && hi.is_finite()) || (lo == 0.0 && hi == 0.0) {
        out[..v.len()].iter_mut().for_each(|o| *o = 128);
        let scale = if lo.is_finite() && hi.is_finite() {
            0.0
        } else {
            f32::NAN
        };
        return RowScale {
            scale,
            ..RowScale::ZERO_ROW
        };
    }
    let zero = zero_point(lo, hi);
    // The side that needs the larger step sets it; the other then fits within its levels.
    let (up, down) = ((255 - zero) as f32, zero as f32);
    let (scale, inv) = if hi > 0.0 && (lo == 0.0 || hi / up >= -lo / down) {
        (hi / up, up / hi)
    } else {
        (-lo / down, down / -lo)
    };
    let (below, above) = (-down, up);
    for (o, &x) in out.iter_mut().zip(v) {
        *o = (round_clamped(x * inv, below, above) + zero) as u8;
    }
    RowScale { scale, zero }
}

/// The zero point for a row spanning [lo, hi] (lo ≤ 0 ≤ hi, not both 0): nearest to where 0
/// falls on 255 levels, and kept off the ends a side with values needs (at least one level
/// each way).
fn zero_point(lo: f32, hi: f32) -> i32 {
    let z = (255.0 * -lo / (hi - lo)).round_ties_even() as i32;
    let z = if lo < 0.0 { z.max(1) } else { z };
    if hi > 0.0 {
        z.min(254)
    } else {
        z
    }
}

#[cfg(test)]
mod tests {
    use super::{quantize_row, RowScale};

    fn rows() -> Vec<Vec<f32>> {
        let mut rng = fastrand::Rng::with_seed(29);
        let mut rows: Vec<Vec<f32>> = Vec::new();
        for len in [1, 7, 16, 33, 512] {
            let shapes: [fn(f32) -> f32; 6] = [
                |x| x,
                // After SiLU: mostly positive, a little below zero.
                |x| 4.0 * x / (1.0 + (-4.0 * x).exp()),
                |x| x.abs() * 3.0,
                |x| -x.abs() * 0.01,
                |x| if x > 0.9 { 5.0 } else { -1e-4 },
                |x| if x > 0.9 { -5.0 } else { 1e-4 },
            ];
            for shape in shapes {
                rows.push((0..len).map(|_| shape(rng.f32() * 2.0 - 1.0)).collect());
            }
        }
        rows.push(vec![-2.0, 1.0, 2.0, 0.0]);
        rows.push(vec![0.0, 0.0, 3.0]);
        rows.push(vec![1e-30, -1e-30, 0.0]);
        rows
    }

    /// Every value is within half a step, 0 is exact, the levels stay in [0, 255], and the
    /// step is never coarser than symmetric int8's `max|x| / 127`.
    #[test]
    fn rows_quantise_within_half_a_step() {
        for row in rows() {
            let mut u = vec![0u8; row.len()];
            let RowScale { scale, zero } = quantize_row(&row, &mut u);
            let amax = row.iter().fold(0f32, |a, &x| a.max(x.abs()));
            assert!(
                scale <= amax / 127.0 * (1.0 + 1e-6),
                "{scale} vs {amax}: {row:?}"
            );
            assert!((0..=255).contains(&zero));
            for (&x, &q) in row.iter().zip(&u) {
                let back = (q as i32 - zero) as f32 * scale;
                assert!(
                    (back - x).abs() <= scale * 0.5 * (1.0 + 1e-5),
                    "{x} -> {q} ({back}), scale {scale} zero {zero}"
                );
                if x == 0.0 {
                    assert_eq!(q as i32, zero);
                }
            }
        }
    }

    /// A symmetric row gets symmetric int8 exactly: zero 128, scale max|x| / 127, and the
    /// levels `round(x · 127 / max|x|) + 128`.
    #[test]
    fn symmetric_rows_get_the_symmetric_scheme() {
        let mut rng = fastrand::Rng::with_seed(31);
        let mut row: Vec<f32> = (0..300).map(|_| rng.f32() * 6.0 - 3.0).collect();
        row[7] = 3.5;
        row[90] = -3.5;
        let mut u = vec![0u8; row.len()];
        let s = quantize_row(&row, &mut u);
        assert_eq!(
            s,
            RowScale {
                scale: 3.5 / 127.0,
                zero: 128
            }
        );
        for (&x, &q) in row.iter().zip(&u) {
            let want = (x * (127.0 / 3.5)).round_ties_even() as i32 + 128;
            assert_eq!(q as i32, want, "{x}");
        }
    }

    #[test]
    fn zero_and_non_finite_rows() {
        let mut u = vec![7u8; 5];
        assert_eq!(quantize_row(&[0.0; 5], &mut u).scale, 0.0);
        assert_eq!(u, [128; 5]);
        let s = quantize_row(&[1.0, f32::INFINITY, 0.0, 1.0, 2.0], &mut u);
        assert!(s.scale.is_nan());
        let s = quantize_row(&[1.0, f32::NAN, -1.0, 0.0, 0.5], &mut u);
        assert_eq!(u[1] as i32, s.zero, "NaN counts as 0");
    }
}
