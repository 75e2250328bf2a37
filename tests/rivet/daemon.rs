//! `rivet daemon` as a real process: watched edits, last good declarations,
//! removed nodes, power drift, maintenance, graceful stop, one per store.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rivet::store::Store;
use rivet::vocab::ProvisionState;

use crate::daemon_process::DaemonProcess;
use crate::support::TempFleet;

/// A running daemon whose JSON logs are collected; every wait has a 20 s deadline.
struct Daemon(DaemonProcess);

const WAIT: Duration = Duration::from_secs(20);

impl Daemon {
    fn start(dir: &Path) -> Self {
        Self(DaemonProcess::start(dir, "info", &[], WAIT))
    }

    fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.0.count(pred)
    }

    /// Wait until more lines than `already` match.
    fn wait_for_more(&self, what: &str, already: usize, pred: impl Fn(&str) -> bool) {
        self.0.wait_for_more(what, already, pred, WAIT);
    }

    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) {
        self.0.wait_for(what, pred, WAIT);
    }

    /// SIGTERM, then expect a clean exit 0.
    fn stop(self) -> Vec<String> {
        self.0.stop()
    }
}

fn has(msg: &'static str) -> impl Fn(&str) -> bool {
    move |l: &str| l.contains(&format!("\"message\":\"{msg}"))
}

fn has_for(msg: &'static str, node: &'static str) -> impl Fn(&str) -> bool {
    move |l: &str| {
        l.contains(&format!("\"message\":\"{msg}")) && l.contains(&format!("\"node\":\"{node}\""))
    }
}

fn fleet(drift: &str) -> TempFleet {
    TempFleet::new(&[
        (
            "rivet.toml",
            &format!("[conductor]\npower_sync_interval = \"200ms\"\ndrift = \"{drift}\"\n"),
        ),
        (
            "nodes/a.toml",
            "[[node]]\nname = \"n1\"\ndriver = \"fake-hardware\"\ndesired = { provision = \"active\", power = \"on\" }\n\n\
             [[node]]\nname = \"n2\"\ndriver = \"fake-hardware\"\ndesired = { provision = \"manageable\", power = \"off\" }\n",
        ),
        (
            "nodes/b.toml",
            "[[node]]\nname = \"n3\"\ndriver = \"fake-hardware\"\ndesired = { provision = \"available\" }\n",
        ),
    ])
}

fn bmc_file(dir: &Path, host: &str) -> PathBuf {
    dir.join(format!(".rivet/fake-bmc/{host}.json"))
}

fn edit_bmc(dir: &Path, host: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = bmc_file(dir, host);
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut doc);
    std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
}

