//! Decode-step attention over the KV caches, and the gather that materialises traced rows.
//!
//! One decoding step has one query per row: candle's batched matmuls over (B, H, 1, hd) spend
//! more on dispatch and copies than on arithmetic, so each row's heads run here directly, rows
//! in parallel, reading the cache where the beam ancestry says (no copy on beam reorder).

use candle_core::{CpuStorage, DType, Layout, Shape, Tensor};
use half::f16;

use super::cross_attention::{self, CrossHead};
use super::{contiguous, cpu_slice, F32Path};

/// Rows of a (B, H, cap, hd) cache buffer into a new (B', H, new_cap, hd) one: output row
/// `i` takes step `j` from physical row `rows[i][j]` (see `kv_cache::Ancestry`). Only the
/// first `len` steps are copied; the spare capacity is zeroed.
struct GatherCache<'a> {
    rows: &'a [&'a [u32]],
    len: usize,
    new_cap: usize,
}

impl GatherCache<'_> {
    fn gather<T: CacheElem>(&self, src: &[T], l: &Layout) -> candle_core::Result<(Vec<T>, Shape)> {
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
                out.extend(std::iter::repeat_n(T::zero(), (new_cap - len) * hd));
            }
        }
        Ok((out, Shape::from_dims(&[self.rows.len(), h, new_cap, hd])))
    }
}

impl candle_core::CustomOp1 for GatherCache<'_> {
    fn name(&self) -> &'static str {
        "tarjama-gather-cache"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok(match s {
            CpuStorage::F16(_) => {
                let (out, shape) = self.gather::<f16>(contiguous(s, l)?, l)?;
                (CpuStorage::F16(out), shape)
            }
            _ => {
                let (out, shape) = self.gather::<f32>(contiguous(s, l)?, l)?;
                (CpuStorage::F32(out), shape)
            }
        })
    }
}

/// See [`GatherCache`]. Off the CPU caches rows are never traced (each row's steps all sit
/// in one physical row), so a plain row selection does.
pub(crate) fn gather_cache(
    t: &Tensor,
    rows: &[&[u32]],
    len: usize,
    new_cap: usize,
) -> candle_core::Result<Tensor> {
    if fused_cache(t) {
        return t.apply_op1_no_bwd(&GatherCache { rows, len, new_cap });
    }
    let mut idx = Vec::with_capacity(rows.len());
    for steps in rows {
        let first = steps.first().copied().unwrap_or(0);
        if steps[..len.min(steps.len())].iter().any(|&r| r != first) {
            candle_core::bail!("gather cache: traced rows need a CPU cache");
        }
        idx.push(first);
    }
    let ids = Tensor::new(idx.as_slice(), t.device())?;
    t.index_select(&ids, 0)
}

/// A KV cache the fused decode attention reads: on the CPU, in f32 or f16.
pub(crate) fn fused_cache(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F16)
}

/// What a KV cache holds: f32 (the f32 engine: exact parity), or f16 (the int8 engine:
/// decode attention is bound by reading the caches, and f16 halves that; its 11-bit
/// significand is finer than the int8 activations beside it). Widening f16 is exact, so
/// every path computes on the same f32 values.
pub(crate) trait CacheElem: candle_core::WithDType {
    /// Stored as IEEE binary16 (`half::f16`, 2 bytes), else f32.
    const HALF: bool;
    /// One cached vector as f32: itself for f32, widened into `buf` (as long) for f16.
    fn row<'a>(src: &'a [Self], buf: &'a mut [f32], path: Option<F32Path>) -> &'a [f32];
}

impl CacheElem for f32 {
    const HALF: bool = false;
    #[inline(always)]
    fn row<'a>(src: &'a [f32], _buf: &'a mut [f32], _path: Option<F32Path>) -> &'a [f32] {
        src
    }
}

impl CacheElem for f16 {
    const HALF: bool = true;
    #[inline(always)]
    fn row<'a>(src: &'a [f16], buf: &'a mut [f32], path: Option<F32Path>) -> &'a [f32] {
        widen(src, buf, path);
        buf
    }
}

