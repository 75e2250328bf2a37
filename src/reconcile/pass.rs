//! One converge pass: turn a plan (and any journals left by a crash) into
//! node work, run it, and record the run.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;

use super::ops::{Op, flatten};
use super::runner::NodeWork;
use super::scheduler::{Report, converge};
use super::{Ctx, Progress, Stop, now};
use crate::model::fleet::Fleet;
use crate::plan::{Change, Plan, instance_fingerprint};
use crate::store::records::{Event, NodeRecord, Outcome, RunRecord, RunStatus};
use crate::store::{Snapshot, Write};
use crate::vocab::InterfaceNames;

/// What a pass did.
#[derive(Debug, Clone)]
pub struct Pass {
    pub run_id: u64,
    pub report: Report,
    /// Nodes continued from a journal left by an interrupted run.
    pub resumed: Vec<String>,
    /// Nodes that left the declarations and are now unmanaged.
    pub unmanaged: Vec<String>,
}

/// The git commit of `dir`, when it is inside a git checkout.
pub fn source_commit(dir: &Path) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Whether a pass would do anything.
pub fn has_work(plan: &Plan, snapshot: &Snapshot) -> bool {
    plan.summary.has_changes()
        || !snapshot.journals.is_empty()
        || snapshot.nodes.iter().any(|(name, r)| {
            !r.unmanaged
                && plan
                    .nodes
                    .binary_search_by(|n| n.name.as_str().cmp(name))
                    .is_err()
        })
}

fn noted(node: &str, action: &str, detail: &str) -> Event {
    let mut event = Event::note(node, action, Outcome::Noted, detail, now());
    event.protocol = Some("rivet".to_string());
    event
}

/// How a pass runs.
#[derive(Default)]
pub struct PassOptions<'a> {
    /// The last declarations of removed nodes, for `prune = true`: the
    /// daemon's before an edit, or the state file's kept ones
    /// (`plan::previous_declarations`).
    pub previous: Option<&'a Fleet>,
    /// Nodes backing off after failures: they wait for a later pass.
    pub exclude: std::collections::BTreeSet<String>,
    pub workers: usize,
}

