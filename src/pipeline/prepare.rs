//! Turning a client's text into model inputs, and the outputs back into a translation,
//! paragraph by paragraph.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use crate::model::Alignment;
use crate::scheduler::{Generation, ModelLimits, SentenceOutput};
use crate::text::{
    self, DetectedLanguage, Document, NormalizeOptions, Normalized, Place, Protected,
};
use crate::tokenizer::Tokenizer;

use super::align::{align_sentence, SegmentWords, WordAlignment};
use super::blocking::CancelFlag;
use super::{
    clip, timings, PipelineError, SourceLanguage, TranslatedParagraph, TranslatedSegment,
    TranslatedText,
};

/// Source words (byte ranges of a segment's text) and the translation words each aligns to.
type LinkedWords = (Vec<Range<usize>>, Vec<Option<Range<usize>>>);

/// Bytes of a response segment besides its texts (spans, score, field tags).
const SEGMENT_OVERHEAD_BYTES: usize = 64;

pub(super) struct Prepared {
    original: String,
    normalized: Normalized,
    document: Document,
    /// For each segment, its model input; `None` when it is passed through untranslated.
    input_of: Vec<Option<usize>>,
    inputs: Vec<Vec<u32>>,
    /// For each segment, its protected spans (URLs, handles, Latin names and codes) when it
    /// has any: the model translates the text without them, and they are put back at their
    /// aligned place.
    protected: Vec<Option<Protected>>,
    passthrough: bool,
    /// Every translated segment records its alignment and reports its linked words (for
    /// markup placed by alignment).
    linked_words: bool,
    /// Re-tokenises masked inputs to place their spans by alignment.
    tokenizer: Arc<Tokenizer>,
}

impl Prepared {
    /// Normalises, segments within the model's input budget and tokenises `original`; an
    /// input the model cannot take is refused here, before anything is queued.
    pub(super) fn new(
        original: &str,
        language: SourceLanguage,
        tokenizer: &Arc<Tokenizer>,
        limits: &ModelLimits,
        cancel: &CancelFlag,
    ) -> Result<Self, PipelineError> {
        let passthrough = language == SourceLanguage::Auto
            && text::detect_language(original) == DetectedLanguage::English;
        let normalized = text::normalize(original, &NormalizeOptions::default());
        cancel.check()?;
        // Once the call has ended every piece "fits", so segmentation stops tokenising.
        let count = |s: &str| {
            if passthrough || cancel.is_set() {
                0
            } else {
                tokenizer.token_count(s).unwrap_or(usize::MAX)
            }
        };
        let document = text::segment(&normalized.text, limits.max_input_tokens, &count);
        cancel.check()?;
        // Sentences without Arabic letters (English prose, numbers, symbols) are passed
        // through as they are, whatever the request says: the model only sees Arabic.
        let translatable: Vec<usize> = if passthrough {
            Vec::new()
        } else {
            document
                .segments
                .iter()
                .enumerate()
                .filter(|(_, s)| text::has_arabic_letter(&s.text))
                .map(|(i, _)| i)
                .collect()
        };
        let mut input_of = vec![None; document.segments.len()];
        for (k, &i) in translatable.iter().enumerate() {
            input_of[i] = Some(k);
        }
        let mut protected = vec![None; document.segments.len()];
        for &i in &translatable {
            let sentence = &document.segments[i].text;
            let spans = text::find_protected(sentence);
            if !spans.is_empty() {
                protected[i] = Some(Protected::new(sentence, &spans));
            }
        }
        let texts: Vec<&str> = translatable
            .iter()
            .map(|&i| match &protected[i] {
                Some(p) => p.masked.as_str(),
                None => document.segments[i].text.as_str(),
            })
            .collect();
        let inputs = tokenizer.encode_batch(&texts)?;
        for (k, ids) in inputs.iter().enumerate() {
            limits
                .check_input(ids)
                .map_err(|reason| PipelineError::Input {
                    sentence: clip(&document.segments[translatable[k]].text),
                    reason,
                })?;
        }
        Ok(Self {
            original: original.to_string(),
            normalized,
            document,
            input_of,
            inputs,
            protected,
            passthrough,
            linked_words: false,
            tokenizer: Arc::clone(tokenizer),
        })
    }

    /// Record alignments for every translated segment and link each segment's words (see
    /// [`super::align::SegmentWords`]).
    pub(super) fn link_words(&mut self) {
        self.linked_words = true;
    }

    /// Source tokens of all model inputs.
    pub(super) fn source_tokens(&self) -> usize {
        self.inputs.iter().map(Vec::len).sum()
    }

