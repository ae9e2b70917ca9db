//! Sentence boundaries inside one line.
//!
//! A sentence ends after a run of terminators (`.` `!` `?` `؟` `…`), then any
//! closing quotes/brackets (`»` `"` `”` `’` `'` `›` `)` `]`), then — only if
//! a quote closed — one `،` `,` `.` or `؛`; and only if what follows is
//! whitespace, the end of the line, or an Arabic letter (scraped copy often
//! loses the space after a full stop: `… الحرب.وارتفعت …`). Hence no split
//! inside numbers (`3.5`, `20:35`, `1,000`, `117,74`), and `«…!».` stays
//! whole. No split either after:
//! - a lone `.` ending a word made of single letters joined by dots: `U.S.`,
//!   `e.g.`, `J.`, and the Arabic one-letter abbreviations `د.` `أ.` `م.`
//!   `ص.` `ق.م.`, also behind a joined one-letter word (`وأ.د.`) (so a
//!   sentence ending in `… 2016 م.` is not split: rare, and a missed split
//!   only makes a longer segment);
//! - a lone `.` after a listed English abbreviation ([`ABBREVIATIONS`]);
//! - a list number at the start of the line (`1.`).

use super::chars::{is_arabic_letter, is_closing, is_opening, is_terminator};
use std::ops::Range;

/// English abbreviations (before their dot) that do not end a sentence.
pub const ABBREVIATIONS: &[&str] = &[
    "Mr", "Mrs", "Ms", "Dr", "Prof", "Sr", "Jr", "St", "Mt", "Gen", "Col", "Lt", "Sgt", "Capt",
    "Gov", "Sen", "Rep", "Rev", "Hon", "Pres", "vs", "No", "Nos", "Fig", "approx", "Jan", "Feb",
    "Aug", "Sept", "Sep", "Oct", "Nov", "Dec", "Inc", "Corp", "Ltd", "Co",
];

/// Trimmed, non-empty sentence ranges covering the content of `line`
/// (itself trimmed); only whitespace lies between them.
pub fn sentences(chars: &[char], line: Range<usize>) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = line.start;
    let mut i = line.start;
    while i < line.end {
        if !is_terminator(chars[i]) {
            i += 1;
            continue;
        }
        let end = sentence_end(chars, i, line.end);
        let at_gap = end == line.end || chars[end].is_whitespace() || is_arabic_letter(chars[end]);
        if at_gap && !is_abbreviation(chars, line.start, i, end) {
            out.push(start..end);
            start = end;
            while start < line.end && chars[start].is_whitespace() {
                start += 1;
            }
        }
        i = end.max(i + 1);
    }
    if start < line.end {
        out.push(start..line.end);
    }
    out
}

/// End (exclusive) of the terminator cluster starting at `i`: terminators,
/// closing quotes, and one trailing `،` `,` `.` `؛` after a quote.
fn sentence_end(chars: &[char], i: usize, limit: usize) -> usize {
    let mut j = i;
    while j < limit && is_terminator(chars[j]) {
        j += 1;
    }
    let quote_start = j;
    while j < limit && is_closing(chars[j]) {
        j += 1;
    }
    if j > quote_start && j < limit && matches!(chars[j], '،' | ',' | '.' | '؛') {
        j += 1;
    }
    j
}

/// True when the cluster `[dot, end)` is a lone `.` closing an abbreviation
/// or a leading list number.
fn is_abbreviation(chars: &[char], line_start: usize, dot: usize, end: usize) -> bool {
    if chars[dot] != '.' || end != dot + 1 {
        return false;
    }
    let mut w = dot;
    while w > line_start && !chars[w - 1].is_whitespace() && !is_opening(chars[w - 1]) {
        w -= 1;
    }
    let word: String = chars[w..dot].iter().collect();
    if word.is_empty() {
        return false;
    }
    let list_number = w == line_start && word.chars().all(|c| c.is_ascii_digit());
    list_number || is_initials(&word) || ABBREVIATIONS.contains(&word.as_str())
}

/// Single letters joined by dots: `U.S`, `e.g`, `J`, `د`, `ق.م`; the first may carry a
/// one-letter Arabic prefix (`وأ.د` "and Prof. Dr.", `ود`).
fn is_initials(word: &str) -> bool {
    word.split('.').enumerate().all(|(i, part)| {
        let cs: Vec<char> = part.chars().collect();
        match cs[..] {
            [c] => c.is_alphabetic(),
            [p, c] => i == 0 && ARABIC_PREFIXES.contains(&p) && c.is_alphabetic(),
            _ => false,
        }
    })
}

/// One-letter words written joined to the next: and, so, with, for, like.
const ARABIC_PREFIXES: &[char] = &['و', 'ف', 'ب', 'ل', 'ك'];
