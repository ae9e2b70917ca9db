//! Hand-written prost messages for the parts of SentencePiece's `ModelProto`
//! (sentencepiece_model.proto, proto2) that we read. Unknown fields are skipped by
//! prost, so the full schema is not needed and no build.rs/protoc is required.
//! Optional proto2 fields are `Option`s; the schema defaults are applied by the
//! accessor methods below.

/// `ModelProto.SentencePiece.Type`.
pub const TYPE_NORMAL: i32 = 1;
pub const TYPE_UNKNOWN: i32 = 2;
pub const TYPE_CONTROL: i32 = 3;
pub const TYPE_USER_DEFINED: i32 = 4;
pub const TYPE_UNUSED: i32 = 5;
pub const TYPE_BYTE: i32 = 6;

/// `TrainerSpec.ModelType.UNIGRAM`.
pub const MODEL_UNIGRAM: i32 = 1;

#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelProto {
    #[prost(message, repeated, tag = "1")]
    pub pieces: Vec<SentencePiece>,
    #[prost(message, optional, tag = "2")]
    pub trainer_spec: Option<TrainerSpec>,
    #[prost(message, optional, tag = "3")]
    pub normalizer_spec: Option<NormalizerSpec>,
    #[prost(message, optional, tag = "5")]
    pub denormalizer_spec: Option<NormalizerSpec>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SentencePiece {
    #[prost(string, optional, tag = "1")]
    pub piece: Option<String>,
    #[prost(float, optional, tag = "2")]
    pub score: Option<f32>,
    #[prost(int32, optional, tag = "3")]
    pub r#type: Option<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TrainerSpec {
    #[prost(int32, optional, tag = "3")]
    pub model_type: Option<i32>,
    #[prost(int32, optional, tag = "4")]
    pub vocab_size: Option<i32>,
    #[prost(bool, optional, tag = "24")]
    pub treat_whitespace_as_suffix: Option<bool>,
    #[prost(bool, optional, tag = "35")]
    pub byte_fallback: Option<bool>,
    #[prost(int32, optional, tag = "40")]
    pub unk_id: Option<i32>,
    #[prost(int32, optional, tag = "41")]
    pub bos_id: Option<i32>,
    #[prost(int32, optional, tag = "42")]
    pub eos_id: Option<i32>,
    #[prost(int32, optional, tag = "43")]
    pub pad_id: Option<i32>,
    #[prost(string, optional, tag = "44")]
    pub unk_surface: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NormalizerSpec {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub precompiled_charsmap: Option<Vec<u8>>,
    #[prost(bool, optional, tag = "3")]
    pub add_dummy_prefix: Option<bool>,
    #[prost(bool, optional, tag = "4")]
    pub remove_extra_whitespaces: Option<bool>,
    #[prost(bool, optional, tag = "5")]
    pub escape_whitespaces: Option<bool>,
}

impl SentencePiece {
    /// proto2 default for `type` is NORMAL.
    pub fn kind(&self) -> i32 {
        self.r#type.unwrap_or(TYPE_NORMAL)
    }
}

impl TrainerSpec {
    pub fn model_type_or_default(&self) -> i32 {
        self.model_type.unwrap_or(MODEL_UNIGRAM)
    }
    pub fn unk_id_or_default(&self) -> i32 {
        self.unk_id.unwrap_or(0)
    }
    pub fn bos_id_or_default(&self) -> i32 {
        self.bos_id.unwrap_or(1)
    }
    pub fn eos_id_or_default(&self) -> i32 {
        self.eos_id.unwrap_or(2)
    }
    pub fn pad_id_or_default(&self) -> i32 {
        self.pad_id.unwrap_or(-1)
    }
    pub fn unk_surface_or_default(&self) -> &str {
        self.unk_surface.as_deref().unwrap_or(" \u{2047} ")
    }
}

impl NormalizerSpec {
    pub fn add_dummy_prefix_or_default(&self) -> bool {
        self.add_dummy_prefix.unwrap_or(true)
    }
    pub fn remove_extra_whitespaces_or_default(&self) -> bool {
        self.remove_extra_whitespaces.unwrap_or(true)
    }
    pub fn escape_whitespaces_or_default(&self) -> bool {
        self.escape_whitespaces.unwrap_or(true)
    }
}
