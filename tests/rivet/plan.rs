//! `rivet reconcile --dry-run`: plans as operators read them in CI.

use std::collections::BTreeMap;
use std::path::Path;

use assert_cmd::Command;
use rivet::store::Store;
use rivet::store::records::{FakeBmcRecord, NodeRecord};
use rivet::vocab::PowerState;

use crate::support::{TempFleet, copy_dir, fixture, root};

/// Copy a plan fixture into a temporary directory and load its
/// `observed.json` (node name → stored record) into a real state file.
/// `"$DECLARED"` as `deployed_instance` stands for the declared instance.
pub(crate) fn prepare(case: &str) -> Fleet {
    let tmp = tempfile::tempdir().unwrap();
    let from = if case == "quickstart" {
        root().join("examples/quickstart")
    } else {
        fixture(&format!("plan/{case}"))
    };
    copy_dir(&from, tmp.path());
    let dir = tmp.path().to_path_buf();
    let observed = dir.join("observed.json");
    if observed.exists() {
        let records: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(&observed).unwrap()).unwrap();
        std::fs::remove_file(&observed).unwrap();
        write_observed(&dir, records);
    }
    Fleet { _tmp: tmp, dir }
}

/// A fleet copied into a temporary directory (removed on drop).
pub(crate) struct Fleet {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
}

impl Fleet {
    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }
}

