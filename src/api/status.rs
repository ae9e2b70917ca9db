//! The one place where domain errors become gRPC statuses.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::validate::InvalidRequest;
use crate::pipeline::PipelineError;
use crate::scheduler::SchedulerError;

/// Violations listed in a status: a request with 64 bad texts gets the first few, so the
/// trailers stay small enough for every proxy and client (some cap headers at 8 KiB).
const MESSAGE_VIOLATIONS: usize = 4;
const DETAIL_VIOLATIONS: usize = 16;

impl From<InvalidRequest> for Status {
    fn from(err: InvalidRequest) -> Self {
        let mut details = ErrorDetails::new();
        for v in err.0.iter().take(DETAIL_VIOLATIONS) {
            details.add_bad_request_violation(v.field.clone(), v.description.clone());
        }
        let mut message: Vec<String> = err
            .0
            .iter()
            .take(MESSAGE_VIOLATIONS)
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect();
        if err.0.len() > MESSAGE_VIOLATIONS {
            message.push(format!(
                "and {} more problems",
                err.0.len() - MESSAGE_VIOLATIONS
            ));
        }
        Status::with_error_details(Code::InvalidArgument, message.join("; "), details)
    }
}

impl From<PipelineError> for Status {
    fn from(err: PipelineError) -> Self {
        field_status("", err)
    }
}

/// Whether the client's input (not the server) is at fault: retrying cannot help.
fn is_invalid_input(err: &PipelineError) -> bool {
    matches!(
        err,
        PipelineError::Input { .. }
            | PipelineError::ResponseTooLarge { .. }
            | PipelineError::Scheduler(
                SchedulerError::InvalidInput { .. } | SchedulerError::RequestTooLarge { .. }
            )
    )
}

/// The status of `err` for the request field `field` (e.g. `texts[2].text`; empty: the
/// request as a whole): input errors name the field in a BadRequest violation.
pub fn field_status(field: &str, err: PipelineError) -> Status {
    if is_invalid_input(&err) {
        let message = if field.is_empty() {
            err.to_string()
        } else {
            format!("{field}: {err}")
        };
        let mut details = ErrorDetails::new();
        details.add_bad_request_violation(field, err.to_string());
        return Status::with_error_details(Code::InvalidArgument, message, details);
    }
    let status = match err {
        PipelineError::Scheduler(e) => scheduler_status(e),
        PipelineError::NoSummarizationModel => Status::failed_precondition(err.to_string()),
        PipelineError::Cancelled => Status::cancelled(err.to_string()),
        other => {
            tracing::error!(error = %other, "request failed inside the server");
            Status::internal(other.to_string())
        }
    };
    match field {
        "" => status,
        field => Status::new(status.code(), format!("{field}: {}", status.message())),
    }
}

fn scheduler_status(err: SchedulerError) -> Status {
    let message = err.to_string();
    match err {
        SchedulerError::QueueFull { .. } => {
            let mut details = ErrorDetails::new();
            details.set_retry_info(Some(std::time::Duration::from_millis(500)));
            Status::with_error_details(Code::ResourceExhausted, message, details)
        }
        SchedulerError::DeadlineExceeded => Status::deadline_exceeded(message),
        SchedulerError::RequestTooLarge { .. } | SchedulerError::InvalidInput { .. } => {
            Status::invalid_argument(message)
        }
        SchedulerError::ShuttingDown => Status::unavailable(message),
        SchedulerError::Inference(_) => {
            tracing::error!(error = %message, "inference failed");
            Status::internal(message)
        }
    }
}

/// For RPCs that arrive before the models are loaded, or during shutdown.
pub fn not_ready(what: &str) -> Status {
    Status::unavailable(format!(
        "{what}; retry shortly (health reports NOT_SERVING meanwhile)"
    ))
}
