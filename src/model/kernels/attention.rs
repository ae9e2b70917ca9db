//! Decode-step attention over the KV caches, and the gather that materialises traced rows.
//!
//! One decoding step has one query per row: candle's batched matmuls over (B, H, 1, hd) spend
//! more on dispatch and copies than on arithmetic, so each row's heads run here directly, rows
//! in parallel, reading the cache where the beam ancestry says (no copy on beam reorder).

use candle_core::{CpuStorage, Layout, Shape, Tensor};

use super::{contiguous, cpu_slice, F32Path};

/// Rows of a (B, H, cap, hd) cache buffer into a new (B', H, new_cap, hd) one: output row
/// `i` takes step `j` from physical row `rows[i][j]` (see `kv_cache::Ancestry`). Only the
/// first `len` steps are copied; the spare capacity is zeroed.
struct GatherCache<'a> {
    rows: &'a [&'a [u32]],
    len: usize,
    new_cap: usize,
}

impl candle_core::CustomOp1 for GatherCache<'_> {
    fn name(&self) -> &'static str {
        "tarjama-gather-cache"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let src = contiguous(s, l)?;
        let (b, h, cap, hd) = l.shape().dims4()?;
        let (len, new_cap) = (self.len, self.new_cap);
        let in_range = |r: &&[u32]| r.len() >= len && r[..len].iter().all(|&i| (i as usize) < b);
        if len > cap || len > new_cap || !self.rows.iter().all(in_range) {
            candle_core::bail!("gather cache: index out of range");
        }
        // Each element written once: cached steps copied, the spare capacity zeroed.
        let mut out = Vec::with_capacity(self.rows.len() * h * new_cap * hd);
        for steps in self.rows {
            for head in 0..h {
                for (j, &r) in steps[..len].iter().enumerate() {
                    let at = ((r as usize * h + head) * cap + j) * hd;
                    out.extend_from_slice(&src[at..at + hd]);
                }
                out.extend(std::iter::repeat_n(0f32, (new_cap - len) * hd));
            }
        }
        Ok((
            CpuStorage::F32(out),
            Shape::from_dims(&[self.rows.len(), h, new_cap, hd]),
        ))
    }
}

/// See [`GatherCache`]. Off the f32 CPU path rows are never traced (each row's steps all sit
/// in one physical row), so a plain row selection does.
pub(crate) fn gather_cache(
    t: &Tensor,
    rows: &[&[u32]],
    len: usize,
    new_cap: usize,
) -> candle_core::Result<Tensor> {
    if t.device().is_cpu() && t.dtype() == candle_core::DType::F32 {
        return t.apply_op1_no_bwd(&GatherCache { rows, len, new_cap });
    }
    let mut idx = Vec::with_capacity(rows.len());
    for steps in rows {
        let first = steps.first().copied().unwrap_or(0);
        if steps[..len.min(steps.len())].iter().any(|&r| r != first) {
            candle_core::bail!("gather cache: traced rows need the f32 CPU path");
        }
        idx.push(first);
    }
    let ids = Tensor::new(idx.as_slice(), t.device())?;
    t.index_select(&ids, 0)
}

/// Where each query row finds its keys/values in a (B, H, cap, hd) cache.
#[derive(Clone, Copy)]
pub(crate) enum KvRows<'a> {
    /// Row `r` reads cache row `r / group` at every step (cross-attention: the beams of one
    /// input share its encoder states).
    Grouped(usize),
    /// Row `r` reads step `j` from cache row `rows[r][j]` (self-attention under beam search,
    /// see `kv_cache::Ancestry`).
    Traced(&'a [Vec<u32>]),
}

