//! `tarjama loadtest`: concurrent clients over loopback for a fixed time, mixed request
//! sizes, against a running server or an in-process one serving an opus-mt-shaped model
//! with random weights (which costs what the real one costs per token).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tonic::transport::Channel;

use crate::config::{LoadtestArgs, ServeArgs};
use crate::loader;
use crate::model::bench::peak_rss_kib;
use crate::pipeline::Engines;
use crate::proto::translation_service_client::TranslationServiceClient;
use crate::proto::{TextFormat, TextInput, TranslateRequest, TranslationOptions};
use crate::server::{self, StartupError};

#[derive(Debug, thiserror::Error)]
pub enum LoadtestError {
    #[error("cannot read {0}: {1}")]
    Io(String, std::io::Error),
    /// A default file of a checkout is missing (an installed binary): name the flag.
    #[error("{path} does not exist (the default is a file of a repository checkout): pass {flag} with a path")]
    MissingDefault { path: String, flag: &'static str },
    #[error("no sentences in the text file")]
    NoText,
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error("model: {0}")]
    Model(#[from] crate::model::ModelError),
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, tonic::transport::Error),
}

#[derive(Debug, Default)]
pub struct LoadReport {
    pub seconds: f64,
    pub requests_ok: usize,
    pub output_tokens: u64,
    pub latencies_ms: Vec<f64>,
    pub errors: BTreeMap<String, usize>,
    /// Server RSS (in-process mode only), KiB: after warm-up and at the end; and the peak.
    pub rss_after_warmup_kib: Option<u64>,
    pub rss_end_kib: Option<u64>,
    pub peak_rss_kib: Option<u64>,
}

