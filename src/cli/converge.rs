//! `rivet reconcile` without `--dry-run`: converge once through the
//! conductor, with progress (bars on a terminal, one line per event
//! otherwise), and exit 0 when every node converged, 1 otherwise.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::conductor::converge::{ConvergeEvent, ConvergeReport, converge_once, drives_agents};
use crate::conductor::plan::Planned;
use crate::plan::Plan;
use crate::reconcile::agent::Agents;
use crate::reconcile::runner::NodeOutcome;
use crate::reconcile::{Progress, Stop};
use crate::store::Store;

pub fn converge(dir: &Path, planned: Planned, store: Arc<Store>) -> std::io::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let stop = Stop::default();
        let ctrl_c = stop.shutdown.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: finishing the operations in flight; run again to resume");
                ctrl_c.cancel();
            }
        });
        let agents = match Agents::load(
            Arc::clone(&store),
            planned.fleet.conductor.agent_heartbeat_timeout,
        ) {
            Ok(agents) => Arc::new(agents),
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(1));
            }
        };
        // A deploy that boots an agent needs somewhere for it to call back:
        // the agent channel on `[conductor] http`, for as long as this runs.
        let channel = if drives_agents(&planned.fleet) {
            let addr = planned.fleet.conductor.http;
            match serve_agent_channel(addr, Arc::clone(&agents), stop.shutdown.clone()).await {
                Ok(task) => Some(task),
                Err(e) => {
                    eprintln!(
                        "error: cannot listen on {addr} for the agents of this fleet's deploys: {e}; \
                         free the address or set `[conductor] http` to another"
                    );
                    return Ok(ExitCode::from(1));
                }
            }
        } else {
            None
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let display = tokio::spawn(show(rx));
        let channel_stop = stop.shutdown.clone();
        let result = converge_once(dir, planned, store, agents, stop, tx).await;
        let _ = display.await;
        if let Some(task) = channel {
            channel_stop.cancel();
            let _ = task.await;
        }
        match result {
            Ok(report) => Ok(summary(&report)),
            Err(e) => {
                eprintln!("error: {e}");
                Ok(ExitCode::from(1))
            }
        }
    })
}

/// Serve the agent channel alone on `addr` until `shutdown`.
async fn serve_agent_channel(
    addr: std::net::SocketAddr,
    agents: Arc<Agents>,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "agent channel listening");
    let app = crate::api::agent::router(agents);
    Ok(tokio::spawn(async move {
        if let Err(e) = crate::api::serve(listener, app, shutdown.cancelled_owned()).await {
            tracing::error!(error = %e, "the agent channel stopped");
        }
    }))
}

fn summary(report: &ConvergeReport) -> ExitCode {
    let elapsed = report.elapsed.as_secs_f64();
    if report.nothing_to_do {
        println!("\nNothing to do: every node matches its declaration.");
        return ExitCode::SUCCESS;
    }
    if report.interrupted {
        println!(
            "\nStopped after {elapsed:.1}s; the journal holds the work in flight. Run again to resume."
        );
        return ExitCode::from(1);
    }
    let converged = report.converged;
    if report.ok() {
        println!("\nConverged {converged} node(s) in {elapsed:.1}s.");
        return ExitCode::SUCCESS;
    }
    println!(
        "\nConverged {converged} node(s) in {elapsed:.1}s; {} failed, {} not started:",
        report.failed.len(),
        report.skipped.len()
    );
    for (node, error) in &report.failed {
        println!("  ✗ {node}: {error}");
    }
    for (node, reason) in &report.skipped {
        println!("  - {node}: not started: {reason}");
    }
    ExitCode::from(1)
}

/// Show a converge's events as they come, pass after pass.
async fn show(mut rx: UnboundedReceiver<ConvergeEvent>) {
    let mut display: Option<Display> = None;
    while let Some(event) = rx.recv().await {
        match event {
            ConvergeEvent::Pass(plan) => {
                if let Some(old) = display.take() {
                    old.finish();
                }
                display = Some(Display::new(&plan));
            }
            ConvergeEvent::Progress(progress) => {
                if let Some(display) = display.as_mut() {
                    display.show(progress);
                }
            }
            ConvergeEvent::Resumed(n) => {
                if let Some(old) = display.take() {
                    old.finish();
                }
                eprintln!("resumed the interrupted work of {n} node(s)");
            }
            ConvergeEvent::Unmanaged(name) => {
                eprintln!("{name}: removed from the declarations; left as it is (unmanaged)")
            }
            ConvergeEvent::PruneFailed(e) => eprintln!("warning: could not prune history: {e}"),
        }
    }
    if let Some(display) = display {
        display.finish();
    }
}

/// One pass's progress: per-wave and overall bars on a terminal, one line
/// per event otherwise.
enum Display {
    Lines {
        done: usize,
        total: usize,
    },
    Bars {
        multi: MultiProgress,
        overall: ProgressBar,
        wave_of: BTreeMap<String, usize>,
        waves: Vec<ProgressBar>,
    },
}

impl Display {
    fn new(plan: &Plan) -> Self {
        let total = plan.nodes.iter().filter(|n| n.wave.is_some()).count();
        if !std::io::stderr().is_terminal() {
            return Display::Lines { done: 0, total };
        }
        let multi = MultiProgress::new();
        let style = ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg}")
            .expect("a valid template")
            .progress_chars("=> ");
        let overall = multi.add(
            ProgressBar::new(total as u64)
                .with_style(style.clone())
                .with_prefix("overall"),
        );
        let mut wave_of = BTreeMap::new();
        let mut waves = Vec::new();
        for (i, wave) in plan.waves.iter().enumerate() {
            for node in wave {
                wave_of.insert(node.clone(), i);
            }
            waves.push(
                multi.add(
                    ProgressBar::new(wave.len() as u64)
                        .with_style(style.clone())
                        .with_prefix(format!("wave {}", i + 1)),
                ),
            );
        }
        Display::Bars {
            multi,
            overall,
            wave_of,
            waves,
        }
    }

    fn show(&mut self, event: Progress) {
        match self {
            Display::Lines { done, total } => match event {
                Progress::NodeStarted {
                    node,
                    resumed_at: Some(at),
                    ..
                } => eprintln!("{node}: resuming at operation {}", at + 1),
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
                    *done += 1;
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
            },
            Display::Bars {
                multi,
                overall,
                wave_of,
                waves,
            } => match event {
                Progress::OpFinished {
                    node, label, ok, ..
                } => overall.set_message(format!(
                    "{node}: {label} {}",
                    if ok { "ok" } else { "failed" }
                )),
                Progress::NodeFinished { node, outcome } => {
                    overall.inc(1);
                    if let Some(bar) = wave_of.get(&node).and_then(|w| waves.get(*w)) {
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
            },
        }
    }

    fn finish(self) {
        if let Display::Bars { overall, waves, .. } = self {
            overall.finish();
            for bar in waves {
                bar.finish();
            }
        }
    }
}
