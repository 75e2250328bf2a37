//! What rivet adds to a `direct` deploy beyond the agent's own work.
//!
//! Five fake-hardware nodes deploy in parallel through `rivet reconcile`,
//! each with the real ironic-python-agent in a bed (`tests/testbeds/ipa/`)
//! as its booted ramdisk, a 16 MiB raw image from a local server. For each
//! node it reports:
//!
//! - the deploy's wall time (its `deploy` start to its end in history);
//! - the agent's boot: power-on into the ramdisk until its first heartbeat
//!   (the `wait call-back` operation);
//! - the agent's commands, as the agent's own log times them (from
//!   `Executing command` to `… command … completed`);
//! - what is left: rivet's share (BMC calls, journal commits, requests,
//!   and the gaps between one command's end and the next one's start).
//!
//! Target: rivet's share at most 1 s a node. Ironic's heartbeat-driven loop
//! waits for a heartbeat between steps: at its defaults (heartbeat timeout
//! 300 s, a heartbeat every 90 to 180 s) that is where its 5 to 12 s a step
//! come from even with fast-track.
//!
//! Needs what the tests need (`scripts/test` installs it): root, loop
//! devices and `.venv-ipa`. Run: `cargo bench --bench agent_deploy`.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../tests/common/image_server.rs"]
mod image_server;
#[path = "../tests/common/ipa_bed.rs"]
mod ipa_bed;
#[path = "../tests/common/ramdisk_boots.rs"]
mod ramdisk_boots;

use image_server::ImageServer;
use ipa_bed::{BedSettings, Images};
use ramdisk_boots::{RamdiskBoots, SimNode};
use rivet::store::Store;
use rivet::store::records::Event;

