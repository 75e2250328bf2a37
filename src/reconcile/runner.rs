//! One pass over one node: run its journaled operations in order.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use super::agent_deploy;
use super::ops::Op;
use super::{Ctx, Progress, Stop, now};
use crate::driver::{DriverError, ErrorKind, fence};
use crate::model::node::Node;
use crate::plan::provision::Verb;
use crate::store::Write;
use crate::store::records::{EncodedOps, Event, JournalRecord, NodeRecord, Outcome};
use crate::vocab::{InterfaceType, ProvisionState};

/// Work for one node: its operations and where to start.
#[derive(Debug, Clone)]
pub struct NodeWork {
    pub node: Arc<Node>,
    pub ops: Vec<Op>,
    /// Index of the first operation to run (after a crash: the one in flight).
    pub next: usize,
    pub run_id: u64,
    pub record: NodeRecord,
    /// Continuing a journal found at start-up.
    pub resumed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeOutcome {
    Converged,
    Failed(String),
    /// Shutdown, or this conductor may no longer act on the node: the
    /// journal is kept and the next run (here or on the node's owner)
    /// resumes.
    Stopped,
    /// Declarations changed: the journal is dropped and the node re-planned.
    Replanned,
}

fn event(
    node: &str,
    work: &NodeWork,
    index: usize,
    op: &Op,
    outcome: Outcome,
    protocol: &str,
) -> Event {
    Event {
        seq: 0,
        node: node.to_string(),
        run_id: Some(work.run_id),
        op_index: Some(index),
        action: op.label(),
        outcome,
        protocol: Some(
            if op.is_bookkeeping() {
                "rivet"
            } else if op.is_agent_call() {
                crate::driver::agent::PROTOCOL
            } else {
                protocol
            }
            .to_string(),
        ),
        duration_ms: None,
        detail: None,
        at: now(),
    }
}

/// Which verb an operation at `index` belongs to (the last `Begin` before it).
fn verb_at(ops: &[Op], index: usize) -> Option<Verb> {
    ops[..=index].iter().rev().find_map(|op| match op {
        Op::Begin { verb, .. } => Some(*verb),
        Op::End { .. } => None,
        _ => None,
    })
}

/// A node's `deploy_step` as Ironic shows it.
fn step_document(
    interface: InterfaceType,
    step: &str,
    priority: u32,
    args: &std::collections::BTreeMap<String, serde_json::Value>,
) -> serde_json::Value {
    serde_json::json!({ "interface": interface, "step": step, "priority": priority, "args": args })
}

/// Record changes when an operation starts.
fn on_start(record: &mut NodeRecord, op: &Op) {
    match op {
        Op::Begin { verb, after, .. } => {
            record.provision_state = verb.via()[0];
            record.target_provision_state = Some(*after);
            record.last_error = None;
        }
        Op::Step {
            interface,
            step,
            priority,
            args,
            ..
        } => record.deploy_step = Some(step_document(*interface, step, *priority, args)),
        Op::BeginStep {
            interface,
            step,
            priority,
        } => {
            let no_args = std::collections::BTreeMap::new();
            record.deploy_step = Some(step_document(*interface, step, *priority, &no_args));
        }
        Op::AwaitAgent => record.provision_state = ProvisionState::WaitCallBack,
        Op::AgentStep {
            interface,
            step,
            priority,
            args,
        } => {
            record.provision_state = ProvisionState::Deploying;
            record.deploy_step = Some(step_document(*interface, step, *priority, args));
        }
        Op::SetPower { target } => record.target_power_state = Some(*target),
        Op::Inspect => {
            record.inspection_started_at = Some(now());
            record.inspection_finished_at = None;
        }
        _ => {}
    }
}

/// What a bios step leaves set, for `GET /v1/nodes/{id}/bios`: the BMC is
/// not read back, so the settings applied are the ones known.
fn record_bios(
    record: &mut NodeRecord,
    step: &str,
    args: &std::collections::BTreeMap<String, serde_json::Value>,
) {
    match step {
        "apply_configuration" => {
            let settings = args.get("settings").and_then(|s| s.as_array());
            for setting in settings.into_iter().flatten() {
                if let (Some(name), Some(value)) = (
                    setting.get("name").and_then(|n| n.as_str()),
                    setting.get("value"),
                ) {
                    record.bios.insert(name.to_string(), value.clone());
                }
            }
        }
        "factory_reset" => record.bios.clear(),
        _ => {}
    }
}

/// What an operation read from the BMC or the agent.
enum Reading {
    Nothing,
    Power(crate::vocab::PowerState),
    Properties(serde_json::Value),
    /// What the agent said, for the operation's history event.
    Said(String),
}

/// Record changes when an operation succeeds.
fn on_success(record: &mut NodeRecord, op: &Op, reading: Reading) {
    match reading {
        Reading::Power(state) => record.power_state = Some(state),
        Reading::Properties(serde_json::Value::Object(found)) => {
            record.properties = crate::store::records::Properties::new(&found);
        }
        Reading::Properties(_) | Reading::Nothing | Reading::Said(_) => {}
    }
    match op {
        Op::Verify => {}
        Op::Inspect => record.inspection_finished_at = Some(now()),
        Op::SetPower { target } => {
            record.power_state = Some(*target);
            record.target_power_state = None;
        }
        Op::SetBootDevice { device } => record.boot_device = Some(*device),
        Op::SetBootMode { mode } => record.boot_mode = Some(*mode),
        Op::InsertMedia { .. } => {}
        Op::Step {
            interface,
            step,
            args,
            ..
        } => {
            // The fake deploy boots from disk.
            if *interface == InterfaceType::Deploy && step == "deploy" {
                record.boot_device = Some(crate::vocab::BootDevice::Disk);
            }
            if *interface == InterfaceType::Bios {
                record_bios(record, step, args);
            }
        }
        Op::End {
            verb,
            after,
            instance,
        } => {
            record.provision_state = *after;
            record.target_provision_state = None;
            record.deploy_step = None;
            match verb {
                Verb::Deploy | Verb::Rebuild => record.deployed_instance = instance.clone(),
                Verb::Undeploy => record.deployed_instance = None,
                Verb::Manage | Verb::Provide => {}
            }
        }
        Op::AwaitAgent => record.provision_state = ProvisionState::Deploying,
        Op::Begin { .. }
        | Op::BeginStep { .. }
        | Op::OpenAgent
        | Op::AgentStep { .. }
        | Op::AgentCommand { .. }
        | Op::CloseAgent => {}
        Op::Release => record.unmanaged = true,
    }
    record.updated_at = Some(now());
}

/// Record changes when an operation fails for good.
fn on_failure(record: &mut NodeRecord, verb: Option<Verb>, error: &str) {
    record.last_error = Some(error.to_string());
    record.deploy_step = None;
    record.target_power_state = None;
    record.target_provision_state = None;
    record.provision_state = match verb {
        Some(Verb::Manage) => ProvisionState::Enroll,
        Some(Verb::Provide) => ProvisionState::Manageable,
        Some(Verb::Deploy | Verb::Rebuild) => ProvisionState::DeployFailed,
        Some(Verb::Undeploy) => ProvisionState::Error,
        None => record.provision_state,
    };
    record.updated_at = Some(now());
}

/// Run one operation within its total deadline (`[conductor]
/// operation_timeout`, or `deploy_step_timeout` for a deploy step): a BMC
/// that trickles, stalls or never reaches the state asked for fails the node
/// instead of holding the run.
async fn execute(ctx: &Ctx, node: &Node, op: &Op) -> Result<Reading, DriverError> {
    let conductor = &ctx.fleet.conductor;
    let (deadline, setting) = match op {
        Op::Step { .. } | Op::AgentStep { .. } => {
            (conductor.deploy_step_timeout, "deploy_step_timeout")
        }
        // Its own deadline is `deploy_callback_timeout`; this one only
        // catches a wait that overruns it.
        Op::AwaitAgent => (
            conductor.deploy_callback_timeout + conductor.operation_timeout,
            "deploy_callback_timeout",
        ),
        _ => (conductor.operation_timeout, "operation_timeout"),
    };
    match tokio::time::timeout(deadline, execute_with_retries(ctx, node, op)).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(node = %node.name, op = %op.label(), deadline = ?deadline, "operation deadline passed");
            Err(DriverError::fatal(format!(
                "did not finish within {} (its retries included); raise `[conductor] {setting}` if this BMC needs longer",
                humantime::format_duration(deadline)
            )))
        }
    }
}

