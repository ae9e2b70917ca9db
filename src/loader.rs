//! Resolving, loading and starting models: one place for `serve` and the CLI commands.

use std::sync::Arc;

use std::path::Path;

use crate::catalog::{self, Catalog, CatalogEntry, CatalogError};
use crate::config::{HubArgs, ServeArgs};
use crate::hub::{self, FetchedFolder, HubError, HubOptions, ModelSource, ResolvedModel};
use crate::model::{ComputeType, Device, ModelError, Seq2SeqModel};
use crate::pipeline::{
    CatalogRef, Engines, ModelInfo, PipelineError, Summarizer, Task, Translator,
};
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
    /// Boxed: its variants are large and startup errors are rare.
    #[error(transparent)]
    Catalog(Box<CatalogError>),
    #[error("cannot write {}: {source}", path.display())]
    Manifest {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl From<CatalogError> for LoadError {
    fn from(e: CatalogError) -> Self {
        LoadError::Catalog(Box::new(e))
    }
}

pub fn hub_options(args: &HubArgs, progress: bool) -> HubOptions {
    HubOptions {
        cache_dir: args.cache_dir.clone(),
        offline: args.offline,
        progress,
        ..HubOptions::default()
    }
}

/// A model chosen by a `--*-model` argument: where its files are, and what it is.
#[derive(Debug, Clone)]
pub struct ChosenModel {
    pub resolved: ResolvedModel,
    /// The hub repository the weights come from, when known.
    pub hub_id: Option<String>,
    pub entry: Option<CatalogEntry>,
}

/// Resolves (downloading if needed) a model given as a catalog name, a folder or
/// `owner/name[@revision]`. A catalog name is its folder under `--models-dir` when that
/// exists, else its hub repository at the catalogued revision.
pub fn resolve_model(spec: &str, hub_args: &HubArgs) -> Result<ChosenModel, LoadError> {
    let catalog = Catalog::builtin()?;
    let opts = hub_options(hub_args, true);
    // A catalog name wins over a folder of that name in the working directory (`./NAME`);
    // a bare word that is neither is an unknown name.
    if let Some(name) = catalog::as_catalog_name(spec) {
        if let Some(entry) = catalog.get(name) {
            return resolve_entry(entry.clone(), &hub_args.models_dir, &opts);
        }
        if !Path::new(name).exists() {
            return Err(catalog.unknown(name).into());
        }
    }
    let source: ModelSource = spec.parse()?;
    let resolved = hub::resolve(&source, &opts)?;
    let (hub_id, entry) = match &source {
        ModelSource::Hub { repo, .. } => (Some(repo.clone()), catalog.by_hub_id(repo).cloned()),
        ModelSource::Local(_) => (None, None),
    };
    Ok(ChosenModel {
        resolved,
        hub_id,
        entry,
    })
}

fn resolve_entry(
    entry: CatalogEntry,
    models_dir: &Path,
    opts: &HubOptions,
) -> Result<ChosenModel, LoadError> {
    let dir = entry.folder(models_dir);
    let resolved = if dir.exists() {
        entry.check_folder(&dir)?;
        let mut resolved = hub::resolve(&ModelSource::Local(dir.clone()), opts)?;
        if let Some(commit) = catalog::fetched_commit(&dir) {
            resolved.revision = commit;
        }
        resolved
    } else {
        let resolved = hub::resolve(&entry.hub_source(), opts)?;
        entry.check_commit(&resolved.revision)?;
        resolved
    };
    tracing::info!(model = %entry.name, hub_id = %entry.hub_id, revision = %entry.revision,
        commit = %resolved.revision, dir = %resolved.dir.display(), "catalog model resolved");
    Ok(ChosenModel {
        resolved,
        hub_id: Some(entry.hub_id.clone()),
        entry: Some(entry),
    })
}

/// `tarjama models fetch`: downloads catalog model `name` into `models_dir/NAME/` and
/// records where it came from there (`fetched.json`).
pub fn fetch_catalog_model(
    name: &str,
    models_dir: &Path,
    opts: &HubOptions,
) -> Result<FetchedFolder, LoadError> {
    let catalog = Catalog::builtin()?;
    let entry = catalog.lookup(name)?;
    let dir = entry.folder(models_dir);
    let fetched = hub::fetch_folder(
        &entry.hub_id,
        &entry.revision,
        &dir,
        entry.commit.as_deref(),
        opts,
    )?;
    entry.check_folder(&dir)?;
    let files: Vec<_> = fetched
        .files
        .iter()
        .map(|f| serde_json::json!({"name": f.name, "bytes": f.bytes, "sha256": f.sha256}))
        .collect();
    let manifest = serde_json::json!({
        "name": entry.name, "hub_id": entry.hub_id, "revision": entry.revision,
        "commit": fetched.commit, "files": files,
    });
    let path = dir.join(catalog::FETCH_MANIFEST);
    std::fs::write(&path, format!("{manifest:#}\n"))
        .map_err(|source| LoadError::Manifest { path, source })?;
    Ok(fetched)
}

/// Loads weights and tokenizer of a resolved model, its linear layers in `compute`.
pub fn load_model(
    chosen: &ChosenModel,
    compute: ComputeType,
) -> Result<(Seq2SeqModel, Tokenizer), LoadError> {
    let resolved = &chosen.resolved;
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
pub fn model_info(chosen: &ChosenModel, model: &Seq2SeqModel, task: Task) -> ModelInfo {
    let resolved = &chosen.resolved;
    let catalog = chosen.entry.as_ref().map(|e| CatalogRef {
        name: e.name.clone(),
        license: e.license.clone(),
    });
    ModelInfo::describe(model, task, resolved.id.clone(), resolved.revision.clone())
        .with_origin(chosen.hub_id.clone(), catalog)
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
    let (model, tokenizer) = load_model(&resolved, compute)?;
    let info = model_info(&resolved, &model, Task::Summarization);
    publish_model_info(&info);
    Ok(Some(Summarizer::start(model, tokenizer, info, scheduler)?))
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
