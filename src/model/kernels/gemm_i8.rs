//! int8 GEMM: `y = x Wᵀ + b` with `W` quantised once at load and `x` quantised per call.
//!
//! # Scheme
//!
//! - Weights: symmetric per output row (as CTranslate2 does): `sw = max|W_j| / L`,
//!   `q = round(W_j / sw)` in [−L, L], with L = 127, or 63 on the AVX2 path (below).
//! - Activations: per input row on every call, to u8 levels with a zero point,
//!   `x ≈ (u − zero) · sx` (see [`activations`]: about twice the resolution after SiLU/GELU;
//!   a symmetric row gets exactly symmetric int8).
//! - Products summed exactly in i32 as `Σ (u − 128) · q` (|Σ| ≤ 128 · 127 · k, far from
//!   overflow for any k we meet), then `y = (Σ + (128 − zero) · Σ_k q) · (sx · sw) + b` in f32,
//!   by shared scalar code.
//!
//! # Paths
//!
//! The integer sum is exact on every path, and quantisation and the f32 epilogue are the same
//! code everywhere, so a path gives the bits of the portable path on the same quantised weights
//! (tested on every path the CPU runs):
//!
//! - AMX (Sapphire Rapids and later): `tdpbusd` tile products on the same packed panels and
//!   u8 activation levels, for row tiles of 4 to 16 rows; smaller ones take the AVX-512 VNNI
//!   kernel (see [`amx`], with the measurements).
//! - AVX-512 VNNI: `vpdpbusd` multiplies u8 × i8 and adds groups of 4 into i32 without
//!   intermediate saturation. Activations go in as their u8 levels; `128 · Σ_k W_jk` is
//!   precomputed per column at load and the accumulators start from its negation.
//!   One instruction per 64 multiply-adds.
//! - AVX-VNNI: the same with 256-bit `vpdpbusd` (Alder Lake and later, Zen 5).
//! - AVX2: `vpmaddubsw` (u8 × i8, pairs summed into i16 with saturation) then `vpmaddwd` with
//!   ones into i32, on the same u8 levels and compensation. A pair of 8-bit weights could reach
//!   2·255·127 > 32767 and saturate; with 7-bit weights (oneDNN's documented way out) a pair is
//!   at most 2·255·63 = 32130, so the sum stays exact. The cost is the weights' precision:
//!   the AVX2 path's results differ from the 8-bit paths' by at most one weight step more
//!   (`kernels::tests` bounds both against f32), and README's int8 accuracy table, measured
//!   on this path, still beats CTranslate2 int8 on every figure.
//! - Portable (any other CPU, aarch64 included): the same sums in plain Rust, for either
//!   weight precision.
//!
//! Weights are packed in 16-column panels, k in groups of 4 bytes per column: one group of a
//! panel is 64 bytes (one zmm, two ymm), so every path reads the same layout.
//!
//! # Why 7-bit weights on AVX2 (measured on a 2-core AMD EPYC Zen 3, AVX2 only)
//!
//! Zen 3 issues two vector integer multiplies per cycle, and `vpsignb` competes for the same
//! pipes. Per 64 multiply-adds of one row, in a register-resident loop:
//!
//! | AVX2 scheme | multiply-pipe instructions | ns per 64 MACs |
//! |---|---:|---:|
//! | `|x|` × `w·sign(x)` (exact 8-bit, the previous kernel) | 6 | 0.86 |
//! | i16 × i16 `vpmaddwd` (exact 8-bit) | 4 + widening | 0.90 |
//! | u8 `x` × 7-bit `w` (this kernel) | 4 | 0.66 |
//!
//! In the real kernel (6-row tiles, 2 threads) the 7-bit kernel ran GEMMs 1.15–1.4× faster
//! than the exact i16 one (M = 16…600, k = 512…4096, n = 1024…62 834, same run). The exact
//! kernels are in git history (commits cf2252f and before).
//!
//! The first row tile of each k block prefetches the weights two blocks ahead: the other
//! tiles run from L1, the hardware prefetcher stops meanwhile, and each new block used to
//! start with a wait on memory (a 4 × 1024 × 50 264 product: 4.3 → 2.7–3.5 ms; greedy batch
//! 16 4–9 % faster). Blocks of 256 k groups rather than 128 made 600-row products 6–8 %
//! faster (paired runs).
//!
//! Profiling also removed a libm `rintf` call per activation (6 %, now an add/subtract of
//! 1.5·2²³), a `memcpy` per output row (10 %) and candle's SiLU dispatch (6 %, now fused into
//! fc1's epilogue). The VNNI and AMX paths were first executed on a 2-core Xeon with AVX-512
//! VNNI, AVX-VNNI and AMX-INT8, where the kernel tests ran all five paths bit-identical.

use candle_core::{CpuStorage, Layout, Shape, Tensor};

use super::{contiguous, exp, Dense, OutPtr};
#[cfg(test)]
pub(crate) use activations::quantize_row as quantize_activations;
use activations::RowScale;

/// Output columns per packed panel: one zmm of i32 lanes, two ymm.
pub(crate) const PANEL: usize = 16;

/// k values that one i32 lane sums (what `vpdpbusd` / `vpmaddubsw`+`vpmaddwd` add up).
const GROUP: usize = 4;

/// Bytes of one k group of a panel.
const GROUP_BYTES: usize = PANEL * GROUP;

/// k groups per block: 256 × 64 bytes = 16 KB of a panel stays in L1 (32 KB) while every row
/// block of `x` uses it. i32 sums are exact, so blocking does not change any result. Against
/// 128 (8 KB), paired in one run: 600-row products with k = 1024…4096 6–8 % faster, fewer
/// tile reloads; k = 512 (Marian) is one block either way.
const K_GROUPS: usize = 256;

