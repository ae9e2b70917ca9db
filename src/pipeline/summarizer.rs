//! Abstractive summaries with a BART-family model through the same engine and scheduler.

use std::time::{Duration, Instant};

use super::engine::Engine;
use super::{ModelInfo, PipelineError, Task};
use crate::model::{GenerationOverrides, Seq2SeqModel};
use crate::scheduler::SchedulerConfig;
use crate::text;
use crate::tokenizer::Tokenizer;

#[derive(Clone, Debug, PartialEq)]
pub struct AbstractiveSummary {
    pub text: String,
    /// The input was over the model's window and was cut at a sentence boundary.
    pub input_truncated: bool,
    pub input_tokens: usize,
    pub output_tokens: usize,
    pub queue_time: Duration,
    pub inference_time: Duration,
}

pub struct Summarizer {
    engine: Engine,
}

impl Summarizer {
    /// Starts the inference thread; generation defaults come from the model's
    /// `task_specific_params.summarization` when it has them.
    pub fn start(
        model: Seq2SeqModel,
        tokenizer: Tokenizer,
        info: ModelInfo,
        config: SchedulerConfig,
    ) -> Result<Self, PipelineError> {
        let engine = Engine::start(model, tokenizer, info, Task::Summarization, config)?;
        Ok(Self { engine })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.engine.info
    }

    pub async fn summarize(
        &self,
        english: String,
        options: &GenerationOverrides,
        deadline: Option<Instant>,
    ) -> Result<AbstractiveSummary, PipelineError> {
        let tokenizer = self.engine.tokenizer.clone();
        let window = self.engine.info.max_input_tokens;
        let (ids, input_truncated) = super::blocking::run("summary input", move |_| {
            fit_window(&english, &tokenizer, window)
        })
        .await?;
        let input_tokens = ids.len();
        let options = self.engine.request_options(options);
        let outputs = self
            .engine
            .scheduler
            .submit(vec![ids], options, deadline)?
            .collect()
            .await?;
        let out = outputs
            .into_iter()
            .next()
            .ok_or_else(|| PipelineError::Internal("the summary got no result".into()))?;
        Ok(AbstractiveSummary {
            text: out.generation.text.trim().to_string(),
            input_truncated,
            input_tokens,
            output_tokens: out.generation.ids.len().saturating_sub(1),
            queue_time: out.queue_time,
            inference_time: out.inference_time,
        })
    }

    pub fn shutdown(&self) {
        self.engine.scheduler.shutdown();
    }

    /// Ends queued and running work at once (the shutdown grace period is over).
    pub fn abort(&self) {
        self.engine.scheduler.abort();
    }
}

/// Token ids of `text`, cut at the last sentence boundary that fits `window` tokens when
/// the whole does not fit (a cut mid-sentence would feed the model a broken sentence).
fn fit_window(
    text: &str,
    tokenizer: &Tokenizer,
    window: usize,
) -> Result<(Vec<u32>, bool), PipelineError> {
    let ids = tokenizer.encode(text)?;
    if ids.len() <= window {
        return Ok((ids, false));
    }
    let count = |s: &str| tokenizer.token_count(s).unwrap_or(usize::MAX);
    let document = text::segment(text, window, &count);
    // Binary search for the most sentences that fit: a few encodes, not one per sentence.
    let prefix = |n: usize| -> String {
        let end = n.checked_sub(1).map_or(0, |i| document.segments[i].end);
        text.chars().take(end).collect()
    };
    let (mut fits, mut too_many) = (0, document.segments.len() + 1);
    while too_many - fits > 1 {
        let mid = (fits + too_many) / 2;
        if tokenizer.token_count(&prefix(mid))? <= window {
            fits = mid;
        } else {
            too_many = mid;
        }
    }
    let kept = prefix(fits);
    let ids = if kept.trim().is_empty() {
        // Not even one sentence fits: keep the first `window` tokens, ending with the
        // end-of-sequence token the model expects.
        let mut ids: Vec<u32> = ids[..window.saturating_sub(1)].to_vec();
        ids.extend(ids_tail(tokenizer)?);
        ids
    } else {
        tokenizer.encode(&kept)?
    };
    Ok((ids, true))
}

/// The special tokens the tokenizer appends to every input (e.g. `</s>`).
fn ids_tail(tokenizer: &Tokenizer) -> Result<Vec<u32>, PipelineError> {
    let empty = tokenizer.encode("")?;
    Ok(empty.last().copied().into_iter().collect())
}
