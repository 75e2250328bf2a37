//! rivet's integration tests: one binary, a module per feature.

mod cli;
mod composition;
mod converge;
mod daemon;
mod diagnostics;
mod ipmi;
mod ipmi_bed;
mod plan;
mod plan_props;
mod schema;
mod support;
