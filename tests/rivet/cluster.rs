//! Several daemons, one fleet, on a real etcd: takeover after kill -9 and
//! after SIGSTOP, a member joining, one API from any daemon, and an etcd
//! outage. The fake BMCs live in one directory shared by every daemon and
//! log each mutating call with the caller's host and fencing token, so
//! "never two conductors at once" is read from the hardware's side.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::call_log::check_call_log;
use crate::cluster_bed::{ClusterBed, Fleet, calls, unix_ns};
use crate::daemon_process::DaemonProcess;
use crate::etcd_server::EtcdServer;
use crate::support::skip_emulator_test;

const TTL: &str = "3s";
const NODES: usize = 300;

fn fleet(etcd: &EtcdServer) -> ClusterBed {
    ClusterBed::new(&Fleet {
        nodes: NODES,
        latency: "100ms",
        chain: 3,
        ttl: TTL,
        etcd: &etcd.url,
        conductor: "",
    })
}

/// Three daemons on the fleet, once every node is claimed and some deploy.
fn three_deploying(etcd: &EtcdServer) -> (ClusterBed, [DaemonProcess; 3]) {
    let bed = fleet(etcd);
    let daemons = [bed.start("h1"), bed.start("h2"), bed.start("h3")];
    bed.wait_until(
        "every node is claimed and some deploy",
        Duration::from_secs(60),
        || claimed_and_deploying(&bed, &daemons[0], &["h1", "h2", "h3"]),
    );
    (bed, daemons)
}

fn hosts_of(bed: &ClusterBed, daemon: &DaemonProcess) -> BTreeMap<String, usize> {
    let mut per = BTreeMap::new();
    for (_, (_, conductor)) in bed.nodes(daemon) {
        *per.entry(conductor.unwrap_or_default()).or_default() += 1;
    }
    per
}

/// Every node has a conductor among `hosts` and some are deploying.
fn claimed_and_deploying(bed: &ClusterBed, daemon: &DaemonProcess, hosts: &[&str]) -> bool {
    let nodes = bed.nodes(daemon);
    nodes.len() == NODES
        && nodes
            .values()
            .all(|(_, c)| c.as_deref().is_some_and(|c| hosts.contains(&c)))
        && nodes.values().any(|(state, _)| state == "deploying")
}

fn all_active(bed: &ClusterBed, daemon: &DaemonProcess) -> bool {
    let nodes = bed.nodes(daemon);
    nodes.len() == NODES && nodes.values().all(|(state, _)| state == "active")
}

/// No (node, run, operation) succeeded twice across the hosts' state files.
fn no_operation_completed_twice(bed: &ClusterBed, hosts: &[&str]) {
    let mut seen: BTreeMap<(String, u64, usize), &str> = BTreeMap::new();
    let mut succeeded = 0;
    for host in hosts {
        // A killed daemon's file is repaired by opening it.
        let events = rivet::store::Store::open(&bed.state(host))
            .and_then(|store| store.history())
            .unwrap_or_else(|e| panic!("history of {host}: {e}"));
        for e in events {
            if e.outcome != rivet::store::records::Outcome::Succeeded {
                continue;
            }
            let (Some(run), Some(op)) = (e.run_id, e.op_index) else {
                continue;
            };
            succeeded += 1;
            if let Some(other) = seen.insert((e.node.clone(), run, op), host) {
                panic!(
                    "operation {op} of run {run} of {} completed on {other} and again on {host}",
                    e.node
                );
            }
        }
    }
    assert!(succeeded >= NODES, "only {succeeded} operations recorded");
}