    /// The most bytes a response with this text's translation can take when each sentence
    /// generates up to `max_new_tokens` tokens of up to `token_bytes` bytes each, plus the
    /// token alignments held until the text is done for sentences with protected spans.
    pub(super) fn response_bytes(&self, max_new_tokens: usize, token_bytes: usize) -> usize {
        let generated = max_new_tokens.saturating_mul(token_bytes);
        (0..self.document.segments.len())
            .map(|i| {
                let source = self.document.segments[i].text.len();
                // The segment's translation (its source when passed through), and the same
                // again in the joined text.
                let (translation, alignment) = match self.input_of[i] {
                    Some(k) if self.protected[i].is_some() || self.linked_words => (
                        generated,
                        self.inputs[k]
                            .len()
                            .saturating_mul(max_new_tokens)
                            .saturating_mul(Alignment::BYTES_PER_CELL),
                    ),
                    Some(_) => (generated, 0),
                    None => (source, 0),
                };
                source
                    .saturating_add(translation.saturating_mul(2))
                    .saturating_add(SEGMENT_OVERHEAD_BYTES)
                    .saturating_add(alignment)
            })
            .fold(self.original.len(), usize::saturating_add)
    }

    /// Whether the model must record alignments (to place protected spans or markup).
    pub(super) fn needs_alignment(&self) -> bool {
        self.linked_words || self.protected.iter().any(Option::is_some)
    }

    pub(super) fn needs_translation(&self) -> bool {
        !self.inputs.is_empty()
    }

    pub(super) fn model_inputs_len(&self) -> usize {
        self.inputs.len()
    }

    pub(super) fn model_inputs(&self) -> Vec<Vec<u32>> {
        self.inputs.clone()
    }

