//! The scheduler's Prometheus series, registered once per model so the hot path only
//! touches ready handles.

use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

use crate::telemetry as names;

pub(crate) struct SchedulerMetrics {
    queued_requests: Gauge,
    queued_sentences: Gauge,
    queued_tokens: Gauge,
    queue_wait: Histogram,
    batch_size: Histogram,
    batch_tokens: Histogram,
    batch_duration: Histogram,
    batches_failed: Counter,
    generated_tokens: Counter,
    sentences_computed: Counter,
    pub(crate) sentences_dropped: Counter,
}

impl SchedulerMetrics {
    /// Handles labelled with the scheduler's task; no-ops when no recorder is installed.
    pub(crate) fn new(task: &str) -> Self {
        let task = task.to_string();
        Self {
            queued_requests: gauge!(names::QUEUED_REQUESTS, "task" => task.clone()),
            queued_sentences: gauge!(names::QUEUED_SENTENCES, "task" => task.clone()),
            queued_tokens: gauge!(names::QUEUED_TOKENS, "task" => task.clone()),
            queue_wait: histogram!(names::QUEUE_WAIT, "task" => task.clone()),
            batch_size: histogram!(names::BATCH_SIZE, "task" => task.clone()),
            batch_tokens: histogram!(names::BATCH_TOKENS, "task" => task.clone()),
            batch_duration: histogram!(names::BATCH_DURATION, "task" => task.clone()),
            batches_failed: counter!(names::BATCHES_FAILED, "task" => task.clone()),
            generated_tokens: counter!(names::GENERATED_TOKENS, "task" => task.clone()),
            sentences_computed: counter!(names::SENTENCES_COMPUTED, "task" => task.clone()),
            sentences_dropped: counter!(names::SENTENCES_DROPPED, "task" => task),
        }
    }

    pub(crate) fn queue(&self, requests: usize, sentences: usize, tokens: usize) {
        self.queued_requests.set(requests as f64);
        self.queued_sentences.set(sentences as f64);
        self.queued_tokens.set(tokens as f64);
    }

    pub(crate) fn batch(&self, rows: usize, padded_tokens: usize, took: Duration) {
        self.batch_size.record(rows as f64);
        self.batch_tokens.record(padded_tokens as f64);
        self.batch_duration.record(took.as_secs_f64());
    }

    pub(crate) fn sentence(&self, waited: Duration, generated: usize) {
        self.queue_wait.record(waited.as_secs_f64());
        self.generated_tokens.increment(generated as u64);
        self.sentences_computed.increment(1);
    }

    pub(crate) fn failed_batch(&self) {
        self.batches_failed.increment(1);
    }
}
