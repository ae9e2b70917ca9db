//! Arabic text handling for tarjama: normalisation (with offsets back to the
//! client's text), paragraph/sentence segmentation under a token budget,
//! reassembly of translations, and script-based language detection.
//!
//! Everything here is a pure, infallible function: any `&str` is accepted
//! and nothing panics (all indexing is by char, never by byte).
//!
//! Typical use:
//! ```
//! use tarjama::text::{normalize, segment, reassemble, NormalizeOptions};
//! let n = normalize("قال: ۳٫۵ مليون.  ثم غادر!", &NormalizeOptions::default());
//! let count = |s: &str| s.split_whitespace().count();
//! let doc = segment(&n.text, 512, &count);
//! assert_eq!(doc.segments.len(), 2);
//! assert_eq!(doc.segments[0].text, "قال: 3.5 مليون.");
//! let s = &doc.segments[1];
//! assert_eq!(n.original_span(s.start, s.start + s.text.chars().count()), (17, 25));
//! let english = reassemble(&doc, &["He said: 3.5 million.".into(), "Then left!".into()]);
//! assert_eq!(english, "He said: 3.5 million. Then left!");
//! ```

mod chars;
mod language;
mod normalize;
mod protect;
mod segment;
mod sentence;

pub use language::{
    detect_language, detect_script, has_arabic_letter, DetectedLanguage, LetterCounts, Script,
};
pub use normalize::{normalize, NormalizeOptions, Normalized, BOILERPLATE};
pub use protect::{find_protected, Place, Protected, ProtectedSpan, Restored};
pub use segment::{
    reassemble, reassemble_paragraph, segment, Document, Paragraph, Segment, SplitKind,
};
pub use sentence::ABBREVIATIONS;

/// `s` cut to at most `max_chars` characters, with `…` where it was cut: client strings
/// (ids, codes, sentences) echoed in statuses and logs must not grow them without bound.
pub fn clip(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        None => s.to_string(),
        Some((end, _)) => format!("{}…", &s[..end]),
    }
}

/// Byte ranges of the words of `text`: maximal runs of non-whitespace characters (the
/// words `split_whitespace` gives).
pub fn word_ranges(text: &str) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                out.push(s..i);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(s..text.len());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn words_are_whitespace_separated_runs() {
        assert_eq!(super::word_ranges("  ab\tc  d "), vec![2..4, 5..6, 8..9]);
        assert!(super::word_ranges("").is_empty());
        assert_eq!(super::word_ranges("كلمة واحدة"), vec![0..8, 9..19]);
    }
}
