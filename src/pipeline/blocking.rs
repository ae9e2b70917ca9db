//! CPU work of a request outside the model (normalisation, segmentation, tokenisation,
//! extractive summaries): on blocking threads, at most one job per core at a time, and
//! stopped when the call that wanted it ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::Semaphore;

use super::PipelineError;

/// Jobs running at once, process-wide: one per core, so that a flood of requests queues
/// here (async, cancellable) instead of growing tokio's blocking pool to hundreds of threads.
fn permits() -> &'static Arc<Semaphore> {
    static PERMITS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    PERMITS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Arc::new(Semaphore::new(cores))
    })
}

/// Set when the call that started a job has ended; the job checks it between stages.
#[derive(Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// `Err(Cancelled)` once set: for `?` between stages of a job.
    pub fn check(&self) -> Result<(), PipelineError> {
        if self.is_set() {
            Err(PipelineError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// Sets the flag when the awaiting future is dropped (the call ended).
struct CancelOnDrop(CancelFlag);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0 .0.store(true, Ordering::Relaxed);
    }
}

/// Runs `job` on a blocking thread once a slot is free. Dropping the returned future
/// cancels the job: it stops at its next check, and its slot is held until it does.
pub async fn run<T, F>(what: &'static str, job: F) -> Result<T, PipelineError>
where
    T: Send + 'static,
    F: FnOnce(&CancelFlag) -> Result<T, PipelineError> + Send + 'static,
{
    let permit = permits()
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| PipelineError::Internal(format!("{what}: the worker pool is closed")))?;
    let flag = CancelFlag::default();
    let _cancel = CancelOnDrop(flag.clone());
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        flag.check()?;
        job(&flag)
    })
    .await
    .map_err(|e| PipelineError::Internal(format!("{what} failed: {e}")))?
}
