//! indicatif progress bars fed by hf-hub's download events.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use hf_hub::progress::{DownloadEvent, ProgressEvent, ProgressHandler};
use indicatif::{ProgressBar, ProgressStyle};

/// Last time any transfer activity was seen; the stall watchdog reads it.
#[derive(Clone)]
pub(crate) struct Activity(Arc<Mutex<Instant>>);

impl Activity {
    pub(crate) fn new() -> Self {
        Activity(Arc::new(Mutex::new(Instant::now())))
    }

    pub(crate) fn touch(&self) {
        if let Ok(mut t) = self.0.lock() {
            *t = Instant::now();
        }
    }

    pub(crate) fn idle(&self) -> std::time::Duration {
        self.0.lock().map(|t| t.elapsed()).unwrap_or_default()
    }
}

/// Handler for one file: drives an optional bar and the activity clock.
pub(crate) struct FileProgressHandler {
    bar: Option<ProgressBar>,
    activity: Activity,
}

impl FileProgressHandler {
    pub(crate) fn new(label: &str, show: bool, activity: Activity) -> Self {
        let bar = show.then(|| file_bar(label));
        FileProgressHandler { bar, activity }
    }
}

/// A byte-counting bar for one file, on stderr.
pub(crate) fn file_bar(label: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    let style = ProgressStyle::with_template(
        "{msg:40} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(label.to_string());
    bar
}

impl ProgressHandler for FileProgressHandler {
    fn on_progress(&self, event: &ProgressEvent) {
        self.activity.touch();
        let (Some(bar), ProgressEvent::Download(event)) = (&self.bar, event) else {
            return;
        };
        match event {
            DownloadEvent::Start { total_bytes, .. } => bar.set_length(*total_bytes),
            DownloadEvent::Progress { files } => {
                if let Some(f) = files.last() {
                    bar.set_length(f.total_bytes.max(f.bytes_completed));
                    bar.set_position(f.bytes_completed);
                }
            }
            DownloadEvent::AggregateProgress {
                bytes_completed,
                total_bytes,
                ..
            } => {
                bar.set_length(*total_bytes);
                bar.set_position(*bytes_completed);
            }
            DownloadEvent::Complete => bar.finish(),
        }
    }
}
