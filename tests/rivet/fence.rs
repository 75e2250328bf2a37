//! Fencing at the driver boundary: a conductor whose lease ran out reaches
//! no BMC, a BMC refuses an older owner's token, and the fake BMCs' call log
//! shows what every conductor sent.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use rivet::conductor::context;
use rivet::conductor::plan::{load_valid, plan_loaded};
use rivet::driver::fake::{CallLine, FakeBmcDir, FakeBmcs};
use rivet::driver::fence::{self, Fenced, LeaseClock, Permit, Permits};
use rivet::driver::redfish::Timing;
use rivet::driver::registry::Registry;
use rivet::driver::{ErrorKind, Management, Power};
use rivet::model::fleet::Fleet;
use rivet::model::node::Node;
use rivet::reconcile::pass::{Pass, PassOptions, run_pass};
use rivet::reconcile::{Ctx, Stop};
use rivet::store::Store;
use rivet::store::records::Outcome;
use rivet::vocab::{BootDevice, PowerState, ProvisionState};
use tokio_util::sync::CancellationToken;

use crate::call_log::check_call_log;
use crate::fault_server::{FaultServer, json};
use crate::redfish::{fault_node, one_node, run, system_doc};
use crate::support::TempFleet;

/// One fake node `n1` (with `bmc`, if given), deployed and powered on.
fn fake_fleet(bmc: &str) -> TempFleet {
    TempFleet::new(&[
        ("rivet.toml", "[conductor]\nhost = \"c1\"\n"),
        (
            "nodes/n.toml",
            &format!(
                "[[node]]\nname = \"n1\"\ndriver = \"fake-hardware\"\n{bmc}desired = {{ provision = \"active\", power = \"on\" }}\n"
            ),
        ),
    ])
}

fn load(dir: &Path) -> Arc<Fleet> {
    Arc::new(load_valid(dir).expect("a valid fleet"))
}

fn bmcs(fleet: &Fleet) -> FakeBmcDir {
    FakeBmcDir::new(fleet.conductor.fake_bmc_dir.clone(), false)
}

/// The call log's lines, as the BMC wrote them.
fn calls(fleet: &Fleet) -> Vec<CallLine> {
    let path = bmcs(fleet).call_log();
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn clocked(host: &str, token: i64, clock: &Arc<LeaseClock>) -> Permit {
    Permit {
        host: Arc::from(host),
        token,
        clock: Some(Arc::clone(clock)),
    }
}

/// A clock whose lease has ended.
fn expired() -> Arc<LeaseClock> {
    let clock = Arc::new(LeaseClock::new(Duration::ZERO));
    clock.renewed(Instant::now(), Duration::from_secs(10));
    clock.expire();
    clock
}

/// A power change and a boot device change under `clock`'s permit: both
/// refused as fenced.
async fn changes_are_fenced(
    power: &dyn Power,
    management: &dyn Management,
    node: &Node,
    clock: &Arc<LeaseClock>,
) {
    let set = power.set_power_state(node, PowerState::On, Duration::from_secs(10));
    let error = fence::within(clocked("c1", 5, clock), set)
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Fenced, "{error}");
    let set = management.set_boot_device(node, BootDevice::Pxe, true);
    let error = fence::within(clocked("c1", 5, clock), set)
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Fenced, "{error}");
}

/// Every node's permit is this one.
struct Owner(Permit);

impl Permits for Owner {
    fn permit(&self, _node: &Node) -> Result<Permit, Fenced> {
        Ok(self.0.clone())
    }
}

/// Grants `grants` permits, then refuses: the node passed to another owner.
struct Until {
    grants: usize,
    asked: AtomicUsize,
}

impl Permits for Until {
    fn permit(&self, _node: &Node) -> Result<Permit, Fenced> {
        if self.asked.fetch_add(1, Ordering::SeqCst) < self.grants {
            Ok(Permit::solo("c1"))
        } else {
            Err(Fenced("the node is owned by c2 now".into()))
        }
    }
}

