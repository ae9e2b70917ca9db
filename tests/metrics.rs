//! Prometheus `/metrics` of a real server. Its own test binary: the recorder is global to
//! the process, so this must be the only server here.

use tarjama::proto::{ProcessArticleStreamRequest, TextInput, TranslateRequest};

mod common;

use common::server::start;

const SENTENCE: &str = "قالت روسيا يوم الاثنين إن وحدة مشتركة للأمن السيبراني ستستغرق وقتاً.";

use common::server::{sample, scrape};

fn translate_request(text: &str) -> TranslateRequest {
    TranslateRequest {
        texts: vec![TextInput {
            id: "1".into(),
            text: text.into(),
            ..Default::default()
        }],
        source_language: "ar".into(),
        target_language: "en".into(),
        options: None,
    }
}

#[tokio::test]
async fn metrics_count_requests_batches_and_tokens() {
    let server = start(&["--metrics-addr", "127.0.0.1:0"]).await;
    let addr = server.metrics_addr.unwrap();
    let before = scrape(addr).await;
    assert!(
        sample(&before, "tarjama_model_load_seconds", &[]).unwrap() > 0.0,
        "{before}"
    );
    assert_eq!(
        sample(
            &before,
            "tarjama_model_info",
            &[("task", "translation"), ("family", "marian")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&before, "tarjama_requests_total", &[("rpc", "Translate")]),
        None
    );

    let mut client = server.client().await;
    for _ in 0..3 {
        client.translate(translate_request(SENTENCE)).await.unwrap();
    }
    let refused = client.translate(translate_request("")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let mut events = client
        .process_article_stream(ProcessArticleStreamRequest {
            id: "a".into(),
            title: "عنوان".into(),
            body: format!("{SENTENCE}\n\n{SENTENCE}"),
            source_language: "ar".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    while events.message().await.unwrap().is_some() {}

    let after = scrape(addr).await;
    let requests = |rpc, code| {
        sample(
            &after,
            "tarjama_requests_total",
            &[("rpc", rpc), ("code", code)],
        )
    };
    assert_eq!(requests("Translate", "OK"), Some(3.0), "{after}");
    assert_eq!(requests("Translate", "INVALID_ARGUMENT"), Some(1.0));
    // The stream's line is written when its producer ends, just after the last message.
    for _ in 0..100 {
        if sample(
            &scrape(addr).await,
            "tarjama_requests_total",
            &[("rpc", "ProcessArticleStream"), ("code", "OK")],
        )
        .is_some()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let after = scrape(addr).await;
    assert_eq!(
        sample(
            &after,
            "tarjama_requests_total",
            &[("rpc", "ProcessArticleStream"), ("code", "OK")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &after,
            "tarjama_request_duration_seconds_count",
            &[("rpc", "Translate")]
        ),
        Some(4.0)
    );
    let translate = [("task", "translate")];
    let generated = sample(&after, "tarjama_generated_tokens_total", &translate).unwrap();
    let requested = sample(&after, "tarjama_request_output_tokens_total", &[]).unwrap();
    assert!(
        generated > 0.0 && generated >= requested,
        "{generated} vs {requested}"
    );
    let batches = sample(&after, "tarjama_batch_size_count", &translate).unwrap();
    assert!(batches >= 4.0, "{batches} batches");
    // 3 single sentences + title + two body sentences, each computed once.
    assert_eq!(
        sample(&after, "tarjama_sentences_computed_total", &translate),
        Some(6.0)
    );
    assert!(sample(&after, "tarjama_batch_tokens_sum", &translate).unwrap() > 0.0);
    assert!(sample(&after, "tarjama_queue_wait_seconds_count", &translate).unwrap() >= 6.0);
    assert_eq!(
        sample(&after, "tarjama_queued_tokens", &translate),
        Some(0.0)
    );
    assert!(
        after.contains("# TYPE tarjama_request_duration_seconds histogram"),
        "{after}"
    );
    assert!(after.contains("tarjama_request_duration_seconds_bucket{rpc=\"Translate\",le=\"0.5\"}"));
    server.stop().await;
}
