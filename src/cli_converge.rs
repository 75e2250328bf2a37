//! `rivet reconcile` without `--dry-run`: converge once, with progress, and
//! exit 0 when every node converged, 1 otherwise.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::backoff::Backoff;
use crate::cli_reconcile::{Planned, plan_fleet};
use crate::driver::fake::FakeBmcDir;
use crate::driver::registry::Registry;
use crate::model::fleet::Fleet;
use crate::plan::Plan;
use crate::reconcile::journal::Journal;
use crate::reconcile::locks::{LocalLocks, NodeLocks};
use crate::reconcile::pass::{PassOptions, has_work, run_pass};
use crate::reconcile::runner::NodeOutcome;
use crate::reconcile::{Ctx, Progress, Stop};
use crate::store::Store;

/// The shared context for converging `fleet` with a fresh lock table.
pub fn context(fleet: Arc<Fleet>, journal: Journal) -> Arc<Ctx> {
    context_with_locks(fleet, journal, Arc::new(LocalLocks::default()))
}

/// The shared context, with the node locks others hold too.
pub fn context_with_locks(
    fleet: Arc<Fleet>,
    journal: Journal,
    locks: Arc<dyn NodeLocks>,
) -> Arc<Ctx> {
    let bmcs = Arc::new(FakeBmcDir::beside(&fleet.conductor.state, false));
    Arc::new(Ctx {
        registry: Arc::new(
            Registry::new(fleet.root.clone(), bmcs)
                .with_ipmi_min_command_interval(fleet.conductor.ipmi_min_command_interval),
        ),
        fleet,
        journal,
        locks,
        attempts: 3,
        retry: Backoff {
            base: Duration::from_millis(200),
            cap: Duration::from_secs(5),
        },
        power_timeout: Duration::from_secs(60),
    })
}

pub fn converge(dir: &Path, planned: Planned, store: Arc<Store>) -> std::io::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(converge_async(dir, planned, store))
}

async fn converge_async(
    dir: &Path,
    planned: Planned,
    store: Arc<Store>,
) -> std::io::Result<ExitCode> {
    let Planned {
        fleet,
        mut snapshot,
        mut plan,
        mut previous,
    } = planned;
    let started = Instant::now();
    if !has_work(&plan, &snapshot) {
        println!("\nNothing to do: every node matches its declaration.");
        return Ok(ExitCode::SUCCESS);
    }
    let journal = Journal::start(Arc::clone(&store));
    let mut fleet = Arc::new(fleet);
    let stop = Stop::default();
    let ctrl_c = stop.shutdown.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: finishing the operations in flight; run again to resume");
            ctrl_c.cancel();
        }
    });
    let mut converged = 0;
    let mut failed: Vec<(String, String)> = Vec::new();
    let mut skipped: Vec<(String, String)> = Vec::new();
    // Nodes whose history grew, for pruning at the end.
    let mut touched: Vec<String> = Vec::new();
    // A pass that resumed a crashed run may leave work the new declarations
    // ask for: plan again until a pass resumes nothing.
    for round in 0..3 {
        if !has_work(&plan, &snapshot) {
            break;
        }
        let ctx = context(Arc::clone(&fleet), journal.clone());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let display = tokio::spawn(show_progress(rx, plan.clone()));
        let workers = fleet.conductor.workers as usize;
        let pass = match run_pass(
            ctx,
            &plan,
            &snapshot,
            PassOptions {
                workers,
                previous: previous.as_ref(),
                ..PassOptions::default()
            },
            stop.clone(),
            Some(tx),
        )
        .await
        {
            Ok(pass) => pass,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(1));
            }
        };
        let _ = display.await;
        if !pass.resumed.is_empty() {
            eprintln!(
                "resumed the interrupted work of {} node(s)",
                pass.resumed.len()
            );
        }
        for name in &pass.unmanaged {
            eprintln!("{name}: removed from the declarations; left as it is (unmanaged)");
        }
        converged += pass.report.converged.len();
        touched.extend(pass.report.converged.iter().cloned());
        touched.extend(pass.report.failed.iter().map(|(n, _)| n.clone()));
        touched.extend(pass.report.stopped.iter().cloned());
        touched.extend(pass.unmanaged.iter().cloned());
        failed.extend(pass.report.failed.clone());
        skipped.extend(pass.report.skipped.clone());
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
    journal.close();
    if let Some(keep) = fleet.conductor.history_max_entries {
        touched.sort();
        touched.dedup();
        match store.prune_history(keep, Some(&touched)) {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, keep, "history pruned"),
            Err(e) => eprintln!("warning: could not prune history: {e}"),
        }
    }
    drop(store);
    let elapsed = started.elapsed().as_secs_f64();
    if stop.shutdown.is_cancelled() {
        println!(
            "\nStopped after {elapsed:.1}s; the journal holds the work in flight. Run again to resume."
        );
        return Ok(ExitCode::from(1));
    }
    if failed.is_empty() && skipped.is_empty() {
        println!("\nConverged {converged} node(s) in {elapsed:.1}s.");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "\nConverged {converged} node(s) in {elapsed:.1}s; {} failed, {} not started:",
        failed.len(),
        skipped.len()
    );
    for (node, error) in &failed {
        println!("  ✗ {node}: {error}");
    }
    for (node, reason) in &skipped {
        println!("  - {node}: not started: {reason}");
    }
    Ok(ExitCode::from(1))
}

