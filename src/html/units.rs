//! From tokens to translation units: runs of text and inline markup between block
//! boundaries, each with its plain text (tags removed, entities decoded, whitespace
//! collapsed as a browser renders it) and its inline elements as ranges of that text.

use std::collections::HashMap;
use std::ops::Range;

use super::events::{Kind, Token};

/// Elements that end one unit and start another (block-level and `br`).
const BLOCK: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "body",
    "br",
    "caption",
    "center",
    "dd",
    "details",
    "dialog",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "head",
    "header",
    "hgroup",
    "hr",
    "html",
    "legend",
    "li",
    "main",
    "menu",
    "nav",
    "ol",
    "optgroup",
    "option",
    "p",
    "section",
    "summary",
    "table",
    "tbody",
    "td",
    "tfoot",
    "th",
    "thead",
    "title",
    "tr",
    "ul",
];

/// Elements whose content is never translated and that stand apart from the text.
const SKIP_BLOCK: &[&str] = &[
    "audio",
    "canvas",
    "iframe",
    "math",
    "noembed",
    "noframes",
    "noscript",
    "object",
    "plaintext",
    "pre",
    "script",
    "select",
    "style",
    "svg",
    "template",
    "textarea",
    "video",
    "xmp",
];

/// Inline elements whose content is never translated: it stays as it is, at its aligned
/// place in the sentence.
const SKIP_INLINE: &[&str] = &["code", "kbd", "samp", "var"];

/// Attributes people read; translated when they hold Arabic.
pub const TRANSLATED_ATTRIBUTES: &[&str] = &["alt", "title"];

fn is_block(name: &str) -> bool {
    BLOCK.contains(&name)
}

/// What the content of a start tag is to translation.
fn skipped(token: &Token) -> Option<bool> {
    let name = token.name()?;
    let no = token
        .attr("translate")
        .is_some_and(|a| a.value.trim().eq_ignore_ascii_case("no"))
        || token.attr("class").is_some_and(|a| {
            a.value
                .split_ascii_whitespace()
                .any(|c| c.eq_ignore_ascii_case("notranslate"))
        });
    if SKIP_BLOCK.contains(&name) {
        Some(true)
    } else if SKIP_INLINE.contains(&name) || no {
        Some(is_block(name))
    } else {
        None
    }
}

/// One inline element (or kept piece) of a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// Its start tag, when inside the unit (for an atom: all of its bytes).
    pub open: Option<Range<usize>>,
    /// Its end tag, when inside the unit.
    pub close: Option<Range<usize>>,
    /// The chars of the unit's text inside it (`from == to`: none).
    pub from: usize,
    pub to: usize,
    /// The innermost element of the unit it is inside.
    pub parent: Option<usize>,
    /// Kept as it is and placed like a word: a comment, an image, content not to
    /// translate, bytes the tokenizer did not interpret.
    pub atom: bool,
    /// An atom written right after the text before it, with no space.
    pub glued_before: bool,
    /// An atom followed by whitespace.
    pub space_after: bool,
}

