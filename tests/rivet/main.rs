//! rivet's integration tests: one binary, a module per feature.

mod cli;
mod composition;
mod diagnostics;
mod schema;
mod support;
