//! Benchmarks of a cluster of daemons on one etcd (numbers, not tests):
//!
//! 1. `takeover`: 3 daemons, 3,000 fake nodes at 100 ms per call, TTL 3 s;
//!    kill -9 one while the fleet deploys: the time from the kill until the
//!    last of its nodes with a run to resume starts again on its new owner
//!    (target ≤ TTL + 1 s), and until every node is active;
//! 2. `traffic`: etcd requests per journalled operation over that converge
//!    (target ≤ one txn per batch, far below one per operation), and the
//!    requests of the idle, converged cluster over 10 s (target:
//!    keepalives only);
//! 3. `speedup`: the converge wall time of 3 daemons against one daemon
//!    without `[cluster]` on the same fleet, at 100 ms and at 500 ms per
//!    call, with the machine's CPU use (target ≥ 2.5× faster when BMC
//!    latency dominates).
//!
//! `cargo bench --bench cluster [-- takeover|speedup] [NODES]`

#[path = "../tests/common/cluster_bed.rs"]
mod cluster_bed;
#[path = "../tests/common/daemon_process.rs"]
mod daemon_process;
#[path = "../tests/common/etcd_server.rs"]
mod etcd_server;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use cluster_bed::{ClusterBed, Fleet};
use daemon_process::DaemonProcess;
use etcd_server::EtcdServer;

const TTL: &str = "3s";

fn bed(etcd: &EtcdServer, nodes: usize) -> ClusterBed {
    ClusterBed::new(&Fleet {
        nodes,
        latency: "100ms",
        chain: 1,
        ttl: TTL,
        etcd: &etcd.url,
        conductor: "",
    })
}

