//! The ipmitool driver against real BMC emulators (ipmi_sim) through the
//! real ipmitool. What rivet did is checked independently: in the
//! emulator's chassis files, or with the tests' own ipmitool.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use rivet::driver::fake::FakeBmcDir;
use rivet::driver::ipmi::IpmiDriver;
use rivet::driver::registry::Registry;
use rivet::driver::{DriverError, ErrorKind, Management, Power};
use rivet::model::fleet::Fleet;
use rivet::model::node::Node;
use rivet::vocab::{BootDevice, BootMode, PowerState};
use serde_json::json;

use crate::ipmi_bed::{GET_DEVICE_ID, IpmiBed};
use crate::support::TempFleet;

const GAP: Duration = Duration::from_millis(100);
const POWER_TIMEOUT: Duration = Duration::from_secs(10);

const RIVET_TOML: &str = r#"[conductor]
workers = 8
ipmi_min_command_interval = "100ms"

[hardware]
enabled_hardware_types = ["ipmi"]
enabled_boot_interfaces = ["pxe"]
enabled_deploy_interfaces = ["ramdisk"]
"#;

/// A fleet with one node `bmcN` per BMC of the bed, each reading its
/// password from `bmc-password` (relative to the fleet), desired as given.
fn fleet_of(bed: &IpmiBed, password: &str, desired: &[&str]) -> TempFleet {
    let mut nodes = String::new();
    for (i, desired) in desired.iter().enumerate() {
        nodes.push_str(&format!(
            "[[node]]\nname = \"bmc{i}\"\ndriver = \"ipmi\"\n{}\ndesired = {{ {desired} }}\n\n",
            bed.bmc_decl(i, r#"password_file = "bmc-password""#)
        ));
    }
    TempFleet::new(&[
        ("rivet.toml", RIVET_TOML),
        ("nodes/bmcs.toml", &nodes),
        ("bmc-password", &format!("{password}\n")),
    ])
}

fn load(dir: &Path) -> Fleet {
    let loaded = rivet::model::fleet::load(dir);
    assert!(loaded.is_valid(), "{:?}", loaded.problems);
    loaded.fleet
}

fn driver(dir: &Path) -> IpmiDriver {
    IpmiDriver::new(dir.to_path_buf()).with_min_command_interval(GAP)
}

fn registry(fleet: &Fleet) -> Registry {
    let bmcs = Arc::new(FakeBmcDir::beside(&fleet.conductor.state, true));
    Registry::new(fleet.root.clone(), bmcs)
        .with_ipmi_min_command_interval(fleet.conductor.ipmi_min_command_interval)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One BMC and a fleet of one node on it, `bmc0`, declared `desired`.
pub(crate) struct OneBmc {
    pub(crate) bed: IpmiBed,
    fleet: Fleet,
    _files: TempFleet,
}

pub(crate) fn one_bmc(test: &str, desired: &str) -> Option<OneBmc> {
    let bed = IpmiBed::start(test, 1)?;
    let files = fleet_of(&bed, &bed.password, &[desired]);
    let fleet = load(files.path());
    Some(OneBmc {
        bed,
        fleet,
        _files: files,
    })
}

impl OneBmc {
    pub(crate) fn node(&self) -> &Node {
        &self.fleet.nodes[0]
    }

    pub(crate) fn driver(&self) -> IpmiDriver {
        driver(&self.fleet.root)
    }

    /// A vendor passthru call through the registry, as the API makes it.
    async fn passthru(
        &self,
        method: &str,
        args: serde_json::Value,
    ) -> Result<serde_json::Value, DriverError> {
        registry(&self.fleet)
            .passthru(&self.fleet, self.node(), method, "POST", args)
            .await
    }

    /// What the chassis was asked, in order.
    pub(crate) fn chassis_calls(&self) -> Vec<String> {
        self.bed.bmcs[0]
            .chassis_log()
            .into_iter()
            .map(|(_, call)| call)
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn power_on_and_off_block_until_the_bmc_shows_it() {
    let Some(one) = one_bmc("power", "power = \"on\"") else {
        return;
    };
    let (bed, node, ipmi) = (&one.bed, one.node(), one.driver());

    assert_eq!(ipmi.get_power_state(node).await.unwrap(), PowerState::Off);
    ipmi.set_power_state(node, PowerState::On, POWER_TIMEOUT)
        .await
        .unwrap();
    assert!(
        bed.bmcs[0].power_on(),
        "the chassis is on when the call returns"
    );
    assert_eq!(ipmi.get_power_state(node).await.unwrap(), PowerState::On);

    ipmi.set_power_state(node, PowerState::Off, POWER_TIMEOUT)
        .await
        .unwrap();
    assert!(!bed.bmcs[0].power_on());

    // A change behind the BMC's back is what rivet reads next.
    bed.bmcs[0].set_power(true);
    assert_eq!(ipmi.get_power_state(node).await.unwrap(), PowerState::On);
    // The request, then a status poll that showed it.
    let calls = one.chassis_calls();
    let on = calls.iter().position(|c| c == "set power 1").unwrap();
    assert_eq!(calls[on + 1], "get power", "{calls:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn already_in_the_target_state_is_success_without_a_request() {
    let Some(one) = one_bmc("already on", "power = \"on\"") else {
        return;
    };
    one.bed.bmcs[0].set_power(true);
    one.driver()
        .set_power_state(one.node(), PowerState::On, POWER_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(
        one.chassis_calls(),
        ["get power"],
        "only the status was read"
    );
    assert!(one.bed.bmcs[0].power_on());
}

#[tokio::test(flavor = "multi_thread")]
async fn boot_devices_are_set_and_read_back_by_ipmitool_itself() {
    let Some(one) = one_bmc("boot device", "boot_device = \"pxe\"") else {
        return;
    };
    let (bed, node, ipmi) = (&one.bed, one.node(), one.driver());
    assert_eq!(ipmi.get_boot_device(node).await.unwrap(), None);

    for (device, selector, chassis) in [
        (BootDevice::Pxe, "Force PXE", "pxe"),
        (
            BootDevice::Disk,
            "Force Boot from default Hard-Drive",
            "default",
        ),
        (BootDevice::Cdrom, "Force Boot from CD/DVD", "cdrom"),
        (BootDevice::Bios, "Force Boot into BIOS Setup", "bios"),
    ] {
        ipmi.set_boot_device(node, device, true).await.unwrap();
        let witness = bed.ipmitool(0, &["chassis", "bootparam", "get", "5"]);
        assert!(witness.status.success(), "{}", text(&witness));
        let witness = String::from_utf8_lossy(&witness.stdout).into_owned();
        assert!(
            witness.contains(&format!("Boot Device Selector : {selector}")),
            "{device:?}: {witness}"
        );
        assert_eq!(bed.bmcs[0].boot(), chassis);
        assert_eq!(ipmi.get_boot_device(node).await.unwrap(), Some(device));
    }
    // The mode goes with a boot device: the declared one, pxe.
    ipmi.set_boot_mode(node, BootMode::Uefi).await.unwrap();
    assert_eq!(bed.bmcs[0].boot(), "pxe");
    // ipmi_sim marks its boot flags invalid and legacy whatever was set:
    // the mode cannot be read, and rivet says so rather than guess.
    assert_eq!(ipmi.get_boot_mode(node).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_is_a_fatal_credentials_error_that_never_shows_it() {
    let Some(bed) = IpmiBed::start("wrong password", 1) else {
        return;
    };
    let canary = format!("Wrong-{:012x}", fastrand::u64(..1 << 48));
    let fleet = fleet_of(&bed, &canary, &["power = \"on\""]);
    let fleet = load(fleet.path());
    let ipmi = driver(&fleet.root);
    let started = Instant::now();
    let error = ipmi.get_power_state(&fleet.nodes[0]).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Fatal, "{error}");
    assert!(error.message.contains("refused the credentials"), "{error}");
    assert!(error.message.contains("password_env"), "{error}");
    assert!(!error.message.contains(&canary), "{error}");
    // Refused at once, not mistaken for a BMC that does not answer.
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!bed.bmcs[0].power_on());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bmc_that_does_not_answer_is_a_retryable_error() {
    let Some(bed) = IpmiBed::start("no answer", 1) else {
        return;
    };
    let fleet = fleet_of(&bed, &bed.password, &["power = \"on\""]);
    // A port nothing listens on: bind one and let it go.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    drop(silent);
    let nodes = std::fs::read_to_string(fleet.path().join("nodes/bmcs.toml")).unwrap();
    let nodes = nodes.replace(&format!(":{}\"", bed.bmcs[0].port), &format!(":{port}\""));
    std::fs::write(fleet.path().join("nodes/bmcs.toml"), nodes).unwrap();
    let fleet = load(fleet.path());
    let error = driver(&fleet.root)
        .get_power_state(&fleet.nodes[0])
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Retryable, "{error}");
    assert!(error.message.contains("does not answer"), "{error}");
}

/// A stand-in for ipmitool: a shell script in `dir` that runs `before`,
/// then the real ipmitool with the same arguments.
fn wrapped_ipmitool(dir: &Path, before: &str) -> PathBuf {
    let source = dir.join("ipmitool.sh");
    std::fs::write(
        &source,
        format!("#!/bin/sh\n{before}\nexec ipmitool \"$@\"\n"),
    )
    .unwrap();
    // Made executable by another process: a file this multi-threaded process
    // wrote may still be open in a child forked meanwhile, and executing it
    // would then fail with "Text file busy".
    let path = dir.join("ipmitool");
    let made = std::process::Command::new("install")
        .args(["-m", "0755"])
        .arg(&source)
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success());
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn the_password_goes_through_a_private_file_that_is_gone_afterwards() {
    let Some(one) = one_bmc("password file", "power = \"on\"") else {
        return;
    };
    let password = &one.bed.password;
    let secrets = tempfile::tempdir().unwrap();
    let record = tempfile::tempdir().unwrap();
    let recorder = wrapped_ipmitool(
        record.path(),
        &format!(
            "out={out}\nprintf '%s\\n' \"$@\" > \"$out/argv\"\nenv > \"$out/env\"\n\
             for arg in \"$@\"; do [ \"$prev\" = -f ] && stat -c %a \"$arg\" > \"$out/mode\"; prev=$arg; done",
            out = record.path().display()
        ),
    );
    let ipmi = one
        .driver()
        .with_program(&recorder)
        .with_secret_dir(secrets.path());
    assert_eq!(
        ipmi.get_power_state(one.node()).await.unwrap(),
        PowerState::Off,
        "the file held the right password"
    );
    let read = |name: &str| std::fs::read_to_string(record.path().join(name)).unwrap();
    assert_eq!(read("mode").trim(), "600");
    let argv = read("argv");
    assert!(argv.contains("-f\n"), "{argv}");
    assert!(argv.contains("-C\n3\n"), "{argv}");
    assert!(!argv.contains(password), "{argv}");
    assert!(!read("env").contains(password));
    assert_eq!(
        std::fs::read_dir(secrets.path()).unwrap().count(),
        0,
        "the password file is deleted after the call"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_bmc_is_asked_again_within_the_retry_window() {
    let Some(one) = one_bmc("busy", "power = \"on\"") else {
        return;
    };
    let node = one.node();
    // ipmi_sim is never busy: the first two answers are made up, the way
    // ipmitool reports a busy BMC.
    let wrapper = tempfile::tempdir().unwrap();
    let busy = wrapper.path().join("busy");
    let program = wrapped_ipmitool(
        wrapper.path(),
        &format!(
            "n=$(cat {busy} 2>/dev/null || echo 0)\n\
             if [ \"$n\" -lt 2 ]; then echo $((n + 1)) > {busy}; echo 'Error: Node busy' >&2; exit 1; fi",
            busy = busy.display()
        ),
    );
    let ipmi = one.driver().with_program(&program);
    assert_eq!(
        ipmi.with_retry_window(Duration::from_secs(30))
            .get_power_state(node)
            .await
            .unwrap(),
        PowerState::Off
    );
    assert_eq!(std::fs::read_to_string(&busy).unwrap().trim(), "2");
    assert_eq!(
        one.chassis_calls(),
        ["get power"],
        "one call reached the BMC"
    );

    std::fs::remove_file(&busy).unwrap();
    let error = one
        .driver()
        .with_program(&program)
        .with_retry_window(Duration::ZERO)
        .get_power_state(node)
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Retryable, "{error}");
    assert!(error.message.contains("stayed busy"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn send_raw_returns_the_get_device_id_bytes() {
    let Some(one) = one_bmc("send_raw", "power = \"on\"") else {
        return;
    };
    let answer = one
        .passthru("send_raw", json!({ "raw_bytes": "0x06 0x01" }))
        .await
        .unwrap();
    assert_eq!(answer, json!(GET_DEVICE_ID));
    let witness = one.bed.ipmitool(0, &["raw", "0x06", "0x01"]);
    assert_eq!(
        String::from_utf8_lossy(&witness.stdout).trim(),
        GET_DEVICE_ID
    );

    let error = one
        .passthru("send_raw", json!({ "raw_bytes": "0x06 0x01; reboot" }))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Invalid, "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bmc_reset_warm_is_refused_by_ipmi_sim_and_cold_is_sent() {
    let Some(one) = one_bmc("bmc_reset", "power = \"on\"") else {
        return;
    };
    // ipmi_sim does not implement a warm reset: "Invalid command".
    let error = one.passthru("bmc_reset", json!({})).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Fatal, "{error}");
    assert!(
        error.message.contains("mc reset warm")
            && error.message.contains("does not support this command"),
        "{error}"
    );
    let cold = one.passthru("bmc_reset", json!({ "warm": false })).await;
    assert_eq!(cold, Ok(serde_json::Value::Null));
    // ipmi_sim goes on answering after its cold reset.
    let witness = one.bed.ipmitool(0, &["power", "status"]);
    assert!(witness.status.success(), "{}", text(&witness));
}

#[tokio::test(flavor = "multi_thread")]
async fn one_command_at_a_time_per_bmc_with_the_minimum_gap_and_bmcs_in_parallel() {
    let Some(bed) = IpmiBed::start("pacing", 2) else {
        return;
    };
    let gap = Duration::from_millis(300);
    let fleet = fleet_of(&bed, &bed.password, &["power = \"on\"", "power = \"on\""]);
    let fleet = Arc::new(load(fleet.path()));
    let ipmi = Arc::new(driver(&fleet.root).with_min_command_interval(gap));
    let mut calls = Vec::new();
    for i in 0..8 {
        let (fleet, ipmi) = (Arc::clone(&fleet), Arc::clone(&ipmi));
        calls.push(tokio::spawn(async move {
            let node = &fleet.nodes[i % 2];
            ipmi.get_power_state(node).await
        }));
    }
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), PowerState::Off);
    }
    let times: Vec<Vec<f64>> = bed
        .bmcs
        .iter()
        .map(|b| b.chassis_log().into_iter().map(|(t, _)| t).collect())
        .collect();
    for (i, times) in times.iter().enumerate() {
        assert_eq!(times.len(), 4, "bmc{i}: {times:?}");
        // Each chassis call happens inside one ipmitool run, and runs to one
        // BMC are `gap` apart end to start: calls are at least `gap` apart.
        for pair in times.windows(2) {
            assert!(
                pair[1] - pair[0] >= gap.as_secs_f64(),
                "bmc{i}: calls {:.3} s apart: {times:?}",
                pair[1] - pair[0]
            );
        }
    }
    // The two BMCs were served at the same time, not one after the other.
    assert!(times[1][0] < times[0][3] && times[0][0] < times[1][3]);
}

fn rivet_bin() -> std::path::PathBuf {
    assert_cmd::cargo::cargo_bin("rivet")
}

fn rivet(dir: &Path, password: &str, args: &[&str]) -> Output {
    Command::new(rivet_bin())
        .env("NO_COLOR", "1")
        .env("SIM_BMC_PASSWORD", password)
        .args(args)
        .arg(dir)
        .output()
        .unwrap()
}

#[test]
fn reconcile_converges_an_ipmi_fleet_from_power_off() {
    let Some(bed) = IpmiBed::start("reconcile", 3) else {
        return;
    };
    let password_env = r#"password_env = "SIM_BMC_PASSWORD""#;
    let nodes = format!(
        r#"[[node]]
name = "deployed"
driver = "ipmi"
deploy_interface = "ramdisk"
{}
instance = {{ kernel = "http://127.0.0.1:9/vmlinuz", ramdisk = "http://127.0.0.1:9/initrd.img" }}
desired = {{ provision = "active", power = "on", boot_device = "pxe" }}

[[node]]
name = "from-disk"
driver = "ipmi"
{}
desired = {{ provision = "manageable", power = "on", boot_device = "disk" }}

[[node]]
name = "parked"
driver = "ipmi"
{}
desired = {{ provision = "manageable", power = "off", boot_device = "cdrom" }}
"#,
        bed.bmc_decl(0, password_env),
        bed.bmc_decl(1, password_env),
        bed.bmc_decl(2, password_env),
    );
    let fleet = TempFleet::new(&[("rivet.toml", RIVET_TOML), ("nodes/bmcs.toml", &nodes)]);
    // The third starts on, so converging it means turning it off.
    bed.bmcs[2].set_power(true);

    let out = rivet(fleet.path(), &bed.password, &["reconcile"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Converged 3 node(s)"),
        "{}",
        text(&out)
    );
    let [deployed, from_disk, parked] = &bed.bmcs[..] else {
        unreachable!()
    };
    assert!(deployed.power_on());
    assert_eq!(deployed.boot(), "pxe");
    assert!(from_disk.power_on());
    assert_eq!(from_disk.boot(), "default");
    assert!(!parked.power_on());
    assert_eq!(parked.boot(), "cdrom");
    // The ramdisk deploy booted the node from the network: pxe was set
    // before the power-on that booted it.
    let calls: Vec<String> = deployed.chassis_log().into_iter().map(|(_, c)| c).collect();
    let pxe = calls.iter().position(|c| c == "set boot pxe").unwrap();
    let on = calls.iter().position(|c| c == "set power 1").unwrap();
    assert!(pxe < on, "{calls:?}");
    // `ipmi_min_command_interval = "100ms"` paced the commands, instead of
    // the default 5 s. Power commands make one chassis call each (`bootdev`
    // makes two: get, then set).
    let times: Vec<f64> = deployed
        .chassis_log()
        .into_iter()
        .filter(|(_, call)| call.ends_with("power") || call.starts_with("set power"))
        .map(|(t, _)| t)
        .collect();
    assert!(times.len() >= 5, "{times:?}");
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!((0.1..5.0).contains(&gap), "{gap:.3} s: {times:?}");
    }

    let again = rivet(fleet.path(), &bed.password, &["reconcile"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stdout).contains("Nothing to do"));
}

#[test]
fn a_canary_password_never_reaches_output_logs_or_the_state_file() {
    let canary = format!("Cnry-{:012x}", fastrand::u64(..1 << 48));
    let Some(bed) = IpmiBed::start_with_password("canary", 2, &canary) else {
        return;
    };
    let wrong = format!("Nope-{:012x}", fastrand::u64(..1 << 48));
    let nodes = format!(
        "[[node]]\nname = \"right\"\ndriver = \"ipmi\"\n{}\ndesired = {{ provision = \"manageable\", power = \"on\" }}\n\n\
         [[node]]\nname = \"wrong\"\ndriver = \"ipmi\"\n{}\ndesired = {{ provision = \"manageable\", power = \"on\" }}\n",
        bed.bmc_decl(0, r#"password_env = "SIM_BMC_PASSWORD""#),
        bed.bmc_decl(1, r#"password_file = "wrong-password""#),
    );
    let fleet = TempFleet::new(&[
        ("rivet.toml", RIVET_TOML),
        ("nodes/bmcs.toml", &nodes),
        ("wrong-password", &wrong),
    ]);
    let mut everything = String::new();
    let out = Command::new(rivet_bin())
        .env("SIM_BMC_PASSWORD", &canary)
        .env("RIVET_LOG", "trace")
        .args(["reconcile"])
        .arg(fleet.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    everything.push_str(&text(&out));
    assert!(bed.bmcs[0].power_on(), "{}", text(&out));
    assert!(
        everything.contains("refused the credentials"),
        "{everything}"
    );
    assert!(everything.contains("ipmitool"), "debug logs were written");
    let status = rivet(fleet.path(), &canary, &["status", "--format", "json"]);
    everything.push_str(&text(&status));
    let state = std::fs::read(fleet.path().join(".rivet/state.redb")).unwrap();
    everything.push_str(&String::from_utf8_lossy(&state));
    for secret in [&canary, &wrong] {
        assert!(!everything.contains(secret.as_str()), "{secret} leaked");
    }
}

#[test]
fn without_ipmitool_rivet_says_how_to_install_it() {
    let fleet = TempFleet::new(&[
        ("rivet.toml", RIVET_TOML),
        (
            "nodes/bmc.toml",
            "[[node]]\nname = \"bmc0\"\ndriver = \"ipmi\"\nbmc = { address = \"ipmi://127.0.0.1:9\", username = \"admin\", cipher_suite = 3 }\ndesired = { provision = \"manageable\", power = \"on\" }\n",
        ),
    ]);
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(rivet_bin())
        .env("PATH", empty.path())
        .args(["reconcile"])
        .arg(fleet.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("ipmitool is not installed: apt-get install ipmitool"),
        "{}",
        text(&out)
    );
}

#[test]
fn ipmi_min_command_interval_must_be_a_duration() {
    let fleet = TempFleet::new(&[(
        "rivet.toml",
        "[conductor]\nipmi_min_command_interval = \"soon\"\n",
    )]);
    let loaded = rivet::model::fleet::load(fleet.path());
    assert!(
        loaded
            .problems
            .iter()
            .any(|p| p.code == "rivet::conductor::duration" && p.message.contains("soon")),
        "{:?}",
        loaded.problems
    );
    let fine = TempFleet::new(&[(
        "rivet.toml",
        "[conductor]\nipmi_min_command_interval = \"250ms\"\n",
    )]);
    let fleet = rivet::model::fleet::load(fine.path()).fleet;
    assert_eq!(
        fleet.conductor.ipmi_min_command_interval,
        Duration::from_millis(250)
    );
}
