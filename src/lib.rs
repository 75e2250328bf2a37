//! rivet: a declarative bare-metal provisioning reconciler.
//!
//! See docs/ARCHITECTURE.md for the map of the code.

pub mod api;
pub mod backoff;
pub mod cli;
pub mod cli_converge;
mod cli_reconcile;
mod cli_status;
pub mod config;
pub mod daemon;
pub mod diag;
pub mod driver;
pub mod model;
pub mod plan;
pub mod reconcile;
pub mod store;
pub mod vocab;
