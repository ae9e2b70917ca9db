//! f32 GEMM on weights packed once at load time.
//!
//! A weight `W` (n, k) is packed into column panels of `Wᵀ`: panel `p` holds rows
//! `16p..16p+16` of `W` interleaved over k, `(k, 16)` contiguous, zero-padded, so the kernel
//! streams each panel sequentially (what a BLAS's per-call packing would do, once). The left
//! operand is regrouped k-major in blocks of 6 rows; a 6 × 16 register tile (12 accumulators)
//! walks k in blocks of 256 so a panel's block stays in L1 while every row block uses it.
//! Each output is accumulated over k in order with FMAs, so the AVX2 and AVX-512 kernels give
//! the same bits, and stay within PyTorch's rounding (the f32 parity tests are exact to 1e-4).
//!
//! Measured end to end with it (opus-mt-ar-en bench, 2 threads, 2-core AVX2 EPYC shared with
//! other builds, medians of 3): 75.7 / 26.8 / 37.7 target tokens/s greedy batch 16 / beam 4
//! batch 16 / greedy batch 1 (issue #14 reports 233 / 86 / 114 on an idle AVX-512 EPYC).

use candle_core::{CpuStorage, Layout, Shape, Tensor};

use super::{contiguous, Dense, OutPtr};

/// Columns per packed panel (two AVX vectors).
pub(crate) const PANEL: usize = 16;

/// Rows per register tile: 6 x 16 outputs = 12 accumulators, as in BLAS kernels.
const TILE_ROWS: usize = 6;

/// Rows of `x` handled per pass over the weights, so they stay in L2.
const ROW_CHUNK: usize = 96;

/// Which f32 kernel family runs; a value exists only where the CPU has been checked to run it.
/// On other architectures the enum has no variant, so no `F32Path` (and no [`PackedF32`]) can
/// exist there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum F32Kind {
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// Proof that this CPU runs an f32 kernel family (AVX2+FMA+F16C, or AVX-512F besides).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct F32Path(F32Kind);

/// AVX2, FMA and F16C (the f16 KV caches' conversions; every AVX2 CPU has it), checked once.
pub(crate) fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// AVX-512F (with AVX2 and FMA), checked once.
fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| avx2_fma() && is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl F32Path {
    /// Every family this CPU runs, narrowest first.
    pub(crate) fn all() -> Vec<Self> {
        #[allow(unused_mut)]
        let mut out = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if avx2_fma() {
                out.push(Self(F32Kind::Avx2));
            }
            if avx512() {
                out.push(Self(F32Kind::Avx512));
            }
        }
        out
    }

    /// The widest family the CPU runs and `TARJAMA_KERNEL_ISA` allows; `None` without AVX2/FMA
    /// (or capped to `portable`): then linear layers use candle's gemm.
    pub(crate) fn detect() -> Option<Self> {
        let all = Self::all();
        match super::isa_cap().as_deref() {
            Some("portable") => None,
            Some("avx2") | Some("avx-vnni") => all.first().copied(),
            _ => all.last().copied(),
        }
    }

    /// Whether this path runs AVX-512F (besides AVX2 and FMA).
    pub(crate) fn is_avx512(self) -> bool {
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            F32Kind::Avx2 => false,
            #[cfg(target_arch = "x86_64")]
            F32Kind::Avx512 => true,
        }
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn name(self) -> &'static str {
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            F32Kind::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            F32Kind::Avx512 => "avx512",
        }
    }
}

/// A weight packed for the f32 kernels, with its bias padded to whole panels.
pub(crate) struct PackedF32 {
    w: Vec<f32>,
    bias: Vec<f32>,
    n: usize,
    k: usize,
    panels: usize,
    path: F32Path,
}