/// Largest row tile of any path.
const MAX_TILE: usize = 16;

/// Rows of `x` handled per pass over the weights, so their quantised copy stays in L2.
const ROW_CHUNK: usize = 128;

type Tile = [[i32; PANEL]; MAX_TILE];

/// Which int8 kernel family runs. A value other than `Portable` exists only after the CPU was
/// checked to run it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum I8Kind {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    AvxVnni,
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
    /// AMX tile products for row tiles of at least [`amx::MIN_ROWS`] rows, AVX-512 VNNI for
    /// smaller ones (so built only where both run).
    #[cfg(target_arch = "x86_64")]
    Amx,
}

/// Proof that this CPU runs an int8 kernel family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct I8Path(I8Kind);

impl I8Path {
    /// Every family this CPU runs, narrowest (portable) first.
    pub(crate) fn all() -> Vec<Self> {
        #[allow(unused_mut)]
        let mut out = vec![Self(I8Kind::Portable)];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") {
                out.push(Self(I8Kind::Avx2));
                if is_x86_feature_detected!("avxvnni") {
                    out.push(Self(I8Kind::AvxVnni));
                }
            }
            // AVX2 too, which every AVX-512 CPU has: the shared epilogue is compiled for it.
            if is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512vnni")
            {
                out.push(Self(I8Kind::Avx512Vnni));
                if amx::available() {
                    out.push(Self(I8Kind::Amx));
                }
            }
        }
        out
    }

    /// The widest family the CPU runs, capped by `TARJAMA_KERNEL_ISA` (checked once).
    pub(crate) fn detect() -> Self {
        static PATH: std::sync::OnceLock<I8Path> = std::sync::OnceLock::new();
        *PATH.get_or_init(|| {
            let all = Self::all();
            let cap = super::isa_cap();
            let allowed: &[&str] = match cap.as_deref() {
                Some("portable") => &["portable"],
                Some("avx2") => &["portable", "avx2"],
                Some("avx-vnni") => &["portable", "avx2", "avx-vnni"],
                Some("avx512-vnni" | "avx512") => &["portable", "avx2", "avx-vnni", "avx512-vnni"],
                _ => &["portable", "avx2", "avx-vnni", "avx512-vnni", "amx"],
            };
            all.into_iter()
                .rfind(|p| allowed.contains(&p.name()))
                .unwrap_or(Self(I8Kind::Portable))
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self.0 {
            I8Kind::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            I8Kind::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            I8Kind::AvxVnni => "avx-vnni",
            #[cfg(target_arch = "x86_64")]
            I8Kind::Avx512Vnni => "avx512-vnni",
            #[cfg(target_arch = "x86_64")]
            I8Kind::Amx => "amx",
        }
    }

    /// Rows per register tile: enough independent accumulators to hide the latency.
    fn tile_rows(self) -> usize {
        match self.0 {
            I8Kind::Portable => 4,
            #[cfg(target_arch = "x86_64")]
            // Six would need 17 registers: one accumulator spilled, 5 % slower.
            I8Kind::Avx2 => 5,
            #[cfg(target_arch = "x86_64")]
            I8Kind::AvxVnni => 6,
            #[cfg(target_arch = "x86_64")]
            I8Kind::Avx512Vnni => 8,
            #[cfg(target_arch = "x86_64")]
            I8Kind::Amx => 16,
        }
    }

    /// Panels summed together per pass over a row tile (AMX shares each activation tile
    /// across them).
    fn panel_group(self) -> usize {
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            I8Kind::Amx => amx::PANELS,
            _ => 1,
        }
    }

    /// Whether the kernel takes activations as their u8 levels (summing `Σ u·w` from
    /// `−128·Σw`, the weights' column compensation); else as `u − 128` in i8. Either way it
    /// sums `Σ (u − 128)·w`.
    fn offset_activations(self) -> bool {
        match self.0 {
            I8Kind::Portable => false,
            #[cfg(target_arch = "x86_64")]
            I8Kind::Avx2 | I8Kind::AvxVnni | I8Kind::Avx512Vnni | I8Kind::Amx => true,
        }
    }

    /// The weights this family multiplies: 7-bit on AVX2, where `vpmaddubsw` would otherwise
    /// saturate (see the module doc), else 8-bit.
    pub(crate) fn weight_bits(self) -> WeightBits {
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            I8Kind::Avx2 => WeightBits::Seven,
            _ => WeightBits::Eight,
        }
    }
}

/// How finely weights are quantised: symmetric, per output row, to ±127 or ±63.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WeightBits {
    Eight,
    Seven,
}

impl WeightBits {
    /// The largest magnitude of a quantised weight.
    pub(crate) fn limit(self) -> f32 {
        match self {
            Self::Eight => 127.0,
            Self::Seven => 63.0,
        }
    }
}

/// Activation values (m · k) from which quantisation is split across threads: below it a
/// rayon dispatch costs more than it saves (decoding steps).
const PARALLEL_QUANTIZE: usize = 1 << 16;

/// Symmetric int8 of one weight row: (scale, values in [−lim, lim]); an all-zero row has
/// scale 0.
#[inline(always)]
fn quantize_weight_row(v: &[f32], out: &mut [i8], lim: f32) -> f32 {
    let (lo, hi) = min_max(v);
    let amax = hi.max(-lo);
    if amax == 0.0 || !amax.is_finite() {
        out.iter_mut().for_each(|o| *o = 0);
        return if amax.is_finite() { 0.0 } else { f32::NAN };
    }
    let inv = lim / amax;
    for (o, &x) in out.iter_mut().zip(v) {
        *o = round_clamped(x * inv, -lim, lim) as i8;
    }
    amax / lim
}

