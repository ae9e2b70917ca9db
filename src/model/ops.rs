//! CPU kernels candle lacks in the precision we need.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

/// Layer norm with a two-pass mean/variance. candle-nn's fused kernel uses E[x²]−E[x]² in
/// f32, which loses digits on residual streams; parity with PyTorch needs the stable form.
struct LayerNormOp {
    eps: f32,
}

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("expected contiguous inputs"),
    }
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
            contiguous(s1, l1)?,
            contiguous(s2, l2)?,
            contiguous(s3, l3)?,
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
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        x.contiguous()?
            .apply_op3_no_bwd(gamma, beta, &LayerNormOp { eps })
    } else {
        candle_nn::ops::layer_norm_slow(x, gamma, beta, eps)
    }
}

/// Columns per packed panel (two AVX vectors).
pub(crate) const PANEL: usize = 16;

/// A weight `W` (n, k) packed once at load time into column panels of `W^T`: panel `p` holds
/// rows `16p..16p+16` of `W` interleaved over k, `(k, 16)` contiguous, zero-padded. The
/// kernel then streams each panel sequentially (what gemm's per-call packing would do).
pub(crate) fn pack_panels(w: &Tensor) -> candle_core::Result<Tensor> {
    let (n, k) = w.dims2()?;
    let w = w.to_device(&candle_core::Device::Cpu)?.to_vec2::<f32>()?;
    let panels = n.div_ceil(PANEL);
    let mut out = vec![0f32; panels * k * PANEL];
    for (row, v) in w.iter().enumerate() {
        let base = (row / PANEL) * k * PANEL + row % PANEL;
        for (i, &x) in v.iter().enumerate() {
            out[base + i * PANEL] = x;
        }
    }
    Tensor::from_vec(out, (panels, k, PANEL), &candle_core::Device::Cpu)
}

/// `y = x W^T + b` with `W` packed by [`pack_panels`], for any number of rows: `x` (m, k),
/// `b` padded to a whole number of panels. Each output is accumulated over k in order with
/// FMAs, like BLAS microkernels, which keeps us close to PyTorch's rounding.
struct PackedLinear {
    n: usize,
}

/// Rows per register tile: 6 x 16 outputs = 12 accumulators, as in BLAS kernels.
const TILE_ROWS: usize = 6;

/// Rows of `x` handled per pass over the weights, so they stay in L2.
const ROW_CHUNK: usize = 96;

impl CustomOp3 for PackedLinear {
    fn name(&self) -> &'static str {
        "tarjama-packed-linear"
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
        let (x, w, b) = (
            contiguous(s1, l1)?,
            contiguous(s2, l2)?,
            contiguous(s3, l3)?,
        );
        let (m, k) = l1.shape().dims2()?;
        let (panels, k2, width) = l2.shape().dims3()?;
        let n = self.n;
        if k != k2 || width != PANEL || panels * PANEL < n || b.len() != panels * PANEL {
            candle_core::bail!(
                "packed linear: shape mismatch x {m}x{k}, w {panels}x{k2}x{width}, n {n}"
            );
        }
        let y = packed_matmul(x, w, b, m, n, k, panels);
        Ok((CpuStorage::F32(y), Shape::from_dims(&[m, n])))
    }
}

/// `x` (m, k) times packed `w` (panels, k, 16) plus `b` -> new (m, n) buffer.
pub(crate) fn packed_matmul(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
    panels: usize,
) -> Vec<f32> {
    // Every element is written by the kernel; skipping the zero fill saves a pass over
    // logits-sized buffers each step.
    let mut y: Vec<f32> = Vec::with_capacity(m * n);
    for r0 in (0..m).step_by(ROW_CHUNK) {
        let rows = ROW_CHUNK.min(m - r0);
        let xs = &x[r0 * k..(r0 + rows) * k];
        // SAFETY: rows r0..r0+rows of the allocation, written before set_len below.
        let ys = unsafe { y.as_mut_ptr().add(r0 * n) };
        skinny::run(xs, w, b, ys, rows, n, k, panels);
    }
    // SAFETY: the kernel wrote all m*n outputs (every row, every column < n).
    unsafe { y.set_len(m * n) };
    y
}

