//! CPU kernels candle lacks in the speed or precision we need, one file per concern:
//!
//! - [`gemm_f32`]: `y = x Wᵀ + b` on weights packed once at load into 16-column panels; an
//!   AVX2/FMA microkernel (6 rows × 16 columns) and an AVX-512 one (6 × 32) that gives the same
//!   bits. Each output is one chain of FMAs over k in order, like BLAS, so f32 parity with
//!   PyTorch stays within its own rounding.
//! - [`gemm_i8`]: the same product on int8 weights (symmetric, per output row, f32 scales) and
//!   activations quantised per row on the fly (u8 with a zero point), accumulated exactly in
//!   i32: AMX, AVX-512 VNNI, AVX-VNNI, AVX2 (7-bit weights) and a portable path that gives
//!   each one's bits (see its module doc).
//! - [`attention`]: one decoding step's attention (q·Kᵀ, softmax, ·V per row and head) over the
//!   KV caches, following beam ancestry (the beams of one input read their shared encoder
//!   states once per head), optionally writing the weights' mean over heads (the alignment);
//!   and the cache gather that materialises it.
//! - [`cross_attention`]: one head of a decoding step's cross-attention, keys cached in panels
//!   of 32 transposed so that 32 dot products are vector lanes (no horizontal sums); the
//!   portable, AVX2 and AVX-512 builds give the same bits (FMA chains in a fixed order).
//! - [`sequence_attention`]: the encoder's full-sequence self-attention, from the fused q/k/v
//!   projection to merged heads, keys and values packed once per head, scores in scratch;
//!   AVX2/FMA and AVX-512 panel products with the same bits. For the int8 engine on a CPU with
//!   AMX-BF16, [`attention_bf16`]: the same on bf16 tile products (within bf16 rounding).
//! - [`layer_norm`]: two-pass layer norm.
//! - [`exp`]: vectorised `exp` for the log-softmax normaliser over the vocabulary, the
//!   encoder's attention softmax, and the int8 epilogue's SiLU and GELU.
//!
//! # Safety contract
//!
//! Every SIMD kernel is an `unsafe fn` with `#[target_feature]`: calling it on a CPU without
//! the feature is undefined behaviour. The only values that unlock them are [`F32Path`] and
//! [`I8Path`], which can only be built by checking the CPU at run time; the packed weight
//! types ([`PackedF32`], [`PackedI8`]) hold one, checked shapes and their own buffers, and
//! their safe entry points are the only callers of the kernels. On a CPU without AVX2/FMA no
//! [`F32Path`] exists (the type is then uninhabited), so no packed f32 weight can exist and
//! nothing can return a buffer a kernel did not write.
//!
//! # Measured (opus-mt-ar-en shapes, 2 threads, `bench/int8_rounds.py`, medians of 3)
//!
//! 2-core Intel Xeon with AMX (the AMX path): int8 against CTranslate2 int8 (itself on AMX)
//! 1.62× greedy batch 16, 1.90× beam 4 batch 16, 2.28× greedy batch 1; over f32 3.64×,
//! 3.39×, 3.31×; the distilbart-shaped summary job 1.49–1.66× CTranslate2 int8 (twelve
//! alternated pairs, eleven at 1.5 or more). Forced onto AVX2 there, against CTranslate2 capped to AVX2: 1.18×,
//! 1.32×, 1.77×, the summary 1.20×. 2-core AMD EPYC Zen 3 (AVX2 only, earlier sessions):
//! 1.41×, 1.34×, 2.10× CTranslate2 int8, 1.73×, 1.62×, 2.64× f32; the summary job
//! 1.26–1.71×, median 1.66. A later session on the Xeon, with the machine far noisier
//! (throughput moving 2× between runs): greedy batch 16 1.21–1.75× in six pairs (median
//! 1.56), the summary 1.35–2.14× in ten. See `gemm_f32`, `gemm_i8`, `gemm_i8::amx`, `cross_attention`,
//! `sequence_attention`, `attention_bf16`, and README's "int8".
//!
//! # Testing every path
//!
//! `kernels::tests` checks each GEMM path against a plain reference matmul on odd shapes (rows
//! 1..130, k 300/600/2048, n 33..70), iterating over every path the CPU can run (a function
//! argument); `TARJAMA_KERNEL_ISA` caps what the model picks, to run whole models on a narrower
//! path.

/// Calls the microkernel `f::<R>(args)` with R = `rows`, the const-generic row count of a tile:
/// `max` for `rows ≥ max`, each listed count for itself, 1 below them (`rows` ≥ 1). Defined
/// before the kernel modules so that they see it.
macro_rules! by_rows {
    ($rows:expr, $max:literal $(, $r:literal)*; $f:ident $args:tt) => {
        match $rows {
            $max.. => $f::<$max> $args,
            $($r => $f::<$r> $args,)*
            _ => $f::<1> $args,
        }
    };
}

