mod common;

use std::path::{Path, PathBuf};

use common::engine::*;
use tarjama::model::generate;
use tarjama::model::{Activation, Device, ModelConfig, ModelError, ModelFamily, Seq2SeqModel};

/// A scratch copy of a fixture's config (+ chosen weight file) in a fresh temp dir.
fn scratch(name: &str, fixture: &str, weights: &[&str]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tarjama-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "generation_config.json"]
        .iter()
        .chain(weights)
    {
        let src = Path::new(fixture).join(f);
        if src.exists() {
            std::fs::copy(&src, dir.join(f)).unwrap();
        }
    }
    dir
}

fn load_err(dir: &Path) -> ModelError {
    match Seq2SeqModel::load(dir, &Device::Cpu) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e,
    }
}

fn truncate(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
}

#[test]
fn truncated_safetensors_is_a_clear_error() {
    let dir = scratch("trunc-st", MARIAN, &["model.safetensors"]);
    truncate(&dir.join("model.safetensors"));
    let e = load_err(&dir);
    assert!(matches!(e, ModelError::Weights { .. }), "{e:?}");
    assert!(e.to_string().contains("model.safetensors"), "{e}");
}

#[test]
fn truncated_pytorch_bin_is_a_clear_error() {
    let dir = scratch("trunc-bin", BART, &["pytorch_model.bin"]);
    truncate(&dir.join("pytorch_model.bin"));
    let e = load_err(&dir);
    assert!(matches!(e, ModelError::Weights { .. }), "{e:?}");
    assert!(e.to_string().contains("pytorch_model.bin"), "{e}");
}

#[test]
fn unknown_model_type_is_a_clear_error() {
    let dir = scratch("model-type", MARIAN, &["model.safetensors"]);
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(dir.join("config.json"), cfg.replace("\"marian\"", "\"t5\"")).unwrap();
    let e = load_err(&dir);
    assert!(matches!(e, ModelError::Config(_)), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("model_type") && msg.contains("t5"), "{msg}");
}

fn rewrite_weights(
    dir: &Path,
    edit: impl FnOnce(&mut std::collections::HashMap<String, candle_core::Tensor>),
) {
    let path = dir.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    edit(&mut tensors);
    candle_core::safetensors::save(&tensors, &path).unwrap();
}

#[test]
fn missing_tensor_is_named() {
    let dir = scratch("missing", BART, &["model.safetensors"]);
    let name = "model.decoder.layers.1.encoder_attn.v_proj.weight";
    rewrite_weights(&dir, |t| {
        t.remove(name).unwrap();
    });
    let e = load_err(&dir);
    assert!(
        matches!(&e, ModelError::MissingTensor { name: n } if n == name),
        "{e:?}"
    );
    assert!(e.to_string().contains(name), "{e}");
}