/// Packed linear straight into a `Vec` (the logits, consumed on the CPU).
pub(crate) fn packed_linear_vec(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    n: usize,
) -> candle_core::Result<Vec<f32>> {
    let (m, k) = x.dims2()?;
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    let (panels, k2, _) = w.dims3()?;
    if k != k2 || b.dim(0)? != panels * PANEL {
        candle_core::bail!("packed linear: shape mismatch");
    }
    let (ws, wl) = w.storage_and_layout();
    let candle_core::Storage::Cpu(wc) = &*ws else {
        candle_core::bail!("packed linear: weights must be on the CPU");
    };
    let wv = contiguous(wc, wl)?;
    let bv = b.to_vec1::<f32>()?;
    Ok(packed_matmul(&xs, wv, &bv, m, n, k, panels))
}

/// Whether the packed kernel can run here (x86-64 with AVX2 and FMA).
pub(crate) fn packed_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `x` (m, k), packed `w`, padded `b` -> (m, n). Caller checks `packed_available`.
pub(crate) fn packed_linear(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    n: usize,
) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op3_no_bwd(w, b, &PackedLinear { n })
}

/// Rows `ids` of the packed `W` (the tied embedding lookup) -> (len, k).
struct PackedRows;

impl candle_core::CustomOp2 for PackedRows {
    fn name(&self) -> &'static str {
        "tarjama-packed-rows"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let w = contiguous(s1, l1)?;
        let ids = match l2.contiguous_offsets() {
            Some((a, b)) => &s2.as_slice::<u32>()?[a..b],
            None => candle_core::bail!("packed rows: ids must be contiguous"),
        };
        let (panels, k, _) = l1.shape().dims3()?;
        let mut out = Vec::with_capacity(ids.len() * k);
        for &id in ids {
            let id = id as usize;
            if id >= panels * PANEL {
                candle_core::bail!("packed rows: id {id} out of range");
            }
            let base = (id / PANEL) * k * PANEL + id % PANEL;
            out.extend((0..k).map(|i| w[base + i * PANEL]));
        }
        Ok((CpuStorage::F32(out), Shape::from_dims(&[ids.len(), k])))
    }
}

pub(crate) fn packed_rows(w: &Tensor, ids: &Tensor) -> candle_core::Result<Tensor> {
    w.apply_op2_no_bwd(ids, &PackedRows)
}

mod skinny {
    /// Output pointer shared by tasks that write disjoint columns.
    #[derive(Clone, Copy)]
    struct OutPtr(*mut f32);
    // SAFETY: every task writes only the columns of its own panels.
    unsafe impl Send for OutPtr {}
    unsafe impl Sync for OutPtr {}

