//! The example fleets as operators start their own from them: each example
//! directory, copied alone to another place, is a whole fleet that
//! `rivet reconcile` converges, and `rivet status` of the copy then shows
//! every declared node where its declaration puts it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Output;

use assert_cmd::Command;
use rivet::vocab::PowerTarget;
use serde_json::{Value, json};

use crate::ipmi_bed::IpmiBed;
use crate::redfish_bed::{ImageServer, Sushy, SushyOptions, skipped, system_id};
use crate::support::{copy_dir, root};

/// The examples this module converges, each in a test of its own below.
const EXAMPLES: [&str; 3] = ["ipmi", "quickstart", "redfish"];

/// `examples/<name>` alone, copied into a fresh temporary directory.
fn copy_of(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&root().join("examples").join(name), tmp.path());
    tmp
}

/// Replace text in one file of a copied example (each `from` must be there).
fn rewrite(dir: &Path, file: &str, replacements: &[(String, String)]) {
    let path = dir.join(file);
    let mut content = std::fs::read_to_string(&path).unwrap();
    for (from, to) in replacements {
        assert!(content.contains(from.as_str()), "{file} has no {from}");
        content = content.replace(from.as_str(), to);
    }
    std::fs::write(&path, content).unwrap();
}

fn rivet(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::cargo_bin("rivet").unwrap();
    cmd.env("NO_COLOR", "1").args(args).arg(dir);
    for (key, value) in envs {
        cmd.env(key, value);
    }
    cmd.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `rivet reconcile` of `dir` exits 0; then `rivet status --format json`
/// lists exactly the declared nodes, each at rest where its declaration puts
/// it, and a dry run that reads every BMC again finds nothing to do.
fn assert_reconcile_converges(dir: &Path, envs: &[(&str, &str)]) {
    let out = rivet(dir, &["reconcile"], envs);
    assert!(out.status.success(), "{}", text(&out));

    let loaded = rivet::model::fleet::load(dir);
    assert!(loaded.is_valid(), "{:?}", loaded.problems);
    let status = rivet(dir, &["status", "--format", "json"], envs);
    assert!(status.status.success(), "{}", text(&status));
    let doc: Value = serde_json::from_slice(&status.stdout).expect("status is JSON");
    let docs = doc["nodes"].as_array().expect("a list of nodes");
    let listed: BTreeMap<&str, &Value> = docs
        .iter()
        .map(|d| (d["name"].as_str().unwrap(), d))
        .collect();
    let declared: BTreeSet<&str> = loaded.fleet.nodes.iter().map(|n| n.name.as_str()).collect();
    assert!(listed.keys().copied().eq(declared), "{docs:?}");
    for node in &loaded.fleet.nodes {
        let name = &node.name;
        let d = listed[name.as_str()];
        assert_eq!(d["declared"], true, "{name}: {d}");
        assert_eq!(d["unmanaged"], false, "{name}: {d}");
        assert_eq!(d["maintenance"], false, "{name}: {d}");
        assert_eq!(d["last_error"], Value::Null, "{name}: {d}");
        assert_eq!(d["pending_operation"], Value::Null, "{name}: {d}");
        assert_eq!(d["target_provision_state"], Value::Null, "{name}: {d}");
        assert_eq!(d["target_power_state"], Value::Null, "{name}: {d}");
        let desired = &node.desired;
        assert_eq!(
            d["provision_state"],
            json!(desired.provision),
            "{name}: {d}"
        );
        if let Some(power) = desired.power {
            let state = match power {
                PowerTarget::On => "power on",
                PowerTarget::Off => "power off",
            };
            assert_eq!(d["power_state"], state, "{name}: {d}");
        }
        if let Some(device) = desired.boot_device {
            assert_eq!(d["boot_device"], json!(device), "{name}: {d}");
        }
        if let Some(mode) = desired.boot_mode {
            assert_eq!(d["boot_mode"], json!(mode), "{name}: {d}");
        }
    }

    let again = rivet(
        dir,
        &["reconcile", "--dry-run", "--detailed-exitcode", "--refresh"],
        envs,
    );
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
}

#[test]
fn every_example_copied_alone_validates() {
    let mut found: Vec<String> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(
        found, EXAMPLES,
        "every example directory is a fleet with a converge test in this module"
    );
    for name in EXAMPLES {
        let copy = copy_of(name);
        let out = rivet(copy.path(), &["validate"], &[]);
        assert!(out.status.success(), "examples/{name}: {}", text(&out));
    }
}

#[test]
fn a_copy_of_the_quickstart_converges() {
    let copy = copy_of("quickstart");
    assert_reconcile_converges(copy.path(), &[]);
}

#[test]
fn a_copy_of_the_redfish_example_converges_against_sushy_tools() {
    if skipped() {
        return;
    }
    let sushy = Sushy::start(SushyOptions::default());
    let images = ImageServer::start(65_536);
    let copy = copy_of("redfish");
    // The example expects the emulator on port 18000 (its system ids say
    // so) and the image on 18999; this bed's ports are free ones.
    let moved: Vec<(String, String)> = [(
        "127.0.0.1:18000".to_string(),
        format!("127.0.0.1:{}", sushy.port),
    )]
    .into_iter()
    .chain((1..=3).map(|i| (system_id(18000, i), system_id(sushy.port, i))))
    .chain([(
        "http://127.0.0.1:18999/boot.iso".to_string(),
        images.url("boot.iso"),
    )])
    .collect();
    rewrite(copy.path(), "nodes/sushy.toml", &moved);
    assert_reconcile_converges(copy.path(), &[]);
    let (s1, s2, s3) = (sushy.system(1), sushy.system(2), sushy.system(3));
    assert_eq!(s1["PowerState"], "On");
    assert_eq!(s1["Boot"]["BootSourceOverrideTarget"], "Cd");
    assert_eq!(s2["PowerState"], "On");
    assert_eq!(s2["Boot"]["BootSourceOverrideTarget"], "Pxe");
    assert_eq!(s3["PowerState"], "Off");
    assert_eq!(s3["Boot"]["BootSourceOverrideTarget"], "Hdd");
}

#[test]
fn a_copy_of_the_ipmi_example_converges_against_ipmi_sim() {
    let Some(bed) = IpmiBed::start("example", 3) else {
        return;
    };
    let copy = copy_of("ipmi");
    // The example expects BMCs on 9000..9002; this bed's are free ports.
    // The closing quote keeps a new port from matching a later old one.
    let ports: Vec<(String, String)> = bed
        .bmcs
        .iter()
        .enumerate()
        .map(|(i, bmc)| {
            (
                format!("127.0.0.1:{}\"", 9000 + i),
                format!("127.0.0.1:{}\"", bmc.port),
            )
        })
        .collect();
    rewrite(copy.path(), "nodes/sim.toml", &ports);
    assert_reconcile_converges(copy.path(), &[("IPMI_PASSWORD", &bed.password)]);
    assert!(bed.bmcs[0].power_on() && bed.bmcs[0].boot() == "pxe");
    assert!(bed.bmcs[1].power_on() && bed.bmcs[1].boot() == "default");
    assert!(!bed.bmcs[2].power_on());
}
