//! Which nodes run when: a node starts once every node it depends on (that
//! has work) has converged; at most `workers` nodes run at once, and at most
//! `max_parallel` of a rollout group. A group whose failures exceed its
//! `max_failures` starts no more nodes; dependents of a failed node are
//! skipped. Readiness is dynamic, so a node never waits for a whole wave.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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

/// Ready nodes by rollout group (`None`: in none), and which groups may
/// take one now: those with room under `max_parallel`, and halted ones,
/// whose ready nodes are skipped. Each open group is listed by its first
/// ready node, so the next node to start, in name order, is found without
/// looking at every ready node, and the cost of a start does not grow with
/// the fleet.
#[derive(Default)]
struct ReadyQueue {
    by_group: HashMap<Option<String>, BTreeSet<String>>,
    /// (first ready node, group) of every open group with a ready node.
    heads: BTreeSet<(String, Option<String>)>,
    open: HashSet<Option<String>>,
}

impl ReadyQueue {
    fn push(&mut self, group: &Option<String>, name: String) {
        self.unlist(group);
        self.by_group.entry(group.clone()).or_default().insert(name);
        self.list(group);
    }

    /// The first ready node of all open groups, taken out of the queue.
    fn pop(&mut self) -> Option<(String, Option<String>)> {
        let (name, group) = self.heads.pop_first()?;
        if let Some(ready) = self.by_group.get_mut(&group) {
            ready.remove(&name);
        }
        self.list(&group);
        Some((name, group))
    }

    /// Whether `group` may take one of its ready nodes now.
    fn set_open(&mut self, group: &Option<String>, open: bool) {
        self.unlist(group);
        if open {
            self.open.insert(group.clone());
        } else {
            self.open.remove(group);
        }
        self.list(group);
    }

    fn unlist(&mut self, group: &Option<String>) {
        if let Some(first) = self.by_group.get(group).and_then(BTreeSet::first) {
            self.heads.remove(&(first.clone(), group.clone()));
        }
    }

    fn list(&mut self, group: &Option<String>) {
        if !self.open.contains(group) {
            return;
        }
        if let Some(first) = self.by_group.get(group).and_then(BTreeSet::first) {
            self.heads.insert((first.clone(), group.clone()));
        }
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
    let names: HashSet<&str> = works.iter().map(|w| w.node.name.as_str()).collect();
    // How many of the nodes each waits for have not converged yet.
    let mut waiting: HashMap<String, usize> = HashMap::with_capacity(works.len());
    let mut dependents: HashMap<String, Vec<String>> = HashMap::new();
    for work in &works {
        let name = &work.node.name;
        let mut mine: Vec<&String> = deps
            .get(name)
            .into_iter()
            .flatten()
            .filter(|d| names.contains(d.as_str()))
            .collect();
        mine.sort();
        mine.dedup();
        for d in &mine {
            dependents
                .entry((*d).clone())
                .or_default()
                .push(name.clone());
        }
        waiting.insert(name.clone(), mine.len());
    }
    drop(names);
    let limits: HashMap<String, (Option<u32>, u32)> = fleet
        .rollouts
        .iter()
        .map(|r| (r.name.clone(), (r.max_parallel, r.max_failures)))
        .collect();
    let mut running_in: HashMap<String, u32> = HashMap::new();
    let mut failures_in: HashMap<String, u32> = HashMap::new();
    let mut halted: HashSet<String> = HashSet::new();
    // Whether a group may take a node now (a halted one, to skip it).
    let room = |group: &Option<String>,
                running_in: &HashMap<String, u32>,
                halted: &HashSet<String>| match group {
        None => true,
        Some(g) => {
            let (max_parallel, _) = limits.get(g).copied().unwrap_or((None, 0));
            halted.contains(g)
                || max_parallel.is_none_or(|m| running_in.get(g).copied().unwrap_or(0) < m)
        }
    };
    let mut ready = ReadyQueue::default();
    for work in &works {
        let group = &work.node.rollout;
        if !ready.open.contains(group) && room(group, &running_in, &halted) {
            ready.set_open(group, true);
        }
        if waiting[&work.node.name] == 0 {
            ready.push(group, work.node.name.clone());
        }
    }
    let mut pending: BTreeMap<String, NodeWork> = works
        .into_iter()
        .map(|w| (w.node.name.clone(), w))
        .collect();
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
        while !stop.shutdown.is_cancelled() && tasks.len() < workers {
            let Some((name, group)) = ready.pop() else {
                break;
            };
            let Some(work) = pending.remove(&name) else {
                continue;
            };
            if let Some(g) = &group {
                if halted.contains(g) {
                    let reason = format!("rollout group `{g}` stopped after too many failures");
                    send(Progress::NodeSkipped {
                        node: name.clone(),
                        reason: reason.clone(),
                    });
                    report.skipped.push((name, reason));
                    continue;
                }
                *running_in.entry(g.clone()).or_default() += 1;
                if !room(&group, &running_in, &halted) {
                    ready.set_open(&group, false);
                }
            }
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
                        *w -= 1;
                        if *w == 0
                            && let Some(work) = pending.get(d)
                        {
                            ready.push(&work.node.rollout, d.clone());
                        }
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
        if room(&group, &running_in, &halted) {
            ready.set_open(&group, true);
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
    dependents: &HashMap<String, Vec<String>>,
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
