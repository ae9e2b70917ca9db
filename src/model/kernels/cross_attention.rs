//! One head of a decoding step's cross-attention: the queries of one input's rows (its beams)
//! against the encoder states' keys and values, cached once per input.
//!
//! Keys are cached in panels of [`KEYS`] keys transposed, (S / 32, hd, 32) per head (zero keys
//! pad the last panel), so a query's dot products with 32 keys are the lanes of two vectors,
//! summed over the head's columns in order, reading 4 KB of consecutive memory per panel: no
//! horizontal sum per key. That, with each key converted once per query, was most of a
//! step's attention over a 600-token article. Each dot product and each weighted sum of
//! values is one chain of fused multiply-adds in a fixed order, so the portable build
//! (`f32::mul_add`) and the AVX2 and AVX-512 builds give the same bits (tested).

use candle_core::{Tensor, D};

use super::attention::CacheElem;
use super::{exp, F32Path};

/// Keys per panel of the cached keys: two AVX-512 vectors (four AVX2 ones) of lanes.
pub(crate) const KEYS: usize = 32;

/// Queries sharing each pass over the keys or values: 4 × 2 (keys) or 4 × 4 (values) zmm
/// accumulators, the most that leave registers for the operands.
const QUERIES: usize = 4;

/// Keys (B, H, S, hd) into the cache's panels (B, H, ⌈S / 32⌉, hd, 32), zero-padded.
pub(crate) fn pack_keys(k: &Tensor) -> candle_core::Result<Tensor> {
    let (b, h, s, hd) = k.dims4()?;
    let panels = s.div_ceil(KEYS);
    let k = k.pad_with_zeros(2, 0, panels * KEYS - s)?;
    k.reshape((b, h, panels, KEYS, hd))?
        .transpose(3, 4)?
        .contiguous()
}

/// [`pack_keys`]'s panels back into the first `len` keys (B, H, len, hd), for the tensor path.
pub(crate) fn unpack_keys(kt: &Tensor, len: usize) -> candle_core::Result<Tensor> {
    let (b, h, panels, hd, keys) = kt.dims5()?;
    kt.transpose(3, 4)?
        .reshape((b, h, panels * keys, hd))?
        .narrow(D::Minus2, 0, len)
}

/// One head of one input: `n` queries (n·hd), keys in panels (`kt`: ⌈len / 32⌉ panels of hd
/// rows of 32), values (`v`: `len` rows of hd), the additive key mask (len).
pub(super) struct CrossHead<'a, E> {
    pub q: &'a [f32],
    pub kt: &'a [E],
    pub v: &'a [E],
    pub mask: Option<&'a [f32]>,
    pub hd: usize,
    pub len: usize,
    pub scale: f32,
}

