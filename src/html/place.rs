//! Writing a unit's English with its inline markup: each element around the English words
//! aligned to its Arabic words, elements kept well nested and in document order.
//!
//! Positions are *gaps* between the English words: gap `g` is before word `g` (gap `n`:
//! after the last). An element spans gaps `[start, end]`; an element whose words align to
//! nothing, an empty one, or an atom (a comment, an image, content not to translate) sits
//! at one gap: at the unit's start or end if it stood there, else after the English word
//! aligned to the source word just before it, else before the word aligned to the source
//! word just after it, else at the end.

use std::ops::Range;

use super::units::{Mark, Unit};

/// A unit's translation with its alignment to the unit's text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlignedText {
    pub english: String,
    /// Byte ranges of `english`'s words (whitespace-separated), in order.
    pub words: Vec<Range<usize>>,
    /// The unit text's words: their char range in the unit's text and the English words
    /// they align to (`None`: nothing).
    pub links: Vec<(Range<usize>, Option<Range<usize>>)>,
}

/// `unit`'s replacement: its English with its marks placed; `splice(range)` writes the
/// document's bytes `range` (with any edits inside it).
pub fn render(
    unit: &Unit,
    aligned: &AlignedText,
    splice: &dyn Fn(Range<usize>) -> String,
) -> String {
    let n = aligned.words.len();
    let spans = intervals(unit, aligned);
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); unit.marks.len() + 1];
    for (i, m) in unit.marks.iter().enumerate() {
        children[m.parent.map_or(0, |p| p + 1)].push(i);
    }
    for c in &mut children {
        c.sort_by_key(|&i| (unit.marks[i].from, unit.marks[i].first_byte()));
    }
    let mut w = Writer {
        aligned,
        splice,
        out: String::new(),
        next: 0,
        sep_pending: false,
    };
    w.tree(unit, &children, &spans);
    w.words_until(n);
    w.out
}

/// Each mark's gaps, before nesting is enforced: the English words its source words align
/// to, from the first to the last (a range query over the unit's words, so deep nesting
/// costs no more than flat markup).
fn intervals(unit: &Unit, aligned: &AlignedText) -> Vec<Range<usize>> {
    let n = aligned.words.len();
    let links = &aligned.links;
    let first = RangeQuery::new(
        links
            .iter()
            .map(|(_, t)| t.as_ref().map_or(usize::MAX, |t| t.start)),
        usize::min,
    );
    let last = RangeQuery::new(
        links.iter().map(|(_, t)| t.as_ref().map_or(0, |t| t.end)),
        usize::max,
    );
    unit.marks
        .iter()
        .map(|m| {
            // The words it overlaps: links are in text order.
            let a = links.partition_point(|(s, _)| s.end <= m.from);
            let b = links.partition_point(|(s, _)| s.start < m.to);
            match (m.atom, first.get(a..b), last.get(a..b)) {
                (false, Some(s), Some(e)) if s < e => s.min(n)..e.min(n),
                _ => {
                    let g = point(aligned, m, n, unit.sources.len());
                    g..g
                }
            }
        })
        .collect()
}

/// The gap for a mark that covers no aligned word: the unit's start or end when it stood
/// there, else by its neighbours' alignment.
fn point(aligned: &AlignedText, m: &Mark, n: usize, unit_chars: usize) -> usize {
    if m.from == 0 {
        return 0;
    }
    if m.from >= unit_chars {
        return n;
    }
    let links = &aligned.links;
    let before = links
        .partition_point(|(s, _)| s.end <= m.from)
        .checked_sub(1);
    let after = links.partition_point(|(s, _)| s.start < m.from);
    let target = |i: Option<usize>| i.and_then(|i| links.get(i)?.1.clone());
    match (target(before), target(Some(after))) {
        (Some(t), _) => t.end,
        (None, Some(t)) => t.start,
        _ => n,
    }
    .min(n)
}

/// Min or max over any range of a fixed list, in constant time (a sparse table).
struct RangeQuery {
    levels: Vec<Vec<usize>>,
    op: fn(usize, usize) -> usize,
}

