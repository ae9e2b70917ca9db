//! The encoder's self-attention on AMX-BF16 tiles, for the int8 engine: queries, keys, the
//! softmax weights and values rounded to bfloat16 (8-bit significands, as fine as the int8
//! activations around them), products summed in f32 by `tdpbf16ps` (16 × 16 × 32 per
//! instruction); scale, mask and softmax stay f32, as in [`super::sequence_attention`]'s f32
//! kernel, which every other CPU and the f32 engine run.
//!
//! Over a 600-token article the f32 kernel was a fifth of the distilbart summary job on an
//! AMX Xeon, at about two thirds of the FMA peak; one tile product here does the work of 512
//! AVX-512 FMAs. Measured (2-core Xeon, 12 layers): encoding 195–210 ms → 145–162 ms, the
//! job 454–490 → 418–422 ms. Results differ from the f32 kernel's by bf16 rounding (tested
//! within a bound); on a random distilbart-shaped model the int8 encoder's error against f32
//! over 600 tokens stayed 0.0248 (relative L2) with it and without it, and the bench model's
//! int8-vs-f32 figures moved within their noise (README, "int8").
//!
//! One head of one batch row at a time, sixteen queries per block:
//! - scores: Q (16 × 64) as two A tiles against each block of 16 keys, stored transposed in
//!   pairs (two B tiles of 16 column pairs × 16 keys), four key blocks per pass;
//! - softmax per row in f32 (the vectorised `exp`), weights rounded to bf16;
//! - weighted values: weights (16 × 32 keys) as an A tile against the values in key pairs
//!   (a B tile of 16 key pairs × 16 columns per 16 columns), into four 16 × 16 sums.

use std::arch::asm;

use super::gemm_i8::amx;
use super::{exp, F32Path};

/// Head size this kernel takes (every model we serve); others run the f32 kernel.
pub(super) const HD: usize = 64;

/// Queries per block, keys per score tile: a tile's rows.
const ROWS: usize = 16;

/// Keys per weighted-values step: 32 bf16 weights make a 64-byte A-tile row.
const KEYS: usize = 32;

/// Bytes per tile row.
const ROW_BYTES: usize = 64;

/// Proof that this CPU and OS run AMX-BF16 (and that `TARJAMA_KERNEL_ISA` does not cap
/// below AMX): only [`AmxBf16::detect`] makes one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AmxBf16(());

impl AmxBf16 {
    /// Also requires the AVX-512 f32 path (every AMX CPU has it), which compiles the packing
    /// and the softmax. Checked once (every encoder layer's attention asks), as
    /// `I8Path::detect` is.
    pub(crate) fn detect() -> Option<Self> {
        static PROOF: std::sync::OnceLock<Option<AmxBf16>> = std::sync::OnceLock::new();
        *PROOF.get_or_init(|| {
            let capped = matches!(
                super::isa_cap().as_deref(),
                Some("portable" | "avx2" | "avx-vnni" | "avx512-vnni" | "avx512")
            );
            let avx512 = F32Path::detect().is_some_and(|p| p.is_avx512());
            (!capped && avx512 && amx::bf16_available()).then_some(Self(()))
        })
    }
}

/// f32 to bfloat16 bits, rounded to nearest even (finite inputs).
#[inline(always)]
fn bf16(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// Two values as a pair of bfloat16 in one u32 (`a` first in memory): a row of a B tile
/// holds 16 such pairs.
#[inline(always)]
fn pair(a: f32, b: f32) -> u32 {
    bf16(a) as u32 | (bf16(b) as u32) << 16
}

/// A thread's buffers, reused from one head to the next.
#[derive(Default)]
pub(super) struct Scratch {
    /// Queries (rows padded to 16) × 64, bf16.
    q: Vec<u16>,
    /// Key blocks of 16: 32 column pairs × 16 keys.
    k: Vec<u32>,
    /// Per 16 columns: key pairs × 16 columns.
    v: Vec<u32>,
    /// 16 rows of scores, `keys` wide (f32).
    scores: Vec<f32>,
    /// 16 rows of weights, `keys` wide (bf16).
    weights: Vec<u16>,
}

/// One head: `rows` (T, 3·d), the fused projection's output (q, k, v side by side), head `h`
/// of `hd` = [`HD`] columns, the additive key mask (T). Returns (T, hd).
pub(super) struct Head<'a> {
    pub rows: &'a [f32],
    pub t: usize,
    pub d: usize,
    pub h: usize,
    pub mask: Option<&'a [f32]>,
    pub scale: f32,
}

