//! Paragraphs → sentences → pieces within a token budget, and reassembly.
//!
//! Rules (all offsets are char offsets into the text given to [`segment`],
//! which is meant to be [`super::normalize`]d text):
//! - **Paragraphs**: the text is cut at `\n`; every line holding a
//!   non-whitespace char is one paragraph unit (title, dateline and body
//!   paragraphs of news text are each their own line). Blank lines only
//!   separate. Other line-break chars are ordinary whitespace here
//!   (normalisation has already turned them into `\n`).
//! - **Sentences**: see [`super::sentence`].
//! - **Budget**: a sentence whose trimmed text counts more than `max_tokens`
//!   is cut after `،` `؛` `,` `;` (clauses packed greedily); a piece still
//!   over budget is cut at whitespace (words packed greedily); a word still
//!   over budget is cut between grapheme clusters (`Hard`, at least one
//!   cluster a piece, so only `Hard` pieces may exceed the budget).
//! - **Tiling**: each segment's span runs from its first non-whitespace char
//!   to the next segment's first non-whitespace char, so separators (spaces,
//!   line breaks, blank lines) belong to the segment before them, and any
//!   leading whitespace of the text to the first segment. Concatenating all
//!   spans gives the text back; no segment has empty `text`. Text with no
//!   non-whitespace char gives an empty document (nothing to tile).

use super::sentence::sentences;
use std::ops::Range;
use unicode_segmentation::UnicodeSegmentation;

/// Why a segment is only part of a sentence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SplitKind {
    /// A whole sentence.
    #[default]
    None,
    /// Cut after `،` `؛` `,` or `;` because the sentence was over budget.
    AtClause,
    /// Cut at whitespace because a clause was over budget.
    AtWhitespace,
    /// Cut inside a word; may still exceed the budget (one grapheme a piece).
    Hard,
}

impl SplitKind {
    pub fn is_split(self) -> bool {
        self != SplitKind::None
    }
}

/// One unit to translate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Index into [`Document::paragraphs`].
    pub paragraph: usize,
    /// Char span in the segmented text, trailing separators included.
    pub start: usize,
    pub end: usize,
    /// The span trimmed: what is sent for translation (never empty).
    pub text: String,
    pub split: SplitKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paragraph {
    pub index: usize,
    /// Indices into [`Document::segments`].
    pub segments: Range<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Document {
    pub segments: Vec<Segment>,
    pub paragraphs: Vec<Paragraph>,
}

/// A trimmed char range with its paragraph and split kind, before spans are
/// widened to tile the text.
struct Piece {
    paragraph: usize,
    range: Range<usize>,
    split: SplitKind,
}

/// Splits `text` into paragraphs and segments (see the module docs).
pub fn segment(text: &str, max_tokens: usize, count_tokens: &dyn Fn(&str) -> usize) -> Document {
    let chars: Vec<char> = text.chars().collect();
    let budget = Budget {
        chars: &chars,
        max_tokens,
        count_tokens,
    };
    let mut pieces = Vec::new();
    for (paragraph, line) in content_lines(&chars).into_iter().enumerate() {
        for sentence in sentences(&chars, line) {
            budget.split(sentence, paragraph, &mut pieces);
        }
    }
    build_document(&chars, pieces)
}

/// Trimmed char ranges of the lines that hold non-whitespace.
fn content_lines(chars: &[char]) -> Vec<Range<usize>> {
    let mut lines = Vec::new();
    let mut start = 0;
    for end in (0..chars.len())
        .filter(|&i| chars[i] == '\n')
        .chain([chars.len()])
    {
        let r = trim(chars, start..end);
        if !r.is_empty() {
            lines.push(r);
        }
        start = end + 1;
    }
    lines
}

/// Shrinks `r` to exclude leading and trailing whitespace.
pub(crate) fn trim(chars: &[char], r: Range<usize>) -> Range<usize> {
    let (mut s, mut e) = (r.start, r.end.min(chars.len()));
    while s < e && chars[s].is_whitespace() {
        s += 1;
    }
    while e > s && chars[e - 1].is_whitespace() {
        e -= 1;
    }
    s..e
}

fn build_document(chars: &[char], pieces: Vec<Piece>) -> Document {
    let mut doc = Document::default();
    for (i, p) in pieces.iter().enumerate() {
        let start = if i == 0 { 0 } else { p.range.start };
        let end = pieces.get(i + 1).map_or(chars.len(), |n| n.range.start);
        doc.segments.push(Segment {
            paragraph: p.paragraph,
            start,
            end,
            text: chars[p.range.clone()].iter().collect(),
            split: p.split,
        });
        match doc.paragraphs.last_mut() {
            Some(last) if last.index == p.paragraph => last.segments.end = i + 1,
            _ => doc.paragraphs.push(Paragraph {
                index: p.paragraph,
                segments: i..i + 1,
            }),
        }
    }
    doc
}

/// The token budget and the recursive splitting of over-long sentences.
struct Budget<'a> {
    chars: &'a [char],
    max_tokens: usize,
    count_tokens: &'a dyn Fn(&str) -> usize,
}

