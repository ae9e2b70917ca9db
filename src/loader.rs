//! Resolving, loading and starting models: one place for `serve` and the CLI commands.

use std::sync::Arc;

use crate::config::{HubArgs, ServeArgs};
use crate::hub::{self, HubError, HubOptions, ModelSource, ResolvedModel};
use crate::model::{ComputeType, Device, ModelError, Seq2SeqModel};
use crate::pipeline::{Engines, ModelInfo, PipelineError, Summarizer, Task, Translator};
use crate::scheduler::SchedulerConfig;
use crate::telemetry;
use crate::tokenizer::{Tokenizer, TokenizerError};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
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
    #[error("{spec} now resolves to commit {got}, not {expected}…, the commit it was chosen at: pass --summarization-model OWNER/NAME@COMMIT to choose a revision")]
    MovedRevision {
        spec: String,
        expected: &'static str,
        got: String,
    },
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

/// Loads weights and tokenizer of a resolved model, its linear layers in `compute`.
pub fn load_model(
    resolved: &ResolvedModel,
    compute: ComputeType,
) -> Result<(Seq2SeqModel, Tokenizer), LoadError> {
    let started = std::time::Instant::now();
    let model = Seq2SeqModel::load_as(&resolved.dir, &Device::Cpu, compute).map_err(|source| {
        LoadError::Model {
            dir: resolved.dir.clone(),
            source,
        }
    })?;
    let tokenizer = Tokenizer::from_dir(&resolved.dir)?;
    let took = started.elapsed();
    metrics::gauge!(telemetry::MODEL_LOAD, "model" => resolved.id.clone()).set(took.as_secs_f64());
    tracing::info!(model = %resolved.id, revision = %resolved.revision, ms = took.as_millis() as u64, compute_type = %compute, "model loaded");
    Ok((model, tokenizer))
}

/// What clients see of a resolved, loaded model.
pub fn model_info(resolved: &ResolvedModel, model: &Seq2SeqModel, task: Task) -> ModelInfo {
    ModelInfo::describe(model, task, resolved.id.clone(), resolved.revision.clone())
}

/// `tarjama_model_info`: which model serves which task (only models started for serving).
fn publish_model_info(info: &ModelInfo) {
    metrics::gauge!(telemetry::MODEL_INFO,
        "task" => info.task.to_string(), "model" => info.id.clone(),
        "revision" => info.revision.clone(), "family" => info.family.name())
    .set(1.0);
}

/// Resolves, loads and starts the translation model named by `spec`; calls whose response
/// could exceed `max_response_bytes` are refused.
pub fn start_translator(
    spec: &str,
    hub_args: &HubArgs,
    scheduler: SchedulerConfig,
    max_response_bytes: usize,
    compute: ComputeType,
) -> Result<Translator, LoadError> {
    let resolved = resolve_model(spec, hub_args)?;
    let (model, tokenizer) = load_model(&resolved, compute)?;
    let info = model_info(&resolved, &model, Task::Translation);
    publish_model_info(&info);
    let translator = Translator::start(model, tokenizer, info, scheduler)?;
    Ok(translator.with_max_response_bytes(max_response_bytes))
}

/// Resolves, loads and starts the summarization model named by `spec` (`none`: no model).
pub fn start_summarizer(
    spec: &str,
    hub_args: &HubArgs,
    scheduler: SchedulerConfig,
    compute: ComputeType,
) -> Result<Option<Summarizer>, LoadError> {
    if spec.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let resolved = resolve_model(spec, hub_args)?;
    check_default_summarizer_commit(spec, &resolved)?;
    let (model, tokenizer) = load_model(&resolved, compute)?;
    let info = model_info(&resolved, &model, Task::Summarization);
    publish_model_info(&info);
    Ok(Some(Summarizer::start(model, tokenizer, info, scheduler)?))
}

/// The default summarizer is a pull-request ref: serve it only at the commit it was chosen
/// at, so that every replica serves the same weights.
fn check_default_summarizer_commit(spec: &str, resolved: &ResolvedModel) -> Result<(), LoadError> {
    use crate::config::{DEFAULT_SUMMARIZATION_COMMIT, DEFAULT_SUMMARIZATION_MODEL};
    if spec != DEFAULT_SUMMARIZATION_MODEL
        || resolved.revision.starts_with(DEFAULT_SUMMARIZATION_COMMIT)
    {
        return Ok(());
    }
    Err(LoadError::MovedRevision {
        spec: spec.to_string(),
        expected: DEFAULT_SUMMARIZATION_COMMIT,
        got: resolved.revision.clone(),
    })
}

/// Both models of `args`.
pub fn start_engines(args: &ServeArgs) -> Result<Engines, LoadError> {
    let scheduler = args.engine.scheduler_config();
    let (translation, summarization) = args.compute_types();
    let translator = start_translator(
        &args.translation_model,
        &args.hub,
        scheduler.clone(),
        args.limits.max_response_bytes,
        translation,
    )?;
    let summarizer = start_summarizer(
        &args.summarization_model,
        &args.hub,
        scheduler,
        summarization,
    )?;
    Ok(Engines {
        translator: Arc::new(translator),
        summarizer: summarizer.map(Arc::new),
    })
}

/// A translator with seeded random weights shaped by `config_json` (a model's config.json,
/// named `label`) and the tokenizer in `tokenizer_dir` (load tests: random weights cost what
/// real ones cost).
pub fn start_random_translator(
    config_json: &str,
    label: &str,
    tokenizer_dir: &std::path::Path,
    compute: ComputeType,
    scheduler: SchedulerConfig,
) -> Result<Translator, LoadError> {
    let model_error = |source| LoadError::Model {
        dir: label.into(),
        source,
    };
    let config = crate::model::ModelConfig::from_json_str(config_json).map_err(model_error)?;
    let model = Seq2SeqModel::random_as(config, 0, &Device::Cpu, compute).map_err(model_error)?;
    let tokenizer = Tokenizer::from_dir(tokenizer_dir)?;
    let id = format!("random:{label}");
    let info = ModelInfo::describe(&model, Task::Translation, id, "random".into());
    Ok(Translator::start(model, tokenizer, info, scheduler)?)
}
