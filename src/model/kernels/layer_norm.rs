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
            let mean = (src.iter().map(|&v| v as f64).sum::<f64>() / d as f64) as f32;
            let var = src
                .iter()
                .map(|&v| ((v - mean) as f64).powi(2))
                .sum::<f64>()
                / d as f64;
            let rstd = 1.0 / ((var as f32) + self.eps).sqrt();
            for (i, o) in dst.iter_mut().enumerate() {
                *o = (src[i] - mean) * rstd * gamma[i] + beta[i];
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
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
