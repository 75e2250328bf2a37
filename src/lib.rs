//! rivet: a declarative bare-metal provisioning reconciler.
//!
//! See docs/ARCHITECTURE.md for the map of the code.

pub mod cli;
pub mod config;
pub mod diag;
pub mod model;
pub mod vocab;