/// `v.round_ties_even()` clamped to the whole bounds [lo, hi] (|bounds| < 2²²), NaN → 0,
/// without a float → int conversion: Rust's saturating casts compile to one scalar
/// conversion per value, which made quantising a decoding step's activations (serial work)
/// several times slower, and `round_ties_even` is a libm call (`rintf`) on baseline x86-64
/// (6 % of a beam step once). Clamping first to whole bounds rounds the same; adding 1.5·2²³
/// rounds to a whole number (IEEE addition rounds to nearest even) and leaves it in the low
/// bits of the sum's representation.
#[inline(always)]
fn round_clamped(v: f32, lo: f32, hi: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0;
    let c = v.clamp(lo, hi);
    let c = if c.is_nan() { 0.0 } else { c };
    (c + MAGIC).to_bits().wrapping_sub(MAGIC.to_bits()) as i32
}

/// (min(0, min v), max(0, max v)), NaN ignored. Sixteen running lanes so that it vectorises:
/// a fold ran one element per compare, and quantising a decoding step's activations is
/// serial work (rows too few to split) that left the other thread idle.
fn min_max(v: &[f32]) -> (f32, f32) {
    const LANES: usize = 16;
    let (mut lo, mut hi) = ([0f32; LANES], [0f32; LANES]);
    let chunks = v.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for ((l, h), &x) in lo.iter_mut().zip(hi.iter_mut()).zip(c) {
            *l = if x < *l { x } else { *l };
            *h = if x > *h { x } else { *h };
        }
    }
    let lo = lo.iter().chain(tail).fold(0f32, |a, &x| a.min(x));
    let hi = hi.iter().chain(tail).fold(0f32, |a, &x| a.max(x));
    (lo, hi)
}

/// An activation applied in the epilogue, after the bias (saves a pass over fc1's output and
/// candle's thread-pool dispatch for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Epilogue {
    None,
    Silu,
    Relu,
    /// GELU with erf (see [`super::exp::gelu`]: within 2e-7 of the exact one).
    Gelu,
}

impl Epilogue {
    /// The activation of one value (what the fused epilogue computes, for tests).
    #[cfg(test)]
    pub(crate) fn apply(self, v: f32) -> f32 {
        match self {
            Self::None => v,
            Self::Silu => super::exp::silu(v),
            Self::Relu => v.max(0.0),
            Self::Gelu => super::exp::gelu(v),
        }
    }
}

/// A weight quantised and packed for the int8 kernels, with its scales, column compensation
/// and bias padded to whole panels.
pub(crate) struct PackedI8 {
    /// Panel p, k group g, column c, byte t at `((p·groups + g)·16 + c)·4 + t`.
    w: Vec<i8>,
    /// Per output column: `max|W_j| / 127`.
    scales: Vec<f32>,
    /// Per output column: `128 · Σ_k q_jk` (cancelled from the u8 sums of the offset paths;
    /// divided by 128, the epilogue's zero-point term).
    comp: Vec<i32>,
    bias: Vec<f32>,
    n: usize,
    k: usize,
    groups: usize,
    panels: usize,
    path: I8Path,
}

impl PackedI8 {
    /// Quantises and packs `w` (n, k), row-major (PyTorch's (out, in)), with bias `b` (n), as
    /// `path` multiplies it.
    pub(crate) fn new(d: Dense, path: I8Path) -> Self {
        Self::with_bits(d, path, path.weight_bits())
    }

    /// As [`Self::new`] with the weights quantised to `bits` (which `path` must take: any for
    /// the portable path, else its own). Tests build the portable path's twin of each path.
    pub(crate) fn with_bits(d: Dense, path: I8Path, bits: WeightBits) -> Self {
        assert!(
            path.0 == I8Kind::Portable || bits == path.weight_bits(),
            "int8: {} multiplies {:?} weights",
            path.name(),
            path.weight_bits()
        );
        let Dense { w, b, n, k } = d;
        let groups = k.div_ceil(GROUP);
        let panels = n.div_ceil(PANEL);
        let mut packed = vec![0i8; panels * groups * GROUP_BYTES];
        let mut scales = vec![0f32; panels * PANEL];
        let mut comp = vec![0i32; panels * PANEL];
        let mut q = vec![0i8; k];
        for (j, row) in w.chunks_exact(k).enumerate() {
            scales[j] = quantize_weight_row(row, &mut q, bits.limit());
            comp[j] = 128 * q.iter().map(|&v| v as i32).sum::<i32>();
            let (p, c) = (j / PANEL, j % PANEL);
            for (i, &v) in q.iter().enumerate() {
                let (g, t) = (i / GROUP, i % GROUP);
                packed[((p * groups + g) * PANEL + c) * GROUP + t] = v;
            }
        }
        let mut bias = b.to_vec();
        bias.resize(panels * PANEL, 0.0);
        Self {
            w: packed,
            scales,
            comp,
            bias,
            n,
            k,
            groups,
            panels,
            path,
        }
    }

    /// `x` (m, k) row-major -> `x Wᵀ + b` (m, n) row-major.
    pub(crate) fn matmul(&self, x: &[f32], m: usize) -> candle_core::Result<Vec<f32>> {
        self.matmul_with(x, m, Epilogue::None)
    }

