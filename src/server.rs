//! `tarjama serve`: load the models while the server already answers health checks, serve,
//! and shut down gracefully.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;

use crate::api::{AppState, Engines, TranslatorService};
use crate::config::{HubArgs, ServeArgs};
use crate::hub::{self, HubError, HubOptions, ModelSource, ResolvedModel};
use crate::model::{Device, ModelError, Seq2SeqModel};
use crate::pipeline::{ModelInfo, PipelineError, Summarizer, Task, Translator};
use crate::proto::{self, translator_server::TranslatorServer};
use crate::scheduler::SchedulerConfig;
use crate::tokenizer::{Tokenizer, TokenizerError};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error("cannot load the model in {}: {source}", dir.display())]
    Model {
        dir: std::path::PathBuf,
        source: ModelError,
    },
    #[error("cannot load the tokenizer: {0}")]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("model loading stopped unexpectedly: {0}")]
    Join(#[from] tokio::task::JoinError),
}

pub fn hub_options(args: &HubArgs, progress: bool) -> HubOptions {
    HubOptions {
        cache_dir: args.cache_dir.clone(),
        offline: args.offline,
        progress,
        ..HubOptions::default()
    }
}

/// Resolves (downloading if needed) a model given as a folder or `owner/name[@revision]`.
pub fn resolve_model(spec: &str, hub_args: &HubArgs) -> Result<ResolvedModel, HubError> {
    let source: ModelSource = spec.parse()?;
    hub::resolve(&source, &hub_options(hub_args, true))
}

/// Loads weights and tokenizer of a resolved translation model.
pub fn load_model(resolved: &ResolvedModel) -> Result<(Seq2SeqModel, Tokenizer), StartupError> {
    let started = std::time::Instant::now();
    let model =
        Seq2SeqModel::load(&resolved.dir, &Device::Cpu).map_err(|source| StartupError::Model {
            dir: resolved.dir.clone(),
            source,
        })?;
    let tokenizer = Tokenizer::from_dir(&resolved.dir)?;
    tracing::info!(model = %resolved.id, revision = %resolved.revision, ms = started.elapsed().as_millis() as u64, "model loaded");
    Ok((model, tokenizer))
}

/// What clients see of a resolved, loaded model.
pub fn model_info(resolved: &ResolvedModel, model: &Seq2SeqModel, task: Task) -> ModelInfo {
    ModelInfo::describe(model, task, resolved.id.clone(), resolved.revision.clone())
}

/// Resolves, loads and starts the translation model named by `spec`.
pub fn start_translator(
    spec: &str,
    hub_args: &HubArgs,
    scheduler: SchedulerConfig,
) -> Result<Translator, StartupError> {
    let resolved = resolve_model(spec, hub_args)?;
    let (model, tokenizer) = load_model(&resolved)?;
    let info = model_info(&resolved, &model, Task::Translation);
    Ok(Translator::start(model, tokenizer, info, scheduler)?)
}

/// Resolves, loads and starts the summarization model named by `spec` (`none`: no model).
pub fn start_summarizer(
    spec: &str,
    hub_args: &HubArgs,
    scheduler: SchedulerConfig,
) -> Result<Option<Summarizer>, StartupError> {
    if spec.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let resolved = resolve_model(spec, hub_args)?;
    let (model, tokenizer) = load_model(&resolved)?;
    let info = model_info(&resolved, &model, Task::Summarization);
    Ok(Some(Summarizer::start(model, tokenizer, info, scheduler)?))
}

/// Both models of `args`.
pub fn start_engines(args: &ServeArgs) -> Result<Engines, StartupError> {
    let scheduler = args.engine.scheduler_config();
    let translator = start_translator(&args.translation_model, &args.hub, scheduler.clone())?;
    let summarizer = start_summarizer(&args.summarization_model, &args.hub, scheduler)?;
    Ok(Engines {
        translator: Arc::new(translator),
        summarizer: summarizer.map(Arc::new),
    })
}

/// Serves on `listener` until `shutdown` completes. Health is NOT_SERVING until the models
/// are loaded and again from the moment shutdown begins; in-flight calls are finished.
pub async fn run(
    args: ServeArgs,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartupError> {
    let load = {
        let args = args.clone();
        move || start_engines(&args)
    };
    run_with_loader(args, listener, shutdown, load).await
}

/// [`run`] with the model loading supplied by the caller (it runs on a blocking thread
/// while the server already answers health checks).
pub async fn run_with_loader(
    args: ServeArgs,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    load: impl FnOnce() -> Result<Engines, StartupError> + Send + 'static,
) -> Result<(), StartupError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::NotServing).await;
    let state = Arc::new(AppState::new(args.limits.clone()));
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // v1alpha too: older grpcurl releases and many client libraries speak only that.
    let (reflection_v1, reflection_v1alpha) =
        (reflection().build_v1()?, reflection().build_v1alpha()?);
    let translator_service = TranslatorServer::new(TranslatorService::new(state.clone()))
        .max_decoding_message_size(args.limits.max_message_bytes)
        .max_encoding_message_size(args.limits.max_message_bytes);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let addr = listener.local_addr().ok();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(translator_service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stop_rx.await;
            }),
    );
    tracing::info!(?addr, "listening; loading models");

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
    server.await??;
    if let Some(engines) = engines {
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

async fn set_health(health: &tonic_health::server::HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health
        .set_service_status(
            <TranslatorServer<TranslatorService> as tonic::server::NamedService>::NAME,
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
