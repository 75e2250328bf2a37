//! Benchmark: validate a generated fleet of 10,000 nodes in 100 files.
//! Reports the in-process load time (median of several runs) and the peak
//! RSS of `rivet validate` run as a separate process.
//!
//! `cargo bench --bench validate [-- NODES]`

#[path = "common/fleetgen.rs"]
mod fleetgen;
#[path = "common/rss.rs"]
mod rss;

use std::time::{Duration, Instant};

fn main() {
    let nodes: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().unwrap();
    fleetgen::write_fleet(dir.path(), &fleetgen::Shape::mixed(nodes));

    let mut times: Vec<Duration> = Vec::new();
    for _ in 0..7 {
        let start = Instant::now();
        let loaded = rivet::model::fleet::load(dir.path());
        times.push(start.elapsed());
        assert!(loaded.is_valid(), "{:?}", loaded.problems.first());
        assert_eq!(loaded.fleet.nodes.len(), nodes);
    }
    times.sort();
    println!(
        "validate {nodes} nodes / 100 files: median {:.1} ms (min {:.1} ms, max {:.1} ms)",
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    );

    let start = Instant::now();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_rivet"))
        .arg("validate")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    let wall = start.elapsed();
    assert!(status.success());
    println!(
        "`rivet validate` process: {:.1} ms wall, peak RSS {:.1} MB",
        wall.as_secs_f64() * 1e3,
        rss::peak_child_rss_kb() as f64 / 1024.0
    );
}