    /// `x` (m, k) regrouped k-major in blocks of TILE_ROWS rows (zero-padded), so the kernel's
    /// broadcasts read consecutive addresses, as BLAS packs its left operand.
    pub(super) fn pack_rows(x: &[f32], m: usize, k: usize) -> Vec<f32> {
        let t = super::TILE_ROWS;
        let blocks = m.div_ceil(t);
        let mut out = vec![0f32; blocks * k * t];
        for r in 0..m {
            let base = (r / t) * k * t + r % t;
            for (i, &v) in x[r * k..(r + 1) * k].iter().enumerate() {
                out[base + i * t] = v;
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn run(
        x: &[f32],
        w: &[f32],
        b: &[f32],
        y: *mut f32,
        m: usize,
        n: usize,
        k: usize,
        panels: usize,
    ) {
        let tasks = rayon::current_num_threads().clamp(1, panels.max(1));
        // Even, so the AVX-512 kernel's panel pairs never straddle two tasks.
        let per = panels.div_ceil(tasks).next_multiple_of(2);
        let out = OutPtr(y);
        let xk = pack_rows(x, m, k);
        let x = xk.as_slice();
        rayon::scope(|s| {
            for t in 0..tasks {
                let (p0, p1) = (t * per, ((t + 1) * per).min(panels));
                if p0 >= p1 {
                    continue;
                }
                s.spawn(move |_| {
                    let out = out;
                    // SAFETY: avx2/fma checked by the caller; shapes checked in cpu_fwd, so
                    // every index stays inside x (m*k), w (panels*k*16), b, y (m*n).
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        if super::avx512_available() {
                            super::avx512::panels(x, w, b, out.0, m, n, k, p0, p1)
                        } else {
                            super::avx::panels(x, w, b, out.0, m, n, k, p0, p1)
                        }
                    }
                    #[cfg(not(target_arch = "x86_64"))]
                    {
                        let _ = (x, w, b, out, m, n, k, p0, p1);
                    }
                });
            }
        });
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::{PANEL, TILE_ROWS};
    use std::arch::x86_64::*;

    /// Panels p0..p1 of y = x W^T + b. k is walked in blocks of `K_BLOCK` so one panel's
    /// block (16 KB) stays in L1 while every row block uses it; each output still sums over
    /// k in order (partial sums go back into the accumulators), so rounding is unchanged.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn panels(
        x: &[f32],
        w: &[f32],
        b: &[f32],
        y: *mut f32,
        m: usize,
        n: usize,
        k: usize,
        p0: usize,
        p1: usize,
    ) {
        if p0 >= p1 {
            return;
        }
        let blocks = m.div_ceil(TILE_ROWS);
        let mut tiles = vec![[[0f32; PANEL]; TILE_ROWS]; blocks];
        for p in p0..p1 {
            let wp = w.as_ptr().add(p * k * PANEL);
            for k0 in (0..k).step_by(K_BLOCK) {
                let k1 = (k0 + K_BLOCK).min(k);
                for (blk, tile) in tiles.iter_mut().enumerate() {
                    let r = blk * TILE_ROWS;
                    let span = Span {
                        k,
                        k0,
                        k1,
                        r0: r,
                        fresh: k0 == 0,
                    };
                    match m - r {
                        6.. => block::<6>(x, wp, span, tile),
                        5 => block::<5>(x, wp, span, tile),
                        4 => block::<4>(x, wp, span, tile),
                        3 => block::<3>(x, wp, span, tile),
                        2 => block::<2>(x, wp, span, tile),
                        _ => block::<1>(x, wp, span, tile),
                    }
                }
            }
            let c0 = p * PANEL;
            let cols = PANEL.min(n - c0);
            for (blk, tile) in tiles.iter().enumerate() {
                let r = blk * TILE_ROWS;
                for (dr, row) in tile.iter().enumerate().take((m - r).min(TILE_ROWS)) {
                    let dst = y.add((r + dr) * n + c0);
                    for (c, v) in row.iter().enumerate().take(cols) {
                        *dst.add(c) = v + b[c0 + c];
                    }
                }
            }
        }
    }

    /// Depth of one k block: 256 × 16 floats of a panel = 16 KB, half of L1.
    pub(super) const K_BLOCK: usize = 256;

    /// Which part of the work one `block` call does.
    #[derive(Clone, Copy)]
    pub(super) struct Span {
        pub(super) k: usize,
        pub(super) k0: usize,
        pub(super) k1: usize,
        pub(super) r0: usize,
        /// First k block: start from zero, not from the tile's partial sums.
        pub(super) fresh: bool,
    }

    /// R rows of x times one panel over k0..k1, continuing the sums in `tile`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn block<const R: usize>(
        x: &[f32],
        wp: *const f32,
        s: Span,
        tile: &mut [[f32; PANEL]; TILE_ROWS],
    ) {
        // Packed x: block r0 / TILE_ROWS, k-major, TILE_ROWS values per k.
        let xp = x.as_ptr().add((s.r0 / TILE_ROWS) * s.k * TILE_ROWS);
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        if !s.fresh {
            for (r, a) in acc.iter_mut().enumerate() {
                a[0] = _mm256_loadu_ps(tile[r].as_ptr());
                a[1] = _mm256_loadu_ps(tile[r].as_ptr().add(8));
            }
        }
        for i in s.k0..s.k1 {
            let w0 = _mm256_loadu_ps(wp.add(i * PANEL));
            let w1 = _mm256_loadu_ps(wp.add(i * PANEL + 8));
            for (r, a) in acc.iter_mut().enumerate() {
                let xv = _mm256_broadcast_ss(&*xp.add(i * TILE_ROWS + r));
                a[0] = _mm256_fmadd_ps(xv, w0, a[0]);
                a[1] = _mm256_fmadd_ps(xv, w1, a[1]);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(tile[r].as_mut_ptr(), a[0]);
            _mm256_storeu_ps(tile[r].as_mut_ptr().add(8), a[1]);
        }
    }
}

/// Whether the AVX-512 kernel can run here (checked once).
pub(crate) fn avx512_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The same product with 512-bit registers: two neighbouring 16-column panels at once, one
/// zmm per row and panel. Each output is the same chain of FMAs over k as in [`avx`], so
/// results are bit-identical; only twice the columns go through per instruction.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::avx::{Span, K_BLOCK};
    use super::{PANEL, TILE_ROWS};
    use std::arch::x86_64::*;

    type Tile = [[f32; 2 * PANEL]; TILE_ROWS];

    /// Panels p0..p1 of y = x W^T + b (an odd last panel goes through the AVX2 kernel).
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn panels(
        x: &[f32],
        w: &[f32],
        b: &[f32],
        y: *mut f32,
        m: usize,
        n: usize,
        k: usize,
        p0: usize,
        p1: usize,
    ) {
        let pairs_end = p0 + (p1 - p0) / 2 * 2;
        let blocks = m.div_ceil(TILE_ROWS);
        let mut tiles = vec![[[0f32; 2 * PANEL]; TILE_ROWS]; blocks];
        for p in (p0..pairs_end).step_by(2) {
            let wp = w.as_ptr().add(p * k * PANEL);
            for k0 in (0..k).step_by(K_BLOCK) {
                let k1 = (k0 + K_BLOCK).min(k);
                for (blk, tile) in tiles.iter_mut().enumerate() {
                    let r0 = blk * TILE_ROWS;
                    let span = Span {
                        k,
                        k0,
                        k1,
                        r0,
                        fresh: k0 == 0,
                    };
                    match m - r0 {
                        6.. => block::<6>(x, wp, span, tile),
                        5 => block::<5>(x, wp, span, tile),
                        4 => block::<4>(x, wp, span, tile),
                        3 => block::<3>(x, wp, span, tile),
                        2 => block::<2>(x, wp, span, tile),
                        _ => block::<1>(x, wp, span, tile),
                    }
                }
            }
            write(&tiles, b, y, m, n, p);
        }
        super::avx::panels(x, w, b, y, m, n, k, pairs_end, p1);
    }

    /// Tiles of panels p, p+1 plus bias into y.
    unsafe fn write(tiles: &[Tile], b: &[f32], y: *mut f32, m: usize, n: usize, p: usize) {
        let c0 = p * PANEL;
        let cols = (2 * PANEL).min(n - c0);
        for (blk, tile) in tiles.iter().enumerate() {
            let r = blk * TILE_ROWS;
            for (dr, row) in tile.iter().enumerate().take((m - r).min(TILE_ROWS)) {
                let dst = y.add((r + dr) * n + c0);
                for (c, v) in row.iter().enumerate().take(cols) {
                    *dst.add(c) = v + b[c0 + c];
                }
            }
        }
    }

    /// R rows of x times panels p, p+1 over k0..k1, continuing the sums in `tile`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn block<const R: usize>(x: &[f32], wp: *const f32, s: Span, tile: &mut Tile) {
        let xp = x.as_ptr().add((s.r0 / TILE_ROWS) * s.k * TILE_ROWS);
        // The second panel starts k·16 floats after the first.
        let wq = wp.add(s.k * PANEL);
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        if !s.fresh {
            for (r, a) in acc.iter_mut().enumerate() {
                a[0] = _mm512_loadu_ps(tile[r].as_ptr());
                a[1] = _mm512_loadu_ps(tile[r].as_ptr().add(PANEL));
            }
        }
        for i in s.k0..s.k1 {
            let w0 = _mm512_loadu_ps(wp.add(i * PANEL));
            let w1 = _mm512_loadu_ps(wq.add(i * PANEL));
            for (r, a) in acc.iter_mut().enumerate() {
                let xv = _mm512_set1_ps(*xp.add(i * TILE_ROWS + r));
                a[0] = _mm512_fmadd_ps(xv, w0, a[0]);
                a[1] = _mm512_fmadd_ps(xv, w1, a[1]);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm512_storeu_ps(tile[r].as_mut_ptr(), a[0]);
            _mm512_storeu_ps(tile[r].as_mut_ptr().add(PANEL), a[1]);
        }
    }

    #[cfg(test)]
    mod tests {
        /// Bit-identical to the AVX2 kernel, odd panel counts and ragged rows included.
        #[test]
        fn same_bits_as_avx2() {
            if !super::super::avx512_available() || !super::super::packed_available() {
                return;
            }
            for &(m, k, n) in &[
                (1usize, 37usize, 40usize),
                (7, 300, 48),
                (13, 512, 100),
                (64, 96, 33),
            ] {
                let panels = n.div_ceil(super::PANEL);
                let x: Vec<f32> = (0..m * k)
                    .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013)
                    .collect();
                let w: Vec<f32> = (0..panels * k * super::PANEL)
                    .map(|i| ((i * 53 % 97) as f32 - 48.0) * 0.021)
                    .collect();
                let b: Vec<f32> = (0..panels * super::PANEL).map(|i| i as f32 * 0.5).collect();
                let xk = super::super::skinny::pack_rows(&x, m, k);
                let mut a = vec![0f32; m * n];
                let mut c = vec![0f32; m * n];
                unsafe {
                    super::panels(&xk, &w, &b, a.as_mut_ptr(), m, n, k, 0, panels);
                    super::super::avx::panels(&xk, &w, &b, c.as_mut_ptr(), m, n, k, 0, panels);
                }
                assert!(
                    a.iter().zip(&c).all(|(p, q)| p.to_bits() == q.to_bits()),
                    "{m}x{k}x{n}"
                );
            }
        }
    }
}

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

