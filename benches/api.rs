//! Benchmark of the HTTP API (numbers, not a test): a daemon with 10,000
//! fake nodes already converged, `wrk` on `GET /v1/nodes/{name}` and
//! `GET /v1/nodes?limit=100`, requests per second and p99 latency against
//! the targets (> 30,000 req/s, p99 < 5 ms on 2 cores).
//!
//! Needs `wrk` (Debian: `apt-get install -y wrk`).
//! `cargo bench --bench api`; `WRK_THREADS`, `WRK_CONNECTIONS` and
//! `WRK_SECONDS` tune the load (defaults 1, 16, 10).

#[path = "../tests/common/daemon_process.rs"]
mod daemon_process;
#[path = "common/fleetgen.rs"]
mod fleetgen;

use std::process::Command;
use std::time::{Duration, Instant};

use daemon_process::DaemonProcess;
use rivet::store::records::NodeRecord;
use rivet::store::{Store, Write};
use rivet::vocab::{PowerState, ProvisionState};

const NODES: usize = 10_000;

fn env_or(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Records saying every node is already active and on, so the daemon has
/// nothing to converge and only serves.
fn converged_store(dir: &std::path::Path) {
    let loaded = rivet::model::fleet::load(dir);
    assert!(loaded.is_valid(), "the generated fleet is valid");
    let store = Store::open(&loaded.fleet.conductor.state).unwrap();
    let writes: Vec<Write> = loaded
        .fleet
        .nodes
        .iter()
        .map(|n| {
            let mut record = NodeRecord::enrolled(n.uuid.to_string(), &n.driver);
            record.provision_state = ProvisionState::Active;
            record.power_state = Some(PowerState::On);
            record.interfaces = (&n.interfaces).into();
            record.updated_at = Some("2026-01-01T00:00:00Z".into());
            Write::Node(n.name.clone(), record)
        })
        .collect();
    store.apply(&writes).unwrap();
}

struct Result {
    requests_per_second: f64,
    p99_ms: f64,
}

/// `wrk --latency` output: `Requests/sec:` and the `99%` line.
fn parse_wrk(text: &str) -> Option<Result> {
    let rps = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let p99 = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("99%"))?
        .split_whitespace()
        .nth(1)?;
    let (number, unit) = p99.split_at(p99.find(|c: char| c.is_ascii_alphabetic())?);
    let value: f64 = number.parse().ok()?;
    let ms = match unit {
        "us" => value / 1000.0,
        "ms" => value,
        "s" => value * 1000.0,
        _ => return None,
    };
    Some(Result {
        requests_per_second: rps,
        p99_ms: ms,
    })
}

fn main() {
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("wrk is not installed: apt-get install -y wrk");
        std::process::exit(1);
    }
    let dir = tempfile::tempdir().unwrap();
    fleetgen::write_fleet(
        dir.path(),
        &fleetgen::Shape {
            rollout_groups: 1,
            chain: 0,
            templates: 0,
            fake_latency: Some("0ms"),
            ..fleetgen::Shape::mixed(NODES)
        },
    );
    converged_store(dir.path());

    let started = Instant::now();
    // Request logs (info) are left out: only warnings and the daemon's own lines.
    let daemon = DaemonProcess::start(
        dir.path(),
        "warn,rivet::daemon=info",
        &[],
        Duration::from_secs(120),
    );
    let addr = daemon.http_addr();
    println!(
        "daemon with {NODES} nodes ready in {:.2} s on {addr}",
        started.elapsed().as_secs_f64()
    );
    let rss = std::fs::read_to_string(format!("/proc/{}/status", daemon.child.id()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
        })
        .unwrap_or_default();
    println!("daemon RSS before load: {rss} kB");

    let threads = env_or("WRK_THREADS", 1);
    let connections = env_or("WRK_CONNECTIONS", 16);
    let seconds = env_or("WRK_SECONDS", 10);
    let node = format!("node{:06}", NODES / 2);
    for (what, path) in [
        ("GET /v1/nodes/{name}", format!("/v1/nodes/{node}")),
        ("GET /v1/nodes?limit=100", "/v1/nodes?limit=100".to_string()),
    ] {
        let url = format!("http://{addr}{path}");
        // Warm up: the first read of a node renders and caches its document.
        let warm = Command::new("wrk")
            .args(["-t1", "-c4", "-d1s", &url])
            .output()
            .unwrap();
        assert!(warm.status.success());
        let out = Command::new("wrk")
            .arg(format!("-t{threads}"))
            .arg(format!("-c{connections}"))
            .arg(format!("-d{seconds}s"))
            .arg("--latency")
            .arg(&url)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        match parse_wrk(&text) {
            Some(r) => println!(
                "{what:<26} {:>9.0} req/s  p99 {:>6.2} ms   (target > 30000 req/s, p99 < 5 ms: {})  [wrk -t{threads} -c{connections} -d{seconds}s]",
                r.requests_per_second,
                r.p99_ms,
                if r.requests_per_second > 30_000.0 && r.p99_ms < 5.0 {
                    "met"
                } else {
                    "missed"
                }
            ),
            None => println!("{what}: could not read wrk's output:\n{text}"),
        }
        if text.contains("Non-2xx") {
            println!("  warning: some answers were not 2xx:\n{text}");
        }
    }
    daemon.stop();
}
