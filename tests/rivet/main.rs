//! rivet's integration tests: one binary, a module per feature.

mod cli;
mod composition;
mod diagnostics;
mod plan;
mod plan_props;
mod schema;
mod support;
