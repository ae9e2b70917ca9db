//! `tarjama client` end to end: against a real server with the tiny Marian fixture (results,
//! resuming after a stop or a kill, JSONL input), and against a fake Translator that answers
//! what a test needs (busy, failing mid-stream, refusing, over TLS, checking the API key).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use futures::stream::{self, BoxStream, StreamExt};
use tarjama::client::{self, ClientReport, Record};
use tarjama::config::{Cli, ClientArgs, Command};
use tarjama::proto::process_article_stream_response::Event;
use tarjama::proto::translation_service_server::{TranslationService, TranslationServiceServer};
use tarjama::proto::{self as pb, ProcessArticleRequest, ProcessArticleStreamResponse};
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

mod common;

const SEED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/seed-article-ar.txt"
);
/// Upper bound of any one run in these tests.
const RUN_LIMIT: Duration = Duration::from_secs(180);

async fn bounded<T>(work: impl Future<Output = T>) -> T {
    tokio::time::timeout(RUN_LIMIT, work)
        .await
        .expect("the client run took too long")
}

/// The seed article's long paragraphs (real Arabic news sentences).
fn seed_paragraphs() -> Vec<String> {
    std::fs::read_to_string(SEED)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| l.chars().count() > 100)
        .map(str::to_string)
        .collect()
}

/// `count` articles `article-NN.txt`: a title line, then two paragraphs.
fn article_folder(dir: &Path, count: usize) -> PathBuf {
    let folder = dir.join("articles");
    std::fs::create_dir(&folder).unwrap();
    let paragraphs = seed_paragraphs();
    let n = paragraphs.len();
    for i in 0..count {
        let text = format!(
            "روسيا وأميركا والأمن الإلكتروني {i}\n{}\n\n{}\n",
            paragraphs[i % n],
            paragraphs[(i + 1) % n]
        );
        std::fs::write(folder.join(format!("article-{i:02}.txt")), text).unwrap();
    }
    // Not an article: ignored.
    std::fs::write(folder.join("README.md"), "notes").unwrap();
    folder
}

