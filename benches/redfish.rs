//! Benchmark: 200 Redfish systems served by one sushy-tools process with its
//! stock power-change delay (applied 1 to 11 s after the request, at
//! random). Each run starts a fresh emulator and times two phases apart:
//! `manage` (verify and inspect, power left off), then powering every
//! system on. The floor of the power phase is measured in the same run: the
//! slowest single node's power-on operation, as its history records it
//! (the phase cannot end before that node's BMC reports on). Three runs:
//! median, min and max.
//!
//! Needs sushy-tools in `.venv` (`scripts/test` installs it). `cargo bench --bench redfish`

#[path = "common/reconcile.rs"]
mod reconcile;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reconcile::timed_reconcile;

const SYSTEMS: usize = 200;
const RUNS: usize = 3;

/// One run's times in seconds: manage, power on, and the power floor.
struct Run {
    manage: f64,
    power: f64,
    floor: f64,
}

fn main() {
    let runs: Vec<Run> = (0..RUNS).map(|_| run()).collect();
    let summary = |what: &str, pick: &dyn Fn(&Run) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(pick).collect();
        v.sort_by(f64::total_cmp);
        println!(
            "{what}: median {:.1} s (min {:.1}, max {:.1})",
            v[v.len() / 2],
            v[0],
            v[v.len() - 1]
        );
    };
    println!("{SYSTEMS} Redfish systems on one sushy-tools process, {RUNS} runs:");
    summary("  manage (verify + inspect)", &|r| r.manage);
    summary("  power on", &|r| r.power);
    summary("  power floor (slowest node's power-on)", &|r| r.floor);
    summary("  power on / floor", &|r| r.power / r.floor);
}

fn run() -> Run {
    let systems = SYSTEMS;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = std::env::var_os("RIVET_SUSHY_VENV")
        .map_or_else(|| root.join(".venv"), std::path::PathBuf::from);
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = format!(
        "SUSHY_EMULATOR_FAKE_DRIVER = True\nSUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\nSUSHY_EMULATOR_LISTEN_PORT = {port}\nSUSHY_EMULATOR_STATE_DIR = {:?}\nSUSHY_EMULATOR_FAKE_SYSTEMS = [\n",
        dir.path().join("state")
    );
    let id = |i: usize| format!("{port:08}-0000-4000-8000-{i:012}");
    for i in 1..=systems {
        config.push_str(&format!(
            " {{'uuid': '{}', 'name': 'node-{i:04}', 'power_state': 'Off', 'nics': [{{'mac': '52:54:00:00:{:02x}:{:02x}', 'ip': '10.0.0.1'}}]}},\n",
            id(i),
            i >> 8,
            i & 255
        ));
    }
    config.push_str("]\n");
    std::fs::write(dir.path().join("config.py"), config).unwrap();
    let mut emulator = Command::new(venv.join("bin/sushy-emulator"))
        .args(["--fake", "--config"])
        .arg(dir.path().join("config.py"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sushy-emulator in .venv");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the emulator did not start");
        std::thread::sleep(Duration::from_millis(100));
    }

    let fleet = dir.path().join("fleet");
    std::fs::create_dir_all(fleet.join("nodes")).unwrap();
    std::fs::write(
        fleet.join("rivet.toml"),
        "[conductor]\nworkers = 256\n\n[hardware]\nenabled_hardware_types = [\"redfish\"]\n",
    )
    .unwrap();
    let declare = |power: &str| {
        let mut nodes = String::new();
        for i in 1..=systems {
            nodes.push_str(&format!(
                "[[node]]\nname = \"rf{i:04}\"\ndriver = \"redfish\"\nbmc = {{ address = \"redfish+http://127.0.0.1:{port}/redfish/v1/Systems/{}\" }}\ndesired = {{ provision = \"manageable\", power = \"{power}\" }}\n\n",
                id(i)
            ));
        }
        std::fs::write(fleet.join("nodes/rf.toml"), nodes).unwrap();
    };
    declare("off");
    let (manage, _) = timed_reconcile(&fleet, &[]);
    declare("on");
    let (power, _) = timed_reconcile(&fleet, &[]);
    let store = rivet::store::Store::open(&fleet.join(".rivet/state.redb")).unwrap();
    let floor_ms = store
        .history()
        .unwrap()
        .iter()
        .filter(|e| {
            e.action == "power on" && e.outcome == rivet::store::records::Outcome::Succeeded
        })
        .filter_map(|e| e.duration_ms)
        .max()
        .expect("power-on operations in the history");
    let _ = emulator.kill();
    let _ = emulator.wait();
    Run {
        manage,
        power,
        floor: floor_ms as f64 / 1000.0,
    }
}
