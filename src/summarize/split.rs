//! Rule-based English sentence splitting.

/// Titles and month abbreviations that are followed by a period mid-sentence.
/// Deliberately excludes words such as "no", "etc." or "Inc." that often end
/// sentences: a wrong merge costs less than a wrong split only when rare.
const ABBREVIATIONS: &[&str] = &[
    "apr", "aug", "capt", "col", "dec", "dr", "feb", "gen", "gov", "hon", "jan", "jr", "jul",
    "jun", "lt", "mr", "mrs", "ms", "mt", "nov", "oct", "prof", "rep", "rev", "sen", "sep", "sept",
    "sgt", "sr", "st", "vs",
];

/// Splits English text into trimmed, non-empty sentences.
///
/// A sentence ends at `.`, `!` or `?` (plus any closing quotes or brackets)
/// followed by whitespace or the end of the line. Every line break also ends
/// a sentence, since news copy puts headlines and paragraphs on their own
/// lines. A single `.` does not end a sentence after a known title ("Mr."),
/// a single capital initial ("J.") or a dotted abbreviation ("U.S."), and a
/// decimal such as "3.5" never splits because no whitespace follows its dot.
pub fn split_sentences(text: &str) -> Vec<String> {
    text.lines().flat_map(split_line).collect()
}

fn split_line(line: &str) -> Vec<String> {
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < chars.len() {
        if !is_terminator(chars[i].1) {
            i += 1;
            continue;
        }
        let end = terminator_run_end(&chars, i);
        let at_boundary = end == chars.len() || chars[end].1.is_whitespace();
        let lone_dot = chars[i].1 == '.' && end == i + 1;
        if at_boundary && !(lone_dot && is_abbreviation(&line[start..chars[i].0])) {
            let byte_end = chars.get(end).map_or(line.len(), |c| c.0);
            push_trimmed(&mut out, &line[start..byte_end]);
            start = byte_end;
        }
        i = end;
    }
    push_trimmed(&mut out, &line[start..]);
    out
}

fn is_terminator(c: char) -> bool {
    matches!(c, '.' | '!' | '?')
}

fn is_closer(c: char) -> bool {
    matches!(c, '"' | '\'' | ')' | ']' | '\u{201D}' | '\u{2019}')
}

/// Index just past a run like `?!` or `."` starting at `i`.
fn terminator_run_end(chars: &[(usize, char)], i: usize) -> usize {
    let mut j = i + 1;
    while j < chars.len() && is_terminator(chars[j].1) {
        j += 1;
    }
    while j < chars.len() && is_closer(chars[j].1) {
        j += 1;
    }
    j
}

/// Whether the word ending `before` (the text preceding a `.`) is an
/// abbreviation whose period should not end the sentence.
fn is_abbreviation(before: &str) -> bool {
    let word = before
        .rsplit(char::is_whitespace)
        .next()
        .unwrap_or("")
        .trim_start_matches(|c: char| !c.is_alphanumeric());
    let mut letters = word.chars();
    let single_capital =
        matches!((letters.next(), letters.next()), (Some(c), None) if c.is_uppercase());
    // "U.S" / "a.m": an inner dot means the final dot belongs to the word.
    let dotted = word.contains('.') && word.chars().any(char::is_alphabetic);
    single_capital || dotted || ABBREVIATIONS.contains(&word.to_lowercase().as_str())
}

fn push_trimmed(out: &mut Vec<String>, piece: &str) {
    let piece = piece.trim();
    if !piece.is_empty() {
        out.push(piece.to_string());
    }
}
