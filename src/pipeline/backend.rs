//! The real scheduler backend: the seq2seq model plus the tokenizer that decodes its output.

use std::sync::Arc;

use crate::model::{GenerationParams, Seq2SeqModel};
use crate::scheduler::{Backend, GenOptions, Generation};
use crate::tokenizer::Tokenizer;

pub struct ModelBackend {
    model: Seq2SeqModel,
    tokenizer: Arc<Tokenizer>,
    defaults: GenerationParams,
}

impl ModelBackend {
    pub fn new(model: Seq2SeqModel, tokenizer: Arc<Tokenizer>) -> Self {
        let defaults = model.generation_defaults();
        Self::with_defaults(model, tokenizer, defaults)
    }

    /// For models whose task has its own defaults (summaries).
    pub fn with_defaults(
        model: Seq2SeqModel,
        tokenizer: Arc<Tokenizer>,
        defaults: GenerationParams,
    ) -> Self {
        Self {
            model,
            tokenizer,
            defaults,
        }
    }

    fn params(&self, options: &GenOptions) -> GenerationParams {
        let mut params = self.defaults.clone();
        if let Some(beams) = options.num_beams {
            params.num_beams = beams.max(1);
        }
        if let Some(max_new) = options.max_new_tokens {
            params.max_new_tokens = Some(max_new);
        }
        if let Some(penalty) = options.length_penalty {
            params.length_penalty = penalty;
        }
        params
    }
}

impl Backend for ModelBackend {
    fn generate(
        &mut self,
        inputs: &[Vec<u32>],
        options: &GenOptions,
        cancelled: &dyn Fn(usize) -> bool,
    ) -> Result<Vec<Option<Generation>>, String> {
        let params = self.params(options);
        let generated = self
            .model
            .generate(inputs, &params, cancelled)
            .map_err(|e| e.to_string())?;
        generated
            .into_iter()
            .map(|g| {
                g.map(|g| {
                    let text = self
                        .tokenizer
                        .decode(&g.ids, true)
                        .map_err(|e| e.to_string())?;
                    Ok(Generation {
                        ids: g.ids,
                        text,
                        score: g.score,
                    })
                })
                .transpose()
            })
            .collect()
    }
}
