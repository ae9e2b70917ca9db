//! Transformer building blocks. Weights are stored pre-transposed (`in x out`, contiguous) so
//! every projection is one plain row-major gemm.

use candle_core::{DType, Tensor, D};

use super::config::Activation;
use super::kernels::{self, Dense, Epilogue, F32Path, I8Path, KvRows, PackedF32, PackedI8};
use super::kv_cache::{Ancestry, KvCache};
use super::weights::WeightSource;
use super::{ComputeType, ModelError, Res};

const LN_EPS: f32 = 1e-5;

/// `y = x W^T + b`. f32: with AVX2/FMA the weight is packed into column panels once at load
/// time (see `kernels::gemm_f32`), otherwise `W^T` (in, out) is kept contiguous for candle's
/// gemm. int8: quantised per output row and packed at load (see `kernels::gemm_i8`).
pub(crate) struct Linear {
    kind: LinearKind,
    /// Output features.
    n: usize,
}

enum LinearKind {
    F32(PackedF32),
    Int8 {
        w: PackedI8,
        /// The f32 weight (out, in), kept only for the tied embedding lookup.
        rows: Option<Tensor>,
    },
    Plain {
        w: Tensor,
        bias: Tensor,
    },
}

impl Linear {
    pub fn load(ws: &mut dyn WeightSource, prefix: &str, d_in: usize, d_out: usize) -> Res<Self> {
        let w = ws.get(&format!("{prefix}.weight"), &[d_out, d_in])?;
        let b = ws.get(&format!("{prefix}.bias"), &[d_out])?;
        Self::from_parts(&w, &b, ws.compute_type())
    }

    /// Several projections of the same input fused into one matmul (q/k/v, k/v).
    pub fn load_fused(ws: &mut dyn WeightSource, prefixes: &[String], d: usize) -> Res<Self> {
        let mut ws_ = Vec::new();
        let mut bs = Vec::new();
        for p in prefixes {
            ws_.push(ws.get(&format!("{p}.weight"), &[d, d])?);
            bs.push(ws.get(&format!("{p}.bias"), &[d])?);
        }
        Self::from_parts(
            &Tensor::cat(&ws_, 0)?,
            &Tensor::cat(&bs, 0)?,
            ws.compute_type(),
        )
    }

    /// From a PyTorch-layout weight (out, in) and a bias (out).
    pub fn from_parts(w: &Tensor, bias: &Tensor, compute: ComputeType) -> Res<Self> {
        Self::build(w, bias, compute, false)
    }

    /// The tied output projection: as [`Self::from_parts`], and rows of `W` stay readable in
    /// f32 for the embedding lookup (int8 keeps the f32 table beside the quantised one, so
    /// embeddings are not quantised).
    pub fn tied(w: &Tensor, bias: &Tensor, compute: ComputeType) -> Res<Self> {
        Self::build(w, bias, compute, true)
    }

    fn build(w: &Tensor, bias: &Tensor, compute: ComputeType, keep_rows: bool) -> Res<Self> {
        let n = w.dim(0)?;
        // The engine runs on the CPU only (the kernels read CPU storage).
        let kind = match (compute, F32Path::detect()) {
            (ComputeType::Int8, _) => {
                let (wv, bv, n, k) = kernels::weight_and_bias(w, bias)?;
                LinearKind::Int8 {
                    w: PackedI8::new(Dense::new(&wv, &bv, n, k)?, I8Path::detect()),
                    rows: keep_rows.then(|| w.clone()),
                }
            }
            (ComputeType::F32, Some(path)) => {
                let (wv, bv, n, k) = kernels::weight_and_bias(w, bias)?;
                LinearKind::F32(PackedF32::new(Dense::new(&wv, &bv, n, k)?, path))
            }
            (ComputeType::F32, None) => LinearKind::Plain {
                w: w.t()?.contiguous()?,
                bias: bias.clone(),
            },
        };
        Ok(Self { kind, n })
    }

    fn out_features(&self) -> usize {
        self.n
    }

    /// Rows of `W` (embedding lookup for the tied output layer) -> (len, in).
    pub fn weight_rows(&self, ids: &Tensor) -> Res<Tensor> {
        Ok(match &self.kind {
            LinearKind::F32(p) => {
                let ids_v = ids.flatten_all()?.to_vec1::<u32>()?;
                let rows = p.rows(&ids_v)?;
                let k = rows.len() / ids_v.len().max(1);
                Tensor::from_vec(rows, (ids_v.len(), k), ids.device())?
            }
            LinearKind::Int8 { rows: Some(w), .. } => w.index_select(ids, 0)?,
            LinearKind::Int8 { rows: None, .. } => {
                return Err(ModelError::Config(
                    "embedding lookup on a projection without f32 rows".into(),
                ))
            }
            LinearKind::Plain { w, .. } => w.index_select(ids, 1)?.t()?.contiguous()?,
        })
    }