#[test]
fn a_killed_daemons_nodes_are_taken_over_and_resume_with_never_two_conductors_at_once() {
    if skip_emulator_test("a cluster test on etcd") {
        return;
    }
    let etcd = EtcdServer::start();
    let (bed, [h1, h2, h3]) = three_deploying(&etcd);
    // Kill it with a run in flight (a node of its deploying: its run takes
    // three calls of 100 ms, the kill follows in a few milliseconds).
    bed.wait_until("h2 deploys a node", Duration::from_secs(30), || {
        bed.nodes(&h1)
            .values()
            .any(|(state, c)| state == "deploying" && c.as_deref() == Some("h2"))
    });
    let killed = Instant::now();
    let mut h2 = h2;
    h2.child.kill().unwrap();
    h2.child.wait().unwrap();
    // Until they are claimed, the records still name their owner.
    let per = hosts_of(&bed, &h1);
    assert!(
        per.get("h2").copied().unwrap_or(0) >= 50,
        "h2 owns too few: {per:?}"
    );
    let orphans: BTreeSet<String> = bed
        .nodes(&h1)
        .into_iter()
        .filter(|(_, (_, c))| c.as_deref() == Some("h2"))
        .map(|(n, _)| n)
        .collect();
    let taken = bed.wait_until(
        "the killed daemon's nodes are owned by the others",
        bed.ttl + Duration::from_millis(1500),
        || {
            bed.nodes(&h1)
                .iter()
                .filter(|(n, _)| orphans.contains(*n))
                .all(|(_, (_, c))| matches!(c.as_deref(), Some("h1" | "h3")))
        },
    );
    eprintln!(
        "takeover of {} nodes took {:?}",
        orphans.len(),
        taken - killed
    );
    bed.wait_until("every node is active", Duration::from_secs(120), || {
        all_active(&bed, &h1)
    });
    // h3's copy of its peers' records follows within a watch window.
    bed.wait_until("h3 sees what h1 sees", Duration::from_secs(10), || {
        all_active(&bed, &h3)
    });
    // Some orphan resumed a run: its history on its new owner says so.
    let resumed_run = |l: &str| l.contains("converging node") && l.contains("\"resumed\":true");
    let resumed = h1.count(resumed_run) + h3.count(resumed_run);
    check_call_log(&bed.call_log()).expect("a clean call log");

    // The killed host comes back on its old state file, whose journals
    // are stale: it takes its share back between runs and resumes none
    // of them (a claim brings etcd's journal, and the fleet converged).
    drop(h2);
    let calls_before = calls(&bed.call_log()).len();
    let h2 = bed.start("h2");
    bed.wait_until("h2 owns a share again", Duration::from_secs(30), || {
        hosts_of(&bed, &h1).get("h2").copied().unwrap_or(0) >= 50
    });
    assert_eq!(h2.count(resumed_run), 0, "a stale journal resumed");
    bed.wait_until(
        "h2 lists every node active",
        Duration::from_secs(10),
        || all_active(&bed, &h2),
    );
    let summary = check_call_log(&bed.call_log()).expect("a clean call log");
    assert_eq!(
        calls(&bed.call_log()).len(),
        calls_before,
        "a converged fleet got BMC calls after the host came back"
    );
    eprintln!("call log: {} calls", summary.accepted);
    h1.stop();
    h2.stop();
    h3.stop();
    no_operation_completed_twice(&bed, &["h1", "h2", "h3"]);
    let claims_resuming: usize = ["h1", "h3"]
        .iter()
        .map(|h| {
            rivet::store::Store::open(&bed.state(h))
                .and_then(|store| store.history())
                .unwrap()
                .iter()
                .filter(|e| {
                    e.action == "claim"
                        && e.detail
                            .as_deref()
                            .is_some_and(|d| d.contains("resuming run"))
                })
                .count()
        })
        .sum();
    assert!(
        claims_resuming > 0 || resumed > 0,
        "no node resumed a run after the takeover"
    );
}