/// `t` (CPU, f32) as an f16 tensor of the same shape, rounded to nearest even: what a KV cache
/// of [`CacheElem`] f16 stores. `half`'s slice conversion (F16C when the CPU has it, checked
/// once per call) rather than candle's `to_dtype`, whose call per element was 2 % of a batched
/// decoding step.
pub(crate) fn to_f16(t: &Tensor) -> candle_core::Result<Tensor> {
    use half::slice::HalfFloatSliceExt;
    let t = t.contiguous()?;
    let out = cpu_slice(&t, |x: &[f32]| {
        let mut out = vec![f16::ZERO; x.len()];
        out.convert_from_f32_slice(x);
        Ok(out)
    })?;
    Tensor::from_vec(out, t.shape(), t.device())
}

/// `dst[i] = src[i]` as f32 (exact): F16C eight at a time when `path` proves the CPU has it.
#[inline(always)]
fn widen(src: &[f16], dst: &mut [f32], path: Option<F32Path>) {
    #[cfg(target_arch = "x86_64")]
    if path.is_some() && src.len() == dst.len() {
        // SAFETY: an F32Path exists only on a CPU with AVX2 and F16C; lengths checked.
        return unsafe { widen_f16c(src, dst) };
    }
    let _ = path;
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.to_f32();
    }
}

/// Inlined into the AVX2 build of the attention loops.
///
/// # Safety
/// The CPU runs AVX2 and F16C; `src.len() == dst.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
#[inline]
unsafe fn widen_f16c(src: &[f16], dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = src.len();
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    let mut i = 0;
    while i + 8 <= n {
        let h = _mm_loadu_si128(s.add(i) as *const __m128i);
        _mm256_storeu_ps(d.add(i), _mm256_cvtph_ps(h));
        i += 8;
    }
    for j in i..n {
        *d.add(j) = (*s.add(j)).to_f32();
    }
}

/// Where each query row finds its keys/values in a (B, H, cap, hd) cache.
#[derive(Clone, Copy)]
pub(crate) enum KvRows<'a> {
    /// Row `r` reads cache row `r / group` at every step (cross-attention: the beams of one
    /// input share its encoder states), whose keys are in panels, (B, H, ⌈cap / 32⌉, hd, 32)
    /// (see `cross_attention`).
    Grouped(usize),
    /// Row `r` reads step `j` from cache row `rows[r][j]` (self-attention under beam search,
    /// see `kv_cache::Ancestry`).
    Traced(&'a [Vec<u32>]),
}

