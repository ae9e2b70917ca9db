//! Model and generation configuration read from `config.json` / `generation_config.json`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::ModelError;

/// Architecture family: decides positions (sinusoidal vs learned) and embedding norm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFamily {
    Marian,
    Bart,
}

impl ModelFamily {
    /// The `model_type` of config.json.
    pub fn name(self) -> &'static str {
        match self {
            ModelFamily::Marian => "marian",
            ModelFamily::Bart => "bart",
        }
    }
}

/// Feed-forward activation, named as in transformers' `ACT2FN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `swish` / `silu`.
    Silu,
    /// `gelu`: exact erf form.
    Gelu,
    /// `gelu_new` / `gelu_pytorch_tanh`: tanh approximation.
    GeluNew,
    Relu,
}

impl Activation {
    fn parse(name: &str) -> Result<Self, ModelError> {
        match name {
            "swish" | "silu" => Ok(Self::Silu),
            "gelu" => Ok(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Self::GeluNew),
            "relu" => Ok(Self::Relu),
            other => Err(ModelError::Config(format!(
                "unsupported activation_function {other:?}"
            ))),
        }
    }
}

/// Generation settings over a model's defaults: those a config file sets, and a request's
/// options (beams, new tokens, length penalty). `None` = not set, keep the previous value;
/// [`GenerationParams::with_overrides`] is the one place they are applied.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct GenerationOverrides {
    pub num_beams: Option<usize>,
    pub length_penalty: Option<f32>,
    #[serde(deserialize_with = "early_stopping_opt")]
    pub early_stopping: Option<bool>,
    pub min_length: Option<usize>,
    pub max_length: Option<usize>,
    pub max_new_tokens: Option<usize>,
    pub no_repeat_ngram_size: Option<usize>,
    pub bad_words_ids: Option<Vec<Vec<u32>>>,
    pub forced_bos_token_id: Option<u32>,
    pub forced_eos_token_id: Option<u32>,
    pub decoder_start_token_id: Option<u32>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
}

/// transformers accepts `true`, `false` or `"never"`; `"never"` is treated as `false`.
fn early_stopping_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Bool(b) => Some(b),
        Value::String(_) => Some(false),
        _ => None,
    })
}

impl GenerationOverrides {
    fn apply(&self, p: &mut GenerationParams) {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f.clone() { p.$f = v; } )* };
        }
        set!(
            num_beams,
            length_penalty,
            early_stopping,
            min_length,
            max_length,
            no_repeat_ngram_size,
            bad_words_ids,
            decoder_start_token_id,
            eos_token_id,
            pad_token_id
        );
        if self.max_new_tokens.is_some() {
            p.max_new_tokens = self.max_new_tokens;
        }
        if self.forced_bos_token_id.is_some() {
            p.forced_bos_token_id = self.forced_bos_token_id;
        }
        if self.forced_eos_token_id.is_some() {
            p.forced_eos_token_id = self.forced_eos_token_id;
        }
    }
}

/// Settings for one `generate` call, with Hugging Face semantics.
#[derive(Clone, Debug)]
pub struct GenerationParams {
    pub num_beams: usize,
    pub length_penalty: f32,
    pub early_stopping: bool,
    /// Minimum total decoder length, decoder start token included (as in transformers).
    pub min_length: usize,
    /// Maximum total decoder length, decoder start token included.
    pub max_length: usize,
    /// When set, wins over `max_length`: max_length = 1 + max_new_tokens.
    pub max_new_tokens: Option<usize>,
    pub no_repeat_ngram_size: usize,
    pub bad_words_ids: Vec<Vec<u32>>,
    pub forced_bos_token_id: Option<u32>,
    /// Forced at position max_length - 1.
    pub forced_eos_token_id: Option<u32>,
    pub decoder_start_token_id: u32,
    pub eos_token_id: u32,
    pub pad_token_id: u32,
}

impl GenerationParams {
    /// These parameters with every field that `o` sets replaced (e.g. request options or
    /// `generate` kwargs parsed as JSON).
    pub fn with_overrides(&self, o: &GenerationOverrides) -> Self {
        let mut p = self.clone();
        o.apply(&mut p);
        p
    }

    /// Total decoder length limit (decoder start token included).
    pub fn effective_max_length(&self) -> usize {
        match self.max_new_tokens {
            Some(n) => n + 1,
            None => self.max_length,
        }
    }
}

