//! Translation of whole texts: language check, normalisation, segmentation, tokenisation,
//! batched generation through the scheduler, reassembly with the source paragraphs.
//!
//! Everything here takes checked domain values (the API validated them); CPU work of more
//! than a few microseconds runs on blocking threads, never on the async workers.

mod backend;
mod prepare;
mod summarizer;
mod summary;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

pub use backend::ModelBackend;
use prepare::Prepared;
pub use summarizer::{AbstractiveSummary, Summarizer};
pub use summary::{summarize_english, SummaryMethod, SummaryOutput, SummaryRequest};

use crate::model::{ComputeType, GenerationParams, ModelFamily, Seq2SeqModel};
use crate::scheduler::{GenOptions, Scheduler, SchedulerConfig, SchedulerError, SentenceOutput};
use crate::tokenizer::Tokenizer;

/// Hard ceiling on beams a request may ask for: past it the cost grows with no gain.
pub const MAX_BEAM_SIZE: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error("tokenizer failed: {0}")]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error("model failed to load: {0}")]
    Model(#[from] crate::model::ModelError),
    #[error("no summarization model is loaded: use method EXTRACTIVE or AUTO, or start the server with --summarization-model")]
    NoSummarizationModel,
    #[error("internal error: {0}")]
    Internal(String),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SourceLanguage {
    Arabic,
    /// Arabic script is detected; mostly-Latin text passes through untranslated.
    Auto,
}

/// Checked per-request generation options (`None`: the model's default).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TranslateOptions {
    pub num_beams: Option<usize>,
    pub max_new_tokens: Option<usize>,
    pub length_penalty: Option<f32>,
}

/// What a loaded model is used for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Task {
    Translation,
    Summarization,
}

/// The generation defaults a model runs `task` with: a summarizer's own
/// `task_specific_params.summarization` when it has them.
pub fn task_defaults(model: &Seq2SeqModel, task: Task) -> GenerationParams {
    match task {
        Task::Translation => model.generation_defaults(),
        Task::Summarization => model
            .summarization_defaults()
            .unwrap_or_else(|| model.generation_defaults()),
    }
}

/// What a client sees of a loaded model.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub id: String,
    pub revision: String,
    pub family: ModelFamily,
    pub task: &'static str,
    pub source_language: &'static str,
    pub target_language: &'static str,
    pub max_input_tokens: usize,
    pub max_output_tokens: usize,
    pub default_beam_size: usize,
    pub compute_type: ComputeType,
}

