//! Greedy and beam search with the semantics of transformers' `generate` (5.x vectorised
//! beam search): the entry point of generation, driving a [`Seq2SeqModel`] step by step.
//! Rows that finish or are cancelled leave the decoder batch. Beam reordering copies nothing:
//! each row keeps writing its own cache slot and the ancestry table records which physical
//! row holds each step of each beam; caches are materialised only when rows leave.
//!
//! Alignment (opt-in per input, [`generate_aligned`]): when some input of the batch asks for
//! it, each step keeps the last decoder layer's cross-attention averaged over heads (written
//! by the attention kernel as it runs); greedy rows append their row every step, beam inputs
//! keep every step's beam rows and parents and trace the final hypothesis back through them.

use super::config::GenerationParams;
use super::kv_cache::DecoderState;
use super::logits::{argmax, log_softmax_in_place, Processors, LANES};
use super::seq2seq::Seq2SeqModel;
use super::{Alignment, Generated, ModelError, Res};

use rayon::prelude::*;

/// transformers' "very large negative" used to mask beams in fp32.
const NEG: f32 = -1.0e9;
/// Initial self-attention cache capacity (steps); caches grow by this much when full.
const INITIAL_CACHE: usize = super::kv_cache::CACHE_STEP;

/// Greedy (num_beams == 1) or beam search over a batch of sources of any lengths.
/// `cancelled(i)` is polled every step; cancelled inputs leave the batch and yield `None`.
pub fn generate(
    model: &Seq2SeqModel,
    inputs: &[Vec<u32>],
    params: &GenerationParams,
    cancelled: &dyn Fn(usize) -> bool,
) -> Res<Vec<Option<Generated>>> {
    generate_aligned(model, inputs, &[], params, cancelled)
}

/// As [`generate`]; input `i` also gets its [`Alignment`] when `align[i]` is true (missing
/// entries are false). Inputs that ask and inputs that do not share one batch.
pub fn generate_aligned(
    model: &Seq2SeqModel,
    inputs: &[Vec<u32>],
    align: &[bool],
    params: &GenerationParams,
    cancelled: &dyn Fn(usize) -> bool,
) -> Res<Vec<Option<Generated>>> {
    let max_length = params.effective_max_length();
    if params.num_beams == 0 {
        return Err(ModelError::Input("num_beams must be at least 1".into()));
    }
    if max_length > model.max_decoder_positions() + 1 {
        return Err(ModelError::Input(format!(
            "max_length {max_length} exceeds the decoder's {} positions",
            model.max_decoder_positions()
        )));
    }
    let vocab = model.config().vocab_size as u32;
    if vocab < 2 {
        return Err(ModelError::Input(
            "beam search needs a vocabulary of 2+ tokens".into(),
        ));
    }
    if params.decoder_start_token_id >= vocab {
        return Err(ModelError::Input(
            "decoder_start_token_id out of vocabulary".into(),
        ));
    }
    let mut results: Vec<Option<Generated>> = vec![None; inputs.len()];
    let live: Vec<usize> = (0..inputs.len()).filter(|&i| !cancelled(i)).collect();
    if live.is_empty() {
        return Ok(results);
    }
    tracing::debug!(
        inputs = live.len(),
        num_beams = params.num_beams,
        max_length,
        "generate"
    );
    let batch: Vec<Vec<u32>> = live.iter().map(|&i| inputs[i].clone()).collect();
    let (enc, mask) = model.encode(&batch)?;
    let cap = max_length.clamp(1, INITIAL_CACHE);
    let mut state = model.start_decoder(&enc, &mask, cap, params.num_beams)?;
    let aligned = |i: usize| align.get(i).copied().unwrap_or(false);
    if live.iter().any(|&i| aligned(i)) {
        state.record_alignment();
    }
    // Per live input: its source length when it wants its alignment.
    let align: Vec<Option<usize>> = live
        .iter()
        .map(|&i| aligned(i).then_some(inputs[i].len()))
        .collect();
    let procs = Processors::new(params, max_length);
    let search = Search {
        model,
        ctx: StepCtx {
            params,
            procs: &procs,
            max_length,
            vocab: model.config().vocab_size,
        },
        cancelled,
    };
    if params.num_beams == 1 {
        search.greedy(&mut state, &live, &align, &mut results)?;
    } else {
        search.beam(&mut state, &live, &align, &mut results)?;
    }
    Ok(results)
}

