//! HTML in, HTML out: what of a document is translated, and the document written back
//! with everything else as it came.
//!
//! **Parser.** [lol_html](https://docs.rs/lol_html) (Cloudflare's streaming rewriter): the
//! WHATWG tokenizer with the tree builder's text-mode switches, and the byte range of every
//! tag, text chunk, comment and attribute value in the source. Those ranges are what let
//! us rewrite only the translated text and keep every other byte, and report segment spans
//! into the client's HTML. A full tree builder (html5ever) recovers misnested markup more
//! completely but gives no source positions, so its serializer would rewrite the whole
//! document; the tests use it (through `scraper`) to check that our output parses to the
//! same tree shape as the input.
//!
//! **Units** ([`units`]): the text between block boundaries (`p`, `h1`–`h6`, `li`,
//! `blockquote`, `figcaption`, `td`, `div`, `br`, …), inline tags removed, entities decoded,
//! whitespace collapsed; `alt` and `title` attribute values. Not translated, kept byte for
//! byte: `script`, `style`, `pre`, `textarea`, … (block), `code`, `kbd`, `samp`, `var` and
//! anything with `translate="no"` or class `notranslate` (inside a sentence: kept whole and
//! placed like a word), comments.
//!
//! **Inline markup** ([`place`]): each unit is translated as plain text; every inline
//! element then goes around the English words aligned to its Arabic words (the model's
//! cross-attention, [`crate::pipeline::align`]).

mod events;
mod place;
mod units;

use std::ops::Range;

pub use events::HtmlError;
pub use place::AlignedText;
pub use units::{Unit, UnitKind, TRANSLATED_ATTRIBUTES};

use units::DirectionAttr;

/// A parsed document: its source and what of it is translated.
#[derive(Debug, Clone)]
pub struct HtmlDocument {
    source: String,
    units: Vec<Unit>,
    direction: Vec<DirectionAttr>,
}

