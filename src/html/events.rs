//! A document as a flat list of HTML5 tokens with their byte ranges, every byte in exactly
//! one token.
//!
//! lol_html tokenises (the WHATWG tokenizer, with the tree builder's text-mode switches:
//! `<script>`, `<title>`, `<textarea>`, … content is text) and gives each token its byte
//! range in the source. It reports end tags only through the handler of an element it
//! thinks they close (and, for misnested markup, not always the right one), so end tags
//! are matched to elements by the caller, by name; end tags it does not report are found
//! in the bytes between reported tokens. Anything else there (the doctype, bogus
//! comments) becomes a [`Kind::Other`] token: every byte is in exactly one token.

use std::cell::RefCell;
use std::ops::Range;
use std::rc::Rc;

use lol_html::html_content::{Comment, Element, EndTag, TextChunk, TextType};
use lol_html::{doc_comments, doc_text, element, end_tag, HtmlRewriter, Settings};

#[derive(Debug, thiserror::Error)]
pub enum HtmlError {
    #[error("the HTML could not be tokenised: {0}")]
    Tokenizer(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// Lowercased.
    pub name: String,
    /// As written (entities not decoded).
    pub value: String,
    /// Where the value is in the source (without quotes); `None` for a bare attribute.
    pub value_at: Option<Range<usize>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Start {
        /// Lowercased.
        name: String,
        attrs: Vec<Attr>,
        /// A void element (`br`, `img`, …): never has content or an end tag.
        void: bool,
    },
    End {
        /// Lowercased.
        name: String,
    },
    /// Character data; `decoded` when entities in it mean characters (ordinary text and
    /// RCDATA such as `<title>`), not for script, style and other raw text.
    Text {
        decoded: bool,
    },
    Comment,
    /// Anything else (doctype, stray end tags, …): kept, never interpreted.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub range: Range<usize>,
    pub kind: Kind,
}

impl Token {
    pub fn name(&self) -> Option<&str> {
        match &self.kind {
            Kind::Start { name, .. } => Some(name),
            _ => None,
        }
    }

