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
pub use service::TarjamaService;
pub use state::AppState;

/// The RPCs of the TranslationService, as metrics and logs name them.
pub const RPCS: [&str; 6] = [
    "Translate",
    "TranslateStream",
    "ProcessArticle",
    "ProcessArticleStream",
    "Summarize",
    "ListModels",
];

/// The metrics label of a request path: its RPC, or `unknown` for any other method (a
/// label taken from the path would let callers create a series per random name).
pub fn rpc_label(path: &str) -> &'static str {
    let method = path.rsplit('/').next().unwrap_or_default();
    RPCS.iter()
        .find(|&&r| r == method)
        .copied()
        .unwrap_or("unknown")
}
