//! int8 has no exact reference, so it is held to CTranslate2's: on the same weights and the
//! same inputs, tarjama's int8 must be at least as close to tarjama's f32 as CTranslate2's
//! int8 is to its float32 (bench/ct2_int8_accuracy.py measures the latter; its figures for the
//! well-conditioned fixtures are pinned below). Figures: greedy outputs identical, mean
//! common-prefix share, max |Δ logit| and top-1 agreement of teacher-forced logits along the
//! f32 greedy output, over every position.
//!
//! The bench model (`make_bench_model.py OUT --std 0.05`, opus-mt-ar-en shapes):
//! `TARJAMA_ACCURACY_MODEL=OUT cargo test --release --test int8_accuracy -- --ignored --nocapture`.

use std::path::Path;
use tarjama::model::generate;

use tarjama::model::{ComputeType, Device, Seq2SeqModel};

/// SplitMix64, the same draw as bench/ct2_int8_accuracy.py.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// (source ids ending in EOS, new tokens): the workload's lengths, or 24 short inputs.
fn inputs(model: &Seq2SeqModel, workload: Option<&Path>) -> Vec<(Vec<u32>, usize)> {
    let cfg = model.config();
    let v = cfg.vocab_size as u64;
    let lo = if cfg.model_type.name() == "bart" {
        5
    } else {
        2
    };
    let hi = v - 1;
    let pairs: Vec<(usize, usize)> = match workload {
        Some(p) => {
            let wl: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
            let lens = |k: &str| -> Vec<usize> {
                wl[k]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as usize)
                    .collect()
            };
            lens("source_lengths")
                .into_iter()
                .zip(lens("target_lengths"))
                .collect()
        }
        None => (0..24).map(|i| (4 + (i * 7) % 37, 30)).collect(),
    };
    let mut rng = SplitMix64(0x1A7);
    pairs
        .into_iter()
        .map(|(n, t)| {
            let mut ids: Vec<u32> = (0..n)
                .map(|_| (lo + rng.next() % (hi - lo)) as u32)
                .collect();
            ids.push(cfg.eos_token_id);
            (ids, t)
        })
        .collect()
}

#[derive(Debug)]
struct Figures {
    inputs: usize,
    identical: usize,
    prefix_share: f64,
    max_delta: f32,
    top1: f64,
    positions: usize,
}

fn greedy(model: &Seq2SeqModel, ids: &[u32], new_tokens: usize) -> Vec<u32> {
    let mut p = model.generation_defaults();
    p.num_beams = 1;
    p.max_new_tokens = Some(new_tokens);
    p.min_length = 0;
    let out = generate(model, &[ids.to_vec()], &p, &|_| false).unwrap();
    out.into_iter().next().flatten().unwrap().ids
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &x)| {
            if x > bv {
                (i, x)
            } else {
                (bi, bv)
            }
        })
        .0
}

fn measure(dir: &Path, workload: Option<&Path>) -> Figures {
    let f32m = Seq2SeqModel::load_as(dir, &Device::Cpu, ComputeType::F32).unwrap();
    let i8m = Seq2SeqModel::load_as(dir, &Device::Cpu, ComputeType::Int8).unwrap();
    assert_eq!(i8m.compute_type(), ComputeType::Int8);
    let cases = inputs(&f32m, workload);
    let v = f32m.config().vocab_size;
    let mut f = Figures {
        inputs: cases.len(),
        identical: 0,
        prefix_share: 0.0,
        max_delta: 0.0,
        top1: 0.0,
        positions: 0,
    };
    let mut agree = 0usize;
    for (ids, t) in &cases {
        // Generated tokens only (the decoder start token is not an output).
        let a = greedy(&f32m, ids, *t);
        let b = greedy(&i8m, ids, *t);
        let (ga, gb) = (&a[1..], &b[1..]);
        f.identical += usize::from(ga == gb);
        let lcp = ga.iter().zip(gb).take_while(|(x, y)| x == y).count();
        f.prefix_share += lcp as f64 / ga.len().max(gb.len()).max(1) as f64;
        // Teacher forcing along f32's output: position i predicts a[i + 1].
        let forced = &a[..a.len() - 1];
        if forced.is_empty() {
            continue;
        }
        let la = f32m.teacher_forced_logits(ids, forced).unwrap();
        let lb = i8m.teacher_forced_logits(ids, forced).unwrap();
        let la = la.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let lb = lb.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (ra, rb) in la.chunks(v).zip(lb.chunks(v)) {
            for (x, y) in ra.iter().zip(rb) {
                f.max_delta = f.max_delta.max((x - y).abs());
            }
            agree += usize::from(argmax(ra) == argmax(rb));
            f.positions += 1;
        }
    }
    f.prefix_share /= cases.len().max(1) as f64;
    f.top1 = agree as f64 / f.positions.max(1) as f64;
    f
}

/// CTranslate2 4.8.5 int8 vs float32 (bench/ct2_int8_accuracy.py, 2-core AMD EPYC AVX2).
struct Yardstick {
    identical: usize,
    prefix_share: f64,
    max_delta: f32,
    top1: f64,
}

fn check(dir: &str, ct2: Yardstick) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let ours = measure(&dir, None);
    eprintln!("{}: tarjama int8 vs f32 {ours:?}", dir.display());
    assert!(ours.identical >= ct2.identical, "identical greedy outputs");
    assert!(ours.prefix_share >= ct2.prefix_share, "common-prefix share");
    assert!(ours.max_delta <= ct2.max_delta, "max |Δ logit|");
    assert!(ours.top1 >= ct2.top1, "top-1 agreement");
}

#[test]
fn marian_int8_is_as_close_to_f32_as_ctranslate2s() {
    check(
        "tests/fixtures/conditioned/tiny-marian-ar-en",
        Yardstick {
            identical: 16,
            prefix_share: 0.667,
            max_delta: 2.139,
            top1: 0.903,
        },
    );
}

#[test]
fn bart_int8_is_as_close_to_f32_as_ctranslate2s() {
    check(
        "tests/fixtures/conditioned/tiny-bart-summarizer",
        Yardstick {
            identical: 0,
            prefix_share: 0.103,
            max_delta: 2.274,
            top1: 0.694,
        },
    );
}

/// The opus-mt-shaped bench model with std 0.05 weights (see the module doc); prints figures.
/// `TARJAMA_ACCURACY_WORKLOAD` replaces bench/workload.json (any `source_lengths` and
/// `target_lengths`, e.g. more inputs for tighter figures; `bench/ct2_int8_accuracy.py
/// --workload` draws the same inputs).
#[test]
#[ignore]
fn bench_model_figures() {
    let Some(dir) = std::env::var_os("TARJAMA_ACCURACY_MODEL") else {
        eprintln!("TARJAMA_ACCURACY_MODEL is not set");
        return;
    };
    let workload = match std::env::var_os("TARJAMA_ACCURACY_WORKLOAD") {
        Some(p) => Path::new(&p).to_path_buf(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/workload.json"),
    };
    let f = measure(Path::new(&dir), Some(&workload));
    println!(
        "{{\"engine\": \"tarjama\", \"inputs\": {}, \"identical_greedy\": {}, \"mean_common_prefix_share\": {:.4}, \"max_abs_logit_delta\": {:.4}, \"top1_agreement\": {:.4}, \"positions\": {}}}",
        f.inputs, f.identical, f.prefix_share, f.max_delta, f.top1, f.positions
    );
}
