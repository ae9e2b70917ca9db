//! Per-request bookkeeping: id, deadline, tracing span and the one log line at the end.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use metrics::{counter, histogram};
use tonic::metadata::MetadataMap;
use tonic::{Response, Status};

use crate::{proto, telemetry};

/// Usage and timings of one part (a text, a summary) of a response.
pub type UsageParts = (Option<proto::Usage>, Option<proto::Timings>);

static NEXT_REQUEST: AtomicU64 = AtomicU64::new(1);

pub struct RequestContext {
    rpc: &'static str,
    id: String,
    started: Instant,
    deadline: Option<Instant>,
    span: tracing::Span,
}

impl RequestContext {
    pub fn new(rpc: &'static str, metadata: &MetadataMap) -> Self {
        let started = Instant::now();
        let id = metadata
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map(str::to_string)
            .unwrap_or_else(|| format!("req-{}", NEXT_REQUEST.fetch_add(1, Ordering::Relaxed)));
        let deadline = metadata
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map(|t| started + answer_before(t));
        let span = tracing::info_span!("request", rpc, id = %id, texts = tracing::field::Empty);
        Self {
            rpc,
            id,
            started,
            deadline,
            span,
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    pub fn span(&self) -> tracing::Span {
        self.span.clone()
    }

    /// Ends a request refused before its work started (logged and counted like any other).
    pub fn refuse(&self, status: Status) -> Status {
        self.finish(Err(&status));
        status
    }

    /// Runs `work`, answering DEADLINE_EXCEEDED (and dropping the work) when time is up.
    pub async fn within_deadline<T>(
        &self,
        work: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        match self.deadline {
            None => work.await,
            Some(deadline) => tokio::time::timeout_at(deadline.into(), work)
                .await
                .unwrap_or_else(|_| {
                    Err(Status::deadline_exceeded(format!(
                        "the deadline of {} ms passed before the work was done; the work was dropped",
                        deadline.saturating_duration_since(self.started).as_millis()
                    )))
                }),
        }
    }

    pub fn response<T>(&self, body: T) -> Response<T> {
        let mut response = Response::new(body);
        if let Ok(value) = self.id.parse() {
            response.metadata_mut().insert("x-request-id", value);
        }
        response
    }

    /// The request's one log line and its metrics: usage and timings summed over the texts
    /// it carried.
    pub fn finish(&self, result: Result<Vec<UsageParts>, &Status>) {
        let _enter = self.span.enter();
        let elapsed = self.started.elapsed();
        let total_ms = elapsed.as_millis() as u64;
        let code = result
            .as_ref()
            .map_or_else(|s| s.code(), |_| tonic::Code::Ok);
        let code = telemetry::code_name(code);
        counter!(telemetry::REQUESTS, "rpc" => self.rpc, "code" => code).increment(1);
        histogram!(telemetry::REQUEST_DURATION, "rpc" => self.rpc).record(elapsed.as_secs_f64());
        let parts = match result {
            Ok(parts) => parts,
            Err(status) => {
                tracing::info!(code, error = status.message(), total_ms, "request failed");
                return;
            }
        };
        let (mut usage, mut timings) = (proto::Usage::default(), proto::Timings::default());
        for (u, t) in parts {
            let (u, t) = (u.unwrap_or_default(), t.unwrap_or_default());
            usage.input_tokens += u.input_tokens;
            usage.output_tokens += u.output_tokens;
            // Texts of one request run side by side: the slowest one is the request's time.
            timings.queue_ms = timings.queue_ms.max(t.queue_ms);
            timings.inference_ms = timings.inference_ms.max(t.inference_ms);
        }
        counter!(telemetry::REQUEST_INPUT_TOKENS, "rpc" => self.rpc)
            .increment(u64::from(usage.input_tokens));
        counter!(telemetry::REQUEST_OUTPUT_TOKENS, "rpc" => self.rpc)
            .increment(u64::from(usage.output_tokens));
        tracing::info!(
            code,
            input_tokens = usage.input_tokens,
            output_tokens = usage.output_tokens,
            queue_ms = timings.queue_ms,
            inference_ms = timings.inference_ms,
            total_ms,
            "request done"
        );
    }
}

/// tonic (client and server) ends a call at the client's deadline with CANCELLED; answering a
/// little earlier (10 %, at most 100 ms) lets the client see DEADLINE_EXCEEDED and the reason.
fn answer_before(timeout: Duration) -> Duration {
    let margin = (timeout / 10).min(Duration::from_millis(100));
    timeout.saturating_sub(margin)
}

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n), per the gRPC HTTP/2 spec.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("150m"), Some(Duration::from_millis(150)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("999999999S"), None);
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout(""), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
    }
}