impl Mark {
    /// Where it first appears in the source (orders siblings).
    pub fn first_byte(&self) -> usize {
        self.open
            .as_ref()
            .or(self.close.as_ref())
            .map_or(0, |r| r.start)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitKind {
    /// Text content: the unit's range is rewritten with the English and its marks.
    Content,
    /// An attribute value (`alt`, `title`): the range is the value without quotes;
    /// `quoted` when the source has quotes around it.
    Attribute { quoted: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    pub kind: UnitKind,
    /// The bytes of the document the unit rewrites.
    pub range: Range<usize>,
    /// What is translated.
    pub text: String,
    /// For each char of `text`, the source bytes it came from.
    pub sources: Vec<Range<usize>>,
    pub marks: Vec<Mark>,
}

impl Unit {
    /// The source bytes of the chars `chars` of `text` (an empty range for no chars).
    pub fn source_span(&self, chars: Range<usize>) -> Range<usize> {
        let at = |i: usize| self.sources.get(i).map_or(self.range.end, |r| r.start);
        match chars.end.checked_sub(1).and_then(|l| self.sources.get(l)) {
            Some(last) if chars.start < chars.end => at(chars.start)..last.end,
            _ => at(chars.start)..at(chars.start),
        }
    }
}

/// An attribute that says the text is Arabic (`dir="rtl"`, `lang="ar…"`), to turn into
/// English where the text inside its element was translated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectionAttr {
    /// The attribute value's bytes.
    pub value: Range<usize>,
    /// What it becomes.
    pub english: &'static str,
    /// The element's bytes (to its end tag, or to the end of the document).
    pub element: Range<usize>,
}

/// The units and direction attributes of a document, in document order.
pub fn extract(html: &str, tokens: &[Token]) -> (Vec<Unit>, Vec<DirectionAttr>) {
    let mut out = Extractor {
        html,
        tokens,
        units: Vec::new(),
        attrs: Vec::new(),
        current: Builder::default(),
        open: Vec::new(),
        positions: HashMap::new(),
        blocks: Vec::new(),
        ends: balancing_ends(tokens),
        next_boundary: next_boundaries(tokens),
    };
    out.run();
    out.units.sort_by_key(|u| u.range.start);
    (out.units, out.attrs)
}

struct Extractor<'a> {
    html: &'a str,
    tokens: &'a [Token],
    units: Vec<Unit>,
    attrs: Vec<DirectionAttr>,
    current: Builder,
    /// Open elements (names), outermost first: end tags close the innermost of their name.
    open: Vec<String>,
    /// Where in `open` each name is (so an end tag costs no scan).
    positions: HashMap<String, Vec<usize>>,
    /// Where in `open` the blocks are.
    blocks: Vec<usize>,
    /// For each start tag, the end tag that balances it (same name, same depth).
    ends: Vec<Option<usize>>,
    /// For each token, the first block boundary at or after it.
    next_boundary: Vec<Option<usize>>,
}

impl Extractor<'_> {
    fn run(&mut self) {
        let mut i = 0;
        while i < self.tokens.len() {
            i = self.token(i) + 1;
        }
        self.boundary();
    }

    /// Handles token `i`; returns the last token it consumed.
    fn token(&mut self, i: usize) -> usize {
        let token = &self.tokens[i];
        match &token.kind {
            Kind::Start { name, void, .. } => {
                if let Some(block) = skipped(token) {
                    let last = self.skip_end(i);
                    let bytes = token.range.start..self.tokens[last].range.end;
                    match block {
                        true => self.boundary(),
                        false => self.current.atom(bytes),
                    }
                    return last;
                }
                self.start_tag(i);
                if !void {
                    let at = self.open.len();
                    self.open.push(name.clone());
                    self.positions.entry(name.clone()).or_default().push(at);
                    if is_block(name) {
                        self.blocks.push(at);
                    }
                }
                if is_block(name) {
                    self.boundary();
                } else if *void {
                    self.current.atom(token.range.clone());
                } else {
                    self.current.open(name, token.range.clone());
                }
            }
            Kind::End { name } => self.end_tag(name, token.range.clone()),
            Kind::Text { decoded } => {
                let text = &self.html[token.range.clone()];
                decode(text, token.range.start, *decoded, &mut |c, src| {
                    self.current.char(c, src)
                });
            }
            Kind::Comment | Kind::Other => self.current.atom(token.range.clone()),
        }
        i
    }

    /// An end tag closes the innermost open element of its name (and those inside it); an
    /// inline end tag does not reach past a block. One that closes nothing stays where it
    /// stands, like a comment.
    fn end_tag(&mut self, name: &str, range: Range<usize>) {
        let block = is_block(name);
        let innermost = self.positions.get(name).and_then(|p| p.last().copied());
        let barrier = match block {
            true => None,
            false => self.blocks.last().copied(),
        };
        let found = innermost.filter(|&k| barrier.is_none_or(|b| k > b));
        let Some(k) = found else {
            match block {
                true => self.boundary(),
                false => self.current.atom(range),
            }
            return;
        };
        for closed in self.open.drain(k..) {
            if let Some(p) = self.positions.get_mut(&closed) {
                p.pop();
            }
        }
        while self.blocks.last().is_some_and(|&b| b >= k) {
            self.blocks.pop();
        }
        match block {
            true => self.boundary(),
            false => self.current.close(name, range),
        }
    }

    /// The last token of the skipped element starting at `i`: its end tag (the first that
    /// balances it), or the token before the next block boundary when it has none.
    fn skip_end(&self, i: usize) -> usize {
        if matches!(self.tokens[i].kind, Kind::Start { void: true, .. }) {
            return i;
        }
        self.ends[i].unwrap_or_else(|| {
            let boundary = self.next_boundary.get(i + 1).copied().flatten();
            boundary.map_or(self.tokens.len() - 1, |b| b - 1)
        })
    }

