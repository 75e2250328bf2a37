//! Converge once (`rivet reconcile`): run passes over a plan until nothing
//! resumed is left, prune the history of the nodes it touched, and report.
//! What happens is told through `ConvergeEvent`s; nothing here prints.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::context;
use super::plan::{PlanError, Planned, plan_fleet};
use crate::plan::Plan;
use crate::reconcile::agent::Agents;
use crate::reconcile::journal::Journal;
use crate::reconcile::locks::{LocalLocks, NodeLocks};
use crate::reconcile::pass::{PassOptions, has_work, run_pass};
use crate::reconcile::{Progress, Stop};
use crate::store::Store;

/// What a converge tells its caller as it goes.
#[derive(Debug)]
pub enum ConvergeEvent {
    /// A pass starts over this plan (the first, or a re-plan after resuming).
    Pass(Box<Plan>),
    Progress(Progress),
    /// The pass resumed the interrupted runs of this many nodes.
    Resumed(usize),
    /// A node removed from the declarations is left as it is.
    Unmanaged(String),
    /// History could not be pruned at the end.
    PruneFailed(String),
}

/// How a converge ended.
#[derive(Debug, Default)]
pub struct ConvergeReport {
    /// Nothing was to be done: every node matched its declaration.
    pub nothing_to_do: bool,
    pub converged: usize,
    pub failed: Vec<(String, String)>,
    /// Nodes not started, with why.
    pub skipped: Vec<(String, String)>,
    /// Stopped by `stop.shutdown`: the journal holds the work in flight.
    pub interrupted: bool,
    pub elapsed: Duration,
}

impl ConvergeReport {
    pub fn ok(&self) -> bool {
        !self.interrupted && self.failed.is_empty() && self.skipped.is_empty()
    }
}

/// Whether a node of `fleet` deploys through an agent in its ramdisk, so
/// a converge must serve the agent channel.
pub fn drives_agents(fleet: &crate::model::fleet::Fleet) -> bool {
    use crate::model::catalog::Capabilities;
    use crate::vocab::InterfaceType;
    fleet.nodes.iter().any(|node| {
        fleet
            .catalog
            .capabilities(
                InterfaceType::Deploy,
                node.interfaces.get(InterfaceType::Deploy),
            )
            .contains(Capabilities::NEEDS_AGENT)
    })
}

/// Converge `planned` once over the open `store`, its deploys' agents
/// talking through `agents` (which the caller serves). A pass that resumed a
/// crashed run may leave work the declarations ask for: plan again (from
/// `dir`) until a pass resumes nothing, at most three passes.
pub async fn converge_once(
    dir: &Path,
    planned: Planned,
    store: Arc<Store>,
    agents: Arc<Agents>,
    stop: Stop,
    events: UnboundedSender<ConvergeEvent>,
) -> Result<ConvergeReport, PlanError> {
    let Planned {
        fleet,
        mut snapshot,
        mut plan,
        mut previous,
    } = planned;
    let started = Instant::now();
    let mut report = ConvergeReport::default();
    if !has_work(&plan, &snapshot) {
        report.nothing_to_do = true;
        return Ok(report);
    }
    let journal = Journal::start(Arc::clone(&store));
    // One set of drivers for every pass, so a BMC's login is made once and
    // deleted before the converge returns.
    let registry = Arc::new(context::registry(&fleet, false));
    let locks: Arc<dyn NodeLocks> = Arc::new(LocalLocks::default());
    let mut fleet = Arc::new(fleet);
    // Nodes whose history grew, for pruning at the end.
    let mut touched: Vec<String> = Vec::new();
    for round in 0..3 {
        if !has_work(&plan, &snapshot) {
            break;
        }
        let ctx = context::with(
            Arc::clone(&fleet),
            Arc::clone(&registry),
            journal.clone(),
            Arc::clone(&locks),
            Arc::clone(&agents),
        );
        let _ = events.send(ConvergeEvent::Pass(Box::new(plan.clone())));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let forward = events.clone();
        let forwarding = tokio::spawn(async move {
            while let Some(progress) = rx.recv().await {
                let _ = forward.send(ConvergeEvent::Progress(progress));
            }
        });
        let options = PassOptions {
            workers: fleet.conductor.workers as usize,
            previous: previous.as_ref(),
            ..PassOptions::default()
        };
        let pass = run_pass(ctx, &plan, &snapshot, options, stop.clone(), Some(tx)).await;
        let _ = forwarding.await;
        let pass = match pass {
            Ok(pass) => pass,
            Err(e) => {
                registry.close().await;
                return Err(PlanError::Pass(e.to_string()));
            }
        };
        if !pass.resumed.is_empty() {
            let _ = events.send(ConvergeEvent::Resumed(pass.resumed.len()));
        }
        for name in &pass.unmanaged {
            let _ = events.send(ConvergeEvent::Unmanaged(name.clone()));
        }
        report.converged += pass.report.converged.len();
        touched.extend(pass.report.converged.iter().cloned());
        touched.extend(pass.report.failed.iter().map(|(n, _)| n.clone()));
        touched.extend(pass.report.stopped.iter().cloned());
        touched.extend(pass.unmanaged.iter().cloned());
        report.failed.extend(pass.report.failed.clone());
        report.skipped.extend(pass.report.skipped.clone());
        if stop.shutdown.is_cancelled()
            || !pass.report.ok()
            || pass.resumed.is_empty()
            || round == 2
        {
            break;
        }
        match plan_fleet(dir, false, Some(&store)) {
            Ok(replanned) => {
                fleet = Arc::new(replanned.fleet);
                snapshot = replanned.snapshot;
                plan = replanned.plan;
                previous = replanned.previous;
            }
            Err(_) => break,
        }
    }
    registry.close().await;
    journal.close();
    if let Some(keep) = fleet.conductor.history_max_entries {
        touched.sort();
        touched.dedup();
        match store.prune_history(keep, Some(&touched)) {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, keep, "history pruned"),
            Err(e) => {
                let _ = events.send(ConvergeEvent::PruneFailed(e.to_string()));
            }
        }
    }
    report.interrupted = stop.shutdown.is_cancelled();
    report.elapsed = started.elapsed();
    Ok(report)
}