impl RangeQuery {
    fn new(values: impl Iterator<Item = usize>, op: fn(usize, usize) -> usize) -> Self {
        let mut levels = vec![values.collect::<Vec<_>>()];
        let len = levels[0].len();
        // Level k holds op over [i, i + 2^k) for every i where that fits.
        let mut width = 1;
        while width * 2 <= len {
            let prev = &levels[levels.len() - 1];
            let next = (0..=len - width * 2)
                .map(|i| op(prev[i], prev[i + width]))
                .collect();
            levels.push(next);
            width *= 2;
        }
        Self { levels, op }
    }

    /// `None` for an empty range.
    fn get(&self, r: Range<usize>) -> Option<usize> {
        if r.start >= r.end || r.end > self.levels[0].len() {
            return None;
        }
        let k = (usize::BITS - 1 - (r.end - r.start).leading_zeros()) as usize;
        let level = &self.levels[k];
        Some((self.op)(level[r.start], level[r.end - (1 << k)]))
    }
}

struct Writer<'a> {
    aligned: &'a AlignedText,
    splice: &'a dyn Fn(Range<usize>) -> String,
    out: String,
    /// The next English word to write.
    next: usize,
    /// The whitespace before word `next` is still to write.
    sep_pending: bool,
}

impl Writer<'_> {
    /// Writes the marks, each inside its parent's gaps (clamped into them) and after its
    /// previous sibling. Iterative: nesting depth is the client's to choose.
    fn tree(&mut self, unit: &Unit, children: &[Vec<usize>], spans: &[Range<usize>]) {
        struct Frame {
            /// Index into `children` (0: the unit; `m + 1`: mark `m`).
            list: usize,
            next: usize,
            within: Range<usize>,
            floor: usize,
        }
        let n = self.aligned.words.len();
        let mut stack = vec![Frame {
            list: 0,
            next: 0,
            within: 0..n,
            floor: 0,
        }];
        while let Some(top) = stack.last_mut() {
            let Some(&m) = children[top.list].get(top.next) else {
                let (list, end) = (top.list, top.within.end);
                stack.pop();
                let close = list
                    .checked_sub(1)
                    .and_then(|m| unit.marks[m].close.clone());
                if let Some(close) = close {
                    self.words_until(end);
                    self.out.push_str(&(self.splice)(close));
                }
                continue;
            };
            top.next += 1;
            let s = spans[m].start.clamp(top.floor, top.within.end);
            let e = spans[m].end.clamp(s, top.within.end);
            top.floor = e;
            let mark = &unit.marks[m];
            if mark.atom {
                self.atom(mark, s);
                continue;
            }
            self.words_until(s);
            if let Some(open) = &mark.open {
                self.separator();
                self.out.push_str(&(self.splice)(open.clone()));
            }
            stack.push(Frame {
                list: m + 1,
                next: 0,
                within: s..e,
                floor: s,
            });
        }
    }

    fn atom(&mut self, mark: &Mark, gap: usize) {
        self.words_until(gap);
        let n = self.aligned.words.len();
        if !mark.glued_before {
            if self.sep_pending && self.next == n {
                // After the last word: like a word of its own.
                self.out.push(' ');
            }
            self.separator();
        }
        if let Some(raw) = &mark.open {
            self.out.push_str(&(self.splice)(raw.clone()));
        }
        if !mark.glued_before && self.next < n {
            // Written after the separator: it needs its own space to the next word, or
            // none when it was glued to the word after it.
            if mark.space_after {
                self.out.push(' ');
            }
        }
    }

    /// Writes the whitespace before word `next` if it is still owed.
    fn separator(&mut self) {
        let words = &self.aligned.words;
        if self.sep_pending && self.next > 0 && self.next < words.len() {
            let between = words[self.next - 1].end..words[self.next].start;
            self.out.push_str(&escape(&self.aligned.english[between]));
        }
        self.sep_pending = false;
    }

    fn words_until(&mut self, gap: usize) {
        while self.next < gap.min(self.aligned.words.len()) {
            self.separator();
            let word = self.aligned.words[self.next].clone();
            self.out.push_str(&escape(&self.aligned.english[word]));
            self.next += 1;
            self.sep_pending = true;
        }
    }
}

