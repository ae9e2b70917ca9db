//! What the service shares across requests: the loaded models (absent while loading and
//! after shutdown begins) and the limits.

use std::sync::{Arc, RwLock};

use tonic::Status;

use super::status::not_ready;
use super::validate::Limits;
use crate::config::LimitArgs;
use crate::pipeline::Translator;

pub struct AppState {
    translator: RwLock<Option<Arc<Translator>>>,
    limits: LimitArgs,
}

impl AppState {
    pub fn new(limits: LimitArgs) -> Self {
        Self {
            translator: RwLock::new(None),
            limits,
        }
    }

    /// Makes the server ready.
    pub fn set_translator(&self, translator: Arc<Translator>) {
        *self.translator.write().unwrap_or_else(|e| e.into_inner()) = Some(translator);
    }

    /// Refuses new requests from now on; returns the translator so in-flight work can finish.
    pub fn take_translator(&self) -> Option<Arc<Translator>> {
        self.translator
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    pub fn translator(&self) -> Result<Arc<Translator>, Status> {
        self.translator
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| {
                not_ready("the translation model is not loaded (starting up or shutting down)")
            })
    }

    pub fn limits(&self, translator: &Translator) -> Limits {
        Limits {
            max_input_chars: self.limits.max_input_chars,
            max_texts_per_request: self.limits.max_texts_per_request,
            max_output_tokens: translator.info().max_output_tokens,
        }
    }
}
