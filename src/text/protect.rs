//! Protected spans: parts of an Arabic sentence that must come out of translation byte for
//! byte (URLs, e-mail addresses, `@handles`, `#hashtags`, Latin-script names and codes such
//! as `G20` or `USD118`; and, for HTML, content marked `translate="no"`).
//!
//! The model never sees them: [`Protected::new`] takes the spans out of the sentence (the
//! *masked* text is what is translated), and [`Protected::restore`] puts each one back into
//! the translation after the English word aligned to the source word before it (or before
//! the word aligned to the one after it, for a span that opens the sentence). Where the
//! spans go is the caller's alignment; this module only knows words, so HTML and plain text
//! share it.

use std::ops::Range;

use super::chars::is_arabic_block;

/// A sentence with its protected spans taken out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protected {
    /// The sentence without its spans (single spaces where they were): the model's input.
    pub masked: String,
    /// The spans in order, each with where it stood.
    pub spans: Vec<ProtectedSpan>,
    /// Byte range in the sentence of each word of `masked`.
    pub words: Vec<Range<usize>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedSpan {
    /// The client's text of the span, exactly.
    pub text: String,
    /// How many words of `masked` stand before it.
    pub words_before: usize,
    /// Its byte range in the sentence.
    pub range: Range<usize>,
}

/// A translation with its protected spans put back, and where each piece went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub text: String,
    /// For each word of the translation without spans, its word index in `text`.
    pub word_at: Vec<usize>,
    /// For each span, the word indices of `text` it fills.
    pub span_at: Vec<Range<usize>>,
}

/// Where a span goes in the translation: after target word `i`, or before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    After(usize),
    Before(usize),
}

impl Protected {
    /// Takes `spans` (byte ranges of `sentence`, in order, not overlapping, on char
    /// boundaries) out of `sentence`.
    pub fn new(sentence: &str, spans: &[Range<usize>]) -> Self {
        let mut masked = String::new();
        let mut words = Vec::new();
        let mut out = Vec::new();
        let mut at = 0;
        for r in spans {
            push_words(&mut masked, sentence, at..r.start, &mut words);
            out.push(ProtectedSpan {
                text: sentence[r.clone()].to_string(),
                words_before: words.len(),
                range: r.clone(),
            });
            at = r.end;
        }
        push_words(&mut masked, sentence, at..sentence.len(), &mut words);
        Self {
            masked,
            spans: out,
            words,
        }
    }

    /// `translation` with every span put back. `place(w)` says where the span that followed
    /// source word `w - 1` (and preceded word `w`) goes among the translation's words
    /// (whitespace-separated; `None`: nothing aligned, the span goes at the end, or at the
    /// start for a span before every source word).
    pub fn restore(&self, translation: &str, place: impl Fn(usize) -> Option<Place>) -> String {
        self.restore_placed(translation, place).text
    }

    /// [`Protected::restore`], saying where each word and span went.
    pub fn restore_placed(
        &self,
        translation: &str,
        place: impl Fn(usize) -> Option<Place>,
    ) -> Restored {
        let words: Vec<&str> = translation.split_whitespace().collect();
        let mut before: Vec<Vec<usize>> = vec![Vec::new(); words.len() + 1];
        let mut after: Vec<Vec<usize>> = vec![Vec::new(); words.len() + 1];
        for (k, span) in self.spans.iter().enumerate() {
            let fallback = if span.words_before == 0 {
                Place::Before(0)
            } else {
                Place::After(words.len())
            };
            match place(span.words_before).unwrap_or(fallback) {
                Place::Before(i) => before[i.min(words.len())].push(k),
                Place::After(i) if i < words.len() => after[i].push(k),
                Place::After(_) => before[words.len()].push(k),
            }
        }
        let mut out = Restored {
            text: String::new(),
            word_at: Vec::with_capacity(words.len()),
            span_at: vec![0..0; self.spans.len()],
        };
        let mut count = 0;
        let mut push = |out: &mut Restored, piece: &str| {
            if !out.text.is_empty() {
                out.text.push(' ');
            }
            out.text.push_str(piece);
            let start = count;
            count += piece.split_whitespace().count();
            start..count
        };
        for i in 0..=words.len() {
            for &k in &before[i] {
                out.span_at[k] = push(&mut out, &self.spans[k].text);
            }
            if let Some(w) = words.get(i) {
                let at = push(&mut out, w).start;
                out.word_at.push(at);
            }
            for &k in &after[i] {
                out.span_at[k] = push(&mut out, &self.spans[k].text);
            }
        }
        out
    }
}

/// Appends the words of `sentence[range]` to `masked`, one space apart, and their byte
/// ranges in `sentence` to `words`.
fn push_words(
    masked: &mut String,
    sentence: &str,
    range: Range<usize>,
    words: &mut Vec<Range<usize>>,
) {
    for word in super::word_ranges(&sentence[range.clone()]) {
        if !masked.is_empty() {
            masked.push(' ');
        }
        masked.push_str(&sentence[range.start + word.start..range.start + word.end]);
        words.push(range.start + word.start..range.start + word.end);
    }
}

/// Byte ranges of `sentence` to protect: each maximal run of chars that are neither
/// whitespace nor Arabic script and that holds a Latin letter (URLs, e-mails, handles, hashtags, `G20`,
/// `USD118`, Latin names), without the punctuation around it; neighbouring runs separated
/// by one space become one span (`Donald Trump`, `New York Times`).
pub fn find_protected(sentence: &str) -> Vec<Range<usize>> {
    let mut spans: Vec<Range<usize>> = Vec::new();
    let mut run: Option<usize> = None;
    let chars: Vec<(usize, char)> = sentence
        .char_indices()
        .chain([(sentence.len(), ' ')])
        .collect();
    for &(at, c) in &chars {
        let inside = !c.is_whitespace() && !is_arabic_block(c);
        match (run, inside) {
            (None, true) => run = Some(at),
            (Some(start), false) => {
                run = None;
                if let Some(r) = trimmed_latin(sentence, start..at) {
                    match spans.last_mut() {
                        Some(last) if sentence[last.end..r.start] == *" " => last.end = r.end,
                        _ => spans.push(r),
                    }
                }
            }
            _ => {}
        }
    }
    spans
}

/// `r` without leading opening and trailing closing punctuation, if it holds a Latin letter.
fn trimmed_latin(sentence: &str, r: Range<usize>) -> Option<Range<usize>> {
    const LEAD: &[char] = &['(', '[', '«', '"', '“', '\'', '‘'];
    const TRAIL: &[char] = &[
        '.', ',', ';', ':', '!', '?', ')', ']', '»', '"', '”', '\'', '’', '،', '؛', '؟', '…',
    ];
    let s = &sentence[r.clone()];
    let trimmed = s.trim_start_matches(LEAD);
    let start = r.start + (s.len() - trimmed.len());
    let trimmed = trimmed.trim_end_matches(TRAIL);
    let end = start + trimmed.len();
    trimmed
        .chars()
        .any(|c| c.is_ascii_alphabetic())
        .then_some(start..end)
}
