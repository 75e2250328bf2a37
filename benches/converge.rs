//! Benchmarks of the converge engine and the daemon (numbers, not tests):
//!
//! 1. converge 1,000 fake nodes with 200 ms per BMC call and 64 workers,
//!    against the lower bound max(total BMC time / workers, longest chain);
//! 2. the converge engine's own cost: 1,000 and 10,000 fake nodes with no
//!    BMC latency, so 10 times the nodes should cost about 10 times as much;
//! 3. one power-sync sweep over 10,000 fake nodes at 50 ms per call;
//! 4. the daemon's memory with 10,000 nodes, converged and idle;
//! 5. edit-to-first-action latency of the daemon.
//!
//! `cargo bench --bench converge [-- converge|scaling|sweep|rss|latency]`;
//! `-- scaling 1000` runs the scaling case at that size only.

#[path = "../tests/common/daemon_process.rs"]
mod daemon_process;
#[path = "common/fleetgen.rs"]
mod fleetgen;
#[path = "common/reconcile.rs"]
mod reconcile;
#[path = "common/rss.rs"]
mod rss;

use std::path::Path;

use daemon_process::DaemonProcess;
use reconcile::timed_reconcile;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rivet::store::records::NodeRecord;
use rivet::store::{Store, Write};

fn fleet(dir: &Path, nodes: usize, chain: usize, latency: &'static str) {
    fleetgen::write_fleet(
        dir,
        &fleetgen::Shape {
            chain,
            templates: 0,
            fake_latency: Some(latency),
            ..fleetgen::Shape::mixed(nodes)
        },
    );
}

fn converge_1000() {
    let dir = tempfile::tempdir().unwrap();
    let chain = 20;
    fleet(dir.path(), 1000, chain, "200ms");
    let (wall, _) = timed_reconcile(dir.path(), &[]);
    // The BMC calls a node made, counted from the history rather than assumed
    // (verify, inspect, power off, deploy.deploy, power on for these nodes).
    let state = rivet::model::fleet::load(dir.path()).fleet.conductor.state;
    let calls = rivet::store::read_history(&state, Some("node000000"), 1000)
        .unwrap()
        .iter()
        .filter(|e| {
            e.protocol.as_deref() == Some("fake")
                && e.outcome == rivet::store::records::Outcome::Succeeded
        })
        .count() as f64;
    let per_node = calls * 0.2;
    let bound = (1000.0 * per_node / 64.0).max(chain as f64 * per_node);
    println!(
        "converge 1000 fake nodes (200 ms/BMC call, {calls} calls a node, 64 workers, chains of {chain}): {wall:.2} s; lower bound {bound:.2} s; ratio {:.2}",
        wall / bound
    );
}

/// Fresh runs of each size in the scaling case.
const SCALING_RUNS: usize = 3;

/// Median, min and max, as text.
fn spread(samples: &mut [f64]) -> (f64, String) {
    samples.sort_by(f64::total_cmp);
    let median = samples[samples.len() / 2];
    let text = format!(
        "{median:.2} s (min {:.2}, max {:.2})",
        samples[0],
        samples[samples.len() - 1]
    );
    (median, text)
}

fn converge_scaling(sizes: &[usize]) {
    // Every fleet is kept until the end: ext4 without a journal skips the
    // inodes freed in the last minutes when it creates a file, so deleting
    // one run's fake BMC files would slow the file creation of the next.
    let mut fleets = Vec::new();
    let mut medians = Vec::new();
    for &nodes in sizes {
        let (mut walls, mut users, mut systems) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..SCALING_RUNS {
            let dir = tempfile::tempdir().unwrap();
            fleet(dir.path(), nodes, 20, "0ms");
            let (user, system) = rss::children_cpu_seconds();
            let (wall, _) = timed_reconcile(dir.path(), &[]);
            let (user_after, system_after) = rss::children_cpu_seconds();
            walls.push(wall);
            users.push(user_after - user);
            systems.push(system_after - system);
            fleets.push(dir);
        }
        let (wall, wall_text) = spread(&mut walls);
        let (user, user_text) = spread(&mut users);
        let (system, system_text) = spread(&mut systems);
        println!(
            "converge {nodes} fake nodes (no BMC latency, 64 workers, chains of 20), median of {SCALING_RUNS}: wall {wall_text}; CPU user {user_text}, system {system_text}"
        );
        medians.push([wall, user, system]);
    }
    if medians.len() != 2 {
        return;
    }
    let ratio = |i: usize| medians[1][i] / medians[0][i];
    println!(
        "converge 10000 vs 1000 nodes (medians; linear is 10x): wall {:.1}x, CPU user {:.1}x, system {:.1}x",
        ratio(0),
        ratio(1),
        ratio(2)
    );
}

