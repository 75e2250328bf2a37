//! Periodic power sync: read every managed node's power state with bounded
//! concurrency; enforce or report drift from the declared power; three
//! consecutive failed reads put a node in maintenance with fault
//! `power failure`, and the first good read takes it out again.
//!
//! A drift goes to history once when it is found and once when it ends,
//! not on every sweep: the store keeps each open drift (`DRIFTS`), so a
//! restarted daemon does not record it again. Power sync writes a node's
//! `last_error` only when no other failure holds it, and clears only what
//! it wrote itself: a run's error stays until a later run clears it.
//!
//! A node this conductor may not act on now (its permit is refused) is
//! neither read nor enforced in that sweep: not an error, and no step
//! toward maintenance. Enforcement runs under the node's permit, and one
//! fenced at the BMC is dropped the same way.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::{Ctx, now};
use crate::config::raw::DriftPolicy;
use crate::driver::{ErrorKind, fence};
use crate::model::fleet::Fleet;
use crate::model::node::Node;
use crate::store::Write;
use crate::store::records::{DriftRecord, Event, NodeRecord, Outcome};
use crate::vocab::PowerState;

/// Failed reads in a row that put a node into maintenance.
pub const FAILURES_FOR_MAINTENANCE: u32 = 3;
pub const POWER_FAILURE: &str = "power failure";

/// What one sweep found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SweepReport {
    pub read: usize,
    /// Every node read whose power differs from its declaration.
    pub drifted: Vec<String>,
    /// Of those, the ones whose drift was found now and went to history.
    pub drift_recorded: Vec<String>,
    /// Nodes whose recorded drift ended: their power is as declared again
    /// (or none is declared any more).
    pub drift_ended: Vec<String>,
    pub enforced: Vec<String>,
    pub failed: Vec<String>,
    pub entered_maintenance: Vec<String>,
    pub recovered: Vec<String>,
}

fn note(node: &str, action: &str, outcome: Outcome, detail: String) -> Event {
    Event::note(node, action, outcome, detail, now())
}

enum Found {
    Read(PowerState),
    Failed(String),
    /// Locked by a run, or not this conductor's to act on now: left for
    /// the next sweep.
    Busy,
}

/// Whether power sync may write the node's `last_error`: nothing else's
/// failure is there (empty, or the message power sync put there itself).
fn may_set_error(record: &NodeRecord, drift: Option<&DriftRecord>) -> bool {
    record.last_error.is_none()
        || drift.is_some_and(|d| d.last_error.is_some() && d.last_error == record.last_error)
}

/// Set `last_error` to `message` when power sync may; `drift` remembers
/// whether the message is power sync's.
fn set_error(record: &mut NodeRecord, drift: &mut DriftRecord, message: String) {
    if may_set_error(record, Some(drift)) {
        record.last_error = Some(message.clone());
        drift.last_error = Some(message);
    } else {
        drift.last_error = None;
    }
}

/// Clear `last_error` when it is the message power sync put there for `drift`.
fn clear_error(record: &mut NodeRecord, drift: &DriftRecord) {
    if drift.last_error.is_some() && record.last_error == drift.last_error {
        record.last_error = None;
    }
}

/// What a sweep gathers from its reads: the report, the writes to commit
/// in one batch, the drifts to enforce, and the drifts open now.
struct Findings {
    policy: DriftPolicy,
    drifts: BTreeMap<String, DriftRecord>,
    report: SweepReport,
    writes: Vec<Write>,
    enforce: Vec<(Arc<Node>, PowerState)>,
}

