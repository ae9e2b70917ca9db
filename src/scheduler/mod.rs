//! Dynamic batching between the API and a model.
//!
//! Requests hand in their sentences (already tokenised); one dedicated inference thread owns
//! the model and takes batches from a bounded queue. Batches form without timers: work piles
//! up while the previous batch runs, so a busy server batches more. Sentences from different
//! requests share a batch (round-robin, a bounded share each, so a 5 000-sentence job cannot
//! starve a one-sentence request). Dropping a [`Ticket`] (client gone, deadline passed) removes
//! its queued sentences at once and its running rows leave the batch at the next decoding step.

mod queue;
mod telemetry;
mod worker;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use queue::{PendingRequest, Queue};
use telemetry::SchedulerMetrics;

pub use crate::model::{Alignment, GenerationOverrides};

/// What a backend returns for one input row.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    pub ids: Vec<u32>,
    pub text: String,
    pub score: f32,
    /// The generated tokens' alignment to the input's, for rows submitted with alignment
    /// ([`Scheduler::submit_with`]).
    pub alignment: Option<Alignment>,
}

/// Why a backend could not run a batch.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackendError {
    /// Some input is one the model cannot take; the rows that did nothing wrong are run
    /// again on their own.
    #[error("invalid input: {0}")]
    Input(String),
    #[error("{0}")]
    Internal(String),
}

/// What the model accepts, and what a row costs it in memory; known before anything runs,
/// so that requests are refused or batches cut before they can hurt.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelLimits {
    /// Longest input, in tokens (special tokens included).
    pub max_input_tokens: usize,
    /// Token ids must be below this.
    pub vocab_size: usize,
    /// Generated tokens when a request sets no limit.
    pub default_max_new_tokens: usize,
    /// Bytes one beam holds per source token (encoder states, cross-attention keys and
    /// values), per generated token (self-attention cache), and per step whatever the
    /// lengths (logits and their softmax).
    pub beam_bytes_per_source_token: usize,
    pub beam_bytes_per_step: usize,
    pub beam_bytes_fixed: usize,
    /// Bytes one beam holds per source token per generated token: the alignment rows of
    /// rows that ask for them (counted for every row: a small share of a row's bytes, and
    /// batches need no rule per row).
    pub beam_bytes_per_source_token_step: usize,
    /// Bytes one row holds per squared source token (encoder attention scores, all heads).
    pub row_bytes_per_source_token_squared: usize,
}

impl ModelLimits {
    /// No limits and no cost: for backends that are not models (tests).
    pub fn unbounded() -> Self {
        Self {
            max_input_tokens: usize::MAX,
            vocab_size: usize::MAX,
            default_max_new_tokens: 0,
            beam_bytes_per_source_token: 0,
            beam_bytes_per_step: 0,
            beam_bytes_fixed: 0,
            beam_bytes_per_source_token_step: 0,
            row_bytes_per_source_token_squared: 0,
        }
    }

    /// Why the model cannot take `ids`, if it cannot.
    pub fn check_input(&self, ids: &[u32]) -> Result<(), String> {
        if ids.is_empty() {
            return Err("the input has no tokens".into());
        }
        if ids.len() > self.max_input_tokens {
            return Err(format!(
                "the input has {} tokens; the model takes at most {}",
                ids.len(),
                self.max_input_tokens
            ));
        }
        match ids.iter().find(|&&t| t as usize >= self.vocab_size) {
            Some(bad) => Err(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.vocab_size
            )),
            None => Ok(()),
        }
    }

    /// Worst-case bytes of one row of `source` tokens generating up to `steps` tokens with
    /// `beams` beams.
    pub fn row_bytes(&self, source: usize, steps: usize, beams: usize) -> usize {
        let beam = self
            .beam_bytes_per_source_token
            .saturating_mul(source)
            .saturating_add(self.beam_bytes_per_step.saturating_mul(steps))
            .saturating_add(
                self.beam_bytes_per_source_token_step
                    .saturating_mul(source)
                    .saturating_mul(steps),
            )
            .saturating_add(self.beam_bytes_fixed);
        beam.saturating_mul(beams).saturating_add(
            self.row_bytes_per_source_token_squared
                .saturating_mul(source.saturating_mul(source)),
        )
    }

    /// The most tokens a request with `options` may generate per row (requests set at most
    /// `max_new_tokens`).
    pub fn max_steps(&self, options: &GenerationOverrides) -> usize {
        options
            .max_new_tokens
            .unwrap_or(self.default_max_new_tokens)
    }
}

