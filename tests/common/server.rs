//! A tarjama server on 127.0.0.1:0 for integration tests.

use std::net::SocketAddr;

use clap::Parser;
use std::time::Duration;
use tarjama::config::{Cli, Command, ServeArgs};
use tarjama::proto::translation_service_client::TranslationServiceClient;
use tarjama::proto::{TextInput, TranslateRequest, TranslationOptions};
use tarjama::server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_types::StatusExt;

pub const MARIAN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/tiny-marian-ar-en"
);

pub struct TestServer {
    pub addr: SocketAddr,
    /// Where `/metrics` is served, when the args set `--metrics-addr`.
    pub metrics_addr: Option<SocketAddr>,
    /// Where plaintext health checks are answered, when the args set `--health-addr`.
    pub health_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<Result<(), server::StartupError>>>,
}

impl TestServer {
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn client(&self) -> TranslationServiceClient<Channel> {
        TranslationServiceClient::new(self.channel().await)
    }

    pub async fn stop(self) {
        self.outcome().await.unwrap();
    }

    /// Waits (at most 60 s) for the server to end on its own, e.g. when startup fails.
    pub async fn ended(mut self) -> Result<(), server::StartupError> {
        let done = self.done.take().unwrap();
        tokio::time::timeout(Duration::from_secs(60), done)
            .await
            .expect("the server did not end")
            .unwrap()
    }

    /// Stops the server (if still running) and returns how it ended.
    pub async fn outcome(mut self) -> Result<(), server::StartupError> {
        let _ = self.stop.take().unwrap().send(());
        self.done.take().unwrap().await.unwrap()
    }
}

pub fn serve_args(extra: &[&str]) -> ServeArgs {
    let mut argv = vec!["tarjama", "serve"];
    if !extra.contains(&"--translation-model") {
        argv.extend(["--translation-model", MARIAN]);
    }
    if !extra.contains(&"--summarization-model") {
        argv.extend(["--summarization-model", "none"]);
    }
    // The exact path: these tests compare with the f32 reference outputs.
    if !extra.contains(&"--compute-type") {
        argv.extend(["--compute-type", "f32"]);
    }
    argv.extend(["--max-texts-per-request", "8", "--max-input-chars", "5000"]);
    argv.extend_from_slice(extra);
    match Cli::parse_from(argv).command {
        Command::Serve(args) => *args,
        _ => unreachable!(),
    }
}

/// Starts a server; `gate` (if any) holds model loading until it fires.
pub async fn start_with(
    args: ServeArgs,
    gate: Option<std::sync::mpsc::Receiver<()>>,
) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Whatever address the args name, tests take a free port.
    let metrics = match args.metrics_addr {
        Some(_) => Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
        None => None,
    };
    let metrics_addr = metrics.as_ref().map(|l| l.local_addr().unwrap());
    let health_listener = match args.health_addr {
        Some(_) => Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
        None => None,
    };
    let health_addr = health_listener.as_ref().map(|l| l.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let engine_args = args.clone();
    let load = move || {
        if let Some(gate) = gate {
            let _ = gate.recv();
        }
        Ok(tarjama::loader::start_engines(&engine_args)?)
    };
    let listeners = server::Listeners {
        grpc: listener,
        metrics,
        health: health_listener,
    };
    let done = tokio::spawn(server::run_with_loader(
        args,
        listeners,
        async {
            let _ = stopped.await;
        },
        load,
    ));
    TestServer {
        addr,
        metrics_addr,
        health_addr,
        stop: Some(stop),
        done: Some(done),
    }
}

pub async fn start(extra: &[&str]) -> TestServer {
    let server = start_with(serve_args(extra), None).await;
    wait_serving(&server).await;
    server
}

/// The server's ListModels answer.
pub async fn list_models(server: &TestServer) -> Vec<tarjama::proto::ModelInfo> {
    server
        .client()
        .await
        .list_models(tarjama::proto::ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models
}

pub async fn health(server: &TestServer) -> ServingStatus {
    let mut client = HealthClient::new(server.channel().await);
    let reply = client
        .check(HealthCheckRequest {
            service: "tarjama.v1.TranslationService".into(),
        })
        .await
        .unwrap();
    ServingStatus::try_from(reply.into_inner().status).unwrap()
}

pub async fn wait_serving(server: &TestServer) {
    for _ in 0..600 {
        if health(server).await == ServingStatus::Serving {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server never became SERVING");
}

/// An Arabic → English Translate request of `(id, text)` pairs.
pub fn translate_request(
    texts: &[(&str, &str)],
    options: Option<TranslationOptions>,
) -> TranslateRequest {
    TranslateRequest {
        texts: texts
            .iter()
            .map(|(id, text)| TextInput {
                id: id.to_string(),
                text: text.to_string(),
                ..Default::default()
            })
            .collect(),
        source_language: "ar".into(),
        target_language: "en".into(),
        options,
    }
}

/// GET /metrics over plain HTTP/1.1 (a raw socket keeps the tests free of an HTTP client).
pub async fn scrape(addr: SocketAddr) -> String {
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    socket.read_to_string(&mut reply).await.unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// Value of the sample `name` whose labels include all of `labels` (summed over the rest).
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))),
            None => (series, Default::default()),
        };
        let matches = series_name == name
            && labels
                .iter()
                .all(|(k, v)| series_labels.get(*k).map(String::as_str) == Some(*v));
        if matches {
            *found.get_or_insert(0.0) += value.parse::<f64>().unwrap();
        }
    }
    found
}

fn parse_labels(text: &str) -> std::collections::BTreeMap<String, String> {
    text.split("\",")
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

/// `status` is INVALID_ARGUMENT, says `message_part`, and names `field` in its BadRequest
/// details.
pub fn assert_bad_field(status: &tonic::Status, field: &str, message_part: &str) {
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains(message_part),
        "message {:?} lacks {message_part:?}",
        status.message()
    );
    let details = status.get_error_details();
    let violations = &details
        .bad_request()
        .expect("BadRequest details")
        .field_violations;
    assert!(
        violations.iter().any(|v| v.field == field),
        "no violation for {field}: {violations:?}"
    );
}