/// Runs `$body` with `$t` naming tile `$j` (0..4) as an asm string literal (tile names must be
/// literals in `asm!`): the AMX kernels' sum tiles. Defined before the kernel modules so that
/// they see it.
#[cfg(target_arch = "x86_64")]
macro_rules! with_sum_tile {
    ($j:expr, $t:ident => $body:expr) => {
        match $j {
            0 => {
                macro_rules! $t {
                    () => {
                        "tmm0"
                    };
                }
                $body
            }
            1 => {
                macro_rules! $t {
                    () => {
                        "tmm1"
                    };
                }
                $body
            }
            2 => {
                macro_rules! $t {
                    () => {
                        "tmm2"
                    };
                }
                $body
            }
            _ => {
                macro_rules! $t {
                    () => {
                        "tmm3"
                    };
                }
                $body
            }
        }
    };
}

pub(crate) mod attention;
#[cfg(target_arch = "x86_64")]
pub(crate) mod attention_bf16;
pub(crate) mod cross_attention;
pub(crate) mod exp;
pub(crate) mod gemm_f32;
pub(crate) mod gemm_i8;
pub(crate) mod layer_norm;
pub(crate) mod sequence_attention;

use candle_core::{CpuStorage, Layout, Tensor};

pub(crate) use attention::{decode_attention, fused_cache, gather_cache, to_f16, KvRows};
pub(crate) use exp::sum_exp_shifted;
pub(crate) use gemm_f32::{F32Path, PackedF32};
pub(crate) use gemm_i8::{Epilogue, I8Path, PackedI8};
pub(crate) use layer_norm::layer_norm;
pub(crate) use sequence_attention::sequence_attention;

/// Output pointer shared by tasks that write disjoint columns.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes only the columns of its own panels.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// A linear layer's weight `w` (n, k) and bias `b` (n) as flat f32 values, with (n, k): what
/// every packed weight type is built from.
pub(crate) fn weight_and_bias(
    w: &Tensor,
    b: &Tensor,
) -> candle_core::Result<(Vec<f32>, Vec<f32>, usize, usize)> {
    let (n, k) = w.dims2()?;
    let wv = w.flatten_all()?.to_vec1::<f32>()?;
    let bv = b.flatten_all()?.to_vec1::<f32>()?;
    Ok((wv, bv, n, k))
}

/// A linear layer's weight (n, k), row-major (PyTorch's (out, in) layout), and its bias (n),
/// with shapes checked: what every packed weight type is built from.
#[derive(Clone, Copy)]
pub(crate) struct Dense<'a> {
    w: &'a [f32],
    b: &'a [f32],
    n: usize,
    k: usize,
}

impl<'a> Dense<'a> {
    pub(crate) fn new(w: &'a [f32], b: &'a [f32], n: usize, k: usize) -> candle_core::Result<Self> {
        if w.len() != n * k || b.len() != n || k == 0 {
            candle_core::bail!(
                "linear layer: weight {} / bias {} for {n}x{k}",
                w.len(),
                b.len()
            );
        }
        Ok(Self { w, b, n, k })
    }
}

/// The elements of a contiguous CPU storage of `T`.
pub(crate) fn contiguous<'a, T: candle_core::WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
) -> candle_core::Result<&'a [T]> {
    let data = s.as_slice::<T>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("expected contiguous inputs"),
    }
}

/// Read access to a CPU tensor's elements of `T` (its layout must be contiguous).
pub(crate) fn cpu_slice<T: candle_core::WithDType, R>(
    t: &Tensor,
    f: impl FnOnce(&[T]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("expected a CPU tensor");
    };
    f(contiguous(cpu, layout)?)
}

/// `TARJAMA_KERNEL_ISA` names the widest kernel family to use (`portable`, `avx2`,
/// `avx-vnni`, `avx512`, `amx`; int8 also takes `avx512-vnni`, the same as `avx512`): it can only narrow what the CPU offers, so tests and comparisons can
/// run a slower path on a fast machine; unset or unknown, the widest the CPU runs.
pub(crate) fn isa_cap() -> Option<String> {
    std::env::var("TARJAMA_KERNEL_ISA")
        .ok()
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
}

/// Asks the CPU to bring the cache line holding `p` into L1 without waiting for it. `p` need
/// not point into an allocation: it is never dereferenced (callers form it with wrapping
/// arithmetic) and a prefetch does not fault. A no-op off x86-64.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of x86-64, and a prefetch changes nothing the program can observe.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests;
