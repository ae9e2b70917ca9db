//! A real server as operators run it: TLS (rustls), API keys, JSON logs as a process, and
//! shutdown with a stream still open.

use std::time::Duration;

use tarjama::proto::translation_service_client::TranslationServiceClient;
use tarjama::proto::{ListModelsRequest, TextInput, TranslateRequest, TranslateStreamRequest};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

mod common;

use common::server::{health, serve_args, start_with, wait_serving, TestServer};

fn one_text() -> TranslateRequest {
    TranslateRequest {
        texts: vec![TextInput {
            id: "1".into(),
            text: "قالت روسيا يوم الاثنين.".into(),
            ..Default::default()
        }],
        source_language: "ar".into(),
        target_language: "en".into(),
        options: None,
    }
}

/// A self-signed certificate for `localhost`, written as PEM files.
fn certificate(dir: &std::path::Path) -> (String, String, String) {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_pem, key_pem) = (key.cert.pem(), key.signing_key.serialize_pem());
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, &cert_pem).unwrap();
    std::fs::write(&key_path, &key_pem).unwrap();
    (
        cert_pem,
        cert_path.display().to_string(),
        key_path.display().to_string(),
    )
}

async fn tls_channel(
    server: &TestServer,
    ca_pem: &str,
) -> Result<Channel, tonic::transport::Error> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    Channel::from_shared(format!("https://{}", server.addr))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// Polls health (over whatever the channel speaks) until SERVING.
async fn wait_serving_tls(channel: Channel) {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for _ in 0..600 {
        let reply = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "tarjama.v1.TranslationService".into(),
            })
            .await
            .unwrap();
        if reply.into_inner().status == ServingStatus::Serving as i32 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("TLS server never became SERVING");
}

#[tokio::test]
async fn tls_server_accepts_tls_clients_and_refuses_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, cert, key) = certificate(dir.path());
    let args = [
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--health-addr",
        "127.0.0.1:0",
    ];
    let server = start_with(serve_args(&args), None).await;

    let channel = tls_channel(&server, &ca_pem).await.unwrap();
    wait_serving_tls(channel.clone()).await;
    // Probes that cannot speak TLS ask the plaintext health port.
    let health_port = Channel::from_shared(format!("http://{}", server.health_addr.unwrap()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut probe = tonic_health::pb::health_client::HealthClient::new(health_port.clone());
    for service in ["", "tarjama.v1.TranslationService"] {
        let reply = probe
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap();
        assert_eq!(reply.into_inner().status, ServingStatus::Serving as i32);
    }
    // That port answers health only.
    let err = TranslationServiceClient::new(health_port)
        .translate(one_text())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    let reply = TranslationServiceClient::new(channel)
        .translate(one_text())
        .await
        .unwrap()
        .into_inner();
    assert!(!reply.translations[0].text.is_empty());

    // Plain HTTP/2 to the TLS port: the handshake never happens, the call fails.
    let plain = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    let refused = match plain.connect().await {
        Err(_) => true,
        Ok(channel) => TranslationServiceClient::new(channel)
            .translate(one_text())
            .await
            .is_err(),
    };
    assert!(
        refused,
        "a plaintext client got an answer from the TLS port"
    );

    // A client that does not trust the certificate is refused too.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let untrusted = match tls_channel(&server, &other.cert.pem()).await {
        Err(_) => true,
        Ok(channel) => TranslationServiceClient::new(channel)
            .translate(one_text())
            .await
            .is_err(),
    };
    assert!(untrusted, "a client trusting another CA got an answer");
    server.stop().await;
}

#[tokio::test]
async fn tls_startup_fails_on_missing_files_with_their_path() {
    let args = serve_args(&[
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        "/nonexistent/key.pem",
    ]);
    let err = start_with(args, None).await.ended().await.unwrap_err();
    assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
}

fn with_key<T>(message: T, key: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    request
}

#[tokio::test]
async fn api_keys_guard_the_translator_but_not_health_or_reflection() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "# ops team\nkey-one\nkey-two\n").unwrap();
    let server = start_with(
        serve_args(&["--api-keys-file", keys.to_str().unwrap()]),
        None,
    )
    .await;
    wait_serving(&server).await; // health answers without a key
    assert_eq!(health(&server).await, ServingStatus::Serving);
    let mut client = server.client().await;

    for key in [None, Some("key-three"), Some("key-on")] {
        let err = client
            .translate(with_key(one_text(), key))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{key:?}: {err:?}");
    }
    let err = client
        .list_models(with_key(ListModelsRequest {}, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("Bearer"), "{}", err.message());

    for key in ["key-one", "key-two"] {
        let reply = client
            .translate(with_key(one_text(), Some(key)))
            .await
            .unwrap();
        assert!(!reply.into_inner().translations[0].text.is_empty());
    }
    let streamed = client
        .translate_stream(with_key(
            futures::stream::iter(vec![TranslateStreamRequest::from(one_text())]),
            Some("key-two"),
        ))
        .await
        .unwrap();
    let mut stream = streamed.into_inner();
    assert!(stream.message().await.unwrap().is_some());

    assert_reflection_open(&server).await;
    server.stop().await;
}