/// One decoding step's attention, without candle's per-head matmuls: `q` (R, H·hd) holds one
/// query per row; row `r` attends to the first `len` steps of `k`/`v` (B, H, cap, hd; grouped
/// rows' keys in panels, see [`KvRows::Grouped`]) in the rows `kv_rows` names, plus the
/// additive `mask` (B, 1, 1, cap; grouped rows only) when
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
    let (b, heads, cap, hd) = v.dims4()?;
    let keys_fit = match kv_rows {
        KvRows::Grouped(_) => {
            k.dims5()?
                == (
                    b,
                    heads,
                    cap.div_ceil(cross_attention::KEYS),
                    hd,
                    cross_attention::KEYS,
                )
        }
        KvRows::Traced(_) => k.dims4()? == (b, heads, cap, hd),
    };
    if !keys_fit || heads * hd != d || len > cap {
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
    let out = match k.dtype() {
        DType::F16 => shape.run_tensors::<f16>(q, k, v, kv_rows, mask.as_ref(), head_mean)?,
        _ => shape.run_tensors::<f32>(q, k, v, kv_rows, mask.as_ref(), head_mean)?,
    };
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
    /// [`Self::run`] on the tensors' elements, caches holding `E`.
    fn run_tensors<E: CacheElem>(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        kv_rows: KvRows,
        mask: Option<&Tensor>,
        head_mean: Option<&mut [f32]>,
    ) -> candle_core::Result<Vec<f32>> {
        let (rows, len) = (q.dim(0)?, self.len);
        let mut head_mean = head_mean;
        let mut run = |q: &[f32], k: &[E], v: &[E], mask: Option<&[f32]>| {
            let mean_rows: Vec<Option<&mut [f32]>> = match head_mean.take() {
                Some(m) if len > 0 => m.chunks_mut(len).map(Some).collect(),
                _ => (0..rows).map(|_| None).collect(),
            };
            let inputs = StepInputs {
                q,
                k,
                v,
                kv_rows,
                mask,
            };
            Ok(self.run(inputs, mean_rows))
        };
        cpu_slice(q, |q| {
            cpu_slice(k, |k| {
                cpu_slice(v, |v| match mask {
                    Some(m) => cpu_slice(m, |m| run(q, k, v, Some(m))),
                    None => run(q, k, v, None),
                })
            })
        })
    }

    /// Every row's output (R, H·hd). Work items are (group, head) pairs: the rows of one
    /// group (the beams of one input under cross-attention, or one traced row) share one pass
    /// over the head's keys and values, so a beam-4 step reads the encoder states once, not
    /// four times. Each row's arithmetic is the same whatever its group, so results do not
    /// depend on the grouping.
    fn run<E: CacheElem>(
        &self,
        inputs: StepInputs<E>,
        mut mean_rows: Vec<Option<&mut [f32]>>,
    ) -> Vec<f32> {
        use rayon::prelude::*;
        let (d, hd, len) = (self.heads * self.hd, self.hd, self.len);
        let rows = mean_rows.len();
        let group = match inputs.kv_rows {
            KvRows::Grouped(group) => group,
            KvRows::Traced(_) => 1,
        };
        let groups = rows.div_ceil(group);
        // Where each group's steps are, once for all its heads.
        let steps: Vec<Vec<usize>> = (0..groups)
            .map(|g| self.step_offsets(inputs.kv_rows, g * group))
            .collect();
        let items: Vec<(usize, usize)> = (0..groups)
            .flat_map(|g| (0..self.heads).map(move |h| (g, h)))
            .collect();
        let done: Vec<GroupHead> = items
            .par_iter()
            .map(|&(g, h)| {
                let members = g * group..((g + 1) * group).min(rows);
                self.group_head(inputs, &steps[g], members, h)
            })
            .collect();
        // Scattered in item order: a row's heads come in order 0..H, so the head mean adds
        // them in the same order as a per-row loop would.
        let mut out = vec![0f32; rows * d];
        for m in mean_rows.iter_mut().flatten() {
            m.fill(0.0);
        }
        for (&(g, h), res) in items.iter().zip(&done) {
            for (i, r) in (g * group..((g + 1) * group).min(rows)).enumerate() {
                out[r * d + h * hd..r * d + (h + 1) * hd]
                    .copy_from_slice(&res.out[i * hd..(i + 1) * hd]);
                if let Some(m) = mean_rows[r].as_deref_mut() {
                    let w = 1.0 / (res.sums[i] * self.heads as f32);
                    for (m, &s) in m.iter_mut().zip(&res.scores[i * len..(i + 1) * len]) {
                        *m += s * w;
                    }
                }
            }
        }
        out
    }

    /// Head `h` of the rows `members`, which all read the cache steps at `steps`.
    fn group_head<E: CacheElem>(
        &self,
        inputs: StepInputs<E>,
        steps: &[usize],
        members: std::ops::Range<usize>,
        h: usize,
    ) -> GroupHead {
        let StepInputs {
            q, kv_rows, mask, ..
        } = inputs;
        let (d, hd, len, n) = (self.heads * self.hd, self.hd, self.len, members.len());
        let mask_row = match (kv_rows, mask) {
            (KvRows::Grouped(group), Some(m)) => {
                let at = (members.start / group) * self.cap;
                Some(&m[at..at + len])
            }
            _ => None,
        };
        let queries: Vec<f32> = members
            .clone()
            .flat_map(|r| &q[r * d + h * hd..r * d + (h + 1) * hd])
            .copied()
            .collect();
        let mut res = GroupHead {
            out: vec![0f32; n * hd],
            scores: vec![0f32; n * len],
            sums: vec![0f32; n],
        };
        let at = h * self.cap * hd;
        if let KvRows::Grouped(group) = kv_rows {
            let head_at = (members.start / group) * self.heads + h;
            let keys = self.cap.div_ceil(cross_attention::KEYS) * cross_attention::KEYS * hd;
            let at = head_at * self.cap * hd;
            let head = CrossHead {
                q: &queries,
                kt: &inputs.k[head_at * keys..(head_at + 1) * keys],
                v: &inputs.v[at..at + self.cap * hd],
                mask: mask_row,
                hd,
                len,
                scale: self.scale,
            };
            head.scores(&mut res.scores, self.wide);
            head.softmax(&mut res.scores, &mut res.sums, self.wide);
            head.values(&res.scores, &res.sums, &mut res.out, self.wide);
            return res;
        }
        let io = HeadIo {
            q: &queries,
            kv: Head {
                k: &inputs.k[at..],
                v: &inputs.v[at..],
                steps,
            },
            mask: mask_row,
            scores: &mut res.scores,
            out: &mut res.out,
            sums: &mut res.sums,
        };
        match self.wide {
            Some(path) => self.heads_wide(path, io),
            None => self.heads(io),
        }
        res
    }

    /// Where query row `r` finds each cached step's vector, as offsets into head 0 (head `h`
    /// adds h·cap·hd).
    fn step_offsets(&self, kv_rows: KvRows, r: usize) -> Vec<usize> {
        let at = |row: usize, j: usize| (row * self.heads * self.cap + j) * self.hd;
        match kv_rows {
            // Read from the transposed keys' head instead (see `group_head`).
            KvRows::Grouped(_) => Vec::new(),
            KvRows::Traced(t) => t[r][..self.len]
                .iter()
                .enumerate()
                .map(|(j, &row)| at(row as usize, j))
                .collect(),
        }
    }

    /// [`AttentionShape::heads`] compiled for AVX2; `_path` proves the CPU runs it.
    fn heads_wide<E: CacheElem>(&self, _path: F32Path, io: HeadIo<E>) {
        #[cfg(target_arch = "x86_64")]
        {
            /// # Safety
            /// The CPU runs AVX2.
            #[target_feature(enable = "avx2,f16c")]
            unsafe fn avx2<E: CacheElem>(s: &AttentionShape, io: HeadIo<E>) {
                if s.hd == ONE_ROW {
                    heads_of_64(s, io)
                } else {
                    s.heads(io)
                }
            }
            // SAFETY: an F32Path exists only on a CPU with AVX2, FMA and F16C.
            unsafe { avx2(self, io) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        self.heads(io)
    }

    /// softmax(q·Kᵀ·scale + mask)·V for each query of one head, every key and value read once
    /// for all of them; leaves each query's unnormalised weights in `scores` and their sum in
    /// `sums`. Inlined into each build (portable, AVX2).
    #[inline(always)]
    fn heads<E: CacheElem>(&self, io: HeadIo<E>) {
        let HeadIo {
            q,
            kv,
            mask,
            scores,
            out,
            sums,
        } = io;
        let (hd, len) = (self.hd, self.len);
        let mut buf = vec![0f32; hd];
        for (j, &at) in kv.steps.iter().enumerate() {
            let key = E::row(&kv.k[at..at + hd], &mut buf, self.wide);
            for (i, qi) in q.chunks_exact(hd).enumerate() {
                let mut x = dot(qi, key) * self.scale;
                if let Some(m) = mask {
                    x += m[j];
                }
                scores[i * len + j] = x;
            }
        }
        softmax_rows(scores, sums, len);
        // Unnormalised weights summed first, divided once at the end (as PyTorch's CPU
        // flash-attention kernel does).
        let one_row = match <&mut [f32; ONE_ROW]>::try_from(&mut *out) {
            Ok(out) if hd == ONE_ROW => Some(out),
            _ => None,
        };
        if let Some(out) = one_row {
            // One query of 64 columns (every self-attention row, every greedy row): the sums
            // stay in eight vector registers across the steps instead of being loaded and
            // stored at each one; the same sums in the same order, so the same bits.
            let mut acc = [0f32; ONE_ROW];
            for (&at, &p) in kv.steps.iter().zip(scores.iter()) {
                let value = E::row(&kv.v[at..at + ONE_ROW], &mut buf, self.wide);
                for (a, &x) in acc.iter_mut().zip(value) {
                    *a += p * x;
                }
            }
            *out = acc;
        } else {
            self.weighted_values(kv, scores, out, &mut buf);
        }
        for (o, &sum) in out.chunks_exact_mut(hd).zip(sums.iter()) {
            for o in o.iter_mut() {
                *o /= sum;
            }
        }
    }

    /// `out[i] = Σ_j scores[i][j] · v_j` for every query of a head, each value read once.
    #[inline(always)]
    fn weighted_values<E: CacheElem>(
        &self,
        kv: Head<E>,
        scores: &[f32],
        out: &mut [f32],
        buf: &mut [f32],
    ) {
        let (hd, len) = (self.hd, self.len);
        for (j, &at) in kv.steps.iter().enumerate() {
            let value = E::row(&kv.v[at..at + hd], buf, self.wide);
            for (i, o) in out.chunks_exact_mut(hd).enumerate() {
                let p = scores[i * len + j];
                for (o, &x) in o.iter_mut().zip(value) {
                    *o += p * x;
                }
            }
        }
    }
}

/// A head of this width with one query takes the register-resident weighted sum (the head
/// size of every model we serve).
const ONE_ROW: usize = 64;

/// Each row of `scores` (`len` wide) to `exp(x − max)`, its sum into `sums`: the unnormalised
/// softmax every build shares.
#[inline(always)]
fn softmax_rows(scores: &mut [f32], sums: &mut [f32], len: usize) {
    for (row, sum) in scores.chunks_exact_mut(len.max(1)).zip(sums.iter_mut()) {
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
        *sum = 0.0;
        for s in row.iter_mut() {
            *s = (*s - max).exp();
            *sum += *s;
        }
    }
}

/// [`AttentionShape::heads`] for heads of [`ONE_ROW`] columns (every model we serve), written
/// out for AVX2: each key is widened (F16C) once into registers for all the queries, and each
/// query's weighted sum of the values stays in registers across the steps, its values widened
/// straight into the products (the generic build spent a third of its time storing and
/// reloading widened rows and sums). The same operations in the same order as [`dot`] and the
/// generic loops, so the same bits (tested against the portable build).
///
/// # Safety
/// The CPU runs AVX2 and F16C; `s.hd == ONE_ROW`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn heads_of_64<E: CacheElem>(s: &AttentionShape, io: HeadIo<E>) {
    use std::arch::x86_64::*;
    let HeadIo {
        q,
        kv,
        mask,
        scores,
        out,
        sums,
    } = io;
    let len = s.len;
    for (j, &at) in kv.steps.iter().enumerate() {
        let key = &kv.k[at..at + ONE_ROW];
        let key: [__m256; 8] = std::array::from_fn(|c| load8(key, 8 * c));
        for (i, qi) in q.chunks_exact(ONE_ROW).enumerate() {
            let mut acc = _mm256_setzero_ps();
            for (c, &kc) in key.iter().enumerate() {
                acc = _mm256_add_ps(
                    acc,
                    _mm256_mul_ps(_mm256_loadu_ps(qi[8 * c..].as_ptr()), kc),
                );
            }
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
            // `dot`'s reduction, with the empty tail it sums for 64 columns.
            let mut x = reduce(lanes, std::iter::empty::<f32>().sum()) * s.scale;
            if let Some(m) = mask {
                x += m[j];
            }
            scores[i * len + j] = x;
        }
    }
    softmax_rows(scores, sums, len);
    let weights = scores.chunks_exact(len.max(1));
    for ((o, w), &sum) in out.chunks_exact_mut(ONE_ROW).zip(weights).zip(sums.iter()) {
        let mut acc = [_mm256_setzero_ps(); 8];
        for (&at, &p) in kv.steps.iter().zip(w) {
            let value = &kv.v[at..at + ONE_ROW];
            let p = _mm256_set1_ps(p);
            for (c, a) in acc.iter_mut().enumerate() {
                *a = _mm256_add_ps(*a, _mm256_mul_ps(p, load8(value, 8 * c)));
            }
        }
        let sum = _mm256_set1_ps(sum);
        for (c, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(o[8 * c..8 * c + 8].as_mut_ptr(), _mm256_div_ps(*a, sum));
        }
    }
}

/// Elements `at..at + 8` of a cached row as f32 (exact).
///
/// # Safety
/// The CPU runs AVX2 and F16C; `row` holds at least `at + 8` elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
#[inline]
pub(super) unsafe fn load8<E: CacheElem>(row: &[E], at: usize) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    debug_assert!(row.len() >= at + 8);
    let p = row.as_ptr().add(at);
    if E::HALF {
        _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
    } else {
        _mm256_loadu_ps(p.cast())
    }
}

