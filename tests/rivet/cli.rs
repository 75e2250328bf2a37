//! The `rivet` binary as users run it.

use assert_cmd::Command;
use serde_json::Value;

use crate::support::{fixture, root};

fn rivet() -> Command {
    let mut cmd = Command::cargo_bin("rivet").unwrap();
    cmd.current_dir(root()).env("NO_COLOR", "1");
    cmd
}

fn json_of(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout).expect("stdout is JSON")
}

#[test]
fn quickstart_validates_and_lists_every_interface_of_every_node() {
    rivet()
        .args(["validate", "examples/quickstart"])
        .assert()
        .success();
    let out = rivet()
        .args(["validate", "examples/quickstart", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let doc = json_of(&out);
    let nodes = doc["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 8);
    for node in nodes {
        let interfaces = node["interfaces"].as_object().unwrap();
        assert_eq!(interfaces.len(), 13, "{node}");
        assert!(
            interfaces
                .values()
                .all(|v| v.as_str().is_some_and(|s| !s.is_empty()))
        );
    }
    let edge = nodes.iter().find(|n| n["name"] == "edge-acme01").unwrap();
    assert_eq!(edge["driver"], "acme-fake");
    assert_eq!(edge["interfaces"]["vendor"], "acme-tools");
    assert_eq!(doc["errors"].as_array().unwrap().len(), 0);
}

#[test]
fn emulator_example_fleets_validate() {
    for dir in ["examples/redfish", "examples/ipmi"] {
        rivet().args(["validate", dir]).assert().success();
    }
}

#[test]
fn invalid_fleet_exits_1_with_located_json_errors() {
    let dir = fixture("invalid/many_problems_at_once");
    let out = rivet()
        .args(["validate", "--format", "json"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let doc = json_of(&out);
    let errors = doc["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 4);
    let first = &errors[0];
    assert_eq!(first["file"], "nodes/a.toml");
    assert_eq!(first["line"], 3);
    assert_eq!(first["column"], 10);
    assert!(
        first["help"]
            .as_str()
            .unwrap()
            .contains("did you mean `redfish`?")
    );
}

#[test]
fn human_errors_go_to_stderr_with_location_and_change_nothing() {
    let dir = fixture("invalid/unknown_key_node");
    let out = rivet().arg("validate").arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("nodes/a.toml:3:1"), "{stderr}");
    assert!(stderr.contains("did you mean `driver`?"), "{stderr}");
    assert!(stderr.contains("Nothing was changed"), "{stderr}");
    assert!(!dir.join(".rivet").exists());
}

#[test]
fn driver_list_shows_enabled_types_like_ironic() {
    let out = rivet()
        .args(["driver", "list", "examples/quickstart", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let doc = json_of(&out);
    let names: Vec<&str> = doc["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme-fake", "fake-hardware"]);
    assert_eq!(doc["drivers"][0]["type"], "dynamic");
    assert!(doc["drivers"][0].get("default_power_interface").is_none());
}

#[test]
fn driver_list_detail_has_default_and_enabled_for_every_interface() {
    let out = rivet()
        .args([
            "driver",
            "list",
            "examples/quickstart",
            "--detail",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let doc = json_of(&out);
    let fake = doc["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "fake-hardware")
        .unwrap();
    for kind in rivet::vocab::InterfaceType::ALL {
        assert!(fake.get(kind.default_key()).is_some(), "{kind}");
        assert!(fake[kind.enabled_key()].is_array(), "{kind}");
    }
    assert_eq!(fake["default_power_interface"], "fake");
    assert_eq!(
        fake["enabled_vendor_interfaces"],
        serde_json::json!(["fake", "no-vendor"])
    );
    let acme = &doc["drivers"][0];
    assert_eq!(acme["default_vendor_interface"], "acme-tools");
}

#[test]
fn driver_show_names_a_type_or_suggests_one() {
    let out = rivet()
        .args([
            "driver",
            "show",
            "acme-fake",
            "examples/quickstart",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(json_of(&out)["default_vendor_interface"], "acme-tools");

    rivet()
        .args(["driver", "show", "fake-hardwre", "examples/quickstart"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("did you mean `fake-hardware`?"));
}
