//! The real scheduler backend: the seq2seq model plus the tokenizer that decodes its output.

use std::sync::Arc;

use crate::model::GenerationOverrides;
use crate::model::{Alignment, GenerationParams, ModelError, Seq2SeqModel};
use crate::scheduler::{Backend, BackendError, BatchInput, Generation, ModelLimits};
use crate::tokenizer::Tokenizer;

pub struct ModelBackend {
    model: Seq2SeqModel,
    tokenizer: Arc<Tokenizer>,
    defaults: GenerationParams,
}

impl ModelBackend {
    /// `defaults`: what the model generates with for its task (see [`super::task_defaults`]).
    pub fn new(model: Seq2SeqModel, tokenizer: Arc<Tokenizer>, defaults: GenerationParams) -> Self {
        Self {
            model,
            tokenizer,
            defaults,
        }
    }
}

/// f32 activations.
const F32: usize = 4;

impl Backend for ModelBackend {
    fn limits(&self) -> ModelLimits {
        let c = self.model.config();
        let d = c.d_model * F32;
        ModelLimits {
            max_input_tokens: c.max_position_embeddings,
            vocab_size: c.vocab_size,
            default_max_new_tokens: self.defaults.effective_max_length().saturating_sub(1),
            // Encoder states, the feed-forward activation, and each decoder layer's
            // cross-attention keys and values (beam rows carry their own copies).
            beam_bytes_per_source_token: d * (1 + 2 * c.decoder_layers) + c.encoder_ffn_dim * F32,
            // Each decoder layer's self-attention key and value.
            beam_bytes_per_step: d * 2 * c.decoder_layers,
            // Logits, their log-softmax and the running scores over the vocabulary.
            beam_bytes_fixed: 3 * c.vocab_size * F32,
            // The alignment rows: one weight per source token per step.
            beam_bytes_per_source_token_step: Alignment::BYTES_PER_CELL,
            row_bytes_per_source_token_squared: c.encoder_attention_heads * F32,
        }
    }

    fn generate(
        &mut self,
        inputs: &[Vec<u32>],
        options: &GenerationOverrides,
        cancelled: &dyn Fn(usize) -> bool,
    ) -> Result<Vec<Option<Generation>>, BackendError> {
        self.generate_batch(BatchInput::new(inputs, options, cancelled))
    }

    fn generate_batch(
        &mut self,
        batch: BatchInput<'_>,
    ) -> Result<Vec<Option<Generation>>, BackendError> {
        let BatchInput {
            inputs,
            alignment,
            options,
            cancelled,
        } = batch;
        let params = self.defaults.with_overrides(options);
        let model = &self.model;
        let generated = crate::model::generate_aligned(
            model, inputs, alignment, &params, cancelled,
        )
        .map_err(|e| match e {
            ModelError::Input(reason) => BackendError::Input(reason),
            other => BackendError::Internal(other.to_string()),
        })?;
        generated
            .into_iter()
            .map(|g| {
                g.map(|g| {
                    let text = self
                        .tokenizer
                        .decode(&g.ids, true)
                        .map_err(|e| BackendError::Internal(e.to_string()))?;
                    Ok(Generation {
                        ids: g.ids,
                        text,
                        score: g.score,
                        alignment: g.alignment,
                    })
                })
                .transpose()
            })
            .collect()
    }
}
