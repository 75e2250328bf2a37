//! Benchmark of the ipmitool driver (numbers, not a test): `rivet reconcile`
//! powering on 20 ipmi_sim BMCs, against the floor of one `power on` and one
//! `power status` per BMC, one after the other on each BMC (the minimum
//! command interval apart) and all BMCs at once.
//!
//! `cargo bench --bench ipmi`

// The tests' bed of BMCs; the benchmark needs only part of it.
#[allow(dead_code)]
#[path = "../tests/rivet/ipmi_bed.rs"]
mod ipmi_bed;
#[path = "common/reconcile.rs"]
mod reconcile;

/// What the test bed needs of the test support module.
mod support {
    pub fn root() -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    /// A benchmark never skips its emulator.
    pub fn skip_emulator_test(_: &str) -> bool {
        false
    }
}

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use ipmi_bed::IpmiBed;
use reconcile::timed_reconcile;

const BMCS: usize = 20;
const ROUNDS: usize = 3;
const GAP: Duration = Duration::from_millis(100);

fn fleet(dir: &Path, bed: &IpmiBed, power: &str) {
    let mut nodes = String::new();
    for i in 0..BMCS {
        nodes.push_str(&format!(
            "[[node]]\nname = \"bmc{i:02}\"\ndriver = \"ipmi\"\n{}\ndesired = {{ provision = \"manageable\", power = \"{power}\" }}\n\n",
            bed.bmc_decl(i, r#"password_env = "SIM_BMC_PASSWORD""#)
        ));
    }
    std::fs::create_dir_all(dir.join("nodes")).unwrap();
    std::fs::write(
        dir.join("rivet.toml"),
        format!(
            "[conductor]\nworkers = 64\nipmi_min_command_interval = \"{}ms\"\n\n[hardware]\nenabled_hardware_types = [\"ipmi\"]\n",
            GAP.as_millis()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("nodes/bmcs.toml"), nodes).unwrap();
}

fn reconcile(dir: &Path, bed: &IpmiBed) -> (f64, Output) {
    timed_reconcile(dir, &[("SIM_BMC_PASSWORD", &bed.password)])
}

/// ipmitool run by hand the way rivet runs it: `power on`, the gap, `power
/// status`, on every BMC at once.
fn floor(bed: &IpmiBed) -> f64 {
    let options = ["-L", "ADMINISTRATOR", "-R", "1", "-N", "5", "-v"];
    let start = Instant::now();
    std::thread::scope(|scope| {
        for i in 0..BMCS {
            scope.spawn(move || {
                let on = bed.ipmitool(i, &[&options[..], &["power", "on"]].concat());
                assert!(on.status.success());
                std::thread::sleep(GAP);
                let status = bed.ipmitool(i, &[&options[..], &["power", "status"]].concat());
                assert!(String::from_utf8_lossy(&status.stdout).contains("is on"));
            });
        }
    });
    start.elapsed().as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let Some(bed) = IpmiBed::start("ipmi bench", BMCS) else {
        return;
    };
    let mut floors = Vec::new();
    let mut walls = Vec::new();
    let mut idle = Vec::new();
    for _ in 0..ROUNDS {
        for bmc in &bed.bmcs {
            bmc.set_power(false);
        }
        floors.push(floor(&bed));

        for bmc in &bed.bmcs {
            bmc.set_power(false);
        }
        let dir = tempfile::tempdir().unwrap();
        // Enroll (manage, verify) with power off declared, then time the
        // power-on converge alone.
        fleet(dir.path(), &bed, "off");
        reconcile(dir.path(), &bed);
        fleet(dir.path(), &bed, "on");
        let (wall, _) = reconcile(dir.path(), &bed);
        assert!(bed.bmcs.iter().all(|b| b.power_on()));
        walls.push(wall);
        // A run with nothing to do: process start, load, plan.
        let (wall, out) = reconcile(dir.path(), &bed);
        assert!(String::from_utf8_lossy(&out.stdout).contains("Nothing to do"));
        idle.push(wall);
    }
    let (floor, wall, idle) = (median(floors), median(walls), median(idle));
    println!(
        "power on {BMCS} ipmi_sim BMCs with rivet reconcile ({}ms between commands to a BMC; median of {ROUNDS}): {wall:.2} s",
        GAP.as_millis()
    );
    println!(
        "  floor (power on, {}ms, power status; all BMCs at once): {floor:.2} s; ratio {:.2}",
        GAP.as_millis(),
        wall / floor
    );
    println!("  rivet reconcile with nothing to do: {idle:.2} s");
}
