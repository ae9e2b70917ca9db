//! The gRPC service end to end: a real server on 127.0.0.1:0 with the tiny Marian fixture,
//! talked to with tonic clients.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use tarjama::model::generate;
use tarjama::model::{Device, Seq2SeqModel};
use tarjama::proto::process_article_stream_response::Event;
use tarjama::proto::{
    ProcessArticleRequest, ProcessArticleStreamRequest, TranslateRequest, TranslateResponse,
    TranslateStreamRequest, TranslationOptions,
};
use tarjama::text::{find_protected, Protected};
use tarjama::tokenizer::Tokenizer;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

mod common;

use common::server::{
    assert_bad_field, health, serve_args, start, start_with, wait_serving, MARIAN,
};

use common::server::translate_request as request;

fn greedy16() -> Option<TranslationOptions> {
    Some(TranslationOptions {
        beam_size: Some(1),
        max_output_tokens: Some(16),
        length_penalty: 0.0,
    })
}

fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(Path::new(MARIAN).join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn reference_texts() -> Vec<String> {
    reference()["greedy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["text"].as_str().unwrap().to_string())
        .collect()
}

/// What the engine alone makes of one sentence (greedy, 16 new tokens).
fn engine_translation(sentence: &str) -> String {
    let model = Seq2SeqModel::load(Path::new(MARIAN), &Device::Cpu).unwrap();
    let tokenizer = Tokenizer::from_dir(Path::new(MARIAN)).unwrap();
    let mut params = model.generation_defaults();
    params.num_beams = 1;
    params.max_new_tokens = Some(16);
    let ids = tokenizer.encode(sentence).unwrap();
    let out = generate(&model, &[ids], &params, &|_| false).unwrap();
    tokenizer
        .decode(&out[0].as_ref().unwrap().ids, true)
        .unwrap()
}

/// What the service answers for `sentence`: the engine's translation of it without its
/// protected spans (`G20`), each span put back once (where, the alignment decides: see
/// `tests/alignment.rs`); the words around them are compared.
fn engine_translation_protected(sentence: &str) -> String {
    let p = Protected::new(sentence, &find_protected(sentence));
    let plain = engine_translation(&p.masked);
    if p.spans.is_empty() {
        return plain;
    }
    // The served text has each span once; take them out of it and compare the rest.
    let spans: Vec<&str> = p.spans.iter().map(|s| s.text.as_str()).collect();
    format!(
        "{} + {}",
        plain.split_whitespace().collect::<Vec<_>>().join(" "),
        spans.join(" ")
    )
}

/// `served` in the form [`engine_translation_protected`] gives.
fn without_spans(served: &str, source: &str) -> String {
    let p = Protected::new(source, &find_protected(source));
    if p.spans.is_empty() {
        return served.to_string();
    }
    let mut rest = served.to_string();
    for span in &p.spans {
        assert_eq!(
            rest.matches(span.text.as_str()).count(),
            1,
            "{span:?} in {served:?}"
        );
        rest = rest.replacen(span.text.as_str(), " ", 1);
    }
    let spans: Vec<&str> = p.spans.iter().map(|s| s.text.as_str()).collect();
    format!(
        "{} + {}",
        rest.split_whitespace().collect::<Vec<_>>().join(" "),
        spans.join(" ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn translate_matches_the_engine_and_the_reference() {
    let server = start(&[]).await;
    let mut client = server.client().await;
    let reference = reference();
    let texts = reference_texts();
    for (i, text) in texts.iter().enumerate() {
        let reply = client
            .translate(request(&[("t", text)], greedy16()))
            .await
            .unwrap()
            .into_inner();
        let t = &reply.translations[0];
        assert_eq!(t.id, "t");
        assert_eq!(t.detected_language, "ar");
        assert!(!t.segments.is_empty());
        for s in &t.segments {
            assert_eq!(
                without_spans(&s.translation, &s.source),
                engine_translation_protected(&s.source),
                "segment {:?}",
                s.source
            );
        }
        let protected = !find_protected(text).is_empty();
        if t.segments.len() == 1 && t.segments[0].source == *text && !protected {
            // One sentence that normalisation left alone, with no span taken out of the
            // model's input: exactly what transformers produced.
            assert_eq!(
                t.text,
                reference["greedy"][i]["translation"].as_str().unwrap()
            );
        }
        let usage = t.usage.as_ref().unwrap();
        assert!(usage.input_tokens > 0 && usage.output_tokens > 0);
        assert_eq!(t.model, MARIAN);
        assert_eq!(t.model_revision, "local");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_translate_equals_single_calls() {
    let server = start(&[]).await;
    let mut client = server.client().await;
    let texts = reference_texts();
    let ids: Vec<String> = (0..texts.len()).map(|i| format!("doc-{i}")).collect();
    let pairs: Vec<(&str, &str)> = ids
        .iter()
        .map(String::as_str)
        .zip(texts.iter().map(String::as_str))
        .collect();
    let batch = client
        .translate(request(&pairs, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.translations.len(), texts.len());
    for (i, (id, text)) in pairs.iter().enumerate() {
        let single = client
            .translate(request(&[(id, text)], None))
            .await
            .unwrap()
            .into_inner();
        let (b, s) = (&batch.translations[i], &single.translations[0]);
        assert_eq!(b.id, *id);
        assert_eq!(b.text, s.text);
        assert_eq!(b.segments.len(), s.segments.len());
        for (x, y) in b.segments.iter().zip(&s.segments) {
            assert_eq!(x.translation, y.translation);
            assert!((x.score - y.score).abs() < 1e-4);
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_answers_every_id_exactly_once() {
    let server = start(&[]).await;
    let mut client = server.client().await;
    let texts = reference_texts();
    let mut requests = Vec::new();
    for round in 0..3 {
        let pairs: Vec<(String, String)> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("r{round}-{i}"), t.clone()))
            .collect();
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        requests.push(request(&refs, greedy16()));
    }
    let expected: usize = requests.iter().map(|r| r.texts.len()).sum();
    let mut stream = client
        .translate_stream(tokio_stream::iter(
            requests.into_iter().map(TranslateStreamRequest::from),
        ))
        .await
        .unwrap()
        .into_inner();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut by_id: HashMap<String, String> = HashMap::new();
    while let Some(reply) = stream.message().await.unwrap() {
        let t = reply.translation.as_ref().unwrap();
        *seen.entry(t.id.clone()).or_default() += 1;
        by_id.insert(t.id.clone(), t.text.clone());
    }
    assert_eq!(seen.len(), expected);
    assert!(seen.values().all(|&n| n == 1));
    // Same text, same answer, whichever round it came in.
    for i in 0..texts.len() {
        assert_eq!(by_id[&format!("r0-{i}")], by_id[&format!("r2-{i}")]);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_goes_from_not_serving_to_serving_and_back() {
    let (open, gate) = std::sync::mpsc::channel();
    let server = start_with(serve_args(&[]), Some(gate)).await;
    assert_eq!(health(&server).await, ServingStatus::NotServing);
    let mut client = server.client().await;
    let err = client
        .translate(request(&[("a", "مرحبا")], None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    open.send(()).unwrap();
    wait_serving(&server).await;
    client
        .translate(request(&[("a", "مرحبا")], None))
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_models_reports_the_fixture() {
    let server = start(&[]).await;
    let models = common::server::list_models(&server).await;
    assert_eq!(models.len(), 1);
    let m = &models[0];
    assert_eq!(m.id, MARIAN);
    assert_eq!(m.revision, "local");
    assert_eq!(m.family, "marian");
    assert_eq!(m.task, "translation");
    assert_eq!(
        (m.source_language.as_str(), m.target_language.as_str()),
        ("ar", "en")
    );
    assert_eq!(m.max_input_tokens, 128);
    assert_eq!(m.max_output_tokens, 63);
    assert_eq!(m.default_beam_size, 4);
    assert_eq!(m.max_beam_size, 16);
    assert_eq!(m.compute_type, "f32");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_models_reports_int8() {
    let server = start(&["--compute-type", "int8"]).await;
    let models = common::server::list_models(&server).await;
    assert_eq!(models[0].compute_type, "int8");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_invalid_argument_with_the_field() {
    let server = start(&[]).await;
    let mut client = server.client().await;
    let call = |r: TranslateRequest| {
        let mut c = client.clone();
        async move { c.translate(r).await.unwrap_err() }
    };
    let e = call(request(&[("a", "  ")], None)).await;
    assert_bad_field(&e, "texts[0].text", "empty");
    let e = call(request(&[], None)).await;
    assert_bad_field(&e, "texts", "at least one");
    let many: Vec<(&str, &str)> = (0..9).map(|_| ("", "مرحبا")).collect();
    let e = call(request(&many, None)).await;
    assert_bad_field(&e, "texts", "at most 8");
    let long = "كلمة ".repeat(1001);
    let e = call(request(&[("a", &long)], None)).await;
    assert_bad_field(&e, "texts[0].text", "limit is 5000 characters");
    for beams in [0, 17] {
        let options = Some(TranslationOptions {
            beam_size: Some(beams),
            ..Default::default()
        });
        let e = call(request(&[("a", "مرحبا")], options)).await;
        assert_bad_field(&e, "options.beam_size", "out of range");
    }
    let mut r = request(&[("a", "مرحبا")], None);
    r.source_language = "fr".into();
    let e = call(r).await;
    assert_bad_field(&e, "source_language", "unknown language pair");
    let mut r = request(&[("a", "مرحبا")], None);
    r.target_language = "de".into();
    let e = call(r).await;
    assert_bad_field(&e, "target_language", "unknown language pair");
    let e = call(request(&[("x", "مرحبا"), ("x", "مرحبا")], None)).await;
    assert_bad_field(&e, "texts[1].id", "used twice");
    // The server still answers good requests.
    client
        .translate(request(&[("a", "مرحبا")], None))
        .await
        .unwrap();
    server.stop().await;
}

/// The wire form of TranslateRequest with `bytes` where the contract has `string`, to send
/// what a broken client might: invalid UTF-8.
#[derive(Clone, PartialEq, prost::Message)]
struct RawTextInput {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(bytes = "vec", tag = "2")]
    text: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RawTranslateRequest {
    #[prost(message, repeated, tag = "1")]
    texts: Vec<RawTextInput>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_is_invalid_argument() {
    let server = start(&[]).await;
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let body = RawTranslateRequest {
        texts: vec![RawTextInput {
            id: "bad".into(),
            text: vec![0xd8, 0xb1, 0xff, 0xfe],
        }],
    };
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/tarjama.v1.TranslationService/Translate",
    );
    let codec = tonic_prost::ProstCodec::<RawTranslateRequest, TranslateResponse>::default();
    let err = grpc
        .unary(tonic::Request::new(body), path, codec)
        .await
        .unwrap_err();
    assert_bad_field(&err, "texts.text", "UTF-8");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_deadline_is_deadline_exceeded() {
    let server = start(&[]).await;
    let mut client = server.client().await;
    let text = reference_texts().join("\n");
    let texts: Vec<(String, String)> = (0..8).map(|i| (i.to_string(), text.clone())).collect();
    let refs: Vec<(&str, &str)> = texts
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let mut r = tonic::Request::new(request(
        &refs,
        Some(TranslationOptions {
            beam_size: Some(16),
            max_output_tokens: Some(60),
            length_penalty: 0.0,
        }),
    ));
    r.set_timeout(Duration::from_millis(300));
    let err = client.translate(r).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    // The server is not disturbed.
    client
        .translate(request(&[("a", "مرحبا")], greedy16()))
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn english_text_passes_through_with_auto() {
    let server = start(&[]).await;
    let mut client = server.client().await;
    let mut r = request(
        &[(
            "en",
            "Russia and the United States discussed cyber security.",
        )],
        None,
    );
    r.source_language = "auto".into();
    let reply = client.translate(r).await.unwrap().into_inner();
    let t = &reply.translations[0];
    assert_eq!(t.detected_language, "en");
    assert_eq!(
        t.text,
        "Russia and the United States discussed cyber security."
    );
    server.stop().await;
}

const SEED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/seed-article-ar.txt"
);

fn seed_article() -> ProcessArticleRequest {
    ProcessArticleRequest {
        id: "seed".into(),
        body: std::fs::read_to_string(SEED).unwrap(),
        source_language: "ar".into(),
        options: greedy16(),
        title_from_first_line: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_article_keeps_the_paragraphs_of_the_seed_article() {
    let server = start(&[]).await;
    let mut client = server.client().await;
    let request = seed_article();
    let source_paragraphs = request
        .body
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
        - 1;
    let reply = client
        .process_article(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.id, "seed");
    assert!(!reply.title.is_empty());
    assert_eq!(reply.title_segments.len(), 1);
    assert_eq!(reply.body.split("\n\n").count(), source_paragraphs);
    // No summarization model here: AUTO gives an extractive summary.
    let summary = reply.summary.expect("a summary");
    assert_eq!(
        summary.method,
        tarjama::proto::SummaryMethod::Extractive as i32
    );
    assert!(!summary.text.is_empty());
    assert_eq!(reply.detected_language, "ar");
    // Body spans point into the request's body field, after the title line.
    let body: Vec<char> = request.body.chars().collect();
    for s in &reply.segments {
        let original: String = body[s.source_start as usize..s.source_end as usize]
            .iter()
            .collect();
        let normalized = tarjama::text::normalize(&original, &Default::default()).text;
        assert_eq!(
            normalized, s.source,
            "span {}..{}",
            s.source_start, s.source_end
        );
    }
    let paragraphs: std::collections::BTreeSet<u32> =
        reply.segments.iter().map(|s| s.paragraph).collect();
    assert_eq!(paragraphs.len(), source_paragraphs);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn article_stream_events_are_in_order_and_equal_the_unary_result() {
    let server = start(&[]).await;
    let mut client = server.client().await;
    let unary = client
        .process_article(seed_article())
        .await
        .unwrap()
        .into_inner();
    let mut stream = client
        .process_article_stream(ProcessArticleStreamRequest::from(seed_article()))
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await.unwrap() {
        events.push(event.event.unwrap());
    }
    let Some(Event::Title(title)) = events.first() else {
        panic!("title first: {events:?}")
    };
    assert_eq!(title.text, unary.title);
    let Some(Event::Done(done)) = events.last() else {
        panic!("done last")
    };
    let paragraphs: Vec<_> = events[1..events.len() - 1]
        .iter()
        .map(|e| match e {
            Event::Paragraph(p) => p.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    for (i, p) in paragraphs.iter().enumerate() {
        assert_eq!(p.index as usize, i);
    }
    assert_eq!(done.paragraphs as usize, paragraphs.len());
    let body: Vec<&str> = paragraphs.iter().map(|p| p.text.as_str()).collect();
    assert_eq!(body.join("\n\n"), unary.body);
    let segments: Vec<_> = paragraphs.iter().flat_map(|p| p.segments.clone()).collect();
    assert_eq!(segments, unary.segments);
    assert_eq!(done.usage, unary.usage);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_articles_are_refused() {
    let server = start(&[]).await;
    let mut client = server.client().await;
    let empty = ProcessArticleRequest {
        id: "e".into(),
        ..Default::default()
    };
    let e = client.process_article(empty).await.unwrap_err();
    assert_bad_field(&e, "body", "empty");
    let long = ProcessArticleRequest {
        body: "كلمة ".repeat(1001),
        ..Default::default()
    };
    let e = client.process_article(long.clone()).await.unwrap_err();
    assert_bad_field(&e, "body", "limit is 5000 characters");
    let e = client
        .process_article_stream(ProcessArticleStreamRequest::from(long))
        .await
        .unwrap_err();
    assert_bad_field(&e, "body", "limit is 5000 characters");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_equal_one_at_a_time_calls() {
    let server = start(&[]).await;
    let client = server.client().await;
    let texts = reference_texts();
    let mut sequential = Vec::new();
    for text in &texts {
        let reply = client
            .clone()
            .translate(request(&[("s", text)], None))
            .await
            .unwrap();
        sequential.push(reply.into_inner().translations[0].text.clone());
    }
    let mut calls = Vec::new();
    for round in 0..4 {
        for (i, text) in texts.iter().enumerate() {
            let mut c = client.clone();
            let r = request(&[("c", text)], None);
            calls.push(tokio::spawn(async move {
                (
                    round,
                    i,
                    c.translate(r).await.unwrap().into_inner().translations[0]
                        .text
                        .clone(),
                )
            }));
        }
    }
    for call in calls {
        let (round, i, text) = call.await.unwrap();
        assert_eq!(text, sequential[i], "round {round}, text {i}");
    }
    server.stop().await;
}
