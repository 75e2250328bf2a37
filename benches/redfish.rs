//! Benchmark: power on 200 Redfish systems served by one sushy-tools process
//! with its stock power-change delay (applied 1 to 11 s after the request,
//! at random), and compare with that floor: the slowest single change.
//!
//! Needs sushy-tools in `.venv` (`scripts/test` installs it). `cargo bench --bench redfish`

#[path = "common/reconcile.rs"]
mod reconcile;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reconcile::timed_reconcile;

fn main() {
    let systems = 200;
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
    let mut nodes = String::new();
    for i in 1..=systems {
        nodes.push_str(&format!(
            "[[node]]\nname = \"rf{i:04}\"\ndriver = \"redfish\"\nbmc = {{ address = \"redfish+http://127.0.0.1:{port}/redfish/v1/Systems/{}\" }}\ndesired = {{ provision = \"manageable\", power = \"on\" }}\n\n",
            id(i)
        ));
    }
    std::fs::write(fleet.join("nodes/rf.toml"), nodes).unwrap();
    let (wall, _) = timed_reconcile(&fleet, &[]);
    println!(
        "power on {systems} Redfish systems on one sushy-tools process: {wall:.1} s; floor (the emulator's slowest apply delay) 11 s; ratio {:.2}",
        wall / 11.0
    );
    let _ = emulator.kill();
    let _ = emulator.wait();
}