const NODES: usize = 5;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Seconds since midnight of an agent log line's `YYYY-MM-DD HH:MM:SS.mmm`
/// prefix: differences within one run are all that is needed.
fn log_seconds(line: &str) -> Option<f64> {
    let time = line.get(11..23)?;
    let (hms, ms) = time.split_once('.')?;
    let mut parts = hms.split(':').map(|p| p.parse::<f64>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    Some(h * 3600.0 + m * 60.0 + s + ms.parse::<f64>().ok()? / 1000.0)
}

/// Each command's duration as the agent logged it: from `Executing
/// command: EXT.NAME` to `(A)synchronous command NAME completed`.
fn agent_commands(log: &str) -> Vec<(String, f64)> {
    let mut started: Vec<(String, f64)> = Vec::new();
    let mut done = Vec::new();
    for line in log.lines() {
        let Some(at) = log_seconds(line) else {
            continue;
        };
        if let Some(rest) = line.split("Executing command: ").nth(1) {
            let name = rest.split_whitespace().next().unwrap_or("").to_string();
            started.push((name, at));
        } else if line.contains("ommand ") && line.contains(" completed") {
            let name = line
                .split("ommand ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .unwrap_or("");
            if let Some(i) = started.iter().position(|(n, _)| n.ends_with(name)) {
                let (full, from) = started.remove(i);
                done.push((full, at - from));
            }
        }
    }
    done
}

fn at(event: &Event) -> f64 {
    humantime::parse_rfc3339(&event.at)
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn main() {
    if let Some(missing) = ipa_bed::missing() {
        eprintln!("agent_deploy bench: {missing}");
        std::process::exit(1);
    }
    let images_dir = tempfile::tempdir().unwrap();
    let images = Images::make(images_dir.path());
    let server = ImageServer::serve(&images.dir);
    let fleet = tempfile::tempdir().unwrap();
    let dir = fleet.path();
    let port = free_port();
    std::fs::write(
        dir.join("rivet.toml"),
        format!(
            "[conductor]\nhttp = \"127.0.0.1:{port}\"\nfake_bmc_dir = \"fake-bmc\"\n\
             deploy_callback_timeout = \"120s\"\n\n[hardware]\nenabled_deploy_interfaces = [\"direct\", \"fake\"]\n"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("nodes")).unwrap();
    std::fs::create_dir_all(dir.join("fake-bmc")).unwrap();
    let mut sims = Vec::new();
    let mut text = String::new();
    for i in 1..=NODES {
        let (name, mac) = (format!("n{i}"), format!("52:54:00:be:0c:{i:02x}"));
        text += &format!(
            "[[node]]\nname = \"{name}\"\ndriver = \"fake-hardware\"\ndeploy_interface = \"direct\"\n\
             bmc = {{ address = \"fake://{name}\" }}\n\
             deploy_kernel = \"http://127.0.0.1:1/k\"\ndeploy_ramdisk = \"http://127.0.0.1:1/r\"\n\
             instance = {{ image = \"{}\", checksum = \"sha256:{}\", disk_format = \"raw\" }}\n\
             desired = {{ provision = \"active\" }}\n\n[[node.ports]]\naddress = \"{mac}\"\n\n",
            server.url(images.mbr_raw.name()),
            images.mbr_raw.sha256
        );
        sims.push(SimNode {
            node_name: name.clone(),
            bmc_host: name.clone(),
            mac,
            run_root: dir.join("beds").join(&name),
        });
    }
    std::fs::write(dir.join("nodes/bench.toml"), text).unwrap();
    let settings = BedSettings {
        lookup_timeout: Some(Duration::from_secs(90)),
        ..BedSettings::default()
    };
    let boots = RamdiskBoots::watch_with(
        &dir.join("fake-bmc"),
        &format!("http://127.0.0.1:{port}"),
        sims,
        settings,
    );
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_rivet"))
        .arg("reconcile")
        .arg(dir)
        .output()
        .unwrap();
    let wall = started.elapsed();
    assert!(
        out.status.success(),
        "reconcile failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "agent_deploy: {NODES} direct nodes in parallel, `rivet reconcile` {:.2} s wall",
        wall.as_secs_f64()
    );
    let store = Store::open(&dir.join(".rivet/state.redb")).unwrap();
    let history = store.history().unwrap();
    let mut shares = Vec::new();
    println!(
        "{:<4} {:>8} {:>10} {:>10} {:>10}   agent commands (agent's own times)",
        "node", "deploy", "boot", "commands", "rivet"
    );
    for i in 1..=NODES {
        let name = format!("n{i}");
        let events: Vec<&Event> = history.iter().filter(|e| e.node == name).collect();
        let first = |action: &str| {
            events
                .iter()
                .find(|e| e.action == action)
                .copied()
                .unwrap_or_else(|| panic!("{name}: no `{action}` in history"))
        };
        let begun = at(first("deploy"));
        let ended = at(first("deploy done"));
        let boot_ms = events
            .iter()
            .find(|e| e.action == "wait call-back" && e.duration_ms.is_some())
            .and_then(|e| e.duration_ms)
            .unwrap_or(0);
        let bed = boots.last_bed(&name).expect("a ramdisk booted");
        let log = std::fs::read_to_string(&bed.log).unwrap();
        let commands = agent_commands(&log);
        let agent: f64 = commands.iter().map(|(_, s)| s).sum();
        let deploy = ended - begun;
        let boot = boot_ms as f64 / 1000.0;
        let share = deploy - boot - agent;
        shares.push(share);
        let listed: BTreeMap<&str, String> = commands
            .iter()
            .map(|(n, s)| (n.as_str(), format!("{s:.2}")))
            .collect();
        println!("{name:<4} {deploy:>7.2}s {boot:>9.2}s {agent:>9.2}s {share:>9.2}s   {listed:?}");
    }
    let mean = shares.iter().sum::<f64>() / shares.len() as f64;
    let max = shares.iter().copied().fold(f64::MIN, f64::max);
    println!(
        "agent_deploy: rivet's share a node: mean {mean:.2} s, max {max:.2} s (target <= 1 s)"
    );
    drop(boots);
}
