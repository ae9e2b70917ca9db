//! The waiting room: requests with the sentences they still have to run, and how a batch
//! is taken from them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use super::{
    GenerationOverrides, ModelLimits, RequestState, SchedulerConfig, SchedulerError, SentenceOutput,
};

pub(crate) type Reply = UnboundedSender<Result<SentenceOutput, SchedulerError>>;

struct QueuedSentence {
    index: usize,
    ids: Vec<u32>,
}

pub(crate) struct PendingRequest {
    id: u64,
    options: GenerationOverrides,
    /// The sentences' alignments are wanted.
    alignment: bool,
    state: Arc<RequestState>,
    reply: Reply,
    enqueued_at: Instant,
    /// Longest first, so that consecutive batches of one request have similar lengths and
    /// little padding.
    remaining: VecDeque<QueuedSentence>,
}

impl PendingRequest {
    pub(crate) fn new(
        sentences: Vec<Vec<u32>>,
        options: GenerationOverrides,
        alignment: bool,
        state: Arc<RequestState>,
        reply: Reply,
    ) -> Self {
        let mut remaining: Vec<QueuedSentence> = sentences
            .into_iter()
            .enumerate()
            .map(|(index, ids)| QueuedSentence { index, ids })
            .collect();
        remaining.sort_by(|a, b| b.ids.len().cmp(&a.ids.len()).then(a.index.cmp(&b.index)));
        Self {
            id: 0,
            options,
            alignment,
            state,
            reply,
            enqueued_at: Instant::now(),
            remaining: remaining.into(),
        }
    }

    fn beams(&self) -> usize {
        self.options.num_beams.unwrap_or(1).max(1)
    }

    /// Queue budget this request holds: source tokens × beams.
    pub(crate) fn cost(&self) -> usize {
        self.remaining.iter().map(|s| s.ids.len()).sum::<usize>() * self.beams()
    }
}

/// One sentence of a batch, with what the worker needs to answer its request.
pub(crate) struct Row {
    pub(crate) index: usize,
    pub(crate) ids: Vec<u32>,
    pub(crate) alignment: bool,
    pub(crate) state: Arc<RequestState>,
    pub(crate) reply: Reply,
    pub(crate) enqueued_at: Instant,
}

pub(crate) struct Batch {
    pub(crate) options: GenerationOverrides,
    pub(crate) rows: Vec<Row>,
    /// Longest source × rows × beams: the work the batch costs.
    pub(crate) padded_tokens: usize,
}

#[derive(Default)]
pub(crate) struct Queue {
    requests: VecDeque<PendingRequest>,
    pub(crate) queued_tokens: usize,
    next_id: u64,
    pub(crate) closed: bool,
}

impl Queue {
    pub(crate) fn push(&mut self, mut request: PendingRequest) -> u64 {
        self.next_id += 1;
        request.id = self.next_id;
        self.queued_tokens += request.cost();
        self.requests.push_back(request);
        self.next_id
    }

    /// Requests waiting and their sentences.
    pub(crate) fn depth(&self) -> (usize, usize) {
        let sentences = self.requests.iter().map(|r| r.remaining.len()).sum();
        (self.requests.len(), sentences)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// Removes a request's queued sentences; returns how many there were.
    pub(crate) fn remove(&mut self, id: u64) -> usize {
        let Some(pos) = self.requests.iter().position(|r| r.id == id) else {
            return 0;
        };
        let Some(request) = self.requests.remove(pos) else {
            return 0;
        };
        self.queued_tokens = self.queued_tokens.saturating_sub(request.cost());
        request.remaining.len()
    }

    /// Drops requests whose client left or whose deadline passed; returns the sentence count.
    pub(crate) fn purge_dead(&mut self, now: Instant) -> usize {
        let mut dropped = 0;
        let mut kept = VecDeque::with_capacity(self.requests.len());
        for request in self.requests.drain(..) {
            if request.state.is_dead(now) {
                self.queued_tokens = self.queued_tokens.saturating_sub(request.cost());
                dropped += request.remaining.len();
                // Nobody may be listening any more; that is fine.
                let _ = request.reply.send(Err(SchedulerError::DeadlineExceeded));
            } else {
                kept.push_back(request);
            }
        }
        self.requests = kept;
        dropped
    }

    /// Fails every queued request with `error` and empties the queue; returns the sentence
    /// count.
    pub(crate) fn fail_all(&mut self, error: SchedulerError) -> usize {
        let mut dropped = 0;
        for request in self.requests.drain(..) {
            dropped += request.remaining.len();
            let _ = request.reply.send(Err(error.clone()));
        }
        self.queued_tokens = 0;
        dropped
    }

    /// Takes the next batch: the options of the longest-waiting request decide which requests
    /// can join; each joins round-robin with a bounded share per pass until the budgets (rows,
    /// padded tokens × beams, worst-case memory) are met. A batch always takes one row.
    pub(crate) fn take_batch(
        &mut self,
        config: &SchedulerConfig,
        limits: &ModelLimits,
    ) -> Option<Batch> {
        let options = self.requests.front()?.options.clone();
        let beams = self.requests.front()?.beams();
        let steps = limits.max_steps(&options);
        let mut rows: Vec<Row> = Vec::new();
        let mut longest = 0usize;
        let mut contributed = vec![false; self.requests.len()];
        loop {
            let mut added_this_pass = false;
            for (i, request) in self.requests.iter_mut().enumerate() {
                if request.options != options {
                    continue;
                }
                let mut share = 0;
                while share < config.max_share_per_request {
                    let Some(next) = request.remaining.front() else {
                        break;
                    };
                    let len = next.ids.len().max(longest);
                    let n = rows.len() + 1;
                    let fits = n <= config.max_batch_size
                        && len * n * beams <= config.max_batch_tokens
                        && limits.row_bytes(len, steps, beams).saturating_mul(n)
                            <= config.max_batch_bytes;
                    if !rows.is_empty() && !fits {
                        break;
                    }
                    let Some(sentence) = request.remaining.pop_front() else {
                        break;
                    };
                    self.queued_tokens = self
                        .queued_tokens
                        .saturating_sub(sentence.ids.len() * beams);
                    longest = len;
                    rows.push(Row {
                        index: sentence.index,
                        ids: sentence.ids,
                        alignment: request.alignment,
                        state: request.state.clone(),
                        reply: request.reply.clone(),
                        enqueued_at: request.enqueued_at,
                    });
                    share += 1;
                    added_this_pass = true;
                    contributed[i] = true;
                }
            }
            if !added_this_pass {
                break;
            }
        }
        self.rotate(&contributed);
        let padded_tokens = longest * rows.len() * beams;
        Some(Batch {
            options,
            rows,
            padded_tokens,
        })
    }

    /// Moves the requests that got rows to the back (round-robin) and forgets emptied ones.
    fn rotate(&mut self, contributed: &[bool]) {
        let mut waiting = VecDeque::with_capacity(self.requests.len());
        let mut served = VecDeque::new();
        for (i, request) in self.requests.drain(..).enumerate() {
            if request.remaining.is_empty() {
                continue;
            }
            if contributed.get(i).copied().unwrap_or(false) {
                served.push_back(request);
            } else {
                waiting.push_back(request);
            }
        }
        waiting.extend(served);
        self.requests = waiting;
    }
}
