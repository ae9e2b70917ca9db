//! Paragraphs → sentences → pieces within a token budget, and reassembly.
//!
//! Rules (all offsets are char offsets into the text given to [`segment`],
//! which is meant to be [`super::normalize`]d text):
//! - **Paragraphs**: the text is cut at `\n`; every line holding a
//!   non-whitespace char is one paragraph unit (title, dateline and body
//!   paragraphs of news text are each their own line). Blank lines only
//!   separate. Other line-break chars are ordinary whitespace here
//!   (normalisation has already turned them into `\n`).
//! - **Headline runs**: inside a line, a tab or a run of three or more
//!   spaces (kept by normalisation) separates units that are never joined into
//!   one sentence; reassembly puts the same run back between their
//!   translations ([`Segment::joiner`]).
//! - **Sentences**: see [`super::sentence`].
//! - **Budget**: a sentence whose trimmed text counts more than `max_tokens`
//!   is cut after `،` `؛` `,` `;` (clauses packed greedily); a piece still
//!   over budget is cut at whitespace (words packed greedily); a word still
//!   over budget is cut between grapheme clusters, and a cluster still over
//!   budget between code points, never next to a ZWJ (`Hard`; only a `Hard`
//!   piece that cannot be cut so may exceed the budget).
//! - **Tiling**: each segment's span runs from its first non-whitespace char
//!   to the next segment's first non-whitespace char, so separators (spaces,
//!   line breaks, blank lines) belong to the segment before them, and any
//!   leading whitespace of the text to the first segment. Concatenating all
//!   spans gives the text back; no segment has empty `text`. Text with no
//!   non-whitespace char gives an empty document (nothing to tile).

use super::chars::ZWJ;
use super::normalize::is_headline_run;
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
    /// Cut inside a word (between graphemes, or code points as a last resort); a piece of
    /// one code point may still exceed the budget.
    Hard,
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
    /// What joins this segment's translation to the next one of its paragraph: one space,
    /// or the headline run that separated them in the text.
    pub joiner: String,
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
        overhead: count_tokens(""),
    };
    let mut pieces = Vec::new();
    for (paragraph, line) in content_lines(&chars).into_iter().enumerate() {
        for unit in headline_units(&chars, line) {
            for sentence in sentences(&chars, unit) {
                budget.split(sentence, paragraph, &mut pieces);
            }
        }
    }
    build_document(&chars, pieces)
}