fn args(input: &Path, output: &Path, addr: &str, extra: &[&str]) -> ClientArgs {
    let mut argv = vec![
        "tarjama".to_string(),
        "client".into(),
        input.display().to_string(),
        "--output".into(),
        output.display().to_string(),
        "--addr".into(),
        addr.into(),
        "--quiet".into(),
        "--timeout-secs".into(),
        "60".into(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    match Cli::parse_from(argv).command {
        Command::Client(args) => args,
        other => panic!("not a client command: {other:?}"),
    }
}

fn records(path: &Path) -> Vec<Record> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn by_id(records: Vec<Record>) -> HashMap<String, Record> {
    let count = records.len();
    let map: HashMap<_, _> = records.into_iter().map(|r| (r.id.clone(), r)).collect();
    assert_eq!(map.len(), count, "an id is in the output twice");
    map
}

/// The ids a rerun will see in the output: complete lines, plus a last line that is a whole
/// record without its newline.
fn saved_ids(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or(0, |i| i + 1);
    let tail_ok = serde_json::from_str::<Record>(&text[complete..]).is_ok();
    text[..complete].lines().count() + usize::from(tail_ok)
}

fn assert_no_failures(report: &ClientReport) {
    assert_eq!(report.failed, 0, "{:?}", report.failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn translates_a_folder_like_direct_calls() {
    let server = common::server::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let folder = article_folder(dir.path(), 6);
    let out = dir.path().join("out.jsonl");
    let addr = format!("http://{}", server.addr);
    let a = args(
        &folder,
        &out,
        &addr,
        &["--title-from-first-line", "--concurrency", "3"],
    );
    let report = bounded(client::run(a)).await.unwrap();
    assert_no_failures(&report);
    assert_eq!((report.total, report.done, report.skipped), (6, 6, 0));
    assert!(!report.interrupted);

    let raw = std::fs::read_to_string(&out).unwrap();
    let first: serde_json::Value = serde_json::from_str(raw.lines().next().unwrap()).unwrap();
    for key in [
        "id",
        "title",
        "translation",
        "summary",
        "summary_method",
        "detected_language",
        "usage",
        "timings",
        "attempts",
    ] {
        assert!(first.get(key).is_some(), "no `{key}` in {first}");
    }
    let results = by_id(records(&out));
    assert_eq!(results.len(), 6);
    let mut direct = server.client().await;
    for i in 0..6 {
        let id = format!("article-{i:02}");
        let got = &results[&id];
        assert!(!got.translation.is_empty(), "{id}: empty translation");
        assert_eq!(got.attempts, 1);
        assert!(got.timings.client_ms >= u64::from(got.timings.total_ms));
        let body = std::fs::read_to_string(folder.join(format!("{id}.txt"))).unwrap();
        let want = direct
            .process_article(ProcessArticleRequest {
                id: id.clone(),
                body,
                title_from_first_line: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.translation, want.body, "{id}");
        assert_eq!(got.title, want.title, "{id}");
        assert_eq!(
            got.summary.as_deref(),
            want.summary.map(|s| s.text).as_deref()
        );
        assert_eq!(got.summary_method.as_deref(), Some("extractive"));
        assert_eq!(got.detected_language, "ar");
    }
    server.stop().await;
}

/// `--format html`: a folder's .html/.htm files go as HTML and come back as the server's
/// ProcessArticle makes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_files_come_back_as_html() {
    let server = common::server::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("pages");
    std::fs::create_dir(&folder).unwrap();
    let paragraphs = seed_paragraphs();
    let pages = [
        (
            "a.html",
            format!(
                "<p>{} <a href=\"/x\">{}</a></p>",
                paragraphs[0], paragraphs[1]
            ),
        ),
        ("b.htm", format!("<ul><li>{}</li></ul>", paragraphs[2])),
    ];
    for (name, page) in &pages {
        std::fs::write(folder.join(name), page).unwrap();
    }
    let out = dir.path().join("out.jsonl");
    let addr = format!("http://{}", server.addr);
    let report = bounded(client::run(args(
        &folder,
        &out,
        &addr,
        &["--format", "html"],
    )))
    .await
    .unwrap();
    assert_no_failures(&report);
    assert_eq!(report.done, 2);
    let results = by_id(records(&out));
    let mut direct = server.client().await;
    for (name, page) in pages {
        let got = &results[name.split('.').next().unwrap()];
        let want = direct
            .process_article(ProcessArticleRequest {
                body: page.clone(),
                format: tarjama::proto::TextFormat::Html as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.translation, want.body);
        assert!(
            got.translation.starts_with(&page[..3]),
            "{}",
            got.translation
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_run_resumes_without_redoing_articles() {
    let server = common::server::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let folder = article_folder(dir.path(), 12);
    let out = dir.path().join("out.jsonl");
    let addr = format!("http://{}", server.addr);
    // No summary asked for: the server must not make one (SUMMARY_METHOD_NONE).
    let a = args(
        &folder,
        &out,
        &addr,
        &["--concurrency", "2", "--summary", "none"],
    );

    // Stops once three results are saved.
    let watched = out.clone();
    let three_saved = async move {
        while saved_ids(&watched) < 3 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    let first = bounded(client::run_until(a.clone(), three_saved))
        .await
        .unwrap();
    let saved = saved_ids(&out);
    assert!(first.interrupted, "{first:?}");
    assert_eq!(first.done, saved);
    assert!((3..12).contains(&saved), "{saved} saved");

    let second = bounded(client::run(a)).await.unwrap();
    assert_no_failures(&second);
    assert_eq!(second.skipped, saved);
    // Only what was missing was sent to the server.
    assert_eq!(second.done, 12 - saved);
    let results = by_id(records(&out));
    assert_eq!(results.len(), 12);
    assert!(results
        .values()
        .all(|r| r.summary.is_none() && !r.translation.is_empty()));

    // A third run has nothing to do.
    let third = bounded(client::run(args(&folder, &out, &addr, &[])))
        .await
        .unwrap();
    assert_eq!((third.skipped, third.done, third.failed), (12, 0, 0));
    server.stop().await;
}

/// Runs the built binary (in a blocking thread: the server runs on this runtime).
async fn run_binary(argv: Vec<String>) -> Output {
    let binary = env!("CARGO_BIN_EXE_tarjama");
    tokio::task::spawn_blocking(move || {
        Process::new(binary)
            .args(argv)
            .env("TARJAMA_LOG", "warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn client_argv(input: &Path, out: &Path, addr: &str, extra: &[&str]) -> Vec<String> {
    let mut argv: Vec<String> = vec![
        "client".into(),
        input.display().to_string(),
        "--output".into(),
        out.display().to_string(),
        "--addr".into(),
        addr.into(),
        "--timeout-secs".into(),
        "60".into(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    argv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_killed_half_way_resumes() {
    let server = common::server::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let folder = article_folder(dir.path(), 12);
    let out = dir.path().join("out.jsonl");
    let addr = format!("http://{}", server.addr);
    let argv = client_argv(&folder, &out, &addr, &["--concurrency", "1"]);

    let mut child = Process::new(env!("CARGO_BIN_EXE_tarjama"))
        .args(&argv)
        .env("TARJAMA_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let waited = tokio::time::timeout(RUN_LIMIT, async {
        while saved_ids(&out) < 2 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    waited.expect("no results within the time limit");
    let saved = saved_ids(&out);
    assert!((2..12).contains(&saved), "{saved} saved before the kill");

    let rerun = run_binary(argv).await;
    let stdout = String::from_utf8_lossy(&rerun.stdout);
    assert!(
        rerun.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    let expected = format!("12 articles: {} translated, {saved} skipped", 12 - saved);
    assert!(stdout.contains(&expected), "`{expected}` not in: {stdout}");
    assert!(stdout.contains("0 failed"), "{stdout}");
    let results = by_id(records(&out));
    assert_eq!(results.len(), 12);
    assert!(results.values().all(|r| !r.translation.is_empty()));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_items_are_done_and_bad_lines_reported_by_number() {
    let server = common::server::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let p = seed_paragraphs();
    let lines = [
        serde_json::json!({"id": "t1", "title": "روسيا وأميركا", "body": format!("{}\n\n{}", p[0], p[1])}).to_string(),
        serde_json::json!({"id": 2, "text": p[2]}).to_string(),
        "{not json".to_string(),
        r#"{"id": "b1", "lang": "ar"}"#.to_string(),
        String::new(),
        serde_json::json!({"id": "t1", "body": p[3]}).to_string(),
        serde_json::json!({"id": "only-title", "title": "الأمن الإلكتروني"}).to_string(),
    ];
    let input = dir.path().join("news.jsonl");
    std::fs::write(&input, lines.join("\n")).unwrap();
    let out = dir.path().join("out.jsonl");
    let addr = format!("http://{}", server.addr);
    let report = bounded(client::run(args(&input, &out, &addr, &[])))
        .await
        .unwrap();

    assert_eq!((report.total, report.done, report.failed), (6, 3, 3));
    let failures: HashMap<_, _> = report.failures.iter().cloned().collect();
    assert!(
        failures["line 3"].starts_with("line 3: invalid JSON"),
        "{failures:?}"
    );
    assert!(
        failures["b1"].starts_with("line 4: no text"),
        "{failures:?}"
    );
    assert_eq!(
        failures["t1"],
        "line 6: duplicate id `t1` (first at line 1)"
    );

    let results = by_id(records(&out));
    assert_eq!(results.len(), 3);
    let t1 = &results["t1"];
    assert!(!t1.title.is_empty() && !t1.translation.is_empty());
    assert_eq!(t1.translation.split("\n\n").count(), 2);
    assert!(!results["2"].translation.is_empty());
    assert!(results["2"].title.is_empty());
    assert!(!results["only-title"].title.is_empty());
    assert!(results["only-title"].translation.is_empty());
    server.stop().await;
}

// ---- a fake server, for answers the real one gives only under load or by accident ----

/// Acts on the article's body: `busy N` answers RESOURCE_EXHAUSTED (with a 10 ms RetryInfo)
/// to the first N calls, `drop N` fails the first N streams after the title, `bad` is always
/// INVALID_ARGUMENT; anything else gets a whole stream.
#[derive(Clone, Default)]
struct Fake {
    calls: Arc<Mutex<HashMap<String, u32>>>,
    authorization: Arc<Mutex<Vec<Option<String>>>>,
}

impl Fake {
    fn calls(&self, id: &str) -> u32 {
        self.calls.lock().unwrap().get(id).copied().unwrap_or(0)
    }
}

fn busy() -> Status {
    let mut details = ErrorDetails::new();
    details.set_retry_info(Some(Duration::from_millis(10)));
    Status::with_error_details(Code::ResourceExhausted, "queue full", details)
}

fn events(id: &str) -> Vec<Result<ProcessArticleStreamResponse, Status>> {
    let event = |e| Ok(ProcessArticleStreamResponse { event: Some(e) });
    let paragraph = |index, text: &str| {
        event(Event::Paragraph(pb::ArticleParagraph {
            index,
            text: text.into(),
            segments: vec![],
        }))
    };
    vec![
        event(Event::Title(pb::ArticleTitle {
            id: id.into(),
            text: format!("title of {id}"),
            segments: vec![],
        })),
        paragraph(0, "first"),
        paragraph(1, "second"),
        event(Event::Done(pb::ArticleDone {
            id: id.into(),
            paragraphs: 2,
            detected_language: "ar".into(),
            usage: Some(pb::Usage {
                input_tokens: 3,
                output_tokens: 4,
                sentences: 2,
            }),
            timings: Some(pb::Timings {
                queue_ms: 1,
                inference_ms: 2,
                total_ms: 3,
            }),
            summary: Some(pb::Summary {
                text: "summary".into(),
                method: pb::SummaryMethod::Extractive as i32,
                ..Default::default()
            }),
            ..Default::default()
        })),
    ]
}

type EventStream = BoxStream<'static, Result<ProcessArticleStreamResponse, Status>>;

#[tonic::async_trait]
impl TranslationService for Fake {
    async fn translate(
        &self,
        _: Request<pb::TranslateRequest>,
    ) -> Result<Response<pb::TranslateResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type TranslateStreamStream = BoxStream<'static, Result<pb::TranslateStreamResponse, Status>>;

    async fn translate_stream(
        &self,
        _: Request<tonic::Streaming<pb::TranslateStreamRequest>>,
    ) -> Result<Response<Self::TranslateStreamStream>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn process_article(
        &self,
        _: Request<ProcessArticleRequest>,
    ) -> Result<Response<pb::ProcessArticleResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type ProcessArticleStreamStream = EventStream;

    async fn process_article_stream(
        &self,
        request: Request<pb::ProcessArticleStreamRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let auth = request.metadata().get("authorization");
        let auth = auth.and_then(|v| v.to_str().ok()).map(str::to_string);
        self.authorization.lock().unwrap().push(auth);
        let article = request.into_inner();
        let call = {
            let mut calls = self.calls.lock().unwrap();
            let n = calls.entry(article.id.clone()).or_default();
            *n += 1;
            *n
        };
        let words: Vec<&str> = article.body.split_whitespace().collect();
        let limit = |w: &[&str]| w.get(1).and_then(|n| n.parse::<u32>().ok()).unwrap_or(0);
        let mut events = events(&article.id);
        match words.first().copied() {
            Some("bad") => return Err(Status::invalid_argument("body: not an article")),
            Some("busy") if call <= limit(&words) => return Err(busy()),
            Some("drop") if call <= limit(&words) => {
                events.truncate(2);
                events.push(Err(Status::unavailable("connection lost")));
            }
            _ => {}
        }
        Ok(Response::new(stream::iter(events).boxed()))
    }

    async fn summarize(
        &self,
        _: Request<pb::SummarizeRequest>,
    ) -> Result<Response<pb::SummarizeResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_models(
        &self,
        _: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// Serves `fake` on 127.0.0.1:0 until the sender is dropped.
async fn serve_fake(fake: Fake, tls: Option<ServerTlsConfig>) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).unwrap();
    }
    let router = builder.add_service(TranslationServiceServer::new(fake));
    tokio::spawn(
        router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
            let _ = stopped.await;
        }),
    );
    (addr, stop)
}

fn jsonl(dir: &Path, items: &[(&str, &str)]) -> PathBuf {
    let path = dir.join("in.jsonl");
    let lines: Vec<String> = items
        .iter()
        .map(|(id, text)| serde_json::json!({"id": id, "text": text}).to_string())
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_and_dropped_streams_are_retried() {
    let fake = Fake::default();
    let (addr, _stop) = serve_fake(fake.clone(), None).await;
    let dir = tempfile::tempdir().unwrap();
    let input = jsonl(
        dir.path(),
        &[("busy", "busy 2"), ("drop", "drop 1"), ("ok", "fine")],
    );
    let out = dir.path().join("out.jsonl");
    let extra = [
        "--retries",
        "3",
        "--api-key",
        "secret-1",
        "--summary",
        "extractive",
    ];
    let a = args(&input, &out, &format!("http://{addr}"), &extra);
    let report = bounded(client::run(a)).await.unwrap();
    assert_no_failures(&report);
    assert_eq!((report.done, report.retries), (3, 3));

    let results = by_id(records(&out));
    for (id, attempts) in [("busy", 3), ("drop", 2), ("ok", 1)] {
        assert_eq!(results[id].attempts, attempts, "{id}");
        assert_eq!(fake.calls(id), attempts, "{id}: calls the server saw");
        // A stream that failed half-way left nothing behind.
        assert_eq!(results[id].translation, "first\n\nsecond");
        assert_eq!(results[id].title, format!("title of {id}"));
    }
    let ok = &results["ok"];
    assert_eq!(ok.summary.as_deref(), Some("summary"));
    assert_eq!(ok.summary_method.as_deref(), Some("extractive"));
    assert_eq!((ok.usage.input_tokens, ok.usage.output_tokens), (3, 4));
    assert_eq!(
        (
            ok.timings.queue_ms,
            ok.timings.inference_ms,
            ok.timings.total_ms
        ),
        (1, 2, 3)
    );
    let auth = fake.authorization.lock().unwrap().clone();
    assert_eq!(auth.len(), 6);
    assert!(
        auth.iter().all(|a| a.as_deref() == Some("Bearer secret-1")),
        "{auth:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_articles_fail_at_once_and_the_exit_code_says_so() {
    let fake = Fake::default();
    let (addr, _stop) = serve_fake(fake.clone(), None).await;
    let dir = tempfile::tempdir().unwrap();
    let input = jsonl(
        dir.path(),
        &[("bad", "bad"), ("ok", "fine"), ("full", "busy 99")],
    );
    let out = dir.path().join("out.jsonl");
    let addr = format!("http://{addr}");
    let extra = ["--retries", "2", "--summary", "none"];
    let report = bounded(client::run(args(&input, &out, &addr, &extra)))
        .await
        .unwrap();
    assert_eq!((report.done, report.failed), (1, 2));
    let failures: HashMap<_, _> = report.failures.iter().cloned().collect();
    assert_eq!(
        failures["bad"],
        "line 1: INVALID_ARGUMENT: body: not an article"
    );
    assert_eq!(fake.calls("bad"), 1, "INVALID_ARGUMENT must not be retried");
    assert!(
        failures["full"].starts_with("line 3: RESOURCE_EXHAUSTED after 3 attempts"),
        "{failures:?}"
    );
    assert_eq!(fake.calls("full"), 3);
    let results = by_id(records(&out));
    assert_eq!(results.keys().collect::<Vec<_>>(), ["ok"]);
    assert_eq!(results["ok"].summary, None);
    assert!(report.summary().contains("`bad` (line 1: INVALID_ARGUMENT"));

    // The binary: the finished one is skipped, the bad one fails again, exit code 1.
    let output = run_binary(client_argv(&input, &out, &addr, &extra)).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("3 articles: 0 translated, 1 skipped (already in"),
        "{stdout}"
    );
    assert!(stdout.contains("2 failed"), "{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("2 of 3 articles failed"), "{stderr}");
    assert_eq!(fake.calls("bad"), 2);
    assert_eq!(fake.calls("ok"), 1, "a finished article was sent again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn talks_tls_with_a_given_ca_and_server_name() {
    let key = rcgen::generate_simple_self_signed(vec!["tarjama.test".into()]).unwrap();
    let (cert, private) = (key.cert.pem(), key.signing_key.serialize_pem());
    let tls = ServerTlsConfig::new().identity(Identity::from_pem(&cert, &private));
    let fake = Fake::default();
    let (addr, _stop) = serve_fake(fake.clone(), Some(tls)).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &cert).unwrap();
    let input = jsonl(dir.path(), &[("a", "fine")]);
    let out = dir.path().join("out.jsonl");
    let https = format!("https://{addr}");
    let ca_arg = ca.display().to_string();
    let extra = ["--tls-ca", ca_arg.as_str(), "--tls-domain", "tarjama.test"];
    let report = bounded(client::run(args(&input, &out, &https, &extra)))
        .await
        .unwrap();
    assert_no_failures(&report);
    assert_eq!(report.done, 1);

    // Without the CA (system roots only) the server is not trusted: one clear error.
    let err = bounded(client::run(args(
        &input,
        &dir.path().join("o2.jsonl"),
        &https,
        &["--tls-domain", "tarjama.test"],
    )))
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot connect to the server at https://"),
        "{err}"
    );
    assert_eq!(fake.calls("a"), 1);
}

#[tokio::test]
async fn bad_inputs_and_outputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let input = jsonl(dir.path(), &[("a", "fine")]);
    // Nothing listens on port 9 of loopback (discard); the checks come first anyway.
    let addr = "http://127.0.0.1:9";
    let err = client::run(args(&input, &input, addr, &[]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is the input file"), "{err}");
    let text = dir.path().join("a.txt");
    std::fs::write(&text, "نص").unwrap();
    let out = dir.path().join("out.jsonl");
    let err = client::run(args(&text, &out, addr, &[])).await.unwrap_err();
    assert!(err.to_string().contains("neither a folder"), "{err}");
    let foreign = dir.path().join("notes.jsonl");
    std::fs::write(&foreign, "my notes\n").unwrap();
    let err = client::run(args(&input, &foreign, addr, &[]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("line 1"), "{err}");
    let err = client::run(args(&input, &out, "ftp://x", &[]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("http:// or https://"), "{err}");
}
