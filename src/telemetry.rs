//! Prometheus metrics: names, the process-wide recorder and the `/metrics` endpoint.
//!
//! The `metrics` facade keeps recording cheap and free of plumbing (a no-op until a recorder
//! is installed); `metrics-exporter-prometheus` renders the text format. The endpoint is our
//! own small axum server rather than the exporter's listener so it can run on a listener the
//! caller already bound (port 0 in tests) and stop with the gRPC server.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

pub const REQUESTS: &str = "tarjama_requests_total";
pub const REQUEST_DURATION: &str = "tarjama_request_duration_seconds";
pub const REQUEST_INPUT_TOKENS: &str = "tarjama_request_input_tokens_total";
pub const REQUEST_OUTPUT_TOKENS: &str = "tarjama_request_output_tokens_total";
pub const QUEUED_REQUESTS: &str = "tarjama_queued_requests";
pub const QUEUED_SENTENCES: &str = "tarjama_queued_sentences";
pub const QUEUED_TOKENS: &str = "tarjama_queued_tokens";
pub const QUEUE_WAIT: &str = "tarjama_queue_wait_seconds";
pub const BATCH_SIZE: &str = "tarjama_batch_size";
pub const BATCH_TOKENS: &str = "tarjama_batch_tokens";
pub const BATCH_DURATION: &str = "tarjama_batch_duration_seconds";
pub const BATCHES_FAILED: &str = "tarjama_batches_failed_total";
pub const GENERATED_TOKENS: &str = "tarjama_generated_tokens_total";
pub const SENTENCES_COMPUTED: &str = "tarjama_sentences_computed_total";
pub const SENTENCES_DROPPED: &str = "tarjama_sentences_dropped_total";
pub const MODEL_LOAD: &str = "tarjama_model_load_seconds";
pub const MODEL_INFO: &str = "tarjama_model_info";

const SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];
const BATCH_TOKEN_BUCKETS: &[f64] = &[
    32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0,
];

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot set up the metrics recorder: {0}")]
    Recorder(String),
    #[error("the metrics endpoint failed: {0}")]
    Serve(#[from] std::io::Error),
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls return the same handle). Metrics
/// recorded before this are lost, so servers call it before they load models.
pub fn install() -> Result<PrometheusHandle, TelemetryError> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), BATCH_SIZE_BUCKETS)
        })
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(BATCH_TOKENS.into()), BATCH_TOKEN_BUCKETS)
        })
        .map_err(|e| TelemetryError::Recorder(e.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    // Two servers in one process (tests) race here: the loser keeps the winner's handle.
    if metrics::set_global_recorder(recorder).is_err() {
        return HANDLE.get().cloned().ok_or_else(|| {
            TelemetryError::Recorder("another metrics recorder is installed".into())
        });
    }
    describe_all();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), TelemetryError> {
    let render = {
        let handle = handle.clone();
        move || std::future::ready(handle.render())
    };
    let app = axum::Router::new().route("/metrics", axum::routing::get(render));
    // Histograms keep rolling buckets that must be drained now and then.
    let upkeep = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    upkeep.abort();
    Ok(served?)
}

/// The canonical gRPC name of a status code, as grpcurl and the gRPC docs spell it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

fn describe_all() {
    describe_counter!(REQUESTS, "gRPC calls finished, by RPC and status code");
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "gRPC call duration, by RPC"
    );
    describe_counter!(
        REQUEST_INPUT_TOKENS,
        "Source tokens of successful calls, by RPC"
    );
    describe_counter!(
        REQUEST_OUTPUT_TOKENS,
        "Generated tokens of successful calls, by RPC"
    );
    describe_gauge!(
        QUEUED_REQUESTS,
        "Requests with sentences waiting, by model task"
    );
    describe_gauge!(
        QUEUED_SENTENCES,
        "Sentences waiting for a batch, by model task"
    );
    describe_gauge!(
        QUEUED_TOKENS,
        "Queued source tokens × beams (the admission budget), by model task"
    );
    describe_histogram!(
        QUEUE_WAIT,
        Unit::Seconds,
        "Time a sentence waited before its batch started"
    );
    describe_histogram!(BATCH_SIZE, "Sentences per batch");
    describe_histogram!(BATCH_TOKENS, "Padded source tokens × beams per batch");
    describe_histogram!(BATCH_DURATION, Unit::Seconds, "Inference time of one batch");
    describe_counter!(BATCHES_FAILED, "Batches that failed (error or panic)");
    describe_counter!(GENERATED_TOKENS, "Tokens generated by the model");
    describe_counter!(SENTENCES_COMPUTED, "Sentences run to completion");
    describe_counter!(
        SENTENCES_DROPPED,
        "Sentences dropped: client gone or deadline passed"
    );
    describe_gauge!(
        MODEL_LOAD,
        Unit::Seconds,
        "Time to load a model's weights and tokenizer"
    );
    describe_gauge!(
        MODEL_INFO,
        "Loaded models (value 1), with id, revision, family and task"
    );
}