/// Raw `config.json` fields; everything optional so that old and new configs parse.
#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    d_model: Option<usize>,
    encoder_layers: Option<usize>,
    decoder_layers: Option<usize>,
    encoder_attention_heads: Option<usize>,
    decoder_attention_heads: Option<usize>,
    encoder_ffn_dim: Option<usize>,
    decoder_ffn_dim: Option<usize>,
    vocab_size: Option<usize>,
    decoder_vocab_size: Option<usize>,
    max_position_embeddings: Option<usize>,
    activation_function: Option<String>,
    scale_embedding: Option<bool>,
    normalize_embedding: Option<bool>,
    normalize_before: Option<bool>,
    add_final_layer_norm: Option<bool>,
    static_position_embeddings: Option<bool>,
    tie_word_embeddings: Option<bool>,
    /// transformers 3's spelling of `forced_bos_token_id = bos_token_id` (BART CNN checkpoints).
    force_bos_token_to_be_generated: Option<bool>,
    #[serde(default)]
    task_specific_params: Option<BTreeMap<String, GenerationOverrides>>,
    #[serde(flatten)]
    generation: GenerationOverrides,
}

/// Parsed model configuration.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub model_type: ModelFamily,
    pub d_model: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub encoder_attention_heads: usize,
    pub decoder_attention_heads: usize,
    pub encoder_ffn_dim: usize,
    pub decoder_ffn_dim: usize,
    pub vocab_size: usize,
    pub decoder_vocab_size: usize,
    pub max_position_embeddings: usize,
    pub activation_function: Activation,
    pub scale_embedding: bool,
    /// Layer norm right after embeddings + positions (`layernorm_embedding`); always on for BART.
    pub normalize_embedding: bool,
    /// Pre-norm layers.
    pub normalize_before: bool,
    /// Final encoder/decoder `layer_norm` (pre-norm models such as mBART).
    pub add_final_layer_norm: bool,
    /// Sinusoidal (Marian) rather than learned positions.
    pub static_position_embeddings: bool,
    pub tie_word_embeddings: bool,
    pub bos_token_id: u32,
    pub pad_token_id: u32,
    pub eos_token_id: u32,
    pub decoder_start_token_id: u32,
    /// Generation fields of config.json, then generation_config.json over them.
    pub generation: GenerationOverrides,
    pub task_specific_params: BTreeMap<String, GenerationOverrides>,
}

fn need<T>(v: Option<T>, key: &str) -> Result<T, ModelError> {
    v.ok_or_else(|| ModelError::Config(format!("config.json lacks {key:?}")))
}

impl ModelConfig {
    /// Parses `config.json` text (no generation_config.json).
    pub fn from_json_str(text: &str) -> Result<Self, ModelError> {
        let raw: RawConfig = serde_json::from_str(text)
            .map_err(|e| ModelError::Config(format!("invalid config.json: {e}")))?;
        Self::from_raw(raw)
    }

    /// Reads `config.json`, and `generation_config.json` beside it when present.
    pub fn from_dir(dir: &Path) -> Result<Self, ModelError> {
        let mut cfg = Self::from_file(&dir.join("config.json"))?;
        let gen_path = dir.join("generation_config.json");
        if gen_path.exists() {
            let text = read_text(&gen_path)?;
            let gen: GenerationOverrides = serde_json::from_str(&text)
                .map_err(|e| ModelError::Config(format!("invalid {}: {e}", gen_path.display())))?;
            cfg.merge_generation(&gen);
        }
        Ok(cfg)
    }

