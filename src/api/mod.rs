//! The gRPC edge: tonic services, proto ↔ domain, errors → Status.

mod article;
pub mod auth;
pub mod codec;
mod context;
mod convert;
mod service;
mod state;
mod status;
pub mod validate;

pub use auth::{ApiKeys, ApiKeysError, Authenticated};
pub use service::TranslatorService;
pub use state::{AppState, Engines};