fn sweep_10000() {
    let dir = tempfile::tempdir().unwrap();
    fleet(dir.path(), 10_000, 0, "50ms");
    let loaded = rivet::model::fleet::load(dir.path());
    assert!(loaded.is_valid());
    let fleet = Arc::new(loaded.fleet);
    let store = Arc::new(Store::open(&fleet.conductor.state).unwrap());
    let writes: Vec<Write> = fleet
        .nodes
        .iter()
        .map(|n| {
            Write::Node(
                n.name.clone(),
                NodeRecord::enrolled(n.uuid.to_string(), &n.driver),
            )
        })
        .collect();
    store.apply(&writes).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let journal = rivet::reconcile::journal::Journal::start(Arc::clone(&store));
    let workers = fleet.conductor.power_sync_workers as usize;
    let floor = 10_000.0 * 0.05 / workers as f64;
    // First sweep: every BMC is off while on is declared, so every node's
    // drift is enforced. Second sweep: all in sync, reads only.
    for what in ["enforcing drift on every node", "all in sync"] {
        let ctx = rivet::conductor::context::context(Arc::clone(&fleet), journal.clone());
        let start = Instant::now();
        let report = runtime.block_on(rivet::reconcile::power_sync::sweep(
            ctx,
            Arc::clone(&fleet),
            workers,
        ));
        let wall = start.elapsed().as_secs_f64();
        assert_eq!(report.read, 10_000);
        println!(
            "power-sync sweep of 10000 fake nodes ({what}; 50 ms/call, {workers} at once): {wall:.2} s (floor {floor:.2} s per round of calls)"
        );
    }
}

/// A process's resident memory now and at its peak.
fn memory(pid: u32) -> String {
    format!(
        "RSS {:.1} MB (peak {:.1} MB)",
        rss_kb(pid, "VmRSS:") as f64 / 1024.0,
        rss_kb(pid, "VmHWM:") as f64 / 1024.0
    )
}

fn rss_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn message(text: &'static str) -> impl Fn(&str) -> bool {
    move |l: &str| l.contains(&format!("\"message\":\"{text}\""))
}

fn daemon_rss_10000() {
    let dir = tempfile::tempdir().unwrap();
    fleet(dir.path(), 10_000, 0, "0ms");
    let start = Instant::now();
    let daemon = DaemonProcess::start(dir.path(), "info", &[], Duration::from_secs(120));
    daemon.wait_for(
        "the first converge",
        message("converge pass done"),
        Duration::from_secs(600),
    );
    let converge = start.elapsed().as_secs_f64();
    // Idle: nothing is pending; the reading waits for memory handed back.
    settle(daemon.child.id());
    println!(
        "daemon with 10000 nodes: first converge {converge:.1} s; idle {}",
        memory(daemon.child.id())
    );
    daemon.stop();
    // The steady state: a daemon started on the converged fleet.
    let daemon = DaemonProcess::start(dir.path(), "info", &[], Duration::from_secs(120));
    settle(daemon.child.id());
    println!(
        "daemon with 10000 converged nodes, restarted and idle: {}",
        memory(daemon.child.id())
    );
    daemon.stop();
    // For profiling the same fleet by hand (heaptrack, /proc/PID/smaps).
    if std::env::var_os("RIVET_BENCH_KEEP").is_some() {
        println!("fleet kept in {}", dir.keep().display());
    }
}

/// Wait until a process's resident memory has settled: ten readings 100 ms
/// apart that differ by less than 1 % (30 s at most, then say so).
fn settle(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut readings: Vec<u64> = Vec::new();
    loop {
        readings.push(rss_kb(pid, "VmRSS:"));
        let last = &readings[readings.len().saturating_sub(10)..];
        let (lo, hi) = (last.iter().min().unwrap(), last.iter().max().unwrap());
        if last.len() == 10 && (hi - lo) * 100 < *hi {
            return;
        }
        if Instant::now() > deadline {
            println!("(memory had not settled after 30 s: {last:?} kB)");
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn edit_latency() {
    let dir = tempfile::tempdir().unwrap();
    fleet(dir.path(), 100, 0, "0ms");
    let daemon = DaemonProcess::start(dir.path(), "info", &[], Duration::from_secs(120));
    let passes = message("converge pass done");
    let acted = message("operation done");
    daemon.wait_for("the first converge", &passes, Duration::from_secs(120));
    let mut samples = Vec::new();
    for i in 0..10 {
        let file = dir.path().join("nodes/rack000.toml");
        let text = std::fs::read_to_string(&file).unwrap();
        let (from, to) = if i % 2 == 0 {
            ("power = \"on\"", "power = \"off\"")
        } else {
            ("power = \"off\"", "power = \"on\"")
        };
        let edited = text.replacen(from, to, 1);
        let (done, ops) = (daemon.count(&passes), daemon.count(&acted));
        let written = Instant::now();
        std::fs::write(&file, edited).unwrap();
        let at = daemon.wait_for_more("an operation", ops, &acted, Duration::from_secs(30));
        samples.push(at.duration_since(written));
        daemon.wait_for_more("the pass", done, &passes, Duration::from_secs(30));
    }
    samples.sort();
    println!(
        "edit-to-first-action latency over {} edits: median {:.0} ms, max {:.0} ms (includes the ~100 ms debounce)",
        samples.len(),
        samples[samples.len() / 2].as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3
    );
    daemon.stop();
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (sizes, which): (Vec<&String>, Vec<&String>) =
        args.iter().partition(|a| a.parse::<usize>().is_ok());
    let sizes: Vec<usize> = match sizes.as_slice() {
        [] => vec![1000, 10_000],
        some => some.iter().map(|s| s.parse().expect("a size")).collect(),
    };
    let run = |name: &str| which.is_empty() || which.iter().any(|w| *w == name);
    if run("converge") {
        converge_1000();
    }
    if run("scaling") {
        converge_scaling(&sizes);
    }
    if run("sweep") {
        sweep_10000();
    }
    if run("rss") {
        daemon_rss_10000();
    }
    if run("latency") {
        edit_latency();
    }
}
