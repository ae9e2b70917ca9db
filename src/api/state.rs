//! What the service shares across requests: the loaded models (absent while loading and
//! after shutdown begins) and the limits.

use std::sync::{Arc, RwLock};

use tonic::Status;

use super::context::CallPolicy;
use super::status::not_ready;
use super::validate::Limits;
use crate::config::LimitArgs;
use crate::pipeline::Engines;

pub struct AppState {
    engines: RwLock<Option<Arc<Engines>>>,
    limits: LimitArgs,
    policy: CallPolicy,
}

impl AppState {
    pub fn new(limits: LimitArgs) -> Self {
        let policy = CallPolicy {
            default_timeout: (limits.default_timeout_secs > 0)
                .then(|| std::time::Duration::from_secs(limits.default_timeout_secs)),
            abort: Default::default(),
        };
        Self {
            engines: RwLock::new(None),
            limits,
            policy,
        }
    }

    pub fn policy(&self) -> &CallPolicy {
        &self.policy
    }

    /// The shutdown grace period is over: calls still running end with UNAVAILABLE.
    pub fn abort_calls(&self) {
        self.policy.abort.cancel();
    }

    /// Makes the server ready.
    pub fn set_engines(&self, engines: Engines) {
        *self.engines.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(engines));
    }

    /// Refuses new requests from now on; returns the models so in-flight work can finish.
    pub fn take_engines(&self) -> Option<Arc<Engines>> {
        self.engines
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    pub fn engines(&self) -> Result<Arc<Engines>, Status> {
        self.engines
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| not_ready("the models are not loaded (starting up or shutting down)"))
    }

    /// The limits requests are checked against, given the models that will serve them.
    pub fn limits(&self, engines: &Engines) -> Limits {
        Limits {
            max_input_chars: self.limits.max_input_chars,
            max_texts_per_request: self.limits.max_texts_per_request,
            max_output_tokens: engines.translator.info().max_output_tokens,
            max_summary_tokens: engines
                .summarizer
                .as_ref()
                .map_or(0, |s| s.info().max_output_tokens),
        }
    }
}
