//! Arabic news as it arrives from scrapers and agencies (text written for these tests in the
//! style of such copy): mixed-language paragraphs, sentences glued by a full stop, headline
//! runs on one line. Each pattern through `Translate` and `ProcessArticle`, with the spans of
//! every segment tiling the client's text.

mod common;

use common::server::{start, translate_request, TestServer};
use proptest::prelude::*;
use tarjama::proto::{ProcessArticleRequest, Segment, Translation};

const AR_1: &str =
    "وأشارت لوكاش إلى أن بوتين وترامب ناقشا مسألة الأمن الإلكتروني على مدى 40 دقيقة في هامبورغ.";
const AR_2: &str = "هل ستنجح المفاوضات؟";
const EN: &str = "The two presidents met in Hamburg on Friday. Talks lasted 40 minutes!";

async fn translate(server: &TestServer, text: &str, language: &str) -> Translation {
    let mut request = translate_request(&[("t", text)], None);
    request.source_language = language.into();
    let mut client = server.client().await;
    let reply = client.translate(request).await.unwrap().into_inner();
    reply.translations.into_iter().next().unwrap()
}

/// The segments' spans cover the client's text in order: each holds its sentence (as
/// normalised), and only whitespace lies between them and at the text's edges.
fn assert_tiles(text: &str, segments: &[Segment]) {
    let chars: Vec<char> = text.chars().collect();
    let gap = |a: usize, b: usize| chars[a..b].iter().all(|c| c.is_whitespace());
    let mut at = 0;
    for s in segments {
        let (start, end) = (s.source_start as usize, s.source_end as usize);
        assert!(
            at <= start && gap(at, start),
            "{at}..{start} in {segments:?}"
        );
        let span: String = chars[start..end].iter().collect();
        let normalised = tarjama::text::normalize(&span, &Default::default()).text;
        assert_eq!(normalised, s.source);
        at = end;
    }
    assert!(gap(at, chars.len()), "text after the last segment");
}