/// Run one operation, retrying retryable errors with backoff.
async fn execute_with_retries(ctx: &Ctx, node: &Node, op: &Op) -> Result<Reading, DriverError> {
    let mut failures = 0;
    loop {
        let result = super::unwind::caught(execute_once(ctx, node, op))
            .await
            .unwrap_or_else(|panic| {
                tracing::error!(node = %node.name, op = %op.label(), error = %panic, "a driver call panicked");
                Err(DriverError::fatal(panic))
            });
        match result {
            Err(e) if e.is_retryable() && failures + 1 < ctx.attempts => {
                let delay = ctx.retry.delay(failures);
                tracing::warn!(node = %node.name, op = %op.label(), error = %e, retry_in = ?delay, "retrying after a transient error");
                tokio::time::sleep(delay).await;
                failures += 1;
            }
            other => return other,
        }
    }
}

async fn execute_once(ctx: &Ctx, node: &Node, op: &Op) -> Result<Reading, DriverError> {
    let registry = &ctx.registry;
    let done = |()| Reading::Nothing;
    match op {
        Op::Begin { .. } | Op::End { .. } | Op::Release | Op::BeginStep { .. } => {
            Ok(Reading::Nothing)
        }
        Op::OpenAgent => agent_deploy::open(ctx, node).await.map(done),
        Op::CloseAgent => agent_deploy::close(ctx, node).await.map(done),
        Op::AwaitAgent => agent_deploy::await_agent(ctx, node)
            .await
            .map(Reading::Said),
        Op::AgentStep {
            interface,
            step,
            priority,
            args,
        } => agent_deploy::agent_step(ctx, node, *interface, step, *priority, args)
            .await
            .map(Reading::Said),
        Op::AgentCommand { command } => agent_deploy::agent_command(ctx, node, command)
            .await
            .map(Reading::Said),
        Op::InsertMedia { image } => registry
            .boot(node)?
            .insert_media(node, image)
            .await
            .map(done),
        Op::Verify => registry
            .power(node)?
            .get_power_state(node)
            .await
            .map(Reading::Power),
        Op::Inspect => registry
            .inspect(node)?
            .inspect(node)
            .await
            .map(Reading::Properties),
        Op::SetPower { target } => registry
            .power(node)?
            .set_power_state(node, *target, ctx.power_timeout)
            .await
            .map(done),
        Op::SetBootDevice { device } => registry
            .management(node)?
            .set_boot_device(node, *device, true)
            .await
            .map(done),
        Op::SetBootMode { mode } => registry
            .management(node)?
            .set_boot_mode(node, *mode)
            .await
            .map(done),
        Op::Step {
            interface,
            step,
            args,
            ..
        } => registry
            .run_step(&ctx.fleet, node, *interface, step, args)
            .await
            .map(|_| Reading::Nothing),
    }
}