impl Head<'_> {
    /// The head's output (T, 64); `wide` runs the softmax's `exp`.
    pub(super) fn run(
        &self,
        proof: AmxBf16,
        scratch: &mut Scratch,
        wide: Option<F32Path>,
    ) -> Vec<f32> {
        /// # Safety
        /// The CPU runs AVX-512F, AVX2 and FMA.
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn wide_build(
            h: &Head,
            proof: AmxBf16,
            scratch: &mut Scratch,
            wide: Option<F32Path>,
        ) -> Vec<f32> {
            h.run_any(proof, scratch, wide)
        }
        // SAFETY: the proof implies the AVX-512 f32 path.
        unsafe { wide_build(self, proof, scratch, wide) }
    }

    #[inline(always)]
    fn run_any(&self, _proof: AmxBf16, scratch: &mut Scratch, wide: Option<F32Path>) -> Vec<f32> {
        let t = self.t;
        let keys = t.next_multiple_of(KEYS);
        let tq = t.next_multiple_of(ROWS);
        self.pack(scratch, keys, tq);
        scratch.scores.resize(ROWS * keys, 0.0);
        scratch.weights.resize(ROWS * keys, 0);
        let mut out = vec![0f32; t * HD];
        let mut block = [[0f32; HD]; ROWS];
        for q0 in (0..t).step_by(ROWS) {
            let n = ROWS.min(t - q0);
            // SAFETY: the proof says AMX-BF16 runs and the OS granted the tile state; the
            // buffers were sized by `pack` and above for `keys` keys and `tq` queries.
            unsafe { scores(scratch, q0, keys) };
            let mut sums = [0f32; ROWS];
            for (r, sum) in sums.iter_mut().enumerate().take(n) {
                *sum = self.softmax(scratch, r, keys, wide);
            }
            // SAFETY: as above; `block` holds 16 rows of 64 f32.
            unsafe { weighted_values(scratch, keys, &mut block) };
            for (r, sum) in sums.iter().enumerate().take(n) {
                // A row with every key masked has no weights: zeros, not NaN.
                let inv = if *sum > 0.0 { 1.0 / sum } else { 0.0 };
                let o = &mut out[(q0 + r) * HD..(q0 + r + 1) * HD];
                for (o, &c) in o.iter_mut().zip(&block[r]) {
                    *o = c * inv;
                }
            }
        }
        out
    }

    /// Queries, keys and values of the head into the tile layouts, zero-padded.
    #[inline(always)]
    fn pack(&self, s: &mut Scratch, keys: usize, tq: usize) {
        let (t, d) = (self.t, self.d);
        let row = |i: usize, part: usize| {
            let at = i * 3 * d + part * d + self.h * HD;
            &self.rows[at..at + HD]
        };
        s.q.clear();
        s.q.resize(tq * HD, 0);
        s.k.clear();
        s.k.resize(keys * HD / 2, 0);
        s.v.clear();
        s.v.resize(keys * HD / 2, 0);
        for i in 0..t {
            for (dst, &x) in s.q[i * HD..(i + 1) * HD].iter_mut().zip(row(i, 0)) {
                *dst = bf16(x);
            }
            // Key i in block i / 16: column pair p of its 32, lane i % 16.
            let k = row(i, 1);
            let block = &mut s.k[(i / ROWS) * HD / 2 * ROWS..];
            for p in 0..HD / 2 {
                block[p * ROWS + i % ROWS] = pair(k[2 * p], k[2 * p + 1]);
            }
        }
        // Values i and i + 1 (the last alone, beside a zero value): per 16 columns, pair row
        // i / 2.
        let zero = [0f32; HD];
        for i in (0..t).step_by(2) {
            let (a, b) = (row(i, 2), if i + 1 < t { row(i + 1, 2) } else { &zero });
            for c0 in (0..HD).step_by(ROWS) {
                let at = (c0 / ROWS) * keys / 2 * ROWS + (i / 2) * ROWS;
                for (c, dst) in s.v[at..at + ROWS].iter_mut().enumerate() {
                    *dst = pair(a[c0 + c], b[c0 + c]);
                }
            }
        }
    }

    /// Row `r` of the scores to bf16 softmax weights exp(x·scale + mask − max) (the padding
    /// keys 0); returns the sum of the f32 weights.
    #[inline(always)]
    fn softmax(&self, s: &mut Scratch, r: usize, keys: usize, wide: Option<F32Path>) -> f32 {
        let row = &mut s.scores[r * keys..r * keys + self.t];
        match self.mask {
            Some(m) => row
                .iter_mut()
                .zip(m)
                .for_each(|(x, &m)| *x = *x * self.scale + m),
            None => row.iter_mut().for_each(|x| *x *= self.scale),
        }
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
        let weights = &mut s.weights[r * keys..(r + 1) * keys];
        if max == f32::NEG_INFINITY {
            weights.fill(0);
            return 0.0;
        }
        let sum = exp::exp_shifted_in_place(row, max, wide);
        for (w, &x) in weights.iter_mut().zip(row.iter()) {
            *w = bf16(x);
        }
        weights[self.t..].fill(0);
        sum
    }
}