    /// As [`Self::matmul`], then `act` on every output.
    pub(crate) fn matmul_with(
        &self,
        x: &[f32],
        m: usize,
        act: Epilogue,
    ) -> candle_core::Result<Vec<f32>> {
        let (n, k) = (self.n, self.k);
        if x.len() != m * k {
            candle_core::bail!("packed int8: input of {} values is not {m}x{k}", x.len());
        }
        // Not zeroed first: the kernels write every element, and zeroing a decoding step's
        // logits (64 × 62 834) cost 2 % of a beam search step.
        let mut y: Vec<f32> = Vec::with_capacity(m * n);
        let spare = &mut y.spare_capacity_mut()[..m * n];
        for r0 in (0..m).step_by(ROW_CHUNK) {
            let rows = ROW_CHUNK.min(m - r0);
            let xs = &x[r0 * k..(r0 + rows) * k];
            self.run(xs, &mut spare[r0 * n..(r0 + rows) * n], rows, act);
        }
        // SAFETY: `run` wrote every element of each (rows, n) block, and the blocks cover all
        // m rows.
        unsafe { y.set_len(m * n) };
        Ok(y)
    }

    /// `x` (…, k) -> (…, n).
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_with(x, Epilogue::None)
    }

    /// `x` (…, k) -> act(x Wᵀ + b) (…, n).
    pub(crate) fn forward_with(&self, x: &Tensor, act: Epilogue) -> candle_core::Result<Tensor> {
        let dims = x.dims().to_vec();
        let rows = x.elem_count() / self.k.max(1);
        let y = x
            .reshape((rows, self.k))?
            .contiguous()?
            .apply_op1_no_bwd(&Op(self, act))?;
        let mut out = dims;
        if let Some(last) = out.last_mut() {
            *last = self.n;
        }
        y.reshape(out)
    }

    /// `m` rows of `x` into `y` (m, n), writing every element (every panel of every row).
    fn run(&self, x: &[f32], y: &mut [std::mem::MaybeUninit<f32>], m: usize, act: Epilogue) {
        let panels = self.panels;
        let (xbytes, xs, stride) = self.quantize(x, m);
        let tasks = rayon::current_num_threads().clamp(1, panels.max(1));
        let per = panels.div_ceil(tasks);
        let out = OutPtr(y.as_mut_ptr().cast::<f32>());
        let job = Job {
            packed: self,
            x: &xbytes,
            xs: &xs,
            m,
            stride,
            act,
        };
        rayon::scope(|s| {
            for t in 0..tasks {
                let (p0, p1) = (t * per, ((t + 1) * per).min(panels));
                if p0 >= p1 {
                    continue;
                }
                let job = &job;
                s.spawn(move |_| {
                    let out = out;
                    job.panels(p0, p1, out);
                });
            }
        });
    }

    /// `m` rows of `x` quantised in the path's form: (bytes, per-row scales, bytes per row).
    /// Rows are padded to whole groups with the level of 0 (the padded weights are zero too,
    /// so padding adds nothing on any path).
    fn quantize(&self, x: &[f32], m: usize) -> (Vec<u8>, Vec<RowScale>, usize) {
        use rayon::prelude::*;
        let (k, offset) = (self.k, self.path.offset_activations());
        let stride = self.groups * GROUP;
        let mut bytes = vec![0u8; m * stride];
        let mut scales = vec![RowScale::ZERO_ROW; m];
        let wide = self.path.0 != I8Kind::Portable;
        let one = |((row, out), scale): ((&[f32], &mut [u8]), &mut RowScale)| {
            *scale = quantize_into(wide, row, out, offset);
        };
        if m * k < PARALLEL_QUANTIZE {
            x.chunks_exact(k)
                .zip(bytes.chunks_exact_mut(stride))
                .zip(scales.iter_mut())
                .for_each(one);
        } else {
            x.par_chunks_exact(k)
                .zip(bytes.par_chunks_exact_mut(stride))
                .zip(scales.par_iter_mut())
                .for_each(one);
        }
        (bytes, scales, stride)
    }
}

/// One row quantised into `out` (u8 levels, then padding) in the path's form: as is on the
/// offset paths, `u − 128` as i8 on the portable one (so every path sums `Σ (u − 128) · w`).
/// On an x86 path compiled for AVX2 (the same operations on wider vectors, so the same bits):
/// it is serial work in a decoding step (too few rows to split), and the baseline build
/// converted one value at a time.
fn quantize_into(wide: bool, row: &[f32], out: &mut [u8], offset: bool) -> RowScale {
    #[inline(always)]
    fn any(row: &[f32], out: &mut [u8], offset: bool) -> RowScale {
        let scale = activations::quantize_row(row, out);
        out[row.len()..].iter_mut().for_each(|o| *o = 128);
        if !offset {
            out.iter_mut().for_each(|o| *o ^= 0x80);
        }
        scale
    }
    #[cfg(target_arch = "x86_64")]
    {
        /// # Safety
        /// The CPU runs AVX2.
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(row: &[f32], out: &mut [u8], offset: bool) -> RowScale {
            any(row, out, offset)
        }
        if wide {
            // SAFETY: `wide` is set only for x86 paths other than the portable one, which are
            // only built after detecting AVX2.
            return unsafe { avx2(row, out, offset) };
        }
    }
    let _ = wide;
    any(row, out, offset)
}

/// One call's shared inputs.
struct Job<'a> {
    packed: &'a PackedI8,
    /// Quantised rows (`stride` bytes each): u8 levels, or `u − 128` as i8 (see
    /// [`I8Path::offset_activations`]).
    x: &'a [u8],
    xs: &'a [RowScale],
    m: usize,
    stride: usize,
    act: Epilogue,
}