/// Run a node's operations from `work.next`, journaling each.
pub async fn run_node(
    ctx: &Ctx,
    mut work: NodeWork,
    stop: &Stop,
    progress: Option<&UnboundedSender<Progress>>,
) -> NodeOutcome {
    let name = work.node.name.clone();
    let protocol = ctx.registry.protocol(&work.node);
    let total = work.ops.len();
    let encoded = EncodedOps::encode(&work.ops);
    let started_at = now();
    let send = |p: Progress| {
        if let Some(tx) = progress {
            let _ = tx.send(p);
        }
    };
    send(Progress::NodeStarted {
        node: name.clone(),
        ops: total,
        resumed_at: work.resumed.then_some(work.next),
    });
    tracing::info!(node = %name, run = work.run_id, ops = total, from = work.next, resumed = work.resumed, "converging node");

    let replan = stop.replan_token(&name);
    let mut unsaved = Unsaved::default();
    let journal_at = |next: usize| {
        Write::Journal(
            name.clone(),
            JournalRecord {
                run_id: work.run_id,
                ops: encoded.clone(),
                next,
                started_at: started_at.clone(),
            },
        )
    };
    for index in work.next..total {
        if stop.shutdown.is_cancelled() {
            // What finished is kept, so a restart resumes after it.
            return keep_journal(ctx, &work, unsaved, &send).await;
        }
        if replan.is_cancelled() {
            return drop_journal(
                ctx,
                &work,
                unsaved,
                "declarations changed: planning again",
                &send,
            )
            .await;
        }
        let permit = match ctx.permits.permit(&work.node) {
            Ok(permit) => permit,
            Err(refused) => {
                tracing::warn!(node = %name, run = work.run_id, reason = %refused, "this conductor may not act on the node now: stopping with the journal kept");
                return keep_journal(ctx, &work, unsaved, &send).await;
            }
        };
        let op = work.ops[index].clone();
        on_start(&mut work.record, &op);
        unsaved.journal = Some(journal_at(index));
        if work.resumed && index == work.next {
            unsaved
                .events
                .push(event(&name, &work, index, &op, Outcome::Resumed, protocol));
        }
        unsaved
            .events
            .push(event(&name, &work, index, &op, Outcome::Started, protocol));
        // Durable before the BMC is called; bookkeeping calls nothing, so
        // it waits for the next commit.
        if !op.is_bookkeeping()
            && let Err(e) = unsaved.save(ctx, &name, &work, &send).await
        {
            return not_saved(&name, e);
        }

        let began = Instant::now();
        let fenced = fence::within(permit.clone(), execute(ctx, &work.node, &op));
        let result = if op.abortable() {
            tokio::select! {
                r = fenced => Some(r),
                () = replan.cancelled() => None,
                () = stop.shutdown.cancelled() => None,
            }
        } else {
            Some(fenced.await)
        };
        let Some(result) = result else {
            // An abortable step was interrupted: it did not complete.
            if stop.shutdown.is_cancelled() {
                return keep_journal(ctx, &work, unsaved, &send).await;
            }
            return drop_journal(
                ctx,
                &work,
                unsaved,
                "declarations changed: step aborted",
                &send,
            )
            .await;
        };
        let elapsed = began.elapsed();
        let mut done = event(&name, &work, index, &op, Outcome::Succeeded, protocol);
        done.duration_ms = Some(elapsed.as_millis() as u64);
        match result {
            Ok(reading) => {
                if let Reading::Said(said) = &reading
                    && !said.is_empty()
                {
                    done.detail = Some(said.clone());
                }
                on_success(&mut work.record, &op, reading);
                match op {
                    Op::AwaitAgent => work.record.agent = ctx.agents.seen(&name),
                    Op::CloseAgent => work.record.agent = None,
                    _ => {}
                }
                // Committed with the next operation's start, or at the end.
                unsaved.journal = Some(if index + 1 == total {
                    Write::ClearJournal(name.clone())
                } else {
                    journal_at(index + 1)
                });
                unsaved.events.push(done);
                unsaved.finished.push((index, op.label(), elapsed));
            }
            Err(e) if e.kind == ErrorKind::Fenced => {
                // Not a failure of the node: the journal still names this
                // operation, and the node's owner runs it again.
                tracing::warn!(node = %name, run = work.run_id, op = %op.label(), error = %e, "fenced: stopping with the journal kept");
                return keep_journal(ctx, &work, unsaved, &send).await;
            }
            Err(e) => {
                let message = format!("{}: {e}", op.label());
                on_failure(&mut work.record, verb_at(&work.ops, index), &message);
                work.record.agent = None;
                if ctx.agents.is_open(&name) {
                    // A failed deploy's ramdisk does not keep running, as
                    // Ironic's `power_off_after_deploy_failure`; its agent
                    // may not call back into another run either.
                    let off = fence::within(
                        permit,
                        agent_deploy::power_off_after_failure(ctx, &work.node),
                    )
                    .await;
                    match off {
                        Ok(()) => work.record.power_state = Some(crate::vocab::PowerState::Off),
                        Err(off) => {
                            tracing::warn!(node = %name, error = %off, "could not power off the node after its failed deploy")
                        }
                    }
                }
                done.outcome = Outcome::Failed;
                done.detail = Some(e.message.clone());
                unsaved.journal = Some(Write::ClearJournal(name.clone()));
                unsaved.events.push(done);
                let _ = unsaved.save(ctx, &name, &work, &send).await;
                if let Err(close) = ctx.agents.close(&name).await {
                    tracing::warn!(node = %name, error = %close, "could not close the agent channel");
                }
                tracing::warn!(node = %name, run = work.run_id, op = %op.label(), error = %e, "operation failed");
                send(Progress::OpFinished {
                    node: name.clone(),
                    index,
                    total,
                    label: op.label(),
                    ok: false,
                    duration: elapsed,
                    error: Some(e.message.clone()),
                });
                return NodeOutcome::Failed(message);
            }
        }
    }
    match unsaved.save(ctx, &name, &work, &send).await {
        Ok(()) => NodeOutcome::Converged,
        Err(e) => not_saved(&name, e),
    }
}

