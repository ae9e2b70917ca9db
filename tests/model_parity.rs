mod common;

use common::engine::*;
use tarjama::model::generate;

/// Parity tolerance for logits and hidden states.
const TOL: f32 = 1e-4;

/// Teacher-forced logits of the main fixtures: their random weights (std 0.8) make some decoder
/// self-attention scores huge (|q.k| > 2000), so fp32 rounding alone moves logits by up to 6e-3
/// (transformers fp32 vs fp64: 5.9e-3 Marian, 2.2e-3 BART; ours vs fp64: 5.8e-3, 2.6e-3), and
/// the reference tool rerun with the same seed and versions on this machine kind lands 1.9e-4
/// and 7.7e-4 from its own reference.json. There we require the reference's argmax at every
/// position and |diff| below this bound; the conditioned fixtures hold every logit to `TOL`.
const MAIN_TF_TOL: f32 = 5e-3;

/// First-step logits of the tc-big fixture: they reach |20| (the others' stay under 15), and
/// ours land 1.9e-4 from the reference there, 1e-5 relative: fp32 rounding, as above. Its
/// generated ids must still match exactly.
const TC_BIG_FIRST_STEP_TOL: f32 = 5e-4;

/// (Marian dir, first-step tolerance, teacher-forced tolerance) for each fixture set.
const MARIANS: [(&str, f32, f32); 3] = [
    (MARIAN, TOL, MAIN_TF_TOL),
    (CONDITIONED_MARIAN, TOL, TOL),
    (TC_BIG, TC_BIG_FIRST_STEP_TOL, MAIN_TF_TOL),
];
const BARTS: [(&str, f32); 2] = [(BART, MAIN_TF_TOL), (CONDITIONED_BART, TOL)];

fn check_teacher_forced(got: &candle_core::Tensor, want: &serde_json::Value, tol: f32, what: &str) {
    let got = got.to_vec2::<f32>().unwrap();
    let want = want.as_array().unwrap();
    assert_eq!(got.len(), want.len());
    let mut worst = 0f32;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let w = floats(w);
        worst = worst.max(max_abs_diff(g, &w));
        assert_eq!(
            argmax(g),
            argmax(&w),
            "{what}: argmax differs at position {i}"
        );
    }
    assert!(worst < tol, "{what}: teacher forced max diff {worst}");
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

fn marian_text(r: &serde_json::Value, key: &str) -> Vec<u32> {
    input_ids_for(r, r[key]["text"].as_str().unwrap())
}

#[test]
fn marian_encoder_states_match() {
    for (dir, _, _) in MARIANS {
        let r = reference(dir);
        let m = load(dir, None);
        let states = m.encoder_states(&[marian_text(&r, "encoder")]).unwrap();
        let shape: Vec<usize> = ids(&r["encoder"]["shape"])
            .iter()
            .map(|&x| x as usize)
            .collect();
        assert_eq!(states.dims(), shape.as_slice());
        let got = states.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let d = max_abs_diff(&got, &floats(&r["encoder"]["values"]));
        assert!(d < TOL, "{dir}: encoder max diff {d}");
    }
}

#[test]
fn marian_first_step_and_teacher_forced_logits_match() {
    for (dir, first_tol, tf_tol) in MARIANS {
        let r = reference(dir);
        let m = load(dir, None);
        let start = m.config().decoder_start_token_id;
        let first = m
            .teacher_forced_logits(&marian_text(&r, "first_step_logits"), &[start])
            .unwrap();
        let got = first.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let d = max_abs_diff(&got, &floats(&r["first_step_logits"]["values"]));
        assert!(d < first_tol, "{dir}: first step max diff {d}");

        let tf = &r["teacher_forced"];
        let logits = m
            .teacher_forced_logits(
                &marian_text(&r, "teacher_forced"),
                &ids(&tf["decoder_input_ids"]),
            )
            .unwrap();
        check_teacher_forced(&logits, &tf["logits"], tf_tol, dir);
    }
}

fn check_marian_generation(dir: &str, mode: &str) {
    let r = reference(dir);
    let m = load(dir, None);
    let p = params(&m, &r["generate_kwargs"][mode]);
    for case in r[mode].as_array().unwrap() {
        let input = input_ids_for(&r, case["text"].as_str().unwrap());
        let out = generate(&m, &[input], &p, &never).unwrap();
        let g = out[0].as_ref().unwrap();
        assert_eq!(
            g.ids,
            ids(&case["ids"]),
            "{dir} {mode} ids for {}",
            case["text"]
        );
        if let Some(score) = case.get("score") {
            let want = score.as_f64().unwrap() as f32;
            assert!(
                (g.score - want).abs() < TOL,
                "{dir} {mode} score {} vs {want}",
                g.score
            );
        }
    }
}

#[test]
fn marian_greedy_matches() {
    for (dir, _, _) in MARIANS {
        check_marian_generation(dir, "greedy");
    }
}

#[test]
fn marian_beam4_matches() {
    for (dir, _, _) in MARIANS {
        check_marian_generation(dir, "beam4");
    }
}

fn strip_pad(mut v: Vec<u32>, pad: u32) -> Vec<u32> {
    while v.len() > 1 && v.last() == Some(&pad) {
        v.pop();
    }
    v
}

#[test]
fn marian_padded_batch_equals_unbatched() {
    for (dir, _, _) in MARIANS {
        check_padded_batch(dir);
    }
}

