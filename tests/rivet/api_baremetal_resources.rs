//! The OpenStack `baremetal` client reading the resources beside nodes from
//! a live `rivet daemon`: validation, traits, boot device, BIOS settings,
//! conductors and deploy templates; and the standard version header on a
//! real socket.

use serde_json::Value;

use crate::api_baremetal::{Cli, baremetal};
use crate::api_live::{Http, LiveDaemon, until};
use crate::api_resources::{HOST, NODES, RIVET_TOML, TEMPLATES};
use crate::support::TempFleet;

fn json(cli: &Cli, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-f", "json"]);
    let out = cli.ok(&all);
    serde_json::from_str(&out).unwrap_or_else(|_| panic!("baremetal {args:?}: {out}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_baremetal_client_reads_what_rivet_declares_and_recorded() {
    let Some(program) = baremetal() else { return };
    let fleet = TempFleet::new(&[
        ("rivet.toml", RIVET_TOML),
        ("drivers/templates.toml", TEMPLATES),
        ("nodes/a.toml", NODES),
    ]);
    let daemon = LiveDaemon::start(fleet.path(), &[]);
    let http = Http::default();
    let url = daemon.url.clone();
    until("f1 is deployed", || async {
        let f1 = http.json(&format!("{url}/v1/nodes/f1")).await;
        f1["provision_state"] == "active" && f1["reservation"].is_null()
    })
    .await;

    // Only the standard header: Ironic's answers with the same version.
    let response = reqwest::Client::new()
        .get(format!("{url}/v1/nodes/f1"))
        .header("OpenStack-API-Version", "baremetal 1.80")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-openstack-ironic-api-version"], "1.80");
    assert_eq!(
        response.headers()["openstack-api-version"],
        "baremetal 1.80"
    );

    let cli = Cli {
        program,
        url: url.clone(),
    };
    let validate = json(&cli, &["node", "validate", "f1"]);
    let row = |interface: &str| {
        validate
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["Interface"] == interface)
            .unwrap_or_else(|| panic!("{interface}: {validate}"))
            .clone()
    };
    assert_eq!(row("power")["Result"], true, "{validate}");
    assert_eq!(row("deploy")["Result"], true, "{validate}");
    assert_eq!(row("console")["Result"], false, "{validate}");
    assert_eq!(
        row("console")["Reason"],
        "Driver fake-hardware does not support console (disabled or not implemented)."
    );

    let traits = cli.ok(&["node", "trait", "list", "f1"]);
    assert!(
        traits.contains("| CUSTOM_TUNED ") && traits.contains("| CUSTOM_B "),
        "{traits}"
    );

    let device = json(&cli, &["node", "boot", "device", "show", "f1"]);
    assert_eq!(device["boot_device"], "disk", "{device}");
    assert_eq!(device["persistent"], true, "{device}");
    let supported = json(
        &cli,
        &["node", "boot", "device", "show", "f1", "--supported"],
    );
    // The client joins the list for display.
    assert_eq!(
        supported["supported_boot_devices"], "pxe, disk, cdrom, bios",
        "{supported}"
    );

    let bios = json(&cli, &["node", "bios", "setting", "list", "f1"]);
    assert_eq!(
        bios,
        serde_json::json!([{"name": "LogicalProc", "value": "Enabled"}])
    );

    let conductors = json(&cli, &["conductor", "list"]);
    assert_eq!(conductors[0]["hostname"], HOST, "{conductors}");
    assert_eq!(conductors[0]["alive"], true, "{conductors}");
    let conductor = json(&cli, &["conductor", "show", HOST]);
    assert_eq!(
        conductor["drivers"],
        serde_json::json!(["fake-hardware", "ipmi"])
    );

    let templates = json(&cli, &["deploy", "template", "list"]);
    assert_eq!(templates[0]["name"], "CUSTOM_TUNED", "{templates}");
    let template = json(&cli, &["deploy", "template", "show", "CUSTOM_TUNED"]);
    assert_eq!(
        template["steps"][0]["step"], "apply_configuration",
        "{template}"
    );

    // A write through the client is refused with what to edit instead.
    let err = cli.fails(&["node", "power", "off", "f1"]);
    assert!(
        err.contains("`desired.power`") && err.contains("405"),
        "{err}"
    );
    daemon.stop();
}
