//! cairn — a Prometheus remote-storage sidecar with an embedded, Prometheus-format TSDB.
//!
//! Layers (see ARCHITECTURE.md): [`model`] is the shared vocabulary (labels, matchers);
//! [`tsdb`] is the storage engine, which knows nothing of HTTP or protobuf.
//!
//! Storage code never calls `unwrap`/`expect` outside tests (crate lints in Cargo.toml).

pub mod config;
pub mod log;
pub mod metrics;
pub mod model;
pub mod remote;
pub mod server;
pub mod tsdb;