/// Per-wave and overall bars on a terminal; one line per event otherwise.
async fn show_progress(mut rx: UnboundedReceiver<Progress>, plan: Plan) {
    if !std::io::stderr().is_terminal() {
        let mut done = 0;
        let total = plan.nodes.iter().filter(|n| n.wave.is_some()).count();
        while let Some(event) = rx.recv().await {
            match event {
                Progress::NodeStarted {
                    node,
                    resumed_at: Some(at),
                    ..
                } => {
                    eprintln!("{node}: resuming at operation {}", at + 1);
                }
                Progress::NodeStarted { .. } => {}
                Progress::OpFinished {
                    node,
                    index,
                    total,
                    label,
                    ok,
                    duration,
                    error,
                } => {
                    let status = if ok {
                        "ok".to_string()
                    } else {
                        format!("FAILED: {}", error.unwrap_or_default())
                    };
                    eprintln!(
                        "{node}: [{}/{total}] {label} {status} ({} ms)",
                        index + 1,
                        duration.as_millis()
                    );
                }
                Progress::NodeFinished { node, outcome } => {
                    done += 1;
                    let what = match outcome {
                        NodeOutcome::Converged => "converged".to_string(),
                        NodeOutcome::Failed(e) => format!("failed: {e}"),
                        NodeOutcome::Stopped => "stopped (journal kept)".to_string(),
                        NodeOutcome::Replanned => "re-planned".to_string(),
                    };
                    eprintln!("{node}: {what} ({done}/{total} nodes)");
                }
                Progress::NodeSkipped { node, reason } => {
                    eprintln!("{node}: not started: {reason}")
                }
            }
        }
        return;
    }
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg}")
        .expect("a valid template")
        .progress_chars("=> ");
    let total = plan.nodes.iter().filter(|n| n.wave.is_some()).count() as u64;
    let overall = multi.add(
        ProgressBar::new(total)
            .with_style(style.clone())
            .with_prefix("overall"),
    );
    let mut wave_of: BTreeMap<String, usize> = BTreeMap::new();
    let mut bars = Vec::new();
    for (i, wave) in plan.waves.iter().enumerate() {
        for node in wave {
            wave_of.insert(node.clone(), i);
        }
        bars.push(
            multi.add(
                ProgressBar::new(wave.len() as u64)
                    .with_style(style.clone())
                    .with_prefix(format!("wave {}", i + 1)),
            ),
        );
    }
    while let Some(event) = rx.recv().await {
        match event {
            Progress::OpFinished {
                node, label, ok, ..
            } => {
                overall.set_message(format!(
                    "{node}: {label} {}",
                    if ok { "ok" } else { "failed" }
                ));
            }
            Progress::NodeFinished { node, outcome } => {
                overall.inc(1);
                if let Some(bar) = wave_of.get(&node).and_then(|w| bars.get(*w)) {
                    bar.inc(1);
                }
                if let NodeOutcome::Failed(e) = outcome {
                    let _ = multi.println(format!("✗ {node}: {e}"));
                }
            }
            Progress::NodeSkipped { node, reason } => {
                let _ = multi.println(format!("- {node}: not started: {reason}"));
            }
            Progress::NodeStarted { .. } => {}
        }
    }
    overall.finish();
    for bar in bars {
        bar.finish();
    }
}
