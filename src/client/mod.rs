//! `tarjama client`: batch translation of a folder of `.txt` files or a JSONL file through a
//! running server's `ProcessArticleStream`, a bounded number of articles at a time, into a
//! JSONL results file.
//!
//! The output is the run's memory: each finished article is appended (and flushed) as soon as
//! it is done, failed ones are not written, and a rerun skips the ids already there. So a
//! stopped, killed or partly failed run is finished by running the same command again.
//!
//! `input` reads the articles, `output` the results file, `article` makes one call and puts
//! its events together, `retry` decides what to try again and when, `connect` builds the
//! channel, `progress` shows how far it got.

mod article;
mod connect;
mod input;
mod output;
mod progress;
mod retry;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::config::ClientArgs;
use article::{CallOptions, Outcome};
use connect::Client;
use input::{BadItem, Entry, Item};
use output::Writer;
use progress::Progress;

pub use output::{Record, RecordTimings, RecordUsage};
pub use retry::RetryPolicy;

/// Failures of the run as a whole; a failure of one article is in the report instead.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read the input {}: {source}", path.display())]
    Input {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is neither a folder of .txt files nor a .jsonl file", .0.display())]
    InputKind(PathBuf),
    #[error("the output {} is the input file; give another --output", .0.display())]
    SameFile(PathBuf),
    #[error("cannot use the output {}: {source}", path.display())]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the output {} has a line that is not a result (line {line}: {message}); \
         not appending to a file this client did not write",
        path.display()
    )]
    OutputLine {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("bad server address `{addr}`: {message}")]
    Address { addr: String, message: String },
    #[error("cannot read the CA certificate {}: {source}", path.display())]
    TlsCa {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the API key must be printable ASCII (it is sent as an HTTP/2 header)")]
    ApiKey,
    #[error("cannot connect to the server at {addr}: {message}")]
    Connect { addr: String, message: String },
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct ClientReport {
    /// Articles in the input, bad entries included.
    pub total: usize,
    /// Already in the output before this run.
    pub skipped: usize,
    /// Translated and written by this run.
    pub done: usize,
    /// Not translated (bad input entries included); `failures` says why.
    pub failed: usize,
    /// (id, reason), in the order they failed.
    pub failures: Vec<(String, String)>,
    /// Calls beyond the first, over all articles.
    pub retries: u64,
    pub elapsed: Duration,
    /// The run was stopped before every article was tried.
    pub interrupted: bool,
    pub output: PathBuf,
}

impl ClientReport {
    /// Articles translated per second of this run.
    pub fn per_second(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn fail(&mut self, id: String, message: String) {
        self.failed += 1;
        self.failures.push((id, message));
    }

    /// One paragraph for people: counts, speed, the first few failures, what to do next.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "{} articles: {} translated, {} skipped (already in {}), {} failed, in {:.1} s \
             ({:.2} articles/s, {} retries).",
            self.total,
            self.done,
            self.skipped,
            self.output.display(),
            self.failed,
            self.elapsed.as_secs_f64(),
            self.per_second(),
            self.retries,
        );
        const SHOWN: usize = 3;
        if !self.failures.is_empty() {
            let shown: Vec<String> = self
                .failures
                .iter()
                .take(SHOWN)
                .map(|(id, why)| format!("`{id}` ({why})"))
                .collect();
            let _ = write!(text, " Failed: {}", shown.join("; "));
            if self.failures.len() > SHOWN {
                let _ = write!(text, "; and {} more", self.failures.len() - SHOWN);
            }
            text.push_str(". Failed articles are not written; rerun to retry them.");
        }
        if self.interrupted {
            text.push_str(" Stopped before the end; rerun the same command to resume.");
        }
        text
    }
}

/// Translates every article of `args.input` not yet in `args.output`.
pub async fn run(args: ClientArgs) -> Result<ClientReport, ClientError> {
    run_until(args, std::future::pending()).await
}

