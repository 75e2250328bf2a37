//! rivet: a declarative bare-metal provisioning reconciler.
//!
//! See docs/ARCHITECTURE.md for the map of the code. The modules are listed
//! in their layer order: each may use those above it, never one below.

pub mod api;
pub mod cli;
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