impl Findings {
    /// `node` (not in maintenance) reads `state`: a drift that starts or
    /// changes is recorded, an unchanged one is not, one that ended is.
    fn power_read(&mut self, node: &Arc<Node>, state: PowerState, record: &mut NodeRecord) {
        let name = &node.name;
        let drifting = node
            .desired
            .power
            .map(PowerState::from)
            .filter(|want| *want != state);
        let Some(want) = drifting else {
            if let Some(ended) = self.drifts.remove(name) {
                self.report.drift_ended.push(name.clone());
                clear_error(record, &ended);
                let now_as = match node.desired.power {
                    Some(_) => "as declared",
                    None => "and no power is declared any more",
                };
                self.writes.push(Write::ClearDrift(name.clone()));
                self.writes.push(Write::Event(note(
                    name,
                    "power drift ended",
                    Outcome::Noted,
                    format!(
                        "power is {} {now_as} (drifting since {})",
                        state.short(),
                        ended.since
                    ),
                )));
            }
            return;
        };
        self.report.drifted.push(name.clone());
        let detail = format!(
            "power is {} but {} is declared",
            state.short(),
            want.short()
        );
        let open = self.drifts.get(name);
        let mut drift = match open.filter(|d| d.found == state && d.declared == want) {
            // Unchanged since it was recorded: not recorded again.
            Some(same) => same.clone(),
            None => {
                self.report.drift_recorded.push(name.clone());
                let recorded = match self.policy {
                    DriftPolicy::Report => detail.clone(),
                    DriftPolicy::Enforce => format!("{detail}: enforcing"),
                };
                self.writes.push(Write::Event(note(
                    name,
                    "power drift",
                    Outcome::Noted,
                    recorded,
                )));
                DriftRecord {
                    found: state,
                    declared: want,
                    since: now(),
                    last_error: open.and_then(|d| d.last_error.clone()),
                    enforce_failure: None,
                }
            }
        };
        match self.policy {
            DriftPolicy::Report => set_error(record, &mut drift, format!("drift: {detail}")),
            DriftPolicy::Enforce => self.enforce.push((Arc::clone(node), want)),
        }
        if self.drifts.get(name) != Some(&drift) {
            self.writes.push(Write::Drift(name.clone(), drift.clone()));
            self.drifts.insert(name.clone(), drift);
        }
    }
}