/// A run whose progress could not be recorded: fenced (another conductor
/// owns the node now, or this one cannot prove it still does) is a stop
/// with the journal where it was, for the owner to resume; anything else
/// fails the node.
fn not_saved(node: &str, e: super::journal::JournalError) -> NodeOutcome {
    if e.is_fenced() {
        tracing::warn!(node = %node, error = %e, "stopping: this conductor may not work on the node now");
        NodeOutcome::Stopped
    } else {
        NodeOutcome::Failed(e.to_string())
    }
}

/// What a run has recorded since its last commit. An operation's outcome
/// is committed with the start of the next one, and bookkeeping (which
/// calls no BMC) with the next BMC call's start, so a node costs one commit
/// per BMC call instead of two per operation; a crash before the commit
/// runs again only operations that are idempotent.
#[derive(Default)]
struct Unsaved {
    /// The journal as it is now: the next operation, or cleared.
    journal: Option<Write>,
    events: Vec<Event>,
    /// Operations done, announced once their outcome is durable: (index,
    /// label, how long).
    finished: Vec<(usize, String, std::time::Duration)>,
}

impl Unsaved {
    fn writes(&mut self, name: &str, record: &NodeRecord) -> Vec<Write> {
        let mut writes = Vec::with_capacity(self.events.len() + 2);
        writes.extend(self.journal.take());
        writes.push(Write::Node(name.to_string(), record.clone()));
        writes.extend(self.events.drain(..).map(Write::Event));
        writes
    }

