//! Arabic normalisation with a map back to the caller's character offsets.
//!
//! Steps, per input character (so every output char knows its source):
//! 1. removed: zero-width/bidi/other controls ([`chars::is_removed_control`]);
//!    ZWJ unless it follows a pictograph (emoji sequences);
//! 2. Arabic presentation forms (FB50–FDFF, FE70–FEFF) → NFKC. Only these
//!    ranges: full NFKC would also rewrite e.g. `ﬁ`, `²`, full-width Latin,
//!    and the opus-mt SentencePiece model applies its own NFKC anyway;
//! 3. tatweel removed, Persian/Urdu letters and Eastern digits mapped
//!    ([`chars::map_letter`]), diacritics removed only if asked;
//! 4. whitespace: runs of horizontal space → one space, except a *headline
//!    run* (a tab, or three or more spaces, between words of one line: how
//!    scraped front pages and tickers separate headlines), which is kept as it
//!    is; spaces around line breaks dropped; one break → `\n`, two or more →
//!    `\n\n`; `\r\n` is one break; leading/trailing whitespace removed;
//! 5. if asked, trailing boilerplate lines dropped ([`BOILERPLATE`]).
//!
//! The result is idempotent: normalising normalised text changes nothing.

use super::chars::{self, TATWEEL, ZWJ};
use super::Segment;
use unicode_normalization::UnicodeNormalization;

/// Options for [`normalize`]. The default keeps diacritics and boilerplate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NormalizeOptions {
    /// Remove Arabic diacritics ([`chars::is_diacritic`]).
    pub strip_diacritics: bool,
    /// Drop trailing agency/web boilerplate lines ([`BOILERPLATE`]).
    pub drop_boilerplate: bool,
}

/// Trailing lines dropped by `drop_boilerplate`, compared after stripping
/// spaces and the punctuation in [`MARKER_PUNCT`]: the agency end marker
/// "انتهى" ("end", also spelt with final ي) and the web widget "رأيكم"
/// ("your comments") that scraped pages leave after the article.
pub const BOILERPLATE: &[&str] = &["انتهى", "انتهي", "رأيكم"];

/// Punctuation that decorates a boilerplate marker, e.g. `انتهى/`, `(انتهى)`.
const MARKER_PUNCT: &[char] = &[
    ' ', '/', '\\', '(', ')', '[', ']', '-', '–', '—', '.', '*', '|', '_', ':',
];

/// Normalised text plus, for each of its chars, the char offset of the
/// original character that produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    pub text: String,
    offsets: Vec<usize>,
    original_len_chars: usize,
}

impl Normalized {
    /// Maps a char span `[start, end)` of `text` to the char span of the
    /// original input that produced it: from the source of the first char to
    /// just after the source of the last. Characters removed at the edges
    /// (controls, spaces) are outside the span; removed characters inside it
    /// are inside. Out-of-range arguments are clamped; an empty span maps to
    /// an empty span at the corresponding position.
    pub fn original_span(&self, start: usize, end: usize) -> (usize, usize) {
        let len = self.offsets.len();
        let start = start.min(len);
        let end = end.clamp(start, len);
        if start == end {
            let at = self
                .offsets
                .get(start)
                .copied()
                .unwrap_or(self.original_len_chars);
            return (at, at);
        }
        (self.offsets[start], self.offsets[end - 1] + 1)
    }

    /// The original span of a segment's trimmed `text` (what the response
    /// reports as `source_start`/`source_end`). Normalised text has no
    /// leading whitespace, so the trimmed text starts at `segment.start`
    /// when `segment` came from segmenting `self.text`.
    pub fn segment_span(&self, segment: &Segment) -> (usize, usize) {
        let len = segment.text.chars().count();
        self.original_span(segment.start, segment.start + len)
    }

    /// For each char of `text`, its char offset in the original input.
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    /// Length of the original input in chars.
    pub fn original_len_chars(&self) -> usize {
        self.original_len_chars
    }
}

