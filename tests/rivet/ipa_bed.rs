//! The deploy-ramdisk bed's harness (`tests/common/ipa_bed.rs` and its
//! neighbours) proven against the bed's own reference Ironic side: a bed
//! comes up, looks itself up, heartbeats, answers its agent API and goes
//! down leaving no process or loop device; the images are served whole and
//! counted; the boot simulator starts a ramdisk on a network power-on of a
//! fake BMC and stops it when the power goes.
//!
//! They need root, loop devices and `.venv-ipa` (`scripts/test` installs
//! it); without them they fail with how to get them, unless
//! `RIVET_SKIP_EMULATORS=1` is set: then they say they were skipped.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rivet::driver::fake::{Call, FakeBmcDir, FakeBmcs};
use rivet::store::records::FakeBmcRecord;
use rivet::vocab::{BootDevice, PowerState};
use sha2::Digest as _;

use crate::fake_ironic::FakeIronic;
use crate::image_server::ImageServer;
use crate::ipa_bed::{self, BedSettings, Images, IpaBed, Leftovers};
use crate::ramdisk_boots::{Booted, RamdiskBoots, SimNode};

/// Whether `test` runs: `false` when emulator tests are skipped; a panic
/// with how to install what a bed needs when it is missing.
fn bed_can_run(test: &str) -> bool {
    if crate::support::skip_emulator_test(test) {
        return false;
    }
    ipa_bed::assert_installed();
    true
}

/// Nothing of the bed in `run_root` is left running or attached.
fn assert_nothing_left(run_root: &Path) {
    assert_eq!(
        ipa_bed::leftovers(run_root),
        Leftovers::default(),
        "the bed in {} left processes or loop devices behind",
        run_root.display()
    );
}

/// A short lookup timeout: an agent a test forgets gives up soon.
fn settings() -> BedSettings {
    BedSettings {
        lookup_timeout: Some(Duration::from_secs(30)),
        power_off_delay: Some(Duration::from_millis(500)),
        ..BedSettings::default()
    }
}

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn a_bed_looks_itself_up_heartbeats_answers_and_goes_down_leaving_nothing() {
    if !bed_can_run("an ironic-python-agent bed test") {
        return;
    }
    const UUID: &str = "1bed0000-0000-4000-8000-525400bed001";
    const MAC: &str = "52:54:00:be:d0:01";
    let ironic = FakeIronic::start(&[(UUID, MAC)]);
    let dir = tempfile::tempdir().unwrap();
    let run_root = dir.path().join("bed");

    let mut bed = IpaBed::up_with(&run_root, &ironic.url, MAC, &settings()).unwrap();
    assert_eq!(bed.info.mac, MAC);
    assert_eq!(bed.info.api_url, ironic.url);
    let backing = std::fs::read_to_string(format!(
        "/sys/block/{}/loop/backing_file",
        bed.info.loop_device.trim_start_matches("/dev/")
    ))
    .unwrap();
    assert_eq!(
        Path::new(backing.trim()),
        std::fs::canonicalize(&bed.info.disk_image).unwrap(),
        "the agent's disk is a loop device over the bed's own file"
    );
    assert!(bed.agent_alive(), "the agent runs: {}", bed.log());
    assert_eq!(bed.exit(), None);

    let node = ironic.wait_for(UUID, "a heartbeat", Duration::from_secs(30), |n| {
        n["heartbeats"].as_u64() >= Some(1)
    });
    assert_eq!(node["callback_url"], bed.info.callback_url.as_str());
    assert_eq!(node["agent_version"], "13.0.0");
    let token = node["token"].as_str().expect("a token was handed out");
    assert!(token.len() >= 32, "IPA ignores shorter tokens: {token}");
    let first_heartbeat = node["first_heartbeat_at"].as_f64().unwrap();
    eprintln!(
        "ipa-up took {:.2} s; first heartbeat {:.2} s after it returned",
        bed.up_took.as_secs_f64(),
        first_heartbeat - unix_seconds(bed.up_at)
    );

    let http = reqwest::blocking::Client::new();
    let commands = format!("{}/v1/commands/", bed.info.callback_url);
    let answer = http
        .get(format!("{commands}?agent_token={token}"))
        .send()
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(
        answer.json::<serde_json::Value>().unwrap(),
        serde_json::json!({"commands": []})
    );
    let refused = http
        .get(format!("{commands}?agent_token=wrong"))
        .send()
        .unwrap();
    assert_eq!(
        refused.status().as_u16(),
        401,
        "the agent API needs its token"
    );

    let summary = bed.down().unwrap();
    assert!(
        summary.ends_with("(stopped 1 process(es), detached 1 loop device(s))"),
        "{summary}"
    );
    assert!(!bed.agent_alive());
    assert_nothing_left(&run_root);
    assert_eq!(
        bed.disk().len(),
        64 << 20,
        "the disk image is kept for reading"
    );
    let again = bed.down().unwrap();
    assert!(
        again.ends_with("(stopped 0 process(es), detached 0 loop device(s))"),
        "down is idempotent: {again}"
    );
}