/// What the model makes of `sentence` alone.
async fn alone(server: &TestServer, sentence: &str) -> String {
    translate(server, sentence, "ar").await.text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn english_and_symbol_sentences_pass_through_whatever_the_language() {
    let server = start(&[]).await;
    let text = format!("{AR_1}\n{EN}\n2026 - 3.5% (+0.4)\n{AR_2} Oil rose 3%.");
    for language in ["ar", "auto", ""] {
        let got = translate(&server, &text, language).await;
        assert_tiles(&text, &got.segments);
        let by_source: Vec<(&str, &str, &str)> = got
            .segments
            .iter()
            .map(|s| {
                (
                    s.source.as_str(),
                    s.translation.as_str(),
                    s.detected_language.as_str(),
                )
            })
            .collect();
        let passed = |src: &str, lang: &str| by_source.contains(&(src, src, lang));
        assert!(passed("The two presidents met in Hamburg on Friday.", "en"));
        assert!(passed("Talks lasted 40 minutes!", "en"));
        assert!(passed("2026 - 3.5% (+0.4)", "und"));
        assert!(passed("Oil rose 3%.", "en"));
        // Arabic sentences went to the model, as they would alone.
        for ar in [AR_1, AR_2] {
            let s = got.segments.iter().find(|s| s.source == ar).unwrap();
            assert_eq!(s.detected_language, "ar");
            assert_eq!(s.translation, alone(&server, ar).await);
        }
        let paragraphs: Vec<&str> = got.text.split("\n\n").collect();
        assert_eq!(paragraphs[1], EN);
        assert_eq!(paragraphs[2], "2026 - 3.5% (+0.4)");
        // Only the Arabic sentences cost model tokens.
        let arabic_only = translate(&server, &format!("{AR_1}\n{AR_2}"), "ar").await;
        let usage = |t: &Translation| t.usage.unwrap().input_tokens;
        assert_eq!(usage(&got), usage(&arabic_only), "{language}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glued_sentences_are_translated_one_by_one() {
    let server = start(&[]).await;
    let glued = format!("{AR_2}{}", AR_1);
    let got = translate(&server, &glued, "ar").await;
    assert_tiles(&glued, &got.segments);
    let sources: Vec<&str> = got.segments.iter().map(|s| s.source.as_str()).collect();
    assert_eq!(sources, [AR_2, AR_1]);
    let expected = format!(
        "{} {}",
        alone(&server, AR_2).await,
        alone(&server, AR_1).await
    );
    assert_eq!(got.text, expected);
    // Decimals stay whole.
    let decimal = "سجل البرميل 117,74 دولار و3.03 نقطة";
    assert_eq!(translate(&server, decimal, "ar").await.segments.len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headline_runs_are_separate_inputs_and_kept_in_the_output() {
    let server = start(&[]).await;
    let (h1, h2, h3) = ("منح 152 رخصة جديدة", "مرحبا", "ارتفاع أسعار الذهب");
    let text = format!("{h1}     {h2}\t{h3}");
    let got = translate(&server, &text, "ar").await;
    assert_tiles(&text, &got.segments);
    let sources: Vec<&str> = got.segments.iter().map(|s| s.source.as_str()).collect();
    assert_eq!(sources, [h1, h2, h3]);
    let expected = format!(
        "{}     {}\t{}",
        alone(&server, h1).await,
        alone(&server, h2).await,
        alone(&server, h3).await
    );
    assert_eq!(got.text, expected);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn articles_get_the_same_rules() {
    let server = start(&[]).await;
    let title = "منح 152 رخصة جديدة\tارتفاع أسعار الذهب";
    let body = format!("{AR_2}{AR_1}\n{EN}");
    let mut client = server.client().await;
    let reply = client
        .process_article(ProcessArticleRequest {
            id: "a".into(),
            title: title.into(),
            body: body.clone(),
            source_language: "ar".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_tiles(title, &reply.title_segments);
    assert_tiles(&body, &reply.segments);
    assert_eq!(reply.title_segments.len(), 2);
    assert!(reply.title.contains('\t'), "{:?}", reply.title);
    let paragraphs: Vec<&str> = reply.body.split("\n\n").collect();
    assert_eq!(paragraphs.len(), 2);
    assert_eq!(paragraphs[1], EN);
    let sources: Vec<&str> = reply.segments.iter().map(|s| s.source.as_str()).collect();
    assert_eq!(
        sources,
        [
            AR_2,
            AR_1,
            "The two presidents met in Hamburg on Friday.",
            "Talks lasted 40 minutes!"
        ]
    );
    let expected = format!(
        "{} {}",
        alone(&server, AR_2).await,
        alone(&server, AR_1).await
    );
    assert_eq!(paragraphs[0], expected);
    server.stop().await;
}

/// Sentences with no Arabic letter: Latin words, digits (Western and Arabic-Indic), symbols.
fn non_arabic_sentence() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        "[A-Za-z]{1,9}",
        "[0-9]{1,4}([.,][0-9]{1,2})?",
        "[٠-٩]{1,3}",
        "[%+()/#@$€-]{1,2}",
    ];
    (prop::collection::vec(word, 1..8), "[.!?]?")
        .prop_map(|(words, end)| format!("{}{end}", words.join(" ")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A sentence without Arabic letters comes back unchanged, whatever the language asked.
    #[test]
    fn a_sentence_without_arabic_letters_comes_back_unchanged(
        sentence in non_arabic_sentence(),
        language in prop_oneof![Just("ar"), Just("auto")],
    ) {
        let got = translate_on_shared_server(&sentence, language);
        // Normalisation maps Arabic-Indic digits to Western ones (what the model reads);
        // the segment's source is that normalised text, and it comes back as it is.
        for s in &got.segments {
            prop_assert_eq!(&s.translation, &s.source);
            prop_assert_eq!(s.score, 0.0);
        }
        if !sentence.chars().any(|c| ('٠'..='٩').contains(&c)) {
            prop_assert_eq!(got.text.as_str(), sentence.trim());
        }
    }
}

/// `translate` from a property case (a plain test thread) on the shared server.
fn translate_on_shared_server(text: &str, language: &str) -> Translation {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async { translate(shared_server().await, text, language).await })
}

/// One server for all the property cases (each case has its own runtime, the server its own).
async fn shared_server() -> &'static TestServer {
    static SERVER: std::sync::OnceLock<TestServer> = std::sync::OnceLock::new();
    if let Some(server) = SERVER.get() {
        return server;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let _ = tx.send(start(&[]).await);
            std::future::pending::<()>().await;
        });
    });
    let server = rx.recv().unwrap();
    SERVER.get_or_init(|| server)
}

/// The words of `s`, without `span`'s.
fn without(s: &str, span: &str) -> String {
    s.replace(span, " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_spans_come_out_byte_identical_once() {
    let server = start(&[]).await;
    let url = "https://example.com/news?id=7";
    let text = format!("قال ترامب في {url} إن G20 ناقشت الأمن السيبراني مع @AlArabiya_Eng.");
    let got = translate(&server, &text, "ar").await;
    assert_tiles(&text, &got.segments);
    let s = &got.segments[0];
    assert_eq!(
        s.source, text,
        "the segment's source is the client's sentence"
    );
    for span in [url, "G20", "@AlArabiya_Eng"] {
        assert_eq!(
            s.translation.matches(span).count(),
            1,
            "{span} in {:?}",
            s.translation
        );
        assert_eq!(got.text.matches(span).count(), 1);
    }
    // The model saw the sentence without them: the rest is what it makes of that alone.
    let masked = "قال ترامب في إن ناقشت الأمن السيبراني مع .";
    let rest = ["G20", "@AlArabiya_Eng", url]
        .iter()
        .fold(s.translation.clone(), |t, span| without(&t, span));
    assert_eq!(rest, without(&alone(&server, masked).await, "\u{0}"));
    // Articles too.
    let mut client = server.client().await;
    let reply = client
        .process_article(ProcessArticleRequest {
            id: "a".into(),
            title: format!("قمة G20 في {url}"),
            body: format!("{AR_2}\nراسلونا على news@example.org اليوم"),
            source_language: "ar".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.title.matches("G20").count(), 1);
    assert_eq!(reply.title.matches(url).count(), 1);
    assert_eq!(reply.body.matches("news@example.org").count(), 1);
    server.stop().await;
}

/// URLs, e-mail addresses and handles as scraped copy has them.
fn protected_token() -> impl Strategy<Value = String> {
    prop_oneof![
        "https://[a-z]{3,8}\\.(com|org|net)/[a-z0-9]{0,6}",
        "www\\.[a-z]{3,8}\\.com",
        "[a-z]{3,6}\\.[a-z]{2,5}@[a-z]{3,6}\\.org",
        "@[A-Za-z_]{3,10}",
        "#[A-Za-z]{3,10}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// A URL, e-mail address or handle inserted between any two words of a sentence comes
    /// out of the translation exactly once, byte for byte.
    #[test]
    fn an_inserted_url_email_or_handle_comes_out_exactly_once(
        token in protected_token(),
        at in 0usize..32,
    ) {
        let mut words: Vec<&str> = AR_1.split(' ').collect();
        let at = at % (words.len() + 1);
        words.insert(at, &token);
        let text = words.join(" ");
        let got = translate_on_shared_server(&text, "ar");
        prop_assert_eq!(got.text.matches(token.as_str()).count(), 1, "{:?}", got.text);
    }
}
