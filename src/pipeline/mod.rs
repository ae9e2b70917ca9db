//! Translation of whole texts: language check, normalisation, segmentation, tokenisation,
//! batched generation through the scheduler, reassembly with the source paragraphs.
//!
//! Everything here takes checked domain values (the API validated them); CPU work of more
//! than a few microseconds runs on blocking threads, never on the async workers.

pub mod align;
mod article;
mod backend;
mod blocking;
mod engine;
mod html;
mod prepare;
mod summarizer;
mod summary;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

pub use article::{
    summarize_text, translate_article, Article, ArticleError, ArticlePart, ArticleProgress,
    Engines, SummarizedText, Totals, TranslatedArticle,
};
pub use backend::ModelBackend;
use html::Markup;
pub use html::TextFormat;
use prepare::Prepared;
pub use summarizer::{AbstractiveSummary, Summarizer};
pub use summary::{summarize_english, SummaryMethod, SummaryOutput, SummaryRequest};

use engine::Engine;

use crate::model::{
    Alignment, ComputeType, GenerationOverrides, GenerationParams, ModelFamily, Seq2SeqModel,
};
use crate::scheduler::{Outputs, SchedulerConfig, SchedulerError, SentenceOutput};
use crate::tokenizer::Tokenizer;

/// Hard ceiling on beams a request may ask for: past it the cost grows with no gain.
pub const MAX_BEAM_SIZE: usize = 16;

/// Characters of client text quoted in an error message.
const QUOTED_CHARS: usize = 64;

fn clip(s: &str) -> String {
    crate::text::clip(s, QUOTED_CHARS)
}

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
    /// A sentence the model cannot take even after every split.
    #[error("the sentence “{sentence}” cannot be translated: {reason}")]
    Input { sentence: String, reason: String },
    #[error("the response could reach {bound} bytes ({sentences} sentences of up to {max_new_tokens} generated tokens each); responses are limited to {limit} bytes: send less text per request, or set a lower max_output_tokens")]
    ResponseTooLarge {
        bound: usize,
        limit: usize,
        sentences: usize,
        max_new_tokens: usize,
    },
    /// The call ended (client gone, deadline) before its work was done.
    #[error("the call ended before its work was done")]
    Cancelled,
    #[error("internal error: {0}")]
    Internal(String),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SourceLanguage {
    Arabic,
    /// Arabic script is detected; mostly-Latin text passes through untranslated.
    Auto,
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
    /// The hub repository the weights come from, when known.
    pub hub_id: Option<String>,
    /// Where the model stands in the catalog, when it does.
    pub catalog: Option<CatalogRef>,
}

/// A loaded model's catalog entry, as clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogRef {
    pub name: String,
    pub license: String,
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
            hub_id: None,
            catalog: None,
        }
    }

    /// The same, with where the weights come from.
    pub fn with_origin(self, hub_id: Option<String>, catalog: Option<CatalogRef>) -> Self {
        Self {
            hub_id,
            catalog,
            ..self
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TranslatedSegment {
    pub source: String,
    pub translation: String,
    pub score: f32,
    /// `ar` when the model translated the segment; else the language of the text that was
    /// passed through (`en`, or `und` for numbers and symbols).
    pub detected_language: &'static str,
    /// Character offsets in the client's text, end exclusive.
    pub source_start: usize,
    pub source_end: usize,
    pub paragraph: usize,
    pub split: bool,
    /// Generated ids (decoder start first); empty when passed through.
    pub token_ids: Vec<u32>,
    /// The model's token alignment, when the text was run [`PreparedText::with_alignment`]
    /// (see [`Translator::word_alignment`]).
    pub alignment: Option<Alignment>,
    /// The segment's words linked to its translation's, when the text was prepared for
    /// markup (HTML): source words in the client's text, protected spans included.
    pub words: Option<align::SegmentWords>,
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
    /// For an HTML text (whose `text` is the translated document): the English of its text
    /// as plain paragraphs.
    pub plain_text: Option<String>,
}

impl TranslatedText {
    /// The English as plain text (what summaries read).
    pub fn english(&self) -> &str {
        self.plain_text.as_deref().unwrap_or(&self.text)
    }
}

/// A client's text and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceText {
    pub text: String,
    pub format: TextFormat,
}

impl SourceText {
    pub fn plain(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            format: TextFormat::Plain,
        }
    }

    pub fn html(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            format: TextFormat::Html,
        }
    }
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
    engine: Engine,
    /// Most bytes one generated token adds to a translation.
    token_bytes: usize,
    /// Largest response a call may need; calls that could need more are refused up front.
    max_response_bytes: usize,
}