    /// Commit, then announce what finished.
    async fn save(
        &mut self,
        ctx: &Ctx,
        name: &str,
        work: &NodeWork,
        send: &impl Fn(Progress),
    ) -> Result<(), super::journal::JournalError> {
        if self.journal.is_none() && self.events.is_empty() {
            return Ok(());
        }
        ctx.journal.commit(self.writes(name, &work.record)).await?;
        let total = work.ops.len();
        for (index, label, elapsed) in self.finished.drain(..) {
            let ms = elapsed.as_millis() as u64;
            tracing::info!(node = %name, run = work.run_id, op = %label, index, ms, "operation done");
            send(Progress::OpFinished {
                node: name.to_string(),
                index,
                total,
                label,
                ok: true,
                duration: elapsed,
                error: None,
            });
        }
        Ok(())
    }
}

/// Stop the run with its journal kept (shutdown, or fenced), committing
/// what finished first, so the next run resumes after it.
async fn keep_journal(
    ctx: &Ctx,
    work: &NodeWork,
    mut unsaved: Unsaved,
    send: &impl Fn(Progress),
) -> NodeOutcome {
    match unsaved.save(ctx, &work.node.name, work, send).await {
        Ok(()) => NodeOutcome::Stopped,
        Err(e) => not_saved(&work.node.name, e),
    }
}

async fn drop_journal(
    ctx: &Ctx,
    work: &NodeWork,
    mut unsaved: Unsaved,
    why: &str,
    send: &impl Fn(Progress),
) -> NodeOutcome {
    let name = &work.node.name;
    unsaved.journal = Some(Write::ClearJournal(name.clone()));
    unsaved.events.push(Event {
        run_id: Some(work.run_id),
        protocol: Some("rivet".to_string()),
        ..Event::note(name, "replan", Outcome::Noted, why, now())
    });
    let _ = unsaved.save(ctx, name, work, send).await;
    // A re-planned deploy boots its ramdisk afresh, if it still has one.
    if let Err(e) = ctx.agents.close(name).await {
        tracing::warn!(node = %name, error = %e, "could not close the agent channel");
    }
    NodeOutcome::Replanned
}