impl<E: CacheElem> CrossHead<'_, E> {
    /// Scores q·k·scale + mask of every query and key into `scores` (n rows of len).
    pub(super) fn scores(&self, scores: &mut [f32], path: Option<F32Path>) {
        assert!(
            self.kt.len() >= self.len.div_ceil(KEYS) * self.hd * KEYS,
            "cross keys"
        );
        #[cfg(target_arch = "x86_64")]
        if let Some(path) = path {
            // SAFETY: an F32Path exists only on a CPU with AVX2, FMA and F16C; an AVX-512
            // one also has AVX-512F. The panels' length is asserted above.
            unsafe {
                if path.is_avx512() {
                    zmm::scores(self, scores)
                } else {
                    ymm::scores(self, scores)
                }
            };
            return self.scale_and_mask(scores);
        }
        let _ = path;
        self.dot_columns(scores);
        self.scale_and_mask(scores);
    }

    /// Dot products of every query with every key, one FMA chain over the columns in order
    /// (what every build computes, lane for lane).
    fn dot_columns(&self, scores: &mut [f32]) {
        let (hd, len) = (self.hd, self.len);
        for (q, row) in self.q.chunks_exact(hd).zip(scores.chunks_exact_mut(len)) {
            row.fill(0.0);
            for (p, row) in row.chunks_mut(KEYS).enumerate() {
                let panel = &self.kt[p * hd * KEYS..(p + 1) * hd * KEYS];
                for (&qc, keys) in q.iter().zip(panel.chunks_exact(KEYS)) {
                    for (s, k) in row.iter_mut().zip(keys) {
                        *s = qc.mul_add(k.to_f64() as f32, *s);
                    }
                }
            }
        }
    }

    /// Each row of scores (n rows of len) to its unnormalised softmax weights
    /// exp(x − max), the row's sum into `sums`. [`exp::exp_poly`] (no libm call, the same
    /// bits in every build; libm's `expf` took as long as the dot products), summed in 16
    /// lanes in a fixed order; masked keys (−∞) get exactly 0.
    pub(super) fn softmax(&self, scores: &mut [f32], sums: &mut [f32], path: Option<F32Path>) {
        #[cfg(target_arch = "x86_64")]
        if path.is_some() {
            // SAFETY: an F32Path exists only on a CPU with AVX2 and FMA.
            return unsafe { ymm::softmax(self, scores, sums) };
        }
        let _ = path;
        self.softmax_rows(scores, sums);
    }

    /// [`Self::softmax`], inlined into each build.
    #[inline(always)]
    fn softmax_rows(&self, scores: &mut [f32], sums: &mut [f32]) {
        /// exp_poly's clamp: below it, the weight is 0 (a masked key's −∞ included).
        const FLOOR: f32 = -87.3;
        for (row, sum) in scores
            .chunks_exact_mut(self.len.max(1))
            .zip(sums.iter_mut())
        {
            let max = row.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
            let mut lanes = [0f32; 16];
            for chunk in row.chunks_mut(16) {
                for (x, lane) in chunk.iter_mut().zip(lanes.iter_mut()) {
                    let d = *x - max;
                    *x = if d >= FLOOR { exp::exp_poly(d) } else { 0.0 };
                    *lane += *x;
                }
            }
            *sum = lanes.iter().fold(0.0, |a, &x| a + x);
        }
    }

    #[inline(always)]
    fn scale_and_mask(&self, scores: &mut [f32]) {
        for row in scores.chunks_exact_mut(self.len.max(1)) {
            for x in row.iter_mut() {
                *x *= self.scale;
            }
            if let Some(m) = self.mask {
                for (x, &m) in row.iter_mut().zip(m) {
                    *x += m;
                }
            }
        }
    }

    /// `out[i] = Σ_j weights[i][j] · v_j / sums[i]` for every query.
    pub(super) fn values(
        &self,
        weights: &[f32],
        sums: &[f32],
        out: &mut [f32],
        path: Option<F32Path>,
    ) {
        assert!(self.v.len() >= self.len * self.hd, "cross values");
        #[cfg(target_arch = "x86_64")]
        if let Some(path) = path {
            if path.is_avx512() && self.hd == zmm::HD {
                // SAFETY: as in `scores`; hd checked.
                return unsafe { zmm::values(self, weights, sums, out) };
            }
            // SAFETY: as in `scores`.
            return unsafe { ymm::values(self, weights, sums, out) };
        }
        let _ = path;
        self.weighted_sums(weights, sums, out);
    }

    /// [`Self::values`] in plain Rust, inlined into each build.
    #[inline(always)]
    fn weighted_sums(&self, weights: &[f32], sums: &[f32], out: &mut [f32]) {
        let (hd, len) = (self.hd, self.len);
        let rows = out
            .chunks_exact_mut(hd)
            .zip(weights.chunks_exact(len.max(1)));
        for ((o, w), &sum) in rows.zip(sums) {
            o.fill(0.0);
            for (j, &p) in w.iter().enumerate() {
                for (o, x) in o.iter_mut().zip(&self.v[j * hd..(j + 1) * hd]) {
                    *o = p.mul_add(x.to_f64() as f32, *o);
                }
            }
            for o in o.iter_mut() {
                *o /= sum;
            }
        }
    }
}

