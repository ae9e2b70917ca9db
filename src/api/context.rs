//! Per-request bookkeeping: id, deadline, tracing span and the one log line at the end.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use metrics::{counter, histogram};
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::{Response, Status};

use crate::{proto, telemetry};

/// Usage and timings of one part (a text, a summary) of a response.
pub type UsageParts = (Option<proto::Usage>, Option<proto::Timings>);

/// Usage and timings of a whole call, summed over its parts as they are sent (a stream
/// keeps this, not a list of every part it sent).
#[derive(Clone, Copy, Debug, Default)]
pub struct UsageTotals {
    usage: proto::Usage,
    timings: proto::Timings,
}

impl UsageTotals {
    pub fn of(parts: impl IntoIterator<Item = UsageParts>) -> Self {
        let mut totals = Self::default();
        for part in parts {
            totals.add(part);
        }
        totals
    }

    pub fn add(&mut self, (usage, timings): UsageParts) {
        let (u, t) = (usage.unwrap_or_default(), timings.unwrap_or_default());
        self.usage.input_tokens = self.usage.input_tokens.saturating_add(u.input_tokens);
        self.usage.output_tokens = self.usage.output_tokens.saturating_add(u.output_tokens);
        // Parts of one call run side by side: the slowest one is the call's time.
        self.timings.queue_ms = self.timings.queue_ms.max(t.queue_ms);
        self.timings.inference_ms = self.timings.inference_ms.max(t.inference_ms);
    }
}

/// What every call runs under.
#[derive(Clone, Debug, Default)]
pub struct CallPolicy {
    /// The deadline of a call whose client set none (a stream's: of each of its texts).
    pub default_timeout: Option<Duration>,
    /// Fired when the shutdown grace period is over: calls still running end with
    /// UNAVAILABLE.
    pub abort: CancellationToken,
}

impl CallPolicy {
    /// `deadline`, or the default timeout from now when there is none.
    pub fn deadline_from_now(&self, deadline: Option<Instant>) -> Option<Instant> {
        deadline.or_else(|| self.default_timeout.map(|t| Instant::now() + t))
    }
}

/// Request ids longer than this are replaced by one of ours.
const MAX_REQUEST_ID_CHARS: usize = 128;
static NEXT_REQUEST: AtomicU64 = AtomicU64::new(1);

pub struct RequestContext {
    rpc: &'static str,
    id: String,
    started: Instant,
    deadline: Option<Instant>,
    span: tracing::Span,
    /// The call's line was logged; a context dropped without it was cancelled.
    finished: AtomicBool,
    abort: CancellationToken,
}

impl RequestContext {
    pub fn new(rpc: &'static str, metadata: &MetadataMap, policy: &CallPolicy) -> Self {
        let started = Instant::now();
        let id = metadata
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID_CHARS)
            .map(str::to_string)
            .unwrap_or_else(|| format!("req-{}", NEXT_REQUEST.fetch_add(1, Ordering::Relaxed)));
        let client_deadline = metadata
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map(|t| started + answer_before(t));
        let deadline = policy.deadline_from_now(client_deadline);
        let span = tracing::info_span!("request", rpc, id = %loggable_id(&id), texts = tracing::field::Empty);
        Self {
            rpc,
            id,
            started,
            deadline,
            span,
            finished: AtomicBool::new(false),
            abort: policy.abort.clone(),
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

    /// Runs `work`, answering DEADLINE_EXCEEDED (and dropping the work) when time is up, and
    /// UNAVAILABLE when the server's shutdown grace period ends first.
    pub async fn within_deadline<T>(
        &self,
        work: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let work = async {
            tokio::select! {
                result = work => result,
                _ = self.abort.cancelled() => Err(Status::unavailable(
                    "the server shut down before this call finished (the shutdown grace period is over); retry on another replica",
                )),
            }
        };
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
    /// it carried. Only the first call counts.
    pub fn finish(&self, result: Result<UsageTotals, &Status>) {
        if self.finished.swap(true, Ordering::Relaxed) {
            return;
        }
        let _enter = self.span.enter();
        let elapsed = self.started.elapsed();
        let total_ms = elapsed.as_millis() as u64;
        let code = result
            .as_ref()
            .map_or_else(|s| s.code(), |_| tonic::Code::Ok);
        let code = telemetry::code_name(code);
        counter!(telemetry::REQUESTS, "rpc" => self.rpc, "code" => code).increment(1);
        histogram!(telemetry::REQUEST_DURATION, "rpc" => self.rpc).record(elapsed.as_secs_f64());
        let UsageTotals { usage, timings } = match result {
            Ok(totals) => totals,
            Err(status) => {
                tracing::info!(code, error = status.message(), total_ms, "request failed");
                return;
            }
        };
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

impl Drop for RequestContext {
    /// A call whose future was dropped (the client cancelled it or went away) is logged and
    /// counted too.
    fn drop(&mut self) {
        if !self.finished.load(Ordering::Relaxed) {
            self.finish(Err(&Status::cancelled(
                "the client cancelled the call or went away",
            )));
        }
    }
}

/// The id as text logs show it: as sent when it is a plain token, else quoted and escaped
/// so that spaces, `=` or quotes in a client's header cannot forge log fields.
fn loggable_id(id: &str) -> String {
    let plain = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.:/@+".contains(c));
    if plain {
        id.to_string()
    } else {
        format!("{id:?}")
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
