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
//!    without `[cluster]` on the same fleet (target ≥ 2.5× faster when BMC
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
            |l| l.contains("converging node") && l.contains(&format!("\"node\":\"{node}\"")),
            killed,
        )
    };
    let last = bed.wait_until("every orphan resumes", Duration::from_secs(60), || {
        orphans
            .iter()
            .all(|n| resumed_at(&h1, n).is_some() || resumed_at(&h3, n).is_some())
    });
    let last_resume = orphans
        .iter()
        .filter_map(|n| resumed_at(&h1, n).or_else(|| resumed_at(&h3, n)))
        .max()
        .unwrap_or(last);
    bed.wait_until("every node is active", Duration::from_secs(600), || {
        all_active(&bed, &h1, nodes)
    });
    let converged = started.elapsed();
    println!(
        "takeover: {} orphans with unfinished runs; kill -9 → last resumed {:.2} s (target ≤ TTL + 1 s = {:.1} s); whole converge {:.1} s",
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
    println!(
        "traffic: {ops_total:.0} operations journalled by the two survivors, {batches_total:.0} journal batches, {txns:.0} txns in all (claims and handovers included): {:.3} txns per operation, {:.2} per batch",
        txns / ops_total.max(1.0),
        txns / batches_total.max(1.0)
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

fn converge_time(bed: &ClusterBed, daemons: &[&str], nodes: usize) -> Duration {
    let started = Instant::now();
    let running: Vec<DaemonProcess> = daemons.iter().map(|h| bed.start(h)).collect();
    bed.wait_until("every node is active", Duration::from_secs(900), || {
        all_active(bed, &running[0], nodes)
    });
    let took = started.elapsed();
    for d in running {
        d.stop();
    }
    took
}

fn speedup(nodes: usize) {
    let etcd = EtcdServer::start();
    let clustered = bed(&etcd, nodes);
    let three = converge_time(&clustered, &["h1", "h2", "h3"], nodes);
    let single = bed(&etcd, nodes);
    // The same fleet without `[cluster]`.
    let toml = single.dir().join("rivet.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, text.split("[cluster]").next().unwrap()).unwrap();
    let one = converge_time(&single, &["solo"], nodes);
    println!(
        "speedup: {nodes} nodes at 100 ms: one daemon {:.1} s, three {:.1} s: {:.2}× (target ≥ 2.5×)",
        one.as_secs_f64(),
        three.as_secs_f64(),
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
        speedup(nodes);
    }
}
