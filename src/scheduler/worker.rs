//! The inference thread: takes batches, runs them on the backend, answers each row's request.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::queue::{Batch, Row};
use super::{
    Backend, BackendError, BatchInput, Generation, SchedulerError, SentenceOutput, Shared,
};

pub(crate) fn run<B: Backend>(shared: Arc<Shared>, mut backend: B) {
    while let Some(batch) = next_batch(&shared) {
        run_batch(&shared, &mut backend, batch);
    }
    tracing::debug!("inference thread stopped");
}

/// Blocks until a batch is ready; `None` once the scheduler is closed and drained.
fn next_batch(shared: &Shared) -> Option<Batch> {
    let mut queue = shared.lock();
    loop {
        let dropped = queue.purge_dead(Instant::now());
        shared.count_dropped(dropped);
        let batch = queue.take_batch(&shared.config, &shared.limits);
        shared.publish_queue(&queue);
        if batch.is_some() {
            return batch;
        }
        if queue.closed && queue.is_empty() {
            return None;
        }
        queue = shared.wake.wait(queue).unwrap_or_else(|e| e.into_inner());
    }
}

fn run_batch<B: Backend>(shared: &Shared, backend: &mut B, batch: Batch) {
    let started = Instant::now();
    let span = tracing::debug_span!("batch", rows = batch.rows.len());
    let _enter = span.enter();
    let result = generate_rows(shared, backend, &batch.rows, &batch.options);
    let elapsed = started.elapsed();
    let batch_id = shared.stats.batches.fetch_add(1, Ordering::Relaxed);
    shared
        .metrics
        .batch(batch.rows.len(), batch.padded_tokens, elapsed);
    let outputs: Vec<Result<Option<Generation>, BackendError>> = match result {
        Ok(outputs) => outputs.into_iter().map(Ok).collect(),
        // The batch's rows are fine; one of them is not what the model takes. Run each row
        // alone so that only the guilty ones fail.
        Err(BackendError::Input(_)) if batch.rows.len() > 1 => batch
            .rows
            .iter()
            .map(|row| {
                let one = std::slice::from_ref(row);
                generate_rows(shared, backend, one, &batch.options).map(|mut o| o.pop().flatten())
            })
            .collect(),
        Err(error) => {
            tracing::error!(%error, "batch failed");
            fail_rows(shared, batch.rows, &error);
            return;
        }
    };
    tracing::debug!(ms = elapsed.as_millis() as u64, "batch done");
    answer_rows(shared, batch.rows, outputs, (batch_id, started, elapsed));
}

/// Runs `rows` on the backend: one result per row (`Ok(None)`: dropped, cancelled). A
/// panic fails only these rows; the loop keeps serving.
fn generate_rows<B: Backend>(
    shared: &Shared,
    backend: &mut B,
    rows: &[Row],
    options: &crate::scheduler::GenerationOverrides,
) -> Result<Vec<Option<Generation>>, BackendError> {
    let inputs: Vec<Vec<u32>> = rows.iter().map(|r| r.ids.clone()).collect();
    let alignment: Vec<bool> = rows.iter().map(|r| r.alignment).collect();
    let cancelled = |row: usize| {
        shared.aborted.load(Ordering::Relaxed)
            || rows
                .get(row)
                .is_none_or(|r| r.state.is_dead(Instant::now()))
    };
    let outputs = catch_unwind(AssertUnwindSafe(|| {
        let batch = BatchInput {
            alignment: &alignment,
            ..BatchInput::new(&inputs, options, &cancelled)
        };
        backend.generate_batch(batch)
    }))
    .unwrap_or_else(|panic| Err(BackendError::Internal(panic_message(panic.as_ref()))))?;
    if outputs.len() != rows.len() {
        return Err(BackendError::Internal(format!(
            "backend returned {} rows for {} inputs",
            outputs.len(),
            rows.len()
        )));
    }
    Ok(outputs)
}

fn answer_rows(
    shared: &Shared,
    rows: Vec<Row>,
    outputs: Vec<Result<Option<Generation>, BackendError>>,
    (batch, started, elapsed): (u64, Instant, std::time::Duration),
) {
    for (row, output) in rows.into_iter().zip(outputs) {
        match output {
            Err(error) => fail_rows(shared, vec![row], &error),
            Ok(Some(generation)) => {
                shared
                    .stats
                    .computed_sentences
                    .fetch_add(1, Ordering::Relaxed);
                shared
                    .stats
                    .generated_tokens
                    .fetch_add(generation.ids.len() as u64, Ordering::Relaxed);
                let queue_time = started.saturating_duration_since(row.enqueued_at);
                shared.metrics.sentence(queue_time, generation.ids.len());
                let out = SentenceOutput {
                    index: row.index,
                    input_tokens: row.ids.len(),
                    generation,
                    batch,
                    queue_time,
                    inference_time: elapsed,
                };
                let _ = row.reply.send(Ok(out));
            }
            Ok(None) => {
                shared.count_dropped(1);
                let error = if shared.aborted.load(Ordering::Relaxed) {
                    SchedulerError::ShuttingDown
                } else {
                    SchedulerError::DeadlineExceeded
                };
                let _ = row.reply.send(Err(error));
            }
        }
    }
}

fn fail_rows(shared: &Shared, rows: Vec<Row>, error: &BackendError) {
    shared.stats.failed_batches.fetch_add(1, Ordering::Relaxed);
    shared.metrics.failed_batch();
    for row in rows {
        let error = match error {
            BackendError::Input(reason) => SchedulerError::InvalidInput {
                index: row.index,
                reason: reason.clone(),
            },
            BackendError::Internal(message) => SchedulerError::Inference(message.clone()),
        };
        let _ = row.reply.send(Err(error));
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("panic during inference: {text}")
}
