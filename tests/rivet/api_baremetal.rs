//! The OpenStack `baremetal` client (python-ironicclient) against a live
//! `rivet daemon`: the commands an Ironic operator runs, each checked on
//! what it prints.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

use crate::api_live::{Http, LiveDaemon, until};
use crate::support::{TempFleet, root};

/// The client, or None when the emulator tests are skipped on purpose.
pub fn baremetal() -> Option<PathBuf> {
    let path = std::env::var_os("RIVET_BAREMETAL")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/baremetal"));
    if crate::support::skip_emulator_test("a test of the baremetal client") {
        return None;
    }
    if path.is_file() {
        return Some(path);
    }
    panic!(
        "the OpenStack baremetal client is not installed at {}; install it with\n  \
         python3 -m venv .venv && .venv/bin/pip install python-ironicclient\n\
         (or point RIVET_BAREMETAL at it, or set RIVET_SKIP_EMULATORS=1 to skip)",
        path.display()
    );
}

fn fleet() -> TempFleet {
    let plugin =
        std::fs::read_to_string(root().join("examples/quickstart/plugins/acme-vendor.py")).unwrap();
    let fleet = TempFleet::new(&[
        (
            "rivet.toml",
            "[conductor]\npower_sync_interval = \"1h\"\n[hardware]\nenabled_hardware_types = [\"fake-hardware\", \"acme-fake\"]\nenabled_vendor_interfaces = [\"fake\", \"acme-tools\", \"no-vendor\"]\n",
        ),
        (
            "drivers/acme.toml",
            "[[hardware_type]]\nname = \"acme-fake\"\nbase = \"fake-hardware\"\nsupported_vendor_interfaces = [\"acme-tools\", \"no-vendor\"]\n\n\
             [[interface]]\ntype = \"vendor\"\nname = \"acme-tools\"\nexec = [\"plugins/acme-vendor.py\"]\n\n\
             [[interface.passthru]]\nmethod = \"firmware_info\"\nhttp_methods = [\"GET\"]\nasync = false\nrequire_exclusive_lock = false\ndescription = \"Firmware versions as the BMC reports them\"\n",
        ),
        ("plugins/acme-vendor.py", &plugin),
        (
            "nodes/a.toml",
            "[[node]]\nname = \"n1\"\ndriver = \"fake-hardware\"\ndesired = { provision = \"active\", power = \"on\" }\n\n\
             [[node]]\nname = \"edge1\"\ndriver = \"acme-fake\"\ndesired = { provision = \"manageable\" }\n",
        ),
    ]);
    let script = fleet.path().join("plugins/acme-vendor.py");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    fleet
}

pub struct Cli {
    pub program: PathBuf,
    pub url: String,
}

