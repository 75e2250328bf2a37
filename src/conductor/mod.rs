//! The conductor: rivet's use cases, called by the CLI, the daemon and the
//! HTTP API, none of which calls another.
//!
//! - `plan`: load a fleet, observe it (store, and BMCs when refreshing), plan,
//!   check saved plans;
//! - `converge`: converge once (`rivet reconcile`);
//! - `Conductor` (this file): the long-lived state of a daemon — declarations
//!   in force, the store, journal, node locks and drivers it keeps across
//!   passes and sweeps — with the daemon loop's steps (reload, plan and run
//!   a pass, power sync, history pruning);
//! - `passthru`: vendor passthru calls (check, lock, call, record);
//! - `status`: what the state file says of each node;
//! - `drivers`: hardware types as `baremetal driver` shows them;
//! - `metrics`: the counters `GET /metrics` renders;
//! - `cluster`: this daemon as a member of a cluster on etcd (`[cluster]`):
//!   lease, ownership, the journal's copy in etcd, peers' records.
//!
//! Nothing here prints, knows HTTP or parses arguments.

pub mod cluster;
pub mod context;
pub mod converge;
pub mod drivers;
pub mod metrics;
pub mod passthru;
pub mod plan;
pub mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio_util::task::TaskTracker;

use crate::diag::Problem;
use crate::driver::registry::Registry;
use crate::model::fleet::{Fleet, HostOverrides, load_with};
use crate::plan::declaration_digest;
use crate::reconcile::agent::Agents;
use crate::reconcile::journal::Journal;
use crate::reconcile::locks::{LocalLocks, NodeLocks};
use crate::reconcile::pass::{Pass, PassOptions, run_pass};
use crate::reconcile::power_sync::{self, SweepReport};
use crate::reconcile::{Ctx, Stop};
use crate::store::{Snapshot, Store};
use cluster::Cluster;
use metrics::Metrics;

/// Why a conductor could not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The declarations have problems; the caller shows them.
    #[error("{} problem(s) in the declarations; fix them and start again", .0.len())]
    Invalid(Vec<Problem>),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
}

/// A daemon's state: what it converges, with what, and how it went.
pub struct Conductor {
    pub dir: PathBuf,
    /// This host's flags over the declarations, kept for every reload.
    pub overrides: HostOverrides,
    pub store: Arc<Store>,
    pub journal: Journal,
    /// One lock table for passes, power sync and passthru.
    pub locks: Arc<dyn NodeLocks>,
    /// The declarations in force (the last good ones).
    fleet: RwLock<Arc<Fleet>>,
    /// The drivers, kept across passes and sweeps so that BMC clients (and
    /// their sessions) are reused.
    registry: RwLock<Arc<Registry>>,
    /// Problems of the last reload that failed, until one succeeds.
    load_problems: RwLock<Vec<String>>,
    pub watcher_alive: AtomicBool,
    last_pass: Mutex<Option<(Instant, Pass)>>,
    pub started: Instant,
    /// What `GET /metrics` reports.
    pub metrics: Arc<Metrics>,
    /// Async passthru calls still running; shutdown waits for them.
    calls: TaskTracker,
    /// This daemon as a cluster member; `None` without `[cluster]`: it
    /// owns every node.
    pub cluster: Option<Arc<Cluster>>,
    /// The agent channels of its deploys; the API answers their agents.
    pub agents: Arc<Agents>,
}

/// A pass planned by `Conductor::plan_pass`, ready to run.
pub struct PassWork {
    ctx: Arc<Ctx>,
    plan: crate::plan::Plan,
    snapshot: Snapshot,
    previous: Option<Arc<Fleet>>,
    exclude: BTreeSet<String>,
    workers: usize,
    /// The nodes this pass may touch.
    pub nodes: BTreeSet<String>,
}

impl PassWork {
    /// Run the pass until its nodes converge, fail, or `stop` says so.
    pub async fn run(self, stop: Stop) -> Result<Pass, String> {
        let options = PassOptions {
            previous: self.previous.as_deref(),
            exclude: self.exclude,
            workers: self.workers,
        };
        run_pass(self.ctx, &self.plan, &self.snapshot, options, stop, None)
            .await
            .map_err(|e| e.to_string())
    }
}

