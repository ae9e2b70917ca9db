//! Scheduler behaviour under load, with a test backend whose cost and failures we control.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tarjama::scheduler::{
    Backend, BackendError, Generation, GenerationOverrides, ModelLimits, Scheduler,
    SchedulerConfig, SchedulerError,
};

/// Answers each row with its ids reversed; "decodes" in `steps` steps of `step` each,
/// dropping rows that are cancelled between steps, like the real engine.
#[derive(Clone)]
struct TestBackend {
    step: Duration,
    steps: usize,
    /// Every row that was computed to the end, in order.
    computed: Arc<Mutex<Vec<Vec<u32>>>>,
    batch_sizes: Arc<Mutex<Vec<usize>>>,
    started: Arc<AtomicUsize>,
    limits: ModelLimits,
}

const PANIC_TOKEN: u32 = 999_999;
/// A token the "model" refuses, as the real one refuses an over-long input.
const REFUSED_TOKEN: u32 = 888_888;

impl TestBackend {
    fn new(step: Duration, steps: usize) -> Self {
        Self {
            step,
            steps,
            computed: Default::default(),
            batch_sizes: Default::default(),
            started: Default::default(),
            limits: ModelLimits::unbounded(),
        }
    }

    /// A fast backend (one 1 ms step) whose model has `limits`.
    fn with_limits(limits: ModelLimits) -> Self {
        Self {
            limits,
            ..Self::new(Duration::from_millis(1), 1)
        }
    }
}

fn expected(ids: &[u32]) -> Generation {
    let mut out = ids.to_vec();
    out.reverse();
    Generation {
        text: format!("{out:?}"),
        score: -(ids.len() as f32),
        ids: out,
        alignment: None,
    }
}

impl Backend for TestBackend {
    fn generate(
        &mut self,
        inputs: &[Vec<u32>],
        _options: &GenerationOverrides,
        cancelled: &dyn Fn(usize) -> bool,
    ) -> Result<Vec<Option<Generation>>, BackendError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        self.batch_sizes.lock().unwrap().push(inputs.len());
        if inputs.iter().any(|i| i.contains(&PANIC_TOKEN)) {
            panic!("injected failure");
        }
        if inputs.iter().any(|i| i.contains(&REFUSED_TOKEN)) {
            return Err(BackendError::Input("refused token".into()));
        }
        let mut alive: Vec<bool> = vec![true; inputs.len()];
        for _ in 0..self.steps {
            std::thread::sleep(self.step);
            for (row, a) in alive.iter_mut().enumerate() {
                *a = *a && !cancelled(row);
            }
            if !alive.contains(&true) {
                break;
            }
        }
        Ok(inputs
            .iter()
            .zip(alive)
            .map(|(ids, alive)| {
                alive.then(|| {
                    self.computed.lock().unwrap().push(ids.clone());
                    expected(ids)
                })
            })
            .collect())
    }

    fn limits(&self) -> ModelLimits {
        self.limits.clone()
    }
}

fn sentences(request: u32, n: usize) -> Vec<Vec<u32>> {
    (0..n)
        .map(|i| {
            (0..(3 + (i * 7) % 11) as u32)
                .map(|t| request * 1000 + t)
                .collect()
        })
        .collect()
}

fn config() -> SchedulerConfig {
    SchedulerConfig {
        max_batch_tokens: 256,
        max_batch_size: 8,
        max_queued_tokens: 100_000,
        max_share_per_request: 2,
        max_request_tokens: 100_000,
        ..SchedulerConfig::default()
    }
}

/// A scheduler with the test configuration on `backend` (kept to inspect what it ran).
fn start(backend: TestBackend) -> (TestBackend, Scheduler) {
    let scheduler = Scheduler::start(backend.clone(), config(), "t").unwrap();
    (backend, scheduler)
}

/// Why `inputs` were refused (panics if they were admitted).
fn refusal(
    scheduler: &Scheduler,
    inputs: Vec<Vec<u32>>,
    options: GenerationOverrides,
) -> SchedulerError {
    match scheduler.submit(inputs, options, None) {
        Err(e) => e,
        Ok(_) => panic!("admitted"),
    }
}