/// Text as HTML text content.
pub fn escape(text: &str) -> String {
    html_escape::encode_text(text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::super::{events::tokenize, units::extract};
    use super::*;

    fn words(s: &str) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        let mut at = 0;
        for w in s.split(' ') {
            out.push(at..at + w.len());
            at += w.len() + 1;
        }
        out
    }

    /// `links[i]`: the English word source word `i` aligns to.
    fn run(html: &str, english: &str, links: &[Option<usize>]) -> String {
        let (units, _) = extract(html, &tokenize(html).unwrap());
        let unit = &units[0];
        let source = words(&unit.text);
        let char_range = |r: &Range<usize>| {
            unit.text[..r.start].chars().count()..unit.text[..r.end].chars().count()
        };
        let aligned = AlignedText {
            english: english.to_string(),
            words: words(english),
            links: source
                .iter()
                .zip(links)
                .map(|(s, t)| (char_range(s), t.map(|t| t..t + 1)))
                .collect(),
        };
        let body = render(unit, &aligned, &|r| html[r].to_string());
        format!(
            "{}{}{}",
            &html[..unit.range.start],
            body,
            &html[unit.range.end..]
        )
    }

    #[test]
    fn elements_follow_their_words() {
        // "قال محمد علي" → "Mohammed Ali said": the link moves with the name.
        let html = "<p>قال <a href=\"/m\">محمد علي</a></p>";
        let out = run(html, "Mohammed Ali said", &[Some(2), Some(0), Some(1)]);
        assert_eq!(out, "<p><a href=\"/m\">Mohammed Ali</a> said</p>");
    }

    #[test]
    fn children_stay_inside_parents_and_siblings_in_order() {
        let html = "<p><b>أ <i>ب</i></b> <u>ج</u> <s>د</s></p>";
        // ب aligns outside its parent's words; د before ج.
        let out = run(html, "w x y z", &[Some(1), Some(3), Some(2), Some(0)]);
        assert_eq!(out, "<p>w <b>x y <i>z</i></b><u></u><s></s></p>");
    }

    #[test]
    fn atoms_go_after_the_word_aligned_to_the_word_before() {
        let html = "<p>قال <span translate=\"no\">Trump</span> اليوم<!--c--></p>";
        let out = run(html, "today said", &[Some(1), Some(0)]);
        assert_eq!(
            out,
            "<p>today said <span translate=\"no\">Trump</span><!--c--></p>"
        );
    }

    #[test]
    fn unaligned_elements_keep_their_place_at_a_word_boundary() {
        let html = "<p><b>أ</b> ب</p>";
        let out = run(html, "x y", &[None, Some(0)]);
        assert_eq!(out, "<p><b></b>x y</p>");
    }

    #[test]
    fn range_queries_match_a_scan() {
        let values: Vec<usize> = (0..37).map(|i| (i * 7919) % 101).collect();
        let min = RangeQuery::new(values.iter().copied(), usize::min);
        let max = RangeQuery::new(values.iter().copied(), usize::max);
        for a in 0..=values.len() {
            for b in a..=values.len() {
                let slice = &values[a..b];
                assert_eq!(min.get(a..b), slice.iter().copied().min(), "{a}..{b}");
                assert_eq!(max.get(a..b), slice.iter().copied().max(), "{a}..{b}");
            }
        }
    }

    #[test]
    fn deep_nesting_is_written_without_recursion() {
        let depth = 20_000;
        let html = format!("<p>{}أ ب{}</p>", "<b>".repeat(depth), "</b>".repeat(depth));
        let out = run(&html, "x y", &[Some(0), Some(1)]);
        assert_eq!(
            out,
            format!("<p>{}x y{}</p>", "<b>".repeat(depth), "</b>".repeat(depth))
        );
    }

    #[test]
    fn text_is_escaped() {
        let html = "<p>أ</p>";
        assert_eq!(run(html, "a<b&c", &[Some(0)]), "<p>a&lt;b&amp;c</p>");
    }
}
