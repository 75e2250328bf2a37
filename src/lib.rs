//! rivet: a declarative bare-metal provisioning reconciler.
//!
//! See docs/ARCHITECTURE.md for the map of the code and the layer order of
//! these modules (checked by `tests/rivet/tidy.rs`).

pub mod api;
pub mod backoff;
pub mod cli;
pub mod cluster;
pub mod conductor;
pub mod config;
pub mod daemon;
pub mod diag;
pub mod driver;
pub mod model;
pub mod plan;
pub mod reconcile;
pub mod store;
pub mod vocab;