impl Cli {
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.program)
            .args(args)
            .env("OS_ENDPOINT", &self.url)
            .env("OS_AUTH_TYPE", "none")
            .env_remove("OS_CLOUD")
            .output()
            .unwrap()
    }

    /// Run and expect success; return stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "baremetal {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Run and expect failure; return stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "baremetal {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).to_string()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_baremetal_client_works_against_a_live_daemon() {
    let Some(program) = baremetal() else { return };
    let fleet = fleet();
    let daemon = LiveDaemon::start(fleet.path(), &[]);
    let http = Http::default();
    let url = daemon.url.clone();
    until("the nodes have converged", || async {
        let list = http.json(&format!("{url}/v1/nodes?detail=true")).await;
        list["nodes"].as_array().unwrap().iter().all(|n| {
            ["active", "manageable"].contains(&n["provision_state"].as_str().unwrap_or(""))
                && n["reservation"].is_null()
        })
    })
    .await;
    let cli = Cli { program, url };

    let list = cli.ok(&["node", "list"]);
    let row = list
        .lines()
        .find(|l| l.contains("| n1 "))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        row.contains("power on") && row.contains("active") && row.contains("False"),
        "{row}"
    );
    assert!(
        list.lines()
            .any(|l| l.contains("| edge1 ") && l.contains("manageable")),
        "{list}"
    );

    // The client's --sort becomes sort_key/sort_dir.
    let sorted: Value =
        serde_json::from_str(&cli.ok(&["node", "list", "--sort", "name:desc", "-f", "json"]))
            .unwrap();
    let order: Vec<&str> = sorted
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap_or_else(|| panic!("{sorted}")))
        .collect();
    let mut expected = order.clone();
    expected.sort_unstable_by(|a, b| b.cmp(a));
    assert!(order.len() > 1 && order == expected, "{order:?}");

    let show: Value = serde_json::from_str(&cli.ok(&["node", "show", "n1", "-f", "json"])).unwrap();
    assert_eq!(show["name"], "n1");
    assert_eq!(show["provision_state"], "active");
    assert_eq!(show["power_state"], "power on");
    assert_eq!(show["driver"], "fake-hardware");
    assert_eq!(show["deploy_interface"], "fake");

    let drivers = cli.ok(&["driver", "list"]);
    assert!(
        drivers.contains("| fake-hardware ") && drivers.contains("| acme-fake "),
        "{drivers}"
    );
    let driver: Value =
        serde_json::from_str(&cli.ok(&["driver", "show", "acme-fake", "-f", "json"])).unwrap();
    assert_eq!(driver["name"], "acme-fake");
    assert_eq!(driver["default_vendor_interface"], "acme-tools");

    let methods = cli.ok(&["node", "passthru", "list", "n1"]);
    for m in [
        "second_method",
        "third_method_sync",
        "fourth_method_shared_lock",
        "log_passthrough",
    ] {
        assert!(methods.contains(m), "{methods}");
    }
    // Sync: a false result prints nothing; a JSON object prints as a dict.
    let out = cli.ok(&[
        "node",
        "passthru",
        "call",
        "n1",
        "third_method_sync",
        "--arg",
        "bar=woof",
    ]);
    assert_eq!(out.trim(), "");
    let out = cli.ok(&[
        "node",
        "passthru",
        "call",
        "edge1",
        "firmware_info",
        "--http-method",
        "GET",
    ]);
    assert_eq!(
        out.trim(),
        "{'bios': '1.9.3', 'bmc': '2.71.0', 'node': 'edge1'}"
    );
    let err = cli.fails(&["node", "passthru", "call", "n1", "third_method_sync"]);
    assert!(
        err.contains("Parameter 'bar' not passed to method 'third_method_sync'. (HTTP 400)"),
        "{err}"
    );
    // Async: accepted at once; the result lands in the node's history.
    let out = cli.ok(&[
        "node",
        "passthru",
        "call",
        "n1",
        "second_method",
        "--arg",
        "bar=kazoo",
    ]);
    assert_eq!(out.trim(), "");
    let url = &cli.url;
    until("the async call is in the history", || async {
        let h = http.json(&format!("{url}/v1/nodes/n1/history")).await;
        h["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "vendor_passthru.second_method" && e["detail"] == "true")
    })
    .await;

    // The node's history through the client: the list, then one event by its UUID.
    let events: Value =
        serde_json::from_str(&cli.ok(&["node", "history", "list", "n1", "-f", "json"])).unwrap();
    let events = events.as_array().unwrap();
    let deploy = events
        .iter()
        .find(|e| {
            e["event"]
                .as_str()
                .unwrap_or("")
                .starts_with("deploy.deploy succeeded")
        })
        .unwrap_or_else(|| panic!("{events:?}"));
    let id = deploy["uuid"].as_str().unwrap();
    let one: Value =
        serde_json::from_str(&cli.ok(&["node", "history", "get", "n1", id, "-f", "json"])).unwrap();
    assert_eq!(one["uuid"], id, "{one}");
    assert_eq!(one["event_type"], "deploy.deploy");
    assert_eq!(one["severity"], "INFO");
    let err = cli.fails(&["node", "history", "get", "n1", "no-such-event"]);
    assert!(
        err.contains("Node history record no-such-event could not be found. (HTTP 404)"),
        "{err}"
    );

    let driver_methods = cli.ok(&["driver", "passthru", "list", "acme-fake"]);
    assert!(
        driver_methods.contains("firmware_info") && driver_methods.contains("GET"),
        "{driver_methods}"
    );
    assert!(!driver_methods.contains("second_method"));
    let err = cli.fails(&[
        "driver",
        "passthru",
        "call",
        "fake-hardware",
        "second_method",
        "--arg",
        "bar=x",
    ]);
    assert!(
        err.contains("No handler for method second_method (HTTP 400)"),
        "{err}"
    );
    // The client cannot print any driver passthru result (it calls .keys()
    // on its resource object), so check the answer it received.
    let out = cli.run(&[
        "--debug",
        "driver",
        "passthru",
        "call",
        "acme-fake",
        "firmware_info",
        "--http-method",
        "GET",
    ]);
    let debug = String::from_utf8_lossy(&out.stderr);
    assert!(debug.contains("RESP: [200]"), "{debug}");
    assert!(
        debug.contains(r#"RESP BODY: {"bios":"1.9.3","bmc":"2.71.0","node":null}"#),
        "{debug}"
    );
    daemon.stop();
}
