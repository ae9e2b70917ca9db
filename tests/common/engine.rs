//! Fixture paths and reference-reading helpers for the engine tests.
use std::path::PathBuf;

use serde_json::Value;
use tarjama::model::{Device, GenerationOverrides, GenerationParams, Seq2SeqModel};

pub const MARIAN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/tiny-marian-ar-en"
);
/// The opus-mt-tc-big-ar-en stand-in: ReLU, 16 heads, 1024 positions, eos 451 (not 0).
pub const TC_BIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/tiny-marian-tc-big-ar-en"
);
pub const BART: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/tiny-bart-summarizer"
);
/// The same models with smaller random weights (see fixtures/conditioned/README.md): fp32
/// rounding no longer dominates, so every logit must match the reference within 1e-4.
pub const CONDITIONED_MARIAN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/conditioned/tiny-marian-ar-en"
);
pub const CONDITIONED_BART: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/conditioned/tiny-bart-summarizer"
);
pub const SEED_ARTICLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/seed-article-ar.txt"
);
pub const OPUS_CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/opus-mt-ar-en.config.json"
);

pub fn reference(dir: &str) -> Value {
    let text = std::fs::read_to_string(PathBuf::from(dir).join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn load(dir: &str, file: Option<&str>) -> Seq2SeqModel {
    let dir = PathBuf::from(dir);
    match file {
        Some(f) => Seq2SeqModel::load_with_weights(&dir, &dir.join(f), &Device::Cpu).unwrap(),
        None => Seq2SeqModel::load(&dir, &Device::Cpu).unwrap(),
    }
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

pub fn floats(v: &Value) -> Vec<f32> {
    let mut out = Vec::new();
    flatten(v, &mut out);
    out
}

fn flatten(v: &Value, out: &mut Vec<f32>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| flatten(x, out)),
        Value::Number(n) => out.push(n.as_f64().unwrap() as f32),
        other => panic!("unexpected {other}"),
    }
}

/// Defaults of the model overridden by reference.json's `generate_kwargs` entry.
pub fn params(model: &Seq2SeqModel, kwargs: &Value) -> GenerationParams {
    let o: GenerationOverrides = serde_json::from_value(kwargs.clone()).unwrap();
    model.generation_defaults().with_overrides(&o)
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn input_ids_for(reference: &Value, text: &str) -> Vec<u32> {
    let t = reference["tokenize"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["text"] == text)
        .expect("text in tokenize[]");
    ids(&t["ids"])
}

pub fn all_inputs(reference: &Value) -> Vec<Vec<u32>> {
    reference["tokenize"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| ids(&t["ids"]))
        .collect()
}

pub fn never(_: usize) -> bool {
    false
}
