//! The OpenStack `baremetal` client (python-ironicclient) and openstacksdk
//! against a live `rivet daemon`: the commands an Ironic operator runs and
//! the calls Ansible's modules make, each checked on what it gets.

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

const INSTANCE: &str = "11111111-2222-3333-4444-555555555555";
const MAC_1: &str = "52:54:00:00:01:01";
const MAC_2: &str = "52:54:00:00:01:02";

/// Three nodes an operator tells apart by resource class, owner, instance
/// and ports; p3's BMC is made to fail, so power sync gives it a fault.
fn filter_fleet() -> TempFleet {
    TempFleet::new(&[
        (
            "rivet.toml",
            "[conductor]\npower_sync_interval = \"200ms\"\n",
        ),
        (
            "nodes/a.toml",
            &format!(
                "[[node]]\nname = \"p1\"\ndriver = \"fake-hardware\"\nresource_class = \"rc-gpu\"\nowner = \"team-a\"\n\
                 instance = {{ uuid = \"{INSTANCE}\" }}\ndesired = {{ provision = \"manageable\", power = \"on\" }}\n\
                 ports = [{{ address = \"{MAC_1}\", physical_network = \"physnet1\" }}]\n\n\
                 [[node]]\nname = \"p2\"\ndriver = \"fake-hardware\"\nresource_class = \"rc-cpu\"\nowner = \"team-b\"\n\
                 desired = {{ provision = \"manageable\", power = \"on\" }}\nports = [{{ address = \"{MAC_2}\" }}]\n\n\
                 [[node]]\nname = \"p3\"\ndriver = \"fake-hardware\"\nresource_class = \"rc-cpu\"\n\
                 desired = {{ provision = \"manageable\", power = \"on\" }}\n"
            ),
        ),
    ])
}

/// The `name` of every row of a JSON list the client printed.
fn names(out: &str) -> Vec<String> {
    let rows: Value = serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let mut names: Vec<String> = rows
        .as_array()
        .unwrap_or_else(|| panic!("{out}"))
        .iter()
        .map(|r| {
            r["name"]
                .as_str()
                .unwrap_or_else(|| panic!("{out}"))
                .to_string()
        })
        .collect();
    names.sort();
    names
}

/// The client's node and port filters, and openstacksdk's, against a live daemon.
#[tokio::test(flavor = "multi_thread")]
async fn the_clients_find_nodes_and_ports_by_ironic_s_filters() {
    let Some(program) = baremetal() else { return };
    let fleet = filter_fleet();
    let daemon = LiveDaemon::start(fleet.path(), &[]);
    let http = Http::default();
    let url = daemon.url.clone();
    until("the nodes are manageable", || async {
        let list = http
            .json(&format!("{url}/v1/nodes?provision_state=manageable"))
            .await;
        list["nodes"].as_array().unwrap().len() == 3
    })
    .await;
    let bmc = fleet.path().join(".rivet/fake-bmc/p3.json");
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&bmc).unwrap()).unwrap();
    doc["unreachable"] = true.into();
    std::fs::write(&bmc, serde_json::to_vec(&doc).unwrap()).unwrap();
    until("p3 has a power failure", || async {
        let list = http
            .json(&format!("{url}/v1/nodes?fault=power%20failure"))
            .await;
        list["nodes"].as_array().unwrap().len() == 1
    })
    .await;
    let cli = Cli { program, url };

    let list = |args: &[&str]| {
        let mut all = vec!["node", "list", "-f", "json"];
        all.extend_from_slice(args);
        names(&cli.ok(&all))
    };
    assert_eq!(list(&["--fault", "power failure"]), ["p3"]);
    assert_eq!(list(&["--resource-class", "rc-cpu"]), ["p2", "p3"]);
    assert_eq!(list(&["--associated"]), ["p1"]);
    assert_eq!(list(&["--unassociated"]), ["p2", "p3"]);
    assert_eq!(list(&["--owner", "team-a"]), ["p1"]);
    let err = cli.fails(&["node", "list", "--fault", "bogus"]);
    assert!(err.contains("Unrecognized fault \"bogus\""), "{err}");

    // The client refuses `--fields ports` itself (ports is not among its
    // choices) and drops the link arrays before printing: check the
    // document it received.
    let err = cli.fails(&["node", "show", "p1", "--fields", "ports"]);
    assert!(err.contains("invalid choice: 'ports'"), "{err}");
    let out = cli.run(&["--debug", "node", "show", "p1"]);
    let debug = String::from_utf8_lossy(&out.stderr);
    let p1_uuid = rivet::model::node::derived_uuid("p1").to_string();
    for field in ["ports", "portgroups", "volume"] {
        let link = format!(
            r#""{field}":[{{"href":"{}/v1/nodes/{p1_uuid}/{field}","rel":"self"}}"#,
            cli.url
        );
        assert!(debug.contains(&link), "{link} not in {debug}");
    }

    let ports: Value =
        serde_json::from_str(&cli.ok(&["port", "list", "--address", MAC_1, "-f", "json"])).unwrap();
    let ports = ports.as_array().unwrap();
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!(ports[0]["address"], MAC_1);
    let port_uuid = ports[0]["uuid"].as_str().unwrap().to_string();
    let port: Value =
        serde_json::from_str(&cli.ok(&["port", "show", &port_uuid, "-f", "json"])).unwrap();
    assert_eq!(port["address"], MAC_1);
    assert_eq!(port["node_uuid"], p1_uuid);
    assert_eq!(port["physical_network"], "physnet1");
    assert_eq!(port["extra"], serde_json::json!({"source": "declared"}));
    let by_node: Value =
        serde_json::from_str(&cli.ok(&["port", "list", "--node", "p2", "-f", "json"])).unwrap();
    assert_eq!(by_node[0]["address"], MAC_2, "{by_node}");

    // openstacksdk, as Ansible's openstack.cloud modules use it.
    let python = cli.program.with_file_name("python");
    let out = Command::new(&python)
        .arg("-c")
        .arg(SDK_SCRIPT)
        .arg(&cli.url)
        .arg(MAC_1)
        .arg("rc-cpu")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openstacksdk failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        answer["ports"],
        serde_json::json!([[MAC_1, p1_uuid]]),
        "{answer}"
    );
    assert_eq!(answer["nodes"], serde_json::json!(["p2", "p3"]), "{answer}");
    daemon.stop();
}

/// `conn.baremetal.ports(address=…)` and `nodes(resource_class=…)`, printed
/// as JSON; argv: endpoint, MAC, resource class.
const SDK_SCRIPT: &str = r#"
import json, sys
import openstack
url, mac, rc = sys.argv[1:4]
conn = openstack.connection.Connection(
    auth_type="none", auth={"endpoint": url}, baremetal_endpoint_override=url
)
ports = [[p.address, p.node_id] for p in conn.baremetal.ports(address=mac, details=True)]
nodes = sorted(n.name for n in conn.baremetal.nodes(resource_class=rc))
print(json.dumps({"ports": ports, "nodes": nodes}))
"#;
