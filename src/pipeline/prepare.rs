//! Turning a client's text into model inputs, and the outputs back into a translation.

use std::time::Instant;

use crate::scheduler::SentenceOutput;
use crate::text::{self, DetectedLanguage, Document, NormalizeOptions, Normalized};
use crate::tokenizer::Tokenizer;

use super::{timings, PipelineError, SourceLanguage, TranslatedSegment, TranslatedText};

pub(super) struct Prepared {
    original: String,
    normalized: Normalized,
    document: Document,
    /// Indices of the segments that have text to translate, in order.
    translatable: Vec<usize>,
    inputs: Vec<Vec<u32>>,
    passthrough: bool,
}

impl Prepared {
    pub(super) fn new(
        original: &str,
        language: SourceLanguage,
        tokenizer: &Tokenizer,
        max_input_tokens: usize,
    ) -> Result<Self, PipelineError> {
        let passthrough = language == SourceLanguage::Auto
            && text::detect_language(original) == DetectedLanguage::English;
        let normalized = text::normalize(original, &NormalizeOptions::default());
        let count = |s: &str| tokenizer.token_count(s).unwrap_or(usize::MAX);
        let document = text::segment(&normalized.text, max_input_tokens, &count);
        let translatable: Vec<usize> = document
            .segments
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.text.is_empty())
            .map(|(i, _)| i)
            .collect();
        let inputs = if passthrough {
            Vec::new()
        } else {
            let texts: Vec<&str> = translatable
                .iter()
                .map(|&i| document.segments[i].text.as_str())
                .collect();
            tokenizer.encode_batch(&texts)?
        };
        Ok(Self {
            original: original.to_string(),
            normalized,
            document,
            translatable,
            inputs,
            passthrough,
        })
    }

    pub(super) fn needs_translation(&self) -> bool {
        !self.passthrough && !self.inputs.is_empty()
    }

    pub(super) fn model_inputs(&self) -> Vec<Vec<u32>> {
        self.inputs.clone()
    }

    fn segment(
        &self,
        index: usize,
        translation: String,
        score: f32,
        token_ids: Vec<u32>,
    ) -> TranslatedSegment {
        let s = &self.document.segments[index];
        let (source_start, source_end) = self.normalized.segment_span(s);
        TranslatedSegment {
            source: s.text.clone(),
            translation,
            score,
            source_start,
            source_end,
            paragraph: s.paragraph,
            split: s.split != text::SplitKind::None,
            token_ids,
        }
    }

    /// English text (or text with nothing to translate) goes back as it came.
    pub(super) fn passthrough(&self, started: Instant) -> TranslatedText {
        let segments = self
            .translatable
            .iter()
            .map(|&i| self.segment(i, self.document.segments[i].text.clone(), 0.0, Vec::new()))
            .collect();
        TranslatedText {
            text: self.original.trim().to_string(),
            detected_language: if self.passthrough { "en" } else { "ar" },
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
            segments.push(self.segment(
                index,
                out.generation.text.clone(),
                out.generation.score,
                out.generation.ids.clone(),
            ));
        }
        let (queue_time, inference_time) = timings(outputs);
        TranslatedText {
            text: text::reassemble(&self.document, &translations),
            detected_language: "ar",
            segments,
            input_tokens: outputs.iter().map(|o| o.input_tokens).sum(),
            output_tokens: outputs.iter().map(|o| o.generation.ids.len()).sum(),
            queue_time,
            inference_time,
            total_time: started.elapsed(),
        }
    }
}