/// The sum over daemons of a `/metrics` counter, by label value.
fn metric(bed: &ClusterBed, daemons: &[&DaemonProcess], name: &str) -> BTreeMap<String, f64> {
    let mut sum = BTreeMap::new();
    for d in daemons {
        let url = format!("http://{}/metrics", d.http_addr());
        let text = reqwest::blocking::get(&url).unwrap().text().unwrap();
        for line in text.lines().filter(|l| l.starts_with(name)) {
            let (key, value) = line.rsplit_once(' ').unwrap();
            let label = key
                .split_once('"')
                .map(|(_, rest)| rest.trim_end_matches("\"}").to_string())
                .unwrap_or_default();
            if key != name && !key.starts_with(&format!("{name}{{")) {
                continue;
            }
            *sum.entry(label).or_default() += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    let _ = bed;
    sum
}

fn all_active(bed: &ClusterBed, d: &DaemonProcess, nodes: usize) -> bool {
    let listed = bed.nodes(d);
    listed.len() == nodes && listed.values().all(|(s, _)| s == "active")
}

fn takeover(nodes: usize) {
    let etcd = EtcdServer::start();
    let bed = bed(&etcd, nodes);
    let started = Instant::now();
    let h1 = bed.start("h1");
    let mut h2 = bed.start("h2");
    let h3 = bed.start("h3");
    bed.wait_until(
        "every node is claimed and some deploy",
        Duration::from_secs(120),
        || {
            let listed = bed.nodes(&h1);
            listed.len() == nodes
                && listed.values().all(|(_, c)| c.is_some())
                && listed.values().filter(|(s, _)| s == "active").count() > nodes / 10
        },
    );
    let orphans: BTreeSet<String> = bed
        .nodes(&h1)
        .into_iter()
        .filter(|(_, (s, c))| c.as_deref() == Some("h2") && s != "active")
        .map(|(n, _)| n)
        .collect();
    let killed = Instant::now();
    h2.child.kill().unwrap();
    h2.child.wait().unwrap();
    // The new owners log each node's run starting again.
    let resumed_at = |d: &DaemonProcess, node: &str| {
        d.first_at(
            |l| {
                l.contains("converging node")
                    && l.contains("\"resumed\":true")
                    && l.contains(&format!("\"node\":\"{node}\""))
            },
            killed,
        )
    };
    bed.wait_every(
        "every node is active",
        Duration::from_secs(600),
        Duration::from_millis(500),
        || all_active(&bed, &h1, nodes),
    );
    let converged = started.elapsed();
    // The orphans whose runs were in flight resume on their new owners at
    // the journalled operation.
    let resumed: Vec<Instant> = orphans
        .iter()
        .filter_map(|n| resumed_at(&h1, n).or_else(|| resumed_at(&h3, n)))
        .collect();
    let last_resume = resumed.iter().max().copied().unwrap_or(killed);
    println!(
        "takeover: {} runs in flight resumed on the new owners ({} orphans not yet active at the kill); kill -9 → last run resumed {:.2} s (target ≤ TTL + 1 s = {:.1} s); whole converge {:.1} s",
        resumed.len(),
        orphans.len(),
        (last_resume - killed).as_secs_f64(),
        bed.ttl.as_secs_f64() + 1.0,
        converged.as_secs_f64()
    );

    let live = [&h1, &h3];
    let requests = metric(&bed, &live, "rivet_cluster_etcd_requests_total");
    let batches = metric(&bed, &live, "rivet_cluster_journal_batches_total");
    let ops = metric(&bed, &live, "rivet_operations_total");
    let ops_total: f64 = ops.values().sum();
    let txns = requests.get("txn").copied().unwrap_or(0.0);
    let batches_total: f64 = batches.values().sum();
    let claims: f64 = metric(&bed, &live, "rivet_cluster_claims_total")
        .values()
        .sum();
    let handovers: f64 = metric(&bed, &live, "rivet_cluster_handovers_total")
        .values()
        .sum();
    let journal_txns = txns - claims - handovers;
    println!(
        "traffic: {ops_total:.0} operations journalled by the two survivors in {batches_total:.0} journal batches; {txns:.0} txns in all = {claims:.0} claims + {handovers:.0} handovers + {journal_txns:.0} journal txns: {:.3} journal txns per operation, {:.2} per batch (one per 40 nodes of a batch)",
        journal_txns / ops_total.max(1.0),
        journal_txns / batches_total.max(1.0)
    );
    let before = metric(&bed, &live, "rivet_cluster_etcd_requests_total");
    std::thread::sleep(Duration::from_secs(10));
    let after = metric(&bed, &live, "rivet_cluster_etcd_requests_total");
    let idle: BTreeMap<&String, f64> = after
        .iter()
        .map(|(k, v)| (k, v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d > 0.0)
        .collect();
    println!("traffic: idle cluster over 10 s, requests by kind: {idle:?}");
    h1.stop();
    h3.stop();
}

/// (busy, total) CPU jiffies of the whole machine, from /proc/stat.
fn cpu() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// The wall time of converging `bed` with `daemons`, and the share of the
/// machine's CPU in use meanwhile.
fn converge_time(bed: &ClusterBed, daemons: &[&str], nodes: usize) -> (Duration, f64) {
    let (busy0, total0) = cpu();
    let started = Instant::now();
    let running: Vec<DaemonProcess> = daemons.iter().map(|h| bed.start(h)).collect();
    bed.wait_every(
        "every node is active",
        Duration::from_secs(900),
        Duration::from_millis(500),
        || all_active(bed, &running[0], nodes),
    );
    let took = started.elapsed();
    let (busy1, total1) = cpu();
    for d in running {
        d.stop();
    }
    (
        took,
        (busy1 - busy0) as f64 / (total1 - total0).max(1) as f64,
    )
}

fn speedup(nodes: usize, latency: &str) {
    let etcd = EtcdServer::start();
    let with = |cluster: bool| {
        let bed = ClusterBed::new(&Fleet {
            nodes,
            latency,
            chain: 1,
            ttl: TTL,
            etcd: &etcd.url,
            conductor: "",
        });
        if !cluster {
            // The same fleet without `[cluster]`.
            let toml = bed.dir().join("rivet.toml");
            let text = std::fs::read_to_string(&toml).unwrap();
            std::fs::write(&toml, text.split("[cluster]").next().unwrap()).unwrap();
        }
        bed
    };
    let (three, cpu3) = converge_time(&with(true), &["h1", "h2", "h3"], nodes);
    let (one, cpu1) = converge_time(&with(false), &["solo"], nodes);
    println!(
        "speedup: {nodes} nodes at {latency}: one daemon {:.1} s (CPU {:.0}% busy), three {:.1} s (CPU {:.0}% busy): {:.2}× (target ≥ 2.5× when BMC latency dominates)",
        one.as_secs_f64(),
        cpu1 * 100.0,
        three.as_secs_f64(),
        cpu3 * 100.0,
        one.as_secs_f64() / three.as_secs_f64()
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let nodes = args
        .iter()
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(3000);
    let only = args.iter().find(|a| a.parse::<usize>().is_err());
    if only.is_none_or(|o| o == "takeover") {
        takeover(nodes);
    }
    if only.is_none_or(|o| o == "speedup") {
        // At 100 ms the converge of 3,000 nodes is bound by this machine's
        // CPU; at 500 ms the BMCs' latency dominates.
        speedup(nodes, "100ms");
        speedup(nodes, "500ms");
    }
}