/// One batch as [`Backend::generate_batch`] runs it.
pub struct BatchInput<'a> {
    pub inputs: &'a [Vec<u32>],
    /// Whether each row wants its alignment (missing entries: no).
    pub alignment: &'a [bool],
    pub options: &'a GenerationOverrides,
    /// Polled every decoding step, as in [`Backend::generate`].
    pub cancelled: &'a dyn Fn(usize) -> bool,
}

impl<'a> BatchInput<'a> {
    /// No row wants its alignment.
    pub fn new(
        inputs: &'a [Vec<u32>],
        options: &'a GenerationOverrides,
        cancelled: &'a dyn Fn(usize) -> bool,
    ) -> Self {
        Self {
            inputs,
            alignment: &[],
            options,
            cancelled,
        }
    }
}

/// The model side of the scheduler: runs one batch. Implemented by the real engine
/// ([`crate::pipeline::ModelBackend`]) and by test doubles.
pub trait Backend: Send + 'static {
    /// Generates for every row; a row for which `cancelled(row)` turns true may be dropped
    /// (returned as `None`) at the next decoding step.
    fn generate(
        &mut self,
        inputs: &[Vec<u32>],
        options: &GenerationOverrides,
        cancelled: &dyn Fn(usize) -> bool,
    ) -> Result<Vec<Option<Generation>>, BackendError>;

    /// As [`Backend::generate`]; rows with `batch.alignment[row]` also return their
    /// [`Generation::alignment`]. Backends that cannot align return none.
    fn generate_batch(
        &mut self,
        batch: BatchInput<'_>,
    ) -> Result<Vec<Option<Generation>>, BackendError> {
        self.generate(batch.inputs, batch.options, batch.cancelled)
    }

    /// What the model accepts and what its rows cost; asked once, at start.
    fn limits(&self) -> ModelLimits {
        ModelLimits::unbounded()
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchedulerError {
    #[error("the server is busy: {queued} tokens are queued and this request needs {needed} more (limit {limit}); retry later")]
    QueueFull {
        queued: usize,
        needed: usize,
        limit: usize,
    },
    /// Never admitted, however empty the queue: retrying cannot help.
    #[error("this request costs {cost} token-beams (source tokens × beams); one request may cost at most {limit}: send less text per request or use fewer beams")]
    RequestTooLarge { cost: usize, limit: usize },
    /// Input `index` of the submission cannot be run by the model.
    #[error("input {index}: {reason}")]
    InvalidInput { index: usize, reason: String },
    #[error("the deadline passed before the work was done")]
    DeadlineExceeded,
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("inference failed: {0}")]
    Inference(String),
}

/// One finished sentence of a request.
#[derive(Clone, Debug)]
pub struct SentenceOutput {
    /// Index of the sentence in the submitted list.
    pub index: usize,
    pub generation: Generation,
    pub input_tokens: usize,
    /// Which batch ran it (sentences of one batch share its inference time).
    pub batch: u64,
    pub queue_time: Duration,
    pub inference_time: Duration,
}

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Budget of one batch: padded source tokens × beams.
    pub max_batch_tokens: usize,
    /// Most rows (sentences) in one batch.
    pub max_batch_size: usize,
    /// Budget of everything waiting: source tokens × beams; past it, new work is refused.
    pub max_queued_tokens: usize,
    /// Most sentences one request may put into one batch while others wait.
    pub max_share_per_request: usize,
    /// Budget of one request (source tokens × beams): a request over it is refused at once
    /// and for good, so no request can hold more than this share of the queue.
    pub max_request_tokens: usize,
    /// Worst-case memory of one batch (encoder states, caches, logits), in bytes.
    pub max_batch_bytes: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_batch_tokens: 4096,
            max_batch_size: 32,
            max_queued_tokens: 262_144,
            max_share_per_request: 8,
            max_request_tokens: 65_536,
            max_batch_bytes: 2 << 30,
        }
    }
}

