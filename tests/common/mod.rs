//! Helpers shared by the integration tests; each test binary uses a part of them.
#[allow(dead_code)]
pub mod command;
#[allow(dead_code)]
pub mod engine;
#[allow(dead_code)]
pub mod server;
#[allow(dead_code)]
pub mod standin_hub;
