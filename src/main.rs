//! The `tarjama` command: a thin shell over the library.

// Inference allocates and frees activation buffers of megabytes every layer; glibc's malloc
// hands those back to the kernel and faults them in again each time (16 % of a summary job),
// mimalloc keeps them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Read;

use anyhow::{bail, Context, Result};
use clap::Parser;

use tarjama::config::{BenchArgs, Cli, Command, LogFormat, ServeArgs, TranslateArgs};
use tarjama::model::GenerationOverrides;
use tarjama::model::Seq2SeqModel;
use tarjama::pipeline::{SourceLanguage, SourceText, Translator};
use tarjama::scheduler::SchedulerConfig;
use tarjama::{loader, server};

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_e`, mimalloc.h; the sys
/// crate names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays with the allocator before it goes back to the kernel.
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// mimalloc hands freed memory back to the kernel 10 ms after it is freed (its default): a
/// decoding step frees and reallocates megabytes of activations and logits, and faulting them
/// in again (the kernel clearing every page) cost about 10 % of batched greedy decoding
/// (79 710 page faults in `bench --modes greedy-batch16`, 16 000–18 000 with 10 s). With a
/// 10 s delay memory still goes back after a burst. `MIMALLOC_PURGE_DELAY` (mimalloc's own
/// variable, read at its start) overrides this; the option is changed only if it reads its
/// documented default (10), so a mimalloc with another option order is left alone.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: plain reads and writes of mimalloc's option table, which it allows at any time.
    unsafe {
        if libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) == 10 {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
        }
    }
}

fn main() -> Result<()> {
    keep_freed_memory();
    let cli = Cli::parse();
    let (threads, log_format) = match &cli.command {
        Command::Serve(a) => (a.engine.threads, a.log_format),
        Command::Translate(a) => (a.threads, LogFormat::Text),
        Command::Bench(a) => (a.threads, LogFormat::Text),
        Command::Summarize(a) => (a.threads, LogFormat::Text),
        Command::Loadtest(a) => (a.engine.threads, LogFormat::Text),
        Command::Client(_) | Command::Models(_) => (1, LogFormat::Text),
    };
    set_compute_threads(threads);
    init_logging(log_format);
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Translate(args) => translate(args),
        Command::Bench(args) => bench(args),
        Command::Summarize(args) => summarize(args),
        Command::Loadtest(args) => loadtest(args),
        Command::Client(args) => client(args),
        Command::Models(args) => models(args),
    }
}

/// `tarjama models list|fetch`.
fn models(args: tarjama::config::ModelsArgs) -> Result<()> {
    use tarjama::config::ModelsCommand;
    match args.command {
        ModelsCommand::List { dir } => {
            let catalog = tarjama::catalog::Catalog::builtin()?;
            print!("{}", tarjama::catalog::listing(&catalog, &dir));
            Ok(())
        }
        ModelsCommand::Fetch { name, dir, quiet } => {
            let opts = tarjama::hub::HubOptions {
                progress: !quiet,
                ..Default::default()
            };
            let fetched = loader::fetch_catalog_model(&name, &dir, &opts)?;
            let bytes: u64 = fetched.files.iter().map(|f| f.bytes).sum();
            println!(
                "{name}: {} files, {:.1} MB, commit {} in {}",
                fetched.files.len(),
                bytes as f64 / 1e6,
                fetched.commit,
                fetched.dir.display()
            );
            Ok(())
        }
    }
}

/// Prints the run's summary; failed articles or an interruption make the exit code non-zero.
fn client(args: tarjama::config::ClientArgs) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    // Ctrl-C stops cleanly: finished articles are saved, the summary is printed.
    let interrupted = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let report = runtime.block_on(tarjama::client::run_until(args, interrupted))?;
    println!("{}", report.summary());
    if report.failed > 0 {
        bail!("{} of {} articles failed", report.failed, report.total);
    }
    if report.interrupted {
        bail!("interrupted");
    }
    Ok(())
}

/// candle's CPU kernels size their pool from RAYON_NUM_THREADS; it must be set before any
/// thread starts (on a 2-vCPU VM the automatic choice can come out as 1).
fn set_compute_threads(threads: usize) {
    let n = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TARJAMA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn serve(args: ServeArgs) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(async {
        let listeners = server::Listeners::bind(&args).await?;
        server::run(args, listeners, server::shutdown_signal())
            .await
            .context("the server stopped with an error")
    });
    // Blocking jobs still running (their calls are over) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

fn read_text(arg: Option<String>) -> Result<String> {
    let text = match arg {
        Some(t) => t,
        None => {
            let mut buf = String::new();
            std::io::stdin()
                .read_to_string(&mut buf)
                .context("cannot read standard input")?;
            buf
        }
    };
    if text.trim().is_empty() {
        bail!("nothing to translate: give the text as an argument or on standard input");
    }
    Ok(text)
}

fn translate(args: TranslateArgs) -> Result<()> {
    let text = if args.lines {
        String::new()
    } else {
        read_text(args.text.clone())?
    };
    let resolved = loader::resolve_model(&args.model, &args.hub)?;
    let (model, tokenizer) = loader::load_model(&resolved, args.compute_type)?;
    if args.lines {
        return translate_lines(&args, model, tokenizer, &resolved);
    }
    if args.raw {
        return translate_raw(&args, &text, &model, &tokenizer);
    }
    let info = loader::model_info(&resolved, &model, tarjama::pipeline::Task::Translation);
    let translator = Translator::start(model, tokenizer, info, SchedulerConfig::default())?;
    let options = cli_options(&args);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let done = runtime.block_on(translator.translate(
        source_text(&args, text),
        SourceLanguage::Auto,
        &options,
        None,
    ))?;
    translator.shutdown();
    if args.json {
        println!("{}", translation_json(&done));
    } else {
        println!("{}", done.text);
    }
    Ok(())
}

/// `--json`'s shape: the text, all generated ids, the mean score of the translated segments
/// (0 when every one was passed through), the segments.
fn translation_json(done: &tarjama::pipeline::TranslatedText) -> serde_json::Value {
    let token_ids: Vec<u32> = done
        .segments
        .iter()
        .flat_map(|s| s.token_ids.iter().copied())
        .collect();
    let scores: Vec<f32> = done
        .segments
        .iter()
        .filter(|s| !s.token_ids.is_empty())
        .map(|s| s.score)
        .collect();
    let score = match scores.len() {
        0 => 0.0,
        n => scores.iter().sum::<f32>() / n as f32,
    };
    let segments: Vec<_> = done
        .segments
        .iter()
        .map(|s| serde_json::json!({"source": s.source, "translation": s.translation, "token_ids": s.token_ids, "score": s.score, "detected_language": s.detected_language}))
        .collect();
    serde_json::json!({"translation": done.text, "token_ids": token_ids, "score": score, "segments": segments})
}

/// Inputs in flight at once with `--lines`: enough for the scheduler to fill its batches.
const LINES_IN_FLIGHT: usize = 64;

/// `--lines`: every line of standard input is one input; one JSON object per line comes out,
/// in input order. Lines go through the scheduler together, so they are batched; with
/// `--raw`, consecutive lines go to the model as batches of [`RAW_BATCH`].
fn translate_lines(
    args: &TranslateArgs,
    model: Seq2SeqModel,
    tokenizer: tarjama::tokenizer::Tokenizer,
    resolved: &loader::ChosenModel,
) -> Result<()> {
    use futures::StreamExt;
    use std::io::{BufRead, Write};
    let lines: Vec<String> = std::io::stdin()
        .lock()
        .lines()
        .collect::<std::io::Result<_>>()
        .context("cannot read standard input")?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.raw {
        for chunk in lines.chunks(RAW_BATCH) {
            for value in translate_raw_batch(args, chunk, &model, &tokenizer)? {
                writeln!(out, "{value}")?;
            }
        }
        return Ok(out.flush()?);
    }
    let info = loader::model_info(resolved, &model, tarjama::pipeline::Task::Translation);
    let translator = Translator::start(model, tokenizer, info, SchedulerConfig::default())?;
    let options = cli_options(args);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let mut done = futures::stream::iter(lines.iter())
            .map(|line| {
                let (translator, options) = (&translator, &options);
                async move {
                    if line.trim().is_empty() {
                        return Ok(serde_json::json!({"translation": "", "token_ids": [], "score": 0.0, "segments": []}));
                    }
                    translator
                        .translate(source_text(args, line.clone()), SourceLanguage::Auto, options, None)
                        .await
                        .map(|d| translation_json(&d))
                }
            })
            .buffered(LINES_IN_FLIGHT);
        while let Some(value) = done.next().await {
            writeln!(out, "{}", value?)?;
        }
        anyhow::Ok(())
    });
    translator.shutdown();
    result?;
    Ok(out.flush()?)
}

/// Lines per model call with `--lines --raw`.
const RAW_BATCH: usize = 16;

/// Lines as model inputs, unchanged, in one batch -> `{"translation", "token_ids", "score"}`.
fn translate_raw_batch(
    args: &TranslateArgs,
    lines: &[String],
    model: &Seq2SeqModel,
    tokenizer: &tarjama::tokenizer::Tokenizer,
) -> Result<Vec<serde_json::Value>> {
    let empty = serde_json::json!({"translation": "", "token_ids": [], "score": 0.0});
    let mut inputs = Vec::new();
    let mut at = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if !line.trim().is_empty() {
            inputs.push(tokenizer.encode(line)?);
            at.push(i);
        }
    }
    let mut out = vec![empty; lines.len()];
    if inputs.is_empty() {
        return Ok(out);
    }
    let params = model
        .generation_defaults()
        .with_overrides(&cli_options(args));
    let generated = tarjama::model::generate(model, &inputs, &params, &|_| false)?;
    for (g, i) in generated.into_iter().zip(at) {
        let g = g.context("the model returned nothing")?;
        let translation = tokenizer.decode(&g.ids, true)?;
        out[i] =
            serde_json::json!({"translation": translation, "token_ids": g.ids, "score": g.score});
    }
    Ok(out)
}

/// `text` in the format `translate` was given.
fn source_text(args: &TranslateArgs, text: String) -> SourceText {
    SourceText {
        text,
        format: args.format,
    }
}

/// The generation options `translate` was given.
fn cli_options(args: &TranslateArgs) -> GenerationOverrides {
    GenerationOverrides {
        num_beams: args.beam_size.map(|b| b.max(1)),
        max_new_tokens: args.max_new_tokens,
        ..Default::default()
    }
}

fn translate_raw(
    args: &TranslateArgs,
    text: &str,
    model: &Seq2SeqModel,
    tokenizer: &tarjama::tokenizer::Tokenizer,
) -> Result<()> {
    let ids = tokenizer.encode(text)?;
    let params = model
        .generation_defaults()
        .with_overrides(&cli_options(args));
    let generated = tarjama::model::generate(model, &[ids], &params, &|_| false)?
        .into_iter()
        .next()
        .flatten()
        .context("the model returned nothing")?;
    let translation = tokenizer.decode(&generated.ids, true)?;
    if args.json {
        let out = serde_json::json!({"translation": translation, "token_ids": generated.ids, "score": generated.score});
        println!("{out}");
    } else {
        println!("{translation}");
    }
    Ok(())
}

fn bench(args: BenchArgs) -> Result<()> {
    use tarjama::config::BenchShape;
    if args.summary {
        // The default shape is a translator's: a plain `bench --summary` times the default
        // summarizer.
        let layers = match args.shape {
            BenchShape::OpusMtArEn => BenchShape::DistilbartCnn126.summarizer_layers(),
            shape => shape.summarizer_layers(),
        };
        let layers = layers.context("--summary needs a summarizer --shape")?;
        return bench_summary(layers, args.compute_type);
    }
    let modes = (!args.modes.is_empty()).then_some(args.modes.as_slice());
    eprintln!(
        "  compute type {}, int8 kernels {}",
        args.compute_type,
        tarjama::model::int8_kernel()
    );
    use tarjama::model::bench::{
        read_or, OPUS_MT_CONFIG_JSON, OPUS_MT_TC_BIG_CONFIG_JSON, WORKLOAD_JSON,
    };
    let shape = match args.shape {
        BenchShape::OpusMtArEn => OPUS_MT_CONFIG_JSON,
        BenchShape::OpusMtTcBigArEn => OPUS_MT_TC_BIG_CONFIG_JSON,
        summarizer => anyhow::bail!("{summarizer:?} is a summarizer shape: use it with --summary"),
    };
    let config = read_or(args.config.as_deref(), shape)?;
    let workload = read_or(args.workload.as_deref(), WORKLOAD_JSON)?;
    let results = tarjama::model::bench::run_bench_with(
        &config,
        &workload,
        modes,
        args.sorted,
        args.compute_type,
        args.alignment,
    )
    .context("benchmark failed")?;
    for r in &results {
        println!("{} {:.1} tok/s", r.mode, r.tokens_per_s);
        let cpu = r
            .cpu_seconds
            .map_or(String::new(), |c| format!(", {c:.2} s CPU"));
        eprintln!("  {} tokens in {:.2} s{cpu}", r.tokens, r.seconds);
    }
    let peak_kib = tarjama::model::bench::peak_rss_kib().unwrap_or(0);
    println!("peak-rss {:.0} MiB", peak_kib as f64 / 1024.0);
    Ok(())
}

fn loadtest(args: tarjama::config::LoadtestArgs) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let (clients, seconds) = (args.clients, args.seconds);
    let r = runtime.block_on(tarjama::loadtest::run(args))?;
    println!("clients {clients}, {seconds} s");
    println!(
        "requests/s {:.2} ({} ok in {:.1} s)",
        r.requests_ok as f64 / r.seconds,
        r.requests_ok,
        r.seconds
    );
    println!("target tokens/s {:.1}", r.output_tokens as f64 / r.seconds);
    println!(
        "latency p50 {:.0} ms, p99 {:.0} ms",
        r.percentile(0.5),
        r.percentile(0.99)
    );
    let errors: Vec<String> = r
        .errors
        .iter()
        .map(|(code, n)| format!("{code} {n}"))
        .collect();
    println!(
        "errors: {}",
        if errors.is_empty() {
            "none".to_string()
        } else {
            errors.join(", ")
        }
    );
    let mib = |k: Option<u64>| {
        k.map_or("n/a".to_string(), |k| {
            format!("{:.0} MiB", k as f64 / 1024.0)
        })
    };
    println!(
        "server RSS after warm-up {}, at end {}, peak {}",
        mib(r.rss_after_warmup_kib),
        mib(r.rss_end_kib),
        mib(r.peak_rss_kib)
    );
    Ok(())
}

fn summarize(args: tarjama::config::SummarizeArgs) -> Result<()> {
    use tarjama::config::SummaryMethodArg;
    use tarjama::pipeline::{summarize_english, Summarizer, SummaryMethod, SummaryRequest};
    let text = read_text(args.text.clone())?;
    let request = SummaryRequest {
        method: match args.method {
            SummaryMethodArg::Extractive => SummaryMethod::Extractive,
            SummaryMethodArg::Abstractive => SummaryMethod::Abstractive,
        },
        budget: tarjama::summarize::SummaryBudget {
            max_sentences: args.max_sentences,
            max_words: args.max_words,
        },
        generation: GenerationOverrides::default(),
    };
    let summarizer = match args.method {
        SummaryMethodArg::Extractive => None,
        SummaryMethodArg::Abstractive => {
            let resolved = loader::resolve_model(&args.model, &args.hub)?;
            let (model, tokenizer) = loader::load_model(&resolved, args.compute_type)?;
            let info =
                loader::model_info(&resolved, &model, tarjama::pipeline::Task::Summarization);
            Some(Summarizer::start(
                model,
                tokenizer,
                info,
                SchedulerConfig::default(),
            )?)
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let out = runtime.block_on(summarize_english(summarizer.as_ref(), text, &request, None))?;
    if let Some(s) = &summarizer {
        s.shutdown();
    }
    let method = match out.method {
        SummaryMethod::Abstractive => "abstractive",
        _ => "extractive",
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({"summary": out.text, "method": method})
        );
    } else {
        println!("{}", out.text);
    }
    Ok(())
}

fn bench_summary(layers: (usize, usize), compute: tarjama::model::ComputeType) -> Result<()> {
    eprintln!("  compute type {compute}, {}+{} layers", layers.0, layers.1);
    let t = tarjama::model::bench::summary_latency(layers, 600, 60, compute)?;
    eprintln!(
        "  random BART-large-shaped model built in {:.1} s",
        t.build_seconds
    );
    println!("abstractive-600to60-beam4 {:.0} ms", t.seconds * 1000.0);
    eprintln!(
        "  best of {} after a warm-up run of {:.0} ms (as anchor_summary.py times)",
        tarjama::model::bench::SUMMARY_RUNS,
        t.first_seconds * 1000.0
    );
    eprintln!(
        "  of which encoding about {:.0} ms (measured alone)",
        t.encode_seconds * 1000.0
    );
    // The English news text the fixtures were made from (~255 words), as an article.
    let article = tarjama::model::bench::EN_NEWS;
    let started = std::time::Instant::now();
    let runs = 20;
    for _ in 0..runs {
        let _ = tarjama::summarize::extractive(article, &Default::default());
    }
    println!(
        "extractive-{}words {:.2} ms",
        article.split_whitespace().count(),
        started.elapsed().as_secs_f64() * 1000.0 / runs as f64
    );
    let peak_kib = tarjama::model::bench::peak_rss_kib().unwrap_or(0);
    println!("peak-rss {:.0} MiB", peak_kib as f64 / 1024.0);
    Ok(())
}