impl HtmlDocument {
    /// Parses `source` (any string: malformed markup is read as browsers read it).
    pub fn parse(source: String) -> Result<Self, HtmlError> {
        let tokens = events::tokenize(&source)?;
        let (units, direction) = units::extract(&source, &tokens);
        Ok(Self {
            source,
            units,
            direction,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The translation units, in document order.
    pub fn units(&self) -> &[Unit] {
        &self.units
    }

    /// The document with unit `i` replaced by `translations[i]` (`None`: kept as it is), and
    /// `dir`/`lang` turned to English on elements with translated text.
    pub fn render(&self, translations: &[Option<AlignedText>]) -> String {
        let translated: Vec<(&Unit, &AlignedText)> = self
            .units
            .iter()
            .zip(translations)
            .filter_map(|(u, t)| Some((u, t.as_ref()?)))
            .collect();
        let mut edits: Vec<(Range<usize>, String)> = Vec::new();
        for (unit, t) in &translated {
            if let UnitKind::Attribute { quoted } = unit.kind {
                edits.push((unit.range.clone(), attribute_value(&t.english, quoted)));
            }
        }
        // Whether any translated unit meets a range: among the units starting before its
        // end (a prefix, units being in document order), the furthest end.
        let mut reach = Vec::with_capacity(translated.len());
        for (u, _) in &translated {
            let last = reach.last().copied().unwrap_or(0);
            reach.push(u.range.end.max(last));
        }
        for d in &self.direction {
            let before_end = translated.partition_point(|(u, _)| u.range.start < d.element.end);
            let met = before_end
                .checked_sub(1)
                .is_some_and(|i| reach[i] > d.element.start);
            if met {
                edits.push((d.value.clone(), d.english.to_string()));
            }
        }
        edits.sort_by_key(|e| e.0.start);
        let splice = |r: Range<usize>| self.splice(r, &edits);
        let mut out: Vec<(Range<usize>, String)> = translated
            .iter()
            .filter(|(u, _)| u.kind == UnitKind::Content)
            .map(|(u, t)| (u.range.clone(), place::render(u, t, &splice)))
            .collect();
        // Edits inside a rewritten unit were written with it.
        let outside = |r: &Range<usize>| {
            !out.iter()
                .any(|(u, _)| u.start <= r.start && r.end <= u.end)
        };
        let rest: Vec<(Range<usize>, String)> =
            edits.iter().filter(|e| outside(&e.0)).cloned().collect();
        out.extend(rest);
        out.sort_by_key(|e| e.0.start);
        self.splice(0..self.source.len(), &out)
    }

    /// Unit `u` alone, as [`HtmlDocument::render`] writes it when it is translated (for
    /// paragraphs streamed before the document is done).
    pub fn render_unit(&self, u: usize, aligned: &AlignedText) -> String {
        let unit = &self.units[u];
        let mut edits: Vec<(Range<usize>, String)> = self
            .direction
            .iter()
            .filter(|d| unit.range.start <= d.value.start && d.value.end <= unit.range.end)
            .map(|d| (d.value.clone(), d.english.to_string()))
            .collect();
        edits.sort_by_key(|e| e.0.start);
        match unit.kind {
            UnitKind::Content => place::render(unit, aligned, &|r| self.splice(r, &edits)),
            UnitKind::Attribute { quoted } => attribute_value(&aligned.english, quoted),
        }
    }

    /// The source's bytes `range` with the `edits` inside it applied (`edits` sorted, not
    /// overlapping).
    fn splice(&self, range: Range<usize>, edits: &[(Range<usize>, String)]) -> String {
        let mut out = String::with_capacity(range.len());
        let mut at = range.start;
        let first = edits.partition_point(|(r, _)| r.start < range.start);
        for (r, text) in &edits[first..] {
            if r.start >= range.end {
                break;
            }
            if r.start < at || r.end > range.end {
                continue;
            }
            out.push_str(&self.source[at..r.start]);
            out.push_str(text);
            at = r.end;
        }
        out.push_str(&self.source[at..range.end]);
        out
    }
}

/// English for an attribute value, escaped for its quoting (quotes added when it had none).
fn attribute_value(english: &str, quoted: bool) -> String {
    match quoted {
        true => html_escape::encode_quoted_attribute(english).into_owned(),
        false => format!(
            "\"{}\"",
            html_escape::encode_double_quoted_attribute(english)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(english: &str) -> AlignedText {
        AlignedText {
            english: english.to_string(),
            words: crate::text::word_ranges(english),
            links: Vec::new(),
        }
    }

    #[test]
    fn only_translated_units_and_their_attributes_change() {
        let html = "<!doctype html><html dir=\"rtl\" lang=\"ar\"><body>\n<p>نص</p>\n\
                    <img alt=صورة src=\"a.png\"><p>English</p><script>x<y</script></body></html>";
        let doc = HtmlDocument::parse(html.to_string()).unwrap();
        assert_eq!(doc.units().len(), 3);
        let out = doc.render(&[Some(plain("Text")), Some(plain("A \"photo\"")), None]);
        assert_eq!(
            out,
            "<!doctype html><html dir=\"ltr\" lang=\"en\"><body>\n<p>Text</p>\n\
             <img alt=\"A &quot;photo&quot;\" src=\"a.png\"><p>English</p><script>x<y</script></body></html>"
        );
        assert_eq!(doc.render(&[None, None, None]), html);
    }

    #[test]
    fn direction_changes_only_where_text_was_translated() {
        let html = "<div dir=\"rtl\"><p lang=ar-EG>نص</p></div>\
                    <section dir=\"rtl\" lang=\"ar\"><p>نص</p></section><p dir=rtl>English</p>";
        let doc = HtmlDocument::parse(html.to_string()).unwrap();
        assert_eq!(doc.units().len(), 3);
        let out = doc.render(&[Some(plain("Text")), None, None]);
        assert_eq!(
            out,
            "<div dir=\"ltr\"><p lang=en>Text</p></div>\
             <section dir=\"rtl\" lang=\"ar\"><p>نص</p></section><p dir=rtl>English</p>"
        );
    }
}