    pub(super) fn detected_language(&self) -> &'static str {
        if self.passthrough {
            "en"
        } else {
            "ar"
        }
    }

    fn segment(&self, index: usize, out: Option<&SentenceOutput>) -> TranslatedSegment {
        let s = &self.document.segments[index];
        let (source_start, source_end) = self.normalized.segment_span(s);
        // Passed through untranslated unless the model gave an output; the language is
        // only detected for text that was passed through.
        let model = out.map(|o| &o.generation);
        let (translation, words) = self.translation(s, model, self.protected[index].as_ref());
        let words = words.map(|(source, links)| self.located(s, &source, links, &translation));
        TranslatedSegment {
            source: s.text.clone(),
            translation,
            score: model.map_or(0.0, |g| g.score),
            detected_language: match model {
                Some(_) => "ar",
                None => text::detect_language(&s.text).code(),
            },
            source_start,
            source_end,
            paragraph: s.paragraph,
            split: s.split != text::SplitKind::None,
            token_ids: model.map_or_else(Vec::new, |g| g.ids.clone()),
            alignment: model.and_then(|g| g.alignment.clone()),
            words,
        }
    }

    /// The segment's translation and, when words are linked, its source words (byte ranges
    /// of `s.text`) with the translation's words each aligns to. Protected spans go back
    /// after the English word aligned to the source word before them (or before the word
    /// aligned to the one after); where nothing is aligned, at the end (at the start for a
    /// span that opened the sentence).
    fn translation(
        &self,
        s: &text::Segment,
        model: Option<&Generation>,
        protected: Option<&Protected>,
    ) -> (String, Option<LinkedWords>) {
        let Some(g) = model else {
            let words = text::word_ranges(&s.text);
            let links = (0..words.len()).map(|i| Some(i..i + 1)).collect();
            return (s.text.clone(), self.linked_words.then_some((words, links)));
        };
        let masked = protected.map_or(s.text.as_str(), |p| p.masked.as_str());
        let aligned = match (&g.alignment, protected.is_some() || self.linked_words) {
            (Some(a), true) => self.word_alignment(masked, &g.ids, a),
            _ => None,
        };
        let best = |w: usize| aligned.as_ref().and_then(|a| a.best_target(w));
        let Some(p) = protected else {
            let words = text::word_ranges(&s.text);
            let links = (0..words.len())
                .map(|w| best(w).map(|t| t..t + 1))
                .collect();
            return (g.text.clone(), self.linked_words.then_some((words, links)));
        };
        let restored = p.restore_placed(&g.text, |w| {
            let after = w.checked_sub(1).and_then(best);
            after
                .map(Place::After)
                .or_else(|| best(w).map(Place::Before))
        });
        if !self.linked_words {
            return (restored.text, None);
        }
        let mut linked: Vec<(Range<usize>, Option<Range<usize>>)> = p
            .words
            .iter()
            .enumerate()
            .map(|(w, r)| {
                let t = best(w).and_then(|t| restored.word_at.get(t).copied());
                (r.clone(), t.map(|t| t..t + 1))
            })
            .chain(
                p.spans
                    .iter()
                    .zip(&restored.span_at)
                    .map(|(span, at)| (span.range.clone(), Some(at.clone()))),
            )
            .collect();
        linked.sort_by_key(|(r, _)| r.start);
        let (words, links) = linked.into_iter().unzip();
        (restored.text, Some((words, links)))
    }

    /// `source` (byte ranges of `s.text`) located in the client's text, with the words of
    /// `translation`.
    fn located(
        &self,
        s: &text::Segment,
        source: &[Range<usize>],
        links: Vec<Option<Range<usize>>>,
        translation: &str,
    ) -> SegmentWords {
        let char_starts: Vec<usize> = s.text.char_indices().map(|(b, _)| b).collect();
        let char_at = |byte: usize| s.start + char_starts.partition_point(|&b| b < byte);
        let target = text::word_ranges(translation);
        let n = target.len();
        SegmentWords {
            source: source
                .iter()
                .map(|r| {
                    let (a, b) = self
                        .normalized
                        .original_span(char_at(r.start), char_at(r.end));
                    a..b
                })
                .collect(),
            links: links
                .into_iter()
                .map(|l| l.filter(|l| l.end <= n))
                .collect(),
            target,
        }
    }

    fn word_alignment(&self, masked: &str, ids: &[u32], a: &Alignment) -> Option<WordAlignment> {
        align_sentence(&self.tokenizer, masked, ids, a)
            .map_err(|e| tracing::warn!(error = %e, "no word alignment: protected spans go last"))
            .ok()
    }

    pub(super) fn paragraph_count(&self) -> usize {
        self.document.paragraphs.len()
    }

    /// Paragraph `index` once every one of its sentences has an output (`outputs` is indexed
    /// like `model_inputs()`); `None` while some are missing. Costs the paragraph's own
    /// segments only.
    pub(super) fn paragraph(
        &self,
        index: usize,
        outputs: &[Option<SentenceOutput>],
    ) -> Option<TranslatedParagraph> {
        let paragraph = self.document.paragraphs.get(index)?;
        let mut translations = Vec::with_capacity(paragraph.segments.len());
        let mut segments = Vec::with_capacity(paragraph.segments.len());
        for seg in paragraph.segments.clone() {
            let out = match self.input_of[seg] {
                Some(k) => Some(outputs.get(k)?.as_ref()?),
                None => None,
            };
            let translated = self.segment(seg, out);
            translations.push(translated.translation.clone());
            segments.push(translated);
        }
        let sources = &self.document.segments[paragraph.segments.clone()];
        Some(TranslatedParagraph {
            index,
            text: text::reassemble_paragraph(sources, &translations),
            segments,
        })
    }

    /// English text (or text with nothing to translate) goes back as it came.
    pub(super) fn passthrough(&self, started: Instant) -> TranslatedText {
        let segments = (0..self.document.segments.len())
            .map(|i| self.segment(i, None))
            .collect();
        TranslatedText {
            text: self.original.trim().to_string(),
            detected_language: self.detected_language(),
            segments,
            input_tokens: 0,
            output_tokens: 0,
            queue_time: Default::default(),
            inference_time: Default::default(),
            total_time: started.elapsed(),
            plain_text: None,
        }
    }

    /// `outputs` are in the order of `model_inputs()`.
    pub(super) fn assemble(&self, outputs: &[SentenceOutput], started: Instant) -> TranslatedText {
        let segments: Vec<TranslatedSegment> = (0..self.document.segments.len())
            .map(|i| self.segment(i, self.input_of[i].and_then(|k| outputs.get(k))))
            .collect();
        let translations: Vec<String> = segments.iter().map(|s| s.translation.clone()).collect();
        let (queue_time, inference_time) = timings(outputs);
        TranslatedText {
            text: text::reassemble(&self.document, &translations),
            detected_language: self.detected_language(),
            segments,
            input_tokens: outputs.iter().map(|o| o.input_tokens).sum(),
            // The decoder start token is not generated.
            output_tokens: outputs
                .iter()
                .map(|o| o.generation.ids.len().saturating_sub(1))
                .sum(),
            queue_time,
            inference_time,
            total_time: started.elapsed(),
            plain_text: None,
        }
    }
}
