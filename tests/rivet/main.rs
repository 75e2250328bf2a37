//! rivet's integration tests: one binary, a module per feature.

mod agent_client;
mod agent_deploy;
mod api;
mod api_baremetal;
mod api_baremetal_resources;
mod api_filters;
mod api_fuzz;
#[path = "../common/api_fuzz.rs"]
mod api_fuzz_cases;
mod api_live;
mod api_resources;
#[path = "../support/call_log.rs"]
mod call_log;
mod canary;
mod claims;
mod cli;
mod cluster;
#[path = "../common/cluster_bed.rs"]
mod cluster_bed;
mod composition;
mod conformance;
mod converge;
mod daemon;
mod daemon_logs;
#[path = "../common/daemon_process.rs"]
mod daemon_process;
mod diagnostics;
mod etcd;
#[path = "../common/etcd_server.rs"]
mod etcd_server;
mod examples;
mod exec_plugin;
#[path = "../common/fake_ironic.rs"]
mod fake_ironic;
mod fault_server;
mod fence;
mod fuzz;
mod hostile_bmc;
#[path = "../common/image_server.rs"]
mod image_server;
#[path = "../common/ipa_bed.rs"]
mod ipa_bed;
// The tests of the harness above, which has the file's name.
#[path = "ipa_bed.rs"]
mod ipa_bed_tests;
mod ipmi;
mod ipmi_bed;
mod plan;
mod plan_props;
#[path = "../common/ramdisk_boots.rs"]
mod ramdisk_boots;
mod redfish;
mod redfish_bed;
mod refusals;
mod schema;
mod support;
mod tidy;