/// Counters for tests and metrics.
#[derive(Debug, Default)]
pub struct SchedulerStats {
    pub batches: AtomicU64,
    pub computed_sentences: AtomicU64,
    pub dropped_sentences: AtomicU64,
    pub failed_batches: AtomicU64,
    pub generated_tokens: AtomicU64,
}

/// Per-request flags the worker reads while the request's rows run.
#[derive(Debug)]
pub(crate) struct RequestState {
    cancelled: AtomicBool,
    deadline: Option<Instant>,
}

impl RequestState {
    fn is_dead(&self, now: Instant) -> bool {
        self.cancelled.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| now >= d)
    }
}

pub(crate) struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    config: SchedulerConfig,
    limits: ModelLimits,
    /// Set by [`Scheduler::abort`]: running rows leave their batch at the next step.
    aborted: AtomicBool,
    stats: SchedulerStats,
    metrics: SchedulerMetrics,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic while holding the lock cannot leave the queue half-updated in a way that
        // matters more than stopping the service would, so keep serving.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes the queue's depth; called wherever it changes, under the lock.
    fn publish_queue(&self, queue: &Queue) {
        let (requests, sentences) = queue.depth();
        self.metrics.queue(requests, sentences, queue.queued_tokens);
    }

    fn count_dropped(&self, sentences: usize) {
        if sentences > 0 {
            let n = sentences as u64;
            self.stats.dropped_sentences.fetch_add(n, Ordering::Relaxed);
            self.metrics.sentences_dropped.increment(n);
        }
    }
}

/// Handle to a running scheduler; cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    shared: Arc<Shared>,
    worker: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Scheduler {
    /// Starts the inference thread that owns `backend`.
    pub fn start<B: Backend>(
        backend: B,
        config: SchedulerConfig,
        name: &str,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            config,
            limits: backend.limits(),
            aborted: AtomicBool::new(false),
            stats: SchedulerStats::default(),
            metrics: SchedulerMetrics::new(name),
        });
        let worker_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name(format!("infer-{name}"))
            .spawn(move || worker::run(worker_shared, backend))?;
        Ok(Self {
            shared,
            worker: Arc::new(Mutex::new(Some(handle))),
        })
    }

    /// Queues `sentences` (token ids) for generation. Fails at once, with nothing queued,
    /// when an input is one the model cannot take (`InvalidInput`), when the request costs
    /// more than one request may (`RequestTooLarge`, final) or when the queue's budget would
    /// be exceeded (`QueueFull`, retry later: since every request fits the queue on its
    /// own, a retry succeeds once the queue drains).
    pub fn submit(
        &self,
        sentences: Vec<Vec<u32>>,
        options: GenerationOverrides,
        deadline: Option<Instant>,
    ) -> Result<Ticket, SchedulerError> {
        self.submit_with(sentences, options, deadline, false)
    }

    /// As [`Scheduler::submit`]; with `alignment`, each sentence's [`Generation`] also
    /// carries its alignment (such sentences batch with any others of the same options).
    pub fn submit_with(
        &self,
        sentences: Vec<Vec<u32>>,
        options: GenerationOverrides,
        deadline: Option<Instant>,
        alignment: bool,
    ) -> Result<Ticket, SchedulerError> {
        let state = Arc::new(RequestState {
            cancelled: AtomicBool::new(false),
            deadline,
        });
        for (index, ids) in sentences.iter().enumerate() {
            self.shared
                .limits
                .check_input(ids)
                .map_err(|reason| SchedulerError::InvalidInput { index, reason })?;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let total = sentences.len();
        let id = {
            let mut queue = self.shared.lock();
            if queue.closed {
                return Err(SchedulerError::ShuttingDown);
            }
            let pending = PendingRequest::new(sentences, options, alignment, state.clone(), tx);
            let needed = pending.cost();
            let request_limit = self.shared.config.max_request_tokens;
            if needed > request_limit {
                return Err(SchedulerError::RequestTooLarge {
                    cost: needed,
                    limit: request_limit,
                });
            }
            let limit = self.shared.config.max_queued_tokens;
            if queue.queued_tokens + needed > limit {
                return Err(SchedulerError::QueueFull {
                    queued: queue.queued_tokens,
                    needed,
                    limit,
                });
            }
            let id = queue.push(pending);
            self.shared.publish_queue(&queue);
            id
        };
        self.shared.wake.notify_one();
        Ok(Ticket {
            id,
            total,
            received: 0,
            ended: false,
            rx,
            state,
            shared: self.shared.clone(),
        })
    }

    pub fn stats(&self) -> &SchedulerStats {
        &self.shared.stats
    }

    /// Tokens (× beams) waiting in the queue.
    pub fn queued_tokens(&self) -> usize {
        self.shared.lock().queued_tokens
    }

    /// The per-request budget (source tokens × beams) this scheduler admits.
    pub fn max_request_tokens(&self) -> usize {
        self.shared.config.max_request_tokens
    }

    pub fn limits(&self) -> &ModelLimits {
        &self.shared.limits
    }

    /// Ends everything at once (the shutdown grace period is over): queued requests fail
    /// with `ShuttingDown`, running rows leave their batch at the next decoding step, and
    /// the inference thread stops after it. Does not wait for the thread.
    pub fn abort(&self) {
        self.shared.aborted.store(true, Ordering::Relaxed);
        let dropped = {
            let mut queue = self.shared.lock();
            queue.closed = true;
            let dropped = queue.fail_all(SchedulerError::ShuttingDown);
            self.shared.publish_queue(&queue);
            dropped
        };
        self.shared.count_dropped(dropped);
        self.shared.wake.notify_all();
    }

    /// Refuses new work, lets queued work finish, then stops the inference thread.
    pub fn shutdown(&self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
        let handle = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            if handle.join().is_err() {
                tracing::error!("inference thread ended with a panic");
            }
        }
    }
}

