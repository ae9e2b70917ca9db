//! Logits processors with transformers' semantics, applied in place to one row of scores.
//! Order as in `_get_logits_processor`: no-repeat-ngram, bad words, min length, forced BOS,
//! forced EOS.

use super::config::GenerationParams;

pub(crate) struct Processors {
    no_repeat: usize,
    banned_single: Vec<u32>,
    banned_seqs: Vec<Vec<u32>>,
    min_length: usize,
    forced_bos: Option<u32>,
    forced_eos: Option<u32>,
    eos: u32,
    max_length: usize,
}

impl Processors {
    pub fn new(p: &GenerationParams, max_length: usize) -> Self {
        // transformers drops bad-word entries that are exactly the EOS token.
        let bad: Vec<&Vec<u32>> = p
            .bad_words_ids
            .iter()
            .filter(|w| !w.is_empty() && w.as_slice() != [p.eos_token_id])
            .collect();
        Self {
            no_repeat: p.no_repeat_ngram_size,
            banned_single: bad.iter().filter(|w| w.len() == 1).map(|w| w[0]).collect(),
            banned_seqs: bad.into_iter().filter(|w| w.len() > 1).cloned().collect(),
            min_length: p.min_length,
            forced_bos: p.forced_bos_token_id,
            forced_eos: p.forced_eos_token_id,
            eos: p.eos_token_id,
            max_length,
        }
    }

    /// `seq` is the whole decoder sequence so far (start token included).
    pub fn apply(&self, scores: &mut [f32], seq: &[u32]) {
        let cur_len = seq.len();
        let ban = |scores: &mut [f32], t: u32| {
            if let Some(s) = scores.get_mut(t as usize) {
                *s = f32::NEG_INFINITY;
            }
        };
        if self.no_repeat > 0 && cur_len + 1 >= self.no_repeat {
            let n = self.no_repeat;
            let prefix = &seq[cur_len + 1 - n..];
            for w in seq.windows(n) {
                if &w[..n - 1] == prefix {
                    ban(scores, w[n - 1]);
                }
            }
        }
        for &t in &self.banned_single {
            ban(scores, t);
        }
        for w in &self.banned_seqs {
            let (last, head) = w.split_last().unwrap_or((&0, &[]));
            if seq.ends_with(head) {
                ban(scores, *last);
            }
        }
        if cur_len < self.min_length {
            ban(scores, self.eos);
        }
        if let Some(bos) = self.forced_bos.filter(|_| cur_len == 1) {
            force(scores, bos);
        }
        if let Some(eos) = self.forced_eos.filter(|_| cur_len + 1 == self.max_length) {
            force(scores, eos);
        }
    }
}

/// Everything -inf except `t`, which gets 0.
fn force(scores: &mut [f32], t: u32) {
    scores.fill(f32::NEG_INFINITY);
    if let Some(s) = scores.get_mut(t as usize) {
        *s = 0.0;
    }
}

/// In-place log-softmax in f32 (as transformers computes it on fp32 logits).
pub(crate) fn log_softmax_in_place(row: &mut [f32]) {
    let max = row_max(row);
    if !max.is_finite() {
        return;
    }
    let lse = super::kernels::sum_exp_shifted(row, max).ln() as f32;
    for x in row.iter_mut() {
        *x = (*x - max) - lse;
    }
}

/// Index of the first maximum (torch.argmax picks the first on ties), NaN ignored; 0 for an
/// empty or all-NaN row. Two vectorised passes (the maximum, then the first chunk holding it):
/// a scalar compare-and-index loop over a 62 834-word vocabulary was 4.5 % of a batched
/// greedy step.
pub(crate) fn argmax(row: &[f32]) -> usize {
    let max = row_max(row);
    let mut at = 0;
    for c in row.chunks(LANES) {
        // A branch-free test per chunk, so it vectorises; the scan stops at the first hit.
        if c.iter().fold(false, |hit, &x| hit | (x == max)) {
            return at + c.iter().position(|&x| x == max).unwrap_or(0);
        }
        at += c.len();
    }
    0
}

/// Lanes of the running maxima in [`row_max`] and the beam scan's chunks.
pub(crate) const LANES: usize = 16;

/// The largest value, NaN ignored (as `f32::max` folds), −∞ for an empty or all-NaN row.
/// Sixteen running maxima so that it vectorises: a fold over `f32::max` runs one element per
/// compare.
pub(crate) fn row_max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &x) in lanes.iter_mut().zip(c) {
            *m = if x > *m { x } else { *m };
        }
    }
    lanes
        .iter()
        .chain(tail)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_max_equals_a_max_fold() {
        let mut rng = fastrand::Rng::with_seed(9);
        for len in [0, 1, 15, 16, 33, 500] {
            let mut row: Vec<f32> = (0..len).map(|_| rng.f32() * 10.0 - 5.0).collect();
            let fold = |r: &[f32]| r.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(row_max(&row), fold(&row), "len {len}");
            for i in (0..len).step_by(3) {
                row[i] = f32::NAN;
            }
            assert_eq!(row_max(&row), fold(&row), "len {len} with NaN");
        }
        assert_eq!(row_max(&[f32::NAN; 20]), f32::NEG_INFINITY);
    }

    /// The first maximum, as a plain scan finds it, NaN skipped.
    #[test]
    fn argmax_is_the_first_maximum() {
        let plain = |r: &[f32]| {
            let mut best: Option<usize> = None;
            for (i, &x) in r.iter().enumerate() {
                if !x.is_nan() && best.is_none_or(|b| x > r[b]) {
                    best = Some(i);
                }
            }
            best.unwrap_or(0)
        };
        let mut rng = fastrand::Rng::with_seed(11);
        for len in [0, 1, 15, 16, 17, 33, 500, 62_834] {
            // Few distinct values, so ties across and within chunks are common.
            let mut row: Vec<f32> = (0..len).map(|_| rng.u8(0..40) as f32).collect();
            assert_eq!(argmax(&row), plain(&row), "len {len}");
            for i in (0..len).step_by(7) {
                row[i] = f32::NAN;
            }
            assert_eq!(argmax(&row), plain(&row), "len {len} with NaN");
            if len > 0 {
                row[len - 1] = f32::INFINITY;
                assert_eq!(argmax(&row), len - 1, "len {len}, +inf last");
            }
        }
        assert_eq!(argmax(&[f32::NAN; 20]), 0);
        assert_eq!(argmax(&[f32::NEG_INFINITY; 20]), 0);
    }
}