/// One converge pass over `dir`'s plan with `permits`, as a conductor runs it.
async fn pass(dir: &Path, store: &Arc<Store>, permits: Arc<dyn Permits>) -> Pass {
    let planned = plan_loaded(load_valid(dir).unwrap(), false, Some(store)).unwrap();
    let fleet = Arc::new(planned.fleet);
    let registry = Arc::new(context::registry(&fleet, false));
    let journal = rivet::reconcile::journal::Journal::start(Arc::clone(store));
    let locks = Arc::new(rivet::reconcile::locks::LocalLocks::default());
    let agents = Arc::new(rivet::reconcile::agent::Agents::empty(
        Arc::clone(store),
        fleet.conductor.agent_heartbeat_timeout,
    ));
    let mut ctx = context::with(fleet, registry, journal, locks, agents);
    let only: &mut Ctx = Arc::get_mut(&mut ctx).expect("nothing else holds the context yet");
    only.permits = permits;
    let options = PassOptions {
        workers: 4,
        ..PassOptions::default()
    };
    let stop = Stop::new(CancellationToken::new());
    run_pass(
        Arc::clone(&ctx),
        &planned.plan,
        &planned.snapshot,
        options,
        stop,
        None,
    )
    .await
    .unwrap()
}

fn unix_ns(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// The call-log op of a history action that changes the BMC; `None` for a read.
fn logged_op(action: &str) -> Option<String> {
    if let Some(target) = action.strip_prefix("power ") {
        return Some(format!("set_power_state:power {target}"));
    }
    if let Some(device) = action.strip_prefix("boot device ") {
        return Some(format!("set_boot_device:{device}"));
    }
    if let Some(mode) = action.strip_prefix("boot mode ") {
        return Some(format!("set_boot_mode:{mode}"));
    }
    (!matches!(action, "verify" | "inspect")).then(|| action.to_string())
}

#[test]
fn a_converge_logs_each_bmc_change_in_fake_bmc_dir_with_its_host_and_token_0() {
    let fleet = TempFleet::new(&[
        (
            "rivet.toml",
            "[conductor]\nhost = \"conductor-a\"\nfake_bmc_dir = \"shared/bmcs\"\n",
        ),
        (
            "nodes/n.toml",
            "[[node]]\nname = \"n1\"\ndriver = \"fake-hardware\"\ndesired = { provision = \"active\", power = \"on\" }\n\n\
             [[node]]\nname = \"n2\"\ndriver = \"fake-hardware\"\ndesired = { provision = \"manageable\", power = \"off\", boot_device = \"pxe\", boot_mode = \"uefi\" }\n",
        ),
    ]);
    let out = run(fleet.path(), &["reconcile"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let shared = fleet.path().join("shared/bmcs");
    assert!(shared.join("n1.json").is_file() && shared.join("n2.json").is_file());
    assert!(!fleet.path().join(".rivet/fake-bmc").exists());

    let text = std::fs::read_to_string(shared.join("calls.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for line in &lines {
        let mut keys: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["end_ns", "host", "node", "op", "start_ns", "token"],
            "{line}"
        );
        assert_eq!(line["host"], "conductor-a");
        assert_eq!(line["token"], 0);
        assert_eq!(line["end_ns"], line["start_ns"], "no latency: {line}");
    }
    let store = Store::open(&fleet.path().join(".rivet/state.redb")).unwrap();
    for node in ["n1", "n2"] {
        let changes: Vec<String> = store
            .node_history(node, 100)
            .unwrap()
            .into_iter()
            .filter(|e| e.protocol.as_deref() == Some("fake") && e.outcome == Outcome::Succeeded)
            .filter_map(|e| logged_op(&e.action))
            .collect();
        let logged: Vec<&str> = lines
            .iter()
            .filter(|l| l["node"] == node)
            .map(|l| l["op"].as_str().unwrap())
            .collect();
        assert!(!changes.is_empty(), "{node} changed its BMC");
        assert_eq!(logged, changes, "{node}: one line per change, in order");
    }
    let summary = check_call_log(&shared.join("calls.jsonl")).unwrap();
    assert_eq!((summary.accepted, summary.refused), (lines.len(), 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_that_ends_mid_run_stops_the_node_with_its_journal_and_the_next_owner_resumes() {
    // Each BMC call takes 500 ms; the margin covers one, as it must.
    let latency = Duration::from_millis(500);
    let fleet = fake_fleet("bmc = { address = \"fake://n1?latency=500ms\" }\n");
    let dir = fleet.path();
    let store = Arc::new(Store::open(&load(dir).conductor.state).unwrap());

    let clock = Arc::new(LeaseClock::new(latency));
    let ttl = Duration::from_millis(1750);
    let (renewed, renewed_wall) = (Instant::now(), SystemTime::now());
    clock.renewed(renewed, ttl);
    let deadline_ns = unix_ns(renewed_wall + ttl - latency);
    let first = pass(dir, &store, Arc::new(Owner(clocked("c1", 5, &clock)))).await;
    assert_eq!(first.report.stopped, ["n1"], "{:?}", first.report);
    assert!(first.report.failed.is_empty());
    assert!(clock.fenced_calls() >= 1);

    let journal = store
        .journals()
        .unwrap()
        .remove("n1")
        .expect("the journal is kept");
    let record = store.node("n1").unwrap().unwrap();
    assert_eq!(
        record.last_error, None,
        "being fenced is no failure of the node"
    );
    assert_ne!(record.provision_state, ProvisionState::DeployFailed);
    let mine = calls(&load(dir));
    assert!(
        mine.iter()
            .all(|c| c.start_ns < deadline_ns && c.host == "c1"),
        "no call after the lease's deadline: {mine:?}"
    );
    assert!(
        mine.len() < 3,
        "the run stopped before its last change: {mine:?}"
    );

    // The owner key goes with the lease only when its TTL has passed: the
    // next owner takes the node no earlier.
    tokio::time::sleep_until((renewed + ttl).into()).await;
    let next = pass(
        dir,
        &store,
        Arc::new(Owner(Permit {
            host: Arc::from("c2"),
            token: 6,
            clock: None,
        })),
    )
    .await;
    assert_eq!(
        next.resumed,
        ["n1"],
        "resumed at operation {}",
        journal.next
    );
    assert_eq!(next.report.converged, ["n1"], "{:?}", next.report);
    let bmc = bmcs(&load(dir)).get("n1").unwrap();
    assert_eq!(bmc.power, PowerState::On);
    assert_eq!(bmc.tokens.get("n1"), Some(&6));
    let summary = check_call_log(&bmcs(&load(dir)).call_log()).unwrap();
    assert_eq!(summary.hosts, ["c1".to_string(), "c2".to_string()].into());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_permit_stops_the_run_before_its_next_operation_with_the_journal_kept() {
    let fleet = fake_fleet("");
    let dir = fleet.path();
    let store = Arc::new(Store::open(&load(dir).conductor.state).unwrap());
    let grants = 5;
    let permits = Arc::new(Until {
        grants,
        asked: AtomicUsize::new(0),
    });
    let stopped = pass(dir, &store, permits).await;
    assert_eq!(stopped.report.stopped, ["n1"], "{:?}", stopped.report);
    let journal = store
        .journals()
        .unwrap()
        .remove("n1")
        .expect("the journal is kept");
    assert_eq!(journal.next, grants, "stopped where the permit was refused");
    assert_eq!(store.node("n1").unwrap().unwrap().last_error, None);
    let history = store.node_history("n1", 100).unwrap();
    let started = history
        .iter()
        .filter(|e| e.outcome == Outcome::Started)
        .count();
    assert_eq!(started, grants, "no operation started after the refusal");
}

#[tokio::test]
async fn an_expired_clock_sends_no_fake_bmc_change_and_counts_the_check() {
    let fleet = fake_fleet("");
    let fleet = load(fleet.path());
    let node = fleet.node("n1").unwrap();
    let registry = context::registry(&fleet, false);
    let clock = expired();

    assert_eq!(
        fence::within(clocked("c1", 5, &clock), async { fence::check("power on") })
            .await
            .unwrap_err()
            .kind,
        ErrorKind::Fenced
    );
    let power = registry.power(node).unwrap();
    let management = registry.management(node).unwrap();
    changes_are_fenced(&*power, &*management, node, &clock).await;
    assert_eq!(clock.fenced_calls(), 3);

    // Reads are never fenced.
    let read = fence::within(clocked("c1", 5, &clock), power.get_power_state(node)).await;
    assert_eq!(read.unwrap(), PowerState::Off);
    assert!(!bmcs(&fleet).file("n1").exists(), "the BMC was not changed");
    assert!(calls(&fleet).is_empty(), "nothing reached the BMC");
}

#[tokio::test]
async fn a_bmc_refuses_a_token_older_than_one_it_accepted() {
    let fleet = fake_fleet("");
    let fleet = load(fleet.path());
    let node = fleet.node("n1").unwrap();
    let power = context::registry(&fleet, false).power(node).unwrap();
    let clock = Arc::new(LeaseClock::new(Duration::ZERO));
    clock.renewed(Instant::now(), Duration::from_secs(60));

    let on = power.set_power_state(node, PowerState::On, Duration::from_secs(5));
    fence::within(clocked("c2", 5, &clock), on).await.unwrap();
    let off = power.set_power_state(node, PowerState::Off, Duration::from_secs(5));
    let error = fence::within(clocked("c1", 3, &clock), off)
        .await
        .unwrap_err();
    let why = "fencing token 3 is older than 5: another conductor owns this node";
    assert_eq!(
        (error.kind, error.message.as_str()),
        (ErrorKind::Fenced, why)
    );

    assert_eq!(bmcs(&fleet).get("n1").unwrap().power, PowerState::On);
    let lines = calls(&fleet);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!((lines[0].token, lines[0].refused.as_deref()), (5, None));
    assert_eq!(
        (
            &*lines[1].host,
            lines[1].token,
            lines[1].op.as_str(),
            lines[1].refused.as_deref()
        ),
        ("c1", 3, "set_power_state:power off", Some(why))
    );
    let summary = check_call_log(&bmcs(&fleet).call_log()).unwrap();
    assert_eq!((summary.accepted, summary.refused), (1, 1));
}

fn redfish_registry(fleet: &Fleet, timing: Timing) -> Registry {
    Registry::with_timing(fleet.root.clone(), Arc::new(bmcs(fleet)), timing)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redfish_change_under_an_expired_clock_never_reaches_the_bmc() {
    let server = FaultServer::start(|_| json(200, system_doc("Off")));
    let dir = one_node(
        &format!(
            "redfish+http://127.0.0.1:{}/redfish/v1/Systems/1",
            server.port
        ),
        "",
    );
    let fleet = load(dir.path());
    let node = fleet.node("n1").unwrap();
    let registry = redfish_registry(&fleet, crate::redfish::short());
    let clock = expired();

    let power = registry.power(node).unwrap();
    let management = registry.management(node).unwrap();
    changes_are_fenced(&*power, &*management, node, &clock).await;

    let seen = server.seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the system was read");
    assert!(
        seen.iter().all(|s| s.method == "GET"),
        "only reads reached the BMC: {:?}",
        seen.iter()
            .map(|s| (&s.method, &s.path))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redfish_change_sent_just_before_the_deadline_ends_with_the_lease() {
    // The reset is never answered: only the lease can end the request.
    let server = FaultServer::start(|s| match (s.method.as_str(), s.path.as_str()) {
        ("POST", p) if p.contains("Sessions") => Some((404, vec![], String::new())),
        ("POST", _) => None,
        _ => json(200, system_doc("Off")),
    });
    let (_dir, fleet) = fault_node(&server);
    let node = fleet.node("n1").unwrap();
    let timing = Timing {
        request: Duration::from_secs(30),
        ..crate::redfish::short()
    };
    let power = redfish_registry(&fleet, timing).power(node).unwrap();
    let clock = Arc::new(LeaseClock::new(Duration::ZERO));
    clock.renewed(Instant::now(), Duration::from_millis(600));

    let started = Instant::now();
    let set = power.set_power_state(node, PowerState::On, Duration::from_secs(60));
    let error = fence::within(clocked("c1", 5, &clock), set)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(error.kind, ErrorKind::Fenced, "{error}");
    assert!(
        took < Duration::from_secs(5),
        "took {took:?}, not the 30 s request timeout"
    );
    let resets = server
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.method == "POST" && s.path.ends_with("ComputerSystem.Reset"))
        .count();
    assert_eq!(
        resets, 1,
        "sent once in time, never again after the deadline"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ipmitool_change_under_an_expired_clock_is_not_run() {
    let Some(one) = crate::ipmi::one_bmc("fenced", "power = \"on\"") else {
        return;
    };
    let (node, ipmi) = (one.node(), one.driver());
    let clock = expired();
    changes_are_fenced(&ipmi, &ipmi, node, &clock).await;
    assert!(!one.bed.bmcs[0].power_on());
    assert_eq!(
        one.chassis_calls(),
        ["get power"],
        "only the status was read; no change ran"
    );
    assert_eq!(clock.fenced_calls(), 2);
}