/// The AVX-512 build: 32 keys (two vectors) of up to four queries per pass over the columns,
/// and the weighted values of heads of 64 (four vectors) of up to four queries per pass.
#[cfg(target_arch = "x86_64")]
mod zmm {
    use super::super::attention::load16;
    use super::{CacheElem, CrossHead, KEYS, QUERIES};
    use std::arch::x86_64::*;

    /// Head size of the register-resident weighted sums.
    pub(super) const HD: usize = 64;

    /// Unscaled dot products (see [`CrossHead::dot_columns`]), a panel of 32 keys at a time.
    ///
    /// # Safety
    /// The CPU runs AVX-512F, AVX2, FMA and F16C; `h.kt` holds ⌈len / 32⌉ panels.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub(super) unsafe fn scores<E: CacheElem>(h: &CrossHead<E>, scores: &mut [f32]) {
        let (hd, len) = (h.hd, h.len);
        let queries =
            h.q.chunks(QUERIES * hd)
                .zip(scores.chunks_mut(QUERIES * len));
        for (q, out) in queries {
            let n = q.len() / hd;
            for (p, panel) in
                h.kt.chunks_exact(hd * KEYS)
                    .take(len.div_ceil(KEYS))
                    .enumerate()
            {
                let mut acc = [[_mm512_setzero_ps(); 2]; QUERIES];
                for (c, keys) in panel.chunks_exact(KEYS).enumerate() {
                    let (k0, k1) = (load16(keys, 0), load16(keys, 16));
                    for (i, acc) in acc.iter_mut().enumerate().take(n) {
                        let x = _mm512_set1_ps(q[i * hd + c]);
                        acc[0] = _mm512_fmadd_ps(x, k0, acc[0]);
                        acc[1] = _mm512_fmadd_ps(x, k1, acc[1]);
                    }
                }
                // The padding keys' lanes are dropped.
                let (j, keys) = (p * KEYS, KEYS.min(len - p * KEYS));
                for (i, acc) in acc.iter().enumerate().take(n) {
                    let mut lanes = [0f32; KEYS];
                    _mm512_storeu_ps(lanes.as_mut_ptr(), acc[0]);
                    _mm512_storeu_ps(lanes[16..].as_mut_ptr(), acc[1]);
                    out[i * len + j..i * len + j + keys].copy_from_slice(&lanes[..keys]);
                }
            }
        }
    }

    /// [`CrossHead::values`] for heads of [`HD`].
    ///
    /// # Safety
    /// The CPU runs AVX-512F, AVX2, FMA and F16C; `h.hd == HD`.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub(super) unsafe fn values<E: CacheElem>(
        h: &CrossHead<E>,
        weights: &[f32],
        sums: &[f32],
        out: &mut [f32],
    ) {
        let len = h.len;
        let blocks = out
            .chunks_mut(QUERIES * HD)
            .zip(weights.chunks(QUERIES * len.max(1)))
            .zip(sums.chunks(QUERIES));
        for ((out, w), sums) in blocks {
            let n = sums.len();
            let mut acc = [[_mm512_setzero_ps(); 4]; QUERIES];
            for j in 0..len {
                let row = &h.v[j * HD..];
                let v = [0, 16, 32, 48].map(|c| load16(row, c));
                for (i, acc) in acc.iter_mut().enumerate().take(n) {
                    let p = _mm512_set1_ps(w[i * len + j]);
                    for (a, &v) in acc.iter_mut().zip(&v) {
                        *a = _mm512_fmadd_ps(p, v, *a);
                    }
                }
            }
            for (i, acc) in acc.iter().enumerate().take(n) {
                let sum = _mm512_set1_ps(sums[i]);
                for (c, a) in acc.iter().enumerate() {
                    let o = &mut out[i * HD + 16 * c..i * HD + 16 * c + 16];
                    _mm512_storeu_ps(o.as_mut_ptr(), _mm512_div_ps(*a, sum));
                }
            }
        }
    }
}

