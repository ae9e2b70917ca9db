//! Seq2seq inference engine (MarianMT / BART) on candle, with Hugging Face `generate` semantics.

pub mod bench;
mod config;
mod generate;
mod kernels;
mod kv_cache;
mod layers;
mod logits;
mod seq2seq;
mod weights;

pub use candle_core::Device;
pub use config::{Activation, GenerationOverrides, GenerationParams, ModelConfig, ModelFamily};
pub use generate::generate;
pub use seq2seq::Seq2SeqModel;
pub use weights::sinusoidal_positions;

/// Arithmetic of the linear layers (encoder, decoder and the output projection).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum ComputeType {
    /// f32 weights and activations (exact parity with PyTorch's f32 within rounding).
    #[default]
    F32,
    /// int8 weights quantised per output row at load, activations per row on the fly, i32
    /// accumulation; layer norm, softmax, attention and biases stay f32.
    Int8,
}

impl ComputeType {
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Int8 => "int8",
        }
    }
}

impl std::fmt::Display for ComputeType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which int8 kernel family this CPU runs (`avx512-vnni`, `avx-vnni`, `avx2` or `portable`).
pub fn int8_kernel() -> &'static str {
    kernels::I8Path::detect().name()
}

/// One generated sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct Generated {
    /// Generated ids, decoder start token first (as transformers returns them), no padding.
    pub ids: Vec<u32>,
    /// Beam search: the length-normalised log-probability transformers reports as
    /// `sequences_scores`. Greedy: the same quantity for the greedy path (sum of processed
    /// log-probs / generated_len^length_penalty).
    pub score: f32,
}

/// Errors of loading and running a model.
/// The model's results.
pub(crate) type Res<T> = Result<T, ModelError>;

#[derive(thiserror::Error, Debug)]
pub enum ModelError {
    #[error("config error: {0}")]
    Config(String),
    #[error("missing tensor {name:?} in the weights file")]
    MissingTensor { name: String },
    #[error("tensor {name:?} has shape {got:?}, expected {expected:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("cannot read weights file {path}: {reason}")]
    Weights { path: String, reason: String },
    #[error("no model.safetensors or pytorch_model.bin in {0}")]
    NoWeights(String),
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid input: {0}")]
    Input(String),
    #[error("candle error: {0}")]
    Candle(#[from] candle_core::Error),
}
