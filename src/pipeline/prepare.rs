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
    /// For each segment, its model input; `None` when it is passed through untranslated.
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
        let texts: Vec<&str> = translatable
            .iter()
            .map(|&i| document.segments[i].text.as_str())
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
        (0..self.document.segments.len())
            .map(|i| {
                let source = self.document.segments[i].text.len();
                // The segment's translation (its source when passed through), and the same
                // again in the joined text.
                let translation = match self.input_of[i] {
                    Some(_) => generated,
                    None => source,
                };
                source
                    .saturating_add(translation.saturating_mul(2))
                    .saturating_add(SEGMENT_OVERHEAD_BYTES)
            })
            .fold(self.original.len(), usize::saturating_add)
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
        // Passed through untranslated unless the model gave an output.
        let passed = TranslatedSegment {
            source: s.text.clone(),
            translation: s.text.clone(),
            score: 0.0,
            detected_language: text::detect_language(&s.text).code(),
            source_start,
            source_end,
            paragraph: s.paragraph,
            split: s.split != text::SplitKind::None,
            token_ids: Vec::new(),
            alignment: None,
        };
        match out {
            Some(o) => TranslatedSegment {
                translation: o.generation.text.clone(),
                score: o.generation.score,
                detected_language: "ar",
                token_ids: o.generation.ids.clone(),
                alignment: o.generation.alignment.clone(),
                ..passed
            },
            None => passed,
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
        }
    }
}