/// Normalises `input` (see the module docs). Never fails.
pub fn normalize(input: &str, opts: &NormalizeOptions) -> Normalized {
    let mut mapped: Vec<(char, usize)> = Vec::with_capacity(input.len());
    let mut original_len_chars = 0;
    for (i, c) in input.chars().enumerate() {
        expand(c, i, opts, &mut mapped);
        original_len_chars = i + 1;
    }
    let mut out = collapse_whitespace(&mapped);
    if opts.drop_boilerplate {
        drop_boilerplate(&mut out);
    }
    Normalized {
        text: out.iter().map(|&(c, _)| c).collect(),
        offsets: out.into_iter().map(|(_, o)| o).collect(),
        original_len_chars,
    }
}

/// Steps 1–3 for one input char, which may yield zero or more chars.
fn expand(c: char, at: usize, opts: &NormalizeOptions, out: &mut Vec<(char, usize)>) {
    if chars::is_removed_control(c) {
        return;
    }
    if chars::is_presentation_form(c) {
        for d in std::iter::once(c).nfkc() {
            push_mapped(d, at, opts, out);
        }
    } else {
        push_mapped(c, at, opts, out);
    }
}

fn push_mapped(c: char, at: usize, opts: &NormalizeOptions, out: &mut Vec<(char, usize)>) {
    // NFKC output can hold tatweel or controls (e.g. FE71 → space, tatweel, fathatan).
    if c == TATWEEL || chars::is_removed_control(c) {
        return;
    }
    if opts.strip_diacritics && chars::is_diacritic(c) {
        return;
    }
    if c == ZWJ && !out.last().is_some_and(|&(p, _)| chars::is_pictograph(p)) {
        return;
    }
    out.push((chars::map_letter(c), at));
}

/// Step 4. A whitespace run becomes nothing (at the edges), `\n`, `\n\n`, one
/// space, or itself (a headline run); each emitted char maps to the whitespace
/// char it stands for.
fn collapse_whitespace(input: &[(char, usize)]) -> Vec<(char, usize)> {
    let mut out = Vec::with_capacity(input.len());
    let mut run: Vec<(char, usize)> = Vec::new();
    let mut breaks: Vec<usize> = Vec::new(); // offsets of the run's first two breaks
    let mut prev = '\0';
    for &(c, at) in input {
        if c.is_whitespace() {
            run.push((c, at));
            let crlf = c == '\n' && prev == '\r';
            if chars::is_line_break(c) && !crlf && breaks.len() < 2 {
                breaks.push(at);
            }
        } else {
            if !run.is_empty() && !out.is_empty() {
                emit_separator(&run, &breaks, &mut out);
            }
            run.clear();
            breaks.clear();
            out.push((c, at));
        }
        prev = c;
    }
    out
}

fn emit_separator(run: &[(char, usize)], breaks: &[usize], out: &mut Vec<(char, usize)>) {
    if breaks.is_empty() && is_headline_run(run.iter().map(|&(c, _)| c)) {
        out.extend_from_slice(run);
    } else if breaks.is_empty() {
        out.push((' ', run[0].1));
    }
    for &b in breaks {
        out.push(('\n', b));
    }
}

/// Horizontal whitespace that separates headlines on one line: a tab, or three or more
/// whitespace chars. Segmentation cuts there and reassembly puts the run back.
pub(crate) fn is_headline_run(run: impl IntoIterator<Item = char>) -> bool {
    let (mut len, mut tab) = (0, false);
    for c in run {
        if chars::is_line_break(c) {
            return false;
        }
        len += 1;
        tab |= c == '\t';
    }
    tab || len >= 3
}

/// Step 5: drops trailing lines that are boilerplate markers, repeatedly,
/// together with the line breaks before them.
fn drop_boilerplate(out: &mut Vec<(char, usize)>) {
    loop {
        let line_start = out
            .iter()
            .rposition(|&(c, _)| c == '\n')
            .map_or(0, |p| p + 1);
        let line: String = out[line_start..].iter().map(|&(c, _)| c).collect();
        if !is_marker(&line) {
            return;
        }
        out.truncate(line_start);
        while out.last().is_some_and(|&(c, _)| c.is_whitespace()) {
            out.pop();
        }
        if out.is_empty() {
            return;
        }
    }
}

fn is_marker(line: &str) -> bool {
    let core = line.trim_matches(MARKER_PUNCT);
    BOILERPLATE.contains(&core)
}