async fn assert_reflection_open(server: &TestServer) {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut client = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = client
        .server_reflection_info(futures::stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection answer {reply:?}");
    };
    assert!(list
        .service
        .iter()
        .any(|s| s.name == "tarjama.v1.TranslationService"));
}

#[tokio::test]
async fn empty_api_keys_file_fails_startup() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "\n# nobody yet\n").unwrap();
    let err = start_with(
        serve_args(&["--api-keys-file", keys.to_str().unwrap()]),
        None,
    )
    .await
    .ended()
    .await
    .unwrap_err();
    assert!(err.to_string().contains("has no keys"), "{err}");
}

/// `serve --log-format json` as a process: one JSON object per line, and one line per call
/// with its id, RPC, status, sizes and timings.
#[tokio::test]
async fn json_logs_have_one_line_per_call() {
    use std::io::{BufRead, BufReader};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tarjama"))
        .args(["serve", "--log-format", "json", "--listen", &listen])
        .args([
            "--translation-model",
            common::server::MARIAN,
            "--summarization-model",
            "none",
        ])
        .env("TARJAMA_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });

    let channel = async {
        for _ in 0..600 {
            if let Ok(c) = Channel::from_shared(format!("http://{listen}"))
                .unwrap()
                .connect()
                .await
            {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server never listened");
    }
    .await;
    // Health checks are not RPCs of ours: they leave no request lines.
    wait_serving_tls(channel.clone()).await;
    let mut client = TranslationServiceClient::new(channel);
    let mut request = tonic::Request::new(one_text());
    request
        .metadata_mut()
        .insert("x-request-id", "log-test-1".parse().unwrap());
    client.translate(request).await.unwrap();
    let bad = client
        .translate(TranslateRequest {
            texts: vec![],
            ..one_text()
        })
        .await;
    assert_eq!(bad.unwrap_err().code(), Code::InvalidArgument);

    // Our connection must be able to close when the server says goodbye: keep the runtime
    // free (no blocking wait) while the server shuts down.
    drop(client);
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut status = None;
    for _ in 0..600 {
        status = child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        status
            .expect("the server did not stop within 30 s")
            .success(),
        "exit 0 on SIGTERM"
    );
    let lines = lines.join().unwrap();
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let done: Vec<_> = events
        .iter()
        .filter(|e| e["message"] == "request done")
        .collect();
    let ours = done
        .iter()
        .find(|e| e["span"]["id"] == "log-test-1")
        .unwrap_or_else(|| panic!("no line for our call in {lines:#?}"));
    assert_eq!(ours["span"]["rpc"], "Translate");
    assert_eq!(ours["code"], "OK");
    for field in [
        "input_tokens",
        "output_tokens",
        "queue_ms",
        "inference_ms",
        "total_ms",
    ] {
        assert!(ours[field].is_u64(), "{field} in {ours}");
    }
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e["message"] == "request failed")
        .collect();
    assert_eq!(failed.len(), 1, "{lines:#?}");
    assert_eq!(failed[0]["code"], "INVALID_ARGUMENT");
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .contains("at least one text"),
        "{}",
        failed[0]
    );
}

/// A client holding a stream open must not keep a stopping server alive: after
/// --shutdown-timeout-secs its connection is closed and the server ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_forever_for_an_idle_stream() {
    let server = start_with(serve_args(&["--shutdown-timeout-secs", "1"]), None).await;
    wait_serving(&server).await;
    let mut client = server.client().await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(TranslateStreamRequest::from(one_text()))
        .await
        .unwrap();
    let mut replies = client
        .translate_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert!(replies.message().await.unwrap().is_some());
    // `tx` stays alive: the call is still in flight when shutdown begins.
    let ended = tokio::time::timeout(Duration::from_secs(20), server.outcome()).await;
    assert!(ended.expect("shutdown hung on an idle stream").is_ok());
    drop(tx);
}
