//! Seq2seq inference engine (MarianMT / BART) on candle, with Hugging Face `generate` semantics.
//!
//! Alignment: [`generate_aligned`] also returns, for the inputs that ask, which source tokens
//! each generated token came from ([`Alignment`]): the last decoder layer's cross-attention
//! averaged over its heads, as Bergamot and fairseq read it. The decode-step attention kernel
//! writes the head mean as it computes the softmax, so recording costs a few additions per
//! source position; beam search keeps every step's rows with the beam parents and traces the
//! final hypothesis back. Opt-in because the rows are held until a whole request is done
//! (source × generated tokens per sentence); within one batch, rows that ask and rows that do
//! not run together.

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
pub use generate::{generate, generate_aligned};
pub use seq2seq::Seq2SeqModel;
pub use weights::sinusoidal_positions;

/// Arithmetic of the linear layers (encoder, decoder and the output projection).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum ComputeType {
    /// f32 weights and activations (exact parity with PyTorch's f32 within rounding).
    #[default]
    F32,
    /// int8 weights quantised per output row at load, activations per row on the fly, i32
    /// accumulation; layer norm, softmax, attention and biases stay f32; the decoder's KV
    /// caches are kept in f16.
    Int8,
}

impl ComputeType {
    /// What the decoder's KV caches hold on `device`. int8 keeps them in f16: decode attention
    /// is bound by reading them (a sixth of a batched step), and f16's 11-bit significand is
    /// finer than the int8 activations around it. f32 keeps f32 (exact parity).
    pub(crate) fn kv_dtype(self, device: &Device) -> candle_core::DType {
        match self {
            Self::Int8 if device.is_cpu() => candle_core::DType::F16,
            _ => candle_core::DType::F32,
        }
    }

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

/// Which int8 kernel family this CPU runs (`amx`, `avx512-vnni`, `avx-vnni`, `avx2` or
/// `portable`).
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
    /// Which source tokens each generated token came from, when asked for (see
    /// [`generate_aligned`]).
    pub alignment: Option<Alignment>,
}

/// Soft alignment of the generated tokens to the source tokens, read from the decoder's
/// cross-attention: row `t` is the attention of the step that predicted `ids[t + 1]`, taken
/// from the last decoder layer and averaged over its heads (the Bergamot / fairseq choice:
/// the last layer is the one that aligns best without training for it, and single heads are
/// noisy). A row is a distribution over the input's own tokens (special tokens included):
/// it sums to 1, and batch padding is not part of it. Under beam search, row `t` comes from
/// the beam that held the final hypothesis's prefix at that step.
#[derive(Clone, Debug, PartialEq)]
pub struct Alignment {
    /// Columns: the input's tokens.
    source_len: usize,
    /// Row-major (generated tokens × source tokens).
    weights: Vec<f32>,
}

impl Alignment {
    /// `weights` row-major with `source_len` columns (a multiple of it long).
    pub fn new(source_len: usize, weights: Vec<f32>) -> Result<Self, ModelError> {
        if source_len == 0 || !weights.len().is_multiple_of(source_len) {
            return Err(ModelError::Input(format!(
                "alignment of {} weights does not have {source_len} columns",
                weights.len()
            )));
        }
        Ok(Self {
            source_len,
            weights,
        })
    }

    /// Source tokens (columns).
    pub fn source_len(&self) -> usize {
        self.source_len
    }

    /// Generated tokens (rows): `ids.len() - 1`, the decoder start token has none.
    pub fn target_len(&self) -> usize {
        self.weights.len() / self.source_len
    }

    /// Row `t`: the distribution over source tokens of generated token `t` (`ids[t + 1]`).
    pub fn row(&self, t: usize) -> Option<&[f32]> {
        self.weights
            .get(t * self.source_len..(t + 1) * self.source_len)
    }

    /// The rows in order.
    pub fn rows(&self) -> std::slice::Chunks<'_, f32> {
        self.weights.chunks(self.source_len)
    }

    /// Every row, row-major.
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }

    /// No rows yet, `source_len` columns.
    pub(crate) fn empty(source_len: usize) -> Self {
        Self {
            source_len,
            weights: Vec::new(),
        }
    }

    /// Appends a row from a padded one (its first `source_len` values are the row).
    pub(crate) fn push_row(&mut self, padded: &[f32]) {
        self.weights.extend_from_slice(&padded[..self.source_len]);
    }

    /// Bytes held per source token per generated token (for memory budgets).
    pub const BYTES_PER_CELL: usize = std::mem::size_of::<f32>();
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
