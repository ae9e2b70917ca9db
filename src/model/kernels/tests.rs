//! Every GEMM path against a plain reference matmul, on odd shapes: rows 1..130, k 300 / 600 /
//! 2048 (more than one k block), n 33..70 (not a multiple of the 16-column panel). Each test
//! runs every path the CPU can execute (a function argument), so CI on any machine covers
//! what it can; `TARJAMA_KERNEL_ISA` additionally caps what the model itself picks.

use super::gemm_f32::{F32Path, PackedF32};
use super::gemm_i8::{quantize_activations, I8Path, PackedI8, WeightBits};
use super::Dense;

const ROWS: &[usize] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 17, 31, 64, 97, 130];
const KS: &[usize] = &[300, 600, 2048];
const NS: &[usize] = &[33, 47, 64, 70];

/// Deterministic values in about [−1, 1] with a few large ones (outliers stress per-row scales).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            if i % 97 == 5 {
                u * 6.0
            } else {
                u
            }
        })
        .collect()
}

/// One product to check: x (m, k), w (n, k), b (n).
struct Case {
    m: usize,
    k: usize,
    n: usize,
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
}

impl Case {
    /// Operands from three consecutive seeds.
    fn new(m: usize, k: usize, n: usize, seed: u64) -> Self {
        let (x, w, b) = (
            values(m * k, seed),
            values(n * k, seed + 1),
            values(n, seed + 2),
        );
        Self { m, k, n, x, w, b }
    }

    fn dense(&self) -> Dense<'_> {
        Dense::new(&self.w, &self.b, self.n, self.k).unwrap()
    }

    fn what(&self) -> String {
        format!("{}x{}x{}", self.m, self.k, self.n)
    }

    /// `x Wᵀ + b` in f64.
    fn reference(&self) -> Vec<f64> {
        let (m, k, n) = (self.m, self.k, self.n);
        let mut y = vec![0f64; m * n];
        for r in 0..m {
            for c in 0..n {
                let dot: f64 = (0..k)
                    .map(|i| self.x[r * k + i] as f64 * self.w[c * k + i] as f64)
                    .sum();
                y[r * n + c] = dot + self.b[c] as f64;
            }
        }
        y
    }
}

/// Shapes to cover: every row count with one k and n, and every (k, n) with a few row counts.
fn cases(seed: u64) -> impl Iterator<Item = Case> {
    let mut shapes: Vec<(usize, usize, usize)> = ROWS.iter().map(|&m| (m, 600, 70)).collect();
    for &k in KS {
        for &n in NS {
            for &m in &[1, 7, 130] {
                shapes.push((m, k, n));
            }
        }
    }
    shapes
        .into_iter()
        .map(move |(m, k, n)| Case::new(m, k, n, seed))
}

#[test]
fn f32_paths_match_the_reference() {
    let paths = F32Path::all();
    if paths.is_empty() {
        eprintln!("no f32 kernel runs on this CPU: nothing to check");
    }
    for path in paths {
        for c in cases(1) {
            let want = c.reference();
            let got = PackedF32::new(c.dense(), path).matmul(&c.x, c.m).unwrap();
            // f32 accumulation over k terms of size ≤ 36.
            let tol = 1e-6 * c.k as f64 * 36.0;
            for (i, (&g, &r)) in got.iter().zip(&want).enumerate() {
                let what = c.what();
                assert!(
                    (g as f64 - r).abs() <= tol,
                    "{} {what} [{i}]: {g} vs {r}",
                    path.name()
                );
            }
        }
    }
}

/// The int8 scheme spelled out: weights symmetric to ±`bits.limit()` per output row,
/// activations to u8 levels with a zero point per row (`x ≈ (u − zero)·scale`, checked in
/// `gemm_i8::activations`), exact integer dot products `Σ (u − zero)·w`, the same f32
/// epilogue. Every path must give exactly these bits for its weight precision.
fn int8_reference(c: &Case, bits: WeightBits) -> Vec<f32> {
    let quant = |v: &[f32], lim: f32| -> (f32, Vec<i32>) {
        let amax = v.iter().fold(0f32, |a, &x| a.max(x.abs()));
        if amax == 0.0 {
            return (0.0, vec![0; v.len()]);
        }
        let inv = lim / amax;
        let q = v
            .iter()
            .map(|&x| (x * inv).round_ties_even().clamp(-lim, lim) as i32)
            .collect();
        (amax / lim, q)
    };
    let (m, k, n) = (c.m, c.k, c.n);
    let ws: Vec<(f32, Vec<i32>)> = c.w.chunks(k).map(|w| quant(w, bits.limit())).collect();
    let mut y = vec![0f32; m * n];
    for r in 0..m {
        let mut u = vec![0u8; k];
        let s = quantize_activations(&c.x[r * k..(r + 1) * k], &mut u);
        for (j, (sw, wq)) in ws.iter().enumerate() {
            let dot: i32 = u
                .iter()
                .zip(wq)
                .map(|(&a, b)| (a as i32 - s.zero) * b)
                .sum();
            y[r * n + j] = dot as f32 * (s.scale * sw) + c.b[j];
        }
    }
    y
}

#[test]
fn int8_paths_match_the_reference_bit_for_bit() {
    for path in I8Path::all() {
        for c in cases(4) {
            let want = int8_reference(&c, path.weight_bits());
            let got = PackedI8::new(c.dense(), path).matmul(&c.x, c.m).unwrap();
            for (i, (g, r)) in got.iter().zip(&want).enumerate() {
                let what = c.what();
                assert_eq!(
                    g.to_bits(),
                    r.to_bits(),
                    "{} {what} [{i}]: {g} vs {r}",
                    path.name()
                );
            }
        }
    }
}

