//! One conformance suite for every driver: the same contract checks, run
//! against each implementation of power, management and vendor passthru.

use std::sync::Arc;
use std::time::Duration;

use rivet::driver::fake::FakeBmcDir;
use rivet::driver::registry::Registry;
use rivet::model::fleet::Fleet;
use rivet::model::node::Node;
use rivet::vocab::{BootDevice, PowerState};
use serde_json::{Value, json};

use crate::redfish_bed::{Sushy, SushyOptions, skipped};
use crate::support::{TempFleet, copy_dir, root};

/// One implementation under test.
pub struct Subject {
    pub fleet: Arc<Fleet>,
    pub registry: Registry,
    pub node: String,
}

impl Subject {
    pub fn new(dir: &std::path::Path, node: &str) -> Self {
        let loaded = rivet::model::fleet::load(dir);
        assert!(loaded.is_valid(), "{:?}", loaded.problems);
        let fleet = Arc::new(loaded.fleet);
        let registry = Registry::new(
            fleet.root.clone(),
            Arc::new(FakeBmcDir::beside(&fleet.conductor.state, false)),
        )
        .with_ipmi_min_command_interval(fleet.conductor.ipmi_min_command_interval);
        Self {
            fleet,
            registry,
            node: node.to_string(),
        }
    }

    fn node(&self) -> &Node {
        self.fleet
            .node(&self.node)
            .expect("the subject's node is declared")
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Power: set blocks until the BMC reports the target; already there is
/// success; get reads what set did.
pub fn power_contract(subject: &Subject) {
    let node = subject.node();
    let power = subject
        .registry
        .power(node)
        .expect("a power implementation");
    let timeout = Duration::from_secs(30);
    rt().block_on(async {
        power
            .set_power_state(node, PowerState::Off, timeout)
            .await
            .unwrap();
        assert_eq!(power.get_power_state(node).await.unwrap(), PowerState::Off);
        power
            .set_power_state(node, PowerState::On, timeout)
            .await
            .unwrap();
        assert_eq!(
            power.get_power_state(node).await.unwrap(),
            PowerState::On,
            "set returned before the BMC was on"
        );
        power
            .set_power_state(node, PowerState::On, timeout)
            .await
            .expect("already on is success");
        power
            .set_power_state(node, PowerState::Off, timeout)
            .await
            .unwrap();
        assert_eq!(power.get_power_state(node).await.unwrap(), PowerState::Off);
    });
}

/// Management: a boot device set is read back.
pub fn management_contract(subject: &Subject) {
    let node = subject.node();
    let management = subject
        .registry
        .management(node)
        .expect("a management implementation");
    rt().block_on(async {
        for device in [BootDevice::Pxe, BootDevice::Disk, BootDevice::Pxe] {
            management
                .set_boot_device(node, device, true)
                .await
                .unwrap();
            assert_eq!(
                management.get_boot_device(node).await.unwrap(),
                Some(device)
            );
        }
    });
}

/// Vendor passthru: a declared method answers; an undeclared one is refused.
pub fn vendor_contract(subject: &Subject, method: &str, args: Value, check: impl Fn(&Value)) {
    let node = subject.node();
    let answer = rt()
        .block_on(
            subject
                .registry
                .passthru(&subject.fleet, node, method, "POST", args),
        )
        .unwrap();
    check(&answer);
    let vendor = subject
        .fleet
        .interface_of(node, rivet::vocab::InterfaceType::Vendor)
        .unwrap();
    assert!(
        vendor.passthru.iter().any(|m| m.method == method),
        "{method} is declared by {}",
        vendor.name
    );
    let undeclared = "no_such_method";
    assert!(!vendor.passthru.iter().any(|m| m.method == undeclared));
    let refused = rt()
        .block_on(
            subject
                .registry
                .passthru(&subject.fleet, node, undeclared, "POST", json!({})),
        )
        .expect_err("an undeclared method must be refused");
    assert!(
        matches!(
            refused.kind,
            rivet::driver::ErrorKind::Invalid | rivet::driver::ErrorKind::Unsupported
        ),
        "{}: refused as {:?}, not as a bad call: {}",
        vendor.name,
        refused.kind,
        refused.message
    );
    assert!(
        refused.message.contains(undeclared),
        "{}: the refusal does not name the method: {}",
        vendor.name,
        refused.message
    );
}

#[test]
fn fake_hardware_conforms() {
    let fleet = TempFleet::new(&[(
        "nodes/n.toml",
        "[[node]]\nname = \"n1\"\ndriver = \"fake-hardware\"\nbmc = { address = \"fake://n1?latency=5ms\" }\n",
    )]);
    let subject = Subject::new(fleet.path(), "n1");
    power_contract(&subject);
    management_contract(&subject);
    vendor_contract(&subject, "third_method_sync", json!({"bar": "meow"}), |v| {
        assert_eq!(v, &json!(true))
    });
}

#[test]
fn redfish_on_sushy_tools_conforms() {
    if skipped() {
        return;
    }
    let sushy = Sushy::start(SushyOptions {
        systems: 1,
        power_delay: 2,
        ..SushyOptions::default()
    });
    let fleet = TempFleet::new(&[(
        "nodes/n.toml",
        &format!(
            "[[node]]\nname = \"n1\"\ndriver = \"redfish\"\nbmc = {{ address = \"redfish+http://127.0.0.1:{}\" }}\n",
            sushy.port
        ),
    )]);
    let subject = Subject::new(fleet.path(), "n1");
    power_contract(&subject);
    management_contract(&subject);
    vendor_contract(&subject, "eject_vmedia", json!({}), |v| {
        assert_eq!(v, &json!({"ejected": []}))
    });
}

#[test]
fn the_example_exec_plugin_conforms() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&root().join("examples/quickstart"), tmp.path());
    let subject = Subject::new(tmp.path(), "edge-acme01");
    vendor_contract(&subject, "firmware_info", json!({}), |v| {
        assert_eq!(v["node"], "edge-acme01");
        assert!(v["bmc"].is_string());
    });
    vendor_contract(&subject, "set_asset_tag", json!({"tag": "R1-07"}), |v| {
        assert_eq!(v, &json!({"asset_tag": "R1-07"}))
    });
}

#[test]
fn ipmi_on_ipmi_sim_conforms() {
    let Some(bed) = crate::ipmi_bed::IpmiBed::start("ipmi_on_ipmi_sim_conforms", 1) else {
        return;
    };
    let node = format!(
        "[[node]]\nname = \"n1\"\ndriver = \"ipmi\"\n{}\n",
        bed.bmc_decl(0, "password_file = \"bmc.pass\"")
    );
    let fleet = TempFleet::new(&[
        (
            "rivet.toml",
            "[conductor]\nipmi_min_command_interval = \"50ms\"\n",
        ),
        ("nodes/n.toml", &node),
        ("bmc.pass", &bed.password),
    ]);
    let subject = Subject::new(fleet.path(), "n1");
    power_contract(&subject);
    assert!(
        !bed.bmcs[0].power_on(),
        "the emulator agrees the node ended off"
    );
    management_contract(&subject);
    vendor_contract(
        &subject,
        "send_raw",
        json!({"raw_bytes": "0x06 0x01"}),
        |v| {
            // Get Device ID answers 15 bytes.
            let bytes: Vec<&str> = v.as_str().unwrap_or("").split_whitespace().collect();
            assert_eq!(bytes.len(), 15, "Get Device ID answer: {v}");
            assert!(
                bytes.iter().all(|b| u8::from_str_radix(b, 16).is_ok()),
                "{v}"
            );
        },
    );
}
