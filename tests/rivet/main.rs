//! rivet's integration tests: one binary, a module per feature.

mod api;
mod api_baremetal;
mod api_live;
mod cli;
mod composition;
mod conformance;
mod converge;
mod daemon;
#[path = "../common/daemon_process.rs"]
mod daemon_process;
mod diagnostics;
mod exec_plugin;
mod fault_server;
mod fuzz;
mod ipmi;
mod ipmi_bed;
mod plan;
mod plan_props;
mod redfish;
mod redfish_bed;
mod schema;
mod support;
mod tidy;
