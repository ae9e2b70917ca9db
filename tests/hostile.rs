//! The service against hostile clients: every input bounded in memory and CPU, failures kept
//! to their text, refusals precise and final, streams and connections bounded, shutdown
//! bounded. Each test reproduces one way a single caller could hurt the others.
//!
//! One server at a time (the tests hold [`SERIAL`]): several read process-wide figures (peak
//! memory, the metrics recorder) as differences.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tarjama::config::ServeArgs;
use tarjama::proto::{
    ProcessArticleRequest, SummarizeRequest, SummaryMethod, SummaryOptions, TranslateRequest,
    TranslationOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Client =
    tarjama::proto::translation_service_client::TranslationServiceClient<tonic::transport::Channel>;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_types::StatusExt;

mod common;

use common::server::{serve_args, start_with, wait_serving, TestServer};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SENTENCE: &str = "قالت روسيا يوم الاثنين إن وحدة مشتركة للأمن السيبراني ستستغرق وقتاً.";

async fn server_with(change: impl FnOnce(&mut ServeArgs)) -> TestServer {
    let mut args = serve_args(&["--metrics-addr", "127.0.0.1:0"]);
    change(&mut args);
    let server = start_with(args, None).await;
    wait_serving(&server).await;
    server
}

fn greedy(max_tokens: u32) -> Option<TranslationOptions> {
    Some(TranslationOptions {
        beam_size: Some(1),
        max_output_tokens: Some(max_tokens),
        length_penalty: 0.0,
    })
}

use common::server::translate_request as translate;

/// Resident memory of this process now and at its peak since the last reset, in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Makes the peak resident memory start again from the current one (Linux `clear_refs`).
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

use common::server::{sample, scrape};

async fn computed_sentences(server: &TestServer) -> f64 {
    let text = scrape(server.metrics_addr.unwrap()).await;
    sample(
        &text,
        "tarjama_sentences_computed_total",
        &[("task", "translate")],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extractive_summary_of_many_short_lines_stays_small() {
    let _serial = SERIAL.lock().await;
    let server = server_with(|a| a.limits.max_input_chars = 100_000).await;
    let mut client = server.client().await;
    reset_peak_rss();
    let (before, _) = rss_kib();
    // Every line is a sentence: 33 000 of them (99 kB, under the size limit).
    let reply = client
        .summarize(SummarizeRequest {
            text: "ab\n".repeat(33_000),
            language: "en".into(),
            options: Some(SummaryOptions {
                method: SummaryMethod::Extractive as i32,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (_, peak) = rss_kib();
    assert!(reply.text.starts_with("ab"), "{}", reply.text);
    let grown_mib = peak.saturating_sub(before) / 1024;
    assert!(grown_mib < 200, "the summary took {grown_mib} MiB");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_one_grapheme_over_the_model_budget_is_split_and_harms_nobody() {
    let _serial = SERIAL.lock().await;
    let server = server_with(|_| {}).await;
    let mut client = server.client().await;
    let lone = client
        .translate(translate(&[("a", SENTENCE)], greedy(8)))
        .await
        .unwrap()
        .into_inner();
    // One letter carrying 600 combining marks: one grapheme, ~600 tokens, over the
    // fixture's 128 positions.
    let marks = format!("ا{}", "\u{64B}".repeat(600));
    let reply = client
        .translate(translate(&[("a", SENTENCE), ("b", &marks)], greedy(8)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.translations[0].text, lone.translations[0].text);
    let split = &reply.translations[1].segments;
    assert!(split.len() >= 5, "{} segments", split.len());
    assert!(split.iter().all(|s| s.split));
    assert_eq!(split.last().unwrap().source_end, 601);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_over_the_request_budget_is_refused_for_good_before_any_work() {
    let _serial = SERIAL.lock().await;
    let server = server_with(|a| a.engine.max_request_tokens = 200).await;
    let mut client = server.client().await;
    let before = computed_sentences(&server).await;
    let long = [SENTENCE; 12].join(" ");
    let err = refused(&mut client, translate(&[("a", &long)], greedy(4))).await;
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("at most 200"), "{}", err.message());
    assert!(
        err.get_details_retry_info().is_none(),
        "must not invite retries"
    );
    let violations = err.get_details_bad_request().unwrap().field_violations;
    assert_eq!(violations[0].field, "texts");
    // The same text in parts a call each fits; beams count.
    let part = [SENTENCE; 3].join(" ");
    client
        .translate(translate(&[("a", &part)], greedy(4)))
        .await
        .unwrap();
    let beams = Some(TranslationOptions {
        beam_size: Some(8),
        max_output_tokens: Some(4),
        length_penalty: 0.0,
    });
    let err = refused(&mut client, translate(&[("a", &part)], beams)).await;
    assert_eq!(err.code(), Code::InvalidArgument);
    // The texts of one call count together.
    let many: Vec<(&str, &str)> = ["1", "2", "3", "4", "5"]
        .iter()
        .map(|id| (*id, part.as_str()))
        .collect();
    let err = refused(&mut client, translate(&many, greedy(4))).await;
    assert_eq!(err.code(), Code::InvalidArgument);
    let computed = computed_sentences(&server).await - before;
    assert_eq!(computed, 3.0, "only the admitted call ran");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_that_could_exceed_the_limit_is_refused_before_any_work() {
    let _serial = SERIAL.lock().await;
    let server = server_with(|a| a.limits.max_response_bytes = 20_000).await;
    let mut client = server.client().await;
    let before = computed_sentences(&server).await;
    let text = [SENTENCE; 20].join(" ");
    let err = refused(&mut client, translate(&[("a", &text)], None)).await;
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("max_output_tokens"),
        "{}",
        err.message()
    );
    // Fewer generated tokens allowed: the bound falls under the limit.
    client
        .translate(translate(&[("a", &text)], greedy(2)))
        .await
        .unwrap();
    assert_eq!(computed_sentences(&server).await - before, 20.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_never_reads_holds_a_bounded_amount_of_work() {
    let _serial = SERIAL.lock().await;
    let server = server_with(|_| {}).await;
    // A tiny receive window: the transport stops taking responses almost at once, as it
    // would for any client that stops reading.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .initial_stream_window_size(Some(2048))
        .initial_connection_window_size(Some(2048))
        .connect()
        .await
        .unwrap();
    let mut client =
        tarjama::proto::translation_service_client::TranslationServiceClient::new(channel);
    let before = computed_sentences(&server).await;
    let (tx, rx) = tokio::sync::mpsc::channel(400);
    for i in 0..300 {
        let id = i.to_string();
        tx.send(translate(&[(id.as_str(), SENTENCE)], greedy(16)))
            .await
            .unwrap();
    }
    let responses = client
        .translate_stream(tokio_stream::wrappers::ReceiverStream::new(rx).map(Into::into))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let computed = computed_sentences(&server).await - before;
    // In flight (32), buffered for the transport (4), and what the window let through.
    assert!(
        computed <= 60.0,
        "{computed} texts computed for a client that reads nothing"
    );
    drop(responses);
    drop(tx);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_strings_are_clipped_in_statuses() {
    let _serial = SERIAL.lock().await;
    let server = server_with(|_| {}).await;
    let mut client = server.client().await;
    let id = "x".repeat(200_000);
    let err = refused(
        &mut client,
        translate(&[(&id, SENTENCE), (&id, SENTENCE)], None),
    )
    .await;
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().len() < 1000, "{} bytes", err.message().len());
    assert!(err.message().contains("…"));
    let mut request = translate(&[("a", SENTENCE)], None);
    request.source_language = "q".repeat(100_000);
    let err = refused(&mut client, request).await;
    assert!(err.message().len() < 1000, "{} bytes", err.message().len());
    // Many bad texts: the first few are named, the rest counted.
    let empty: Vec<(String, &str)> = (0..8).map(|i| (i.to_string(), " ")).collect();
    let empty: Vec<(&str, &str)> = empty.iter().map(|(i, t)| (i.as_str(), *t)).collect();
    let err = refused(&mut client, translate(&empty, None)).await;
    assert!(err.message().contains("and 4 more"), "{}", err.message());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_methods_share_one_metrics_label() {
    let _serial = SERIAL.lock().await;
    let keys = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(keys.path(), "secret-key\n").unwrap();
    let path = keys.path().to_path_buf();
    let server = server_with(move |a| a.security.api_keys_file = Some(path)).await;
    let channel = server.channel().await;
    let mut grpc = tonic::client::Grpc::new(channel);
    for i in 0..5 {
        grpc.ready().await.unwrap();
        let path = format!("/tarjama.v1.TranslationService/Random{i}")
            .parse()
            .unwrap();
        let codec = tonic_prost::ProstCodec::<TranslateRequest, TranslateRequest>::default();
        let err = grpc
            .unary(
                tonic::Request::new(TranslateRequest::default()),
                path,
                codec,
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }
    let text = scrape(server.metrics_addr.unwrap()).await;
    assert!(!text.contains("Random"), "{text}");
    assert!(sample(&text, "tarjama_requests_total", &[("rpc", "unknown")]).unwrap_or(0.0) >= 5.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_calls_are_counted() {
    let _serial = SERIAL.lock().await;
    // One sentence per batch: the call below is 32 batches in a row, far longer than the
    // 100 ms before it is dropped even in a release build on a fast CPU (8 sentences in one
    // batch finished first there).
    let server = server_with(|a| a.engine.max_batch_size = 1).await;
    let metrics = server.metrics_addr.unwrap();
    let cancelled = |text: &str| {
        sample(
            text,
            "tarjama_requests_total",
            &[("rpc", "Translate"), ("code", "CANCELLED")],
        )
        .unwrap_or(0.0)
    };
    let before = cancelled(&scrape(metrics).await);
    let mut client = server.client().await;
    let long = [SENTENCE; 32].join("\n");
    let call = tokio::spawn(async move {
        client
            .translate(translate(&[("a", &long)], greedy(60)))
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    call.abort();
    let mut counted = 0.0;
    for _ in 0..100 {
        counted = cancelled(&scrape(metrics).await) - before;
        if counted > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counted, 1.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_article_stream_of_many_lines_is_answered_in_linear_time() {
    let _serial = SERIAL.lock().await;
    let server = server_with(|a| a.limits.max_input_chars = 401_000).await;
    let mut client = server.client().await;
    // 20 000 English lines: paragraphs passed through, each built from its own segments.
    let body = "The minister spoke.\n".repeat(20_000);
    let mut request = tonic::Request::new(tarjama::proto::ProcessArticleStreamRequest {
        id: "a".into(),
        title: "Title".into(),
        body,
        source_language: "auto".into(),
        summary_options: Some(SummaryOptions {
            method: SummaryMethod::None as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    // A generous bound: quadratic paragraph building takes minutes here.
    request.set_timeout(Duration::from_secs(60));
    let mut events = client
        .process_article_stream(request)
        .await
        .unwrap()
        .into_inner();
    let mut paragraphs = 0;
    while let Some(event) = events.message().await.unwrap() {
        if let Some(tarjama::proto::process_article_stream_response::Event::Paragraph(_)) =
            event.event
        {
            paragraphs += 1;
        }
    }
    assert_eq!(paragraphs, 20_000);
    server.stop().await;
}

/// A raw HTTP/2 connection: enough of the protocol to read the server's frames.
struct RawH2(tokio::net::TcpStream);

const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;

impl RawH2 {
    async fn connect(addr: SocketAddr) -> Self {
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        socket
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut raw = Self(socket);
        raw.send(SETTINGS, 0, &[]).await;
        raw
    }

    async fn send(&mut self, kind: u8, flags: u8, payload: &[u8]) {
        let len = (payload.len() as u32).to_be_bytes();
        let mut frame = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 0];
        frame.extend_from_slice(payload);
        self.0.write_all(&frame).await.unwrap();
    }

    /// The next frame (type, flags, payload); `None` once the server closed.
    async fn frame(&mut self) -> Option<(u8, u8, Vec<u8>)> {
        let mut head = [0u8; 9];
        self.0.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        self.0.read_exact(&mut payload).await.ok()?;
        Some((head[3], head[4], payload))
    }

    /// The server's SETTINGS (acknowledged), as (id, value) pairs.
    async fn settings(&mut self) -> Vec<(u16, u32)> {
        loop {
            let (kind, flags, payload) = self.frame().await.expect("connection closed");
            if kind == SETTINGS && flags & 1 == 0 {
                self.send(SETTINGS, 1, &[]).await;
                return payload
                    .chunks(6)
                    .map(|c| {
                        let id = u16::from_be_bytes([c[0], c[1]]);
                        (id, u32::from_be_bytes([c[2], c[3], c[4], c[5]]))
                    })
                    .collect();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_have_a_stream_limit_and_a_vanished_peer_is_dropped() {
    let _serial = SERIAL.lock().await;
    let server = server_with(|a| {
        a.transport.max_concurrent_streams = 7;
        a.transport.http2_keepalive_interval_secs = 1;
        a.transport.http2_keepalive_timeout_secs = 1;
    })
    .await;
    let mut peer = RawH2::connect(server.addr).await;
    let settings = peer.settings().await;
    // SETTINGS_MAX_CONCURRENT_STREAMS
    assert!(settings.contains(&(3, 7)), "{settings:?}");
    // A peer that answers no ping is pinged, then dropped.
    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        let mut seen = Vec::new();
        while let Some((kind, _, _)) = peer.frame().await {
            seen.push(kind);
            if kind == GOAWAY {
                break;
            }
        }
        seen
    })
    .await
    .expect("the silent peer was never dropped");
    assert!(seen.contains(&PING), "{seen:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_calls_still_running_after_the_grace_period() {
    let _serial = SERIAL.lock().await;
    let server = server_with(|a| a.shutdown_timeout_secs = 1).await;
    let mut client = server.client().await;
    // A stream kept open by a client that sends nothing and never closes it.
    let (tx, rx) = tokio::sync::mpsc::channel::<TranslateRequest>(1);
    let mut responses = client
        .translate_stream(tokio_stream::wrappers::ReceiverStream::new(rx).map(Into::into))
        .await
        .unwrap()
        .into_inner();
    let read = tokio::spawn(async move { responses.message().await });
    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(30), server.outcome())
        .await
        .expect("the server did not stop");
    outcome.unwrap();
    let status = read.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    drop(tx);
}

/// Seeded randomness: the same seed gives the same traffic.
struct Rng(fastrand::Rng);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0.u64(..n.max(1))
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Text made to hurt: Arabic with combining runs, controls, bidi marks, NUL, emoji,
    /// Latin, line breaks, and sizes at and over the limit.
    fn text(&mut self, limit: usize) -> String {
        let len = match self.below(10) {
            0 => 0,
            1 => limit,
            2 => limit + 1,
            3 => self.below(3000) as usize,
            _ => self.below(200) as usize,
        };
        let mut s = String::new();
        while s.chars().count() < len {
            let piece: String = match self.below(12) {
                0 => "\u{64B}".repeat(self.below(300) as usize),
                1 => "\u{202E}\u{200F}\u{2066}".into(),
                2 => "\0".into(),
                3 => "👩‍👩‍👧‍👦🇸🇦".into(),
                4 => "\n\n".into(),
                5 => "The minister said. ".into(),
                6 => char::from_u32(self.below(0x30000) as u32)
                    .unwrap_or('?')
                    .to_string(),
                7 => "ـــــ".into(),
                8 => "؟!...،؛".into(),
                _ => SENTENCE.into(),
            };
            s.push_str(&piece);
        }
        s.chars().take(len).collect()
    }

    fn options(&mut self) -> Option<TranslationOptions> {
        self.chance(70).then(|| TranslationOptions {
            beam_size: self.chance(80).then(|| self.below(20) as u32),
            max_output_tokens: self.chance(80).then(|| self.below(80) as u32),
            length_penalty: [0.0, 1.0, -1.0, f32::NAN, 7.0][self.below(5) as usize],
        })
    }
}

/// The status a `Translate` call is refused with (panics if it succeeds).
async fn refused(client: &mut Client, request: TranslateRequest) -> tonic::Status {
    match client.translate(request).await {
        Err(status) => status,
        Ok(_) => panic!("the call was accepted"),
    }
}

fn with_timeout<T>(message: T, timeout: Option<Duration>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(t) = timeout {
        request.set_timeout(t);
    }
    request
}

/// The status codes the service is designed to answer with under this traffic.
fn designed(code: Code) -> bool {
    matches!(
        code,
        Code::Ok
            | Code::InvalidArgument
            | Code::ResourceExhausted
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::FailedPrecondition
    )
}

async fn hostile_call(client: &mut Client, rng: &mut Rng) -> Code {
    let limit = 5000;
    let code_of = |r: Result<(), tonic::Status>| r.err().map_or(Code::Ok, |s| s.code());
    let timeout = rng
        .chance(30)
        .then(|| Duration::from_millis(1 + rng.below(2000)));
    match rng.below(5) {
        0 | 1 => {
            let n = rng.below(11) as usize;
            let texts: Vec<(String, String)> = (0..n)
                .map(|i| (format!("{}", i % 7), rng.text(limit)))
                .collect();
            let refs: Vec<(&str, &str)> = texts
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_str()))
                .collect();
            let mut request = translate(&refs, rng.options());
            if rng.chance(10) {
                request.source_language = ["", "auto", "fr", "AR"][rng.below(4) as usize].into();
            }
            code_of(
                client
                    .translate(with_timeout(request, timeout))
                    .await
                    .map(|_| ()),
            )
        }
        2 => {
            let request = SummarizeRequest {
                text: rng.text(limit),
                language: ["", "en", "ar", "xx"][rng.below(4) as usize].into(),
                options: Some(SummaryOptions {
                    method: rng.below(5) as i32,
                    max_sentences: rng.below(60) as u32,
                    max_words: rng.below(6000) as u32,
                    ..Default::default()
                }),
                ..Default::default()
            };
            code_of(
                client
                    .summarize(with_timeout(request, timeout))
                    .await
                    .map(|_| ()),
            )
        }
        3 => {
            let request = ProcessArticleRequest {
                id: "a".into(),
                title: rng.text(100),
                body: rng.text(limit),
                title_from_first_line: rng.chance(50),
                options: rng.options(),
                ..Default::default()
            };
            let stream = rng.chance(50);
            if stream {
                let reply = client
                    .process_article_stream(with_timeout(
                        tarjama::proto::ProcessArticleStreamRequest::from(request),
                        timeout,
                    ))
                    .await;
                match reply {
                    Err(s) => s.code(),
                    Ok(r) if rng.chance(30) => {
                        drop(r); // never read
                        Code::Ok
                    }
                    Ok(r) => {
                        let mut events = r.into_inner();
                        loop {
                            match events.message().await {
                                Ok(Some(_)) => {}
                                Ok(None) => break Code::Ok,
                                Err(s) => break s.code(),
                            }
                        }
                    }
                }
            } else {
                code_of(
                    client
                        .process_article(with_timeout(request, timeout))
                        .await
                        .map(|_| ()),
                )
            }
        }
        _ => {
            // A call abandoned part way through.
            let mut c = client.clone();
            let text = rng.text(limit);
            let call =
                tokio::spawn(async move { c.translate(translate(&[("a", &text)], None)).await });
            tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
            call.abort();
            Code::Cancelled
        }
    }
}

/// Hostile and random calls for `secs` next to well-behaved clients.
async fn hostile_traffic(secs: u64) {
    let server = server_with(|a| a.limits.max_input_chars = 5000).await;
    let mut probe = server.client().await;
    let good_texts = [SENTENCE, "وناقش الرئيسان الأمن الإلكتروني.", "مرحبا بكم"];
    let mut lone = Vec::new();
    for t in good_texts {
        let reply = probe
            .translate(translate(&[("g", t)], greedy(12)))
            .await
            .unwrap()
            .into_inner();
        lone.push(reply.translations[0].text.clone());
    }
    reset_peak_rss();
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for seed in 1..=4u64 {
        let mut client = server.client().await;
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(fastrand::Rng::with_seed(seed));
            let mut calls = 0u64;
            while Instant::now() < until {
                let code = hostile_call(&mut client, &mut rng).await;
                assert!(designed(code), "undesigned status {code:?}");
                calls += 1;
            }
            calls
        }));
    }
    let mut good_calls = 0;
    let mut good = server.client().await;
    while Instant::now() < until {
        for (t, expected) in good_texts.iter().zip(&lone) {
            let reply = good.translate(translate(&[("g", t)], greedy(12))).await;
            match reply {
                Ok(r) => {
                    assert_eq!(&r.into_inner().translations[0].text, expected);
                    good_calls += 1;
                }
                // A full queue is a designed answer; a well-behaved client retries later.
                Err(s) if s.code() == Code::ResourceExhausted => {}
                Err(s) => panic!("well-behaved call failed: {s:?}"),
            }
        }
    }
    let mut hostile_calls = 0;
    for t in tasks {
        hostile_calls += t.await.unwrap();
    }
    let (_, peak) = rss_kib();
    eprintln!(
        "hostile traffic: {secs} s, {hostile_calls} hostile calls, {good_calls} good calls, peak RSS {} MiB",
        peak / 1024
    );
    assert!(good_calls > 0);
    assert!(peak / 1024 < 1536, "peak RSS {} MiB", peak / 1024);
    // Still serving.
    probe
        .translate(translate(&[("g", SENTENCE)], greedy(12)))
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_traffic_short() {
    let _serial = SERIAL.lock().await;
    hostile_traffic(8).await;
}

/// `TARJAMA_HOSTILE_SECS=600 cargo test --release --test hostile -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn hostile_traffic_long() {
    let _serial = SERIAL.lock().await;
    let secs = std::env::var("TARJAMA_HOSTILE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    hostile_traffic(secs).await;
}