    pub fn attr(&self, name: &str) -> Option<&Attr> {
        match &self.kind {
            Kind::Start { attrs, .. } => attrs.iter().find(|a| a.name == name),
            _ => None,
        }
    }
}

/// What the handlers record.
enum Raw {
    Token(Kind),
    /// A text chunk (adjacent chunks of one kind are merged).
    Text {
        decoded: bool,
    },
}

type Log = Rc<RefCell<Vec<(Range<usize>, Raw)>>>;

/// Tokenises `html`. Malformed markup is tokenised as browsers do; only running out of
/// memory inside the tokenizer fails.
pub fn tokenize(html: &str) -> Result<Vec<Token>, HtmlError> {
    let log: Log = Rc::default();
    let (elements, texts, comments) = (log.clone(), log.clone(), log.clone());
    let on_element = move |el: &mut Element| {
        let void = !el.can_have_content();
        elements.borrow_mut().push((
            el.source_location().bytes(),
            Raw::Token(Kind::Start {
                name: el.tag_name(),
                attrs: el.attributes().iter().map(attr).collect(),
                void,
            }),
        ));
        if !void {
            let ends = elements.clone();
            el.on_end_tag(end_tag!(move |end: &mut EndTag| {
                let name = end.name();
                ends.borrow_mut().push((
                    end.source_location().bytes(),
                    Raw::Token(Kind::End { name }),
                ));
                Ok(())
            }))?;
        }
        Ok(())
    };
    let on_text = move |t: &mut TextChunk| {
        let range = t.source_location().bytes();
        if !range.is_empty() {
            let decoded = matches!(t.text_type(), TextType::Data | TextType::RCData);
            texts.borrow_mut().push((range, Raw::Text { decoded }));
        }
        Ok(())
    };
    let on_comment = move |c: &mut Comment| {
        comments
            .borrow_mut()
            .push((c.source_location().bytes(), Raw::Token(Kind::Comment)));
        Ok(())
    };
    // Non-strict: the rare ambiguous markup (`<select><xmp>`) is tokenised as lol_html
    // best can instead of failing the request.
    let settings = Settings::new()
        .append_element_content_handler(element!("*", on_element))
        .append_document_content_handler(doc_text!(on_text))
        .append_document_content_handler(doc_comments!(on_comment))
        .with_strict(false);
    let mut rewriter = HtmlRewriter::new(settings, |_: &[u8]| {});
    let fail = |e: lol_html::errors::RewritingError| HtmlError::Tokenizer(e.to_string());
    rewriter.write(html.as_bytes()).map_err(fail)?;
    rewriter.end().map_err(fail)?;
    let raw = std::mem::take(&mut *log.borrow_mut());
    Ok(assemble(html, raw))
}

fn attr(a: &lol_html::html_content::Attribute) -> Attr {
    Attr {
        name: a.name(),
        value: a.value(),
        value_at: a.value_source_location().map(|l| l.bytes()),
    }
}

/// Orders the recorded tokens, merges adjacent text chunks and fills every byte nobody
/// reported with the end tags found there and `Other` tokens.
fn assemble(html: &str, mut raw: Vec<(Range<usize>, Raw)>) -> Vec<Token> {
    raw.sort_by_key(|(r, _)| r.start);
    let mut tokens: Vec<Token> = Vec::with_capacity(raw.len() * 2 + 1);
    let mut at = 0;
    for (range, item) in raw {
        // lol_html's locations never overlap; skipping keeps the tiling exact if they did.
        // (An end tag reported twice, by two handlers, is one of these.)
        if range.start < at {
            continue;
        }
        unreported(html, at..range.start, &mut tokens);
        at = range.end;
        let kind = match item {
            Raw::Token(kind) => kind,
            Raw::Text { decoded } => match tokens.last_mut() {
                Some(last)
                    if last.kind == Kind::Text { decoded } && last.range.end == range.start =>
                {
                    last.range.end = range.end;
                    continue;
                }
                _ => Kind::Text { decoded },
            },
        };
        tokens.push(Token { range, kind });
    }
    unreported(html, at..html.len(), &mut tokens);
    tokens
}

/// Tokens for bytes the tokenizer reported nothing for: each end tag (`</name …>`) in
/// them, and `Other` for the rest.
fn unreported(html: &str, range: Range<usize>, tokens: &mut Vec<Token>) {
    let mut at = range.start;
    let other = |tokens: &mut Vec<Token>, r: Range<usize>| match tokens.last_mut() {
        _ if r.is_empty() => {}
        Some(last) if last.kind == Kind::Other && last.range.end == r.start => {
            last.range.end = r.end
        }
        _ => tokens.push(Token {
            range: r,
            kind: Kind::Other,
        }),
    };
    while let Some(found) = html[at..range.end].find("</") {
        let start = at + found;
        let tail = &html[start + 2..range.end];
        let name_len = tail
            .find(|c: char| c.is_ascii_whitespace() || c == '/' || c == '>')
            .unwrap_or(tail.len());
        let (Some(close), true) = (
            tail.find('>'),
            tail.starts_with(|c: char| c.is_ascii_alphabetic()),
        ) else {
            other(tokens, at..start + 2);
            at = start + 2;
            continue;
        };
        other(tokens, at..start);
        let end = start + 2 + close + 1;
        tokens.push(Token {
            range: start..end,
            kind: Kind::End {
                name: tail[..name_len].to_ascii_lowercase(),
            },
        });
        at = end;
    }
    other(tokens, at..range.end);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(html: &str) -> Vec<(String, &'static str)> {
        tokenize(html)
            .unwrap()
            .iter()
            .map(|t| {
                let k = match t.kind {
                    Kind::Start { .. } => "start",
                    Kind::End { .. } => "end",
                    Kind::Text { decoded: true } => "text",
                    Kind::Text { decoded: false } => "raw",
                    Kind::Comment => "comment",
                    Kind::Other => "other",
                };
                (html[t.range.clone()].to_string(), k)
            })
            .collect()
    }

    #[test]
    fn every_byte_is_in_one_token_in_order() {
        for html in [
            "<!DOCTYPE html><p class=x>نص &amp; <b>عريض</b></p><!-- c --></i>",
            "<p>a<p>b</div>",
            "<script>if (a < b) {}</script><title>x &lt; y</title>",
            "",
            "plain",
            "<b><i>x</b>y</i>",
        ] {
            let tokens = tokenize(html).unwrap();
            let mut at = 0;
            for t in &tokens {
                assert_eq!(t.range.start, at, "{html}");
                at = t.range.end;
            }
            assert_eq!(at, html.len(), "{html}");
        }
    }

    #[test]
    fn tokens_and_matched_end_tags() {
        let html = "<p dir=\"rtl\">نص &amp; <b>x</b><br></p><!--c--></i>";
        assert_eq!(
            kinds(html),
            [
                ("<p dir=\"rtl\">", "start"),
                ("نص &amp; ", "text"),
                ("<b>", "start"),
                ("x", "text"),
                ("</b>", "end"),
                ("<br>", "start"),
                ("</p>", "end"),
                ("<!--c-->", "comment"),
                ("</i>", "end"),
            ]
            .map(|(a, b)| (a.to_string(), b))
        );
        let tokens = tokenize(html).unwrap();
        let Kind::Start { attrs, .. } = &tokens[0].kind else {
            panic!("not a start tag")
        };
        assert_eq!(attrs[0].value_at.clone().map(|r| &html[r]), Some("rtl"));
    }

    #[test]
    fn misnested_end_tags_are_found_by_name() {
        let k = kinds("<b><i>x</b> y</i></B ></ 3>");
        assert_eq!(
            k,
            [
                ("<b>", "start"),
                ("<i>", "start"),
                ("x", "text"),
                ("</b>", "end"),
                (" y", "text"),
                ("</i>", "end"),
                ("</B >", "end"),
                ("</ 3>", "comment"),
            ]
            .map(|(a, b)| (a.to_string(), b))
        );
    }

    #[test]
    fn script_and_style_are_raw_text() {
        let k = kinds("<script>a &amp; b</script><style>p{}</style>");
        assert_eq!(k[1], ("a &amp; b".to_string(), "raw"));
        assert_eq!(k[4], ("p{}".to_string(), "raw"));
    }
}