/// The trimmed parts of a trimmed `line` between its headline runs.
fn headline_units(chars: &[char], line: Range<usize>) -> Vec<Range<usize>> {
    let mut units = Vec::new();
    let (mut start, mut i) = (line.start, line.start);
    while i < line.end {
        if !chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        let run_start = i;
        while i < line.end && chars[i].is_whitespace() {
            i += 1;
        }
        if is_headline_run(chars[run_start..i].iter().copied()) {
            units.push(start..run_start);
            start = i;
        }
    }
    units.push(start..line.end);
    units
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
        let gap = &chars[p.range.end..end];
        doc.segments.push(Segment {
            paragraph: p.paragraph,
            start,
            end,
            text: chars[p.range.clone()].iter().collect(),
            split: p.split,
            joiner: if is_headline_run(gap.iter().copied()) {
                gap.iter().collect()
            } else {
                " ".into()
            },
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
///
/// Every char is tokenised a bounded number of times: each unit (clause, word) is counted
/// once, packed pieces are estimated from those counts and checked once, and searches for
/// the longest fitting prefix gallop (1, 2, 4, … units) before they bisect. Re-counting a
/// growing prefix for every unit would be quadratic in the sentence length.
struct Budget<'a> {
    chars: &'a [char],
    max_tokens: usize,
    count_tokens: &'a dyn Fn(&str) -> usize,
    /// Tokens the tokenizer adds to every input (`</s>`, `<s>`): counted once per piece.
    overhead: usize,
}

impl Budget<'_> {
    fn count(&self, r: &Range<usize>) -> usize {
        let s: String = self.chars[r.clone()].iter().collect();
        (self.count_tokens)(&s)
    }

    fn fits(&self, r: &Range<usize>) -> bool {
        self.count(r) <= self.max_tokens
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
            self.pack_into(
                &clauses,
                SplitKind::AtClause,
                paragraph,
                out,
                Self::split_words,
            );
        } else {
            self.split_words(sentence, paragraph, out);
        }
    }

    fn split_words(&self, r: Range<usize>, paragraph: usize, out: &mut Vec<Piece>) {
        let words = self.units(&r, |chars, i| {
            chars.get(i).is_some_and(|c| c.is_whitespace())
        });
        self.pack_into(
            &words,
            SplitKind::AtWhitespace,
            paragraph,
            out,
            Self::split_hard,
        );
    }

    /// Packs `units`: a piece that fits is pushed as `kind`, one that does not (a lone unit
    /// over budget) is split by `finer`.
    fn pack_into(
        &self,
        units: &[Range<usize>],
        kind: SplitKind,
        paragraph: usize,
        out: &mut Vec<Piece>,
        finer: fn(&Self, Range<usize>, usize, &mut Vec<Piece>),
    ) {
        for (piece, fits) in self.pack(units) {
            if fits {
                out.push(Piece {
                    paragraph,
                    range: piece,
                    split: kind,
                });
            } else {
                finer(self, piece, paragraph, out);
            }
        }
    }

    /// Greedy by grapheme clusters (a letter keeps its diacritics, an emoji sequence stays
    /// whole). A single cluster over budget (a letter carrying hundreds of combining marks)
    /// is cut between code points, the only cut left (never next to a ZWJ); only a piece
    /// that cannot be cut so may still exceed the budget.
    fn split_hard(&self, r: Range<usize>, paragraph: usize, out: &mut Vec<Piece>) {
        let ends = grapheme_ends(&self.chars[r.clone()], r.start);
        let mut start = r.start;
        let mut k = 0;
        while k < ends.len() {
            if self.fits(&(start..ends[k])) {
                k += self.take_fitting(start, &ends[k..]);
                out.push(Piece {
                    paragraph,
                    range: start..ends[k - 1],
                    split: SplitKind::Hard,
                });
            } else {
                // Never next to a ZWJ: whether one is kept depends on its neighbours.
                let code_points: Vec<usize> = (start + 1..=ends[k])
                    .filter(|&p| p == ends[k] || (self.chars[p - 1] != ZWJ && self.chars[p] != ZWJ))
                    .collect();
                self.split_code_points(start, &code_points, paragraph, out);
                k += 1;
            }
            start = ends[k - 1];
        }
    }

    fn split_code_points(
        &self,
        mut start: usize,
        ends: &[usize],
        paragraph: usize,
        out: &mut Vec<Piece>,
    ) {
        let mut k = 0;
        while k < ends.len() {
            k += self.take_fitting(start, &ends[k..]);
            out.push(Piece {
                paragraph,
                range: start..ends[k - 1],
                split: SplitKind::Hard,
            });
            start = ends[k - 1];
        }
    }

    /// How many of `ends` (ascending offsets past `start`) to take so that `start..end`
    /// fits: the longest such prefix found by galloping then bisecting, and at least one.
    fn take_fitting(&self, start: usize, ends: &[usize]) -> usize {
        let fits = |n: usize| self.fits(&(start..ends[n - 1]));
        let (mut good, mut step) = (1, 1);
        let mut bad = loop {
            let probe = good + step;
            if probe > ends.len() {
                break ends.len() + 1;
            }
            if !fits(probe) {
                break probe;
            }
            good = probe;
            step *= 2;
        };
        while bad - good > 1 {
            let mid = (good + bad) / 2;
            if fits(mid) {
                good = mid;
            } else {
                bad = mid;
            }
        }
        good
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

    /// Greedily merges consecutive units while the merge fits; each piece comes with
    /// whether it fits (a lone unit may not). Merges are estimated from the units' own
    /// counts and then checked, so each char is tokenised a bounded number of times.
    fn pack(&self, units: &[Range<usize>]) -> Vec<(Range<usize>, bool)> {
        let content: Vec<usize> = units
            .iter()
            .map(|u| self.count(u).saturating_sub(self.overhead))
            .collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < units.len() {
            let mut j = i + 1;
            let mut tokens = self.overhead + content[i];
            while j < units.len() && tokens + content[j] <= self.max_tokens {
                tokens += content[j];
                j += 1;
            }
            let range = units[i].start..units[j - 1].end;
            if j - i == 1 {
                out.push((range, tokens <= self.max_tokens));
            } else if self.fits(&range) {
                out.push((range, true));
            } else {
                // Tokens merged differently across a boundary: search the merge exactly.
                let ends: Vec<usize> = units[i..j].iter().map(|u| u.end).collect();
                let n = self.take_fitting(units[i].start, &ends);
                let range = units[i].start..ends[n - 1];
                let fits = n > 1 || self.fits(&range);
                out.push((range, fits));
                j = i + n;
            }
            i = j;
        }
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
/// paragraph joined by their joiners (one space, or the headline run that
/// separated them), paragraphs by one blank line.
/// `translations[i]` belongs to `doc.segments[i]`; missing or blank entries
/// are skipped, and a paragraph left empty is left out.
pub fn reassemble(doc: &Document, translations: &[String]) -> String {
    let paragraphs: Vec<String> = doc
        .paragraphs
        .iter()
        .map(|p| {
            let end = p.segments.end.min(translations.len());
            let start = p.segments.start.min(end);
            reassemble_paragraph(&doc.segments[p.segments.clone()], &translations[start..end])
        })
        .filter(|p| !p.is_empty())
        .collect();
    paragraphs.join("\n\n")
}

/// One paragraph of [`reassemble`]: the translations of its `segments` (in order) joined by
/// their [`Segment::joiner`]s; empty ones are left out.
pub fn reassemble_paragraph(segments: &[Segment], translations: &[String]) -> String {
    let mut out = String::new();
    let mut joiner = "";
    for (segment, t) in segments.iter().zip(translations) {
        let t = t.trim();
        if t.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push_str(joiner);
        }
        out.push_str(t);
        joiner = &segment.joiner;
    }
    out
}