    /// `x` (rows, in) -> row-major (rows, out) values on the CPU, without a tensor copy.
    pub fn forward_vec(&self, x: &Tensor) -> Res<Vec<f32>> {
        let rows = |x: &Tensor| -> Res<(Tensor, usize)> {
            let x = x.contiguous()?;
            let m = x.dims2()?.0;
            Ok((x, m))
        };
        match &self.kind {
            LinearKind::F32(p) => {
                let (x, m) = rows(x)?;
                Ok(kernels::cpu_slice(&x, |xs| p.matmul(xs, m))?)
            }
            LinearKind::Int8 { w, .. } => {
                let (x, m) = rows(x)?;
                Ok(kernels::cpu_slice(&x, |xs| w.matmul(xs, m))?)
            }
            LinearKind::Plain { .. } => Ok(self.forward(x)?.flatten_all()?.to_vec1::<f32>()?),
        }
    }

    /// `x`: (..., in) -> (..., out).
    pub fn forward(&self, x: &Tensor) -> Res<Tensor> {
        match &self.kind {
            LinearKind::F32(p) => Ok(p.forward(x)?),
            LinearKind::Int8 { w, .. } => Ok(w.forward(x)?),
            LinearKind::Plain { w, bias, .. } => {
                let dims = x.dims();
                let d_in = dims[dims.len() - 1];
                let rows = x.elem_count() / d_in.max(1);
                let y = x.reshape((rows, d_in))?.matmul(w)?.broadcast_add(bias)?;
                let mut out_dims = dims.to_vec();
                let last = out_dims.len() - 1;
                out_dims[last] = self.out_features();
                Ok(y.reshape(out_dims)?)
            }
        }
    }
}