#[test]
fn misshapen_tensor_is_named() {
    let dir = scratch("shape", MARIAN, &["model.safetensors"]);
    let name = "model.encoder.layers.0.fc1.weight";
    rewrite_weights(&dir, |t| {
        let w =
            candle_core::Tensor::zeros((32, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
        t.insert(name.to_string(), w);
    });
    let e = load_err(&dir);
    assert!(
        matches!(&e, ModelError::ShapeMismatch { name: n, .. } if n == name),
        "{e:?}"
    );
    assert!(e.to_string().contains(name), "{e}");
}

#[test]
fn missing_weights_file_is_a_clear_error() {
    let dir = scratch("no-weights", MARIAN, &[]);
    assert!(matches!(load_err(&dir), ModelError::NoWeights(_)));
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let m = load(MARIAN, None);
    let p = m.generation_defaults();
    assert!(generate(&m, &[vec![]], &p, &never).is_err());
    assert!(generate(&m, &[vec![100_000]], &p, &never).is_err());
    assert!(generate(&m, &[vec![5; 500]], &p, &never).is_err());
}

#[test]
fn parses_real_opus_mt_config() {
    let cfg = ModelConfig::from_file(Path::new(OPUS_CONFIG)).unwrap();
    assert_eq!(cfg.model_type, ModelFamily::Marian);
    assert_eq!(
        (cfg.d_model, cfg.encoder_layers, cfg.decoder_layers),
        (512, 6, 6)
    );
    assert_eq!(
        (cfg.encoder_attention_heads, cfg.decoder_ffn_dim),
        (8, 2048)
    );
    assert_eq!(
        (cfg.vocab_size, cfg.pad_token_id, cfg.eos_token_id),
        (62834, 62833, 0)
    );
    assert_eq!(cfg.decoder_start_token_id, 62833);
    assert_eq!(cfg.activation_function, Activation::Silu);
    assert!(cfg.scale_embedding && cfg.static_position_embeddings && !cfg.normalize_before);
    let g = cfg.generation_defaults();
    assert_eq!((g.num_beams, g.max_length), (4, 512));
    assert_eq!(g.bad_words_ids, vec![vec![62833]]);
    assert_eq!(g.forced_eos_token_id, Some(0));
}

#[test]
fn fixture_configs_and_generation_config_merge() {
    let m = load(MARIAN, None);
    let g = m.generation_defaults();
    // generation_config.json (max_length 64, num_beams 4) over config.json.
    assert_eq!(
        (g.num_beams, g.max_length, g.decoder_start_token_id),
        (4, 64, 565)
    );
    assert_eq!(g.bad_words_ids, vec![vec![565]]);
    let b = load(BART, None);
    assert_eq!(b.config().model_type, ModelFamily::Bart);
    assert!(b.config().normalize_embedding && !b.config().static_position_embeddings);
}

#[test]
fn sinusoidal_table_agrees_with_file() {
    let file =
        candle_core::safetensors::load(Path::new(MARIAN).join("model.safetensors"), &Device::Cpu)
            .unwrap();
    let want = file["model.encoder.embed_positions.weight"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let got = tarjama::model::sinusoidal_positions(128, 32);
    assert!(max_abs_diff(&got, &want) < 1e-6);
}

#[test]
fn cancellation_drops_rows() {
    let r = reference(MARIAN);
    let m = load(MARIAN, None);
    let inputs = all_inputs(&r);
    for mode in ["greedy", "beam4"] {
        let p = params(&m, &r["generate_kwargs"][mode]);
        let all = generate(&m, &inputs, &p, &never).unwrap();
        let some = generate(&m, &inputs, &p, &|i| i % 2 == 1).unwrap();
        for (i, (a, s)) in all.iter().zip(&some).enumerate() {
            if i % 2 == 1 {
                assert!(s.is_none());
            } else {
                assert_eq!(a.as_ref().unwrap().ids, s.as_ref().unwrap().ids);
            }
        }
    }
}

/// Rows cancelled mid-generation leave the batch after beams have been reordered for a few
/// steps (the caches are then rebuilt from the beam ancestry); the survivors must not notice.
#[test]
fn cancellation_mid_generation_keeps_the_other_rows_exact() {
    for (dir, mode) in [(MARIAN, "beam4"), (MARIAN, "greedy"), (BART, "summaries")] {
        let r = reference(dir);
        let m = load(dir, None);
        let inputs = all_inputs(&r);
        let p = params(&m, &r["generate_kwargs"][mode]);
        let all = generate(&m, &inputs, &p, &never).unwrap();
        // The generator asks about every live input once per step: after ~5 steps of the
        // whole batch, odd inputs are cancelled.
        let asked = std::sync::atomic::AtomicUsize::new(0);
        let late = |i: usize| {
            let n = asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            i % 2 == 1 && n >= 5 * inputs.len()
        };
        let some = generate(&m, &inputs, &p, &late).unwrap();
        for (i, (a, s)) in all.iter().zip(&some).enumerate() {
            if i % 2 == 1 {
                assert!(s.is_none(), "{dir} {mode}: input {i} was cancelled");
            } else {
                assert_eq!(
                    a.as_ref().unwrap(),
                    s.as_ref().unwrap(),
                    "{dir} {mode}: input {i}"
                );
            }
        }
    }
}

#[test]
fn model_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Seq2SeqModel>();
}

#[test]
fn legacy_force_bos_key_sets_forced_bos() {
    let text = std::fs::read_to_string(format!("{BART}/config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
    // The fixture carries the key, as the real distilbart-cnn-12-6 does; without it no BOS
    // is forced.
    assert_eq!(config["force_bos_token_to_be_generated"], true);
    config
        .as_object_mut()
        .unwrap()
        .remove("force_bos_token_to_be_generated");
    assert!(ModelConfig::from_json_str(&config.to_string())
        .unwrap()
        .generation_defaults()
        .forced_bos_token_id
        .is_none());
    config["force_bos_token_to_be_generated"] = true.into();
    let parsed = ModelConfig::from_json_str(&config.to_string()).unwrap();
    assert_eq!(parsed.generation_defaults().forced_bos_token_id, Some(0));
}