/// The AVX2 build: 16 keys (two vectors) of up to four queries per pass; weighted values one
/// query at a time (sixteen registers do not hold more), in the portable loop's order.
#[cfg(target_arch = "x86_64")]
mod ymm {
    use super::super::attention::load8;
    use super::{CacheElem, CrossHead, KEYS, QUERIES};
    use std::arch::x86_64::*;

    /// Unscaled dot products (see [`CrossHead::dot_columns`]), half a panel (16 keys) at a
    /// time.
    ///
    /// # Safety
    /// The CPU runs AVX2, FMA and F16C; `h.kt` holds ⌈len / 32⌉ panels.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn scores<E: CacheElem>(h: &CrossHead<E>, scores: &mut [f32]) {
        let (hd, len) = (h.hd, h.len);
        let queries =
            h.q.chunks(QUERIES * hd)
                .zip(scores.chunks_mut(QUERIES * len));
        for (q, out) in queries {
            let n = q.len() / hd;
            for j in (0..len).step_by(16) {
                let panel = &h.kt[j / KEYS * hd * KEYS..];
                let mut acc = [[_mm256_setzero_ps(); 2]; QUERIES];
                for c in 0..hd {
                    let at = c * KEYS + j % KEYS;
                    let (k0, k1) = (load8(panel, at), load8(panel, at + 8));
                    for (i, acc) in acc.iter_mut().enumerate().take(n) {
                        let x = _mm256_set1_ps(q[i * hd + c]);
                        acc[0] = _mm256_fmadd_ps(x, k0, acc[0]);
                        acc[1] = _mm256_fmadd_ps(x, k1, acc[1]);
                    }
                }
                // The padding keys' lanes are dropped.
                let keys = 16.min(len - j);
                for (i, acc) in acc.iter().enumerate().take(n) {
                    let mut lanes = [0f32; 16];
                    _mm256_storeu_ps(lanes.as_mut_ptr(), acc[0]);
                    _mm256_storeu_ps(lanes[8..].as_mut_ptr(), acc[1]);
                    out[i * len + j..i * len + j + keys].copy_from_slice(&lanes[..keys]);
                }
            }
        }
    }

    /// [`CrossHead::softmax`] compiled for AVX2 (on AVX-512 CPUs too: 256-bit vectors do).
    ///
    /// # Safety
    /// The CPU runs AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn softmax<E: CacheElem>(
        h: &CrossHead<E>,
        scores: &mut [f32],
        sums: &mut [f32],
    ) {
        h.softmax_rows(scores, sums)
    }

    /// [`CrossHead::values`], one query at a time, for heads of up to 64 columns in whole
    /// vectors (others take the portable loop compiled for AVX2 and FMA: `mul_add` becomes
    /// one instruction, the same rounding).
    ///
    /// # Safety
    /// The CPU runs AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn values<E: CacheElem>(
        h: &CrossHead<E>,
        weights: &[f32],
        sums: &[f32],
        out: &mut [f32],
    ) {
        let (hd, len) = (h.hd, h.len);
        if hd % 8 != 0 || hd > 64 {
            return h.weighted_sums(weights, sums, out);
        }
        let rows = out
            .chunks_exact_mut(hd)
            .zip(weights.chunks_exact(len.max(1)));
        for ((o, w), &sum) in rows.zip(sums) {
            let mut acc = [_mm256_setzero_ps(); 8];
            for (j, &p) in w.iter().enumerate() {
                let (row, p) = (&h.v[j * hd..], _mm256_set1_ps(p));
                for (c, a) in acc.iter_mut().enumerate().take(hd / 8) {
                    *a = _mm256_fmadd_ps(p, load8(row, 8 * c), *a);
                }
            }
            let sum = _mm256_set1_ps(sum);
            for (c, a) in acc.iter().enumerate().take(hd / 8) {
                _mm256_storeu_ps(o[8 * c..8 * c + 8].as_mut_ptr(), _mm256_div_ps(*a, sum));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    /// `n` values in [−1, 1) as cache elements.
    fn values<E: CacheElem>(rng: &mut fastrand::Rng, n: usize) -> Vec<E> {
        (0..n)
            .map(|_| E::from_f64((rng.f32() * 2.0 - 1.0) as f64))
            .collect()
    }

    /// Scores, softmax and weighted values of one head on `path`: (scores, outputs).
    fn head<E: CacheElem>(
        h: &CrossHead<E>,
        n: usize,
        path: Option<F32Path>,
    ) -> (Vec<f32>, Vec<f32>) {
        let mut scores = vec![0f32; n * h.len];
        h.scores(&mut scores, path);
        let raw = scores.clone();
        let mut sums = vec![0f32; n];
        h.softmax(&mut scores, &mut sums, path);
        // Masked keys weigh exactly 0.
        for row in scores.chunks_exact(h.len) {
            assert!((3..h.len).step_by(7).all(|j| row[j] == 0.0));
        }
        let raw = [raw, scores.clone(), sums.clone()].concat();
        let mut out = vec![0f32; n * h.hd];
        h.values(&scores, &sums, &mut out, path);
        (raw, out)
    }

    /// Every path this CPU runs gives the portable build's bits (whole vectors of keys,
    /// tails, short query blocks, heads of 64 and others, f32 and f16 caches), and all match
    /// a plain f64 reference.
    #[test]
    fn every_path_matches_portable_bit_for_bit() {
        for (len, hd, n) in [
            (1, 64, 1),
            (33, 64, 4),
            (600, 64, 5),
            (47, 20, 3),
            (16, 8, 2),
            (64, 64, 4),
        ] {
            agree::<f32>(len, hd, n);
            agree::<f16>(len, hd, n);
        }
    }

    fn agree<E: CacheElem>(len: usize, hd: usize, n: usize) {
        let mut rng = fastrand::Rng::with_seed(len as u64 * 31 + hd as u64);
        let panels = len.div_ceil(KEYS);
        let (kt, v) = (
            values::<E>(&mut rng, panels * hd * KEYS),
            values::<E>(&mut rng, len * hd),
        );
        // Key j, column c.
        let key = |j: usize, c: usize| kt[((j / KEYS) * hd + c) * KEYS + j % KEYS].to_f64();
        let q = values::<f32>(&mut rng, n * hd);
        let mask: Vec<f32> = (0..len)
            .map(|j| if j % 7 == 3 { f32::NEG_INFINITY } else { 0.0 })
            .collect();
        let h = CrossHead {
            q: &q,
            kt: &kt,
            v: &v,
            mask: Some(&mask),
            hd,
            len,
            scale: 0.125,
        };
        let portable = head(&h, n, None);
        let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for path in F32Path::all() {
            let got = head(&h, n, Some(path));
            let what = format!("len {len} hd {hd} n {n} avx512 {}", path.is_avx512());
            assert_eq!(bits(&got.0), bits(&portable.0), "scores, {what}");
            assert_eq!(bits(&got.1), bits(&portable.1), "values, {what}");
        }
        let f = |x: &E| x.to_f64();
        for i in 0..n {
            let s: Vec<f64> = (0..len)
                .map(|j| {
                    let dot: f64 = (0..hd).map(|c| q[i * hd + c] as f64 * key(j, c)).sum();
                    dot * 0.125 + mask[j] as f64
                })
                .collect();
            let mx = s.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
            let z: f64 = e.iter().sum();
            for c in 0..hd {
                let want = (0..len).map(|j| e[j] * f(&v[j * hd + c])).sum::<f64>() / z;
                let got = portable.1[i * hd + c] as f64;
                assert!(
                    (got - want).abs() < 1e-5,
                    "query {i} [{c}]: {got} vs {want}"
                );
            }
        }
    }
}
