//! Word alignment of a translated sentence: which words of the translation came from which
//! words of the source, from the model's token alignment (cross-attention, see
//! [`crate::model::Alignment`]) and each token's place in the two texts (the tokenizer's
//! offsets). What placing markup (#16) or protected spans (#17) by alignment builds on.
//!
//! Words are maximal runs of non-whitespace characters. A source word × target word weight
//! is the attention mass the target word puts on the source word: summed over the source
//! word's tokens (the mass on the word) and averaged over the target word's tokens (so a
//! word split into many tokens does not outweigh a one-token word). Tokens without text
//! (`</s>`, a lone `▁`, the decoder start) belong to no word; the mass on them is dropped.

use std::ops::Range;

use crate::model::Alignment;
use crate::text::word_ranges;
use crate::tokenizer::{Tokenizer, TokenizerError};

#[derive(Debug, thiserror::Error)]
pub enum AlignError {
    #[error("{what}: expected {expected}, got {got}")]
    Shape {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("the segment carries no alignment (it was not asked for)")]
    NotRecorded,
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

/// Source words × target words of one sentence, with the soft alignment between them.
#[derive(Clone, Debug, PartialEq)]
pub struct WordAlignment {
    source_words: Vec<Range<usize>>,
    target_words: Vec<Range<usize>>,
    /// Row-major source words × target words.
    weights: Vec<f32>,
}

impl WordAlignment {
    /// From the source text and its tokens' byte ranges (one per source id, as
    /// [`Tokenizer::encode_with_offsets`] gives them), the translation and its tokens' byte
    /// ranges (one per generated id, decoder start included, as
    /// [`Tokenizer::decode_with_offsets`] gives them), and the token alignment.
    pub fn new(
        source: &str,
        source_tokens: &[Range<usize>],
        target: &str,
        target_tokens: &[Range<usize>],
        tokens: &Alignment,
    ) -> Result<Self, AlignError> {
        let shape = |what, expected, got| match expected == got {
            true => Ok(()),
            false => Err(AlignError::Shape {
                what,
                expected,
                got,
            }),
        };
        shape("source tokens", tokens.source_len(), source_tokens.len())?;
        shape(
            "target tokens (decoder start included)",
            tokens.target_len() + 1,
            target_tokens.len(),
        )?;
        let source_words = word_ranges(source);
        let target_words = word_ranges(target);
        let source_of = word_of_tokens(&source_words, source_tokens);
        // Row t of the token alignment is generated id t + 1.
        let target_of = word_of_tokens(&target_words, &target_tokens[1..]);
        let (ns, nt) = (source_words.len(), target_words.len());
        let mut weights = vec![0f32; ns * nt];
        let mut target_tokens_per_word = vec![0usize; nt];
        for (row, tw) in tokens.rows().zip(&target_of) {
            let Some(tw) = *tw else { continue };
            target_tokens_per_word[tw] += 1;
            for (&w, sw) in row.iter().zip(&source_of) {
                if let Some(sw) = *sw {
                    weights[sw * nt + tw] += w;
                }
            }
        }
        for row in weights.chunks_mut(nt.max(1)) {
            for (w, &n) in row.iter_mut().zip(&target_tokens_per_word) {
                *w /= n.max(1) as f32;
            }
        }
        Ok(Self {
            source_words,
            target_words,
            weights,
        })
    }

    /// Byte ranges of the source words, in order.
    pub fn source_words(&self) -> &[Range<usize>] {
        &self.source_words
    }

    /// Byte ranges of the target words, in order.
    pub fn target_words(&self) -> &[Range<usize>] {
        &self.target_words
    }

    /// How much target word `target` attends to source word `source` (0 out of range).
    pub fn weight(&self, source: usize, target: usize) -> f32 {
        let nt = self.target_words.len();
        match source < self.source_words.len() && target < nt {
            true => self.weights[source * nt + target],
            false => 0.0,
        }
    }

    /// The target word that attends most to source word `source` (ties: the earliest);
    /// `None` when the word is aligned to nothing: no target word gives it any weight (or
    /// there is no such source word).
    pub fn best_target(&self, source: usize) -> Option<usize> {
        let nt = self.target_words.len();
        let row = self.weights.get(source * nt..(source + 1) * nt)?;
        let (best, &weight) = row.iter().enumerate().fold(
            None,
            |best: Option<(usize, &f32)>, (i, w)| match best {
                Some((_, b)) if w <= b => best,
                _ => Some((i, w)),
            },
        )?;
        (weight > 0.0).then_some(best)
    }

    /// The target words the source words `sources` map to: from the first to the last of
    /// their best target words (so the span also covers words reordered into it). Source
    /// words aligned to nothing are left out; `None` when all of them are (or the range is
    /// empty).
    pub fn target_span(&self, sources: Range<usize>) -> Option<Range<usize>> {
        let best = sources.filter_map(|s| self.best_target(s));
        best.fold(None, |span: Option<Range<usize>>, t| match span {
            Some(r) => Some(r.start.min(t)..r.end.max(t + 1)),
            None => Some(t..t + 1),
        })
    }
}

/// A translated segment's words linked across the two languages, the source words located
/// in the client's text: what placing markup by alignment works from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentWords {
    /// Char range of each source word in the client's text, in order.
    pub source: Vec<Range<usize>>,
    /// Byte range of each word of the segment's translation, in order.
    pub target: Vec<Range<usize>>,
    /// For each source word, the words of the translation it aligns to (`None`: nothing).
    pub links: Vec<Option<Range<usize>>>,
}