struct Search<'a> {
    model: &'a Seq2SeqModel,
    ctx: StepCtx<'a>,
    cancelled: &'a dyn Fn(usize) -> bool,
}

/// What the per-row/per-input step work needs; `Sync`, so inputs are processed in parallel.
struct StepCtx<'a> {
    params: &'a GenerationParams,
    procs: &'a Processors,
    max_length: usize,
    vocab: usize,
}

/// `sum_logprobs / generated_len^length_penalty`, in the precision transformers uses.
fn normalise(score: f32, generated_len: usize, length_penalty: f32) -> f32 {
    score / (generated_len as f64).powf(length_penalty as f64) as f32
}

struct GreedyRow {
    input: usize,
    seq: Vec<u32>,
    score: f32,
    /// The rows so far, when this input wants its alignment.
    alignment: Option<Alignment>,
}

impl GreedyRow {
    fn generated(&mut self, score: f32) -> Generated {
        Generated {
            ids: self.seq.clone(),
            score,
            alignment: self.alignment.take(),
        }
    }
}

impl Search<'_> {
    fn greedy(
        &self,
        state: &mut DecoderState,
        live: &[usize],
        align: &[Option<usize>],
        out: &mut [Option<Generated>],
    ) -> Res<()> {
        let start = self.ctx.params.decoder_start_token_id;
        let mut rows: Vec<GreedyRow> = live
            .iter()
            .zip(align)
            .map(|(&input, &source_len)| GreedyRow {
                input,
                seq: vec![start],
                score: 0.0,
                alignment: source_len.map(Alignment::empty),
            })
            .collect();
        let mut cur_len = 1;
        while cur_len < self.ctx.max_length && !rows.is_empty() {
            let keep: Vec<bool> = rows.iter().map(|r| !(self.cancelled)(r.input)).collect();
            retain_rows(state, &mut rows, &keep)?;
            if rows.is_empty() {
                break;
            }
            let tokens: Vec<u32> = rows.iter().map(|r| r.seq[r.seq.len() - 1]).collect();
            let mut logits = self.model.decode_step(state, &tokens)?;
            if let Some((step, width)) = state.step_alignment()? {
                for (r, row) in rows.iter_mut().enumerate() {
                    if let Some(a) = &mut row.alignment {
                        a.push_row(&step[r * width..(r + 1) * width]);
                    }
                }
            }
            let ctx = &self.ctx;
            rows.par_iter_mut()
                .zip(logits.par_chunks_mut(ctx.vocab))
                .for_each(|(r, row)| {
                    log_softmax_in_place(row);
                    ctx.procs.apply(row, &r.seq);
                    let t = argmax(row);
                    r.score += row[t];
                    r.seq.push(t as u32);
                });
            cur_len += 1;
            let mut keep = Vec::with_capacity(rows.len());
            for r in &mut rows {
                let done = r.seq[cur_len - 1] == self.ctx.params.eos_token_id
                    || cur_len >= self.ctx.max_length;
                if done {
                    let score = normalise(r.score, r.seq.len() - 1, self.ctx.params.length_penalty);
                    out[r.input] = Some(r.generated(score));
                }
                keep.push(!done);
            }
            retain_rows(state, &mut rows, &keep)?;
        }
        for mut r in rows {
            // Only reached when max_length <= 1: nothing to generate.
            out[r.input] = Some(r.generated(0.0));
        }
        Ok(())
    }

    fn beam(
        &self,
        state: &mut DecoderState,
        live: &[usize],
        align: &[Option<usize>],
        out: &mut [Option<Generated>],
    ) -> Res<()> {
        let nb = self.ctx.params.num_beams;
        let start = self.ctx.params.decoder_start_token_id;
        let mut items: Vec<BeamItem> = live
            .iter()
            .zip(align)
            .map(|(&i, &source_len)| BeamItem::new(i, nb, start, source_len))
            .collect();
        let mut cur_len = 1;
        while cur_len < self.ctx.max_length && !items.is_empty() {
            let keep: Vec<bool> = items.iter().map(|it| !(self.cancelled)(it.input)).collect();
            if keep.iter().any(|k| !k) {
                let rows = beam_rows(&keep, nb, |i, b| (i * nb + b) as u32);
                state.select_rows(&rows)?;
                items = items
                    .into_iter()
                    .zip(&keep)
                    .filter(|(_, k)| **k)
                    .map(|(it, _)| it)
                    .collect();
                if items.is_empty() {
                    break;
                }
            }
            let tokens: Vec<u32> = items
                .iter()
                .flat_map(|it| it.running.iter().map(|h| h.seq[h.seq.len() - 1]))
                .collect();
            let mut logits = self.model.decode_step(state, &tokens)?;
            if let Some((step, width)) = state.step_alignment()? {
                for (it, rows) in items.iter_mut().zip(step.chunks(nb * width)) {
                    if let Some(h) = &mut it.history {
                        h.push_step(rows, width);
                    }
                }
            }
            let ctx = &self.ctx;
            let sources: Vec<Vec<u32>> = items
                .par_iter_mut()
                .zip(logits.par_chunks_mut(ctx.vocab * nb))
                .map(|(it, chunk)| ctx.beam_step(it, chunk, cur_len))
                .collect();
            cur_len += 1;
            let mut keep = Vec::with_capacity(items.len());
            for (it, sources) in items.iter_mut().zip(&sources) {
                if let Some(h) = &mut it.history {
                    h.parents.push(sources.clone());
                }
                let done =
                    it.update_heuristic(cur_len, self.ctx.params) || cur_len >= self.ctx.max_length;
                if done {
                    out[it.input] = Some(it.best());
                }
                keep.push(!done);
            }
            let rows = beam_rows(&keep, nb, |i, b| (i * nb) as u32 + sources[i][b]);
            state.select_rows(&rows)?;
            items = items
                .into_iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(it, _)| it)
                .collect();
        }
        for it in items {
            out[it.input] = Some(it.best());
        }
        Ok(())
    }
}

