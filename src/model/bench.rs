//! Throughput benchmark on the opus-mt-ar-en shapes with random weights (see
//! bench/workload.json and ANCHORS.md): every hypothesis is forced to the longest target
//! length of its batch; the figure is useful target tokens per wall-clock second.

use std::path::Path;
use std::time::Instant;

use serde::Deserialize;

use super::weights::SplitMix64;
use super::{ComputeType, Device, ModelConfig, ModelError, Seq2SeqModel};

#[derive(Deserialize)]
struct Workload {
    source_lengths: Vec<usize>,
    target_lengths: Vec<usize>,
    modes: Vec<BenchMode>,
}

#[derive(Deserialize, Clone)]
struct BenchMode {
    name: String,
    beam: usize,
    batch: usize,
}

/// One mode's outcome.
#[derive(Clone, Debug)]
pub struct BenchResult {
    pub mode: String,
    /// Useful target tokens (sum of the workload's target lengths).
    pub tokens: usize,
    pub seconds: f64,
    pub tokens_per_s: f64,
    /// Process CPU time (user + system) spent in this mode; on a shared machine
    /// `tokens / cpu_seconds` is steadier than wall-clock throughput.
    pub cpu_seconds: Option<f64>,
}

/// User + system CPU time of this process, from /proc/self/stat (clock ticks of 10 ms).
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is parenthesised and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Peak resident set size of this process in KiB (VmHWM), when /proc is available.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The real opus-mt-ar-en configuration, the workload and an English news text, built into
/// the binary so that `tarjama bench` and `loadtest` run from an installed binary.
pub const OPUS_MT_CONFIG_JSON: &str = include_str!("../../bench/opus-mt-ar-en.config.json");
/// The configuration of opus-mt-tc-big-ar-en (transformer-big), for `bench --shape`.
pub const OPUS_MT_TC_BIG_CONFIG_JSON: &str =
    include_str!("../../bench/opus-mt-tc-big-ar-en.config.json");
pub const WORKLOAD_JSON: &str = include_str!("../../bench/workload.json");
pub const EN_NEWS: &str = include_str!("../../bench/en-news.txt");

/// The text of `path`, or `embedded` when no path is given.
pub fn read_or(path: Option<&Path>, embedded: &'static str) -> Result<String, ModelError> {
    match path {
        None => Ok(embedded.to_string()),
        Some(p) => std::fs::read_to_string(p).map_err(|source| ModelError::Io {
            path: p.display().to_string(),
            source,
        }),
    }
}

/// Runs the workload's modes (or those named in `modes`) in workload order, batches of
/// `batch` consecutive sentences, as the CTranslate2 baseline runs them.
pub fn run_bench(
    config_json: &str,
    workload_json: &str,
    modes: Option<&[String]>,
) -> Result<Vec<BenchResult>, ModelError> {
    run_bench_with(
        config_json,
        workload_json,
        modes,
        false,
        ComputeType::F32,
        false,
    )
}

/// As [`run_bench`]; `length_sorted` groups sentences by source length before batching; the
/// linear layers compute in `compute`; with `alignment`, each mode runs a second time right
/// after the first (named `<mode>+align`) recording every sentence's alignment.
pub fn run_bench_with(
    config_json: &str,
    workload_json: &str,
    modes: Option<&[String]>,
    length_sorted: bool,
    compute: ComputeType,
    alignment: bool,
) -> Result<Vec<BenchResult>, ModelError> {
    let cfg = ModelConfig::from_json_str(config_json)?;
    let wl: Workload = serde_json::from_str(workload_json)
        .map_err(|e| ModelError::Config(format!("invalid workload: {e}")))?;
    if wl.source_lengths.len() != wl.target_lengths.len() {
        return Err(ModelError::Config(
            "workload: source/target lengths differ in count".into(),
        ));
    }
    let model = Seq2SeqModel::random_as(cfg, 0x7a11, &Device::Cpu, compute)?;
    let sentences = make_sentences(&model, &wl, length_sorted);
    let mut results = Vec::new();
    for mode in &wl.modes {
        if modes.is_some_and(|m| !m.iter().any(|n| n == &mode.name)) {
            continue;
        }
        results.push(run_mode(&model, &sentences, mode, false)?);
        if alignment {
            results.push(run_mode(&model, &sentences, mode, true)?);
        }
    }
    Ok(results)
}

/// (source ids with EOS appended, target length), in the order batches are formed.
fn make_sentences(model: &Seq2SeqModel, wl: &Workload, sorted: bool) -> Vec<(Vec<u32>, usize)> {
    let cfg = model.config();
    let span = (cfg.vocab_size as u64).saturating_sub(4).max(1);
    let mut rng = SplitMix64(0);
    let mut out: Vec<(Vec<u32>, usize)> = wl
        .source_lengths
        .iter()
        .zip(&wl.target_lengths)
        .map(|(&n, &t)| {
            let mut ids: Vec<u32> = (0..n).map(|_| 2 + (rng.next_u64() % span) as u32).collect();
            ids.push(cfg.eos_token_id);
            (ids, t)
        })
        .collect();
    if sorted {
        out.sort_by_key(|(ids, _)| std::cmp::Reverse(ids.len()));
    }
    out
}