/// The word alignment of one translated sentence: `source` is the text the model's input
/// was tokenised from, `target_ids` what it generated (decoder start first) and `tokens`
/// their alignment. Tokenises the source again for its offsets; the target text is
/// `tokenizer.decode(target_ids, true)`.
pub fn align_sentence(
    tokenizer: &Tokenizer,
    source: &str,
    target_ids: &[u32],
    tokens: &Alignment,
) -> Result<WordAlignment, AlignError> {
    let (_, source_tokens) = tokenizer.encode_with_offsets(source)?;
    let (target, target_tokens) = tokenizer.decode_with_offsets(target_ids)?;
    WordAlignment::new(source, &source_tokens, &target, &target_tokens, tokens)
}

/// For each token, the word its text starts in (`None`: no text, or outside every word).
fn word_of_tokens(words: &[Range<usize>], tokens: &[Range<usize>]) -> Vec<Option<usize>> {
    tokens
        .iter()
        .map(|t| {
            if t.is_empty() {
                return None;
            }
            let i = words.partition_point(|w| w.end <= t.start);
            words.get(i).filter(|w| w.start <= t.start).map(|_| i)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alignment(source_len: usize, rows: &[&[f32]]) -> Alignment {
        Alignment::new(source_len, rows.concat()).unwrap()
    }

    /// Source "ab cd" as tokens [a][b][ cd][</s>]; target "x yz" generated as
    /// <start> [x][ y][z][</s>].
    fn example(rows: &[&[f32]]) -> WordAlignment {
        let source_tokens = [0..1, 1..2, 3..5, 5..5];
        let target_tokens = [0..0, 0..1, 2..3, 3..4, 4..4];
        WordAlignment::new(
            "ab cd",
            &source_tokens,
            "x yz",
            &target_tokens,
            &alignment(4, rows),
        )
        .unwrap()
    }

    #[test]
    fn weights_sum_over_source_tokens_and_average_over_target_tokens() {
        let a = example(&[
            &[0.3, 0.3, 0.3, 0.1], // x: "ab" 0.6, "cd" 0.3
            &[0.0, 0.1, 0.9, 0.0], // y
            &[0.1, 0.1, 0.5, 0.3], // z
            &[0.0, 0.0, 0.0, 1.0], // </s>: no word
        ]);
        assert_eq!(a.source_words(), &[0..2, 3..5]);
        assert_eq!(a.target_words(), &[0..1, 2..4]);
        let close = |x: f32, y: f32| (x - y).abs() < 1e-6;
        assert!(close(a.weight(0, 0), 0.6));
        assert!(close(a.weight(1, 0), 0.3));
        // "yz": mean of y and z.
        assert!(close(a.weight(0, 1), (0.1 + 0.2) / 2.0));
        assert!(close(a.weight(1, 1), (0.9 + 0.5) / 2.0));
        assert_eq!(a.weight(2, 0), 0.0);
        assert_eq!(a.best_target(0), Some(0));
        assert_eq!(a.best_target(1), Some(1));
        assert_eq!(a.best_target(2), None);
    }

    #[test]
    fn ties_go_to_the_earliest_target_word() {
        let a = example(&[
            &[0.5, 0.0, 0.5, 0.0],
            &[0.5, 0.0, 0.5, 0.0],
            &[0.5, 0.0, 0.5, 0.0],
            &[0.0, 0.0, 0.0, 1.0],
        ]);
        assert_eq!(a.best_target(0), Some(0));
        assert_eq!(a.best_target(1), Some(0));
    }

    #[test]
    fn spans_cover_the_best_targets_and_skip_unaligned_words() {
        // Source "a b c d" (one token each + </s>); target "w x y z".
        let source_tokens = [0..1, 2..3, 4..5, 6..7, 7..7];
        let target_tokens = [0..0, 0..1, 2..3, 4..5, 6..7];
        let rows: [&[f32]; 4] = [
            &[0.0, 0.0, 0.9, 0.0, 0.1], // w <- c
            &[0.0, 0.0, 0.0, 0.0, 1.0], // x <- nothing
            &[0.8, 0.0, 0.0, 0.0, 0.2], // y <- a
            &[0.0, 0.0, 0.0, 0.0, 1.0], // z <- nothing
        ];
        let a = WordAlignment::new(
            "a b c d",
            &source_tokens,
            "w x y z",
            &target_tokens,
            &alignment(5, &rows),
        )
        .unwrap();
        assert_eq!(a.best_target(0), Some(2));
        // "b" and "d" get no weight from any target word: aligned to nothing.
        assert_eq!(a.best_target(1), None);
        assert_eq!(a.best_target(3), None);
        // a..c maps to y and w: the span from w to y (reordered).
        assert_eq!(a.target_span(0..3), Some(0..3));
        assert_eq!(a.target_span(1..2), None);
        assert_eq!(a.target_span(2..4), Some(0..1));
        assert_eq!(a.target_span(2..2), None);
    }

    #[test]
    fn shapes_must_agree() {
        let tokens = alignment(2, &[&[0.5, 0.5]]);
        let one_token: [Range<usize>; 1] = [Range { start: 0, end: 1 }];
        let bad_source = WordAlignment::new("a", &one_token, "x", &[0..0, 0..1], &tokens);
        assert!(matches!(bad_source, Err(AlignError::Shape { .. })));
        let bad_target = WordAlignment::new("a", &[0..1, 1..1], "x", &one_token, &tokens);
        assert!(matches!(bad_target, Err(AlignError::Shape { .. })));
    }
}