fn greedy() -> GenerationOverrides {
    GenerationOverrides {
        num_beams: Some(1),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_results_equal_one_at_a_time_results() {
    let (backend, scheduler) = start(TestBackend::new(Duration::from_millis(1), 2));
    let mut tasks = Vec::new();
    for r in 0..12u32 {
        let scheduler = scheduler.clone();
        tasks.push(tokio::spawn(async move {
            let input = sentences(r, 1 + r as usize % 5);
            let out = scheduler
                .submit(input.clone(), greedy(), None)
                .unwrap()
                .collect()
                .await
                .unwrap();
            (input, out)
        }));
    }
    for task in tasks {
        let (input, out) = task.await.unwrap();
        assert_eq!(out.len(), input.len());
        for (i, (ids, o)) in input.iter().zip(&out).enumerate() {
            assert_eq!(o.index, i);
            assert_eq!(o.generation, expected(ids));
        }
    }
    // Requests really were batched together.
    assert!(backend.batch_sizes.lock().unwrap().iter().any(|&n| n > 1));
    scheduler.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_request_is_never_computed() {
    let (backend, scheduler) = start(TestBackend::new(Duration::from_millis(20), 3));
    let busy = scheduler.submit(sentences(1, 16), greedy(), None).unwrap();
    let doomed = scheduler.submit(sentences(2, 6), greedy(), None).unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    drop(doomed);
    assert_eq!(busy.collect().await.unwrap().len(), 16);
    let computed = backend.computed.lock().unwrap().clone();
    assert!(
        computed.iter().all(|ids| ids[0] < 2000),
        "a cancelled sentence was computed"
    );
    assert_eq!(
        scheduler.stats().computed_sentences.load(Ordering::Relaxed),
        16
    );
    assert_eq!(scheduler.queued_tokens(), 0);
    scheduler.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_rows_leave_the_batch_when_cancelled() {
    let (backend, scheduler) = start(TestBackend::new(Duration::from_millis(30), 10));
    let ticket = scheduler.submit(sentences(3, 2), greedy(), None).unwrap();
    while backend.started.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(ticket);
    scheduler.shutdown();
    assert!(backend.computed.lock().unwrap().is_empty());
    assert_eq!(
        scheduler.stats().computed_sentences.load(Ordering::Relaxed),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_deadline_gives_deadline_exceeded_and_frees_the_queue() {
    let (backend, scheduler) = start(TestBackend::new(Duration::from_millis(20), 3));
    let busy = scheduler.submit(sentences(1, 16), greedy(), None).unwrap();
    let deadline = Instant::now() + Duration::from_millis(30);
    let late = scheduler
        .submit(sentences(2, 4), greedy(), Some(deadline))
        .unwrap();
    let result = late.collect().await;
    assert_eq!(result.unwrap_err(), SchedulerError::DeadlineExceeded);
    busy.collect().await.unwrap();
    assert_eq!(scheduler.queued_tokens(), 0);
    let computed = backend.computed.lock().unwrap().clone();
    assert!(
        computed.iter().all(|ids| ids[0] < 2000),
        "expired work was computed"
    );
    scheduler.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_refuses_new_work_and_keeps_admitted_work() {
    let backend = TestBackend::new(Duration::from_millis(5), 2);
    let cfg = SchedulerConfig {
        max_queued_tokens: 300,
        ..config()
    };
    let scheduler = Scheduler::start(backend.clone(), cfg, "t").unwrap();
    let mut admitted = Vec::new();
    let mut refused = 0;
    for r in 0..20u32 {
        match scheduler.submit(sentences(r + 1, 6), greedy(), None) {
            Ok(t) => admitted.push(t),
            Err(SchedulerError::QueueFull { limit, .. }) => {
                assert_eq!(limit, 300);
                refused += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(refused > 0, "the queue never filled");
    assert!(!admitted.is_empty());
    for t in admitted {
        assert_eq!(t.collect().await.unwrap().len(), 6);
    }
    scheduler.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_request_finishes_while_a_large_one_runs() {
    let (backend, scheduler) = start(TestBackend::new(Duration::from_millis(2), 2));
    let large = scheduler.submit(sentences(1, 400), greedy(), None).unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let small = scheduler.submit(sentences(2, 1), greedy(), None).unwrap();
    let small_done = small.collect().await.unwrap();
    assert_eq!(small_done.len(), 1);
    let computed_large = backend
        .computed
        .lock()
        .unwrap()
        .iter()
        .filter(|ids| ids[0] < 2000)
        .count();
    assert!(
        computed_large < 400,
        "the small request waited for the whole large one"
    );
    assert_eq!(large.collect().await.unwrap().len(), 400);
    scheduler.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_batch_fails_only_its_requests() {
    let (_, scheduler) = start(TestBackend::new(Duration::from_millis(1), 1));
    let bad = scheduler
        .submit(vec![vec![1, PANIC_TOKEN]], greedy(), None)
        .unwrap();
    let err = bad.collect().await.unwrap_err();
    assert!(
        matches!(err, SchedulerError::Inference(ref m) if m.contains("injected failure")),
        "{err}"
    );
    let good = scheduler.submit(sentences(5, 3), greedy(), None).unwrap();
    assert_eq!(good.collect().await.unwrap().len(), 3);
    assert_eq!(scheduler.stats().failed_batches.load(Ordering::Relaxed), 1);
    scheduler.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_queued_work_and_refuses_new() {
    let (_, scheduler) = start(TestBackend::new(Duration::from_millis(2), 1));
    let queued = scheduler.submit(sentences(1, 20), greedy(), None).unwrap();
    let s = scheduler.clone();
    let stopper = std::thread::spawn(move || s.shutdown());
    assert_eq!(queued.collect().await.unwrap().len(), 20);
    stopper.join().unwrap();
    assert_eq!(
        scheduler.submit(sentences(2, 1), greedy(), None).err(),
        Some(SchedulerError::ShuttingDown)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_request_stops_costing_compute() {
    let backend = TestBackend::new(Duration::from_millis(5), 1);
    let cfg = SchedulerConfig {
        max_batch_size: 1,
        ..config()
    };
    let scheduler = Scheduler::start(backend.clone(), cfg, "t").unwrap();
    // The longest sentence runs first and fails; the other nine must not run after it.
    let mut input = sentences(7, 9);
    input.push(vec![PANIC_TOKEN; 40]);
    let err = scheduler
        .submit(input, greedy(), None)
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    assert!(matches!(err, SchedulerError::Inference(_)));
    scheduler.shutdown();
    assert_eq!(
        scheduler.stats().computed_sentences.load(Ordering::Relaxed),
        0
    );
    assert_eq!(scheduler.queued_tokens(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_per_request_budget_is_refused_for_good() {
    let backend = TestBackend::new(Duration::from_millis(1), 1);
    let cfg = SchedulerConfig {
        max_queued_tokens: 1000,
        max_request_tokens: 100,
        ..config()
    };
    let scheduler = Scheduler::start(backend.clone(), cfg, "t").unwrap();
    // With the queue empty, as when it is full: never admitted, and not as "busy".
    let err = refusal(&scheduler, vec![vec![1; 30]; 4], greedy());
    assert_eq!(
        err,
        SchedulerError::RequestTooLarge {
            cost: 120,
            limit: 100
        }
    );
    let beams = GenerationOverrides {
        num_beams: Some(4),
        ..Default::default()
    };
    let err = refusal(&scheduler, vec![vec![1; 30]], beams);
    assert_eq!(
        err,
        SchedulerError::RequestTooLarge {
            cost: 120,
            limit: 100
        }
    );
    assert_eq!(scheduler.queued_tokens(), 0);
    // Requests within the budget always fit an empty queue.
    let ok = scheduler
        .submit(vec![vec![1; 25]; 4], greedy(), None)
        .unwrap();
    assert_eq!(ok.collect().await.unwrap().len(), 4);
    assert_eq!(backend.started.load(Ordering::SeqCst), 1);
    scheduler.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_the_model_cannot_take_is_refused_before_queueing() {
    let (backend, scheduler) = start(TestBackend::with_limits(ModelLimits {
        max_input_tokens: 10,
        vocab_size: 5000,
        ..ModelLimits::unbounded()
    }));
    let err = refusal(&scheduler, vec![vec![1; 5], vec![2; 11]], greedy());
    assert!(
        matches!(err, SchedulerError::InvalidInput { index: 1, ref reason } if reason.contains("11 tokens")),
        "{err:?}"
    );
    let err = refusal(&scheduler, vec![vec![5000]], greedy());
    assert!(
        matches!(err, SchedulerError::InvalidInput { index: 0, .. }),
        "{err:?}"
    );
    assert_eq!(backend.started.load(Ordering::SeqCst), 0);
    scheduler.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_error_in_a_batch_fails_only_its_row() {
    let (_, scheduler) = start(TestBackend::new(Duration::from_millis(1), 1));
    // Both requests share a batch; the model refuses one row of the first.
    let mut bad = sentences(1, 2);
    bad.push(vec![REFUSED_TOKEN]);
    let gate = scheduler.submit(vec![vec![7; 3]], greedy(), None).unwrap();
    let bad = scheduler.submit(bad, greedy(), None).unwrap();
    let good = scheduler.submit(sentences(2, 3), greedy(), None).unwrap();
    let good_inputs = sentences(2, 3);
    let good = good.collect().await.unwrap();
    for (out, ids) in good.iter().zip(&good_inputs) {
        assert_eq!(out.generation, expected(ids));
    }
    let err = bad.collect().await.unwrap_err();
    assert!(
        matches!(err, SchedulerError::InvalidInput { index: 2, .. }),
        "{err:?}"
    );
    gate.collect().await.unwrap();
    scheduler.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_cut_to_their_worst_case_memory() {
    // A row of n source tokens generating up to 100 steps costs (n + 100) × 1000 bytes.
    let backend = TestBackend::with_limits(ModelLimits {
        default_max_new_tokens: 100,
        beam_bytes_per_source_token: 1000,
        beam_bytes_per_step: 1000,
        ..ModelLimits::unbounded()
    });
    let cfg = SchedulerConfig {
        max_batch_bytes: 3 * 110_000,
        ..config()
    };
    let scheduler = Scheduler::start(backend.clone(), cfg, "t").unwrap();
    let out = scheduler
        .submit(vec![vec![1; 10]; 8], greedy(), None)
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(out.len(), 8);
    assert_eq!(*backend.batch_sizes.lock().unwrap(), vec![3, 3, 2]);
    // Fewer steps allowed: more rows fit.
    backend.batch_sizes.lock().unwrap().clear();
    let short = GenerationOverrides {
        num_beams: Some(1),
        max_new_tokens: Some(45),
        ..Default::default()
    };
    scheduler
        .submit(vec![vec![1; 10]; 8], short, None)
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(*backend.batch_sizes.lock().unwrap(), vec![6, 2]);
    scheduler.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_ends_queued_and_running_work_at_once() {
    let (backend, scheduler) = start(TestBackend::new(Duration::from_millis(20), 1000));
    let running = scheduler.submit(sentences(1, 2), greedy(), None).unwrap();
    let queued = scheduler.submit(sentences(2, 20), greedy(), None).unwrap();
    while backend.started.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    scheduler.abort();
    // The running batch (20 s of steps) leaves at its next step; nothing else runs.
    let errs = (
        running.collect().await.unwrap_err(),
        queued.collect().await.unwrap_err(),
    );
    assert_eq!(errs.1, SchedulerError::ShuttingDown);
    assert_eq!(errs.0, SchedulerError::ShuttingDown);
    assert_eq!(
        scheduler.submit(sentences(3, 1), greedy(), None).err(),
        Some(SchedulerError::ShuttingDown)
    );
    scheduler.shutdown();
    assert_eq!(backend.started.load(Ordering::SeqCst), 1);
}