impl PackedF32 {
    /// Packs `w` (n, k), row-major (PyTorch's (out, in) layout), with bias `b` (n).
    pub(crate) fn new(d: Dense, path: F32Path) -> Self {
        let Dense { w, b, n, k } = d;
        let panels = n.div_ceil(PANEL);
        let mut out = vec![0f32; panels * k * PANEL];
        for (row, v) in w.chunks_exact(k).enumerate() {
            let base = (row / PANEL) * k * PANEL + row % PANEL;
            for (i, &x) in v.iter().enumerate() {
                out[base + i * PANEL] = x;
            }
        }
        let mut bias = b.to_vec();
        bias.resize(panels * PANEL, 0.0);
        Self {
            w: out,
            bias,
            n,
            k,
            panels,
            path,
        }
    }

    /// `x` (m, k) row-major -> `x Wᵀ + b` (m, n) row-major.
    pub(crate) fn matmul(&self, x: &[f32], m: usize) -> candle_core::Result<Vec<f32>> {
        let (n, k) = (self.n, self.k);
        if x.len() != m * k {
            candle_core::bail!("packed f32: input of {} values is not {m}x{k}", x.len());
        }
        // Every element is written by the kernel; skipping the zero fill saves a pass over
        // logits-sized buffers each step.
        let mut y: Vec<f32> = Vec::with_capacity(m * n);
        for r0 in (0..m).step_by(ROW_CHUNK) {
            let rows = ROW_CHUNK.min(m - r0);
            let xs = &x[r0 * k..(r0 + rows) * k];
            // In bounds: rows r0..r0+rows of the allocation, written before set_len below.
            let ys = y.as_mut_ptr().wrapping_add(r0 * n);
            self.run(xs, ys, rows);
        }
        // SAFETY: `run` writes every column < n of every row it is given (an F32Path always
        // names a kernel that runs: there is no branch that skips the work), and the loop
        // above gave it every row.
        unsafe { y.set_len(m * n) };
        Ok(y)
    }

    /// `x` (…, k) -> (…, n).
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims().to_vec();
        let rows = x.elem_count() / self.k.max(1);
        let y = x
            .reshape((rows, self.k))?
            .contiguous()?
            .apply_op1_no_bwd(&Op(self))?;
        let mut out = dims;
        if let Some(last) = out.last_mut() {
            *last = self.n;
        }
        y.reshape(out)
    }

    /// Rows `ids` of `W` (the tied embedding lookup) -> (len, k).
    pub(crate) fn rows(&self, ids: &[u32]) -> candle_core::Result<Vec<f32>> {
        let k = self.k;
        let mut out = Vec::with_capacity(ids.len() * k);
        for &id in ids {
            let id = id as usize;
            if id >= self.n {
                candle_core::bail!("packed rows: id {id} out of range");
            }
            let base = (id / PANEL) * k * PANEL + id % PANEL;
            out.extend((0..k).map(|i| self.w[base + i * PANEL]));
        }
        Ok(out)
    }

    /// Rows `x` (m, k) -> y (m, n) through the kernel; `y` points at m·n writable floats.
    fn run(&self, x: &[f32], y: *mut f32, m: usize) {
        let (n, k, panels) = (self.n, self.k, self.panels);
        let tasks = rayon::current_num_threads().clamp(1, panels.max(1));
        // Even, so the AVX-512 kernel's panel pairs never straddle two tasks.
        let per = panels.div_ceil(tasks).next_multiple_of(2);
        let out = OutPtr(y);
        let xk = pack_rows(x, m, k);
        let x = xk.as_slice();
        let (w, b, path) = (self.w.as_slice(), self.bias.as_slice(), self.path);
        rayon::scope(|s| {
            for t in 0..tasks {
                let (p0, p1) = (t * per, ((t + 1) * per).min(panels));
                if p0 >= p1 {
                    continue;
                }
                s.spawn(move |_| {
                    let out = out;
                    let ops = Operands {
                        x,
                        w,
                        b,
                        y: out.0,
                        m,
                        n,
                        k,
                    };
                    // SAFETY: `path` proves the CPU runs the kernel's features; the shapes were
                    // checked when packing and in `matmul`, so every index stays inside x
                    // (m*k, packed), w (panels*k*16), b (panels*16) and y (m*n); tasks write
                    // disjoint panels.
                    match path.0 {
                        #[cfg(target_arch = "x86_64")]
                        F32Kind::Avx2 => unsafe { avx::panels(ops, p0, p1) },
                        #[cfg(target_arch = "x86_64")]
                        F32Kind::Avx512 => unsafe { avx512::panels(ops, p0, p1) },
                    }
                });
            }
        });
    }
}