impl Conductor {
    /// Load the declarations with this host's `overrides` and open the
    /// state file; refuses at once when another process holds it.
    pub fn open(dir: &Path, overrides: &HostOverrides) -> Result<Arc<Self>, OpenError> {
        let loaded = load_with(dir, overrides);
        if !loaded.is_valid() {
            return Err(OpenError::Invalid(loaded.problems));
        }
        let fleet = loaded.fleet;
        let store = Arc::new(Store::open(&fleet.conductor.state)?);
        let cluster = match &fleet.cluster {
            Some(settings) => Some(Cluster::new(
                settings,
                &fleet.conductor.host,
                dir,
                Arc::clone(&store),
            )?),
            None => None,
        };
        let journal =
            Journal::start_mirrored(Arc::clone(&store), cluster.as_ref().map(|c| c.mirror()));
        let metrics = Arc::new(Metrics::default());
        metrics.watch(&store);
        let registry = Arc::new(context::registry(&fleet, false));
        let agents = Arc::new(Agents::load(
            Arc::clone(&store),
            fleet.conductor.agent_heartbeat_timeout,
        )?);
        Ok(Arc::new(Self {
            agents,
            dir: dir.to_path_buf(),
            overrides: overrides.clone(),
            store,
            journal,
            locks: Arc::new(LocalLocks::default()),
            fleet: RwLock::new(Arc::new(fleet)),
            registry: RwLock::new(registry),
            load_problems: RwLock::new(Vec::new()),
            watcher_alive: AtomicBool::new(false),
            last_pass: Mutex::new(None),
            started: Instant::now(),
            metrics,
            calls: TaskTracker::new(),
            cluster,
        }))
    }