#[test]
fn a_stopped_daemon_is_fenced_rejoins_and_a_fourth_takes_a_quarter_between_runs() {
    if skip_emulator_test("a cluster test on etcd") {
        return;
    }
    let etcd = EtcdServer::start();
    let (bed, [h1, h2, h3]) = three_deploying(&etcd);
    let pid = h2.child.id() as i32;
    // SAFETY: signals to our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let stopped_ns = unix_ns();
    std::thread::sleep(bed.ttl + Duration::from_secs(2));
    let resumed_ns = unix_ns();
    unsafe { libc::kill(pid, libc::SIGCONT) };
    h2.wait_for(
        "the stopped daemon logs the loss of its lease",
        |l| l.contains("lost the cluster lease"),
        Duration::from_secs(20),
    );
    h2.wait_for_more(
        "the stopped daemon joins again",
        1,
        |l| l.contains("joined the cluster"),
        Duration::from_secs(20),
    );
    // It claims nothing for half a second after joining: every call it
    // made before this moment and after its lease ended was a fenced one.
    let rejoined_ns = unix_ns();
    bed.wait_until("every node is active", Duration::from_secs(120), || {
        all_active(&bed, &h1)
    });
    let log = calls(&bed.call_log());
    // Its lease ended at most a TTL after it stopped.
    let expired_ns = stopped_ns + bed.ttl.as_nanos() as u64;
    let late: Vec<_> = log
        .iter()
        .filter(|c| c.host == "h2" && c.refused.is_none())
        .filter(|c| c.start_ns > expired_ns && c.start_ns < rejoined_ns)
        .collect();
    assert!(late.is_empty(), "the fenced daemon reached BMCs: {late:?}");
    assert!(resumed_ns > expired_ns, "it was stopped past its TTL");
    check_call_log(&bed.call_log()).expect("a clean call log");

    // A fourth member: about a quarter of the nodes move to it, none in a run.
    let h4 = bed.start("h4");
    bed.wait_until("h4 owns its share", Duration::from_secs(30), || {
        let per = hosts_of(&bed, &h1);
        per.get("h4").copied().unwrap_or(0) >= NODES / 4 - 25
            && per.values().sum::<usize>() == NODES
            && per.keys().all(|h| !h.is_empty())
    });
    std::thread::sleep(Duration::from_millis(500));
    let per = hosts_of(&bed, &h4);
    let moved = per.get("h4").copied().unwrap_or(0);
    assert!(
        (NODES / 4 - 25..=NODES / 4 + 25).contains(&moved),
        "{per:?}"
    );
    bed.wait_until(
        "h4 lists every node active",
        Duration::from_secs(10),
        || all_active(&bed, &h4),
    );
    let claims_with_runs =
        h4.count(|l| l.contains("converging node") && l.contains("\"resumed\":true"));
    assert_eq!(claims_with_runs, 0, "a node moved in the middle of a run");
    check_call_log(&bed.call_log()).expect("a clean call log");

    // One API from any daemon: node show, history and passthru of a node a
    // peer owns.
    let nodes = bed.nodes(&h1);
    let (peer_node, (_, owner)) = nodes
        .iter()
        .find(|(_, (_, c))| c.as_deref() == Some("h4"))
        .expect("h4 owns nodes");
    assert_eq!(owner.as_deref(), Some("h4"));
    for daemon in [&h1, &h2, &h3, &h4] {
        let (status, show) = bed.get_status(daemon, &format!("/v1/nodes/{peer_node}"));
        assert_eq!(status, 200);
        assert_eq!(show["conductor"], "h4");
        let (status, history) = bed.get_status(daemon, &format!("/v1/nodes/{peer_node}/history"));
        assert_eq!(status, 200, "{history}");
        assert!(
            history["history"].as_array().is_some_and(|h| !h.is_empty()),
            "history through a peer: {history}"
        );
        let conductors = bed.get(daemon, "/v1/conductors");
        let live: BTreeSet<&str> = conductors["conductors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["hostname"].as_str().unwrap())
            .collect();
        assert_eq!(live, BTreeSet::from(["h1", "h2", "h3", "h4"]));
        let called = reqwest::blocking::Client::new()
            .post(format!(
                "http://{}/v1/nodes/{peer_node}/vendor_passthru?method=third_method_sync",
                daemon.http_addr()
            ))
            .header("X-OpenStack-Ironic-API-Version", "1.95")
            .json(&serde_json::json!({"bar": "meow"}))
            .send()
            .unwrap();
        assert_eq!(called.status().as_u16(), 200);
        assert_eq!(
            called.json::<serde_json::Value>().unwrap(),
            serde_json::json!(true)
        );
    }
    // `rivet status --url` against any daemon shows every node.
    let status = assert_cmd::Command::cargo_bin("rivet")
        .unwrap()
        .args(["status", "--format", "json", "--url"])
        .arg(format!("http://{}", h3.http_addr()))
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let shown = String::from_utf8_lossy(&status.stdout);
    for i in [0, NODES / 2, NODES - 1] {
        assert!(
            shown.contains(&format!("\"n{i:05}\"")),
            "status lacks n{i:05}"
        );
    }
    if let Some(baremetal) = crate::api_baremetal::baremetal() {
        let out = std::process::Command::new(baremetal)
            .args(["node", "list", "--limit", "0", "-f", "json", "-c", "Name"])
            .env("OS_ENDPOINT", format!("http://{}", h2.http_addr()))
            .env("OS_AUTH_TYPE", "none")
            .env_remove("OS_CLOUD")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(listed.len(), NODES);
    }
    for d in [h1, h2, h3, h4] {
        d.stop();
    }
}

#[test]
fn an_etcd_outage_fences_every_daemon_which_serve_stale_reads_and_resume_after() {
    if skip_emulator_test("a cluster test on etcd") {
        return;
    }
    let etcd = EtcdServer::start();
    let (bed, [h1, h2, h3]) = three_deploying(&etcd);
    etcd.pause();
    let paused_ns = unix_ns();
    for d in [&h1, &h2, &h3] {
        bed.wait_until(
            "/healthz warns of stale data",
            Duration::from_secs(10),
            || {
                let (_, health) = bed.get_status(d, "/healthz");
                health["status"] == "stale"
            },
        );
    }
    // Reads go on.
    assert_eq!(bed.nodes(&h2).len(), NODES);
    // Every lease clock was last renewed before the pause: by a TTL after
    // it, every daemon is fenced.
    let fenced_from = paused_ns + bed.ttl.as_nanos() as u64;
    std::thread::sleep(
        Duration::from_secs(5).saturating_sub(Duration::from_nanos(unix_ns() - paused_ns)),
    );
    let resumed_ns = unix_ns();
    etcd.resume();
    let during: Vec<_> = calls(&bed.call_log())
        .into_iter()
        .filter(|c| c.refused.is_none() && c.start_ns > fenced_from && c.start_ns < resumed_ns)
        .collect();
    assert!(
        during.is_empty(),
        "BMCs were called while every lease was unknown: {during:?}"
    );
    bed.wait_until("every node is active", Duration::from_secs(120), || {
        all_active(&bed, &h1)
    });
    for d in [&h1, &h2, &h3] {
        let (_, health) = bed.get_status(d, "/healthz");
        assert_eq!(health["status"], "ok", "{health}");
    }
    check_call_log(&bed.call_log()).expect("a clean call log");
    for d in [h1, h2, h3] {
        d.stop();
    }
}

#[test]
fn an_unreachable_etcd_at_start_is_an_error_naming_the_endpoints() {
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let bed = ClusterBed::new(&Fleet {
        nodes: 2,
        latency: "1ms",
        chain: 1,
        ttl: TTL,
        etcd: &url,
        conductor: "",
    });
    let out = assert_cmd::Command::cargo_bin("rivet")
        .unwrap()
        .args(["daemon", "--http", "127.0.0.1:0", "--host", "h1", "--state"])
        .arg(bed.state("h1"))
        .arg(bed.dir())
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot reach etcd at") && stderr.contains(&url),
        "{stderr}"
    );
    // Nothing was called.
    assert!(calls(&bed.call_log()).is_empty());
}