/// Scores of queries q0..q0+16 against every key block into `s.scores` (16 rows of `keys`):
/// tmm4/tmm5 hold the queries' columns 0..32 and 32..64, tmm6/tmm7 a key block's matching
/// column pairs, tmm0–tmm3 four key blocks' sums.
///
/// # Safety
/// AMX-BF16 runs and the OS granted the tile state; `s.q` holds q0 + 16 rows of 64, `s.k`
/// `keys` keys, `s.scores` 16 rows of `keys`.
unsafe fn scores(s: &mut Scratch, q0: usize, keys: usize) {
    assert!(s.q.len() >= (q0 + ROWS) * HD && s.k.len() >= keys * HD / 2);
    assert!(s.scores.len() >= ROWS * keys);
    amx::configure(ROWS, 0);
    let q = s.q.as_ptr().add(q0 * HD).cast::<u8>();
    asm!(
        "tileloadd tmm4, [{q}+{stride}*1]",
        "tileloadd tmm5, [{q}+{stride}*1+64]",
        q = in(reg) q,
        stride = in(reg) HD * 2,
        options(nostack, readonly),
    );
    let blocks = keys / ROWS;
    let out = s.scores.as_mut_ptr().cast::<u8>();
    for b0 in (0..blocks).step_by(4) {
        for j in 0..4.min(blocks - b0) {
            // Column pairs 0..16, then 16..32, of key block b0 + j.
            let k = s.k.as_ptr().add((b0 + j) * HD / 2 * ROWS).cast::<u8>();
            with_sum_tile!(j, c => asm!(
                concat!("tilezero ", c!()),
                "tileloadd tmm6, [{k}+{stride}*1]",
                concat!("tdpbf16ps ", c!(), ", tmm4, tmm6"),
                "tileloadd tmm7, [{k}+{stride}*1+1024]",
                concat!("tdpbf16ps ", c!(), ", tmm5, tmm7"),
                k = in(reg) k,
                stride = in(reg) ROW_BYTES,
                options(nostack, readonly),
            ));
        }
        for j in 0..4.min(blocks - b0) {
            let at = out.add((b0 + j) * ROWS * 4);
            with_sum_tile!(j, c => asm!(
                concat!("tilestored [{o}+{stride}*1], ", c!()),
                o = in(reg) at,
                stride = in(reg) keys * 4,
                options(nostack),
            ));
        }
    }
}

/// The 16 rows of weights in `s.weights` times the values, into `out` (16 × 64): tmm4 holds
/// 32 keys' weights, tmm6/tmm7 the matching key pairs of 16 value columns, tmm0–tmm3 the
/// four 16-column sums.
///
/// # Safety
/// AMX-BF16 runs and the OS granted the tile state; `s.weights` holds 16 rows of `keys`,
/// `s.v` four 16-column blocks of `keys` keys.
unsafe fn weighted_values(s: &Scratch, keys: usize, out: &mut [[f32; HD]; ROWS]) {
    assert!(s.weights.len() >= ROWS * keys && s.v.len() >= keys * HD / 2);
    amx::configure(ROWS, 0);
    asm!(
        "tilezero tmm0",
        "tilezero tmm1",
        "tilezero tmm2",
        "tilezero tmm3",
        options(nostack, nomem)
    );
    let w = s.weights.as_ptr().cast::<u8>();
    for k0 in (0..keys).step_by(KEYS) {
        asm!(
            "tileloadd tmm4, [{w}+{stride}*1]",
            w = in(reg) w.add(k0 * 2),
            stride = in(reg) keys * 2,
            options(nostack, readonly),
        );
        for j in 0..HD / ROWS {
            // Key pairs k0/2..k0/2+16 of columns 16j..16j+16.
            let v =
                s.v.as_ptr()
                    .add(j * keys / 2 * ROWS + k0 / 2 * ROWS)
                    .cast::<u8>();
            with_sum_tile!(j, c => asm!(
                "tileloadd tmm6, [{v}+{stride}*1]",
                concat!("tdpbf16ps ", c!(), ", tmm4, tmm6"),
                v = in(reg) v,
                stride = in(reg) ROW_BYTES,
                options(nostack, readonly),
            ));
        }
    }
    let o = out.as_mut_ptr().cast::<u8>();
    for j in 0..HD / ROWS {
        with_sum_tile!(j, c => asm!(
            concat!("tilestored [{o}+{stride}*1], ", c!()),
            o = in(reg) o.add(j * ROWS * 4),
            stride = in(reg) HD * 4,
            options(nostack),
        ));
    }
}