/// A text normalised, segmented and tokenised, ready for the model.
pub struct PreparedText {
    prepared: Prepared,
    started: Instant,
    alignment: bool,
    /// An HTML text's document, to write the translation back into.
    markup: Option<Arc<Markup>>,
}

impl PreparedText {
    pub fn sentences(&self) -> usize {
        self.prepared.model_inputs_len()
    }

    /// Run with alignment: each translated segment carries its token alignment. It costs
    /// memory until the text is done (source × generated tokens per sentence), so only
    /// texts that need it ask.
    pub fn with_alignment(mut self) -> Self {
        self.alignment = true;
        self
    }
}

/// What a call costs, known before anything is queued: queue budget (source tokens ×
/// beams) and the most bytes its response can take.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallCost {
    pub token_beams: usize,
    pub response_bytes: usize,
    sentences: usize,
    max_new_tokens: usize,
}

impl std::ops::Add for CallCost {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self {
            token_beams: self.token_beams.saturating_add(other.token_beams),
            response_bytes: self.response_bytes.saturating_add(other.response_bytes),
            sentences: self.sentences + other.sentences,
            max_new_tokens: self.max_new_tokens.max(other.max_new_tokens),
        }
    }
}

/// A many-text call failed: which text (`None`: the call as a whole), and why.
#[derive(Debug)]
pub struct TextError {
    pub index: Option<usize>,
    pub error: PipelineError,
}

impl Translator {
    /// Starts the inference thread for `model`.
    pub fn start(
        model: Seq2SeqModel,
        tokenizer: Tokenizer,
        info: ModelInfo,
        config: SchedulerConfig,
    ) -> Result<Self, PipelineError> {
        let token_bytes = tokenizer.max_token_bytes();
        let engine = Engine::start(model, tokenizer, info, Task::Translation, config)?;
        Ok(Self {
            engine,
            token_bytes,
            max_response_bytes: usize::MAX,
        })
    }

    /// Refuse calls whose response could exceed `bytes` (the server's message limit).
    pub fn with_max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    pub fn info(&self) -> &ModelInfo {
        &self.engine.info
    }

    /// The most one call may cost (source tokens × beams).
    pub fn max_request_tokens(&self) -> usize {
        self.engine.scheduler.max_request_tokens()
    }

    /// Normalises, segments and tokenises `text` on the preparation pool (stopped when the
    /// returned future is dropped).
    pub async fn prepare(
        &self,
        text: SourceText,
        language: SourceLanguage,
    ) -> Result<PreparedText, PipelineError> {
        let started = Instant::now();
        let tokenizer = self.engine.tokenizer.clone();
        let limits = self.engine.scheduler.limits().clone();
        let (prepared, markup) = blocking::run("text preparation", move |cancel| {
            let (markup, plain) = match text.format {
                TextFormat::Plain => (None, text.text),
                TextFormat::Html => {
                    let (markup, plain) = Markup::parse(text.text)?;
                    (Some(Arc::new(markup)), plain)
                }
            };
            let mut prepared = Prepared::new(&plain, language, &tokenizer, &limits, cancel)?;
            if markup.is_some() {
                prepared.link_words();
            }
            Ok((prepared, markup))
        })
        .await?;
        Ok(PreparedText {
            alignment: prepared.needs_alignment(),
            prepared,
            started,
            markup,
        })
    }