pub(crate) struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    pub fn load(ws: &mut dyn WeightSource, prefix: &str, d: usize) -> Res<Self> {
        Ok(Self {
            weight: ws.get(&format!("{prefix}.weight"), &[d])?,
            bias: ws.get(&format!("{prefix}.bias"), &[d])?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Res<Tensor> {
        Ok(super::kernels::layer_norm(
            x,
            &self.weight,
            &self.bias,
            LN_EPS,
        )?)
    }
}

/// Scaled dot-product attention on (B, H, T, hd) tensors; `mask` is additive and broadcast.
fn attend(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, scale: f64) -> Res<Tensor> {
    Ok(attention_weights(q, k, mask, scale)?.matmul(v)?)
}

/// softmax(q·Kᵀ·scale + mask) on (B, H, T, hd) tensors -> (B, H, T, S).
fn attention_weights(q: &Tensor, k: &Tensor, mask: Option<&Tensor>, scale: f64) -> Res<Tensor> {
    let scores = (q.matmul(&k.t()?)? * scale)?;
    let scores = match mask {
        Some(m) => scores.broadcast_add(m)?,
        None => scores,
    };
    Ok(candle_nn::ops::softmax_last_dim(&scores)?)
}

/// Attention weights (B, H, T, S) averaged over heads into `out`, row-major (B·T, S).
fn write_head_mean(weights: &Tensor, out: &mut [f32]) -> Res<()> {
    let mean = weights.mean(1)?.flatten_all()?.to_vec1::<f32>()?;
    if mean.len() != out.len() {
        return Err(ModelError::Input(format!(
            "attention head mean: {} weights for a buffer of {}",
            mean.len(),
            out.len()
        )));
    }
    out.copy_from_slice(&mean);
    Ok(())
}

/// Decoding steps on f32 CPU tensors use the fused kernel of `kernels::decode_attention` (the
/// only path that follows a beam ancestry).
pub(crate) fn fast_attention(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// `x` rounded to `dtype` and back: the values a cache of that dtype holds.
pub(crate) fn round_to(x: &Tensor, dtype: DType) -> Res<Tensor> {
    if x.dtype() == dtype {
        return Ok(x.clone());
    }
    Ok(super::kv_cache::in_dtype(x, dtype)?.to_dtype(x.dtype())?)
}

/// (B, T, H*hd) -> (B, H, T, hd), contiguous.
fn split_heads(x: &Tensor, heads: usize) -> Res<Tensor> {
    let (b, t, d) = x.dims3()?;
    let x = x.reshape((b, t, heads, d / heads))?;
    Ok(if t == 1 {
        x.reshape((b, heads, 1, d / heads))?
    } else {
        x.transpose(1, 2)?.contiguous()?
    })
}

/// (B, H, T, hd) -> (B, T, H*hd).
fn merge_heads(x: &Tensor) -> Res<Tensor> {
    let (b, h, t, hd) = x.dims4()?;
    Ok(if t == 1 {
        x.reshape((b, 1, h * hd))?
    } else {
        x.transpose(1, 2)?.reshape((b, t, h * hd))?
    })
}

/// Self-attention with fused q/k/v projection.
pub(crate) struct SelfAttention {
    qkv: Linear,
    out: Linear,
    heads: usize,
    d: usize,
}

impl SelfAttention {
    pub fn load(ws: &mut dyn WeightSource, prefix: &str, d: usize, heads: usize) -> Res<Self> {
        let names = ["q_proj", "k_proj", "v_proj"].map(|p| format!("{prefix}.{p}"));
        Ok(Self {
            qkv: Linear::load_fused(ws, &names, d)?,
            out: Linear::load(ws, &format!("{prefix}.out_proj"), d, d)?,
            heads,
            d,
        })
    }

    fn scale(&self) -> f64 {
        ((self.d / self.heads) as f64).powf(-0.5)
    }

    /// Full-sequence attention: `x` (B, T, d), `mask` (B, 1, 1, T) over keys (the encoder's:
    /// the fused kernel on f32 CPU tensors) or (1, 1, T, T) (the causal reference's).
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Res<Tensor> {
        self.forward_kv_as(x, mask, DType::F32)
    }

    /// As [`Self::forward`], keys and values first rounded to `kv` (the dtype a decoding
    /// step's cache holds them in): what the uncached reference for tests needs.
    pub(crate) fn forward_kv_as(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        kv: DType,
    ) -> Res<Tensor> {
        let qkv = self.qkv.forward(x)?;
        let (b, t, _) = x.dims3()?;
        let key_mask = mask.is_none_or(|m| m.dims() == [b, 1, 1, t]);
        if fast_attention(x) && key_mask && kv == DType::F32 {
            let scale = self.scale() as f32;
            // The int8 engine's attention may round to bf16 (see the kernel).
            let bf16 = matches!(self.qkv.kind, LinearKind::Int8 { .. });
            let ctx = kernels::sequence_attention(&qkv, mask, self.heads, scale, bf16)?;
            return self.out.forward(&ctx);
        }
        let q = split_heads(&qkv.narrow(D::Minus1, 0, self.d)?, self.heads)?;
        let k = split_heads(&qkv.narrow(D::Minus1, self.d, self.d)?, self.heads)?;
        let v = split_heads(&qkv.narrow(D::Minus1, 2 * self.d, self.d)?, self.heads)?;
        let (k, v) = (round_to(&k, kv)?, round_to(&v, kv)?);
        let ctx = attend(&q, &k, &v, mask, self.scale())?;
        self.out.forward(&merge_heads(&ctx)?)
    }

    /// One decoding step: `x` (B, 1, d); the new key/value go into `cache` first, and row
    /// `r` reads earlier steps where `ancestry` says (already pushed for this step).
    pub fn step(&self, x: &Tensor, cache: &mut KvCache, ancestry: &Ancestry) -> Res<Tensor> {
        let qkv = self.qkv.forward(x)?;
        let k = split_heads(&qkv.narrow(D::Minus1, self.d, self.d)?, self.heads)?;
        let v = split_heads(&qkv.narrow(D::Minus1, 2 * self.d, self.d)?, self.heads)?;
        let len = cache.push(&k, &v)?;
        if fast_attention(x) {
            let rows = qkv.dim(0)?;
            let q = qkv
                .reshape((rows, 3 * self.d))?
                .narrow(1, 0, self.d)?
                .contiguous()?;
            let scale = self.scale() as f32;
            let rows = KvRows::Traced(ancestry.rows());
            let ctx =
                kernels::decode_attention(&q, &cache.k, &cache.v, len, rows, None, scale, None)?;
            return self.out.forward(&ctx);
        }
        let q = split_heads(&qkv.narrow(D::Minus1, 0, self.d)?, self.heads)?;
        let (k, v) = (cache.k.narrow(2, 0, len)?, cache.v.narrow(2, 0, len)?);
        let ctx = attend(&q, &k, &v, None, self.scale())?;
        self.out.forward(&merge_heads(&ctx)?)
    }
}

/// Encoder-decoder attention; keys/values are projected once per batch by `project_kv`.
pub(crate) struct CrossAttention {
    q: Linear,
    kv: Linear,
    out: Linear,
    heads: usize,
    d: usize,
}

impl CrossAttention {
    pub fn load(ws: &mut dyn WeightSource, prefix: &str, d: usize, heads: usize) -> Res<Self> {
        let names = ["k_proj", "v_proj"].map(|p| format!("{prefix}.{p}"));
        Ok(Self {
            q: Linear::load(ws, &format!("{prefix}.q_proj"), d, d)?,
            kv: Linear::load_fused(ws, &names, d)?,
            out: Linear::load(ws, &format!("{prefix}.out_proj"), d, d)?,
            heads,
            d,
        })
    }

    /// Encoder states (B, S, d) -> (K, V): keys in panels of 32 transposed per head,
    /// (B, H, ⌈S / 32⌉, hd, 32), as the decode-step kernel reads them (see
    /// `kernels::cross_attention`); values (B, H, S, hd).
    pub fn project_kv(&self, enc: &Tensor) -> Res<(Tensor, Tensor)> {
        let kv = self.kv.forward(enc)?;
        let k = split_heads(&kv.narrow(D::Minus1, 0, self.d)?, self.heads)?;
        let k = kernels::cross_attention::pack_keys(&k)?;
        let v = split_heads(&kv.narrow(D::Minus1, self.d, self.d)?, self.heads)?;
        Ok((k, v))
    }

    /// `x` (R, T, d) decoder rows, `group` consecutive rows per source (T = 1 when
    /// group > 1); `kt` (keys in panels) and `v` (R / group, H, S, hd) from
    /// [`Self::project_kv`]: the group's queries attend together as one
    /// (group x S) block. With `head_mean` (R·T × S), the attention weights averaged over the
    /// heads are written there (padding positions get exactly 0).
    pub fn forward(
        &self,
        x: &Tensor,
        kt: &Tensor,
        v: &Tensor,
        mask: &Tensor,
        group: usize,
        head_mean: Option<&mut [f32]>,
    ) -> Res<Tensor> {
        let (r, t, _) = x.dims3()?;
        let q = self.q.forward(x)?;
        let scale = ((self.d / self.heads) as f64).powf(-0.5);
        if t == 1 && fast_attention(x) {
            let q = q.reshape((r, self.d))?;
            let len = v.dim(2)?;
            let rows = KvRows::Grouped(group.max(1));
            let scale = scale as f32;
            let ctx =
                kernels::decode_attention(&q, kt, v, len, rows, Some(mask), scale, head_mean)?;
            return self.out.forward(&ctx);
        }
        let q = if group <= 1 || t != 1 {
            split_heads(&q, self.heads)?
        } else {
            let hd = self.d / self.heads;
            q.reshape((r / group, group, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()?
        };
        let k = kernels::cross_attention::unpack_keys(kt, v.dim(2)?)?;
        let weights = attention_weights(&q, &k, Some(mask), scale)?;
        if let Some(out) = head_mean {
            write_head_mean(&weights, out)?;
        }
        // (R / group, H, group, hd) and (R, H, T, hd) both merge into rows of (R, T, d).
        let ctx = merge_heads(&weights.matmul(v)?)?.reshape((r, t, self.d))?;
        self.out.forward(&ctx)
    }
}

pub(crate) struct FeedForward {
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl FeedForward {
    pub fn load(
        ws: &mut dyn WeightSource,
        prefix: &str,
        d: usize,
        ffn: usize,
        act: Activation,
    ) -> Res<Self> {
        Ok(Self {
            fc1: Linear::load(ws, &format!("{prefix}.fc1"), d, ffn)?,
            fc2: Linear::load(ws, &format!("{prefix}.fc2"), ffn, d)?,
            act,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Res<Tensor> {
        // int8: SiLU / ReLU / GELU go into fc1's epilogue (run by every thread; candle's
        // gelu_erf was a single-threaded pass, 6 % of a distilbart encoder).
        if let LinearKind::Int8 { w, .. } = &self.fc1.kind {
            let fused = match self.act {
                Activation::Silu => Some(Epilogue::Silu),
                Activation::Relu => Some(Epilogue::Relu),
                Activation::Gelu => Some(Epilogue::Gelu),
                Activation::GeluNew => None,
            };
            if let Some(act) = fused {
                return self.fc2.forward(&w.forward_with(x, act)?);
            }
        }
        let h = self.fc1.forward(x)?;
        let h = match self.act {
            Activation::Silu => h.silu()?,
            Activation::Gelu => h.gelu_erf()?,
            Activation::GeluNew => h.gelu()?,
            Activation::Relu => h.relu()?,
        };
        self.fc2.forward(&h)
    }
}

/// Residual sub-layer with post-norm (Marian/BART) or pre-norm.
pub(crate) fn residual(
    x: &Tensor,
    norm: &LayerNorm,
    pre_norm: bool,
    f: impl FnOnce(&Tensor) -> Res<Tensor>,
) -> Res<Tensor> {
    if pre_norm {
        Ok((x + f(&norm.forward(x)?)?)?)
    } else {
        norm.forward(&(x + f(x)?)?)
    }
}