fn check_padded_batch(dir: &str) {
    let r = reference(dir);
    let m = load(dir, None);
    let pad = m.config().pad_token_id;
    let inputs: Vec<Vec<u32>> = r["batch"]["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| input_ids_for(&r, t.as_str().unwrap()))
        .collect();
    for (mode, key) in [("greedy", "greedy_ids"), ("beam4", "beam4_ids")] {
        let p = params(&m, &r["generate_kwargs"][mode]);
        let batched = generate(&m, &inputs, &p, &never).unwrap();
        for (i, row) in r["batch"][key].as_array().unwrap().iter().enumerate() {
            let got = batched[i].as_ref().unwrap();
            assert_eq!(
                got.ids,
                strip_pad(ids(row), pad),
                "{dir} {mode} batch row {i}"
            );
            let single = generate(&m, &inputs[i..i + 1], &p, &never).unwrap();
            let single = single[0].as_ref().unwrap();
            assert_eq!(
                &got.ids, &single.ids,
                "{dir} {mode} row {i} batched vs single"
            );
            assert!((got.score - single.score).abs() < TOL);
        }
    }
}

#[test]
fn bart_teacher_forced_logits_match() {
    for (dir, tf_tol) in BARTS {
        let r = reference(dir);
        let m = load(dir, None);
        let tf = &r["teacher_forced"];
        let input = input_ids_for(&r, tf["text"].as_str().unwrap());
        let logits = m
            .teacher_forced_logits(&input, &ids(&tf["decoder_input_ids"]))
            .unwrap();
        check_teacher_forced(&logits, &tf["logits"], tf_tol, dir);
    }
}

#[test]
fn bart_beam4_summaries_match() {
    for (dir, _) in BARTS {
        check_bart_summaries(dir);
    }
}

fn check_bart_summaries(dir: &str) {
    let r = reference(dir);
    let m = load(dir, None);
    let p = params(&m, &r["generate_kwargs"]["summaries"]);
    let cases = r["summaries"].as_array().unwrap();
    let inputs: Vec<Vec<u32>> = cases
        .iter()
        .map(|c| input_ids_for(&r, c["text"].as_str().unwrap()))
        .collect();
    for (i, c) in cases.iter().enumerate() {
        let out = generate(&m, &inputs[i..i + 1], &p, &never).unwrap();
        assert_eq!(
            out[0].as_ref().unwrap().ids,
            ids(&c["ids"]),
            "{dir} summary {i}"
        );
    }
    // Batched too: rows of different lengths give the same summaries.
    let out = generate(&m, &inputs, &p, &never).unwrap();
    for (i, c) in cases.iter().enumerate() {
        assert_eq!(
            out[i].as_ref().unwrap().ids,
            ids(&c["ids"]),
            "{dir} batched summary {i}"
        );
    }
}

#[test]
fn bart_summarization_defaults_from_task_params() {
    let m = load(BART, None);
    let p = m.summarization_defaults().unwrap();
    assert_eq!(
        (
            p.num_beams,
            p.min_length,
            p.max_length,
            p.no_repeat_ngram_size
        ),
        (4, 12, 40, 3)
    );
    assert!(p.early_stopping);
    assert_eq!(p.length_penalty, 2.0);
    assert!(load(MARIAN, None).summarization_defaults().is_none());
}

/// Teacher-forced logits of `model` on `input` with a few decoder tokens, flattened.
fn logits(model: &tarjama::model::Seq2SeqModel, input: &[u32]) -> Vec<f32> {
    let dec = [model.config().decoder_start_token_id, 5, 7, 9];
    model
        .teacher_forced_logits(input, &dec)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

#[test]
fn safetensors_and_pytorch_bin_give_identical_logits() {
    for dir in [MARIAN, BART, CONDITIONED_MARIAN, CONDITIONED_BART, TC_BIG] {
        let r = reference(dir);
        let input = common::engine::all_inputs(&r).remove(0);
        let la = logits(&load(dir, Some("model.safetensors")), &input);
        let lb = logits(&load(dir, Some("pytorch_model.bin")), &input);
        let d = max_abs_diff(&la, &lb);
        assert_eq!(d, 0.0, "{dir}: logits differ by {d}");
    }
}

/// The real opus-mt-tc-big-ar-en ships a float16 `pytorch_model.bin`. Read exactly, it gives
/// the logits of the same values widened to float32 in safetensors (the fixture's `make.py`).
/// The values really are rounded: with this fixture's large random weights (attention scores
/// in the thousands) float16 rounding moves logits a lot, so no bound is set on that.
#[test]
fn a_float16_pytorch_bin_loads_exactly() {
    let f16 = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tiny-marian-tc-big-ar-en-float16"
    ));
    let with = |file: &str| {
        let dir = std::path::Path::new(TC_BIG);
        let device = tarjama::model::Device::Cpu;
        tarjama::model::Seq2SeqModel::load_with_weights(dir, &f16.join(file), &device).unwrap()
    };
    let input = common::engine::all_inputs(&reference(TC_BIG)).remove(0);
    let half = logits(&with("pytorch_model.bin"), &input);
    let widened = logits(&with("model.safetensors"), &input);
    assert_eq!(max_abs_diff(&half, &widened), 0.0);
    let full = logits(&load(TC_BIG, None), &input);
    assert!(
        max_abs_diff(&half, &full) > 0.0,
        "the float16 file was read as float32"
    );
}