impl StepCtx<'_> {
    /// One beam-search step for one input; returns, per new running beam, its source beam.
    fn beam_step(&self, it: &mut BeamItem, scores: &mut [f32], cur_len: usize) -> Vec<u32> {
        let nb = self.params.num_beams;
        let keep_n = 2 * nb;
        let mut top: Vec<(f32, usize)> = Vec::with_capacity(keep_n + 1);
        for (b, row) in scores.chunks_mut(self.vocab).enumerate() {
            log_softmax_in_place(row);
            self.procs.apply(row, &it.running[b].seq);
            scan_top(&mut top, keep_n, row, it.running[b].score, b * self.vocab);
        }
        let cands: Vec<Candidate> = top
            .iter()
            .enumerate()
            .map(|(rank, &(score, flat))| {
                let token = (flat % self.vocab) as u32;
                let ends_sequence =
                    token == self.params.eos_token_id || cur_len + 1 >= self.max_length;
                Candidate {
                    score,
                    beam: flat / self.vocab,
                    token,
                    ends_sequence,
                    top: rank < nb,
                }
            })
            .collect();
        it.add_finished(&cands, cur_len, self.params);
        it.next_running(&cands)
    }
}

/// [`push_top`] of `lp + base` for every element of `row` (index `at + i`), in order. Chunks
/// whose largest score cannot enter a full list are skipped whole: the same result as pushing
/// each element (a skipped score would have been refused), without a branch per element.
fn scan_top(top: &mut Vec<(f32, usize)>, k: usize, row: &[f32], base: f32, at: usize) {
    for (c, chunk) in row.chunks(LANES).enumerate() {
        let mut scores = [f32::NEG_INFINITY; LANES];
        for (s, &lp) in scores.iter_mut().zip(chunk) {
            *s = lp + base;
        }
        if top.len() == k {
            let floor = top[k - 1].0;
            let mut enters = false;
            for &s in &scores {
                enters |= s > floor;
            }
            if !enters {
                continue;
            }
        }
        for (i, &s) in scores.iter().enumerate().take(chunk.len()) {
            push_top(top, k, s, at + c * LANES + i);
        }
    }
}

