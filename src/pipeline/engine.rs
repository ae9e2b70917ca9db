//! A loaded model behind its scheduler and tokenizer: what translation and summaries share.

use std::sync::Arc;

use super::{task_defaults, ModelBackend, ModelInfo, PipelineError, Task};
use crate::model::{GenerationOverrides, Seq2SeqModel};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::tokenizer::Tokenizer;

pub(super) struct Engine {
    pub(super) tokenizer: Arc<Tokenizer>,
    pub(super) scheduler: Scheduler,
    pub(super) info: ModelInfo,
}

impl Engine {
    /// Starts the inference thread that owns `model`, generating with `task`'s defaults.
    pub(super) fn start(
        model: Seq2SeqModel,
        tokenizer: Tokenizer,
        info: ModelInfo,
        task: Task,
        config: SchedulerConfig,
    ) -> Result<Self, PipelineError> {
        let tokenizer = Arc::new(tokenizer);
        let defaults = task_defaults(&model, task);
        let backend = ModelBackend::new(model, tokenizer.clone(), defaults);
        let name = match task {
            Task::Translation => "translate",
            Task::Summarization => "summarize",
        };
        let scheduler = Scheduler::start(backend, config, name).map_err(|e| {
            PipelineError::Internal(format!("cannot start the inference thread: {e}"))
        })?;
        Ok(Self {
            tokenizer,
            scheduler,
            info,
        })
    }

    /// A request's options as the scheduler batches them: the beam count always set (the
    /// model's default when the request has none), since it decides cost and batching.
    pub(super) fn request_options(&self, options: &GenerationOverrides) -> GenerationOverrides {
        GenerationOverrides {
            num_beams: Some(options.num_beams.unwrap_or(self.info.default_beam_size)),
            ..options.clone()
        }
    }
}