#[test]
fn a_second_daemon_with_a_live_members_host_name_is_refused() {
    if skip_emulator_test("a cluster test on etcd") {
        return;
    }
    let etcd = EtcdServer::start();
    let bed = ClusterBed::new(&Fleet {
        nodes: 4,
        latency: "1ms",
        chain: 1,
        ttl: "2s",
        etcd: &etcd.url,
        conductor: "",
    });
    let h1 = bed.start("h1");
    std::fs::create_dir_all(bed.root.path().join("twin")).unwrap();
    let out = assert_cmd::Command::cargo_bin("rivet")
        .unwrap()
        .args(["daemon", "--http", "127.0.0.1:0", "--host", "h1", "--state"])
        .arg(bed.root.path().join("twin/state.redb"))
        .arg(bed.dir())
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("as host `h1`"), "{stderr}");
    // The first goes on: it still owns every node.
    let nodes = bed.nodes(&h1);
    assert!(
        nodes.values().all(|(_, c)| c.as_deref() == Some("h1")),
        "{nodes:?}"
    );
    h1.stop();
}

#[test]
fn a_member_joining_mid_deploy_takes_its_share_only_between_runs() {
    if skip_emulator_test("a cluster test on etcd") {
        return;
    }
    let etcd = EtcdServer::start();
    // Slower BMCs, so that runs are in flight when the fourth joins.
    let bed = ClusterBed::new(&Fleet {
        nodes: NODES,
        latency: "300ms",
        chain: 3,
        ttl: TTL,
        etcd: &etcd.url,
        conductor: "",
    });
    let daemons = [bed.start("h1"), bed.start("h2"), bed.start("h3")];
    bed.wait_until(
        "every node is claimed and some deploy",
        Duration::from_secs(60),
        || claimed_and_deploying(&bed, &daemons[0], &["h1", "h2", "h3"]),
    );
    let h4 = bed.start("h4");
    let in_flight = bed
        .nodes(&daemons[0])
        .values()
        .filter(|(state, _)| state == "deploying")
        .count();
    assert!(in_flight > 0, "runs are in flight when h4 joins");
    bed.wait_until("every node is active", Duration::from_secs(120), || {
        all_active(&bed, &h4)
    });
    bed.wait_until("h4 owns its share", Duration::from_secs(30), || {
        hosts_of(&bed, &h4).get("h4").copied().unwrap_or(0) >= NODES / 4 - 25
    });
    let per = hosts_of(&bed, &h4);
    let moved = per.get("h4").copied().unwrap_or(0);
    assert!(
        (NODES / 4 - 25..=NODES / 4 + 25).contains(&moved),
        "{per:?}"
    );
    // Nothing it took was in a run: no run resumed on it, and every claim
    // of it brought no journal.
    assert_eq!(
        h4.count(|l| l.contains("converging node") && l.contains("\"resumed\":true")),
        0,
        "a node moved in the middle of a run"
    );
    check_call_log(&bed.call_log()).expect("a clean call log");
    h4.stop();
    let claims = rivet::store::Store::open(&bed.state("h4"))
        .and_then(|store| store.history())
        .unwrap();
    let claimed: Vec<_> = claims.iter().filter(|e| e.action == "claim").collect();
    assert_eq!(claimed.len(), moved, "one claim note per node it took");
    assert!(
        claimed
            .iter()
            .all(|e| !e.detail.as_deref().unwrap_or("").contains("resuming")),
        "a claim took a run over: {claimed:?}"
    );
    for d in daemons {
        d.stop();
    }
}
