//! Summaries through gRPC: abstractive parity with the BART fixture's reference summaries,
//! extractive summaries, method selection, and article summaries.

mod common;

use common::server::start;
use tarjama::proto::{
    ProcessArticleRequest, SummarizeRequest, SummaryMethod, SummaryOptions, TranslationOptions,
};
use tonic::Code;

const BART: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/tiny-bart-summarizer"
);
const SEED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/seed-article-ar.txt"
);

fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(format!("{BART}/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn method(m: SummaryMethod) -> Option<SummaryOptions> {
    Some(SummaryOptions {
        method: m as i32,
        ..Default::default()
    })
}

const NEWS: &str = "Russia said on Monday that a joint cyber security unit with the United States would take time. \
The two leaders discussed cyber security for forty minutes in Hamburg. \
Officials in Moscow said talks would continue at a lower level. \
Meanwhile, the weather in Hamburg was sunny and warm. \
Analysts said the cyber security unit was unlikely before next year.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abstractive_summaries_equal_the_reference() {
    // The fixture's config.json carries the legacy `force_bos_token_to_be_generated` key, as
    // the real distilbart-cnn-12-6 does: the reference summaries hold only if it is honoured.
    let server = start(&["--summarization-model", BART]).await;
    let mut client = server.client().await;
    for (i, case) in reference()["summaries"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let reply = client
            .summarize(SummarizeRequest {
                text: case["text"].as_str().unwrap().into(),
                language: "en".into(),
                options: method(SummaryMethod::Abstractive),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.text, case["summary"].as_str().unwrap(), "summary {i}");
        assert_eq!(reply.method, SummaryMethod::Abstractive as i32);
        assert_eq!(reply.model, BART);
        assert!(!reply.input_truncated);
    }
    // Over the model's 128-token window: cut at a sentence boundary, and said so.
    let long = client
        .summarize(SummarizeRequest {
            text: NEWS.repeat(6),
            language: "en".into(),
            options: method(SummaryMethod::Abstractive),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(long.input_truncated);
    let usage = long.usage.unwrap();
    assert!(
        usage.input_tokens <= 128 && usage.input_tokens > 64,
        "{usage:?}"
    );
    // AUTO picks the loaded model.
    let auto = client
        .summarize(SummarizeRequest {
            text: NEWS.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(auto.method, SummaryMethod::Abstractive as i32);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extractive_summaries_and_method_selection_without_a_model() {
    let server = start(&[]).await;
    let mut client = server.client().await;
    let two = client
        .summarize(SummarizeRequest {
            text: NEWS.into(),
            language: "en".into(),
            options: Some(SummaryOptions {
                method: SummaryMethod::Extractive as i32,
                max_sentences: 2,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(two.method, SummaryMethod::Extractive as i32);
    assert_eq!(two.model, "extractive");
    let sentences = tarjama::summarize::split_sentences(&two.text);
    assert_eq!(sentences.len(), 2);
    let positions: Vec<usize> = sentences
        .iter()
        .map(|s| NEWS.find(s.as_str()).unwrap())
        .collect();
    assert!(positions[0] < positions[1], "article order");
    // AUTO without a summarization model falls back to extractive.
    let auto = client
        .summarize(SummarizeRequest {
            text: NEWS.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(auto.method, SummaryMethod::Extractive as i32);
    // ABSTRACTIVE without one is a precondition failure.
    let err = client
        .summarize(SummarizeRequest {
            text: NEWS.into(),
            options: method(SummaryMethod::Abstractive),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("--summarization-model"));
    // Empty text.
    let err = client
        .summarize(SummarizeRequest {
            text: " ".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // Arabic text is translated first.
    let ar = client
        .summarize(SummarizeRequest {
            text: "قالت روسيا إن التعاون يستغرق وقتاً. وناقش الرئيسان الأمن الإلكتروني.".into(),
            language: "ar".into(),
            translation_options: Some(TranslationOptions {
                beam_size: Some(1),
                max_output_tokens: Some(8),
                length_penalty: 0.0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!ar.translation.is_empty());
    assert!(!ar.text.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_article_returns_a_summary_by_each_method() {
    // The fixture's config.json carries the legacy `force_bos_token_to_be_generated` key, as
    // the real distilbart-cnn-12-6 does: the reference summaries hold only if it is honoured.
    let server = start(&["--summarization-model", BART]).await;
    let mut client = server.client().await;
    for m in [SummaryMethod::Extractive, SummaryMethod::Abstractive] {
        let reply = client
            .process_article(ProcessArticleRequest {
                id: "seed".into(),
                body: std::fs::read_to_string(SEED).unwrap(),
                title_from_first_line: true,
                options: Some(TranslationOptions {
                    beam_size: Some(1),
                    max_output_tokens: Some(12),
                    length_penalty: 0.0,
                }),
                summary_options: method(m),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let summary = reply.summary.expect("a summary");
        assert_eq!(summary.method, m as i32);
        assert!(!summary.text.is_empty());
    }
    let request = ProcessArticleRequest {
        id: "seed".into(),
        body: "قالت روسيا يوم الاثنين إن الوحدة ستستغرق وقتاً.".into(),
        summary_options: method(SummaryMethod::None),
        ..Default::default()
    };
    let reply = client
        .process_article(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(
        reply.summary.is_none() && !reply.body.is_empty(),
        "{reply:?}"
    );
    // The stream's final event has no summary either.
    let mut events = client
        .process_article_stream(tarjama::proto::ProcessArticleStreamRequest::from(request))
        .await
        .unwrap()
        .into_inner();
    let mut done = None;
    while let Some(event) = events.message().await.unwrap() {
        if let Some(tarjama::proto::process_article_stream_response::Event::Done(d)) = event.event {
            done = Some(d);
        }
    }
    assert!(done.expect("a final event").summary.is_none());
    // Summarize always summarises: NONE is a bad argument there.
    let err = client
        .summarize(SummarizeRequest {
            text: NEWS.into(),
            language: "en".into(),
            options: method(SummaryMethod::None),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("articles only"), "{}", err.message());
    server.stop().await;
}