    /// Attribute units and direction attributes of start tag `i`.
    fn start_tag(&mut self, i: usize) {
        let Kind::Start { attrs, .. } = &self.tokens[i].kind else {
            return;
        };
        for a in attrs {
            let Some(value) = a.value_at.clone() else {
                continue;
            };
            let english = match a.name.as_str() {
                "dir" if a.value.trim().eq_ignore_ascii_case("rtl") => Some("ltr"),
                "lang" if is_arabic_tag(&a.value) => Some("en"),
                _ => None,
            };
            if let Some(english) = english {
                // Found by a scan: only for the (few) elements that carry these attributes.
                let element = self.tokens[i].range.start..self.element_end(i);
                self.attrs.push(DirectionAttr {
                    value: value.clone(),
                    english,
                    element,
                });
            }
            if TRANSLATED_ATTRIBUTES.contains(&a.name.as_str()) {
                self.attribute_unit(value);
            }
        }
    }

    /// Where the element started at token `i` ends: its balancing end tag, else the end of
    /// the document.
    fn element_end(&self, i: usize) -> usize {
        match (&self.tokens[i].kind, self.ends[i]) {
            (Kind::Start { void: true, .. }, _) => self.tokens[i].range.end,
            (_, Some(j)) => self.tokens[j].range.end,
            _ => self.html.len(),
        }
    }

    fn attribute_unit(&mut self, value: Range<usize>) {
        let mut b = Builder::default();
        decode(
            &self.html[value.clone()],
            value.start,
            true,
            &mut |c, src| b.char(c, src),
        );
        let quoted = value.start > 0
            && matches!(self.html.as_bytes()[value.start - 1], b'"' | b'\'')
            && self.html.as_bytes().get(value.end) == Some(&self.html.as_bytes()[value.start - 1]);
        if let Some(mut unit) = b.finish() {
            unit.kind = UnitKind::Attribute { quoted };
            unit.range = value;
            self.units.push(unit);
        }
    }

    fn boundary(&mut self) {
        if let Some(unit) = std::mem::take(&mut self.current).finish() {
            self.units.push(unit);
        }
    }
}

/// For each start tag, the end tag of its name that balances it (depth counted per name).
fn balancing_ends(tokens: &[Token]) -> Vec<Option<usize>> {
    let mut ends = vec![None; tokens.len()];
    let mut open: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, t) in tokens.iter().enumerate() {
        match &t.kind {
            Kind::Start {
                name, void: false, ..
            } => open.entry(name).or_default().push(i),
            Kind::End { name } => {
                if let Some(start) = open.get_mut(name.as_str()).and_then(Vec::pop) {
                    ends[start] = Some(i);
                }
            }
            _ => {}
        }
    }
    ends
}

/// For each token, the first block boundary (a block's start or end tag, or a kept block's
/// start) at or after it.
fn next_boundaries(tokens: &[Token]) -> Vec<Option<usize>> {
    let mut next = vec![None; tokens.len() + 1];
    for (i, t) in tokens.iter().enumerate().rev() {
        let boundary = match &t.kind {
            Kind::Start { name, .. } => is_block(name) || SKIP_BLOCK.contains(&name.as_str()),
            Kind::End { name } => is_block(name),
            _ => false,
        };
        next[i] = if boundary { Some(i) } else { next[i + 1] };
    }
    next
}

/// `ar`, `ar-EG`, … (BCP 47, any case).
fn is_arabic_tag(tag: &str) -> bool {
    let tag = tag.trim();
    tag.eq_ignore_ascii_case("ar")
        || tag
            .get(..3)
            .is_some_and(|p| p.eq_ignore_ascii_case("ar-") || p.eq_ignore_ascii_case("ar_"))
}

/// HTML's whitespace (what a browser collapses); U+00A0 and other spaces are text.
fn is_html_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0C' | '\r')
}

/// Calls `push` with each char of `raw` (at byte `base` of the document) and its source
/// bytes, character references decoded when `entities`.
fn decode(raw: &str, base: usize, entities: bool, push: &mut dyn FnMut(char, Range<usize>)) {
    let mut rest = raw.char_indices().peekable();
    while let Some((i, c)) = rest.next() {
        if c == '&' && entities {
            let len = reference_len(&raw[i..]);
            if len > 1 {
                let reference = &raw[i..i + len];
                let decoded = html_escape::decode_html_entities(reference);
                if decoded != reference {
                    for d in decoded.chars() {
                        push(d, base + i..base + i + len);
                    }
                    while rest.peek().is_some_and(|&(j, _)| j < i + len) {
                        rest.next();
                    }
                    continue;
                }
            }
        }
        push(c, base + i..base + i + c.len_utf8());
    }
}