fn run_mode(
    model: &Seq2SeqModel,
    sentences: &[(Vec<u32>, usize)],
    mode: &BenchMode,
    alignment: bool,
) -> Result<BenchResult, ModelError> {
    let base = model.generation_defaults();
    let cpu0 = process_cpu_seconds();
    let start = Instant::now();
    let mut tokens = 0;
    for chunk in sentences.chunks(mode.batch.max(1)) {
        let n = chunk.iter().map(|(_, t)| *t).max().unwrap_or(1);
        let mut p = base.clone();
        p.num_beams = mode.beam;
        p.max_new_tokens = Some(n);
        // Our min_length counts the decoder start token, like transformers' min_length.
        p.min_length = n + 1;
        p.early_stopping = false;
        let inputs: Vec<Vec<u32>> = chunk.iter().map(|(ids, _)| ids.clone()).collect();
        let align = vec![alignment; inputs.len()];
        super::generate_aligned(model, &inputs, &align, &p, &|_| false)?;
        tokens += chunk.iter().map(|(_, t)| t).sum::<usize>();
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu_seconds = process_cpu_seconds().zip(cpu0).map(|(a, b)| a - b);
    Ok(BenchResult {
        cpu_seconds,
        mode: if alignment {
            format!("{}+align", mode.name)
        } else {
            mode.name.clone()
        },
        tokens,
        seconds,
        tokens_per_s: tokens as f64 / seconds.max(1e-9),
    })
}

/// Shapes of the BART-large CNN summarizers (d_model 1024, 16 heads, ffn 4096, vocab 50264;
/// distilbart-cnn-12-6 has 12 encoder and 6 decoder layers, distilbart-cnn-6-6 6 and 6,
/// bart-large-cnn 12 and 12) with their summarization settings; the layers are filled in.
const BART_CNN_SHAPED: &str = r#"{
  "model_type": "bart", "d_model": 1024, "encoder_layers": 0, "decoder_layers": 0,
  "encoder_attention_heads": 16, "decoder_attention_heads": 16,
  "encoder_ffn_dim": 4096, "decoder_ffn_dim": 4096, "vocab_size": 50264,
  "max_position_embeddings": 1024, "activation_function": "gelu",
  "bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 2, "decoder_start_token_id": 2,
  "forced_bos_token_id": 0, "forced_eos_token_id": 2,
  "task_specific_params": {"summarization": {"num_beams": 4, "length_penalty": 2.0,
    "min_length": 56, "max_length": 142, "no_repeat_ngram_size": 3, "early_stopping": true}}
}"#;

/// Abstractive summary latency: a `source_tokens` article into `new_tokens` tokens with
/// beam 4 on a BART-large CNN-shaped model with `(encoder, decoder)` layers and random
/// weights (every beam forced to the full length, as real weights cost per token).
///
/// Timed as `anchor_summary.py` times CTranslate2 and PyTorch, so the figures compare: one
/// warm-up run, then the best of [`SUMMARY_RUNS`]. The warm-up is reported too: it is what the
/// first request after start costs.
pub fn summary_latency(
    (encoder_layers, decoder_layers): (usize, usize),
    source_tokens: usize,
    new_tokens: usize,
    compute: ComputeType,
) -> Result<SummaryLatency, ModelError> {
    let built = Instant::now();
    let mut json: serde_json::Value =
        serde_json::from_str(BART_CNN_SHAPED).map_err(|e| ModelError::Config(e.to_string()))?;
    json["encoder_layers"] = encoder_layers.into();
    json["decoder_layers"] = decoder_layers.into();
    let cfg = ModelConfig::from_json_str(&json.to_string())?;
    let model = Seq2SeqModel::random_as(cfg, 0x5eed, &Device::Cpu, compute)?;
    let build_seconds = built.elapsed().as_secs_f64();
    let span = (model.config().vocab_size as u64).saturating_sub(8).max(1);
    let mut rng = SplitMix64(1);
    let mut ids: Vec<u32> = vec![0];
    ids.extend((0..source_tokens.saturating_sub(2)).map(|_| 4 + (rng.next_u64() % span) as u32));
    ids.push(2);
    let mut p = model
        .summarization_defaults()
        .unwrap_or_else(|| model.generation_defaults());
    p.max_new_tokens = Some(new_tokens);
    p.min_length = new_tokens + 1;
    let inputs = [ids];
    let job = || -> Result<f64, ModelError> {
        let start = Instant::now();
        super::generate(&model, &inputs, &p, &|_| false)?;
        Ok(start.elapsed().as_secs_f64())
    };
    let first_seconds = job()?;
    let mut seconds = f64::INFINITY;
    for _ in 0..SUMMARY_RUNS {
        seconds = seconds.min(job()?);
    }
    // The encoder alone, again (warm), to split the job between encoding and decoding.
    let start = Instant::now();
    model.encoder_states(&inputs)?;
    Ok(SummaryLatency {
        seconds,
        first_seconds,
        encode_seconds: start.elapsed().as_secs_f64(),
        build_seconds,
    })
}

/// Timed runs of the summary job after its warm-up (as `anchor_summary.py`).
pub const SUMMARY_RUNS: usize = 3;

/// What [`summary_latency`] measured.
pub struct SummaryLatency {
    /// The whole job (encoding and beam search): the best of [`SUMMARY_RUNS`] warm runs.
    pub seconds: f64,
    /// The same job run first, cold (the warm-up).
    pub first_seconds: f64,
    /// Encoding the article alone (a separate run).
    pub encode_seconds: f64,
    /// Building the random model (not part of the job).
    pub build_seconds: f64,
}