#[test]
fn a_dropped_bed_leaves_nothing() {
    if !bed_can_run("an ironic-python-agent bed test") {
        return;
    }
    const MAC: &str = "52:54:00:be:d0:02";
    // Nothing answers at this URL: the agent keeps retrying its lookup.
    let nowhere = format!("http://127.0.0.1:{}", crate::redfish_bed::free_port());
    let dir = tempfile::tempdir().unwrap();
    let run_root = dir.path().join("bed");
    let bed = IpaBed::up_with(&run_root, &nowhere, MAC, &settings()).unwrap();
    let loop_device = bed.info.loop_device.clone();
    assert!(bed.agent_alive(), "the agent runs: {}", bed.log());
    assert_eq!(ipa_bed::leftovers(&run_root).loop_devices, [loop_device]);
    drop(bed);
    assert_nothing_left(&run_root);
}

#[test]
fn images_are_served_whole_and_counted() {
    if !bed_can_run("an ironic-python-agent bed test") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let images = Images::make(&dir.path().join("images"));
    let again = Images::make(&dir.path().join("again"));
    for (one, other) in images.all().into_iter().zip(again.all()) {
        assert_eq!(one.sha256, other.sha256, "{} is deterministic", one.name());
    }
    let server = ImageServer::serve(&images.dir);
    let http = reqwest::blocking::Client::new();
    for image in images.all() {
        let answer = http.get(server.url(image.name())).send().unwrap();
        assert_eq!(answer.status().as_u16(), 200);
        let length = answer.content_length();
        let bytes = answer.bytes().unwrap();
        assert_eq!(length, Some(bytes.len() as u64), "Content-Length is sent");
        let digest = hex::encode(sha2::Sha256::digest(&bytes));
        assert_eq!(digest, image.sha256, "{} whole", image.name());
    }
    assert_eq!(images.mbr_raw.path.metadata().unwrap().len(), 16 << 20);
    let head = http.head(server.url("disk-gpt.raw")).send().unwrap();
    assert_eq!(
        head.headers()["content-length"],
        (16u64 << 20).to_string().as_str()
    );
    let missing = http.get(server.url("no-such.raw")).send().unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    let outside = http.get(server.url("..%2FSHA256SUMS")).send().unwrap();
    assert_eq!(outside.status().as_u16(), 404);
    assert_eq!(server.downloads("disk-mbr.raw"), 1);
    assert_eq!(server.downloads("disk-gpt.raw"), 1);
    assert_eq!(server.requests("disk-gpt.raw"), 2, "the GET and the HEAD");
    assert_eq!(server.downloads("no-such.raw"), 0);
    assert_eq!(server.requests("no-such.raw"), 1);
}