/// Bytes of the character reference at the start of `s` (`&amp;`, `&#1575;`, `&#x627;`):
/// `&`, then `#` or letters, digits, up to and with a `;` (at most 40 bytes).
fn reference_len(s: &str) -> usize {
    let body = s[1..]
        .char_indices()
        .take_while(|&(i, c)| i < 40 && (c.is_ascii_alphanumeric() || (i == 0 && c == '#')))
        .last()
        .map_or(0, |(i, c)| i + c.len_utf8());
    let semicolon = usize::from(s[1 + body..].starts_with(';'));
    1 + body + semicolon
}

/// The unit being read.
#[derive(Default)]
struct Builder {
    text: String,
    /// For each char of `text`, its source bytes (so also how many chars there are).
    sources: Vec<Range<usize>>,
    marks: Vec<Mark>,
    /// Elements opened inside the unit and still open: (name, mark).
    open: Vec<(String, usize)>,
    /// Marks with no parent in the unit (so far).
    roots: Vec<usize>,
    /// Whitespace seen since the last char (written as one space before the next).
    pending_space: Option<Range<usize>>,
    /// Atoms that do not yet know whether whitespace follows them.
    awaiting: Vec<usize>,
    range: Option<Range<usize>>,
}

impl Builder {
    fn touch(&mut self, r: &Range<usize>) {
        self.range = Some(match self.range.take() {
            Some(old) => old.start.min(r.start)..old.end.max(r.end),
            None => r.clone(),
        });
    }

    fn char(&mut self, c: char, src: Range<usize>) {
        let space = is_html_space(c);
        for a in self.awaiting.drain(..) {
            self.marks[a].space_after = space;
        }
        if space {
            self.pending_space.get_or_insert(src);
            return;
        }
        if let Some(s) = self.pending_space.take() {
            if !self.sources.is_empty() {
                self.push(' ', s);
            }
        }
        self.touch(&src);
        self.push(c, src);
    }

    fn push(&mut self, c: char, src: Range<usize>) {
        self.text.push(c);
        self.sources.push(src);
    }

    fn mark(&mut self, open: Option<Range<usize>>, close: Option<Range<usize>>) -> usize {
        let parent = self.open.last().map(|&(_, m)| m);
        self.marks.push(Mark {
            open,
            close,
            from: self.sources.len(),
            to: self.sources.len(),
            parent,
            atom: false,
            glued_before: false,
            space_after: false,
        });
        let m = self.marks.len() - 1;
        if parent.is_none() {
            self.roots.push(m);
        }
        m
    }

    fn open(&mut self, name: &str, range: Range<usize>) {
        self.touch(&range);
        let m = self.mark(Some(range), None);
        self.open.push((name.to_string(), m));
    }

    fn atom(&mut self, range: Range<usize>) {
        self.touch(&range);
        let m = self.mark(Some(range), None);
        let mark = &mut self.marks[m];
        mark.atom = true;
        mark.glued_before = !self.sources.is_empty() && self.pending_space.is_none();
        self.awaiting.push(m);
    }

    /// The end tag of the innermost open element `name`: elements opened inside it and
    /// still open end here too (implicitly).
    fn close(&mut self, name: &str, range: Range<usize>) {
        self.touch(&range);
        let chars = self.sources.len();
        match self.open.iter().rposition(|(n, _)| n == name) {
            Some(k) => {
                let m = self.open[k].1;
                for (_, inner) in self.open.drain(k..) {
                    self.marks[inner].to = chars;
                }
                self.marks[m].close = Some(range);
            }
            None => {
                // Opened before the unit: everything in the unit so far is inside it.
                for (_, inner) in self.open.drain(..) {
                    self.marks[inner].to = chars;
                }
                let m = self.mark(None, Some(range));
                self.marks[m].from = 0;
                for root in std::mem::take(&mut self.roots) {
                    if root != m {
                        self.marks[root].parent = Some(m);
                    }
                }
                self.roots.push(m);
            }
        }
    }