    /// What translating `text` with `options` costs.
    pub fn cost(&self, text: &PreparedText, options: &GenerationOverrides) -> CallCost {
        let options = self.engine.request_options(options);
        let beams = options.num_beams.unwrap_or(1).max(1);
        let max_new_tokens = self.engine.scheduler.limits().max_steps(&options);
        let mut response_bytes = text
            .prepared
            .response_bytes(max_new_tokens, self.token_bytes);
        if let Some(markup) = &text.markup {
            let translations = text
                .sentences()
                .saturating_mul(max_new_tokens)
                .saturating_mul(self.token_bytes);
            response_bytes = response_bytes.saturating_add(markup.response_bytes(translations));
        }
        CallCost {
            token_beams: text.prepared.source_tokens().saturating_mul(beams),
            response_bytes,
            sentences: text.sentences(),
            max_new_tokens,
        }
    }

    /// Refuses, for good, a call that costs more than one call may: over the per-request
    /// queue budget, or with a response that could exceed the message limit.
    pub fn admit(&self, cost: CallCost) -> Result<(), PipelineError> {
        let limit = self.max_request_tokens();
        if cost.token_beams > limit {
            return Err(SchedulerError::RequestTooLarge {
                cost: cost.token_beams,
                limit,
            }
            .into());
        }
        if cost.response_bytes > self.max_response_bytes {
            return Err(PipelineError::ResponseTooLarge {
                bound: cost.response_bytes,
                limit: self.max_response_bytes,
                sentences: cost.sentences,
                max_new_tokens: cost.max_new_tokens,
            });
        }
        Ok(())
    }

    /// Translates one text, keeping its paragraph structure.
    pub async fn translate(
        &self,
        text: SourceText,
        language: SourceLanguage,
        options: &GenerationOverrides,
        deadline: Option<Instant>,
    ) -> Result<TranslatedText, PipelineError> {
        let prepared = self.prepare(text, language).await?;
        self.admit(self.cost(&prepared, options))?;
        self.run(prepared, options, deadline, None).await
    }

    /// Translates several texts of one call: all are prepared and the call's total cost
    /// is admitted before any is queued; then they run side by side. The first failure
    /// ends the call (dropping, and so cancelling, the others).
    pub async fn translate_all(
        &self,
        texts: Vec<SourceText>,
        language: SourceLanguage,
        options: &GenerationOverrides,
        deadline: Option<Instant>,
    ) -> Result<Vec<TranslatedText>, TextError> {
        let prepare = texts
            .into_iter()
            .enumerate()
            .map(|(index, text)| async move {
                self.prepare(text, language)
                    .await
                    .map_err(|error| TextError {
                        index: Some(index),
                        error,
                    })
            });
        let prepared = futures::future::try_join_all(prepare).await?;
        let total = prepared
            .iter()
            .map(|p| self.cost(p, options))
            .fold(CallCost::default(), |a, b| a + b);
        // The call as a whole is refused: no text is at fault alone.
        self.admit(total)
            .map_err(|error| TextError { index: None, error })?;
        let run = prepared
            .into_iter()
            .enumerate()
            .map(|(index, p)| async move {
                self.run(p, options, deadline, None)
                    .await
                    .map_err(|error| TextError {
                        index: Some(index),
                        error,
                    })
            });
        futures::future::try_join_all(run).await
    }

    /// Translates a prepared text (admitted by the caller), sending each paragraph to
    /// `progress` as soon as all its sentences are translated, in paragraph order.
    pub async fn run(
        &self,
        text: PreparedText,
        options: &GenerationOverrides,
        deadline: Option<Instant>,
        progress: Option<&mpsc::Sender<TranslatedParagraph>>,
    ) -> Result<TranslatedText, PipelineError> {
        let PreparedText {
            prepared,
            started,
            alignment,
            markup,
        } = text;
        let outputs = self
            .generate(
                &prepared,
                alignment,
                markup.as_ref(),
                options,
                deadline,
                progress,
            )
            .await?;
        // Assembly re-tokenises aligned sentences and writing a document back is linear in
        // its size: both off the async workers.
        blocking::run("text assembly", move |_| {
            let done = match outputs {
                Some(outputs) => prepared.assemble(&outputs, started),
                None => prepared.passthrough(started),
            };
            Ok(match markup {
                Some(m) => m.finish(done),
                None => done,
            })
        })
        .await
    }

