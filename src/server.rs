//! `tarjama serve`: load the models while the server already answers health checks, serve,
//! and shut down gracefully.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::ServingStatus;

use crate::api::{ApiKeys, ApiKeysError, AppState, Authenticated, TarjamaService};
use crate::config::ServeArgs;
use crate::loader::{self, LoadError};
use crate::pipeline::Engines;
use crate::proto::{self, translation_service_server::TranslationServiceServer};
use crate::telemetry::{self, TelemetryError};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("model loading stopped unexpectedly: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot read the TLS {what} {path}: {source}")]
    TlsFile {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    ApiKeys(#[from] ApiKeysError),
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
}

/// The sockets a server answers on, bound before it starts (tests bind port 0).
pub struct Listeners {
    pub grpc: TcpListener,
    /// Prometheus `/metrics` over plain HTTP.
    pub metrics: Option<TcpListener>,
    /// gRPC health checks only, in plaintext.
    pub health: Option<TcpListener>,
}

impl Listeners {
    /// Binds `--listen` and, when set, `--metrics-addr` and `--health-addr`.
    pub async fn bind(args: &ServeArgs) -> Result<Self, StartupError> {
        let grpc = bind(args.listen).await?;
        let metrics = match args.metrics_addr {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let health = match args.health_addr {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        Ok(Self {
            grpc,
            metrics,
            health,
        })
    }
}

async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Listen { addr, source })
}

/// Serves on `listener` until `shutdown` completes. Health is NOT_SERVING until the models
/// are loaded and again from the moment shutdown begins; in-flight calls are finished.
pub async fn run(
    args: ServeArgs,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartupError> {
    let load = {
        let args = args.clone();
        move || Ok(loader::start_engines(&args)?)
    };
    run_with_loader(args, listeners, shutdown, load).await
}

/// [`run`] with the model loading supplied by the caller (it runs on a blocking thread
/// while the server already answers health checks).
pub async fn run_with_loader(
    args: ServeArgs,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
    load: impl FnOnce() -> Result<Engines, StartupError> + Send + 'static,
) -> Result<(), StartupError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::NotServing).await;
    let side = SideServers::start(listeners.metrics, listeners.health, health_service.clone())?;
    let result = serve_grpc(
        args,
        listeners.grpc,
        (health, health_service),
        shutdown,
        load,
    )
    .await;
    side.stop().await;
    result
}

/// Plain-HTTP companions of the gRPC port: `/metrics`, and health checks for probes that
/// cannot speak TLS. They outlive the gRPC server so probes see NOT_SERVING to the end.
struct SideServers {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<(&'static str, tokio::task::JoinHandle<Result<(), String>>)>,
}

impl SideServers {
    fn start<H: Health>(
        metrics: Option<TcpListener>,
        health: Option<TcpListener>,
        health_service: HealthServer<H>,
    ) -> Result<Self, StartupError> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let until_stopped = move || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            }
        };
        let mut tasks = Vec::new();
        if let Some(listener) = metrics {
            // Installed before any model loads, so load times and model info are recorded.
            let handle = telemetry::install()?;
            tracing::info!(addr = ?listener.local_addr().ok(), "serving metrics at /metrics");
            let serve = telemetry::serve(listener, handle, until_stopped());
            tasks.push((
                "metrics",
                tokio::spawn(async { serve.await.map_err(|e| e.to_string()) }),
            ));
        }
        if let Some(listener) = health {
            tracing::info!(addr = ?listener.local_addr().ok(), "serving plaintext health checks");
            let serve = tonic::transport::Server::builder()
                .add_service(health_service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), until_stopped());
            tasks.push((
                "health",
                tokio::spawn(async { serve.await.map_err(|e| e.to_string()) }),
            ));
        }
        Ok(Self { stop, tasks })
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        for (name, task) in self.tasks {
            if let Ok(Err(error)) = task.await {
                tracing::warn!(%error, "{name} endpoint failed");
            }
        }
    }
}