/// Run one pass of `plan`, made from `snapshot`.
pub async fn run_pass(
    ctx: Arc<Ctx>,
    plan: &Plan,
    snapshot: &Snapshot,
    options: PassOptions<'_>,
    stop: Stop,
    progress: Option<UnboundedSender<Progress>>,
) -> Result<Pass, super::journal::JournalError> {
    let PassOptions {
        previous,
        exclude,
        workers,
    } = options;
    let fleet = Arc::clone(&ctx.fleet);
    let store = Arc::clone(ctx.journal.store());
    let run_id = store
        .next_run_id()
        .map_err(|e| super::journal::JournalError(e.to_string()))?;

    // Nodes gone from the declarations are pruned or left as they are.
    let mut writes = Vec::new();
    let mut unmanaged = Vec::new();
    let mut works = Vec::new();
    let mut pruning = Vec::new();
    for (name, record) in &snapshot.nodes {
        let pruned = previous.and_then(|p| p.node(name));
        if fleet.node(name).is_none()
            && !record.unmanaged
            && fleet.conductor.prune
            && let Some(node) = pruned
        {
            {
                pruning.push(name.clone());
                works.push(NodeWork {
                    node: node.clone(),
                    ops: super::ops::prune(record.provision_state),
                    next: 0,
                    run_id,
                    record: record.clone(),
                    resumed: false,
                });
                writes.push(Write::Event(noted(
                    name,
                    "prune",
                    "removed from the declarations: undeploying",
                )));
                continue;
            }
        }
        if fleet.node(name).is_none() && !record.unmanaged {
            let mut record = record.clone();
            record.unmanaged = true;
            record.updated_at = Some(now());
            writes.push(Write::Node(name.clone(), record));
            writes.push(Write::Event(noted(
                name,
                "unmanaged",
                "removed from the declarations: left as it is",
            )));
            if snapshot.journals.contains_key(name) {
                writes.push(Write::ClearJournal(name.clone()));
            }
            // Power sync no longer reads it: a drift it recorded is over.
            writes.push(Write::ClearDrift(name.clone()));
            unmanaged.push(name.clone());
        }
    }

    let mut resumed = Vec::new();
    // In maintenance: not touched until it leaves (as Ironic refuses to
    // provision such a node); its journal, if any, waits too.
    let mut held: Vec<(String, String)> = Vec::new();
    works.reserve(plan.nodes.len());
    for node_plan in &plan.nodes {
        let Some(node) = fleet.node(&node_plan.name) else {
            continue;
        };
        if exclude.contains(&node.name) {
            continue;
        }
        let recorded = snapshot.nodes.get(&node.name);
        if let Some(r) = recorded.filter(|r| r.maintenance)
            && (node_plan.change != Change::None || snapshot.journals.contains_key(&node.name))
        {
            let reason = format!(
                "in maintenance ({}): left alone until it leaves maintenance",
                r.fault.as_deref().unwrap_or("no fault recorded")
            );
            if let Some(tx) = &progress {
                let _ = tx.send(Progress::NodeSkipped {
                    node: node.name.clone(),
                    reason: reason.clone(),
                });
            }
            held.push((node.name.clone(), reason));
            continue;
        }
        let mut record = recorded
            .cloned()
            .unwrap_or_else(|| NodeRecord::first_seen(node.uuid.to_string(), &node.driver, now()));
        record.unmanaged = false;
        record.driver = node.driver.clone();
        record.interfaces = InterfaceNames::from(&node.interfaces);
        let journal = snapshot.journals.get(&node.name);
        let decoded: Option<Vec<Op>> = journal.and_then(|j| j.ops.decode().ok());
        match (journal, decoded) {
            (Some(j), Some(ops)) if j.next < ops.len() => {
                resumed.push(node.name.clone());
                works.push(NodeWork {
                    node: node.clone(),
                    ops,
                    next: j.next,
                    run_id: j.run_id,
                    record,
                    resumed: true,
                });
            }
            _ => {
                if journal.is_some() {
                    writes.push(Write::ClearJournal(node.name.clone()));
                }
                if node_plan.change == Change::None {
                    continue;
                }
                let ops = flatten(&fleet.catalog, node_plan, node, &instance_fingerprint(node));
                works.push(NodeWork {
                    node: node.clone(),
                    ops,
                    next: 0,
                    run_id,
                    record,
                    resumed: false,
                });
            }
        }
    }
    let deps: BTreeMap<String, Vec<String>> = fleet
        .nodes
        .iter()
        .map(|n| {
            (
                n.name.clone(),
                n.depends_on.iter().map(|d| d.value.clone()).collect(),
            )
        })
        .collect();
    let mut run = RunRecord {
        plan_fingerprint: plan.fingerprint.digest.clone(),
        source_commit: source_commit(&fleet.root),
        status: RunStatus::Running,
        started_at: now(),
        finished_at: None,
        nodes: works.iter().map(|w| w.node.name.clone()).collect(),
        failed: Vec::new(),
    };
    writes.push(Write::Run(run_id, run.clone()));
    ctx.journal.commit(writes).await?;
    tracing::info!(run = run_id, nodes = works.len(), resumed = resumed.len(), commit = ?run.source_commit, "converge pass starts");

    // Runs in flight (after a restart or a takeover) go first when more
    // nodes are ready than there are workers: finish what was started.
    let mut works = works;
    works.sort_by_key(|w| !w.resumed);
    let mut report = converge(Arc::clone(&ctx), works, deps, workers, stop, progress).await;
    report.skipped.extend(held);

    run.status = if report.ok() {
        RunStatus::Succeeded
    } else {
        RunStatus::Failed
    };
    run.finished_at = Some(now());
    run.failed = report.failed.iter().map(|(n, _)| n.clone()).collect();
    let mut writes = vec![Write::Run(run_id, run)];
    if pruning.iter().all(|n| report.converged.contains(n)) {
        // No prune is left undone: the declarations a later prune of a
        // node removed from these will need. (A prune that did not finish
        // keeps the older ones, which still hold its node.)
        writes.push(Write::Declarations(
            fleet
                .files
                .iter()
                .map(|f| (f.name.clone(), Arc::clone(&f.text)))
                .collect(),
        ));
    }
    ctx.journal.commit(writes).await?;
    Ok(Pass {
        run_id,
        report,
        resumed,
        unmanaged,
    })
}