impl LoadReport {
    pub fn percentile(&self, p: f64) -> f64 {
        let mut v = self.latencies_ms.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        if v.is_empty() {
            return 0.0;
        }
        let i = ((v.len() - 1) as f64 * p).round() as usize;
        v[i.min(v.len() - 1)]
    }
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Request mix: one sentence, one paragraph, or a whole article, cycling.
fn request_texts(article: &str) -> Result<Vec<String>, LoadtestError> {
    let paragraphs: Vec<&str> = article.lines().filter(|l| !l.trim().is_empty()).collect();
    let sentences: Vec<&str> = paragraphs
        .iter()
        .flat_map(|p| p.split(['.', '؟']))
        .map(str::trim)
        .filter(|s| s.split_whitespace().count() >= 2)
        .collect();
    if sentences.is_empty() {
        return Err(LoadtestError::NoText);
    }
    let mut texts: Vec<String> = sentences.iter().map(|s| s.to_string()).collect();
    texts.extend(paragraphs.iter().map(|p| p.to_string()));
    texts.push(article.to_string());
    Ok(texts)
}

/// Starts a server on 127.0.0.1:0 with random weights shaped by `config`.
async fn start_random_server(
    args: &LoadtestArgs,
) -> Result<(SocketAddr, tokio::sync::oneshot::Sender<()>), LoadtestError> {
    let config = crate::model::bench::read_or(
        args.random_model_config.as_deref(),
        crate::model::bench::OPUS_MT_CONFIG_JSON,
    )?;
    let label = args
        .random_model_config
        .as_ref()
        .map_or("opus-mt-ar-en".to_string(), |p| p.display().to_string());
    let tokenizer_dir = existing(&args.tokenizer, "--tokenizer")?.to_path_buf();
    let serve: ServeArgs = args.serve_args();
    let scheduler = serve.engine.scheduler_config();
    let compute = serve.engine.compute_type;
    let load = move || -> Result<Engines, StartupError> {
        let translator =
            loader::start_random_translator(&config, &label, &tokenizer_dir, compute, scheduler)?;
        Ok(Engines {
            translator: Arc::new(translator),
            summarizer: None,
        })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| LoadtestError::Io("127.0.0.1:0".into(), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| LoadtestError::Io("listener".into(), e))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listeners = server::Listeners {
        grpc: listener,
        metrics: None,
        health: None,
    };
    tokio::spawn(server::run_with_loader(
        serve,
        listeners,
        async {
            let _ = stopped.await;
        },
        load,
    ));
    Ok((addr, stop))
}

async fn connect(addr: &str) -> Result<TranslationServiceClient<Channel>, LoadtestError> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let attempt = Channel::from_shared(format!("http://{addr}"))
            .map_err(|e| LoadtestError::Io(addr.into(), std::io::Error::other(e)))?
            .connect()
            .await;
        match attempt {
            Ok(channel) => return Ok(TranslationServiceClient::new(channel)),
            Err(e) if Instant::now() > deadline => {
                return Err(LoadtestError::Connect(addr.into(), e))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Waits until the server answers (models loaded).
async fn wait_ready(client: &mut TranslationServiceClient<Channel>) {
    for _ in 0..600 {
        if client
            .list_models(crate::proto::ListModelsRequest {})
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `path`, which must exist; a missing default names the flag that replaces it.
fn existing<'a>(
    path: &'a std::path::Path,
    flag: &'static str,
) -> Result<&'a std::path::Path, LoadtestError> {
    if path.exists() {
        Ok(path)
    } else {
        Err(LoadtestError::MissingDefault {
            path: path.display().to_string(),
            flag,
        })
    }
}

pub async fn run(args: LoadtestArgs) -> Result<LoadReport, LoadtestError> {
    let text = existing(&args.text, "--text")?;
    let article = std::fs::read_to_string(text)
        .map_err(|e| LoadtestError::Io(text.display().to_string(), e))?;
    let texts = Arc::new(request_texts(&article)?);
    let (addr, stop) = match &args.addr {
        Some(addr) => (addr.clone(), None),
        None => {
            let (addr, stop) = start_random_server(&args).await?;
            (addr.to_string(), Some(stop))
        }
    };
    let mut client = connect(&addr).await?;
    wait_ready(&mut client).await;
    let report = Arc::new(Mutex::new(LoadReport::default()));
    let started = Instant::now();
    let end = started + Duration::from_secs(args.seconds);
    let warmup = Duration::from_secs(args.seconds.min(10));
    let rss_probe = {
        let report = report.clone();
        let local = stop.is_some();
        tokio::spawn(async move {
            tokio::time::sleep(warmup).await;
            if local {
                report.lock().await.rss_after_warmup_kib = rss_kib();
            }
        })
    };
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let client = client.clone();
        let texts = texts.clone();
        let report = report.clone();
        let max_output_tokens = args.max_output_tokens;
        tasks.push(tokio::spawn(client_loop(
            c,
            client,
            texts,
            report,
            end,
            max_output_tokens,
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
    let _ = rss_probe.await;
    let mut report = std::mem::take(&mut *report.lock().await);
    report.seconds = started.elapsed().as_secs_f64();
    if let Some(stop) = stop {
        report.rss_end_kib = rss_kib();
        report.peak_rss_kib = peak_rss_kib();
        let _ = stop.send(());
    }
    Ok(report)
}

async fn client_loop(
    index: usize,
    mut client: TranslationServiceClient<Channel>,
    texts: Arc<Vec<String>>,
    report: Arc<Mutex<LoadReport>>,
    end: Instant,
    max_output_tokens: u32,
) {
    let mut i = index * 7;
    while Instant::now() < end {
        let text = &texts[i % texts.len()];
        i += 1;
        let request = TranslateRequest {
            texts: vec![TextInput {
                format: TextFormat::Plain as i32,
                id: i.to_string(),
                text: text.clone(),
            }],
            source_language: "ar".into(),
            target_language: "en".into(),
            options: Some(TranslationOptions {
                beam_size: Some(1),
                max_output_tokens: Some(max_output_tokens),
                length_penalty: 0.0,
            }),
        };
        let sent = Instant::now();
        let result = client.translate(request).await;
        let ms = sent.elapsed().as_secs_f64() * 1000.0;
        let mut r = report.lock().await;
        match result {
            Ok(reply) => {
                r.requests_ok += 1;
                r.latencies_ms.push(ms);
                r.output_tokens += reply
                    .into_inner()
                    .translations
                    .iter()
                    .filter_map(|t| t.usage.as_ref())
                    .map(|u| u.output_tokens as u64)
                    .sum::<u64>();
            }
            Err(status) => {
                *r.errors.entry(format!("{:?}", status.code())).or_default() += 1;
                drop(r);
                if status.code() == tonic::Code::ResourceExhausted {
                    // Back off as a well-behaved client would.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}
