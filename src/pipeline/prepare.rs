//! Turning a client's text into model inputs, and the outputs back into a translation,
//! paragraph by paragraph.

use std::time::Instant;

use crate::scheduler::{ModelLimits, SentenceOutput};
use crate::text::{self, DetectedLanguage, Document, NormalizeOptions, Normalized};
use crate::tokenizer::Tokenizer;

use super::blocking::CancelFlag;
use super::{
    clip, timings, PipelineError, SourceLanguage, TranslatedParagraph, TranslatedSegment,
    TranslatedText,
};

/// Bytes of a response segment besides its texts (spans, score, field tags).
const SEGMENT_OVERHEAD_BYTES: usize = 64;

pub(super) struct Prepared {
    original: String,
    normalized: Normalized,
    document: Document,
    /// Indices of the segments that have text to translate, in order; model input `k` is
    /// segment `translatable[k]`.
    translatable: Vec<usize>,
    /// For each segment, its model input (the inverse of `translatable`).
    input_of: Vec<Option<usize>>,
    inputs: Vec<Vec<u32>>,
    passthrough: bool,
}

impl Prepared {
    /// Normalises, segments within the model's input budget and tokenises `original`; an
    /// input the model cannot take is refused here, before anything is queued.
    pub(super) fn new(
        original: &str,
        language: SourceLanguage,
        tokenizer: &Tokenizer,
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
        let translatable: Vec<usize> = document
            .segments
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.text.is_empty())
            .map(|(i, _)| i)
            .collect();
        let mut input_of = vec![None; document.segments.len()];
        for (k, &i) in translatable.iter().enumerate() {
            input_of[i] = Some(k);
        }
        let inputs = if passthrough {
            Vec::new()
        } else {
            let texts: Vec<&str> = translatable
                .iter()
                .map(|&i| document.segments[i].text.as_str())
                .collect();
            tokenizer.encode_batch(&texts)?
        };
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
            translatable,
            input_of,
            inputs,
            passthrough,
        })
    }

    /// Source tokens of all model inputs.
    pub(super) fn source_tokens(&self) -> usize {
        self.inputs.iter().map(Vec::len).sum()
    }

    /// The most bytes a response with this text's translation can take when each sentence
    /// generates up to `max_new_tokens` tokens of up to `token_bytes` bytes each.
    pub(super) fn response_bytes(&self, max_new_tokens: usize, token_bytes: usize) -> usize {
        let generated = max_new_tokens.saturating_mul(token_bytes);
        self.translatable
            .iter()
            .map(|&i| {
                let source = self.document.segments[i].text.len();
                // The segment's translation, and the same again in the joined text.
                source
                    .saturating_add(generated.saturating_mul(2))
                    .saturating_add(SEGMENT_OVERHEAD_BYTES)
            })
            .fold(self.original.len(), usize::saturating_add)
    }

    pub(super) fn needs_translation(&self) -> bool {
        !self.passthrough && !self.inputs.is_empty()
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
        let (translation, score, token_ids, alignment) = match out {
            Some(o) => (
                o.generation.text.clone(),
                o.generation.score,
                o.generation.ids.clone(),
                o.generation.alignment.clone(),
            ),
            // Passed through untranslated.
            None => (s.text.clone(), 0.0, Vec::new(), None),
        };
        TranslatedSegment {
            source: s.text.clone(),
            translation,
            score,
            source_start,
            source_end,
            paragraph: s.paragraph,
            split: s.split != text::SplitKind::None,
            token_ids,
            alignment,
        }
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
            let Some(k) = self.input_of[seg] else {
                translations.push(String::new());
                continue;
            };
            let out = if self.passthrough {
                None
            } else {
                Some(outputs.get(k)?.as_ref()?)
            };
            let translated = self.segment(seg, out);
            translations.push(translated.translation.clone());
            segments.push(translated);
        }
        let local = text::Paragraph {
            index,
            segments: 0..translations.len(),
        };
        Some(TranslatedParagraph {
            index,
            text: text::reassemble_paragraph(&local, &translations),
            segments,
        })
    }

    /// English text (or text with nothing to translate) goes back as it came.
    pub(super) fn passthrough(&self, started: Instant) -> TranslatedText {
        let segments = self
            .translatable
            .iter()
            .map(|&i| self.segment(i, None))
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
        }
    }

    /// `outputs` are in the order of `model_inputs()`.
    pub(super) fn assemble(&self, outputs: &[SentenceOutput], started: Instant) -> TranslatedText {
        let mut translations = vec![String::new(); self.document.segments.len()];
        let mut segments = Vec::with_capacity(outputs.len());
        for (&index, out) in self.translatable.iter().zip(outputs) {
            translations[index] = out.generation.text.clone();
            segments.push(self.segment(index, Some(out)));
        }
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
        }
    }
}