impl Job<'_> {
    /// Panels p0..p1 of every row into `out` (m, n); on an x86 path, compiled for AVX2, or
    /// AVX-512 on the paths that have it (the same f32 operations on wider vectors, so the
    /// same bits; the baseline build's 128-bit epilogue was 5–8 % of a decoding step, the
    /// AVX2 one 6–10 % on an AMX machine).
    fn panels(&self, p0: usize, p1: usize, out: OutPtr) {
        #[cfg(target_arch = "x86_64")]
        {
            /// # Safety
            /// The CPU runs AVX2.
            #[target_feature(enable = "avx2")]
            unsafe fn wide(job: &Job, p0: usize, p1: usize, out: OutPtr) {
                job.panels_any(p0, p1, out)
            }
            /// # Safety
            /// The CPU runs AVX-512F and AVX2.
            #[target_feature(enable = "avx512f,avx2")]
            unsafe fn wider(job: &Job, p0: usize, p1: usize, out: OutPtr) {
                job.panels_any(p0, p1, out)
            }
            if matches!(self.packed.path.0, I8Kind::Avx512Vnni | I8Kind::Amx) {
                // SAFETY: these paths are only built after detecting AVX-512F and AVX2.
                return unsafe { wider(self, p0, p1, out) };
            }
            if self.packed.path.0 != I8Kind::Portable {
                // SAFETY: every x86 path other than the portable one is only built after
                // detecting AVX2.
                return unsafe { wide(self, p0, p1, out) };
            }
        }
        self.panels_any(p0, p1, out)
    }

    /// [`Self::panels`], inlined into each build.
    #[inline(always)]
    fn panels_any(&self, p0: usize, p1: usize, out: OutPtr) {
        let pk = self.packed;
        let (m, groups) = (self.m, pk.groups);
        let tr = pk.path.tile_rows();
        // Rows split as evenly as the tile allows (16 rows in tiles of 5 are 4 × 4, not
        // 5 + 5 + 5 + 1: a one-row tile costs a whole tile's weight loads).
        let blocks = m.div_ceil(tr);
        let span = |blk: usize| (blk * m / blocks, (blk + 1) * m / blocks - blk * m / blocks);
        let group = pk.path.panel_group();
        let mut tiles = vec![[[0i32; PANEL]; MAX_TILE]; blocks * group];
        for p in (p0..p1).step_by(group) {
            let q = group.min(p1 - p);
            for g0 in (0..groups).step_by(K_GROUPS) {
                let g1 = (g0 + K_GROUPS).min(groups);
                for blk in 0..blocks {
                    let (r0, rows) = span(blk);
                    let x = &self.x[r0 * self.stride..(r0 + rows) * self.stride];
                    let part = KBlock {
                        stride: self.stride,
                        g0,
                        g1,
                        fresh: g0 == 0,
                        prefetch: blk == 0,
                    };
                    let tiles = &mut tiles[blk * group..blk * group + q];
                    pk.sum_panels(p, rows, x, part, tiles);
                }
            }
            for blk in 0..blocks {
                let (r0, rows) = span(blk);
                self.epilogue(p, r0, rows, &tiles[blk * group..blk * group + q], out);
            }
        }
    }

    /// Shared epilogue of panels p..p+tiles.len() for rows r0..r0+rows (each tile holds
    /// one panel's sums of those rows): the same f32 operations whatever path summed. Written
    /// row by row across the panels, so each row's stores are contiguous.
    #[inline(always)]
    fn epilogue(&self, p: usize, r0: usize, rows: usize, tiles: &[Tile], out: OutPtr) {
        let (pk, n) = (self.packed, self.packed.n);
        for dr in 0..rows {
            let (sx, zc) = (self.xs[r0 + dr].scale, self.xs[r0 + dr].correction());
            for (j, tile) in tiles.iter().enumerate() {
                let c0 = (p + j) * PANEL;
                let cols = PANEL.min(n - c0);
                // Scales and bias are padded to whole panels (zeros past n).
                let (sw, b) = (&pk.scales[c0..c0 + PANEL], &pk.bias[c0..c0 + PANEL]);
                let comp = &pk.comp[c0..c0 + PANEL];
                let acc = &tile[dr];
                let mut vals = [0f32; PANEL];
                // Σ (u − zero)·w = Σ (u − 128)·w + (128 − zero)·Σ w, exactly in i32.
                for c in 0..PANEL {
                    vals[c] = (acc[c] + zc * (comp[c] / 128)) as f32 * (sx * sw[c]) + b[c];
                }
                // One loop per activation, so each vectorises (no libm call, no branch).
                match self.act {
                    Epilogue::None => {}
                    Epilogue::Silu => vals.iter_mut().for_each(|v| *v = exp::silu(*v)),
                    Epilogue::Relu => vals.iter_mut().for_each(|v| *v = v.max(0.0)),
                    Epilogue::Gelu => vals.iter_mut().for_each(|v| *v = exp::gelu(*v)),
                }
                // SAFETY: row r0+dr < m and columns c0..c0+cols ≤ n of the (m, n) output,
                // which may be uninitialised (hence raw writes, no reference to it); this
                // task is the only writer of these panels' columns.
                unsafe { store_panel(out.0.add((r0 + dr) * n + c0), cols, vals) };
            }
        }
    }
}

impl PackedI8 {
    /// Panel `p` (16 columns of weights) and its compensation.
    fn panel(&self, p: usize) -> (&[i8], &[i32]) {
        let bytes = self.groups * GROUP_BYTES;
        (
            &self.w[p * bytes..(p + 1) * bytes],
            &self.comp[p * PANEL..(p + 1) * PANEL],
        )
    }

