//! Retries of an article when the server is busy (RESOURCE_EXHAUSTED: its queue is full) or
//! not there for a moment (UNAVAILABLE: loading, restarting, a dropped connection). Every
//! other status is the article's own fault or a lost deadline, and retrying would not help.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// A server's retry delay is honoured up to this, so a wrong hint cannot stall the run.
const MAX_SERVER_DELAY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts after the first.
    pub retries: u32,
    /// Wait after the first failure; doubled after each further one.
    pub base: Duration,
    pub cap: Duration,
}

impl RetryPolicy {
    pub fn new(retries: u32) -> Self {
        Self {
            retries,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(10),
        }
    }

    /// The wait after the `failures`-th failed attempt (1-based). The server's
    /// `google.rpc.RetryInfo` wins when present (plus up to 20 % so that the clients it
    /// refused at once do not come back at once); otherwise exponential with "equal jitter"
    /// (half fixed, half random).
    pub fn delay(&self, failures: u32, status: &Status) -> Duration {
        let hint = status
            .get_details_retry_info()
            .and_then(|info| info.retry_delay)
            .filter(|d| !d.is_zero());
        if let Some(hint) = hint {
            let hint = hint.min(MAX_SERVER_DELAY);
            return hint + hint.mul_f64(0.2 * random_fraction());
        }
        let doublings = failures.saturating_sub(1).min(30);
        let exponential = self.base.saturating_mul(1 << doublings).min(self.cap);
        exponential / 2 + (exponential / 2).mul_f64(random_fraction())
    }
}

pub fn retryable(code: Code) -> bool {
    matches!(code, Code::ResourceExhausted | Code::Unavailable)
}

/// A number in [0, 1): std's per-instance random hasher keys are enough for jitter and save
/// a dependency.
fn random_fraction() -> f64 {
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Runs `attempt` until it succeeds, fails for good, or the retries are used up. Returns the
/// outcome and the number of attempts made.
pub async fn with_retries<T, F, Fut>(
    policy: &RetryPolicy,
    id: &str,
    mut attempt: F,
) -> (Result<T, Status>, u32)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut attempts = 0;
    loop {
        attempts += 1;
        let status = match attempt().await {
            Ok(value) => return (Ok(value), attempts),
            Err(status) => status,
        };
        if !retryable(status.code()) || attempts > policy.retries {
            return (Err(status), attempts);
        }
        let wait = policy.delay(attempts, &status);
        tracing::debug!(
            id,
            code = ?status.code(),
            error = status.message(),
            attempt = attempts,
            wait_ms = wait.as_millis() as u64,
            "retrying"
        );
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::ErrorDetails;

    #[test]
    fn backoff_doubles_within_jitter_and_is_capped() {
        let policy = RetryPolicy::new(10);
        let busy = Status::resource_exhausted("busy");
        for (failures, full_ms) in [(1, 200), (2, 400), (3, 800), (7, 10_000), (40, 10_000)] {
            let d = policy.delay(failures, &busy).as_millis() as u64;
            assert!((full_ms / 2..=full_ms).contains(&d), "{failures}: {d} ms");
        }
    }

    #[test]
    fn the_servers_retry_delay_wins() {
        let mut details = ErrorDetails::new();
        details.set_retry_info(Some(Duration::from_millis(1500)));
        let status = Status::with_error_details(Code::ResourceExhausted, "full", details);
        let d = RetryPolicy::new(3).delay(1, &status).as_millis();
        assert!((1500..=1800).contains(&d), "{d}");
    }

    #[tokio::test]
    async fn only_busy_and_unavailable_are_retried() {
        let policy = RetryPolicy {
            retries: 3,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(2),
        };
        let mut calls = 0;
        let (out, attempts) = with_retries(&policy, "a", || {
            calls += 1;
            let n = calls;
            async move {
                match n {
                    1 => Err(Status::unavailable("down")),
                    2 => Err(Status::resource_exhausted("full")),
                    _ => Ok(n),
                }
            }
        })
        .await;
        assert_eq!((out.unwrap(), attempts), (3, 3));
        let (out, attempts) = with_retries(&policy, "b", || async {
            Err::<(), _>(Status::invalid_argument("bad"))
        })
        .await;
        assert_eq!(
            (out.unwrap_err().code(), attempts),
            (Code::InvalidArgument, 1)
        );
        let (out, attempts) = with_retries(&policy, "c", || async {
            Err::<(), _>(Status::unavailable("down"))
        })
        .await;
        assert_eq!((out.unwrap_err().code(), attempts), (Code::Unavailable, 4));
    }
}