/// Quantisation error stays within its bound, for both weight precisions (so the 7-bit AVX2
/// path and the 8-bit paths differ by at most the sum of their bounds): each factor is off by
/// at most half a step, so |Δy| ≤ Σ (|x|·sw/2 + |w|·sx/2 + sx·sw/4).
#[test]
fn int8_error_is_bounded_against_f32() {
    let portable = I8Path::all()[0];
    for bits in [WeightBits::Eight, WeightBits::Seven] {
        for c in cases(7) {
            check_error_bound(&c, PackedI8::with_bits(c.dense(), portable, bits), bits);
        }
    }
}

fn check_error_bound(c: &Case, packed: PackedI8, bits: WeightBits) {
    let (m, k, n) = (c.m, c.k, c.n);
    let want = c.reference();
    let got = packed.matmul(&c.x, m).unwrap();
    let amax = |v: &[f32]| v.iter().fold(0f32, |a, &x| a.max(x.abs())) as f64;
    for r in 0..m {
        let xr = &c.x[r * k..(r + 1) * k];
        let sx = amax(xr) / 127.0;
        for j in 0..n {
            let wr = &c.w[j * k..(j + 1) * k];
            let sw = amax(wr) / bits.limit() as f64;
            let bound: f64 = xr
                .iter()
                .zip(wr)
                .map(|(&a, &b)| {
                    (a.abs() as f64) * sw / 2.0 + (b.abs() as f64) * sx / 2.0 + sx * sw / 4.0
                })
                .sum::<f64>()
                * 1.001
                + 1e-5;
            let err = (got[r * n + j] as f64 - want[r * n + j]).abs();
            assert!(err <= bound, "{} [{r},{j}]: {err} > {bound}", c.what());
        }
    }
}

/// Zero rows (padding, a zeroed input) give the bias exactly, on every path; so does an
/// all-zero weight row.
#[test]
fn int8_zero_rows_give_the_bias() {
    let mut c = Case::new(5, 300, 33, 10);
    let (m, k, n) = (c.m, c.k, c.n);
    c.x[2 * k..3 * k].iter_mut().for_each(|v| *v = 0.0);
    c.w[4 * k..5 * k].iter_mut().for_each(|v| *v = 0.0);
    for path in I8Path::all() {
        let y = PackedI8::new(c.dense(), path).matmul(&c.x, m).unwrap();
        assert_eq!(&y[2 * n..3 * n], &c.b[..], "{}", path.name());
        for r in 0..m {
            assert_eq!(y[r * n + 4], c.b[4], "{}", path.name());
        }
    }
}

#[test]
fn int8_paths_are_identical_to_portable() {
    let c = Case::new(37, 2048, 70, 13);
    let all = I8Path::all();
    for path in &all[1..] {
        let twin = PackedI8::with_bits(c.dense(), all[0], path.weight_bits());
        let portable = twin.matmul(&c.x, c.m).unwrap();
        let p = PackedI8::new(c.dense(), *path);
        let y = p.matmul(&c.x, c.m).unwrap();
        assert!(
            y.iter()
                .zip(&portable)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{} differs from portable",
            path.name()
        );
    }
}

#[test]
fn shape_errors_are_errors() {
    assert!(Dense::new(&[0.0; 10], &[0.0; 2], 2, 4).is_err());
    assert!(Dense::new(&[0.0; 8], &[0.0; 3], 2, 4).is_err());
    assert!(Dense::new(&[], &[], 0, 0).is_err());
    let d = Dense::new(&[0.5; 8], &[0.0; 2], 2, 4).unwrap();
    let p = PackedI8::new(d, I8Path::all()[0]);
    assert!(p.matmul(&[1.0; 7], 2).is_err());
    if let Some(f) = F32Path::all().first() {
        let p = PackedF32::new(d, *f);
        assert!(p.matmul(&[1.0; 7], 2).is_err());
    }
}

/// The fused activations equal the activation applied afterwards, on every path, bit for
/// bit; and GELU stays within 2e-7 · max(1, |v|) of candle's exact-erf `gelu_erf`.
#[test]
fn int8_epilogue_activations_match_separate_ones() {
    use super::gemm_i8::Epilogue;
    let c = Case::new(9, 300, 47, 16);
    for path in I8Path::all() {
        let p = PackedI8::new(c.dense(), path);
        let plain = p.matmul(&c.x, c.m).unwrap();
        for act in [Epilogue::Silu, Epilogue::Relu, Epilogue::Gelu] {
            let fused = p.matmul_with(&c.x, c.m, act).unwrap();
            for (&v, &f) in plain.iter().zip(&fused) {
                let want = act.apply(v);
                assert_eq!(f.to_bits(), want.to_bits(), "{} {act:?}", path.name());
            }
        }
        let gelu = p.matmul_with(&c.x, c.m, Epilogue::Gelu).unwrap();
        let t = candle_core::Tensor::new(plain.as_slice(), &candle_core::Device::Cpu).unwrap();
        let candle_gelu = t.gelu_erf().unwrap().to_vec1::<f32>().unwrap();
        for ((g, want), v) in gelu.iter().zip(&candle_gelu).zip(&plain) {
            assert!((g - want).abs() <= 2e-7 * v.abs().max(1.0), "{g} vs {want}");
        }
        let relu = p.matmul_with(&c.x, c.m, Epilogue::Relu).unwrap();
        for (&r, &v) in relu.iter().zip(&plain) {
            assert_eq!(r.to_bits(), v.max(0.0).to_bits());
        }
    }
}