    /// `rows` rows of `x` times panels p..p+tiles.len(), summed into one tile each: AMX tile
    /// products share each tile of activations across the panels (up to four, so it is read
    /// from L2 a quarter as often); every other path takes the panels one at a time.
    #[inline(always)]
    fn sum_panels(&self, p: usize, rows: usize, x: &[u8], s: KBlock, tiles: &mut [Tile]) {
        #[cfg(target_arch = "x86_64")]
        if self.path.0 == I8Kind::Amx && rows >= amx::MIN_ROWS {
            assert!(tiles.len() <= amx::PANELS, "int8 block: too many panels");
            let mut panels = [Panel { w: &[], comp: &[] }; amx::PANELS];
            for (j, slot) in panels.iter_mut().enumerate().take(tiles.len()) {
                let (w, comp) = self.panel(p + j);
                check_block(self.path, rows, x, w, comp, s);
                *slot = Panel { w, comp };
            }
            // SAFETY: Amx is only built after `amx::available()`; rows ≤ 16 (its tile),
            // at most four panels, and every panel's bounds checked above.
            return unsafe { amx::block(rows, x, &panels[..tiles.len()], s, tiles) };
        }
        for (j, tile) in tiles.iter_mut().enumerate() {
            let (w, comp) = self.panel(p + j);
            block(self.path, rows, x, w, comp, s, tile);
        }
    }
}

/// The first `cols` values of a panel to `dst`: one fixed-size store for a whole panel (a
/// `memcpy` call per row and panel cost 4 % of a batched decoding step).
///
/// # Safety
/// `dst` is valid for writing `cols ≤ 16` f32 values (it may be uninitialised).
#[inline(always)]
unsafe fn store_panel(dst: *mut f32, cols: usize, vals: [f32; PANEL]) {
    if cols == PANEL {
        dst.cast::<[f32; PANEL]>().write_unaligned(vals);
    } else {
        std::ptr::copy_nonoverlapping(vals.as_ptr(), dst, cols);
    }
}

/// One panel of packed weights and its offset compensation (16 columns each).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Panel<'a> {
    w: &'a [i8],
    comp: &'a [i32],
}

/// Which k groups one `block` call sums.
#[derive(Clone, Copy)]
struct KBlock {
    /// Bytes per quantised row.
    stride: usize,
    g0: usize,
    g1: usize,
    /// First block: start from zero (or the compensation), not from the tile.
    fresh: bool,
    /// Fetch the weights that follow this block in memory (the next k block, or the next
    /// panel's first) while summing it: the first row tile of a block is the one that waits
    /// for its weights, and the hardware prefetcher stops while the other tiles run from L1.
    prefetch: bool,
}

/// While summing groups g0..g1 of a panel (the first row tile only), brings in the line
/// two blocks of that length ahead of group `g` (measured: one block ahead hid less of the
/// wait). The address may lie past the weights (see [`super::prefetch`]).
#[inline(always)]
fn prefetch_ahead(w: *const i8, s: KBlock, g: usize) {
    if s.prefetch {
        let ahead = (g + 2 * (s.g1 - s.g0)) * GROUP_BYTES;
        super::prefetch(w.wrapping_add(ahead));
    }
}