/// Read access to a CPU f32 tensor's elements (its layout must be contiguous).
fn cpu_slice<R>(
    t: &Tensor,
    f: impl FnOnce(&[f32]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("expected a CPU tensor");
    };
    f(contiguous(cpu, layout)?)
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
/// run in parallel.
pub(crate) fn decode_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    len: usize,
    kv_rows: KvRows,
    mask: Option<&Tensor>,
    scale: f32,
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
    };
    let run = |q: &[f32], k: &[f32], v: &[f32], mask: Option<&[f32]>| {
        Ok(shape.run(q, k, v, kv_rows, mask, rows))
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
}

impl AttentionShape {
    fn run(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        kv_rows: KvRows,
        mask: Option<&[f32]>,
        rows: usize,
    ) -> Vec<f32> {
        use rayon::prelude::*;
        let d = self.heads * self.hd;
        let mut out = vec![0f32; rows * d];
        out.par_chunks_mut(d).enumerate().for_each(|(r, out_row)| {
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
                self.head(
                    qh,
                    head,
                    mask_row,
                    &mut scores,
                    &mut out_row[h * self.hd..(h + 1) * self.hd],
                );
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

    /// softmax(q·Kᵀ·scale + mask)·V for one row and head.
    fn head(&self, q: &[f32], kv: Head, mask: Option<&[f32]>, scores: &mut [f32], out: &mut [f32]) {
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
    }
}

/// One head's keys and values (slices starting at the head) and each step's offset in them.
#[derive(Clone, Copy)]
struct Head<'a> {
    k: &'a [f32],
    v: &'a [f32],
    steps: &'a [usize],
}

/// Dot product with eight running sums (vectorises; rounding like a BLAS kernel's).
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

/// Σ exp(x − max) over `row`, summed in f64 (the log-softmax normaliser over a vocabulary:
/// 60 000 exponentials per row per step). With AVX2/FMA eight at a time, Cephes-style (within
/// 2 ulp of libm's expf); otherwise libm.
pub(crate) fn sum_exp_shifted(row: &[f32], max: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if packed_available() {
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
            if !super::super::packed_available() {
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