    fn finish(mut self) -> Option<Unit> {
        if self.sources.is_empty() {
            return None;
        }
        let chars = self.sources.len();
        for (_, m) in self.open.drain(..) {
            self.marks[m].to = chars;
        }
        Some(Unit {
            kind: UnitKind::Content,
            range: self.range?,
            text: self.text,
            sources: self.sources,
            marks: self.marks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::events::tokenize;
    use super::*;

    fn units(html: &str) -> Vec<Unit> {
        extract(html, &tokenize(html).unwrap()).0
    }

    #[test]
    fn blocks_and_breaks_make_units_with_collapsed_text() {
        let html = "<div><p>  أ  &amp;\n ب </p><p>ج<br>د</p> <ul><li>هـ</li></ul></div>";
        let u = units(html);
        let texts: Vec<&str> = u.iter().map(|u| u.text.as_str()).collect();
        assert_eq!(texts, ["أ & ب", "ج", "د", "هـ"]);
        assert_eq!(&html[u[0].range.clone()], "أ  &amp;\n ب");
        assert_eq!(&html[u[0].source_span(2..3)], "&amp;");
        assert_eq!(&html[u[0].source_span(0..5)], "أ  &amp;\n ب");
    }

    #[test]
    fn inline_elements_are_marks_over_the_text() {
        let html = "<p>قال <a href=\"x\">محمد <b>علي</b></a> اليوم<!--c--></p>";
        let u = &units(html)[0];
        assert_eq!(u.text, "قال محمد علي اليوم");
        let m = &u.marks;
        assert_eq!(m.len(), 3);
        assert_eq!((m[0].from, m[0].to, m[0].parent), (3, 12, None));
        assert_eq!(&html[m[0].open.clone().unwrap()], "<a href=\"x\">");
        assert_eq!(&html[m[0].close.clone().unwrap()], "</a>");
        assert_eq!((m[1].from, m[1].to, m[1].parent), (8, 12, Some(0)));
        assert!(m[2].atom && m[2].glued_before);
        assert_eq!(m[2].from, u.text.chars().count());
    }

    #[test]
    fn kept_content_is_an_atom_or_a_boundary() {
        let html =
            "<p>الرئيس <span translate=\"no\">Trump <i>x</i></span> و<code>a&lt;b</code></p>\
                    <pre>نص</pre><div class=\"a notranslate\">نص</div><script>نص</script>";
        let u = units(html);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].text, "الرئيس و");
        let atoms: Vec<&str> = u[0]
            .marks
            .iter()
            .map(|m| &html[m.open.clone().unwrap()])
            .collect();
        assert_eq!(
            atoms,
            [
                "<span translate=\"no\">Trump <i>x</i></span>",
                "<code>a&lt;b</code>"
            ]
        );
        assert!(u[0].marks[0].space_after && !u[0].marks[0].glued_before);
        assert!(u[0].marks[1].glued_before);
    }

    #[test]
    fn elements_crossing_a_boundary_keep_their_outside_tags() {
        let html = "<p><b>أ<br>ب</b> ج</p>";
        let u = units(html);
        assert_eq!(u.len(), 2);
        // The first unit opens b and leaves it open; the second closes it.
        assert_eq!(
            (u[0].marks[0].open.is_some(), u[0].marks[0].close.is_some()),
            (true, false)
        );
        assert_eq!(
            (u[1].marks[0].open.is_some(), u[1].marks[0].close.is_some()),
            (false, true)
        );
        assert_eq!((u[1].marks[0].from, u[1].marks[0].to), (0, 1));
    }

    #[test]
    fn attributes_and_direction() {
        let html =
            "<html dir=\"rtl\" lang=\"ar\"><p title='عنوان'>نص <img alt=صورة src=\"a.png\"></p>";
        let (u, dirs) = extract(html, &tokenize(html).unwrap());
        let texts: Vec<(&str, &UnitKind)> = u.iter().map(|u| (u.text.as_str(), &u.kind)).collect();
        assert_eq!(
            texts,
            [
                ("عنوان", &UnitKind::Attribute { quoted: true }),
                ("نص", &UnitKind::Content),
                ("صورة", &UnitKind::Attribute { quoted: false }),
            ]
        );
        assert_eq!(dirs.len(), 2);
        assert_eq!(&html[dirs[0].value.clone()], "rtl");
        assert_eq!(dirs[1].english, "en");
    }

    #[test]
    fn markup_only_has_no_units() {
        assert!(units("<p> <img src=x> <!-- c --> </p><script>x</script>").is_empty());
        assert!(units("").is_empty());
    }
}