/// Keeps the top `k` (score, index) pairs, descending; earlier indices win ties.
fn push_top(top: &mut Vec<(f32, usize)>, k: usize, score: f32, idx: usize) {
    let full = top.len() == k;
    if score.is_nan() || (full && score <= top[k - 1].0) {
        return;
    }
    let pos = top.partition_point(|&(s, _)| s >= score);
    top.insert(pos, (score, idx));
    top.truncate(k);
}

/// Decoder rows for the next step: for each kept item `i`, beams `row(i, b)`.
fn beam_rows(keep: &[bool], nb: usize, row: impl Fn(usize, usize) -> u32) -> Vec<u32> {
    keep.iter()
        .enumerate()
        .filter(|(_, k)| **k)
        .flat_map(|(i, _)| (0..nb).map(move |b| (i, b)))
        .map(|(i, b)| row(i, b))
        .collect()
}

fn retain_rows(state: &mut DecoderState, rows: &mut Vec<GreedyRow>, keep: &[bool]) -> Res<()> {
    if keep.iter().all(|k| *k) {
        return Ok(());
    }
    let idx: Vec<u32> = (0..rows.len() as u32)
        .filter(|&i| keep[i as usize])
        .collect();
    if !idx.is_empty() {
        state.select_rows(&idx)?;
    }
    let mut k = keep.iter();
    rows.retain(|_| *k.next().unwrap_or(&false));
    Ok(())
}

struct Candidate {
    score: f32,
    beam: usize,
    token: u32,
    /// The token is end-of-sequence, or the hypothesis reaches the length limit with it.
    ends_sequence: bool,
    /// Among the first num_beams candidates: only those may become final hypotheses.
    top: bool,
}

#[derive(Clone)]
struct Hyp {
    seq: Vec<u32>,
    score: f32,
    finished: bool,
    /// The running beam whose step produced the last token (0 before the first step).
    beam: u32,
}

/// One beam input's cross-attention rows of every step, and the ancestry that says which
/// of them belong to a hypothesis: running beam `b` of step `s + 1` continued beam
/// `parents[s][b]` of step `s`.
struct AlignHistory {
    source_len: usize,
    /// Per step, num_beams rows of `source_len`.
    steps: Vec<Vec<f32>>,
    parents: Vec<Vec<u32>>,
}

impl AlignHistory {
    /// Keeps this step's rows (`width` padded source positions each) without the padding.
    fn push_step(&mut self, rows: &[f32], width: usize) {
        let n = self.source_len;
        self.steps
            .push(rows.chunks(width).flat_map(|r| &r[..n]).copied().collect());
    }

    /// The rows of `h`, step by step from its last one back along its parents.
    fn trace(&self, h: &Hyp) -> Alignment {
        let n = self.source_len;
        let steps = h.seq.len() - 1;
        let mut weights = vec![0f32; steps * n];
        let mut beam = h.beam as usize;
        for s in (0..steps).rev() {
            let row = &self.steps[s][beam * n..(beam + 1) * n];
            weights[s * n..(s + 1) * n].copy_from_slice(row);
            if s > 0 {
                beam = self.parents[s - 1][beam] as usize;
            }
        }
        Alignment {
            source_len: n,
            weights,
        }
    }
}

/// Beam state of one input: running beams and the num_beams best-finished slots.
struct BeamItem {
    input: usize,
    running: Vec<Hyp>,
    slots: Vec<Hyp>,
    heuristic_unsatisfied: bool,
    /// When this input wants its alignment.
    history: Option<AlignHistory>,
}

impl BeamItem {
    fn new(input: usize, nb: usize, start: u32, align_source_len: Option<usize>) -> Self {
        let hyp = |score| Hyp {
            seq: vec![start],
            score,
            finished: false,
            beam: 0,
        };
        let running = (0..nb)
            .map(|b| hyp(if b == 0 { 0.0 } else { NEG }))
            .collect();
        let history = align_source_len.map(|source_len| AlignHistory {
            source_len,
            steps: Vec::new(),
            parents: Vec::new(),
        });
        Self {
            input,
            running,
            slots: vec![hyp(NEG); nb],
            heuristic_unsatisfied: true,
            history,
        }
    }