/// A request's outputs as they arrive, each in its sentence's slot.
pub struct Outputs(Vec<Option<SentenceOutput>>);

impl Outputs {
    pub fn new(sentences: usize) -> Self {
        Self(vec![None; sentences])
    }

    pub fn put(&mut self, out: SentenceOutput) {
        let index = out.index;
        if let Some(slot) = self.0.get_mut(index) {
            *slot = Some(out);
        }
    }

    /// The slots, in submission order (`None`: not arrived yet).
    pub fn slots(&self) -> &[Option<SentenceOutput>] {
        &self.0
    }

    /// Every output in submission order, once all have arrived.
    pub fn into_complete(self) -> Result<Vec<SentenceOutput>, SchedulerError> {
        self.0
            .into_iter()
            .map(|o| o.ok_or_else(|| SchedulerError::Inference("a sentence got no result".into())))
            .collect()
    }
}

/// A request's claim on its results. Dropping it cancels whatever has not run yet.
pub struct Ticket {
    id: u64,
    total: usize,
    received: usize,
    /// An error ended the request: nothing more will come.
    ended: bool,
    rx: mpsc::UnboundedReceiver<Result<SentenceOutput, SchedulerError>>,
    state: Arc<RequestState>,
    shared: Arc<Shared>,
}

impl Ticket {
    /// The next finished sentence (in completion order), `None` once all have arrived.
    pub async fn next(&mut self) -> Option<Result<SentenceOutput, SchedulerError>> {
        if self.ended || self.received == self.total {
            return None;
        }
        let item = self.rx.recv().await;
        match item {
            Some(Ok(out)) => {
                self.received += 1;
                Some(Ok(out))
            }
            Some(Err(e)) => {
                self.ended = true;
                Some(Err(e))
            }
            // The worker is gone (shutdown raced with this request).
            None => {
                self.ended = true;
                Some(Err(SchedulerError::ShuttingDown))
            }
        }
    }

    /// All sentences, in submission order.
    pub async fn collect(mut self) -> Result<Vec<SentenceOutput>, SchedulerError> {
        let mut outputs = Outputs::new(self.total);
        while let Some(item) = self.next().await {
            outputs.put(item?);
        }
        outputs.into_complete()
    }

    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // Also after an error: the request's other sentences are of no use any more.
        if self.received == self.total {
            return;
        }
        self.state.cancelled.store(true, Ordering::Relaxed);
        let removed = {
            let mut queue = self.shared.lock();
            let removed = queue.remove(self.id);
            self.shared.publish_queue(&queue);
            removed
        };
        self.shared.count_dropped(removed);
    }
}