impl Budget<'_> {
    fn fits(&self, r: &Range<usize>) -> bool {
        let s: String = self.chars[r.clone()].iter().collect();
        (self.count_tokens)(&s) <= self.max_tokens
    }

    fn split(&self, sentence: Range<usize>, paragraph: usize, out: &mut Vec<Piece>) {
        if self.fits(&sentence) {
            out.push(Piece {
                paragraph,
                range: sentence,
                split: SplitKind::None,
            });
            return;
        }
        let clauses = self.units(&sentence, is_clause_cut);
        if clauses.len() > 1 {
            for piece in self.pack(&clauses) {
                self.split_clause(piece, paragraph, out);
            }
        } else {
            self.split_words(sentence, paragraph, out);
        }
    }

    fn split_clause(&self, r: Range<usize>, paragraph: usize, out: &mut Vec<Piece>) {
        if self.fits(&r) {
            out.push(Piece {
                paragraph,
                range: r,
                split: SplitKind::AtClause,
            });
        } else {
            self.split_words(r, paragraph, out);
        }
    }

    fn split_words(&self, r: Range<usize>, paragraph: usize, out: &mut Vec<Piece>) {
        let words = self.units(&r, |chars, i| {
            chars.get(i).is_some_and(|c| c.is_whitespace())
        });
        for piece in self.pack(&words) {
            if self.fits(&piece) {
                out.push(Piece {
                    paragraph,
                    range: piece,
                    split: SplitKind::AtWhitespace,
                });
            } else {
                self.split_hard(piece, paragraph, out);
            }
        }
    }

    /// Greedy by grapheme clusters (a letter keeps its diacritics, an emoji
    /// sequence stays whole); every piece has at least one cluster, so this
    /// ends even when a single cluster is over budget.
    fn split_hard(&self, r: Range<usize>, paragraph: usize, out: &mut Vec<Piece>) {
        let bounds = grapheme_ends(&self.chars[r.clone()], r.start);
        let mut start = r.start;
        let mut k = 0;
        while k < bounds.len() {
            let mut end = bounds[k];
            k += 1;
            while k < bounds.len() && self.fits(&(start..bounds[k])) {
                end = bounds[k];
                k += 1;
            }
            out.push(Piece {
                paragraph,
                range: start..end,
                split: SplitKind::Hard,
            });
            start = end;
        }
    }

    /// Cuts `r` after every position `i` where `cut(chars, i)` holds, and
    /// returns the trimmed, non-empty parts.
    fn units(&self, r: &Range<usize>, cut: fn(&[char], usize) -> bool) -> Vec<Range<usize>> {
        let mut units = Vec::new();
        let mut start = r.start;
        for i in r.clone() {
            if cut(self.chars, i) {
                push_trimmed(self.chars, start..i + 1, &mut units);
                start = i + 1;
            }
        }
        push_trimmed(self.chars, start..r.end, &mut units);
        units
    }

    /// Greedily merges consecutive units while the merged range fits.
    fn pack(&self, units: &[Range<usize>]) -> Vec<Range<usize>> {
        let mut out: Vec<Range<usize>> = Vec::new();
        let mut current: Option<Range<usize>> = None;
        for u in units {
            current = match current {
                Some(c) if self.fits(&(c.start..u.end)) => Some(c.start..u.end),
                Some(c) => {
                    out.push(c);
                    Some(u.clone())
                }
                None => Some(u.clone()),
            };
        }
        out.extend(current);
        out
    }
}

/// Char offsets (shifted by `base`) where the grapheme clusters of `chars` end.
fn grapheme_ends(chars: &[char], base: usize) -> Vec<usize> {
    let s: String = chars.iter().collect();
    let mut end = base;
    s.graphemes(true)
        .map(|g| {
            end += g.chars().count();
            end
        })
        .collect()
}

fn push_trimmed(chars: &[char], r: Range<usize>, out: &mut Vec<Range<usize>>) {
    let r = trim(chars, r);
    if !r.is_empty() {
        out.push(r);
    }
}

/// Clause cut after `،` `؛` `;` anywhere, and after `,` only before
/// whitespace (so `1,000` stays whole).
fn is_clause_cut(chars: &[char], i: usize) -> bool {
    match chars.get(i) {
        Some('،' | '؛' | ';') => true,
        Some(',') => chars.get(i + 1).is_some_and(|c| c.is_whitespace()),
        _ => false,
    }
}

/// Joins translations back into an English body: the segments of a
/// paragraph joined by one space, paragraphs by one blank line.
/// `translations[i]` belongs to `doc.segments[i]`; missing or blank entries
/// are skipped, and a paragraph left empty is left out.
pub fn reassemble(doc: &Document, translations: &[String]) -> String {
    let paragraphs: Vec<String> = doc
        .paragraphs
        .iter()
        .map(|p| reassemble_paragraph(p, translations))
        .filter(|p| !p.is_empty())
        .collect();
    paragraphs.join("\n\n")
}

/// One paragraph of [`reassemble`]: its sentences' translations joined by one space.
pub fn reassemble_paragraph(paragraph: &Paragraph, translations: &[String]) -> String {
    let parts: Vec<&str> = paragraph
        .segments
        .clone()
        .filter_map(|i| translations.get(i))
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .collect();
    parts.join(" ")
}