/// The gRPC server builder: streams per connection, keepalive (a peer that vanished is
/// found and its calls cancelled), connection age, and TLS when a certificate is configured.
fn grpc_builder(args: &ServeArgs) -> Result<tonic::transport::Server, StartupError> {
    let secs = |s: u64| (s > 0).then(|| std::time::Duration::from_secs(s));
    let transport = &args.transport;
    let mut builder = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(transport.max_concurrent_streams))
        .http2_keepalive_interval(secs(transport.http2_keepalive_interval_secs))
        .http2_keepalive_timeout(secs(transport.http2_keepalive_timeout_secs))
        .tcp_keepalive(secs(transport.http2_keepalive_interval_secs));
    if args.max_connection_age_secs > 0 {
        builder = builder
            .max_connection_age(std::time::Duration::from_secs(args.max_connection_age_secs));
    }
    let security = &args.security;
    let (Some(cert), Some(key)) = (&security.tls_cert, &security.tls_key) else {
        return Ok(builder);
    };
    let read = |what, path: &std::path::PathBuf| {
        std::fs::read(path).map_err(|source| StartupError::TlsFile {
            what,
            path: path.display().to_string(),
            source,
        })
    };
    let identity =
        tonic::transport::Identity::from_pem(read("certificate", cert)?, read("key", key)?);
    Ok(builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?)
}

async fn serve_grpc<H: Health>(
    args: ServeArgs,
    listener: TcpListener,
    (health, health_service): (tonic_health::server::HealthReporter, HealthServer<H>),
    shutdown: impl Future<Output = ()> + Send + 'static,
    load: impl FnOnce() -> Result<Engines, StartupError> + Send + 'static,
) -> Result<(), StartupError> {
    let mut builder = grpc_builder(&args)?;
    let api_keys = args
        .security
        .api_keys_file
        .as_deref()
        .map(ApiKeys::from_file)
        .transpose()?;
    let state = Arc::new(AppState::new(args.limits.clone()));
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // v1alpha too: older grpcurl releases and many client libraries speak only that.
    let (reflection_v1, reflection_v1alpha) =
        (reflection().build_v1()?, reflection().build_v1alpha()?);
    let translator_service = TranslationServiceServer::new(TarjamaService::new(state.clone()))
        .max_decoding_message_size(args.limits.max_message_bytes)
        .max_encoding_message_size(args.limits.max_response_bytes);
    let translator_service = Authenticated::new(translator_service, api_keys);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let addr = listener.local_addr().ok();
    let tls = args.security.tls_cert.is_some();
    let server = tokio::spawn(
        builder
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(translator_service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stop_rx.await;
            }),
    );
    tracing::info!(?addr, tls, "listening; loading models");

    let loading = tokio::task::spawn_blocking(load);
    tokio::pin!(shutdown);
    tokio::select! {
        loaded = loading => {
            let engines = match loaded? {
                Ok(e) => e,
                Err(e) => {
                    let _ = stop_tx.send(());
                    let _ = server.await;
                    return Err(e);
                }
            };
            tracing::info!(model = %engines.translator.info().id, summarizer = engines.summarizer.is_some(), "serving");
            state.set_engines(engines);
            set_health(&health, ServingStatus::Serving).await;
            (&mut shutdown).await;
        }
        _ = &mut shutdown => {}
    }

    tracing::info!("shutting down: refusing new calls, finishing the ones in flight");
    set_health(&health, ServingStatus::NotServing).await;
    let engines = state.take_engines();
    let _ = stop_tx.send(());
    let grace = std::time::Duration::from_secs(args.shutdown_timeout_secs);
    let finished = finish_in_flight(server, grace, &state, engines.as_deref()).await?;
    if let (Some(engines), true) = (engines, finished) {
        // Nothing is queued any more; this only joins the idle inference threads.
        tokio::task::spawn_blocking(move || {
            engines.translator.shutdown();
            if let Some(s) = &engines.summarizer {
                s.shutdown();
            }
        })
        .await?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// After the grace period, calls get this long to deliver their UNAVAILABLE before their
/// connections are dropped.
const ABORT_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits for the calls in flight, at most `grace`. Then every call still running ends with
/// UNAVAILABLE, queued and running inference is dropped, and the connections still open
/// are closed. Returns whether everything finished within the grace period.
async fn finish_in_flight(
    mut server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    grace: std::time::Duration,
    state: &AppState,
    engines: Option<&Engines>,
) -> Result<bool, StartupError> {
    if let Ok(joined) = tokio::time::timeout(grace, &mut server).await {
        joined??;
        return Ok(true);
    }
    tracing::warn!(
        secs = grace.as_secs(),
        "calls still running after the shutdown timeout; ending them with UNAVAILABLE"
    );
    state.abort_calls();
    if let Some(engines) = engines {
        engines.translator.abort();
        if let Some(s) = &engines.summarizer {
            s.abort();
        }
    }
    if tokio::time::timeout(ABORT_GRACE, &mut server)
        .await
        .is_err()
    {
        tracing::warn!("connections still open; closing them");
        server.abort();
    }
    Ok(false)
}

async fn set_health(health: &tonic_health::server::HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health
        .set_service_status(
            <TranslationServiceServer<TarjamaService> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
