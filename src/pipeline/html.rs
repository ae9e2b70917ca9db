//! HTML documents through the translation pipeline: the document's units ([`crate::html`])
//! are translated as the paragraphs of one plain text, with every sentence's words linked
//! to its translation's; then each translated unit is written back with its markup placed
//! by that alignment, and every segment's span is moved into the client's HTML.

use std::ops::Range;

use crate::html::{AlignedText, HtmlDocument, UnitKind};
use crate::text::word_ranges;

use super::{PipelineError, TranslatedParagraph, TranslatedSegment, TranslatedText};

/// What a text is.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TextFormat {
    /// Plain text.
    #[default]
    Plain,
    /// HTML: markup kept, text translated, inline tags placed by alignment.
    Html,
}

/// Worst-case growth of English written into HTML: `"` becomes `&quot;`.
const ESCAPE_GROWTH: usize = 6;

/// A parsed HTML text and where its units are in the plain text that is translated.
pub(super) struct Markup {
    document: HtmlDocument,
    /// Char offset of each unit in the plain text.
    unit_starts: Vec<usize>,
    /// Byte offset of each char of the HTML (to report spans in chars).
    char_starts: Vec<usize>,
}

impl Markup {
    /// Parses `html`; returns it with the plain text to translate: its units, one per line.
    pub(super) fn parse(html: String) -> Result<(Self, String), PipelineError> {
        let document =
            HtmlDocument::parse(html).map_err(|e| PipelineError::Internal(e.to_string()))?;
        let mut plain = String::new();
        let mut unit_starts = Vec::with_capacity(document.units().len());
        let mut chars = 0;
        for unit in document.units() {
            if !plain.is_empty() {
                plain.push_str("\n\n");
                chars += 2;
            }
            unit_starts.push(chars);
            plain.push_str(&unit.text);
            chars += unit.sources.len();
        }
        let char_starts = document.source().char_indices().map(|(b, _)| b).collect();
        let markup = Self {
            document,
            unit_starts,
            char_starts,
        };
        Ok((markup, plain))
    }

    /// Bytes the HTML adds to a response whose translations take up to `translation_bytes`.
    pub(super) fn response_bytes(&self, translation_bytes: usize) -> usize {
        self.document
            .source()
            .len()
            .saturating_add(translation_bytes.saturating_mul(ESCAPE_GROWTH))
    }

    /// The translated document: its HTML, segments located in it, and the English of its
    /// text units as plain text (for summaries).
    pub(super) fn finish(&self, mut text: TranslatedText) -> TranslatedText {
        let by_unit = self.segments_by_unit(&text.segments);
        let aligned: Vec<Option<AlignedText>> = by_unit
            .iter()
            .enumerate()
            .map(|(u, segments)| self.aligned(u, segments))
            .collect();
        text.plain_text = Some(self.plain_english(&by_unit));
        text.text = self.document.render(&aligned);
        for s in &mut text.segments {
            self.locate(s);
        }
        text
    }

    /// A paragraph (one unit) of a streamed text: its HTML fragment and located segments.
    pub(super) fn paragraph(&self, mut p: TranslatedParagraph) -> TranslatedParagraph {
        let unit = p
            .segments
            .first()
            .and_then(|s| self.unit_of(s.source_start));
        if let Some(u) = unit {
            let segments: Vec<&TranslatedSegment> = p.segments.iter().collect();
            let unit_ref = &self.document.units()[u];
            p.text = match self.aligned(u, &segments) {
                Some(aligned) => self.document.render_unit(u, &aligned),
                None => self.document.source()[unit_ref.range.clone()].to_string(),
            };
        }
        for s in &mut p.segments {
            self.locate(s);
        }
        p
    }

    fn unit_of(&self, plain_char: usize) -> Option<usize> {
        let u = self.unit_starts.partition_point(|&s| s <= plain_char);
        u.checked_sub(1)
    }

    fn segments_by_unit<'a>(
        &self,
        segments: &'a [TranslatedSegment],
    ) -> Vec<Vec<&'a TranslatedSegment>> {
        let mut by_unit = vec![Vec::new(); self.unit_starts.len()];
        for s in segments {
            if let Some(u) = self.unit_of(s.source_start) {
                by_unit[u].push(s);
            }
        }
        by_unit
    }

    /// Unit `u`'s English and alignment, when the model translated any of it.
    fn aligned(&self, u: usize, segments: &[&TranslatedSegment]) -> Option<AlignedText> {
        if segments.iter().all(|s| s.token_ids.is_empty()) {
            return None;
        }
        let base = self.unit_starts[u];
        let mut out = AlignedText::default();
        for s in segments {
            if s.translation.trim().is_empty() {
                continue;
            }
            if !out.english.is_empty() {
                out.english.push(' ');
            }
            let (offset, first) = (out.english.len(), out.words.len());
            out.english.push_str(&s.translation);
            let shift = |r: &Range<usize>, by: usize| r.start + by..r.end + by;
            match &s.words {
                Some(w) => {
                    out.words.extend(w.target.iter().map(|r| shift(r, offset)));
                    out.links
                        .extend(w.source.iter().zip(&w.links).map(|(src, l)| {
                            let src = src.start.saturating_sub(base)..src.end.saturating_sub(base);
                            (src, l.as_ref().map(|l| shift(l, first)))
                        }));
                }
                None => {
                    let words = word_ranges(&s.translation);
                    out.words.extend(words.iter().map(|r| shift(r, offset)));
                }
            }
        }
        Some(out)
    }

    /// The English of the text units (untranslated ones as they are), one per paragraph.
    fn plain_english(&self, by_unit: &[Vec<&TranslatedSegment>]) -> String {
        let units = self.document.units().iter().zip(by_unit);
        let paragraphs: Vec<String> = units
            .filter(|(unit, _)| unit.kind == UnitKind::Content)
            .map(|(_, segments)| {
                let english: Vec<&str> = segments.iter().map(|s| s.translation.trim()).collect();
                english.join(" ")
            })
            .filter(|p| !p.trim().is_empty())
            .collect();
        paragraphs.join("\n\n")
    }

    /// Moves `s`'s span from the plain text into the HTML (chars of the client's HTML).
    fn locate(&self, s: &mut TranslatedSegment) {
        let Some(u) = self.unit_of(s.source_start) else {
            return;
        };
        let base = self.unit_starts[u];
        let unit = &self.document.units()[u];
        let bytes = unit.source_span(s.source_start - base..s.source_end.saturating_sub(base));
        s.source_start = self.char_at(bytes.start);
        s.source_end = self.char_at(bytes.end);
    }

    fn char_at(&self, byte: usize) -> usize {
        self.char_starts.partition_point(|&b| b < byte)
    }
}