    /// The running hypothesis candidate `c` extends, with its token.
    fn extend(&self, c: &Candidate, score: f32, finished: bool) -> Hyp {
        let mut seq = self.running[c.beam].seq.clone();
        seq.push(c.token);
        Hyp {
            seq,
            score,
            finished,
            beam: c.beam as u32,
        }
    }

    /// transformers' `_update_finished_beams`: merge just-finished candidates into the slots.
    fn add_finished(&mut self, cands: &[Candidate], cur_len: usize, p: &GenerationParams) {
        let full = p.early_stopping && self.slots.iter().all(|s| s.finished);
        let mut merged = std::mem::take(&mut self.slots);
        for c in cands {
            let mut s = normalise(c.score, cur_len, p.length_penalty);
            if full {
                s += NEG;
            }
            if !self.heuristic_unsatisfied {
                s += NEG;
            }
            let finished = c.ends_sequence && c.top;
            if !finished {
                s += NEG;
            }
            // Masked candidates can never outrank a real slot; skip cloning them.
            if s > NEG {
                merged.push(self.extend(c, s, finished));
            }
        }
        merged.sort_by(|a, b| b.score.total_cmp(&a.score));
        merged.truncate(self.running.len());
        self.slots = merged;
    }

    /// transformers' `_get_running_beams_for_next_iteration`; returns source beams.
    fn next_running(&mut self, cands: &[Candidate]) -> Vec<u32> {
        let nb = self.running.len();
        let mut order: Vec<(f32, usize)> = cands
            .iter()
            .enumerate()
            .map(|(i, c)| {
                (
                    if c.ends_sequence {
                        c.score + NEG
                    } else {
                        c.score
                    },
                    i,
                )
            })
            .collect();
        order.sort_by(|a, b| b.0.total_cmp(&a.0));
        order.truncate(nb);
        let running = order
            .iter()
            .map(|&(score, i)| self.extend(&cands[i], score, false))
            .collect();
        let sources = order.iter().map(|&(_, i)| cands[i].beam as u32).collect();
        self.running = running;
        sources
    }

    /// transformers' `_check_early_stop_heuristic`; returns true when this input is done.
    fn update_heuristic(&mut self, cur_len: usize, p: &GenerationParams) -> bool {
        let best = normalise(self.running[0].score, cur_len - 1, p.length_penalty);
        let worst = self
            .slots
            .iter()
            .map(|s| s.score)
            .fold(f32::INFINITY, f32::min);
        let improvable = self
            .slots
            .iter()
            .any(|s| best > if s.finished { worst } else { NEG });
        self.heuristic_unsatisfied &= improvable;
        let all_finished = self.slots.iter().all(|s| s.finished);
        !self.heuristic_unsatisfied || (p.early_stopping && all_finished)
    }

    fn best(&self) -> Generated {
        let best = match self.slots.first() {
            Some(s) if s.finished => s,
            _ => &self.running[0],
        };
        Generated {
            ids: best.seq.clone(),
            score: best.score,
            alignment: self.history.as_ref().map(|h| h.trace(best)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chunked scan keeps exactly what pushing every element keeps: ties (earlier index
    /// wins), NaN, −∞ and a row that is not a multiple of the chunk.
    #[test]
    fn scan_top_equals_pushing_every_element() {
        let mut rng = fastrand::Rng::with_seed(5);
        for len in [1, 7, 16, 17, 100, 1003] {
            for k in [1, 2, 8] {
                let row: Vec<f32> = (0..len)
                    .map(|i| match i % 13 {
                        3 => f32::NAN,
                        5 => f32::NEG_INFINITY,
                        7 => 0.5,
                        _ => (rng.f32() * 8.0).round() / 4.0 - 2.0,
                    })
                    .collect();
                let (mut want, mut got) = (Vec::new(), Vec::new());
                for base in [-1.25f32, 0.0] {
                    for (i, &lp) in row.iter().enumerate() {
                        push_top(&mut want, k, lp + base, 40 + i);
                    }
                    scan_top(&mut got, k, &row, base, 40);
                    assert_eq!(want, got, "len {len} k {k} base {base}");
                }
            }
        }
    }
}