/// One sweep over every managed node that is not busy.
pub async fn sweep(ctx: Arc<Ctx>, fleet: Arc<Fleet>, concurrency: usize) -> SweepReport {
    let store = Arc::clone(ctx.journal.store());
    let records = store.nodes().unwrap_or_default();
    let drifts: BTreeMap<String, DriftRecord> = match store.drifts() {
        Ok(drifts) => drifts,
        Err(e) => {
            tracing::error!(error = %e, "power sync could not read the drifts it recorded");
            return SweepReport::default();
        }
    };
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for node in fleet
        .nodes
        .iter()
        .filter(|n| records.get(&n.name).is_some_and(|r| !r.unmanaged))
    {
        let ctx = Arc::clone(&ctx);
        let limit = Arc::clone(&limit);
        let node = node.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("semaphore open");
            // A node being converged is read by its runner; skip it.
            let Ok(_guard) = ctx.locks.try_lock(&node.name, "power sync") else {
                return (node, Found::Busy);
            };
            if ctx.permits.permit(&node).is_err() {
                return (node, Found::Busy);
            }
            let found = match ctx.registry.power(&node) {
                Ok(power) => match power.get_power_state(&node).await {
                    Ok(state) => Found::Read(state),
                    Err(e) => Found::Failed(e.message),
                },
                Err(e) => Found::Failed(e.message),
            };
            (node, found)
        });
    }
    let mut found = Findings {
        policy: fleet.conductor.drift,
        drifts,
        report: SweepReport::default(),
        writes: Vec::new(),
        enforce: Vec::new(),
    };
    while let Some(Ok((node, read))) = tasks.join_next().await {
        let Some(mut record) = records.get(&node.name).cloned() else {
            continue;
        };
        let before = record.clone();
        match read {
            Found::Busy => continue,
            Found::Read(state) => {
                found.report.read += 1;
                record.power_failures = 0;
                if record.maintenance && record.fault.as_deref() == Some(POWER_FAILURE) {
                    record.maintenance = false;
                    record.fault = None;
                    found.report.recovered.push(node.name.clone());
                    found.writes.push(Write::Event(note(
                        &node.name,
                        "maintenance",
                        Outcome::Noted,
                        "the BMC answers again: left maintenance".into(),
                    )));
                }
                record.power_state = Some(state);
                // A node in maintenance is left alone, its drift too.
                if !record.maintenance {
                    found.power_read(&node, state, &mut record);
                }
            }
            Found::Failed(error) => {
                found.report.failed.push(node.name.clone());
                record.power_failures += 1;
                if record.power_failures >= FAILURES_FOR_MAINTENANCE && !record.maintenance {
                    record.maintenance = true;
                    record.fault = Some(POWER_FAILURE.to_string());
                    record.last_error = Some(error.clone());
                    found.report.entered_maintenance.push(node.name.clone());
                    found.writes.push(Write::Event(note(
                        &node.name,
                        "maintenance",
                        Outcome::Noted,
                        format!(
                            "{} failed power reads in a row ({error}): entered maintenance",
                            record.power_failures
                        ),
                    )));
                }
            }
        }
        if record != before {
            record.updated_at = Some(now());
            found.writes.push(Write::Node(node.name.clone(), record));
        }
    }
    let Findings {
        mut drifts,
        mut report,
        writes,
        enforce,
        ..
    } = found;
    if !writes.is_empty()
        && let Err(e) = ctx.journal.commit(writes).await
    {
        tracing::error!(error = %e, "power sync could not record what it found");
    }
    // Enforce concurrently, under the same limit as the reads.
    let mut fixes = tokio::task::JoinSet::new();
    for (node, want) in enforce {
        let ctx = Arc::clone(&ctx);
        let limit = Arc::clone(&limit);
        fixes.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("semaphore open");
            let Ok(_guard) = ctx.locks.try_lock(&node.name, "power sync") else {
                return None;
            };
            let permit = ctx.permits.permit(&node).ok()?;
            let result = match ctx.registry.power(&node) {
                Ok(p) => {
                    let set = p.set_power_state(&node, want, ctx.power_timeout);
                    fence::within(permit, set).await
                }
                Err(e) => Err(e),
            };
            if result.as_ref().is_err_and(|e| e.kind == ErrorKind::Fenced) {
                return None;
            }
            Some((node, want, result))
        });
    }
    let mut writes = Vec::new();
    while let Some(Ok(fixed)) = fixes.join_next().await {
        let Some((node, want, result)) = fixed else {
            continue;
        };
        let Some(mut drift) = drifts.remove(&node.name) else {
            continue;
        };
        let mut record =
            store.node(&node.name).ok().flatten().unwrap_or_else(|| {
                NodeRecord::first_seen(node.uuid.to_string(), &node.driver, now())
            });
        let before = record.clone();
        let action = format!("power {}", want.short());
        match result {
            Ok(()) => {
                record.power_state = Some(want);
                clear_error(&mut record, &drift);
                report.enforced.push(node.name.clone());
                writes.push(Write::ClearDrift(node.name.clone()));
                writes.push(Write::Event(note(
                    &node.name,
                    &action,
                    Outcome::Succeeded,
                    "drift enforced".into(),
                )));
            }
            Err(e) => {
                let was = drift.clone();
                // The same failure on every sweep goes to the log only, so
                // it does not push older events out of the node's history.
                if drift.enforce_failure.as_deref() == Some(e.message.as_str()) {
                    tracing::warn!(node = %node.name, error = %e, "enforcing power drift failed again");
                } else {
                    drift.enforce_failure = Some(e.message.clone());
                    writes.push(Write::Event(note(
                        &node.name,
                        &action,
                        Outcome::Failed,
                        e.message.clone(),
                    )));
                }
                set_error(&mut record, &mut drift, format!("enforcing {action}: {e}"));
                if drift != was {
                    writes.push(Write::Drift(node.name.clone(), drift));
                }
            }
        }
        if record != before {
            record.updated_at = Some(now());
            writes.push(Write::Node(node.name.clone(), record));
        }
    }
    if !writes.is_empty()
        && let Err(e) = ctx.journal.commit(writes).await
    {
        tracing::error!(error = %e, "power sync could not record enforced drift");
    }
    report
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::backoff::Backoff;
    use crate::driver::fake::{FakeBmcDir, FakeBmcs};
    use crate::driver::fence::{Fenced, LeaseClock, Permit, Permits};
    use crate::driver::registry::Registry;
    use crate::reconcile::journal::Journal;
    use crate::reconcile::locks::LocalLocks;
    use crate::store::Store;
    use crate::store::records::FakeBmcRecord;
    use crate::vocab::ProvisionState;

    fn fleet(dir: &Path, drift: &str) -> Arc<Fleet> {
        std::fs::create_dir_all(dir.join("nodes")).unwrap();
        std::fs::write(
            dir.join("rivet.toml"),
            format!("[conductor]\ndrift = \"{drift}\"\n"),
        )
        .unwrap();
        std::fs::write(
            dir.join("nodes/a.toml"),
            "[[node]]\nname = \"n1\"\ndriver = \"fake-hardware\"\ndesired = { provision = \"active\", power = \"on\" }\n",
        )
        .unwrap();
        let loaded = crate::model::fleet::load(dir);
        assert!(loaded.is_valid(), "{:?}", loaded.problems);
        Arc::new(loaded.fleet)
    }

    /// What a daemon's sweeps share, over a store opened for them alone.
    fn ctx(fleet: &Arc<Fleet>) -> Arc<Ctx> {
        let store = Arc::new(Store::open(&fleet.conductor.state).unwrap());
        let bmcs = Arc::new(FakeBmcDir::beside(&fleet.conductor.state, false));
        Arc::new(Ctx {
            fleet: Arc::clone(fleet),
            registry: Arc::new(Registry::new(fleet.root.clone(), bmcs)),
            agents: Arc::new(crate::reconcile::agent::Agents::empty(
                Arc::clone(&store),
                Duration::from_secs(60),
            )),
            journal: Journal::start(store),
            locks: Arc::new(LocalLocks::default()),
            attempts: 1,
            retry: Backoff {
                base: Duration::from_millis(1),
                cap: Duration::from_millis(1),
            },
            power_timeout: Duration::from_secs(5),
            permits: Arc::new(crate::driver::fence::Solo(Arc::from("c1"))),
        })
    }

    /// A fleet whose node is deployed, with `last_error`, and its BMC off
    /// behind rivet's back.
    fn deployed_then_powered_off(
        drift: &str,
        last_error: Option<&str>,
    ) -> (tempfile::TempDir, Arc<Fleet>) {
        let dir = tempfile::tempdir().unwrap();
        let fleet = fleet(dir.path(), drift);
        let store = Store::open(&fleet.conductor.state).unwrap();
        let mut record = NodeRecord::enrolled("u-1", "fake-hardware");
        record.provision_state = ProvisionState::Active;
        record.power_state = Some(PowerState::On);
        record.last_error = last_error.map(str::to_string);
        store.put_node("n1", &record).unwrap();
        let bmcs = FakeBmcDir::beside(&fleet.conductor.state, false);
        let off = FakeBmcRecord {
            power: PowerState::Off,
            ..FakeBmcRecord::default()
        };
        bmcs.put("n1", &off).unwrap();
        (dir, fleet)
    }

    fn power_on(fleet: &Arc<Fleet>) {
        let bmcs = FakeBmcDir::beside(&fleet.conductor.state, false);
        let mut bmc = bmcs.get("n1").unwrap();
        bmc.power = PowerState::On;
        bmcs.put("n1", &bmc).unwrap();
    }

    /// Sweep once with a context of its own.
    async fn sweep_with(ctx: &Arc<Ctx>) -> SweepReport {
        sweep(Arc::clone(ctx), Arc::clone(&ctx.fleet), 4).await
    }

    fn close(ctx: Arc<Ctx>) {
        let ctx = Arc::try_unwrap(ctx)
            .ok()
            .expect("the sweep holds no context");
        ctx.journal.close();
    }

    fn actions(fleet: &Fleet) -> Vec<String> {
        let store = Store::open(&fleet.conductor.state).unwrap();
        store
            .node_history("n1", 100)
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_drift_is_recorded_once_even_by_a_restarted_daemon_and_its_end_once() {
        let (_dir, fleet) = deployed_then_powered_off("report", None);

        let first = ctx(&fleet);
        let found = sweep_with(&first).await;
        assert_eq!(found.drifted, ["n1"]);
        assert_eq!(found.drift_recorded, ["n1"]);
        let again = sweep_with(&first).await;
        assert_eq!(again.drifted, ["n1"]);
        assert!(again.drift_recorded.is_empty());
        close(first);

        // A new process over the same state file.
        let restarted = ctx(&fleet);
        let after_restart = sweep_with(&restarted).await;
        assert_eq!(after_restart.drifted, ["n1"]);
        assert!(after_restart.drift_recorded.is_empty());
        let store = Arc::clone(restarted.journal.store());
        assert_eq!(
            store.node("n1").unwrap().unwrap().last_error.as_deref(),
            Some("drift: power is off but on is declared")
        );

        power_on(&fleet);
        let ended = sweep_with(&restarted).await;
        assert_eq!(ended.drift_ended, ["n1"]);
        assert!(ended.drifted.is_empty());
        assert_eq!(
            sweep_with(&restarted).await.drift_ended,
            Vec::<String>::new()
        );
        let n1 = store.node("n1").unwrap().unwrap();
        assert_eq!(n1.last_error, None, "the drift's own message is cleared");
        assert!(store.drifts().unwrap().is_empty());
        drop(store);
        close(restarted);
        assert_eq!(actions(&fleet), ["power drift", "power drift ended"]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_runs_error_is_neither_overwritten_nor_cleared_by_drift() {
        let failure = "deploy.deploy: injected deploy fault";
        let (_dir, fleet) = deployed_then_powered_off("report", Some(failure));
        let ctx = ctx(&fleet);
        let store = Arc::clone(ctx.journal.store());
        for _ in 0..3 {
            assert_eq!(sweep_with(&ctx).await.drifted, ["n1"]);
            let n1 = store.node("n1").unwrap().unwrap();
            assert_eq!(n1.last_error.as_deref(), Some(failure));
        }
        power_on(&fleet);
        assert_eq!(sweep_with(&ctx).await.drift_ended, ["n1"]);
        let n1 = store.node("n1").unwrap().unwrap();
        assert_eq!(n1.last_error.as_deref(), Some(failure));
        drop(store);
        close(ctx);
        assert_eq!(actions(&fleet), ["power drift", "power drift ended"]);
    }

    /// `ctx` with other permits.
    fn with_permits(mut ctx: Arc<Ctx>, permits: impl Permits + 'static) -> Arc<Ctx> {
        Arc::get_mut(&mut ctx).expect("not shared yet").permits = Arc::new(permits);
        ctx
    }

    /// Another conductor owns every node.
    struct Elsewhere;

    impl Permits for Elsewhere {
        fn permit(&self, _node: &Node) -> Result<Permit, Fenced> {
            Err(Fenced("owned by c2".into()))
        }
    }

    /// Every permit's lease has ended.
    struct Expired(Arc<LeaseClock>);

    impl Permits for Expired {
        fn permit(&self, _node: &Node) -> Result<Permit, Fenced> {
            Ok(Permit {
                host: Arc::from("c1"),
                token: 1,
                clock: Some(Arc::clone(&self.0)),
            })
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_node_this_conductor_may_not_act_on_is_neither_read_nor_counted() {
        let (_dir, fleet) = deployed_then_powered_off("enforce", None);
        // A read would fail: three would put the node in maintenance.
        let bmcs = FakeBmcDir::beside(&fleet.conductor.state, false);
        let mut bmc = bmcs.get("n1").unwrap();
        bmc.unreachable = true;
        bmcs.put("n1", &bmc).unwrap();
        let ctx = with_permits(ctx(&fleet), Elsewhere);
        for _ in 0..FAILURES_FOR_MAINTENANCE {
            assert_eq!(sweep_with(&ctx).await, SweepReport::default());
        }
        let n1 = ctx.journal.store().node("n1").unwrap().unwrap();
        assert!(!n1.maintenance && n1.power_failures == 0 && n1.last_error.is_none());
        close(ctx);
        assert!(actions(&fleet).is_empty());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_enforcement_fenced_at_the_bmc_is_no_failure() {
        let (_dir, fleet) = deployed_then_powered_off("enforce", None);
        let clock = Arc::new(LeaseClock::new(Duration::ZERO));
        let ctx = with_permits(ctx(&fleet), Expired(Arc::clone(&clock)));
        let report = sweep_with(&ctx).await;
        assert_eq!(report.drifted, ["n1"], "reads are not fenced");
        assert!(report.enforced.is_empty() && report.failed.is_empty());
        assert_eq!(clock.fenced_calls(), 1);
        let bmcs = FakeBmcDir::beside(&fleet.conductor.state, false);
        assert_eq!(bmcs.get("n1").unwrap().power, PowerState::Off);
        let store = Arc::clone(ctx.journal.store());
        assert_eq!(store.node("n1").unwrap().unwrap().last_error, None);
        drop(store);
        close(ctx);
        assert_eq!(actions(&fleet), ["power drift"], "no failed power on");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_enforced_drift_keeps_a_runs_error() {
        let failure = "deploy.deploy: injected deploy fault";
        let (_dir, fleet) = deployed_then_powered_off("enforce", Some(failure));
        let ctx = ctx(&fleet);
        let store = Arc::clone(ctx.journal.store());
        let enforced = sweep_with(&ctx).await;
        assert_eq!(enforced.drift_recorded, ["n1"]);
        assert_eq!(enforced.enforced, ["n1"]);
        let n1 = store.node("n1").unwrap().unwrap();
        assert_eq!(n1.power_state, Some(PowerState::On));
        assert_eq!(n1.last_error.as_deref(), Some(failure));
        assert!(store.drifts().unwrap().is_empty());
        let quiet = sweep_with(&ctx).await;
        assert!(quiet.drifted.is_empty() && quiet.drift_ended.is_empty());
        drop(store);
        close(ctx);
        assert_eq!(actions(&fleet), ["power drift", "power on"]);
    }
}