/// `rows` rows of `x` times one panel over groups g0..g1, summed into `tile`. The only place
/// that picks a kernel: a path value proves its CPU features, and the slices' lengths were
/// checked here (every kernel reads at most `rows · stride` bytes of `x`, `4 · g1` of each
/// row, and `g1 · 64` of `panel`).
fn block(
    path: I8Path,
    rows: usize,
    x: &[u8],
    panel: &[i8],
    comp: &[i32],
    s: KBlock,
    tile: &mut Tile,
) {
    check_block(path, rows, x, panel, comp, s);
    match path.0 {
        I8Kind::Portable => portable(rows, x, panel, s, tile),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx2 is only built after detecting AVX2, and its weights are 7-bit (see
        // `with_bits`); bounds asserted above.
        I8Kind::Avx2 => unsafe {
            by_rows!(rows, 5, 4, 3, 2; block_avx2(x, Panel { w: panel, comp }, s, tile))
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AvxVnni is only built after detecting AVX2 and AVX-VNNI; bounds above.
        I8Kind::AvxVnni => unsafe {
            by_rows!(rows, 6, 5, 4, 3, 2; block_avx_vnni(x, Panel { w: panel, comp }, s, tile))
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx512Vnni is only built after detecting AVX-512F and AVX-512 VNNI; bounds
        // asserted above.
        I8Kind::Avx512Vnni => unsafe {
            by_rows!(rows, 8, 7, 6, 5, 4, 3, 2; block_avx512(x, Panel { w: panel, comp }, s, tile))
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Amx is only built after the AVX-512 VNNI check (and `amx::available()`);
        // rows ≤ 16 (its tile) and bounds asserted above.
        I8Kind::Amx => unsafe {
            // Row tiles of at least `amx::MIN_ROWS` rows take tile products in
            // `PackedI8::sum_panels`; smaller ones come here, to the VNNI kernel.
            by_rows!(rows, 8, 7, 6, 5, 4, 3, 2; block_avx512(x, Panel { w: panel, comp }, s, tile))
        },
    }
}

/// What every kernel relies on: at most a tile of rows, each holding groups up to g1, and a
/// panel of weights up to g1 with its 16 compensations.
#[inline(always)]
fn check_block(path: I8Path, rows: usize, x: &[u8], panel: &[i8], comp: &[i32], s: KBlock) {
    assert!(
        rows <= path.tile_rows()
            && x.len() >= rows * s.stride
            && s.stride >= s.g1 * GROUP
            && panel.len() >= s.g1 * GROUP_BYTES
            && comp.len() == PANEL,
        "int8 block: inconsistent shapes"
    );
}

#[cfg(target_arch = "x86_64")]
mod activations;
pub(super) mod amx;

#[cfg(target_arch = "x86_64")]
use {
    avx2::block as block_avx2, avx512_vnni::block as block_avx512,
    avx_vnni::block as block_avx_vnni,
};

/// Plain Rust: i8 activations times i8 weights, exact i32 sums.
fn portable(rows: usize, x: &[u8], panel: &[i8], s: KBlock, tile: &mut Tile) {
    for (r, acc) in tile.iter_mut().enumerate().take(rows) {
        if s.fresh {
            *acc = [0; PANEL];
        }
        let xr = &x[r * s.stride..(r + 1) * s.stride];
        for g in s.g0..s.g1 {
            let xg = &xr[g * GROUP..(g + 1) * GROUP];
            let wg = &panel[g * GROUP_BYTES..(g + 1) * GROUP_BYTES];
            for (c, a) in acc.iter_mut().enumerate() {
                let w = &wg[c * GROUP..(c + 1) * GROUP];
                *a += (0..GROUP)
                    .map(|t| (xg[t] as i8 as i32) * (w[t] as i32))
                    .sum::<i32>();
            }
        }
    }
}

/// A tile's rows as pairs of 256-bit accumulators (16 i32 columns), for the AVX2 and AVX-VNNI
/// kernels.
#[cfg(target_arch = "x86_64")]
mod ymm {
    use super::Tile;
    use std::arch::x86_64::*;

    /// The accumulators of R rows: `fresh` ones start at `init` (per column), the others
    /// continue the tile's partial sums.
    ///
    /// # Safety
    /// The CPU runs AVX2; R ≤ the tile's rows.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) unsafe fn start<const R: usize>(
        tile: &Tile,
        fresh: bool,
        init: [__m256i; 2],
    ) -> [[__m256i; 2]; R] {
        let mut acc = [init; R];
        if !fresh {
            for (r, a) in acc.iter_mut().enumerate() {
                a[0] = _mm256_loadu_si256(tile[r].as_ptr() as *const __m256i);
                a[1] = _mm256_loadu_si256(tile[r].as_ptr().add(8) as *const __m256i);
            }
        }
        acc
    }

    /// `−comp` (16 columns) as two accumulators: where a fresh tile of an offset kernel starts.
    ///
    /// # Safety
    /// The CPU runs AVX2; `comp` holds at least 16 values.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) unsafe fn negated(comp: &[i32]) -> [__m256i; 2] {
        let zero = _mm256_setzero_si256();
        let half = |at: usize| _mm256_loadu_si256(comp.as_ptr().add(at) as *const __m256i);
        [
            _mm256_sub_epi32(zero, half(0)),
            _mm256_sub_epi32(zero, half(8)),
        ]
    }

    /// Stores R rows of accumulators back into the tile.
    ///
    /// # Safety
    /// The CPU runs AVX2; R ≤ the tile's rows.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) unsafe fn store<const R: usize>(acc: &[[__m256i; 2]; R], tile: &mut Tile) {
        for (r, a) in acc.iter().enumerate() {
            _mm256_storeu_si256(tile[r].as_mut_ptr() as *mut __m256i, a[0]);
            _mm256_storeu_si256(tile[r].as_mut_ptr().add(8) as *mut __m256i, a[1]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{ymm, KBlock, Panel, Tile, GROUP, GROUP_BYTES};
    use std::arch::x86_64::*;

    /// R rows × 16 columns over groups g0..g1: `vpmaddubsw` of the u8 levels and 7-bit
    /// weights (pairs at most 2·255·63 = 32130: never saturated), then `vpmaddwd` by ones
    /// sums each column's four products in i32; a fresh tile starts at `−comp`.
    ///
    /// # Safety
    /// The CPU runs AVX2; `x` holds R rows of `s.stride ≥ 4·g1` bytes; `p.w` holds at least
    /// `64·g1` bytes of weights in [−63, 63]; `p.comp` 16 values.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn block<const R: usize>(x: &[u8], p: Panel, s: KBlock, tile: &mut Tile) {
        let (panel, comp) = (p.w, p.comp);
        let ones = _mm256_set1_epi16(1);
        let mut acc = ymm::start::<R>(tile, s.fresh, ymm::negated(comp));
        let (xp, wp) = (x.as_ptr(), panel.as_ptr());
        for g in s.g0..s.g1 {
            super::prefetch_ahead(wp, s, g);
            let w0 = _mm256_loadu_si256(wp.add(g * GROUP_BYTES) as *const __m256i);
            let w1 = _mm256_loadu_si256(wp.add(g * GROUP_BYTES + 32) as *const __m256i);
            for (r, a) in acc.iter_mut().enumerate() {
                let bytes = (xp.add(r * s.stride + g * GROUP) as *const i32).read_unaligned();
                let xb = _mm256_set1_epi32(bytes);
                let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(xb, w0), ones);
                let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(xb, w1), ones);
                a[0] = _mm256_add_epi32(a[0], p0);
                a[1] = _mm256_add_epi32(a[1], p1);
            }
        }
        ymm::store(&acc, tile);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx_vnni {
    use super::{ymm, KBlock, Panel, Tile, GROUP, GROUP_BYTES};
    use std::arch::x86_64::*;

    /// R rows × 16 columns over groups g0..g1 with 256-bit `vpdpbusd` on the u8 levels; a
    /// fresh tile starts at `−comp`, which cancels the offset exactly.
    ///
    /// # Safety
    /// The CPU runs AVX2 and AVX-VNNI; `x` holds R rows of `s.stride ≥ 4·g1` bytes; `panel`
    /// (`p.w`) holds at least `64·g1` bytes; `p.comp` 16 values.
    #[target_feature(enable = "avx2,avxvnni")]
    pub(super) unsafe fn block<const R: usize>(x: &[u8], p: Panel, s: KBlock, tile: &mut Tile) {
        let (panel, comp) = (p.w, p.comp);
        let mut acc = ymm::start::<R>(tile, s.fresh, ymm::negated(comp));
        let (xp, wp) = (x.as_ptr(), panel.as_ptr());
        for g in s.g0..s.g1 {
            super::prefetch_ahead(wp, s, g);
            let w0 = _mm256_loadu_si256(wp.add(g * GROUP_BYTES) as *const __m256i);
            let w1 = _mm256_loadu_si256(wp.add(g * GROUP_BYTES + 32) as *const __m256i);
            for (r, a) in acc.iter_mut().enumerate() {
                let bytes = (xp.add(r * s.stride + g * GROUP) as *const i32).read_unaligned();
                let xb = _mm256_set1_epi32(bytes);
                a[0] = _mm256_dpbusd_avx_epi32(a[0], xb, w0);
                a[1] = _mm256_dpbusd_avx_epi32(a[1], xb, w1);
            }
        }
        ymm::store(&acc, tile);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512_vnni {
    use super::{KBlock, Panel, Tile, GROUP, GROUP_BYTES};
    use std::arch::x86_64::*;

    /// R rows × 16 columns over groups g0..g1 with 512-bit `vpdpbusd` on the u8 levels, one
    /// zmm per row; a fresh tile starts at `−comp`.
    ///
    /// # Safety
    /// The CPU runs AVX-512F and AVX-512 VNNI; `x` holds R rows of `s.stride ≥ 4·g1` bytes;
    /// `p.w` holds at least `64·g1` bytes; `p.comp` 16 values.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) unsafe fn block<const R: usize>(x: &[u8], p: Panel, s: KBlock, tile: &mut Tile) {
        let (panel, comp) = (p.w, p.comp);
        let mut acc = [_mm512_setzero_si512(); R];
        for (r, a) in acc.iter_mut().enumerate() {
            *a = if s.fresh {
                _mm512_sub_epi32(
                    _mm512_setzero_si512(),
                    _mm512_loadu_si512(comp.as_ptr() as *const _),
                )
            } else {
                _mm512_loadu_si512(tile[r].as_ptr() as *const _)
            };
        }
        let (xp, wp) = (x.as_ptr(), panel.as_ptr());
        for g in s.g0..s.g1 {
            super::prefetch_ahead(wp, s, g);
            let w = _mm512_loadu_si512(wp.add(g * GROUP_BYTES) as *const _);
            for (r, a) in acc.iter_mut().enumerate() {
                let bytes = (xp.add(r * s.stride + g * GROUP) as *const i32).read_unaligned();
                *a = _mm512_dpbusd_epi32(*a, _mm512_set1_epi32(bytes), w);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm512_storeu_si512(tile[r].as_mut_ptr() as *mut _, *a);
        }
    }
}

/// The packed product as a candle op on (m, k) inputs.
struct Op<'a>(&'a PackedI8, Epilogue);

impl candle_core::CustomOp1 for Op<'_> {
    fn name(&self) -> &'static str {
        "tarjama-packed-int8"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous(s, l)?;
        let (m, _) = l.shape().dims2()?;
        let y = self.0.matmul_with(x, m, self.1)?;
        Ok((CpuStorage::F32(y), Shape::from_dims(&[m, self.0.n])))
    }
}

#[cfg(test)]
mod quantize_tests {
    use super::{min_max, round_clamped};

    /// The bit trick equals rounding half to even and clamping, for ties, bounds, infinities
    /// and NaN, at both weight limits and at activation bounds.
    #[test]
    fn round_clamped_equals_round_then_clamp() {
        let mut rng = fastrand::Rng::with_seed(13);
        let special = [
            0.0, -0.0, 0.5, -0.5, 1.5, 2.5, -2.5, 62.5, 63.5, 126.5, 127.5, 128.0, -128.5,
        ];
        let odd = [-1e9, 1e9, f32::INFINITY, f32::NEG_INFINITY];
        let random = (0..10_000).map(|_| rng.f32() * 600.0 - 300.0);
        let bounds = [
            (-63.0, 63.0),
            (-127.0, 127.0),
            (-13.0, 242.0),
            (0.0, 255.0),
            (-255.0, 0.0),
        ];
        for v in special.into_iter().chain(odd).chain(random) {
            for (lo, hi) in bounds {
                let want = v.round_ties_even().clamp(lo, hi) as i32;
                assert_eq!(round_clamped(v, lo, hi), want, "{v} in [{lo}, {hi}]");
            }
        }
        assert_eq!(round_clamped(f32::NAN, -3.0, 5.0), 0);
    }

    /// The lanes equal plain folds, NaN ignored, at every tail length.
    #[test]
    fn min_max_equals_folds() {
        let mut rng = fastrand::Rng::with_seed(11);
        for len in [0, 1, 15, 16, 17, 33, 512] {
            let mut v: Vec<f32> = (0..len).map(|_| rng.f32() * 8.0 - 3.0).collect();
            let folds = |v: &[f32]| {
                let lo = v.iter().fold(0f32, |a, &x| a.min(x));
                (lo, v.iter().fold(0f32, |a, &x| a.max(x)))
            };
            assert_eq!(min_max(&v), folds(&v), "len {len}");
            for i in (0..len).step_by(6) {
                v[i] = f32::NAN;
            }
            assert_eq!(min_max(&v), folds(&v), "len {len} with NaN");
        }
        assert_eq!(min_max(&[1.0, f32::NEG_INFINITY]).0, f32::NEG_INFINITY);
    }
}
