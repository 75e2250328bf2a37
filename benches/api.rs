//! Benchmark of the HTTP API (numbers, not a test): a daemon with 10,000
//! fake nodes already converged, each with a resource class and a port,
//! `wrk` on `GET /v1/nodes/{name}`, `GET /v1/nodes?limit=100`, the filtered
//! `GET /v1/nodes?limit=100&resource_class=X` and
//! `GET /v1/ports/detail?address=MAC`, requests per second and p99 latency
//! against the targets (> 30,000 req/s for the node reads, > 20,000 for the
//! filtered ones; p99 < 5 ms on 2 cores).
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

/// Resource classes the nodes are spread over.
const RESOURCE_CLASSES: usize = 4;

/// The MAC of node `i`'s one port.
fn mac(i: usize) -> String {
    format!(
        "52:54:00:{:02x}:{:02x}:{:02x}",
        i >> 16 & 255,
        i >> 8 & 255,
        i & 255
    )
}

/// Give every generated node a resource class and a port, after its name.
fn declare_classes_and_ports(dir: &std::path::Path) {
    for file in std::fs::read_dir(dir.join("nodes")).unwrap() {
        let path = file.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut out = String::with_capacity(text.len() * 2);
        for line in text.lines() {
            out.push_str(line);
            out.push('\n');
            if let Some(i) = line
                .strip_prefix("name = \"node")
                .and_then(|rest| rest.trim_end_matches('"').parse::<usize>().ok())
            {
                out.push_str(&format!(
                    "resource_class = \"rc-{}\"\nports = [{{ address = \"{}\" }}]\n",
                    i % RESOURCE_CLASSES,
                    mac(i)
                ));
            }
        }
        std::fs::write(&path, out).unwrap();
    }
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

/// One plain HTTP/1.0 GET, to see that a measured path answers something.
fn fetch(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
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
    declare_classes_and_ports(dir.path());
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
    for (what, path, target) in [
        (
            "GET /v1/nodes/{name}",
            format!("/v1/nodes/{node}"),
            30_000.0,
        ),
        (
            "GET /v1/nodes?limit=100",
            "/v1/nodes?limit=100".to_string(),
            30_000.0,
        ),
        (
            "GET /v1/nodes?limit=100&resource_class=X",
            "/v1/nodes?limit=100&resource_class=rc-2".to_string(),
            20_000.0,
        ),
        (
            "GET /v1/ports/detail?address=MAC",
            format!("/v1/ports/detail?address={}", mac(NODES / 3)),
            20_000.0,
        ),
    ] {
        let url = format!("http://{addr}{path}");
        let body = fetch(&addr, &path);
        assert!(
            body.contains("\"uuid\""),
            "{what} answers nothing to measure: {body}"
        );
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
                "{what:<42} {:>9.0} req/s  p99 {:>6.2} ms   (target > {target} req/s, p99 < 5 ms: {})  [wrk -t{threads} -c{connections} -d{seconds}s]",
                r.requests_per_second,
                r.p99_ms,
                if r.requests_per_second > target && r.p99_ms < 5.0 {
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
