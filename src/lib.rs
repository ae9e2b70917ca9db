//! tarjama: Arabic → English news translation and summaries, served over gRPC.
//!
//! Layers, each depending only on those below it: `api` (tonic service, proto ↔ domain,
//! errors → Status) → `pipeline` (a text's way through) → `scheduler` (queue, batching,
//! cancellation) → `model` (seq2seq on candle) and `tokenizer`; `text` (Arabic normalisation,
//! segmentation), `html` (HTML translation units, markup placed by alignment) and `summarize`
//! (extractive summaries) beside them; `hub` (model resolution and download); `loader` (resolving, loading and starting models
//! for `serve` and the CLI); `config` (CLI); `telemetry` (Prometheus metrics).

pub mod api;
pub mod catalog;
pub mod client;
pub mod config;
pub mod html;
pub mod hub;
pub mod loader;
pub mod loadtest;
pub mod model;
pub mod pipeline;
pub mod scheduler;
pub mod server;
pub mod summarize;
pub mod telemetry;
pub mod text;
pub mod tokenizer;

pub mod proto {
    //! Generated gRPC contract (package `tarjama.v1`).
    #![allow(clippy::all)]
    tonic::include_proto!("tarjama.v1");
    /// Encoded descriptors, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("tarjama_descriptor");
}