/// Elements `at..at + 16` of a cached row as f32 (exact).
///
/// # Safety
/// The CPU runs AVX-512F and F16C; `row` holds at least `at + 16` elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,f16c")]
#[inline]
pub(super) unsafe fn load16<E: CacheElem>(row: &[E], at: usize) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    debug_assert!(row.len() >= at + 16);
    let p = row.as_ptr().add(at);
    if E::HALF {
        _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()))
    } else {
        _mm512_loadu_ps(p.cast())
    }
}

/// One step's queries (R, H·hd), caches (B, H, cap, hd), where each row reads them, and the
/// additive mask (B, cap; grouped rows only).
#[derive(Clone, Copy)]
pub(crate) struct StepInputs<'a, E> {
    q: &'a [f32],
    k: &'a [E],
    v: &'a [E],
    kv_rows: KvRows<'a>,
    mask: Option<&'a [f32]>,
}

/// One (group, head) item's results: per member row, its output (hd), unnormalised weights
/// (len) and their sum.
struct GroupHead {
    out: Vec<f32>,
    scores: Vec<f32>,
    sums: Vec<f32>,
}

/// The queries of one head (`n` rows of hd), their keys and values, mask, and where the
/// weights, sums and outputs go (`n` rows each).
struct HeadIo<'a, E> {
    q: &'a [f32],
    kv: Head<'a, E>,
    mask: Option<&'a [f32]>,
    scores: &'a mut [f32],
    out: &'a mut [f32],
    sums: &'a mut [f32],
}