/// One product's operands as the kernels take them: `x` packed by [`pack_rows`] (m rows of
/// length k), `w` panels of k × 16, `b` padded to whole panels, `y` m × n writable floats.
#[derive(Clone, Copy)]
struct Operands<'a> {
    x: &'a [f32],
    w: &'a [f32],
    b: &'a [f32],
    y: *mut f32,
    m: usize,
    n: usize,
    k: usize,
}

/// Depth of one k block: 256 × 16 floats of a panel = 16 KB, half of L1.
const K_BLOCK: usize = 256;

/// Which part of the work one microkernel call does.
#[derive(Clone, Copy)]
struct KBlock {
    k: usize,
    k0: usize,
    k1: usize,
    r0: usize,
    /// First k block: start from zero, not from the tile's partial sums.
    fresh: bool,
}

/// Calls `block(part, rows, tile)` for every k block of one panel (or pair) and every row
/// block. k is walked in blocks of [`K_BLOCK`] so one panel's block stays in L1 while every
/// row block uses it; each output still sums over k in order (partial sums go back into the
/// tiles), so rounding is unchanged.
fn sweep<T>(tiles: &mut [T], m: usize, k: usize, mut block: impl FnMut(KBlock, usize, &mut T)) {
    for k0 in (0..k).step_by(K_BLOCK) {
        let k1 = (k0 + K_BLOCK).min(k);
        for (blk, tile) in tiles.iter_mut().enumerate() {
            let r0 = blk * TILE_ROWS;
            let part = KBlock {
                k,
                k0,
                k1,
                r0,
                fresh: k0 == 0,
            };
            block(part, (m - r0).min(TILE_ROWS), tile);
        }
    }
}

/// Tiles of `W` columns starting at column `c0`, plus bias, into y.
///
/// # Safety
/// `ops.y` points at m × n writable floats, `ops.b` holds columns up to `c0 + W`, and columns
/// `c0..c0 + W` (up to n) belong to the caller.
unsafe fn write_tiles<const W: usize>(tiles: &[[[f32; W]; TILE_ROWS]], ops: Operands, c0: usize) {
    let cols = W.min(ops.n - c0);
    for (blk, tile) in tiles.iter().enumerate() {
        let r = blk * TILE_ROWS;
        for (dr, row) in tile.iter().enumerate().take((ops.m - r).min(TILE_ROWS)) {
            let dst = ops.y.add((r + dr) * ops.n + c0);
            for (c, v) in row.iter().enumerate().take(cols) {
                *dst.add(c) = v + ops.b[c0 + c];
            }
        }
    }
}

/// The packed product as a candle op on (m, k) inputs.
struct Op<'a>(&'a PackedF32);

impl candle_core::CustomOp1 for Op<'_> {
    fn name(&self) -> &'static str {
        "tarjama-packed-f32"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous(s, l)?;
        let (m, _) = l.shape().dims2()?;
        let y = self.0.matmul(x, m)?;
        Ok((CpuStorage::F32(y), Shape::from_dims(&[m, self.0.n])))
    }
}