    /// Reads one `config.json` file.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = read_text(path)?;
        Self::from_json_str(&text)
            .map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))
    }

    fn merge_generation(&mut self, gen: &GenerationOverrides) {
        let g = &mut self.generation;
        macro_rules! over {
            ($($f:ident),*) => { $( if gen.$f.is_some() { g.$f = gen.$f.clone(); } )* };
        }
        over!(
            num_beams,
            length_penalty,
            early_stopping,
            min_length,
            max_length,
            max_new_tokens,
            no_repeat_ngram_size,
            bad_words_ids,
            forced_bos_token_id,
            forced_eos_token_id,
            decoder_start_token_id,
            bos_token_id,
            eos_token_id,
            pad_token_id
        );
    }

    fn from_raw(mut raw: RawConfig) -> Result<Self, ModelError> {
        if raw.force_bos_token_to_be_generated == Some(true)
            && raw.generation.forced_bos_token_id.is_none()
        {
            raw.generation.forced_bos_token_id = Some(raw.generation.bos_token_id.unwrap_or(0));
        }
        let model_type = match raw.model_type.as_deref() {
            Some("marian") => ModelFamily::Marian,
            Some("bart") => ModelFamily::Bart,
            Some(other) => {
                return Err(ModelError::Config(format!(
                    "unsupported model_type {other:?} (expected \"marian\" or \"bart\")"
                )))
            }
            None => {
                return Err(ModelError::Config(
                    "config.json lacks \"model_type\"".into(),
                ))
            }
        };
        let marian = model_type == ModelFamily::Marian;
        let vocab_size = need(raw.vocab_size, "vocab_size")?;
        let g = &raw.generation;
        let bos = g.bos_token_id.unwrap_or(0);
        let cfg = Self {
            model_type,
            d_model: need(raw.d_model, "d_model")?,
            encoder_layers: need(raw.encoder_layers, "encoder_layers")?,
            decoder_layers: need(raw.decoder_layers, "decoder_layers")?,
            encoder_attention_heads: need(raw.encoder_attention_heads, "encoder_attention_heads")?,
            decoder_attention_heads: need(raw.decoder_attention_heads, "decoder_attention_heads")?,
            encoder_ffn_dim: need(raw.encoder_ffn_dim, "encoder_ffn_dim")?,
            decoder_ffn_dim: need(raw.decoder_ffn_dim, "decoder_ffn_dim")?,
            vocab_size,
            decoder_vocab_size: raw.decoder_vocab_size.unwrap_or(vocab_size),
            max_position_embeddings: need(raw.max_position_embeddings, "max_position_embeddings")?,
            activation_function: Activation::parse(
                raw.activation_function.as_deref().unwrap_or("gelu"),
            )?,
            scale_embedding: raw.scale_embedding.unwrap_or(false),
            normalize_embedding: !marian || raw.normalize_embedding.unwrap_or(false),
            normalize_before: raw.normalize_before.unwrap_or(false),
            add_final_layer_norm: raw.add_final_layer_norm.unwrap_or(false),
            static_position_embeddings: marian && raw.static_position_embeddings.unwrap_or(true),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(true),
            bos_token_id: bos,
            pad_token_id: need(g.pad_token_id, "pad_token_id")?,
            eos_token_id: need(g.eos_token_id, "eos_token_id")?,
            decoder_start_token_id: g.decoder_start_token_id.unwrap_or(bos),
            generation: raw.generation,
            task_specific_params: raw.task_specific_params.unwrap_or_default(),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ModelError> {
        for (h, side) in [
            (self.encoder_attention_heads, "encoder"),
            (self.decoder_attention_heads, "decoder"),
        ] {
            if h == 0 || !self.d_model.is_multiple_of(h) {
                return Err(ModelError::Config(format!(
                    "d_model {} is not divisible by {side}_attention_heads {h}",
                    self.d_model
                )));
            }
        }
        if self.decoder_vocab_size != self.vocab_size {
            return Err(ModelError::Config(format!(
                "decoder_vocab_size {} != vocab_size {}: separate vocabularies are not supported",
                self.decoder_vocab_size, self.vocab_size
            )));
        }
        let ids = [
            self.pad_token_id,
            self.eos_token_id,
            self.decoder_start_token_id,
        ];
        if ids.iter().any(|&id| id as usize >= self.vocab_size) {
            return Err(ModelError::Config(format!(
                "special token ids {ids:?} out of vocabulary ({})",
                self.vocab_size
            )));
        }
        Ok(())
    }

    /// transformers' defaults, then config.json's generation fields, then generation_config.json.
    pub fn generation_defaults(&self) -> GenerationParams {
        let mut p = GenerationParams {
            num_beams: 1,
            length_penalty: 1.0,
            early_stopping: false,
            min_length: 0,
            max_length: 20,
            max_new_tokens: None,
            no_repeat_ngram_size: 0,
            bad_words_ids: Vec::new(),
            forced_bos_token_id: None,
            forced_eos_token_id: None,
            decoder_start_token_id: self.decoder_start_token_id,
            eos_token_id: self.eos_token_id,
            pad_token_id: self.pad_token_id,
        };
        self.generation.apply(&mut p);
        p
    }

    /// `task_specific_params.summarization` over the generation defaults.
    pub fn summarization_defaults(&self) -> Option<GenerationParams> {
        let task = self.task_specific_params.get("summarization")?;
        let mut p = self.generation_defaults();
        task.apply(&mut p);
        Some(p)
    }
}

fn read_text(path: &Path) -> Result<String, ModelError> {
    std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.display().to_string(),
        source,
    })
}