fn write_observed(dir: &Path, records: BTreeMap<String, serde_json::Value>) {
    let loaded = rivet::model::fleet::load(dir);
    assert!(loaded.is_valid(), "{:?}", loaded.problems);
    let store = Store::open(&loaded.fleet.conductor.state).unwrap();
    for (name, mut value) in records {
        let node = loaded.fleet.node(&name).expect("observed node is declared");
        if value["deployed_instance"] == "$DECLARED" {
            value["deployed_instance"] = rivet::plan::instance_fingerprint(node).into();
        }
        value["uuid"] = node.uuid.to_string().into();
        value["driver"] = node.driver.to_string().into();
        let record: NodeRecord = serde_json::from_value(value).unwrap();
        store.put_node(&name, &record).unwrap();
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn reconcile(dir: &Path, args: &[&str]) -> Run {
    let out = Command::cargo_bin("rivet")
        .unwrap()
        .env("NO_COLOR", "1")
        .env("RIVET_TEST_BMC_PASSWORD", "hunter2-canary")
        .arg("reconcile")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

const CASES: &[&str] = &[
    "quickstart",
    "template_overrides_driver_step",
    "node_overrides_template_step",
    "priority_zero_disables_step",
    "tie_breaking_by_interface",
    "missing_required_argument",
    "depends_on_chain",
    "diamond_dependencies",
    "three_node_cycle",
    "rollout_group_limits",
    "drift_only",
    "undeploy",
    "rebuild_on_image_change",
    "no_changes",
    "resume_and_retry",
    "unchanged_dependency_does_not_delay",
    "template_conflict",
    "secrets_are_masked",
    "direct_deploy",
];

#[test]
fn every_fixture_is_covered() {
    let mut on_disk: Vec<String> = std::fs::read_dir(fixture("plan"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut listed: Vec<&str> = CASES
        .iter()
        .copied()
        .filter(|c| *c != "quickstart")
        .collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

#[test]
fn plans_match_their_snapshots_in_human_and_json() {
    for case in CASES {
        let dir = prepare(case);
        let human = reconcile(dir.path(), &["--dry-run", "--detailed-exitcode"]);
        insta::assert_snapshot!(
            format!("{case}__human"),
            format!("exit {}\n{}{}", human.code, human.stdout, human.stderr)
        );
        let json = reconcile(dir.path(), &["--dry-run", "--format", "json"]);
        if json.code == 0 {
            insta::assert_snapshot!(format!("{case}__json"), json.stdout);
        } else {
            assert!(
                json.stdout.is_empty(),
                "{case}: a failed plan printed a plan"
            );
        }
        for run in [&human, &json] {
            assert!(!run.stdout.contains("hunter2") && !run.stderr.contains("hunter2"));
        }
    }
}

#[test]
fn detailed_exitcode_is_0_unchanged_1_error_2_changes() {
    assert_eq!(
        reconcile(
            prepare("no_changes").path(),
            &["--dry-run", "--detailed-exitcode"]
        )
        .code,
        0
    );
    assert_eq!(
        reconcile(
            prepare("quickstart").path(),
            &["--dry-run", "--detailed-exitcode"]
        )
        .code,
        2
    );
    assert_eq!(
        reconcile(
            prepare("three_node_cycle").path(),
            &["--dry-run", "--detailed-exitcode"]
        )
        .code,
        1
    );
    // Without the flag, a plan with changes is still a success.
    assert_eq!(
        reconcile(prepare("quickstart").path(), &["--dry-run"]).code,
        0
    );
}

#[test]
fn same_inputs_give_byte_identical_plans() {
    let a = prepare("quickstart");
    let b = prepare("quickstart");
    for format in ["human", "json"] {
        let plan = |dir: &Path| {
            let run = reconcile(dir, &["--dry-run", "--format", format]);
            assert_eq!(run.code, 0, "{}", run.stderr);
            run.stdout
        };
        let (first, again, elsewhere) = (plan(a.path()), plan(a.path()), plan(b.path()));
        // A plan of all eight quickstart nodes, not an empty output.
        assert!(
            first.contains("rack1-node01") && first.contains("edge-acme02"),
            "{first}"
        );
        assert_eq!(first, again);
        assert_eq!(
            first, elsewhere,
            "the plan depends on where the fleet lives"
        );
    }
}

#[test]
fn a_dry_run_creates_no_state_file() {
    let dir = prepare("quickstart");
    let run = reconcile(dir.path(), &["--dry-run", "--refresh"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("Plan: 6 to deploy"),
        "the dry run made a plan: {}",
        run.stdout
    );
    assert!(!dir.path().join(".rivet").exists());
}

#[test]
fn cycles_name_the_whole_path_and_every_edge() {
    let run = reconcile(prepare("three_node_cycle").path(), &["--dry-run"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("dependency cycle: a → b → c → a"),
        "{}",
        run.stderr
    );
    for place in ["nodes/a.toml:9:15", "nodes/c.toml:4:15"] {
        assert!(
            run.stderr.contains(place),
            "{place} missing:\n{}",
            run.stderr
        );
    }
    assert!(run.stderr.contains("a waits for c"));
}

#[test]
fn a_saved_plan_is_refused_once_its_inputs_change() {
    let dir = prepare("drift_only");
    let plan = dir.path().join("plan.json");
    let plan_arg = plan.to_str().unwrap();
    let saved = reconcile(dir.path(), &["--dry-run", "--out", plan_arg]);
    assert_eq!(saved.code, 0, "{}", saved.stderr);
    assert!(saved.stderr.contains("Saved the plan to"));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    assert_eq!(doc["format_version"], 1);

    // Unchanged inputs: the saved plan is accepted.
    assert_eq!(
        reconcile(dir.path(), &["--dry-run", "--plan", plan_arg]).code,
        0
    );

    // A declaration changes.
    let nodes = dir.path().join("nodes/a.toml");
    let text = std::fs::read_to_string(&nodes).unwrap();
    std::fs::write(
        &nodes,
        text.replace("boot_mode = \"uefi\"", "boot_mode = \"bios\""),
    )
    .unwrap();
    let stale = reconcile(dir.path(), &["--dry-run", "--plan", plan_arg]);
    assert_eq!(stale.code, 1);
    assert!(stale.stderr.contains("is stale"), "{}", stale.stderr);
    assert!(
        stale
            .stderr
            .contains("declaration file `nodes/a.toml` changed"),
        "{}",
        stale.stderr
    );
    std::fs::write(&nodes, text).unwrap();

    // The observed state changes.
    let loaded = rivet::model::fleet::load(dir.path());
    {
        let store = Store::open(&loaded.fleet.conductor.state).unwrap();
        let mut record = store.node("n3").unwrap().unwrap();
        record.power_state = Some(PowerState::Off);
        store.put_node("n3", &record).unwrap();
    }
    let stale = reconcile(dir.path(), &["--dry-run", "--plan", plan_arg]);
    assert_eq!(stale.code, 1);
    assert!(
        stale.stderr.contains("observed state of node `n3` changed"),
        "{}",
        stale.stderr
    );
}

#[test]
fn refresh_reads_the_fake_bmc_and_finds_drift() {
    let dir = prepare("no_changes");
    let loaded = rivet::model::fleet::load(dir.path());
    {
        use rivet::driver::fake::{FakeBmcDir, FakeBmcs};
        let bmcs = FakeBmcDir::beside(&loaded.fleet.conductor.state, false);
        // Behind rivet's back, n1 was switched off and set to boot from PXE.
        let bmc = FakeBmcRecord {
            power: PowerState::Off,
            boot_device: Some(rivet::vocab::BootDevice::Pxe),
            ..FakeBmcRecord::default()
        };
        bmcs.put("n1", &bmc).unwrap();
        bmcs.put("n2", &FakeBmcRecord::default()).unwrap();
    }
    let stored = reconcile(dir.path(), &["--dry-run", "--detailed-exitcode"]);
    assert_eq!(stored.code, 0, "{}", stored.stdout);
    let refreshed = reconcile(
        dir.path(),
        &["--dry-run", "--detailed-exitcode", "--refresh"],
    );
    assert_eq!(refreshed.code, 2, "{}", refreshed.stdout);
    assert!(
        refreshed.stdout.contains("power      off → on"),
        "{}",
        refreshed.stdout
    );
    assert!(
        refreshed.stdout.contains("boot       pxe → disk"),
        "{}",
        refreshed.stdout
    );
}

#[test]
fn a_refreshed_plan_reads_the_password_and_never_shows_it() {
    // A Redfish BMC on a closed loopback port: the refresh reads the
    // password and tries the BMC, which cannot answer.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let fleet = crate::support::TempFleet::new(&[(
        "nodes/n.toml",
        &format!(
            "[[node]]\nname = \"n1\"\ndriver = \"redfish\"\nbmc = {{ address = \"redfish+http://127.0.0.1:{port}/redfish/v1/Systems/1\", username = \"admin\", password_env = \"RIVET_TEST_BMC_PASSWORD\" }}\ndesired = {{ provision = \"manageable\" }}\n"
        ),
    )]);
    for format in ["human", "json"] {
        let run = reconcile(
            fleet.path(),
            &["--dry-run", "--refresh", "--format", format],
        );
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(
            all.contains("cannot read power state"),
            "the refresh did not reach the driver: {all}"
        );
        assert!(!all.contains("hunter2"), "the password leaked: {all}");
    }
}

/// The deploy steps of `node` in a dry run's JSON plan, as `interface.step`
/// with priority and source.
fn planned_steps(dir: &Path, node: &str) -> Vec<(String, u64, String)> {
    let run = reconcile(dir, &["--dry-run", "--format", "json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let plan: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let node = plan["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == node)
        .expect("the node is planned");
    node["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                format!(
                    "{}.{}",
                    s["interface"].as_str().unwrap(),
                    s["step"].as_str().unwrap()
                ),
                s["priority"].as_u64().unwrap(),
                s["source"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn the_node_decides_a_step_that_two_of_its_templates_set() {
    let fleet = TempFleet::new(&[
        (
            "drivers/t.toml",
            "[[deploy_template]]\nname = \"CUSTOM_A\"\nsteps = [{ interface = \"bios\", step = \"factory_reset\", priority = 150 }]\n\n\
             [[deploy_template]]\nname = \"CUSTOM_B\"\nsteps = [{ interface = \"bios\", step = \"factory_reset\", priority = 170 }]\n",
        ),
        (
            "nodes/a.toml",
            "[[node]]\nname = \"n1\"\ndriver = \"fake-hardware\"\ntraits = [\"CUSTOM_A\", \"CUSTOM_B\"]\n\
             desired = { provision = \"active\" }\n\
             [[node.deploy_steps]]\ninterface = \"bios\"\nstep = \"factory_reset\"\npriority = 120\n",
        ),
    ]);
    let loaded = rivet::model::fleet::load(fleet.path());
    assert!(loaded.is_valid(), "{:?}", loaded.problems);
    let steps = planned_steps(fleet.path(), "n1");
    assert!(
        steps.contains(&("bios.factory_reset".to_string(), 120, "node".to_string())),
        "{steps:?}"
    );
}

#[test]
fn a_node_step_gives_a_default_step_its_arguments_or_disables_it() {
    let drivers =
        std::fs::read_to_string(fixture("plan/missing_required_argument/drivers/acme.toml"))
            .unwrap();
    let node = |step: &str| {
        format!(
            "[[node]]\nname = \"n1\"\ndriver = \"acme-fake\"\ndesired = {{ provision = \"active\" }}\n\
             [[node.deploy_steps]]\ninterface = \"vendor\"\nstep = \"apply_profile\"\n{step}\n"
        )
    };
    let given = TempFleet::new(&[
        ("drivers/acme.toml", &drivers),
        (
            "nodes/a.toml",
            &node("priority = 130\nargs = { profile = \"throughput\" }"),
        ),
    ]);
    let steps = planned_steps(given.path(), "n1");
    assert!(
        steps.contains(&("vendor.apply_profile".to_string(), 130, "node".to_string())),
        "{steps:?}"
    );
    let disabled = TempFleet::new(&[
        ("drivers/acme.toml", &drivers),
        ("nodes/a.toml", &node("priority = 0")),
    ]);
    let steps = planned_steps(disabled.path(), "n1");
    assert!(
        steps.iter().all(|(id, _, _)| id != "vendor.apply_profile"),
        "{steps:?}"
    );
}

#[test]
fn an_instance_uuid_associates_a_node_without_rebuilding_it() {
    let node = |instance: &str| {
        let fleet = TempFleet::new(&[(
            "nodes/a.toml",
            &format!(
                "[[node]]\nname = \"n1\"\ndriver = \"fake-hardware\"\ninstance = {{ image = \"http://x/a.img\"{instance} }}\n"
            ),
        )]);
        let loaded = rivet::model::fleet::load(fleet.path());
        assert!(loaded.is_valid(), "{:?}", loaded.problems);
        loaded.fleet.nodes[0].clone()
    };
    let plain = node("");
    let associated = node(", uuid = \"11111111-2222-3333-4444-555555555555\"");
    assert_eq!(
        associated.tenancy.instance_uuid.as_deref(),
        Some("11111111-2222-3333-4444-555555555555")
    );
    assert_eq!(
        rivet::plan::instance_fingerprint(&plain),
        rivet::plan::instance_fingerprint(&associated)
    );
    assert_ne!(
        rivet::plan::instance_fingerprint(&plain),
        rivet::plan::instance_fingerprint(&node(&format!(
            ", checksum = \"sha256:{}\"",
            "0".repeat(64)
        )))
    );
}

#[test]
fn a_direct_node_carries_its_validated_image_and_ramdisk() {
    use rivet::model::node::{DeployRamdisk, DiskFormat};
    let dir = prepare("direct_deploy");
    let loaded = rivet::model::fleet::load(dir.path());
    assert!(loaded.is_valid(), "{:?}", loaded.problems);
    let agent1 = loaded.fleet.node("agent1").unwrap();
    let image = agent1.agent_image.as_ref().expect("an image to write");
    assert_eq!(image.url, "http://10.0.0.2/images/ubuntu-24.04.qcow2");
    assert_eq!(image.disk_format, DiskFormat::Qcow2);
    assert_eq!(image.disk_format.as_str(), "qcow2");
    assert_eq!(image.checksum.algo, "sha256");
    assert_eq!(
        image.checksum.value,
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    );
    assert_eq!(
        serde_json::to_value(&image.root_device).unwrap(),
        serde_json::json!({"size": ">= 100", "rotational": false})
    );
    assert_eq!(
        agent1.deploy_ramdisk,
        Some(DeployRamdisk::Network {
            kernel: "http://10.0.0.2/ipa-2024.2/ipa.kernel".into(),
            ramdisk: "http://10.0.0.2/ipa-2024.2/ipa.initramfs".into(),
        })
    );
    let agent2 = loaded.fleet.node("agent2").unwrap();
    assert_eq!(
        agent2
            .agent_image
            .as_ref()
            .map(|i| i.checksum.algo.as_str()),
        Some("sha512")
    );
    assert_eq!(
        agent2.deploy_ramdisk,
        Some(DeployRamdisk::Network {
            kernel: "http://10.0.0.2/ipa/ipa.kernel".into(),
            ramdisk: "http://10.0.0.2/ipa/ipa.initramfs".into(),
        }),
        "from its hardware type"
    );
}

#[test]
fn the_ramdisk_fits_the_boot_interface_and_the_nearest_declaration_wins() {
    let fleet = TempFleet::new(&[
        (
            "rivet.toml",
            "[hardware]\nenabled_deploy_interfaces = [\"ramdisk\", \"direct\"]\nenabled_boot_interfaces = [\"pxe\", \"redfish-virtual-media\"]\n",
        ),
        (
            "drivers/lab.toml",
            "[[hardware_type]]\nname = \"lab\"\nbase = \"redfish\"\n\
             deploy_kernel = \"http://x/base.kernel\"\ndeploy_ramdisk = \"http://x/base.initramfs\"\ndeploy_iso = \"http://x/base.iso\"\n\n\
             [[hardware_type]]\nname = \"lab-gen2\"\nbase = \"lab\"\ndeploy_iso = \"http://x/gen2.iso\"\n",
        ),
        (
            "nodes/a.toml",
            "[[node]]\nname = \"vmedia\"\ndriver = \"lab-gen2\"\nboot_interface = \"redfish-virtual-media\"\ndeploy_interface = \"direct\"\n\
             bmc = { address = \"redfish+http://127.0.0.1:1/redfish/v1/Systems/1\" }\n\
             [[node.ports]]\naddress = \"52:54:00:00:00:01\"\n\n\
             [[node]]\nname = \"pxe\"\ndriver = \"lab-gen2\"\nboot_interface = \"pxe\"\ndeploy_interface = \"direct\"\n\
             bmc = { address = \"redfish+http://127.0.0.1:1/redfish/v1/Systems/2\" }\n\
             [[node.ports]]\naddress = \"52:54:00:00:00:02\"\n\n\
             [[node]]\nname = \"own\"\ndriver = \"lab-gen2\"\nboot_interface = \"pxe\"\ndeploy_interface = \"direct\"\n\
             deploy_kernel = \"http://x/own.kernel\"\ndeploy_ramdisk = \"http://x/own.initramfs\"\n\
             bmc = { address = \"redfish+http://127.0.0.1:1/redfish/v1/Systems/3\" }\n\
             [[node.ports]]\naddress = \"52:54:00:00:00:03\"\n",
        ),
    ]);
    let loaded = rivet::model::fleet::load(fleet.path());
    assert!(loaded.is_valid(), "{:?}", loaded.problems);
    let ramdisk = |name: &str| {
        serde_json::to_value(&loaded.fleet.node(name).unwrap().deploy_ramdisk).unwrap()
    };
    assert_eq!(
        ramdisk("vmedia"),
        serde_json::json!({"virtual_media": {"iso": "http://x/gen2.iso"}})
    );
    assert_eq!(
        ramdisk("pxe"),
        serde_json::json!({"network": {"kernel": "http://x/base.kernel", "ramdisk": "http://x/base.initramfs"}})
    );
    assert_eq!(
        ramdisk("own"),
        serde_json::json!({"network": {"kernel": "http://x/own.kernel", "ramdisk": "http://x/own.initramfs"}})
    );
    // Declared `available`: nothing to write yet, and nothing required.
    assert!(loaded.fleet.nodes.iter().all(|n| n.agent_image.is_none()));
}

#[test]
fn a_new_checksum_rebuilds_and_a_new_ramdisk_only_replans() {
    let load = |checksum: char, ramdisk: &str| {
        let fleet = TempFleet::new(&[
            (
                "rivet.toml",
                "[hardware]\nenabled_deploy_interfaces = [\"fake\", \"direct\"]\n",
            ),
            (
                "nodes/a.toml",
                &format!(
                    "[[node]]\nname = \"n1\"\ndriver = \"fake-hardware\"\ndeploy_interface = \"direct\"\n\
                     deploy_kernel = \"http://x/ipa.kernel\"\ndeploy_ramdisk = \"http://x/{ramdisk}\"\n\
                     instance = {{ image = \"http://x/disk.raw\", checksum = \"sha256:{}\", disk_format = \"raw\" }}\n\
                     desired = {{ provision = \"active\" }}\n[[node.ports]]\naddress = \"52:54:00:00:00:01\"\n",
                    checksum.to_string().repeat(64)
                ),
            ),
        ]);
        let loaded = rivet::model::fleet::load(fleet.path());
        assert!(loaded.is_valid(), "{:?}", loaded.problems);
        let node = loaded.fleet.nodes[0].clone();
        (
            rivet::plan::instance_fingerprint(&node),
            rivet::plan::declaration_digest(&node),
        )
    };
    let (instance, declaration) = load('a', "ipa.initramfs");
    let (new_checksum, new_checksum_declaration) = load('b', "ipa.initramfs");
    assert_ne!(instance, new_checksum);
    assert_ne!(declaration, new_checksum_declaration);
    let (same_instance, new_ramdisk_declaration) = load('a', "ipa-2.initramfs");
    assert_eq!(instance, same_instance, "the deployed instance is the same");
    assert_ne!(declaration, new_ramdisk_declaration);
}

#[test]
fn a_fleet_that_does_not_enable_direct_composes_as_before() {
    // A custom type preferring `direct`, with every list unset: the
    // calculated lists skip what needs the agent, as when rivet could not
    // drive it, so the node keeps `ramdisk`.
    let fleet = TempFleet::new(&[
        (
            "drivers/lab.toml",
            "[[hardware_type]]\nname = \"lab\"\nbase = \"ipmi\"\nsupported_deploy_interfaces = [\"direct\", \"ramdisk\"]\n",
        ),
        (
            "nodes/a.toml",
            "[[node]]\nname = \"n1\"\ndriver = \"lab\"\nbmc = { address = \"ipmi://10.0.0.1\" }\n",
        ),
    ]);
    let loaded = rivet::model::fleet::load(fleet.path());
    assert!(loaded.is_valid(), "{:?}", loaded.problems);
    assert_eq!(loaded.fleet.nodes[0].interface_map()["deploy"], "ramdisk");
    assert!(
        !loaded
            .fleet
            .hardware
            .enabled
            .get(rivet::vocab::InterfaceType::Deploy)
            .contains(&"direct".to_string())
    );
}