/// `x` (m, k) regrouped k-major in blocks of TILE_ROWS rows (zero-padded), so the kernel's
/// broadcasts read consecutive addresses, as BLAS packs its left operand.
fn pack_rows(x: &[f32], m: usize, k: usize) -> Vec<f32> {
    let t = TILE_ROWS;
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

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::{sweep, write_tiles, KBlock, Operands, PANEL, TILE_ROWS};
    use std::arch::x86_64::*;

    /// Panels p0..p1 of y = x Wᵀ + b, each swept in k blocks (see [`sweep`]).
    ///
    /// # Safety
    /// The CPU must run AVX2 and FMA; `ops` holds what [`Operands`] says, `w` at least `p1`
    /// panels, `b` at least `16·p1` values, and `n > 16·(p1 − 1)`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn panels(ops: Operands, p0: usize, p1: usize) {
        if p0 >= p1 {
            return;
        }
        let mut tiles = vec![[[0f32; PANEL]; TILE_ROWS]; ops.m.div_ceil(TILE_ROWS)];
        for p in p0..p1 {
            let wp = ops.w.as_ptr().add(p * ops.k * PANEL);
            sweep(&mut tiles, ops.m, ops.k, |part, rows, tile| {
                // SAFETY: the caller's contract; `sweep` keeps rows and k inside the operands.
                unsafe { by_rows!(rows, 6, 5, 4, 3, 2; block(ops.x, wp, part, tile)) }
            });
            write_tiles(&tiles, ops, p * PANEL);
        }
    }

    /// R rows of x times one panel over k0..k1, continuing the sums in `tile`.
    ///
    /// # Safety
    /// AVX2 and FMA; rows `r0..r0+R` of the packed `x` and k0..k1 of the panel at `wp` exist.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn block<const R: usize>(
        x: &[f32],
        wp: *const f32,
        s: KBlock,
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

/// The same product with 512-bit registers: two neighbouring 16-column panels at once, one
/// zmm per row and panel. Each output is the same chain of FMAs over k as in [`avx`], so
/// results are bit-identical; only twice the columns go through per instruction.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{sweep, write_tiles, KBlock, Operands, PANEL, TILE_ROWS};
    use std::arch::x86_64::*;

    type Tile = [[f32; 2 * PANEL]; TILE_ROWS];

    /// Panels p0..p1 of y = x Wᵀ + b (an odd last panel goes through the AVX2 kernel).
    ///
    /// # Safety
    /// The CPU must run AVX2, FMA and AVX-512F; otherwise as [`super::avx::panels`].
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn panels(ops: Operands, p0: usize, p1: usize) {
        let pairs_end = p0 + (p1 - p0) / 2 * 2;
        let mut tiles = vec![[[0f32; 2 * PANEL]; TILE_ROWS]; ops.m.div_ceil(TILE_ROWS)];
        for p in (p0..pairs_end).step_by(2) {
            let wp = ops.w.as_ptr().add(p * ops.k * PANEL);
            sweep(&mut tiles, ops.m, ops.k, |part, rows, tile| {
                // SAFETY: the caller's contract; `sweep` keeps rows and k inside the operands.
                unsafe { by_rows!(rows, 6, 5, 4, 3, 2; block(ops.x, wp, part, tile)) }
            });
            write_tiles(&tiles, ops, p * PANEL);
        }
        super::avx::panels(ops, pairs_end, p1);
    }

    /// R rows of x times panels p, p+1 over k0..k1, continuing the sums in `tile`.
    ///
    /// # Safety
    /// AVX-512F; rows `r0..r0+R` of the packed `x` and k0..k1 of both panels at `wp` exist.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn block<const R: usize>(x: &[f32], wp: *const f32, s: KBlock, tile: &mut Tile) {
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
            if !super::super::avx512() {
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
                let xk = super::super::pack_rows(&x, m, k);
                let mut a = vec![0f32; m * n];
                let mut c = vec![0f32; m * n];
                let ops = |y: &mut Vec<f32>| super::super::Operands {
                    x: &xk,
                    w: &w,
                    b: &b,
                    y: y.as_mut_ptr(),
                    m,
                    n,
                    k,
                };
                unsafe {
                    super::panels(ops(&mut a), 0, panels);
                    super::super::avx::panels(ops(&mut c), 0, panels);
                }
                assert!(
                    a.iter().zip(&c).all(|(p, q)| p.to_bits() == q.to_bits()),
                    "{m}x{k}x{n}"
                );
            }
        }
    }
}
