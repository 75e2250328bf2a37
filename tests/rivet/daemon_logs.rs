//! What `rivet daemon` says at which level: the address of a port the system
//! chose shows at the default level, logs into a pipe carry no colours, and
//! a node entering maintenance is an error.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::daemon_process::DaemonProcess;
use crate::support::TempFleet;

const WAIT: Duration = Duration::from_secs(20);

fn fleet() -> TempFleet {
    TempFleet::new(&[
        (
            "rivet.toml",
            "[conductor]\npower_sync_interval = \"200ms\"\n",
        ),
        (
            "nodes/a.toml",
            "[[node]]\nname = \"n1\"\ndriver = \"fake-hardware\"\ndesired = { provision = \"manageable\", power = \"on\" }\n",
        ),
    ])
}

#[test]
fn a_chosen_port_shows_at_the_default_level_without_colours() {
    let fleet = fleet();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rivet"))
        .args(["daemon", "--http", "127.0.0.1:0"])
        .arg(fleet.path())
        .env_remove("RIVET_LOG")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    let listening = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("HTTP API listening") => break line,
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "no listening line at the default level; saw:\n{}",
                    seen.join("\n")
                );
            }
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(!listening.contains('\u{1b}'), "{listening:?}");
    let port: u16 = listening
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or_else(|| panic!("no address in {listening:?}"));
    assert_ne!(port, 0, "{listening}");
    assert!(seen.iter().all(|l| !l.contains('\u{1b}')), "{seen:?}");
}

#[test]
fn entering_maintenance_is_logged_as_an_error() {
    let fleet = fleet();
    let dir = fleet.path();
    let daemon = DaemonProcess::start(dir, "info", &[], WAIT);
    daemon.wait_for(
        "the first pass",
        |l| l.contains("\"message\":\"converge pass done"),
        WAIT,
    );
    let bmc = dir.join(".rivet/fake-bmc/n1.json");
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&bmc).unwrap()).unwrap();
    doc["unreachable"] = true.into();
    std::fs::write(&bmc, doc.to_string()).unwrap();
    let entered = |l: &str| l.contains("\"message\":\"node entered maintenance\"");
    daemon.wait_for("maintenance", entered, WAIT);
    let line = daemon.logs().into_iter().find(|l| entered(l)).unwrap();
    let record: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(record["level"], "ERROR", "{line}");
}
