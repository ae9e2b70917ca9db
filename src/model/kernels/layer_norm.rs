//! Layer norm with a two-pass mean/variance over the last dimension.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::contiguous;

/// Layer norm with a two-pass mean/variance. candle-nn's fused kernel uses E[x²]−E[x]² in
/// f32, which loses digits on residual streams; parity with PyTorch needs the stable form.
struct LayerNormOp {
    eps: f32,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "tarjama-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, gamma, beta) = (
            contiguous::<f32>(s1, l1)?,
            contiguous::<f32>(s2, l2)?,
            contiguous::<f32>(s3, l3)?,
        );
        let d = gamma.len();
        if d == 0 || beta.len() != d || x.len() % d != 0 {
            candle_core::bail!("layer norm: shape mismatch");
        }
        let mut out = vec![0f32; x.len()];
        for (src, dst) in x.chunks(d).zip(out.chunks_mut(d)) {
            let mean = (sum_f64(src, |v| v as f64) / d as f64) as f32;
            let var = sum_f64(src, |v| ((v - mean) as f64).powi(2)) / d as f64;
            let rstd = 1.0 / ((var as f32) + self.eps).sqrt();
            for (i, o) in dst.iter_mut().enumerate() {
                *o = (src[i] - mean) * rstd * gamma[i] + beta[i];
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Σ f(v) in f64 over eight running sums, so that it vectorises: one chain of dependent f64
/// adds per row made layer norm a tenth of a decoding step's serial work. The sums of f32
/// values (and of their exact squares) in f64 are exact or nearly so, so the order changes
/// the f32 results only in a last-bit tie, if ever.
#[inline(always)]
fn sum_f64(v: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    const LANES: usize = 8;
    let mut lanes = [0f64; LANES];
    let chunks = v.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (s, &x) in lanes.iter_mut().zip(c) {
            *s += f(x);
        }
    }
    lanes.iter().sum::<f64>() + tail.iter().map(|&x| f(x)).sum::<f64>()
}

/// Normalises over the last dimension.
pub(crate) fn layer_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
) -> candle_core::Result<Tensor> {
    // CPU f32 only, like the whole engine: the op fails on anything else.
    x.contiguous()?
        .apply_op3_no_bwd(gamma, beta, &LayerNormOp { eps })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within f32 rounding of an f64 layer norm, on rows of every tail length (eight-lane
    /// sums), including a residual-stream-like row with a large offset.
    #[test]
    fn matches_an_f64_layer_norm() {
        let dev = candle_core::Device::Cpu;
        let mut rng = fastrand::Rng::with_seed(5);
        for d in [1, 7, 8, 9, 512, 515] {
            let rows = 3;
            let mut x: Vec<f32> = (0..rows * d).map(|_| rng.f32() * 4.0 - 2.0).collect();
            x[..d].iter_mut().for_each(|v| *v += 30.0);
            let g: Vec<f32> = (0..d).map(|_| rng.f32() + 0.5).collect();
            let b: Vec<f32> = (0..d).map(|_| rng.f32() - 0.5).collect();
            let t = |v: &[f32], s: &[usize]| Tensor::from_slice(v, s, &dev).unwrap();
            let y = layer_norm(&t(&x, &[rows, d]), &t(&g, &[d]), &t(&b, &[d]), 1e-5).unwrap();
            let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (r, row) in x.chunks(d).enumerate() {
                let mean = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
                let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
                for i in 0..d {
                    let want =
                        (row[i] as f64 - mean) / (var + 1e-5).sqrt() * g[i] as f64 + b[i] as f64;
                    let got = y[r * d + i] as f64;
                    assert!(
                        (got - want).abs() < 2e-5 * (1.0 + want.abs()),
                        "d {d} row {r} [{i}]: {got} vs {want}"
                    );
                }
            }
        }
    }
}