    /// Runs `prepared`'s model inputs, sending paragraphs to `progress` as they are done;
    /// the outputs in input order (`None`: nothing to translate).
    async fn generate(
        &self,
        prepared: &Prepared,
        alignment: bool,
        markup: Option<&Arc<Markup>>,
        options: &GenerationOverrides,
        deadline: Option<Instant>,
        progress: Option<&mpsc::Sender<TranslatedParagraph>>,
    ) -> Result<Option<Vec<SentenceOutput>>, PipelineError> {
        let progress = progress.map(|tx| Progress { tx, markup });
        let progress = progress.as_ref();
        if !prepared.needs_translation() {
            send_ready_paragraphs(prepared, &[], 0, progress).await;
            return Ok(None);
        }
        let options = self.engine.request_options(options);
        let scheduler = &self.engine.scheduler;
        let inputs = prepared.model_inputs();
        let mut ticket = scheduler.submit_with(inputs, options, deadline, alignment)?;
        let mut outputs = Outputs::new(ticket.len());
        let mut next_paragraph = 0;
        while let Some(out) = ticket.next().await {
            outputs.put(out?);
            next_paragraph =
                send_ready_paragraphs(prepared, outputs.slots(), next_paragraph, progress).await;
        }
        Ok(Some(outputs.into_complete()?))
    }

    /// Which words of `segment`'s translation came from which words of its source (it must
    /// have been run [`PreparedText::with_alignment`]). Tokenises the source again: run it
    /// on a blocking thread. A segment with protected spans was run on its text without
    /// them, so its alignment does not fit `source` and this returns an error.
    pub fn word_alignment(
        &self,
        segment: &TranslatedSegment,
    ) -> Result<align::WordAlignment, align::AlignError> {
        let tokens = segment
            .alignment
            .as_ref()
            .ok_or(align::AlignError::NotRecorded)?;
        align::align_sentence(
            &self.engine.tokenizer,
            &segment.source,
            &segment.token_ids,
            tokens,
        )
    }

    /// Stops taking work and lets the inference thread finish what is queued.
    pub fn shutdown(&self) {
        self.engine.scheduler.shutdown();
    }

    /// Ends queued and running work at once (the shutdown grace period is over).
    pub fn abort(&self) {
        self.engine.scheduler.abort();
    }
}

/// Where finished paragraphs go, written back into their HTML for an HTML text.
struct Progress<'a> {
    tx: &'a mpsc::Sender<TranslatedParagraph>,
    markup: Option<&'a Arc<Markup>>,
}

/// Sends the finished paragraphs from `next` on; returns the first one not yet finished.
async fn send_ready_paragraphs(
    prepared: &Prepared,
    outputs: &[Option<SentenceOutput>],
    mut next: usize,
    progress: Option<&Progress<'_>>,
) -> usize {
    let Some(progress) = progress else {
        return next;
    };
    while next < prepared.paragraph_count() {
        let Some(paragraph) = prepared.paragraph(next, outputs) else {
            break;
        };
        let paragraph = match progress.markup {
            // Rendering a paragraph's HTML is linear in its markup: off the async workers.
            Some(m) => {
                let m = Arc::clone(m);
                match blocking::run("html paragraph", move |_| Ok(m.paragraph(paragraph))).await {
                    Ok(p) => p,
                    // The call is over (its end is noticed by the caller).
                    Err(_) => return next,
                }
            }
            None => paragraph,
        };
        // A receiver that went away no longer wants paragraphs; the caller notices.
        let _ = progress.tx.send(paragraph).await;
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
