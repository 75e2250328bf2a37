//! `rivet reconcile` converging fake hardware: real processes, real redb files.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use rivet::store::Store;
use rivet::store::records::Outcome;
use rivet::vocab::{PowerState, ProvisionState};

use crate::support::{TempFleet, copy_dir, root};

fn rivet_bin() -> std::path::PathBuf {
    assert_cmd::cargo::cargo_bin("rivet")
}

fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(rivet_bin())
        .env("NO_COLOR", "1")
        .args(args)
        .arg(dir)
        .output()
        .unwrap()
}

fn quickstart() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&root().join("examples/quickstart"), tmp.path());
    let dir = tmp.path().to_path_buf();
    (tmp, dir)
}

fn store_of(dir: &Path) -> Store {
    Store::open(&dir.join(".rivet/state.redb")).unwrap()
}

fn fake_bmc(dir: &Path, host: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join(format!(".rivet/fake-bmc/{host}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn the_quickstart_converges_and_a_second_run_changes_nothing() {
    let (_tmp, dir) = quickstart();
    let out = run(&dir, &["reconcile"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Converged 8 node(s)"), "{stdout}");

    {
        let store = store_of(&dir);
        let nodes = store.nodes().unwrap();
        assert_eq!(
            nodes["rack1-node01"].provision_state,
            ProvisionState::Active
        );
        assert_eq!(
            nodes["rack1-node05"].provision_state,
            ProvisionState::Available
        );
        assert_eq!(
            nodes["rack1-node06"].provision_state,
            ProvisionState::Manageable
        );
        assert_eq!(nodes["rack1-node01"].power_state, Some(PowerState::On));
        assert_eq!(
            nodes["rack1-node01"].properties.to_map()["cpus"],
            2,
            "inspected while managing"
        );
        assert!(
            store.journals().unwrap().is_empty(),
            "finished work leaves no journal"
        );
        // The exec-plugin step ran through the plugin and is in the history.
        let history = store.node_history("edge-acme01", 100).unwrap();
        assert!(
            history
                .iter()
                .any(|e| e.action == "vendor.apply_profile" && e.outcome == Outcome::Succeeded)
        );
    }
    // The hardware (the fake BMCs) really changed.
    assert_eq!(
        fake_bmc(&dir, "rack1-node02")["bios"]["LogicalProc"],
        "Enabled"
    );
    assert_eq!(fake_bmc(&dir, "rack1-node01")["power"], "power on");
    assert_eq!(fake_bmc(&dir, "rack1-node01")["boot_mode"], "uefi");

    let events_before = store_of(&dir).history().unwrap().len();
    let plan = run(&dir, &["reconcile", "--dry-run", "--detailed-exitcode"]);
    assert_eq!(
        plan.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&plan.stdout)
    );
    let again = run(&dir, &["reconcile"]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("Nothing to do"));
    assert_eq!(store_of(&dir).history().unwrap().len(), events_before);
}

fn twenty_nodes() -> TempFleet {
    let mut nodes = String::new();
    for i in 0..20 {
        nodes.push_str(&format!(
            "[[node]]\nname = \"n{i:02}\"\ndriver = \"fake-hardware\"\nbmc = {{ address = \"fake://n{i:02}?latency=15ms\" }}\ntraits = [\"CUSTOM_TUNED\"]\ndesired = {{ provision = \"active\", power = \"on\", boot_mode = \"uefi\" }}\n\n"
        ));
    }
    TempFleet::new(&[
        ("rivet.toml", "[conductor]\nworkers = 4\n"),
        (
            "drivers/templates.toml",
            "[[deploy_template]]\nname = \"CUSTOM_TUNED\"\nsteps = [{ interface = \"bios\", step = \"apply_configuration\", priority = 150, args = { settings = [{ name = \"Turbo\", value = \"On\" }] } }, { interface = \"bios\", step = \"factory_reset\", priority = 160 }]\n",
        ),
        ("nodes/rack.toml", &nodes),
    ])
}

/// How many operations of runs have completed, as the store records them.
fn completed_operations(dir: &Path) -> usize {
    let history = store_of(dir).history().unwrap();
    let done: BTreeSet<(String, u64, usize)> = history
        .iter()
        .filter(|e| e.outcome == Outcome::Succeeded)
        .filter_map(|e| Some((e.node.clone(), e.run_id?, e.op_index?)))
        .collect();
    done.len()
}

/// Start `rivet reconcile`, wait for `ops` more completed operations, then
/// SIGKILL it. Returns false when it finished before that.
fn kill_after(dir: &Path, ops: usize) -> bool {
    let mut child = Process::new(rivet_bin())
        .args(["reconcile"])
        .arg(dir)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(" ok (") && tx.send(()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = 0;
    while seen < ops {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(()) => seen += 1,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                // The process finished (or died) on its own.
                let status = child.wait().unwrap();
                assert!(status.success(), "reconcile failed on its own: {status}");
                return false;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("no progress within 60 s"),
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    true
}

#[test]
fn kill_9_at_twenty_points_loses_nothing_and_repeats_no_completed_operation() {
    let fleet = twenty_nodes();
    let dir = fleet.path();
    // Each node has 14 operations, 280 in all. The kills land at completed
    // operations spread evenly from the first to the last but ten (several
    // nodes run at once, so a kill may land a few operations late), counted
    // from the store between runs (an operation in flight at a kill may run
    // again, so the store, not the output, says how far the fleet got).
    const TOTAL: usize = 280;
    const KILLS: usize = 20;
    let mut interrupted: BTreeSet<String> = BTreeSet::new();
    let mut landed = Vec::new();
    for kill in 0..KILLS {
        let target = 1 + kill * (TOTAL - 11) / (KILLS - 1);
        let done = completed_operations(dir);
        let more = target.saturating_sub(done).max(1);
        assert!(
            kill_after(dir, more),
            "kill {} (at operation {target}) found the work done",
            kill + 1
        );
        let store = store_of(dir);
        interrupted.extend(store.journals().unwrap().into_keys());
        drop(store);
        landed.push(completed_operations(dir));
    }
    // Where the kills landed: at or past their targets, in order, the first
    // in the first node's operations and the last near the end.
    assert!(landed[0] <= 4, "the first kill landed at {}", landed[0]);
    assert!(
        landed[KILLS - 1] >= TOTAL - 30 && landed[KILLS - 1] < TOTAL,
        "the last kill landed at {} of {TOTAL}",
        landed[KILLS - 1]
    );
    for pair in landed.windows(2) {
        assert!(pair[0] < pair[1], "kills landed at {landed:?}");
    }
    // Every node was interrupted mid-run at least once.
    assert_eq!(
        interrupted.len(),
        20,
        "nodes interrupted: {interrupted:?}; kills landed at {landed:?}"
    );
    let last = run(dir, &["reconcile"]);
    assert!(
        last.status.success(),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );

    let store = store_of(dir);
    let nodes = store.nodes().unwrap();
    assert_eq!(nodes.len(), 20);
    for (name, record) in &nodes {
        assert_eq!(record.provision_state, ProvisionState::Active, "{name}");
        assert_eq!(record.power_state, Some(PowerState::On), "{name}");
    }
    assert!(store.journals().unwrap().is_empty());

    let history = store.history().unwrap();
    // No record lost: sequence numbers run 1..=N without a gap.
    for (i, event) in history.iter().enumerate() {
        assert_eq!(
            event.seq,
            i as u64 + 1,
            "gap in the history before {event:?}"
        );
    }
    // No completed operation ran twice, and every operation of every run completed.
    let mut succeeded: BTreeMap<(String, u64, usize), usize> = BTreeMap::new();
    let mut started: BTreeMap<(String, u64, usize), usize> = BTreeMap::new();
    let mut resumed = 0;
    for e in &history {
        let (Some(run), Some(op)) = (e.run_id, e.op_index) else {
            continue;
        };
        let key = (e.node.clone(), run, op);
        match e.outcome {
            Outcome::Succeeded => *succeeded.entry(key).or_default() += 1,
            Outcome::Started => *started.entry(key).or_default() += 1,
            Outcome::Resumed => resumed += 1,
            Outcome::Failed => panic!("an operation failed: {e:?}"),
            Outcome::Noted => {}
        }
    }
    for (key, count) in &succeeded {
        assert_eq!(*count, 1, "{key:?} completed {count} times");
    }
    for key in started.keys() {
        assert!(
            succeeded.contains_key(key),
            "{key:?} started but never completed"
        );
    }
    assert!(resumed > 0, "no run was ever resumed from its journal");
    // And in the hardware's terms: every node's deploy and BIOS steps ran once.
    for name in nodes.keys() {
        for step in [
            "deploy.deploy",
            "bios.apply_configuration",
            "bios.factory_reset",
        ] {
            let done = history
                .iter()
                .filter(|e| &e.node == name && e.action == step && e.outcome == Outcome::Succeeded)
                .count();
            assert_eq!(done, 1, "{name}: {step} completed {done} times");
        }
        assert_eq!(fake_bmc(dir, name)["bios"]["Turbo"], "On");
    }
}

#[test]
fn failures_stop_a_rollout_group_and_skip_dependents() {
    let fleet = TempFleet::new(&[
        (
            "rivet.toml",
            "[conductor]\nworkers = 1\n\n[[rollout]]\nname = \"rack\"\nmax_parallel = 1\nmax_failures = 1\n",
        ),
        (
            "nodes/a.toml",
            "[[node]]\nname = \"a1\"\ndriver = \"fake-hardware\"\nrollout = \"rack\"\nbmc = { address = \"fake://a1?fail=deploy:1\" }\ndesired = { provision = \"active\" }\n\n\
             [[node]]\nname = \"a2\"\ndriver = \"fake-hardware\"\nrollout = \"rack\"\nbmc = { address = \"fake://a2?fail=deploy:1\" }\ndesired = { provision = \"active\" }\n\n\
             [[node]]\nname = \"a3\"\ndriver = \"fake-hardware\"\nrollout = \"rack\"\ndesired = { provision = \"active\" }\n\n\
             [[node]]\nname = \"b1\"\ndriver = \"fake-hardware\"\ndepends_on = [\"a1\"]\ndesired = { provision = \"active\" }\n\n\
             [[node]]\nname = \"c1\"\ndriver = \"fake-hardware\"\ndesired = { provision = \"active\" }\n",
        ),
    ]);
    let out = run(fleet.path(), &["reconcile"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("✗ a1: deploy.deploy: injected deploy fault"),
        "{stdout}"
    );
    assert!(stdout.contains("✗ a2: deploy.deploy"), "{stdout}");
    assert!(
        stdout.contains("a3: not started: rollout group `rack` stopped after too many failures"),
        "{stdout}"
    );
    assert!(
        stdout.contains("b1: not started: depends on `a1`, which failed"),
        "{stdout}"
    );
    let store = store_of(fleet.path());
    let nodes = store.nodes().unwrap();
    assert_eq!(nodes["a1"].provision_state, ProvisionState::DeployFailed);
    assert!(
        nodes["a1"]
            .last_error
            .as_deref()
            .unwrap()
            .contains("injected deploy fault")
    );
    assert_eq!(nodes["c1"].provision_state, ProvisionState::Active);
    // Retryable faults were retried (with backoff) before giving up.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let retries = stderr
        .lines()
        .filter(|l| l.contains("retrying after a transient error") && l.contains("a1"))
        .count();
    assert_eq!(retries, 2, "3 attempts = 2 retries:\n{stderr}");
}

#[test]
fn a_second_process_on_the_same_state_file_is_refused_at_once() {
    let (_tmp, dir) = quickstart();
    let _held = store_of(&dir);
    let started = Instant::now();
    let out = run(&dir, &["reconcile"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("in use by another rivet process"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn removing_a_node_leaves_it_unmanaged_and_as_it_is() {
    let (_tmp, dir) = quickstart();
    assert!(run(&dir, &["reconcile"]).status.success());
    let nodes = dir.join("nodes/rack1.toml");
    let text = std::fs::read_to_string(&nodes).unwrap();
    let start = text.find("[[node]]\nname = \"rack1-node06\"").unwrap();
    std::fs::write(&nodes, &text[..start]).unwrap();
    let out = run(&dir, &["reconcile"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("rack1-node06: removed from the declarations")
    );
    let record = store_of(&dir).node("rack1-node06").unwrap().unwrap();
    assert!(record.unmanaged);
    assert_eq!(
        record.provision_state,
        ProvisionState::Manageable,
        "left as it was"
    );
    let status = run(&dir, &["status"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("manageable*"));
}

#[test]
fn reconcile_prunes_the_history_of_the_nodes_it_converged() {
    let fleet = TempFleet::new(&[
        ("rivet.toml", "[conductor]\nhistory_max_entries = 3\n"),
        (
            "nodes/a.toml",
            "[[node]]\nname = \"n1\"\ndriver = \"fake-hardware\"\ndesired = { provision = \"active\", power = \"on\" }\n",
        ),
    ]);
    let out = run(fleet.path(), &["reconcile"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = store_of(fleet.path());
    let actions: Vec<String> = store
        .node_history("n1", 100)
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions.len(), 3, "{actions:?}");
    assert_eq!(actions.last().map(String::as_str), Some("deploy done"));
}

fn two_nodes(prune: bool) -> TempFleet {
    TempFleet::new(&[
        ("rivet.toml", &format!("[conductor]\nprune = {prune}\n")),
        (
            "nodes/a.toml",
            "[[node]]\nname = \"n1\"\ndriver = \"fake-hardware\"\ndesired = { provision = \"active\", power = \"on\" }\n",
        ),
        (
            "nodes/b.toml",
            "[[node]]\nname = \"n2\"\ndriver = \"fake-hardware\"\ndesired = { provision = \"active\", power = \"on\" }\n",
        ),
    ])
}

fn text_of(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A node removed with `prune = true`: the plan of a new process shows the
/// undeploy, and `rivet reconcile` does it from the kept declarations.
#[test]
fn a_removed_node_is_pruned_by_a_later_reconcile_and_the_plan_says_so() {
    let fleet = two_nodes(true);
    let dir = fleet.path();
    let out = run(dir, &["reconcile"]);
    assert!(out.status.success(), "{}", text_of(&out));
    assert_eq!(fake_bmc(dir, "n2")["power"], "power on");
    std::fs::remove_file(dir.join("nodes/b.toml")).unwrap();

    let plan = run(dir, &["reconcile", "--dry-run", "--detailed-exitcode"]);
    let shown = text_of(&plan);
    assert_eq!(plan.status.code(), Some(2), "{shown}");
    assert!(
        shown.contains("  - node n2 (active, power power on)"),
        "{shown}"
    );
    assert!(shown.contains("undeployed (power off, back to available), then unmanaged"));
    assert!(shown.contains("1 to prune"), "{shown}");
    let json = run(dir, &["reconcile", "--dry-run", "--format", "json"]);
    let plan: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(plan["removed"][0]["name"], "n2");
    assert_eq!(plan["removed"][0]["removal"], "prune");
    assert_eq!(plan["summary"]["prune"], 1);

    let out = run(dir, &["reconcile"]);
    assert!(out.status.success(), "{}", text_of(&out));
    assert_eq!(fake_bmc(dir, "n2")["power"], "power off");
    assert_eq!(
        fake_bmc(dir, "n1")["power"],
        "power on",
        "only n2 is touched"
    );
    let store = store_of(dir);
    let n2 = store.node("n2").unwrap().unwrap();
    assert!(n2.unmanaged);
    assert_eq!(n2.provision_state, ProvisionState::Available);
    let actions: Vec<String> = store
        .node_history("n2", 100)
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(actions.iter().any(|a| a == "prune"), "{actions:?}");
    drop(store);
    let again = run(dir, &["reconcile", "--dry-run", "--detailed-exitcode"]);
    assert_eq!(again.status.code(), Some(0), "{}", text_of(&again));
}

/// Without `prune`, a removal is in the plan as "left as it is", and a
/// prune asked for after the node's declaration was lost says why it is
/// not done.
#[test]
fn a_removal_without_prune_is_planned_as_unmanage() {
    let fleet = two_nodes(false);
    let dir = fleet.path();
    assert!(run(dir, &["reconcile"]).status.success());
    std::fs::remove_file(dir.join("nodes/b.toml")).unwrap();
    let plan = run(dir, &["reconcile", "--dry-run", "--detailed-exitcode"]);
    let shown = text_of(&plan);
    assert_eq!(plan.status.code(), Some(2), "{shown}");
    assert!(
        shown.contains("  ~ node n2 (active, power power on)"),
        "{shown}"
    );
    assert!(
        shown.contains("left as it is, no longer managed"),
        "{shown}"
    );
    assert!(shown.contains("1 to unmanage"), "{shown}");

    // Without kept declarations (as in a state file from before they were
    // kept), a prune cannot be done.
    {
        let store = store_of(dir);
        store
            .apply(&[rivet::store::Write::Declarations(Vec::new())])
            .unwrap();
    }
    std::fs::write(dir.join("rivet.toml"), "[conductor]\nprune = true\n").unwrap();
    let plan = run(dir, &["reconcile", "--dry-run"]);
    let shown = text_of(&plan);
    assert!(
        shown.contains("note: prune = true, but its declaration is not kept"),
        "{shown}"
    );
    assert!(shown.contains("1 to unmanage"), "{shown}");
    let out = run(dir, &["reconcile"]);
    assert!(out.status.success(), "{}", text_of(&out));
    assert_eq!(fake_bmc(dir, "n2")["power"], "power on", "left as it is");
    assert!(store_of(dir).node("n2").unwrap().unwrap().unmanaged);
}

/// A node in maintenance is left alone (as Ironic refuses to provision it)
/// and converges once it leaves maintenance.
#[test]
fn a_node_in_maintenance_is_not_converged_until_it_leaves() {
    let fleet = two_nodes(false);
    let dir = fleet.path();
    assert!(run(dir, &["reconcile"]).status.success());
    {
        let store = store_of(dir);
        let mut n1 = store.node("n1").unwrap().unwrap();
        n1.maintenance = true;
        n1.fault = Some("power failure".into());
        store.put_node("n1", &n1).unwrap();
    }
    let nodes = dir.join("nodes/a.toml");
    let text = std::fs::read_to_string(&nodes).unwrap();
    std::fs::write(&nodes, text.replace("power = \"on\"", "power = \"off\"")).unwrap();

    let out = run(dir, &["reconcile"]);
    let said = text_of(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("n1: not started: in maintenance (power failure)"),
        "{said}"
    );
    assert_eq!(fake_bmc(dir, "n1")["power"], "power on", "left alone");

    {
        let store = store_of(dir);
        let mut n1 = store.node("n1").unwrap().unwrap();
        n1.maintenance = false;
        n1.fault = None;
        store.put_node("n1", &n1).unwrap();
    }
    let out = run(dir, &["reconcile"]);
    assert!(out.status.success(), "{}", text_of(&out));
    assert_eq!(fake_bmc(dir, "n1")["power"], "power off");
}
