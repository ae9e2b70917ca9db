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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedSpan {
    /// The client's text of the span, exactly.
    pub text: String,
    /// How many words of `masked` stand before it.
    pub words_before: usize,
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
        let mut words = 0;
        let mut out = Vec::new();
        let mut at = 0;
        for r in spans {
            words += push_words(&mut masked, &sentence[at..r.start]);
            out.push(ProtectedSpan {
                text: sentence[r.clone()].to_string(),
                words_before: words,
            });
            at = r.end;
        }
        push_words(&mut masked, &sentence[at..]);
        Self { masked, spans: out }
    }

    /// `translation` with every span put back. `place(w)` says where the span that followed
    /// source word `w - 1` (and preceded word `w`) goes among the translation's words
    /// (whitespace-separated; `None`: nothing aligned, the span goes at the end, or at the
    /// start for a span before every source word).
    pub fn restore(&self, translation: &str, place: impl Fn(usize) -> Option<Place>) -> String {
        let words: Vec<&str> = translation.split_whitespace().collect();
        let mut before: Vec<Vec<&str>> = vec![Vec::new(); words.len() + 1];
        let mut after: Vec<Vec<&str>> = vec![Vec::new(); words.len() + 1];
        for span in &self.spans {
            let fallback = if span.words_before == 0 {
                Place::Before(0)
            } else {
                Place::After(words.len())
            };
            match place(span.words_before).unwrap_or(fallback) {
                Place::Before(i) => before[i.min(words.len())].push(&span.text),
                Place::After(i) if i < words.len() => after[i].push(&span.text),
                Place::After(_) => before[words.len()].push(&span.text),
            }
        }
        let mut parts: Vec<&str> = Vec::new();
        for i in 0..=words.len() {
            parts.extend(&before[i]);
            if let Some(w) = words.get(i) {
                parts.push(w);
            }
            parts.extend(&after[i]);
        }
        parts.join(" ")
    }
}

/// Appends the words of `text` to `masked`, one space apart; returns how many. (Counting
/// here, not by re-reading `masked` per span, keeps a sentence of many spans linear.)
fn push_words(masked: &mut String, text: &str) -> usize {
    let mut n = 0;
    for word in text.split_whitespace() {
        if !masked.is_empty() {
            masked.push(' ');
        }
        masked.push_str(word);
        n += 1;
    }
    n
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
