//! Which nodes run when: a node starts once every node it depends on (that
//! has work) has converged; at most `workers` nodes run at once, and at most
//! `max_parallel` of a rollout group. A group whose failures exceed its
//! `max_failures` starts no more nodes; dependents of a failed node are
//! skipped. Readiness is dynamic, so a node never waits for a whole wave.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;

use super::runner::{NodeOutcome, NodeWork, run_node};
use super::{Ctx, Progress, Stop};

/// What a converge did.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub converged: Vec<String>,
    pub failed: Vec<(String, String)>,
    /// Not started, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Interrupted by shutdown (journal kept) or a declaration change.
    pub stopped: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty() && self.stopped.is_empty()
    }
}

/// Converge `works`; `deps[name]` lists the nodes (among `works`) it waits for.
pub async fn converge(
    ctx: Arc<Ctx>,
    works: Vec<NodeWork>,
    deps: BTreeMap<String, Vec<String>>,
    workers: usize,
    stop: Stop,
    progress: Option<UnboundedSender<Progress>>,
) -> Report {
    let fleet = Arc::clone(&ctx.fleet);
    let names: BTreeSet<String> = works.iter().map(|w| w.node.name.clone()).collect();
    let mut waiting: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut dependents: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for work in &works {
        let name = &work.node.name;
        let mine: BTreeSet<String> = deps
            .get(name)
            .into_iter()
            .flatten()
            .filter(|d| names.contains(*d))
            .cloned()
            .collect();
        for d in &mine {
            dependents.entry(d.clone()).or_default().push(name.clone());
        }
        waiting.insert(name.clone(), mine);
    }
    let mut pending: BTreeMap<String, NodeWork> = works
        .into_iter()
        .map(|w| (w.node.name.clone(), w))
        .collect();
    let limits: BTreeMap<String, (Option<u32>, u32)> = fleet
        .rollouts
        .iter()
        .map(|r| (r.name.clone(), (r.max_parallel, r.max_failures)))
        .collect();
    let mut running_in: BTreeMap<String, u32> = BTreeMap::new();
    let mut failures_in: BTreeMap<String, u32> = BTreeMap::new();
    let mut halted: BTreeSet<String> = BTreeSet::new();
    let mut report = Report::default();
    let mut tasks: JoinSet<(String, Option<String>, NodeOutcome)> = JoinSet::new();
    // Which node each task runs, to fail it if its task panics.
    let mut started: BTreeMap<tokio::task::Id, (String, Option<String>)> = BTreeMap::new();
    let send = |p: Progress| {
        if let Some(tx) = &progress {
            let _ = tx.send(p);
        }
    };

    loop {
        // Start every ready node there is room for, in name order.
        if !stop.shutdown.is_cancelled() {
            let ready: Vec<String> = pending
                .keys()
                .filter(|n| waiting.get(*n).is_none_or(BTreeSet::is_empty))
                .cloned()
                .collect();
            for name in ready {
                if tasks.len() >= workers {
                    break;
                }
                let group = pending[&name].node.rollout.clone();
                if let Some(g) = &group {
                    if halted.contains(g) {
                        pending.remove(&name);
                        let reason = format!("rollout group `{g}` stopped after too many failures");
                        send(Progress::NodeSkipped {
                            node: name.clone(),
                            reason: reason.clone(),
                        });
                        report.skipped.push((name, reason));
                        continue;
                    }
                    let (max_parallel, _) = limits.get(g).copied().unwrap_or((None, 0));
                    if max_parallel.is_some_and(|m| running_in.get(g).copied().unwrap_or(0) >= m) {
                        continue;
                    }
                    *running_in.entry(g.clone()).or_default() += 1;
                }
                let work = pending.remove(&name).expect("ready nodes are pending");
                let ctx = Arc::clone(&ctx);
                let stop = stop.clone();
                let progress = progress.clone();
                let task = (name.clone(), group.clone());
                let handle = tasks.spawn(async move {
                    let outcome = run_locked(&ctx, work, &stop, progress.as_ref()).await;
                    (name, group, outcome)
                });
                started.insert(handle.id(), task);
            }
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let (name, group, outcome) = match joined {
            Ok(done) => {
                started.retain(|_, (n, _)| *n != done.0);
                done
            }
            Err(e) => {
                let Some((name, group)) = started.remove(&e.id()) else {
                    tracing::error!(error = %e, "a node runner stopped");
                    continue;
                };
                let message = match e.try_into_panic() {
                    Ok(panic) => super::unwind::panic_message(panic.as_ref()),
                    Err(e) => format!("{}: {e}", super::unwind::INTERNAL_ERROR),
                };
                tracing::error!(node = %name, error = %message, "a node runner panicked");
                (name, group, NodeOutcome::Failed(message))
            }
        };
        if let Some(g) = &group {
            *running_in.entry(g.clone()).or_default() -= 1;
        }
        send(Progress::NodeFinished {
            node: name.clone(),
            outcome: outcome.clone(),
        });
        match outcome {
            NodeOutcome::Converged => {
                for d in dependents.get(&name).into_iter().flatten() {
                    if let Some(w) = waiting.get_mut(d) {
                        w.remove(&name);
                    }
                }
                report.converged.push(name);
            }
            NodeOutcome::Failed(error) => {
                if let Some(g) = &group {
                    let count = failures_in.entry(g.clone()).or_default();
                    *count += 1;
                    let (_, max_failures) = limits.get(g).copied().unwrap_or((None, 0));
                    if *count > max_failures && halted.insert(g.clone()) {
                        tracing::warn!(group = %g, failures = *count, max_failures, "rollout group stopped: no more of its nodes will start");
                    }
                }
                skip_dependents(&name, &dependents, &mut pending, &mut report, &send);
                report.failed.push((name, error));
            }
            NodeOutcome::Stopped | NodeOutcome::Replanned => report.stopped.push(name),
        }
    }
    for (name, _) in pending {
        let reason = if stop.shutdown.is_cancelled() {
            "shutting down".to_string()
        } else {
            "declarations changed".to_string()
        };
        report.skipped.push((name, reason));
    }
    report
}

/// Take the node's lock (waiting while an exclusive passthru call holds it), then run.
async fn run_locked(
    ctx: &Ctx,
    work: NodeWork,
    stop: &Stop,
    progress: Option<&UnboundedSender<Progress>>,
) -> NodeOutcome {
    let guard = loop {
        match ctx.locks.try_lock(&work.node.name, "converge") {
            Ok(guard) => break guard,
            Err(holder) => {
                tracing::debug!(node = %work.node.name, %holder, "waiting for the node lock");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    () = stop.shutdown.cancelled() => return NodeOutcome::Stopped,
                }
            }
        }
    };
    let outcome = run_node(ctx, work, stop, progress).await;
    drop(guard);
    outcome
}

fn skip_dependents(
    failed: &str,
    dependents: &BTreeMap<String, Vec<String>>,
    pending: &mut BTreeMap<String, NodeWork>,
    report: &mut Report,
    send: &impl Fn(Progress),
) {
    let mut stack = vec![failed.to_string()];
    while let Some(n) = stack.pop() {
        for d in dependents.get(&n).into_iter().flatten() {
            if pending.remove(d).is_some() {
                let reason = format!("depends on `{failed}`, which failed");
                send(Progress::NodeSkipped {
                    node: d.clone(),
                    reason: reason.clone(),
                });
                report.skipped.push((d.clone(), reason));
                stack.push(d.clone());
            }
        }
    }
}