fn wait_until(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn edits_converge_parse_errors_keep_the_last_good_declarations_and_removal_unmanages() {
    let fleet = fleet("enforce");
    let dir = fleet.path();
    let daemon = Daemon::start(dir);
    daemon.wait_for("the first pass", has("converge pass done"));

    // A syntax error: reported, and nothing is deleted or changed.
    let nodes = dir.join("nodes/a.toml");
    let good = std::fs::read_to_string(&nodes).unwrap();
    std::fs::write(&nodes, format!("{good}\n[[node\n")).unwrap();
    daemon.wait_for("the parse error", |l| {
        has("declarations have problems")(l) && l.contains("nodes/a.toml:")
    });
    let passes = daemon.count(has("converge pass done"));

    // Fixed, with one change: only that change is converged.
    let before = daemon.count(has("declarations reloaded"));
    std::fs::write(
        &nodes,
        good.replace(
            "provision = \"manageable\", power = \"off\"",
            "provision = \"manageable\", power = \"on\"",
        ),
    )
    .unwrap();
    daemon.wait_for_more("the reload", before, has("declarations reloaded"));
    daemon.wait_for_more("the pass for n2", passes, has("converge pass done"));
    wait_until("n2 is powered on", || {
        std::fs::read_to_string(bmc_file(dir, "n2"))
            .unwrap()
            .contains("power on")
    });

    // n3 is removed from the files: unmanaged, left as it is.
    let unmanaged_before = daemon.count(has("converge pass done"));
    std::fs::write(dir.join("nodes/b.toml"), "").unwrap();
    daemon.wait_for_more(
        "the pass after removal",
        unmanaged_before,
        has("converge pass done"),
    );
    let logs = daemon.stop();
    assert!(logs.iter().any(|l| has("stopped")(l)));

    let store = Store::open(&dir.join(".rivet/state.redb")).unwrap();
    let records = store.nodes().unwrap();
    assert_eq!(records["n1"].provision_state, ProvisionState::Active);
    assert!(
        !records["n1"].unmanaged && !records["n2"].unmanaged,
        "a syntax error deleted nothing"
    );
    assert!(records["n3"].unmanaged);
    assert_eq!(records["n3"].provision_state, ProvisionState::Available);
    let history = store.history().unwrap();
    assert_eq!(
        history.iter().filter(|e| e.action == "unmanaged").count(),
        1
    );
    // Nothing was done to n3 once it became unmanaged.
    let released = history
        .iter()
        .position(|e| e.action == "unmanaged")
        .unwrap();
    assert!(history[released + 1..].iter().all(|e| e.node != "n3"));
    // Only the changed node was converged by the pass that powered n2 on:
    // every operation of that run is n2's.
    let powered = history
        .iter()
        .rfind(|e| {
            e.node == "n2"
                && e.action == "power on"
                && e.outcome == rivet::store::records::Outcome::Succeeded
        })
        .expect("n2 was powered on by a run");
    let run = powered.run_id.expect("a run's operation");
    let others: Vec<_> = history
        .iter()
        .filter(|e| e.run_id == Some(run) && e.node != "n2")
        .collect();
    assert!(others.is_empty(), "the edit's pass also touched {others:?}");
}

#[test]
fn power_drift_is_enforced() {
    let fleet = fleet("enforce");
    let dir = fleet.path();
    let daemon = Daemon::start(dir);
    daemon.wait_for("the first pass", has("converge pass done"));
    edit_bmc(dir, "n1", |d| d["power"] = "power off".into());
    daemon.wait_for("drift found", has_for("power drift found", "n1"));
    daemon.wait_for("drift enforced", has_for("power drift enforced", "n1"));
    wait_until("n1 is on again", || {
        std::fs::read_to_string(bmc_file(dir, "n1"))
            .unwrap()
            .contains("power on")
    });
    daemon.stop();
}

#[test]
fn power_drift_is_only_reported_when_asked() {
    let fleet = fleet("report");
    let dir = fleet.path();
    let daemon = Daemon::start(dir);
    daemon.wait_for("the first pass", has("converge pass done"));
    edit_bmc(dir, "n1", |d| d["power"] = "power off".into());
    daemon.wait_for("drift found", has_for("power drift found", "n1"));
    // Two more sweeps: still reported, never enforced.
    let seen = daemon.count(has_for("power drift found", "n1"));
    daemon.wait_for_more("more sweeps", seen + 1, has_for("power drift found", "n1"));
    daemon.stop();
    assert!(
        std::fs::read_to_string(bmc_file(dir, "n1"))
            .unwrap()
            .contains("power off")
    );
    let store = Store::open(&dir.join(".rivet/state.redb")).unwrap();
    let n1 = store.node("n1").unwrap().unwrap();
    assert!(
        n1.last_error
            .unwrap()
            .contains("drift: power is off but on is declared")
    );
}

#[test]
fn three_failed_power_reads_mean_maintenance_and_recovery_leaves_it() {
    let fleet = fleet("enforce");
    let dir = fleet.path();
    let daemon = Daemon::start(dir);
    daemon.wait_for("the first pass", has("converge pass done"));
    edit_bmc(dir, "n1", |d| d["unreachable"] = true.into());
    daemon.wait_for("maintenance", has_for("node entered maintenance", "n1"));
    edit_bmc(dir, "n1", |d| d["unreachable"] = false.into());
    daemon.wait_for("recovery", has_for("node left maintenance", "n1"));
    daemon.stop();
    let store = Store::open(&dir.join(".rivet/state.redb")).unwrap();
    let n1 = store.node("n1").unwrap().unwrap();
    assert!(!n1.maintenance);
    assert_eq!(n1.fault, None);
    let history = store.node_history("n1", 100).unwrap();
    let entered = history
        .iter()
        .position(|e| {
            e.action == "maintenance" && e.detail.as_deref().unwrap_or("").contains("entered")
        })
        .unwrap();
    let left = history
        .iter()
        .position(|e| {
            e.action == "maintenance" && e.detail.as_deref().unwrap_or("").contains("left")
        })
        .unwrap();
    assert!(entered < left);
    assert!(
        history[entered]
            .detail
            .as_deref()
            .unwrap()
            .starts_with("3 failed power reads")
    );
}

#[test]
fn a_second_daemon_on_the_same_store_refuses_at_once() {
    let fleet = fleet("enforce");
    let first = Daemon::start(fleet.path());
    let started = Instant::now();
    let out = Command::new(assert_cmd::cargo::cargo_bin("rivet"))
        .arg("daemon")
        .arg(fleet.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another rivet process"));
    assert!(started.elapsed() < Duration::from_secs(10));
    first.stop();
}

#[test]
fn a_failing_redfish_bmc_puts_its_node_in_maintenance_until_it_answers_again() {
    use crate::fault_server::{FaultServer, json};
    use std::sync::atomic::{AtomicBool, Ordering};
    let broken = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&broken);
    let server = FaultServer::start(move |s| {
        if flag.load(Ordering::SeqCst) {
            return Some((
                500,
                vec![],
                "{\"error\": {\"message\": \"BMC firmware crashed\"}}".into(),
            ));
        }
        match s.method.as_str() {
            "POST" => Some((404, vec![], String::new())),
            _ => json(
                200,
                serde_json::json!({ "Id": "1", "PowerState": "On", "Boot": {} }),
            ),
        }
    });
    let fleet = TempFleet::new(&[
        (
            "rivet.toml",
            "[conductor]\npower_sync_interval = \"200ms\"\n",
        ),
        (
            "nodes/a.toml",
            &format!(
                "[[node]]\nname = \"r1\"\ndriver = \"redfish\"\nbmc = {{ address = \"redfish+http://127.0.0.1:{}/redfish/v1/Systems/1\" }}\ndesired = {{ provision = \"manageable\" }}\n",
                server.port
            ),
        ),
    ]);
    let daemon = Daemon::start(fleet.path());
    daemon.wait_for("the first pass", has("converge pass done"));
    broken.store(true, std::sync::atomic::Ordering::SeqCst);
    daemon.wait_for("maintenance", has_for("node entered maintenance", "r1"));
    broken.store(false, std::sync::atomic::Ordering::SeqCst);
    daemon.wait_for("recovery", has_for("node left maintenance", "r1"));
    daemon.stop();
    let store = Store::open(&fleet.path().join(".rivet/state.redb")).unwrap();
    let r1 = store.node("r1").unwrap().unwrap();
    assert!(!r1.maintenance);
    let history = store.node_history("r1", 50).unwrap();
    let entered = history
        .iter()
        .find(|e| {
            e.detail
                .as_deref()
                .is_some_and(|d| d.contains("entered maintenance"))
        })
        .unwrap();
    assert!(
        entered
            .detail
            .as_deref()
            .unwrap()
            .contains("BMC firmware crashed"),
        "{entered:?}"
    );
}

#[test]
fn an_abortable_step_is_interrupted_by_an_edit_and_by_shutdown() {
    let fleet = TempFleet::new(&[
        (
            "drivers/slow.toml",
            "[[hardware_type]]\nname = \"slow-fake\"\nbase = \"fake-hardware\"\nsupported_vendor_interfaces = [\"slow\"]\n\n\
             [[interface]]\ntype = \"vendor\"\nname = \"slow\"\nexec = [\"./slow.sh\"]\ntimeout = \"120s\"\n\
             [[interface.deploy_step]]\nstep = \"long\"\npriority = 150\nabortable = true\n",
        ),
        (
            "rivet.toml",
            "[hardware]\nenabled_vendor_interfaces = [\"slow\", \"no-vendor\", \"fake\"]\n",
        ),
        (
            "nodes/a.toml",
            "[[node]]\nname = \"s1\"\ndriver = \"slow-fake\"\ndesired = { provision = \"active\" }\n",
        ),
        // Marks each start, then takes a minute.
        (
            "slow.sh",
            "#!/bin/sh\ncat >/dev/null\necho x >> started\nsleep 59.0417\necho '{\"ok\": null}'\n",
        ),
    ]);
    let dir = fleet.path();
    std::fs::set_permissions(
        dir.join("slow.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let starts = || {
        std::fs::read_to_string(dir.join("started"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let daemon = Daemon::start(dir);
    wait_until("the long step started", || starts() == 1);

    // An edit to the node aborts the step at once and plans it again.
    std::fs::write(
        dir.join("nodes/a.toml"),
        "[[node]]\nname = \"s1\"\ndriver = \"slow-fake\"\ndesired = { provision = \"active\", power = \"on\" }\n",
    )
    .unwrap();
    wait_until("the step started again after the edit", || starts() == 2);

    // Shutdown aborts it too, without waiting a minute, and keeps the journal.
    let stopping = Instant::now();
    daemon.stop();
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "shutdown waited for the step"
    );
    let store = Store::open(&dir.join(".rivet/state.redb")).unwrap();
    let history = store.node_history("s1", 100).unwrap();
    assert!(
        history.iter().any(|e| e.action == "replan"
            && e.detail.as_deref() == Some("declarations changed: step aborted")),
        "{history:#?}"
    );
    assert!(
        store.journals().unwrap().contains_key("s1"),
        "the interrupted run is kept for the next start"
    );
    assert!(!history.iter().any(
        |e| e.action == "vendor.long" && e.outcome == rivet::store::records::Outcome::Succeeded
    ));
    // Nothing a plugin started outlives its aborted call.
    wait_until("the plugins' `sleep 59.0417` children are gone", || {
        let out = std::process::Command::new("ps")
            .args(["-eo", "args"])
            .output()
            .unwrap();
        !String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.trim() == "sleep 59.0417")
    });
}

#[test]
fn history_is_pruned_to_the_newest_events_of_each_node() {
    let fleet = TempFleet::new(&[
        (
            "rivet.toml",
            "[conductor]\nhistory_max_entries = 4\nhistory_cleanup_interval = \"200ms\"\n",
        ),
        (
            "nodes/a.toml",
            "[[node]]\nname = \"n1\"\ndriver = \"fake-hardware\"\ndesired = { provision = \"active\", power = \"on\" }\n",
        ),
    ]);
    let dir = fleet.path();
    let daemon = Daemon::start(dir);
    let pass_done = daemon
        .0
        .wait_for("the first pass", has("converge pass done"), WAIT);
    // A pruning while the pass still ran (a slow machine) is not the one
    // that sees the whole pass's history.
    let mut seen = 0;
    while daemon
        .0
        .wait_for_more("pruning after the pass", seen, has("history pruned"), WAIT)
        <= pass_done
    {
        seen += 1;
    }
    daemon.stop();
    let store = Store::open(&dir.join(".rivet/state.redb")).unwrap();
    let history = store.node_history("n1", 100).unwrap();
    let actions: Vec<&str> = history.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(history.len(), 4, "{actions:?}");
    // The newest are kept: the deploy's end is the last event.
    assert_eq!(actions.last(), Some(&"deploy done"), "{actions:?}");
    assert!(history.windows(2).all(|w| w[0].seq < w[1].seq));
}

/// A node removed while no daemon ran is pruned by the next daemon, from
/// the declarations the last full converge kept.
#[test]
fn a_node_removed_while_the_daemon_was_down_is_pruned_on_restart() {
    let fleet = TempFleet::new(&[
        ("rivet.toml", "[conductor]\nprune = true\n"),
        (
            "nodes/a.toml",
            "[[node]]\nname = \"n1\"\ndriver = \"fake-hardware\"\ndesired = { provision = \"active\", power = \"on\" }\n",
        ),
        (
            "nodes/b.toml",
            "[[node]]\nname = \"n2\"\ndriver = \"fake-hardware\"\ndesired = { provision = \"active\", power = \"on\" }\n",
        ),
    ]);
    let dir = fleet.path();
    let daemon = Daemon::start(dir);
    daemon.wait_for("the first pass", has("converge pass done"));
    daemon.stop();
    assert!(
        std::fs::read_to_string(bmc_file(dir, "n2"))
            .unwrap()
            .contains("power on")
    );

    std::fs::remove_file(dir.join("nodes/b.toml")).unwrap();
    let daemon = Daemon::start(dir);
    daemon.wait_for("the pass that prunes", has("converge pass done"));
    daemon.stop();
    assert!(
        std::fs::read_to_string(bmc_file(dir, "n2"))
            .unwrap()
            .contains("power off")
    );
    let store = Store::open(&dir.join(".rivet/state.redb")).unwrap();
    let n2 = store.node("n2").unwrap().unwrap();
    assert!(n2.unmanaged);
    assert_eq!(n2.provision_state, ProvisionState::Available);
}

/// A fleet of one node whose power sync sweeps every second and reports drift.
fn drift_fleet(name: &str, bmc: &str) -> TempFleet {
    TempFleet::new(&[
        (
            "rivet.toml",
            "[conductor]\npower_sync_interval = \"1s\"\ndrift = \"report\"\n",
        ),
        (
            "nodes/a.toml",
            &format!(
                "[[node]]\nname = \"{name}\"\ndriver = \"fake-hardware\"\n{bmc}desired = {{ provision = \"active\", power = \"on\" }}\n"
            ),
        ),
    ])
}

/// GET a document of a running daemon's API.
fn api_get(daemon: &DaemonProcess, path: &str) -> serde_json::Value {
    let url = format!("http://{}{path}", daemon.http_addr());
    let response = reqwest::blocking::Client::new()
        .get(&url)
        .header("X-OpenStack-Ironic-API-Version", "latest")
        .send()
        .unwrap();
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.json().unwrap()
}

/// How many of a node's history events, as the API serves them, are `action`.
fn events_of(daemon: &DaemonProcess, node: &str, action: &str) -> usize {
    let history = api_get(daemon, &format!("/v1/nodes/{node}/history"));
    history["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == action)
        .count()
}

#[test]
fn an_unchanged_drift_is_recorded_once_across_sweeps_and_its_end_once() {
    let fleet = drift_fleet("n1", "");
    let dir = fleet.path();
    let sweeps = has("power sync sweep done");
    let drift_seen = has_for("power drift found", "n1");
    let daemon = DaemonProcess::start(dir, "debug", &[], WAIT);
    daemon.wait_for("the first pass", has("converge pass done"), WAIT);
    edit_bmc(dir, "n1", |d| d["power"] = "power off".into());
    // Four sweeps that each see the drift.
    daemon.wait_for_more("four sweeps with the drift", 3, &drift_seen, WAIT);
    assert_eq!(events_of(&daemon, "n1", "power drift"), 1);
    let n1 = api_get(&daemon, "/v1/nodes/n1");
    assert_eq!(n1["last_error"], "drift: power is off but on is declared");

    // Power as declared again: the end is recorded once, and the drift's
    // message leaves last_error.
    edit_bmc(dir, "n1", |d| d["power"] = "power on".into());
    wait_until("the drift's end is in the history", || {
        events_of(&daemon, "n1", "power drift ended") == 1
    });
    let (swept, seen) = (daemon.count(&sweeps), daemon.count(&drift_seen));
    daemon.wait_for_more("two more sweeps", swept + 1, &sweeps, WAIT);
    assert_eq!(events_of(&daemon, "n1", "power drift ended"), 1);
    assert_eq!(events_of(&daemon, "n1", "power drift"), 1);
    assert_eq!(daemon.count(&drift_seen), seen, "the drift is over");
    assert_eq!(
        api_get(&daemon, "/v1/nodes/n1")["last_error"],
        serde_json::Value::Null
    );
    daemon.stop();

    let store = Store::open(&dir.join(".rivet/state.redb")).unwrap();
    let history = store.node_history("n1", 1000).unwrap();
    let drift = history
        .iter()
        .position(|e| e.action == "power drift")
        .unwrap();
    let ended = history
        .iter()
        .position(|e| e.action == "power drift ended")
        .unwrap();
    assert!(drift < ended);
    assert!(
        history[ended]
            .detail
            .as_deref()
            .unwrap()
            .starts_with("power is on as declared (drifting since "),
        "{:?}",
        history[ended]
    );
    assert!(store.drifts().unwrap().is_empty());
}

#[test]
fn a_deploy_error_stays_in_last_error_across_sweeps_that_report_drift() {
    let fleet = drift_fleet("bad", "bmc = { address = \"fake://bad?fail=deploy:1\" }\n");
    let dir = fleet.path();
    let failed = has_for("operation failed", "bad");
    let drift_seen = has_for("power drift found", "bad");
    let daemon = Daemon::start(dir);
    daemon.wait_for("the deploy failure", &failed);
    daemon.wait_for_more("four sweeps with the drift", 3, &drift_seen);
    // The daemon retries the node with backoff: wait until a sweep that saw
    // the drift came after its latest failure.
    wait_until("a sweep after the latest failure", || {
        let logs = daemon.0.logs();
        let last = |pred: &dyn Fn(&str) -> bool| logs.iter().rposition(|l| pred(l));
        last(&drift_seen) > last(&failed)
    });
    daemon.stop();

    let store = Store::open(&dir.join(".rivet/state.redb")).unwrap();
    let bad = store.node("bad").unwrap().unwrap();
    assert_eq!(bad.provision_state, ProvisionState::DeployFailed);
    let error = bad.last_error.unwrap();
    assert!(
        error.starts_with("deploy.deploy: ") && error.contains("injected deploy fault"),
        "{error}"
    );
    let history = store.node_history("bad", 1000).unwrap();
    let drifts: Vec<_> = history
        .iter()
        .filter(|e| e.action == "power drift")
        .collect();
    assert_eq!(drifts.len(), 1, "{drifts:#?}");
    assert_eq!(
        drifts[0].detail.as_deref(),
        Some("power is off but on is declared")
    );
}
