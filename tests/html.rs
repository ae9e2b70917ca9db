//! HTML in, HTML out (#16), on the Marian fixture. Its weights are random, so the English
//! is nonsense; what is checked is the mechanics: the document's structure survives (an
//! independent HTML5 parser, html5ever through `scraper`, reads the same tree from input
//! and output), what is not to be translated comes out byte for byte, every inline element
//! once, spans point into the client's HTML, and inline tags go where the alignment read
//! by an independent path puts them.

mod common;

use std::path::Path;

use common::engine::*;
use proptest::prelude::*;
use tarjama::pipeline::{ModelInfo, SourceLanguage, SourceText, Task, TranslatedText, Translator};

fn fixture_translator() -> Translator {
    let model = load(MARIAN, None);
    let tokenizer = tarjama::tokenizer::Tokenizer::from_dir(Path::new(MARIAN)).unwrap();
    let info = ModelInfo::describe(&model, Task::Translation, "fixture".into(), "0".into());
    let config = tarjama::scheduler::SchedulerConfig::default();
    Translator::start(model, tokenizer, info, config).unwrap()
}

/// Fixture inputs that normalisation leaves as they are (so spans can be compared).
fn sentences() -> Vec<String> {
    let r = reference(MARIAN);
    let texts = r["batch"]["texts"].as_array().unwrap();
    [0, 1, 2, 5]
        .iter()
        .map(|&i| texts[i].as_str().unwrap().to_string())
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn html(translator: &Translator, text: &str) -> TranslatedText {
    translator
        .translate(
            SourceText::html(text),
            SourceLanguage::Arabic,
            &Default::default(),
            None,
        )
        .await
        .unwrap()
}

/// The element tree as html5ever builds it: names, nesting, and the attributes that are
/// never rewritten.
fn shape(html: &str) -> Vec<String> {
    fn walk(e: scraper::ElementRef, depth: usize, out: &mut Vec<String>) {
        let v = e.value();
        let mut attrs: Vec<String> = v
            .attrs()
            .filter(|(n, _)| !["dir", "lang", "alt", "title"].contains(n))
            .map(|(n, val)| format!("{n}={val}"))
            .collect();
        attrs.sort();
        out.push(format!(
            "{}{} {}",
            " ".repeat(depth),
            v.name(),
            attrs.join(" ")
        ));
        for child in e.child_elements() {
            walk(child, depth + 1, out);
        }
    }
    let doc = scraper::Html::parse_document(html);
    let mut out = Vec::new();
    walk(doc.root_element(), 0, &mut out);
    out
}

/// The visible text of an HTML piece: tags removed, entities decoded, whitespace collapsed.
fn visible(piece: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    for c in piece.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let decoded = html_escape::decode_html_entities(&text).into_owned();
    decoded.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn chars(s: &str, range: std::ops::Range<usize>) -> String {
    s.chars().skip(range.start).take(range.len()).collect()
}

/// Every segment's span, in chars of the client's HTML, starts with the segment's first
/// word, ends with its last and holds its words in order (with, between them, any markup
/// and kept content the sentence has).
fn assert_spans(source: &str, done: &TranslatedText) {
    for s in &done.segments {
        let piece = visible(&chars(source, s.source_start..s.source_end));
        let (got, want): (Vec<&str>, Vec<&str>) = (
            piece.split_whitespace().collect(),
            s.source.split_whitespace().collect(),
        );
        let at = format!(
            "span {}..{}: {piece} for {}",
            s.source_start, s.source_end, s.source
        );
        let (first, last) = (want.first().unwrap(), want.last().unwrap());
        // Glued to the first and last words: markup, kept content, punctuation.
        assert!(got.first().unwrap().contains(first), "{at}");
        assert!(got.last().unwrap().contains(last), "{at}");
        let mut rest = got.iter();
        assert!(want.iter().all(|w| rest.any(|g| g.contains(w))), "{at}");
    }
}

fn news(s: &[String]) -> String {
    format!(
        "<!DOCTYPE html>\n<html dir=\"rtl\" lang=\"ar\">\n<head><meta charset=\"utf-8\">\
         <title>{t}</title><style>p {{ margin: 0 }} /* {t} */</style></head>\n\
         <body>\n<!-- article starts -->\n<h1 class=\"headline\">{h}</h1>\n\
         <p>{a} <a href=\"https://example.com/a?x=1&amp;y=2\">{b}</a> <b>{c}</b></p>\n\
         <blockquote><p>{q}</p></blockquote>\n\
         <figure><img src=\"/p.jpg\" alt=\"{c}\"><figcaption>{c} &amp; {c}</figcaption></figure>\n\
         <ul><li>{c}</li><li><em>{c}</em></li></ul>\n\
         <table><tr><td>{c}</td><td>42</td></tr></table>\n\
         <p>{c} <span translate=\"no\">Donald &quot;J&quot; Trump</span> {c} <code>x &lt; y</code>.</p>\n\
         <p class=\"notranslate\">{c}</p>\n\
         <script>var s = \"{c}\"; if (a < b) {{}}</script>\n</body>\n</html>\n",
        t = s[2],
        h = s[0],
        a = "قال",
        b = "الرئيس",
        c = s[2],
        q = s[3],
    )
}

#[test]
fn a_news_page_keeps_its_structure_and_what_is_not_translated() {
    let rt = runtime();
    let translator = fixture_translator();
    let s = sentences();
    let input = news(&s);
    let done = rt.block_on(html(&translator, &input));
    let out = &done.text;
    assert_eq!(shape(out), shape(&input), "{out}");
    for kept in [
        "<!DOCTYPE html>\n",
        "<meta charset=\"utf-8\">",
        &format!("<style>p {{ margin: 0 }} /* {} */</style>", s[2]),
        "<!-- article starts -->",
        "<a href=\"https://example.com/a?x=1&amp;y=2\">",
        "<span translate=\"no\">Donald &quot;J&quot; Trump</span>",
        "<code>x &lt; y</code>",
        &format!("<p class=\"notranslate\">{}</p>", s[2]),
        &format!("<script>var s = \"{}\"; if (a < b) {{}}</script>", s[2]),
        "<img src=\"/p.jpg\" alt=\"",
        "<table><tr><td>",
        "</td><td>42</td></tr></table>",
    ] {
        assert_eq!(out.matches(kept).count(), 1, "{kept} in {out}");
    }
    assert!(out.contains("<html dir=\"ltr\" lang=\"en\">"), "{out}");
    // Arabic is left only where it was not to be translated: the style, the notranslate
    // paragraph and the script hold s[2] once each.
    assert_eq!(out.matches(s[2].as_str()).count(), 3, "{out}");
    assert!(!out.contains(&s[0]) && !out.contains(&s[3]));
    assert_spans(&input, &done);
    // A paragraph without markup reads as the same text translated plain.
    let plain = rt
        .block_on(translator.translate(
            SourceText::plain(s[3].clone()),
            SourceLanguage::Arabic,
            &Default::default(),
            None,
        ))
        .unwrap();
    let quote = format!(
        "<blockquote><p>{}</p></blockquote>",
        html_escape::encode_text(&plain.text)
    );
    assert!(out.contains(&quote), "{quote} in {out}");
    // The plain English (for summaries) has no markup.
    let english = done.plain_text.as_deref().unwrap();
    assert!(!english.contains('<') || plain.text.contains('<'));
    translator.shutdown();
}

#[test]
fn markup_without_text_comes_back_unchanged_with_no_inference() {
    let rt = runtime();
    let translator = fixture_translator();
    for input in [
        "<div><img src=\"a.png\"><!-- x --><br></div>",
        "<p>English only, &amp; <b>bold</b>.</p>",
        "<script>var x = \"قال\";</script><pre>قال</pre>",
    ] {
        let done = rt.block_on(html(&translator, input));
        assert_eq!(done.text, input);
        assert_eq!((done.input_tokens, done.output_tokens), (0, 0), "{input}");
    }
    translator.shutdown();
}

#[test]
fn malformed_html_is_read_as_browsers_read_it() {
    let rt = runtime();
    let translator = fixture_translator();
    let s = sentences();
    for input in [
        format!("<p>{} <b>{}<p>{}</i></div>", s[2], s[2], s[0]),
        format!("<li>{}<li>{}", s[2], s[3]),
        format!("{} <a href=x>{}", s[2], s[2]),
        format!("<p>{}</p></p><td>{}", s[2], s[2]),
        format!("<b><i>{}</b> {}</i>", s[2], s[2]),
    ] {
        let done = rt.block_on(html(&translator, &input));
        assert_eq!(shape(&done.text), shape(&input), "{input} → {}", done.text);
        assert!(done.output_tokens > 0);
    }
    translator.shutdown();
}

/// The word a `<b>` wraps is the English word aligned to the Arabic word it wrapped: the
/// placement read back against the alignment of the same sentence translated plain (an
/// independent run through `Translator::word_alignment`), and identical when the text is
/// translated alone or batched with others.
#[test]
fn inline_tags_go_around_the_aligned_words() {
    let rt = runtime();
    let translator = fixture_translator();
    let sentence = sentences()[1].clone();
    let words: Vec<&str> = sentence.split_whitespace().collect();
    let options = Default::default();
    let prepared = rt
        .block_on(translator.prepare(SourceText::plain(sentence.clone()), SourceLanguage::Arabic))
        .unwrap()
        .with_alignment();
    let plain = rt
        .block_on(translator.run(prepared, &options, None, None))
        .unwrap();
    assert_eq!(plain.segments.len(), 1);
    let alignment = translator.word_alignment(&plain.segments[0]).unwrap();
    let english: Vec<&str> = plain.segments[0].translation.split_whitespace().collect();
    let mut placed = 0;
    for w in 0..words.len() {
        let mut marked = words.clone();
        let wrapped = format!("<b>{}</b>", words[w]);
        marked[w] = &wrapped;
        let input = format!("<p>{}</p>", marked.join(" "));
        let done = rt.block_on(html(&translator, &input));
        let expected = match alignment.best_target(w) {
            Some(t) => {
                placed += 1;
                let mut out: Vec<String> = english
                    .iter()
                    .map(|e| html_escape::encode_text(e).into_owned())
                    .collect();
                out[t] = format!("<b>{}</b>", out[t]);
                out.join(" ")
            }
            None => continue,
        };
        assert_eq!(done.text, format!("<p>{expected}</p>"), "word {w}");
        let batched = rt
            .block_on(translator.translate_all(
                vec![
                    SourceText::plain(sentences()[0].clone()),
                    SourceText::html(input.clone()),
                    SourceText::html(news(&sentences())),
                ],
                SourceLanguage::Arabic,
                &options,
                None,
            ))
            .unwrap();
        assert_eq!(batched[1].text, done.text, "word {w}, batched");
    }
    assert!(
        placed > words.len() / 2,
        "{placed} of {} words aligned",
        words.len()
    );
    translator.shutdown();
}

const INLINE: &[&str] = &["a", "b", "strong", "i", "em", "span", "sup"];
const BLOCKS: &[&str] = &["p", "li", "blockquote", "td", "h2"];

/// Random nesting of inline tags around the fixtures' Arabic words.
fn nested(words: Vec<String>, depth: u32) -> BoxedStrategy<String> {
    let leaf = proptest::sample::select(words.clone()).boxed();
    leaf.prop_recursive(depth, 12, 4, move |inner| {
        (
            proptest::sample::select(INLINE),
            proptest::collection::vec(inner, 1..4),
        )
            .prop_map(|(tag, parts)| {
                let open = match tag {
                    "a" => "<a href=\"/x?a=1&amp;b=2\">".to_string(),
                    t => format!("<{t}>"),
                };
                format!("{open}{}</{tag}>", parts.join(" "))
            })
    })
    .boxed()
}

fn document() -> impl Strategy<Value = String> {
    let words: Vec<String> = sentences()
        .iter()
        .flat_map(|s| s.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();
    proptest::collection::vec((proptest::sample::select(BLOCKS), nested(words, 3)), 1..4).prop_map(
        |blocks| {
            blocks
                .into_iter()
                .map(|(b, inner)| match b {
                    "li" => format!("<ul><li>{inner}</li></ul>"),
                    "td" => format!("<table><tr><td>{inner}</td></tr></table>"),
                    b => format!("<{b}>{inner}</{b}>"),
                })
                .collect::<Vec<_>>()
                .join("\n")
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn generated_html_reparses_to_the_same_shape(doc in document()) {
        let rt = runtime();
        let translator = fixture_translator();
        let done = rt.block_on(html(&translator, &doc));
        translator.shutdown();
        prop_assert_eq!(shape(&done.text), shape(&doc), "{} → {}", doc, done.text);
        for tag in INLINE {
            let open = format!("<{tag}");
            prop_assert_eq!(done.text.matches(&open).count(), doc.matches(&open).count());
        }
        assert_spans(&doc, &done);
    }
}

mod served {
    use super::*;
    use common::server::start;
    use tarjama::proto::{
        self, ProcessArticleRequest, ProcessArticleStreamRequest, TextInput, TranslateRequest,
    };

    fn html_input(text: &str) -> TextInput {
        TextInput {
            id: "h".into(),
            text: text.into(),
            format: proto::TextFormat::Html as i32,
        }
    }

    fn refused_on(status: &tonic::Status, field: &str) {
        common::server::assert_bad_field(status, field, "");
    }

    /// Translate, ProcessArticle and ProcessArticleStream with HTML: the same document
    /// comes back from each, the title as an `<h1>`, the summary as plain text, streamed
    /// paragraphs as fragments of the document.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn html_through_every_rpc() {
        let server = start(&[]).await;
        let mut client = server.client().await;
        let s = sentences();
        let body = format!(
            "<div dir=\"rtl\"><p>{} <b>{}</b></p>\n<p>{}</p><ul><li>{}</li></ul></div>",
            s[1], s[2], s[3], s[0]
        );
        let translated = client
            .translate(TranslateRequest {
                texts: vec![html_input(&body)],
                source_language: "ar".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .translations
            .remove(0);
        assert_eq!(shape(&translated.text), shape(&body));
        assert!(translated.text.starts_with("<div dir=\"ltr\"><p>"));
        for seg in &translated.segments {
            let piece = visible(&chars(
                &body,
                seg.source_start as usize..seg.source_end as usize,
            ));
            assert_eq!(piece, seg.source);
        }
        let article = ProcessArticleRequest {
            id: "a".into(),
            title: format!("<h1>{}</h1>", s[2]),
            body: body.clone(),
            source_language: "ar".into(),
            format: proto::TextFormat::Html as i32,
            ..Default::default()
        };
        let reply = client
            .process_article(article.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.body, translated.text);
        assert!(reply.title.starts_with("<h1>") && reply.title.ends_with("</h1>"));
        let summary = reply.summary.unwrap().text;
        assert!(!summary.is_empty() && !summary.contains("<b>") && !summary.contains("<p>"));
        let mut stream = client
            .process_article_stream(ProcessArticleStreamRequest::from(article))
            .await
            .unwrap()
            .into_inner();
        let mut paragraphs = 0;
        while let Some(event) = stream.message().await.unwrap() {
            if let Some(proto::process_article_stream_response::Event::Paragraph(p)) = event.event {
                assert!(
                    reply.body.contains(&p.text),
                    "{} not in {}",
                    p.text,
                    reply.body
                );
                assert!(!p.segments.is_empty());
                paragraphs += 1;
            }
        }
        assert_eq!(paragraphs, 3);
        server.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_html_requests_are_refused_like_text() {
        let server = start(&[]).await;
        let mut client = server.client().await;
        let mut unknown = html_input("<p>مرحبا</p>");
        unknown.format = 7;
        let e = client
            .translate(TranslateRequest {
                texts: vec![unknown],
                ..Default::default()
            })
            .await
            .unwrap_err();
        refused_on(&e, "texts[0].format");
        // Over the size limit (5000 chars in tests), markup included.
        let long = format!("<p>{}</p>", "<b>كلمة</b> ".repeat(600));
        let e = client
            .translate(TranslateRequest {
                texts: vec![html_input(&long)],
                ..Default::default()
            })
            .await
            .unwrap_err();
        refused_on(&e, "texts[0].text");
        let e = client
            .process_article(ProcessArticleRequest {
                body: "<p>مرحبا</p>".into(),
                title_from_first_line: true,
                format: proto::TextFormat::Html as i32,
                ..Default::default()
            })
            .await
            .unwrap_err();
        refused_on(&e, "title_from_first_line");
        // Malformed markup is not an error.
        let reply = client
            .translate(TranslateRequest {
                texts: vec![html_input("<p>مرحبا <b><i>مرحبا</b></p></td><!--")],
                ..Default::default()
            })
            .await;
        assert!(reply.is_ok(), "{reply:?}");
        server.stop().await;
    }
}

/// `tarjama translate --format html` prints the document the library makes.
#[test]
fn the_translate_command_takes_html() {
    let s = sentences();
    let input = format!("<p>{} <b>{}</b></p>", s[1], s[2]);
    let out = common::command::translate(&["--compute-type", "f32", "--format", "html"], &input);
    let rt = runtime();
    let translator = fixture_translator();
    let want = rt.block_on(html(&translator, &input));
    translator.shutdown();
    assert_eq!(out.trim_end(), want.text);
}

/// Hostile markup: nesting thousands deep, thousands of end tags that close nothing, a
/// paragraph of nothing but tags around one word. Answered, with the same tree.
#[test]
fn hostile_markup_is_answered_in_shape() {
    let rt = runtime();
    let translator = fixture_translator();
    let word = &sentences()[2];
    let n = 3000;
    for input in [
        format!("<p>{}{word}{}</p>", "<b>".repeat(n), "</b>".repeat(n)),
        format!(
            "<p><i><div>{}{word} {word}{}</div></p>",
            "<span>".repeat(n),
            "</i>".repeat(n)
        ),
        format!("<p>{word}{}</p>", "<img src=x><!--c-->".repeat(n)),
    ] {
        let done = rt.block_on(html(&translator, &input));
        assert_eq!(shape(&done.text), shape(&input));
        assert!(done.output_tokens > 0);
    }
    translator.shutdown();
}
