//! rivet's integration tests: one binary, a module per feature.

mod api;
mod api_baremetal;
mod api_live;
mod cli;
mod composition;
mod converge;
mod daemon;
mod diagnostics;
mod plan;
mod plan_props;
mod schema;
mod support;
