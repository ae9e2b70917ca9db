//! Progress on stderr: a bar with rate and ETA on a terminal; otherwise (or with `--quiet`)
//! one log line per article, which suits log files and CI.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use super::output::Record;

const TEMPLATE: &str =
    "[{elapsed_precise}] {wide_bar:.cyan/blue} {pos}/{len} {rate} ETA {eta_precise} · {msg}";

pub struct Progress {
    bar: Option<ProgressBar>,
    failed: usize,
    last: String,
}

impl Progress {
    /// `pending`: the articles this run will send; `failed`: input entries already failed.
    pub fn new(pending: usize, failed: usize, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| bar(pending as u64));
        let progress = Self {
            bar,
            failed,
            last: String::new(),
        };
        progress.update_message();
        progress
    }

    pub fn done(&mut self, record: &Record) {
        self.last = record.id.clone();
        match &self.bar {
            Some(bar) => bar.inc(1),
            None => tracing::info!(
                id = %record.id,
                attempts = record.attempts,
                client_ms = record.timings.client_ms,
                "translated"
            ),
        }
        self.update_message();
    }

    pub fn failed(&mut self, id: &str, message: &str) {
        self.failed += 1;
        self.last = id.to_string();
        // The log line goes out while the bar is cleared, so the two do not mix.
        self.log(|| tracing::warn!(id, error = message, "article failed"));
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
        self.update_message();
    }

    /// Runs `f` (which logs) with the bar out of the way.
    pub fn log<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// Leaves the final state of the bar on screen.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }

    fn update_message(&self) {
        if let Some(bar) = &self.bar {
            let last = if self.last.is_empty() {
                String::new()
            } else {
                format!(" · last: {}", self.last)
            };
            bar.set_message(format!("{} failed{last}", self.failed));
        }
    }
}

fn bar(len: u64) -> ProgressBar {
    let style = ProgressStyle::with_template(TEMPLATE)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "rate",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.1}/s", state.per_sec());
            },
        )
        .progress_chars("█▉▊▋▌▍▎▏ ");
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    bar.set_style(style);
    // Ticks keep the elapsed time and ETA moving while long articles are in flight.
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}
