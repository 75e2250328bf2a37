//! Benchmark: plan generated fleets of 10,000 and 100,000 nodes (100 files,
//! 10 rollout groups, depends_on chains, 3 deploy templates). Reports load
//! and plan times (median of runs) and the peak RSS of
//! `rivet reconcile --dry-run --format json` as a separate process.
//!
//! `cargo bench --bench plan`

#[path = "common/fleetgen.rs"]
mod fleetgen;
#[path = "common/rss.rs"]
mod rss;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn median(mut times: Vec<Duration>) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1e3
}

fn main() {
    let mut results = Vec::new();
    for nodes in [10_000usize, 100_000] {
        let dir = tempfile::tempdir().unwrap();
        fleetgen::write_fleet(dir.path(), &fleetgen::Shape::mixed(nodes));
        let runs = if nodes > 10_000 { 3 } else { 5 };
        let (mut load_t, mut plan_t) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let start = Instant::now();
            let loaded = rivet::model::fleet::load(dir.path());
            load_t.push(start.elapsed());
            assert!(loaded.is_valid(), "{:?}", loaded.problems.first());
            let start = Instant::now();
            let plan = rivet::plan::build(&loaded.fleet, &BTreeMap::new(), Vec::new()).unwrap();
            plan_t.push(start.elapsed());
            assert_eq!(plan.nodes.len(), nodes);
        }
        let start = Instant::now();
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_rivet"))
            .args(["reconcile", "--dry-run", "--format", "json"])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        let wall = start.elapsed().as_secs_f64() * 1e3;
        assert!(status.success());
        let (load_ms, plan_ms) = (median(load_t), median(plan_t));
        println!(
            "{nodes:>6} nodes: load {load_ms:.1} ms + plan {plan_ms:.1} ms = {:.1} ms; `rivet reconcile --dry-run --format json` {wall:.1} ms wall, peak RSS {:.1} MB",
            load_ms + plan_ms,
            rss::peak_child_rss_kb() as f64 / 1024.0
        );
        results.push((nodes, load_ms + plan_ms));
    }
    println!(
        "growth 10k -> 100k: {:.1}x (linear would be 10x)",
        results[1].1 / results[0].1
    );
}