/// One decoding step's attention, without candle's per-head matmuls: `q` (R, H·hd) holds one
/// query per row; row `r` attends to the first `len` steps of `k`/`v` (B, H, cap, hd) in the
/// rows `kv_rows` names, plus the additive `mask` (B, 1, 1, cap; grouped rows only) when
/// given. Scores are `(q·k) · scale` and the softmax runs in f32, as in the tensor path. Rows
/// run in parallel. With `head_mean`, row `r`'s attention weights averaged over the heads are
/// written to `head_mean[r·len..(r+1)·len]` (masked steps get exactly 0).
#[allow(clippy::too_many_arguments)]
pub(crate) fn decode_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    len: usize,
    kv_rows: KvRows,
    mask: Option<&Tensor>,
    scale: f32,
    head_mean: Option<&mut [f32]>,
) -> candle_core::Result<Tensor> {
    let (rows, d) = q.dims2()?;
    let (b, heads, cap, hd) = k.dims4()?;
    if v.dims4()? != (b, heads, cap, hd) || heads * hd != d || len > cap {
        candle_core::bail!("decode attention: shape mismatch");
    }
    let rows_ok = match kv_rows {
        KvRows::Grouped(group) => group > 0 && rows.div_ceil(group) <= b,
        KvRows::Traced(t) => {
            mask.is_none()
                && t.len() == rows
                && t.iter()
                    .all(|s| s.len() >= len && s[..len].iter().all(|&i| (i as usize) < b))
        }
    };
    if !rows_ok {
        candle_core::bail!("decode attention: cache rows out of range");
    }
    if head_mean.as_ref().is_some_and(|m| m.len() != rows * len) {
        candle_core::bail!("decode attention: head-mean buffer shape");
    }
    let mask = match mask {
        Some(m) if m.elem_count() != b * cap => candle_core::bail!("decode attention: mask shape"),
        // Already contiguous in practice: then this only clones a handle.
        Some(m) => Some(m.contiguous()?),
        None => None,
    };
    let shape = AttentionShape {
        heads,
        cap,
        hd,
        len,
        scale,
        wide: F32Path::detect(),
    };
    let mut head_mean = head_mean;
    let mut run = |q: &[f32], k: &[f32], v: &[f32], mask: Option<&[f32]>| {
        let mean_rows: Vec<Option<&mut [f32]>> = match head_mean.take() {
            Some(m) if len > 0 => m.chunks_mut(len).map(Some).collect(),
            _ => (0..rows).map(|_| None).collect(),
        };
        Ok(shape.run(q, k, v, kv_rows, mask, mean_rows))
    };
    let out = cpu_slice(q, |q| {
        cpu_slice(k, |k| {
            cpu_slice(v, |v| match &mask {
                Some(m) => cpu_slice(m, |m| run(q, k, v, Some(m))),
                None => run(q, k, v, None),
            })
        })
    })?;
    Tensor::from_vec(out, (rows, 1, d), q.device())
}

#[derive(Clone, Copy)]
struct AttentionShape {
    heads: usize,
    cap: usize,
    hd: usize,
    len: usize,
    scale: f32,
    /// The CPU runs AVX2 (and FMA): the same loops compiled for 256-bit vectors. Rust never
    /// fuses a multiply and an add on its own, and the lanes sum in the same order, so both
    /// builds give the same bits (tested); the wide one does half the instructions.
    wide: Option<F32Path>,
}

impl AttentionShape {
    fn run(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        kv_rows: KvRows,
        mask: Option<&[f32]>,
        mut mean_rows: Vec<Option<&mut [f32]>>,
    ) -> Vec<f32> {
        use rayon::prelude::*;
        let d = self.heads * self.hd;
        let mut out = vec![0f32; mean_rows.len() * d];
        let rows = out.par_chunks_mut(d).zip(mean_rows.par_iter_mut());
        rows.enumerate().for_each(|(r, (out_row, mean_row))| {
            if let Some(m) = mean_row.as_deref_mut() {
                m.fill(0.0);
            }
            let steps = self.step_offsets(kv_rows, r);
            let mask_row = match (kv_rows, mask) {
                (KvRows::Grouped(group), Some(m)) => {
                    let at = (r / group) * self.cap;
                    Some(&m[at..at + self.len])
                }
                _ => None,
            };
            let mut scores = vec![0f32; self.len];
            for h in 0..self.heads {
                let head = Head {
                    k: &k[h * self.cap * self.hd..],
                    v: &v[h * self.cap * self.hd..],
                    steps: &steps,
                };
                let qh = &q[r * d + h * self.hd..r * d + (h + 1) * self.hd];
                let io = HeadIo {
                    q: qh,
                    kv: head,
                    mask: mask_row,
                    scores: &mut scores,
                    out: &mut out_row[h * self.hd..(h + 1) * self.hd],
                };
                let sum = match self.wide {
                    Some(path) => self.head_wide(path, io),
                    None => self.head(io),
                };
                if let Some(m) = mean_row.as_deref_mut() {
                    let w = 1.0 / (sum * self.heads as f32);
                    for (m, &s) in m.iter_mut().zip(&scores) {
                        *m += s * w;
                    }
                }
            }
        });
        out
    }