#[test]
fn the_ramdisk_boots_on_a_network_power_on_and_dies_when_the_power_goes() {
    if !bed_can_run("an ironic-python-agent bed test") {
        return;
    }
    const UUID: &str = "1bed0000-0000-4000-8000-525400bed003";
    const MAC: &str = "52:54:00:be:d0:03";
    let dir = tempfile::tempdir().unwrap();
    let bmc_dir = dir.path().join("fake-bmc");
    let run_root = dir.path().join("n1");
    // The BMCs as rivet's fake-hardware driver keeps them: JSON per BMC,
    // every accepted change appended to the call log.
    let bmcs = FakeBmcDir::new(bmc_dir.clone(), false);
    bmcs.put("bmc-n1", &FakeBmcRecord::default()).unwrap();
    let accept = |node: &str, op: &str, change: &mut dyn FnMut(&mut FakeBmcRecord)| {
        let call = Call {
            node,
            op,
            latency: Duration::ZERO,
        };
        let host = if node == "n1" { "bmc-n1" } else { "bmc-n2" };
        bmcs.accept(host, &call, change).unwrap();
    };
    let power = |node: &str, state: PowerState| {
        accept(
            node,
            &format!("set_power_state:{}", state.as_str()),
            &mut |b| b.power = state,
        );
    };
    let boot_from = |node: &str, device: BootDevice| {
        accept(
            node,
            &format!("set_boot_device:{}", device.as_str()),
            &mut |b| b.boot_device = Some(device),
        );
    };
    let ironic = FakeIronic::start(&[(UUID, MAC)]);
    let boots = RamdiskBoots::watch_with(
        &bmc_dir,
        &ironic.url,
        vec![SimNode {
            node_name: "n1".to_string(),
            bmc_host: "bmc-n1".to_string(),
            mac: MAC.to_string(),
            run_root: run_root.clone(),
        }],
        settings(),
    );
    let within = Duration::from_secs(60);

    // Boot 1: from the network, the ramdisk comes up and heartbeats.
    boot_from("n1", BootDevice::Pxe);
    power("n1", PowerState::On);
    let seen = boots.wait_for("n1", "the ramdisk up", within, |b| {
        b.len() == 1 && b[0].booted != Booted::Starting
    });
    assert_eq!(seen[0].device, Some(BootDevice::Pxe));
    let first = boots
        .bed("n1")
        .unwrap_or_else(|| panic!("a ramdisk: {seen:#?}"));
    assert_eq!(first.mac, MAC);
    let node = ironic.wait_for(UUID, "a heartbeat", within, |n| {
        n["heartbeats"].as_u64() >= Some(1)
    });
    assert_eq!(node["callback_url"], first.callback_url.as_str());

    // Power on again while on: nothing; power off: the ramdisk dies.
    power("n1", PowerState::On);
    power("n1", PowerState::Off);
    let seen = boots.wait_for("n1", "the power cut", within, |b| b[0].ended.is_some());
    assert_eq!(
        seen.len(),
        1,
        "a power-on of a node that is on boots nothing"
    );
    let (_, summary) = seen[0].ended.clone().unwrap();
    assert!(
        summary
            .as_ref()
            .unwrap()
            .contains("detached 1 loop device(s)"),
        "{summary:?}"
    );
    assert_eq!(boots.bed("n1"), None);
    assert_nothing_left(&run_root);

    // Boot 2: a fresh ramdisk, once Ironic's side wiped the token.
    ironic.wipe_token(UUID);
    power("n1", PowerState::On);
    let seen = boots.wait_for("n1", "the second ramdisk up", within, |b| {
        b.len() == 2 && b[1].booted != Booted::Starting
    });
    let second = boots
        .bed("n1")
        .unwrap_or_else(|| panic!("a second ramdisk: {seen:#?}"));
    ironic.wait_for(UUID, "the second boot's heartbeat", within, |n| {
        n["callback_url"] == second.callback_url.as_str()
    });

    // Boot 3: the instance, from disk, after a reboot: no ramdisk. A call
    // to a node the simulator does not know, logged before, boots nothing.
    boot_from("n2", BootDevice::Pxe);
    power("n2", PowerState::On);
    boot_from("n1", BootDevice::Disk);
    power("n1", PowerState::Rebooting);
    let seen = boots.wait_for("n1", "the instance boot", within, |b| b.len() == 3);
    assert!(seen[1].ended.is_some(), "the reboot cut the second ramdisk");
    assert_eq!(seen[2].device, Some(BootDevice::Disk));
    assert_eq!(seen[2].booted, Booted::NoRamdisk);
    assert_eq!(boots.bed("n1"), None);
    assert_eq!(boots.last_bed("n1"), Some(second));
    assert_eq!(boots.disk("n1").map(|d| d.len()), Some(64 << 20));
    assert!(boots.boots("n2").is_empty());
    assert_nothing_left(&run_root);
    assert_eq!(boots.errors(), Vec::<String>::new());

    // The simulator's end stops a ramdisk still running.
    ironic.wipe_token(UUID);
    boot_from("n1", BootDevice::Cdrom);
    power("n1", PowerState::Rebooting);
    boots.wait_for("n1", "a ramdisk from cdrom", within, |b| {
        b.len() == 4 && b[3].bed().is_some()
    });
    assert!(!ipa_bed::leftovers(&run_root).processes.is_empty());
    drop(boots);
    assert_nothing_left(&run_root);
}