/// Like [`run`], but stops when `stop` completes: articles in flight are abandoned (their
/// calls cancelled, nothing written), those finished are in the output, and the report says
/// `interrupted`. For Ctrl-C, and for tests of resuming.
pub async fn run_until(
    args: ClientArgs,
    stop: impl Future<Output = ()>,
) -> Result<ClientReport, ClientError> {
    let started = Instant::now();
    refuse_same_file(&args.input, &args.output)?;
    let entries = input::load(&args.input, args.title_from_first_line).await?;
    let already = output::resume(&args.output).await?;
    let plan = Plan::new(entries, &already);
    let mut report = ClientReport {
        total: plan.total,
        skipped: plan.skipped,
        output: args.output.clone(),
        ..Default::default()
    };
    tracing::info!(
        total = plan.total,
        skipped = plan.skipped,
        to_do = plan.pending.len(),
        "starting"
    );
    for bad in plan.bad {
        tracing::warn!(id = %bad.id, error = %bad.message, "bad input entry");
        report.fail(bad.id, bad.message);
    }
    let mut writer = Writer::open(&args.output).await?;
    if !plan.pending.is_empty() {
        let client = connect::connect(&args).await?;
        let mut progress = Progress::new(plan.pending.len(), report.failed, args.quiet);
        let run = Run {
            client,
            options: call_options(&args),
            concurrency: args.concurrency.max(1),
        };
        let result = run
            .drive(plan.pending, &mut writer, &mut report, &mut progress, stop)
            .await;
        progress.finish();
        result?;
    }
    writer.sync().await?;
    report.elapsed = started.elapsed();
    Ok(report)
}

fn call_options(args: &ClientArgs) -> CallOptions {
    CallOptions {
        summary: args.summary,
        beam_size: args.beam_size,
        timeout: Duration::from_secs(args.timeout_secs.max(1)),
        retry: RetryPolicy::new(args.retries),
        title_from_first_line: args.title_from_first_line,
        format: args.format,
    }
}

/// Appending results to the JSONL being read would corrupt it.
fn refuse_same_file(input: &Path, output: &Path) -> Result<(), ClientError> {
    match (input.canonicalize(), output.canonicalize()) {
        (Ok(a), Ok(b)) if a == b => Err(ClientError::SameFile(output.to_path_buf())),
        _ => Ok(()),
    }
}

/// The input split by what this run does with it.
struct Plan {
    total: usize,
    skipped: usize,
    pending: Vec<Item>,
    bad: Vec<BadItem>,
}

impl Plan {
    fn new(entries: Vec<Entry>, already: &HashSet<String>) -> Self {
        let total = entries.len();
        let (mut skipped, mut pending, mut bad) = (0, Vec::new(), Vec::new());
        for entry in entries {
            match entry {
                Ok(item) if already.contains(&item.id) => skipped += 1,
                Ok(item) => pending.push(item),
                Err(b) => bad.push(b),
            }
        }
        Self {
            total,
            skipped,
            pending,
            bad,
        }
    }
}

struct Run {
    client: Client,
    options: CallOptions,
    concurrency: usize,
}

impl Run {
    /// At most `concurrency` articles in flight on the one channel; results are written in
    /// the order they finish.
    async fn drive(
        &self,
        pending: Vec<Item>,
        writer: &mut Writer,
        report: &mut ClientReport,
        progress: &mut Progress,
        stop: impl Future<Output = ()>,
    ) -> Result<(), ClientError> {
        let mut outcomes = futures::stream::iter(pending)
            .map(|item| article::process(self.client.clone(), item, &self.options))
            .buffer_unordered(self.concurrency);
        let mut stop = std::pin::pin!(stop);
        loop {
            // Writing happens outside the select, so stopping never tears a line.
            let outcome = tokio::select! {
                biased;
                () = &mut stop => {
                    report.interrupted = true;
                    progress.log(|| tracing::info!("stopped; finished articles are saved"));
                    return Ok(());
                }
                next = outcomes.next() => match next {
                    Some(outcome) => outcome,
                    None => return Ok(()),
                },
            };
            record(outcome, writer, report, progress).await?;
        }
    }
}

async fn record(
    outcome: Outcome,
    writer: &mut Writer,
    report: &mut ClientReport,
    progress: &mut Progress,
) -> Result<(), ClientError> {
    report.retries += u64::from(outcome.attempts.saturating_sub(1));
    match outcome.result {
        Ok(record) => {
            writer.append(&record).await?;
            report.done += 1;
            progress.done(&record);
        }
        Err(message) => {
            progress.failed(&outcome.id, &message);
            report.fail(outcome.id, message);
        }
    }
    Ok(())
}