    /// The declarations in force.
    pub fn fleet(&self) -> Arc<Fleet> {
        Arc::clone(&self.fleet.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The drivers passes, sweeps and passthru calls go through.
    pub fn registry(&self) -> Arc<Registry> {
        Arc::clone(&self.registry.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// A converge context over the declarations in force.
    pub fn ctx(&self) -> Arc<Ctx> {
        context::with_permits(
            self.fleet(),
            self.registry(),
            self.journal.clone(),
            Arc::clone(&self.locks),
            self.permits(),
            Arc::clone(&self.agents),
        )
    }

    /// What mutating BMC calls act under: the cluster's per-node permits,
    /// or this daemon's own (it owns every node).
    pub fn permits(&self) -> Arc<dyn crate::driver::fence::Permits> {
        match &self.cluster {
            Some(cluster) => cluster.permits(),
            None => Arc::new(crate::driver::fence::Solo(Arc::from(
                self.fleet().conductor.host.as_str(),
            ))),
        }
    }

    /// The fleet this conductor serves, as `/healthz` names it
    /// (`status::fleet_identity`).
    pub fn fleet_identity(&self) -> String {
        status::fleet_identity(&self.dir, self.store.path())
    }

    pub fn watcher_alive(&self) -> bool {
        self.watcher_alive.load(Ordering::SeqCst)
    }

    /// When the last converge pass finished.
    pub fn last_pass(&self) -> Option<Instant> {
        self.last_pass
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(at, _)| *at)
    }

    /// Problems of the last reload that failed.
    pub fn declaration_problems(&self) -> usize {
        self.load_problems
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Load the declarations again. On problems keep the last good ones; on
    /// success install the new ones, stop runs (of `running`) of nodes whose
    /// declarations changed, and return the previous declarations.
    pub fn reload(&self, running: Option<&Stop>) -> Option<Arc<Fleet>> {
        let loaded = load_with(&self.dir, &self.overrides);
        if !loaded.is_valid() {
            let messages: Vec<String> = loaded
                .problems
                .iter()
                .map(|p| match &p.at {
                    Some(at) => format!("{}: {}", at.loc.position(), p.message),
                    None => p.message.clone(),
                })
                .collect();
            for m in &messages {
                tracing::error!(problem = %m, "declarations have problems; keeping the last good declarations");
            }
            *self
                .load_problems
                .write()
                .unwrap_or_else(|e| e.into_inner()) = messages;
            return None;
        }
        self.load_problems
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let old = self.fleet();
        let new = Arc::new(loaded.fleet);
        let old_digests: BTreeMap<&str, String> = old
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), declaration_digest(n)))
            .collect();
        let mut changed = 0;
        for node in &new.nodes {
            if old_digests.get(node.name.as_str()) != Some(&declaration_digest(node)) {
                if let Some(stop) = running {
                    stop.replan(&node.name);
                }
                changed += 1;
            }
        }
        let removed = old
            .nodes
            .iter()
            .filter(|n| new.node(&n.name).is_none())
            .count();
        tracing::info!(
            changed,
            removed,
            nodes = new.nodes.len(),
            "declarations reloaded"
        );
        let retired =
            if new.conductor.ipmi_min_command_interval != old.conductor.ipmi_min_command_interval {
                Some(std::mem::replace(
                    &mut *self.registry.write().unwrap_or_else(|e| e.into_inner()),
                    Arc::new(context::registry(&new, false)),
                ))
            } else {
                None
            };
        // Sessions of BMCs that left the fleet (or of a replaced registry)
        // are deleted, not left to pile up on the BMC.
        let registry = self.registry();
        let kept = Arc::clone(&new);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Some(old) = retired {
                    old.close().await;
                }
                let nodes: Vec<&crate::model::node::Node> =
                    kept.nodes.iter().map(|n| n.as_ref()).collect();
                registry.retain(&nodes).await;
            });
        }
        *self.fleet.write().unwrap_or_else(|e| e.into_inner()) = new;
        Some(old)
    }

    /// Plan a pass over the declarations in force, leaving out the nodes in
    /// `backing_off`; `None` when there is nothing to do.
    pub fn plan_pass(
        &self,
        previous: Option<Arc<Fleet>>,
        backing_off: BTreeSet<String>,
        in_flight: &BTreeSet<String>,
    ) -> Option<PassWork> {
        let fleet = self.fleet();
        let mut snapshot = match Snapshot::of(&self.store) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the state file");
                return None;
            }
        };
        let plan = match crate::plan::build(&fleet, &plan::observed(&snapshot), Vec::new()) {
            Ok(plan) => plan,
            Err(problems) => {
                for p in &problems {
                    tracing::error!(code = p.code, "{}", p.message);
                }
                return None;
            }
        };
        let mut backing_off = backing_off;
        if let Some(cluster) = &self.cluster {
            plan::cluster_share(
                &fleet,
                &plan,
                &mut snapshot,
                &cluster.owned(),
                in_flight,
                &mut backing_off,
            );
        }
        if !plan::daemon_has_work(&fleet, &plan, &snapshot, &backing_off) {
            return None;
        }
        let nodes: BTreeSet<String> = plan
            .nodes
            .iter()
            .map(|n| n.name.clone())
            .filter(|n| !backing_off.contains(n))
            .chain(snapshot.nodes.keys().cloned())
            .collect();
        tracing::info!(
            deploy = plan.summary.deploy,
            undeploy = plan.summary.undeploy,
            power_on = plan.summary.power_on,
            power_off = plan.summary.power_off,
            change = plan.summary.change,
            "planned changes; converging"
        );
        let previous = plan::previous_or_kept(&fleet, &snapshot, &self.store, previous);
        Some(PassWork {
            ctx: self.ctx(),
            workers: fleet.conductor.workers as usize,
            plan,
            snapshot,
            previous,
            exclude: backing_off,
            nodes,
        })
    }

    /// Place the fleet once (cluster members only): claim, hand over, and
    /// commit what claimed nodes bring from etcd. Whether nodes were
    /// claimed (a pass has new work).
    pub async fn cluster_tick(&self, in_flight: &BTreeSet<String>) -> bool {
        let Some(cluster) = &self.cluster else {
            return false;
        };
        let fleet = self.fleet();
        // Asked only of owned nodes placed elsewhere or removed: a node with
        // a journal is in a run, even between passes (and one whose state
        // cannot be read counts as in one); a removed node stays until a
        // pass marked it unmanaged (or pruned it): nobody else will.
        let in_run = |name: &str| {
            in_flight.contains(name) || self.store.journal(name).map_or(true, |j| j.is_some())
        };
        let unsettled = |name: &str| {
            fleet.node(name).is_none()
                && self
                    .store
                    .node(name)
                    .ok()
                    .flatten()
                    .is_some_and(|r| !r.unmanaged)
        };
        let busy = |name: &str| in_run(name) || unsettled(name);
        let tick = cluster.tick(&fleet, &busy).await;
        if !tick.writes.is_empty()
            && let Err(e) = self.journal.commit(tick.writes).await
        {
            tracing::warn!(error = %e, "cannot record the claimed nodes");
        }
        !tick.claimed.is_empty()
    }

    /// Record a finished pass for `/healthz` and `/metrics`.
    pub fn pass_finished(&self, took: Duration, pass: Option<Pass>) {
        self.metrics.pass_finished(took);
        if let Some(pass) = pass {
            *self.last_pass.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((Instant::now(), pass));
        }
    }

    /// Delete the BMC sessions the drivers hold; the daemon calls it when
    /// it stops.
    pub async fn close_sessions(&self) {
        self.registry().close().await;
    }

    /// Read every node's power once (drift policy, maintenance).
    pub async fn power_sync(&self) -> SweepReport {
        let fleet = self.fleet();
        let workers = fleet.conductor.power_sync_workers as usize;
        power_sync::sweep(self.ctx(), fleet, workers).await
    }

    /// Remove every node's history beyond `history_max_entries`.
    pub async fn prune_history(&self) {
        let Some(keep) = self.fleet().conductor.history_max_entries else {
            return;
        };
        let store = Arc::clone(&self.store);
        match tokio::task::spawn_blocking(move || store.prune_history(keep, None)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => tracing::info!(removed, keep, "history pruned"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not prune history"),
            Err(e) => tracing::warn!(error = %e, "history pruning stopped"),
        }
    }
}
