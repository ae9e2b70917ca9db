//! The one place where domain errors become gRPC statuses.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::validate::InvalidRequest;
use crate::pipeline::PipelineError;
use crate::scheduler::SchedulerError;

impl From<InvalidRequest> for Status {
    fn from(err: InvalidRequest) -> Self {
        let mut details = ErrorDetails::new();
        for v in &err.0 {
            details.add_bad_request_violation(v.field.clone(), v.description.clone());
        }
        Status::with_error_details(Code::InvalidArgument, err.to_string(), details)
    }
}

impl From<PipelineError> for Status {
    fn from(err: PipelineError) -> Self {
        match err {
            PipelineError::Scheduler(e) => scheduler_status(e),
            PipelineError::NoSummarizationModel => Status::failed_precondition(err.to_string()),
            other => {
                tracing::error!(error = %other, "request failed inside the server");
                Status::internal(other.to_string())
            }
        }
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