/// One head's keys and values (slices starting at the head) and each step's offset in them.
#[derive(Clone, Copy)]
struct Head<'a, E> {
    k: &'a [E],
    v: &'a [E],
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
    reduce(acc, ar.iter().zip(br).map(|(x, y)| x * y).sum())
}

/// [`dot`]'s eight running sums and tail to one value, in one fixed order.
#[inline(always)]
fn reduce(acc: [f32; 8], tail: f32) -> f32 {
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
        // 64: one-query heads take the register-resident weighted sum. f16 caches are
        // widened by F16C on the wide path, in software on the other.
        for hd in [20, ONE_ROW] {
            wide_and_portable_agree::<f32>(path, hd);
            wide_and_portable_agree::<f16>(path, hd);
        }
    }

    /// `n` values in [−1, 1) as cache elements.
    fn cache<E: CacheElem>(rng: &mut fastrand::Rng, n: usize) -> Vec<E> {
        (0..n)
            .map(|_| E::from_f64((rng.f32() * 2.0 - 1.0) as f64))
            .collect()
    }

    fn wide_and_portable_agree<E: CacheElem>(path: F32Path, hd: usize) {
        let (b, heads, cap, len) = (3, 4, 9, 7);
        let mut rng = fastrand::Rng::with_seed(7);
        let (k, v) = (
            cache::<E>(&mut rng, b * heads * cap * hd),
            cache::<E>(&mut rng, b * heads * cap * hd),
        );
        let q = cache::<f32>(&mut rng, 6 * heads * hd);
        let mask: Vec<f32> = (0..b * cap)
            .map(|i| if i % 5 == 0 { -1e9 } else { 0.0 })
            .collect();
        let traced: Vec<Vec<u32>> = (0..6)
            .map(|r| (0..cap as u32).map(|j| (r + j) % 3).collect())
            .collect();
        // Grouped rows read keys in panels (random values: only the bits of both builds
        // are compared).
        let panels = cache::<E>(&mut rng, b * heads * hd * cap.next_multiple_of(32));
        for (rows, mask, k) in [
            (KvRows::Grouped(2), Some(mask.as_slice()), &panels),
            (KvRows::Traced(&traced), None, &k),
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
                let inputs = StepInputs {
                    q: &q,
                    k,
                    v: &v,
                    kv_rows: rows,
                    mask,
                };
                let out = shape.run(inputs, means.chunks_mut(len).map(Some).collect());
                (out, means)
            };
            let (narrow, wide) = (run(None), run(Some(path)));
            let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&narrow.0), bits(&wide.0));
            assert_eq!(bits(&narrow.1), bits(&wide.1));
        }
    }

    /// Grouped rows (cross-attention: keys transposed, one pass per group) and the same rows
    /// one by one (traced) both give a plain softmax-weighted sum of the cached values.
    #[test]
    fn grouped_and_traced_rows_match_a_plain_reference() {
        // 64: rows alone (traced) take the register-resident weighted sum; groups take
        // `cross_attention`'s kernels.
        for hd in [16, ONE_ROW] {
            grouped_and_traced_match::<f32>(hd);
            grouped_and_traced_match::<f16>(hd);
        }
    }

    /// Against a plain softmax-weighted sum in f64 of the cached values (f16 caches widen
    /// exactly, so the bound is f32 rounding's either way).
    fn grouped_and_traced_match<E: CacheElem>(hd: usize) {
        let (b, heads, cap, len) = (2, 3, 11, 9);
        let mut rng = fastrand::Rng::with_seed(3);
        let (k, v) = (
            cache::<E>(&mut rng, b * heads * cap * hd),
            cache::<E>(&mut rng, b * heads * cap * hd),
        );
        // The same keys in panels per (row, head), as cross-attention caches them.
        let (keys, panel) = (cross_attention::KEYS, cap.div_ceil(cross_attention::KEYS));
        let mut kt = vec![E::zero(); b * heads * panel * hd * keys];
        for head in 0..b * heads {
            for j in 0..cap {
                for c in 0..hd {
                    let at = ((head * panel + j / keys) * hd + c) * keys + j % keys;
                    kt[at] = k[(head * cap + j) * hd + c];
                }
            }
        }
        // Seven rows in groups of four: the last group is short.
        let q = cache::<f32>(&mut rng, 7 * heads * hd);
        let traced: Vec<Vec<u32>> = (0..7).map(|r| vec![r / 4; cap]).collect();
        for wide in [None, F32Path::detect()] {
            let shape = AttentionShape {
                heads,
                cap,
                hd,
                len,
                scale: 0.25,
                wide,
            };
            let run = |rows, k: &[E]| {
                let mut means = vec![0f32; 7 * len];
                let inputs = StepInputs {
                    q: &q,
                    k,
                    v: &v,
                    kv_rows: rows,
                    mask: None,
                };
                shape.run(inputs, means.chunks_mut(len).map(Some).collect())
            };
            let grouped = run(KvRows::Grouped(4), &kt);
            let alone = run(KvRows::Traced(&traced), &k);
            // And against a plain softmax-weighted sum.
            for r in 0..7 {
                for h in 0..heads {
                    let qh = &q[r * heads * hd + h * hd..][..hd];
                    let base = ((r / 4) * heads + h) * cap * hd;
                    let s: Vec<f64> = (0..len)
                        .map(|j| {
                            let kj = &k[base + j * hd..][..hd];
                            let prods = qh.iter().zip(kj).map(|(a, b)| *a as f64 * b.to_f64());
                            prods.sum::<f64>() * 0.25
                        })
                        .collect();
                    let mx = s.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for c in 0..hd {
                        let want: f64 = (0..len)
                            .map(|j| e[j] * v[base + j * hd + c].to_f64())
                            .sum::<f64>()
                            / z;
                        for (what, out) in [("grouped", &grouped), ("traced", &alone)] {
                            let got = out[r * heads * hd + h * hd + c] as f64;
                            assert!(
                                (got - want).abs() < 1e-5,
                                "{what} row {r} head {h} [{c}]: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
