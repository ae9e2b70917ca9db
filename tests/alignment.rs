//! Cross-attention alignment recorded during generation, against an independent reading:
//! an uncached teacher-forced forward over the final ids with plain tensor attention
//! (`Seq2SeqModel::reference_cross_attention`). The fixtures' weights are random, so only
//! the mechanics can be checked, not whether the alignment is linguistically right.

mod common;

use common::engine::*;
use std::path::Path;
use tarjama::model::{generate_aligned, ComputeType, Device, Generated, Seq2SeqModel};

/// Recorded vs reference rows, and batched vs alone.
const TOL: f32 = 1e-5;

fn models() -> Vec<(String, Seq2SeqModel)> {
    let mut out = Vec::new();
    for dir in [MARIAN, CONDITIONED_MARIAN] {
        for compute in [ComputeType::F32, ComputeType::Int8] {
            let model = Seq2SeqModel::load_as(Path::new(dir), &Device::Cpu, compute).unwrap();
            out.push((format!("{dir} {compute}"), model));
        }
    }
    out
}

/// (mode name, parameters) from reference.json's generate kwargs.
fn modes(
    dir_model: &Seq2SeqModel,
    reference: &serde_json::Value,
) -> Vec<(&'static str, tarjama::model::GenerationParams)> {
    let kwargs = &reference["generate_kwargs"];
    vec![
        ("greedy", params(dir_model, &kwargs["greedy"])),
        ("beam4", params(dir_model, &kwargs["beam4"])),
    ]
}

fn dir_of(name: &str) -> &str {
    name.split(' ').next().unwrap()
}

fn run(
    model: &Seq2SeqModel,
    inputs: &[Vec<u32>],
    align: &[bool],
    p: &tarjama::model::GenerationParams,
) -> Vec<Generated> {
    generate_aligned(model, inputs, align, p, &never)
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect()
}

#[test]
fn recorded_alignment_is_the_last_layers_cross_attention() {
    for (name, model) in models() {
        let r = reference(dir_of(&name));
        let inputs = all_inputs(&r);
        for (mode, p) in modes(&model, &r) {
            let out = run(&model, &inputs, &vec![true; inputs.len()], &p);
            for (input, g) in inputs.iter().zip(&out) {
                let a = g.alignment.as_ref().expect("alignment asked for");
                assert_eq!(a.source_len(), input.len(), "{name} {mode}");
                assert_eq!(a.target_len(), g.ids.len() - 1, "{name} {mode}");
                let want = model
                    .reference_cross_attention(input, &g.ids[..g.ids.len() - 1])
                    .unwrap();
                let d = max_abs_diff(a.weights(), &want);
                assert!(d < TOL, "{name} {mode}: recorded vs reference {d}");
            }
        }
    }
}

#[test]
fn rows_are_distributions_over_the_real_source_tokens() {
    for (name, model) in models() {
        let r = reference(dir_of(&name));
        let inputs = all_inputs(&r);
        for (mode, p) in modes(&model, &r) {
            for g in run(&model, &inputs, &vec![true; inputs.len()], &p) {
                let a = g.alignment.unwrap();
                for row in a.rows() {
                    assert!(
                        row.iter().all(|&w| (0.0..=1.0).contains(&w)),
                        "{name} {mode}"
                    );
                    let sum: f32 = row.iter().sum();
                    assert!((sum - 1.0).abs() < TOL, "{name} {mode}: row sums to {sum}");
                }
            }
        }
    }
}

#[test]
fn batched_equals_alone_and_runs_repeat_exactly() {
    for (name, model) in models() {
        let r = reference(dir_of(&name));
        let inputs = all_inputs(&r);
        for (mode, p) in modes(&model, &r) {
            let all = vec![true; inputs.len()];
            let batched = run(&model, &inputs, &all, &p);
            assert_eq!(batched, run(&model, &inputs, &all, &p), "{name} {mode}");
            for (input, b) in inputs.iter().zip(&batched) {
                let alone = run(&model, std::slice::from_ref(input), &[true], &p).remove(0);
                assert_eq!(alone.ids, b.ids, "{name} {mode}");
                let (x, y) = (alone.alignment.unwrap(), b.alignment.clone().unwrap());
                let d = max_abs_diff(x.weights(), y.weights());
                assert!(d < TOL, "{name} {mode}: batched vs alone {d}");
            }
        }
    }
}

#[test]
fn only_the_rows_that_ask_get_an_alignment_and_generation_is_unchanged() {
    let model = load(MARIAN, None);
    let r = reference(MARIAN);
    let inputs = all_inputs(&r);
    for (mode, p) in modes(&model, &r) {
        let plain = tarjama::model::generate(&model, &inputs, &p, &never).unwrap();
        let ask: Vec<bool> = (0..inputs.len()).map(|i| i % 2 == 0).collect();
        let some = run(&model, &inputs, &ask, &p);
        for ((g, p), &asked) in some.iter().zip(&plain).zip(&ask) {
            let p = p.as_ref().unwrap();
            assert!(p.alignment.is_none(), "{mode}");
            assert_eq!(g.alignment.is_some(), asked, "{mode}");
            assert_eq!((&g.ids, g.score), (&p.ids, p.score), "{mode}");
        }
    }
}