    /// Where query row `r` finds each cached step's vector, as offsets into head 0 (head `h`
    /// adds h·cap·hd).
    fn step_offsets(&self, kv_rows: KvRows, r: usize) -> Vec<usize> {
        let at = |row: usize, j: usize| (row * self.heads * self.cap + j) * self.hd;
        match kv_rows {
            KvRows::Grouped(group) => (0..self.len).map(|j| at(r / group, j)).collect(),
            KvRows::Traced(t) => t[r][..self.len]
                .iter()
                .enumerate()
                .map(|(j, &row)| at(row as usize, j))
                .collect(),
        }
    }

    /// [`AttentionShape::head`] compiled for AVX2; `_path` proves the CPU runs it.
    fn head_wide(&self, _path: F32Path, io: HeadIo) -> f32 {
        #[cfg(target_arch = "x86_64")]
        {
            /// # Safety
            /// The CPU runs AVX2.
            #[target_feature(enable = "avx2")]
            unsafe fn avx2(s: &AttentionShape, io: HeadIo) -> f32 {
                s.head(io)
            }
            // SAFETY: an F32Path exists only on a CPU with AVX2 and FMA.
            unsafe { avx2(self, io) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        self.head(io)
    }

    /// softmax(q·Kᵀ·scale + mask)·V for one row and head; leaves the unnormalised weights in
    /// `scores` and returns their sum. Inlined into each build (portable, AVX2).
    #[inline(always)]
    fn head(&self, io: HeadIo) -> f32 {
        let HeadIo {
            q,
            kv,
            mask,
            scores,
            out,
        } = io;
        let hd = self.hd;
        let mut max = f32::NEG_INFINITY;
        for ((j, s), &at) in scores.iter_mut().enumerate().zip(kv.steps) {
            let mut x = dot(q, &kv.k[at..at + hd]) * self.scale;
            if let Some(m) = mask {
                x += m[j];
            }
            *s = x;
            max = max.max(x);
        }
        let mut sum = 0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        // Unnormalised weights summed first, divided once at the end (as PyTorch's CPU
        // flash-attention kernel does).
        for (&p, &at) in scores.iter().zip(kv.steps) {
            for (o, &x) in out.iter_mut().zip(&kv.v[at..at + hd]) {
                *o += p * x;
            }
        }
        for o in out.iter_mut() {
            *o /= sum;
        }
        sum
    }
}

/// One row and head of a step: its query, keys and values, mask, and where the weights and
/// the output go.
struct HeadIo<'a> {
    q: &'a [f32],
    kv: Head<'a>,
    mask: Option<&'a [f32]>,
    scores: &'a mut [f32],
    out: &'a mut [f32],
}

/// One head's keys and values (slices starting at the head) and each step's offset in them.
#[derive(Clone, Copy)]
struct Head<'a> {
    k: &'a [f32],
    v: &'a [f32],
    steps: &'a [usize],
}

/// Dot product with eight running sums (vectorises; rounding like a BLAS kernel's).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ar.iter().zip(br).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 build gives the portable build's bits, for grouped and traced rows, with a
    /// mask and the head mean.
    #[test]
    fn wide_and_portable_builds_agree_bit_for_bit() {
        let Some(path) = F32Path::detect() else {
            return;
        };
        let (b, heads, cap, hd, len) = (3, 4, 9, 20, 7);
        let mut rng = fastrand::Rng::with_seed(7);
        let mut values = |n: usize| (0..n).map(|_| rng.f32() * 2.0 - 1.0).collect::<Vec<_>>();
        let (k, v) = (values(b * heads * cap * hd), values(b * heads * cap * hd));
        let q = values(6 * heads * hd);
        let mask: Vec<f32> = (0..b * cap)
            .map(|i| if i % 5 == 0 { -1e9 } else { 0.0 })
            .collect();
        let traced: Vec<Vec<u32>> = (0..6)
            .map(|r| (0..cap as u32).map(|j| (r + j) % 3).collect())
            .collect();
        for (rows, mask) in [
            (KvRows::Grouped(2), Some(mask.as_slice())),
            (KvRows::Traced(&traced), None),
        ] {
            let run = |wide| {
                let shape = AttentionShape {
                    heads,
                    cap,
                    hd,
                    len,
                    scale: 0.3,
                    wide,
                };
                let mut means = vec![0f32; 6 * len];
                let out = shape.run(
                    &q,
                    &k,
                    &v,
                    rows,
                    mask,
                    means.chunks_mut(len).map(Some).collect(),
                );
                (out, means)
            };
            let (narrow, wide) = (run(None), run(Some(path)));
            let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&narrow.0), bits(&wide.0));
            assert_eq!(bits(&narrow.1), bits(&wide.1));
        }
    }
}