impl ModelInfo {
    /// Describes `model`, loaded as `id` at `revision`, serving `task`.
    pub fn describe(model: &Seq2SeqModel, task: Task, id: String, revision: String) -> Self {
        let config = model.config();
        let defaults = task_defaults(model, task);
        let (task, source_language, target_language) = match task {
            Task::Translation => ("translation", "ar", "en"),
            Task::Summarization => ("summarization", "en", "en"),
        };
        Self {
            id,
            revision,
            family: config.model_type,
            task,
            source_language,
            target_language,
            max_input_tokens: config.max_position_embeddings,
            // max_length counts the decoder start token.
            max_output_tokens: defaults.max_length.saturating_sub(1).max(1),
            default_beam_size: defaults.num_beams.max(1),
            compute_type: model.compute_type(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TranslatedSegment {
    pub source: String,
    pub translation: String,
    pub score: f32,
    /// Character offsets in the client's text, end exclusive.
    pub source_start: usize,
    pub source_end: usize,
    pub paragraph: usize,
    pub split: bool,
    /// Generated ids (decoder start first); empty when passed through.
    pub token_ids: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TranslatedText {
    pub text: String,
    pub detected_language: &'static str,
    pub segments: Vec<TranslatedSegment>,
    pub input_tokens: usize,
    pub output_tokens: usize,
    pub queue_time: Duration,
    pub inference_time: Duration,
    /// From the start of `translate` to its answer.
    pub total_time: Duration,
}

/// One paragraph of a text, sent as soon as all its sentences are translated.
#[derive(Clone, Debug, PartialEq)]
pub struct TranslatedParagraph {
    pub index: usize,
    pub text: String,
    pub segments: Vec<TranslatedSegment>,
}

/// A loaded translation model with its tokenizer and the scheduler that batches for it.
pub struct Translator {
    tokenizer: Arc<Tokenizer>,
    scheduler: Scheduler,
    info: ModelInfo,
}

impl Translator {
    /// Starts the inference thread for `model`.
    pub fn start(
        model: Seq2SeqModel,
        tokenizer: Tokenizer,
        info: ModelInfo,
        config: SchedulerConfig,
    ) -> Result<Self, PipelineError> {
        let tokenizer = Arc::new(tokenizer);
        let backend = ModelBackend::new(model, tokenizer.clone());
        let scheduler = start_scheduler(backend, config, "translate")?;
        Ok(Self {
            tokenizer,
            scheduler,
            info,
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The options a request runs with: its own, else the model's defaults.
    fn gen_options(&self, options: &TranslateOptions) -> GenOptions {
        GenOptions {
            num_beams: Some(options.num_beams.unwrap_or(self.info.default_beam_size)),
            max_new_tokens: options.max_new_tokens,
            length_penalty: options.length_penalty,
        }
    }

    /// Translates one text, keeping its paragraph structure.
    pub async fn translate(
        &self,
        text: String,
        language: SourceLanguage,
        options: &TranslateOptions,
        deadline: Option<Instant>,
    ) -> Result<TranslatedText, PipelineError> {
        self.translate_with_progress(text, language, options, deadline, None)
            .await
    }

    /// As [`Translator::translate`], also sending each paragraph to `progress` as soon as all
    /// its sentences are translated, in paragraph order.
    pub async fn translate_with_progress(
        &self,
        text: String,
        language: SourceLanguage,
        options: &TranslateOptions,
        deadline: Option<Instant>,
        progress: Option<&mpsc::Sender<TranslatedParagraph>>,
    ) -> Result<TranslatedText, PipelineError> {
        let started = Instant::now();
        let tokenizer = self.tokenizer.clone();
        let budget = self.info.max_input_tokens;
        let prepared =
            tokio::task::spawn_blocking(move || Prepared::new(&text, language, &tokenizer, budget))
                .await
                .map_err(|e| PipelineError::Internal(format!("text preparation failed: {e}")))??;
        if !prepared.needs_translation() {
            send_ready_paragraphs(&prepared, &[], 0, progress).await;
            return Ok(prepared.passthrough(started));
        }
        let mut ticket =
            self.scheduler
                .submit(prepared.model_inputs(), self.gen_options(options), deadline)?;
        let mut outputs: Vec<Option<SentenceOutput>> = vec![None; ticket.len()];
        let mut next_paragraph = 0;
        while let Some(out) = ticket.next().await {
            let out = out?;
            let index = out.index;
            if let Some(slot) = outputs.get_mut(index) {
                *slot = Some(out);
            }
            next_paragraph =
                send_ready_paragraphs(&prepared, &outputs, next_paragraph, progress).await;
        }
        let outputs: Vec<SentenceOutput> = outputs
            .into_iter()
            .collect::<Option<_>>()
            .ok_or_else(|| PipelineError::Internal("a sentence got no result".into()))?;
        Ok(prepared.assemble(&outputs, started))
    }

    /// Stops taking work and lets the inference thread finish what is queued.
    pub fn shutdown(&self) {
        self.scheduler.shutdown();
    }
}

fn start_scheduler(
    backend: ModelBackend,
    config: SchedulerConfig,
    name: &str,
) -> Result<Scheduler, PipelineError> {
    Scheduler::start(backend, config, name)
        .map_err(|e| PipelineError::Internal(format!("cannot start the inference thread: {e}")))
}

/// Sends the finished paragraphs from `next` on; returns the first one not yet finished.
async fn send_ready_paragraphs(
    prepared: &Prepared,
    outputs: &[Option<SentenceOutput>],
    mut next: usize,
    progress: Option<&mpsc::Sender<TranslatedParagraph>>,
) -> usize {
    let Some(progress) = progress else {
        return next;
    };
    while next < prepared.paragraph_count() {
        let Some(paragraph) = prepared.paragraph(next, outputs) else {
            break;
        };
        // A receiver that went away no longer wants paragraphs; the caller notices.
        let _ = progress.send(paragraph).await;
        next += 1;
    }
    next
}

/// Queue time is the longest wait of any sentence; inference time sums the batches the text
/// ran in, each once.
fn timings(outputs: &[SentenceOutput]) -> (Duration, Duration) {
    let queue = outputs
        .iter()
        .map(|o| o.queue_time)
        .max()
        .unwrap_or_default();
    let mut batches: Vec<(u64, Duration)> = outputs
        .iter()
        .map(|o| (o.batch, o.inference_time))
        .collect();
    batches.sort_by_key(|b| b.0);
    batches.dedup_by_key(|b| b.0);
    (queue, batches.iter().map(|b| b.1).sum())
}
