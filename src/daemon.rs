//! `rivet daemon`: watch the declarations, converge what changed, keep power
//! in sync, and stop gracefully on SIGINT/SIGTERM.
//!
//! Loop invariants: one converge pass at a time (a change during a pass marks
//! the fleet dirty and stops only the runs of nodes whose declarations
//! changed); a reload that has problems keeps the last good declarations in
//! force (a syntax error is never a deletion); shutdown lets each running
//! operation finish and keeps its journal, so the next start resumes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::api::{ApiOptions, ApiState};
use crate::backoff::Backoff;
use crate::conductor::{Conductor, OpenError};
use crate::model::fleet::Fleet;
use crate::reconcile::Stop;
use crate::reconcile::pass::Pass;
use crate::reconcile::power_sync;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("cannot watch {path}: {message}")]
    Watch {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Api(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Cluster(#[from] crate::conductor::cluster::ClusterError),
    #[error("cannot serve the HTTP API on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// How long a node that failed waits before the next pass tries it again:
/// 1 s doubling to 5 min, with jitter.
const NODE_BACKOFF: Backoff = Backoff {
    base: Duration::from_secs(1),
    cap: Duration::from_secs(300),
};

enum Event {
    FilesChanged,
    /// A pass ended: the nodes it could touch, how long it took, what it did.
    PassDone(BTreeSet<String>, Duration, Result<Pass, String>),
    Retry,
}

/// How often a cluster member places the fleet (claims, handovers).
const CLUSTER_TICK: Duration = Duration::from_millis(200);

/// Serve the API beside the converge loop until SIGINT or SIGTERM (or the
/// loop's own error), then let work in flight finish and close the journal.
pub async fn serve(
    shared: Arc<Conductor>,
    http: Option<std::net::SocketAddr>,
) -> Result<(), DaemonError> {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (api, local) = start_api(&shared, http, shutdown.clone()).await?;
    if let Some(cluster) = &shared.cluster {
        let url = shared
            .fleet()
            .cluster
            .as_ref()
            .and_then(|c| c.advertise_url.clone())
            .unwrap_or_else(|| format!("http://{local}"));
        if let Err(e) = cluster.join(url, shutdown.clone()).await {
            shutdown.cancel();
            let _ = api.await;
            return Err(DaemonError::Cluster(e));
        }
    }
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        signals().await;
        on_signal.cancel();
    });
    let result = run(Arc::clone(&shared), shutdown.clone()).await;
    // The loop also ends on its own errors: stop the API with it.
    shutdown.cancel();
    let _ = api.await;
    if let Some(cluster) = &shared.cluster {
        cluster.leave().await;
    }
    shared.close_sessions().await;
    let journal = shared.journal.clone();
    drop(shared);
    journal.close();
    result
}

/// Run until `shutdown` is cancelled.
pub async fn run(
    shared: Arc<Conductor>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), DaemonError> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let _watcher = watch(&shared, tx.clone())?;
    shared.watcher_alive.store(true, Ordering::SeqCst);
    let backoff = NODE_BACKOFF;
    let mut failures: BTreeMap<String, (u32, Instant)> = BTreeMap::new();
    let mut stop = Stop::new(shutdown.clone());
    // Passes running now, and the nodes they may touch. A single daemon
    // runs one pass at a time; a cluster member may start another over
    // nodes none of its passes runs (nodes it just claimed, nodes whose
    // peer dependency just converged), so a takeover resumes at once.
    let mut running = 0usize;
    let mut in_flight: BTreeSet<String> = BTreeSet::new();
    let concurrent = shared.cluster.is_some();
    let mut peer_changed = false;
    let mut cluster_every = tokio::time::interval(CLUSTER_TICK);
    cluster_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = true;
    let mut previous: Option<Arc<Fleet>> = None;
    let mut sync_every = tokio::time::interval(shared.fleet().conductor.power_sync_interval);
    sync_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    sync_every.tick().await;
    // The first tick is at once: a daemon restarted on a long history prunes it.
    let mut prune_every = tokio::time::interval(shared.fleet().conductor.history_cleanup_interval);
    prune_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(dir = %shared.dir.display(), nodes = shared.fleet().nodes.len(), "daemon ready");

    loop {
        if dirty && (running == 0 || concurrent) && !shutdown.is_cancelled() {
            dirty = false;
            let now = Instant::now();
            let exclude: BTreeSet<String> = failures
                .iter()
                .filter(|(_, (_, at))| *at > now)
                .map(|(n, _)| n.clone())
                .collect();
            if running == 0 {
                // Fresh per-node re-plan signals once no pass runs.
                stop = Stop::new(shutdown.clone());
            }
            match start_pass(
                &shared,
                previous.take(),
                exclude,
                &in_flight,
                stop.clone(),
                tx.clone(),
            ) {
                Some(nodes) => {
                    running += 1;
                    in_flight.extend(nodes);
                }
                None if running == 0 => release_memory(),
                None => {}
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => {
                tracing::info!("shutting down: letting operations in flight finish");
                break;
            }
            event = rx.recv() => match event {
                Some(Event::FilesChanged) => {
                    if let Some(old) = shared.reload((running > 0).then_some(&stop)) {
                        previous = Some(old);
                        dirty = true;
                    }
                    release_memory();
                }
                Some(Event::PassDone(nodes, took, result)) => {
                    running -= 1;
                    for node in &nodes {
                        in_flight.remove(node);
                    }
                    if running == 0 {
                        // Its per-node replan tokens are of no more use.
                        stop = Stop::new(shutdown.clone());
                    }
                    match result {
                        Ok(pass) => {
                            let now = Instant::now();
                            for name in &pass.report.converged {
                                failures.remove(name);
                            }
                            for (name, error) in &pass.report.failed {
                                let entry = failures.entry(name.clone()).or_insert((0, now));
                                let delay = backoff.delay(entry.0);
                                entry.0 += 1;
                                entry.1 = now + delay;
                                tracing::warn!(node = %name, failures = entry.0, retry_in = ?delay, %error, "node failed; backing off");
                                let tx = tx.clone();
                                tokio::spawn(async move {
                                    tokio::time::sleep(delay).await;
                                    let _ = tx.send(Event::Retry);
                                });
                            }
                            if !pass.report.stopped.is_empty() || !pass.resumed.is_empty() {
                                dirty = true;
                            }
                            tracing::info!(run = pass.run_id, converged = pass.report.converged.len(), failed = pass.report.failed.len(), skipped = pass.report.skipped.len(), "converge pass done");
                            shared.pass_finished(took, Some(pass));
                            release_memory();
                        }
                        Err(e) => {
                            shared.pass_finished(took, None);
                            tracing::error!(error = %e, "converge pass could not run");
                        }
                    }
                }
                Some(Event::Retry) => dirty = true,
                None => break,
            },
            _ = cluster_every.tick(), if concurrent => {
                if shared.cluster_tick(&in_flight).await || std::mem::take(&mut peer_changed) {
                    dirty = true;
                }
            }
            () = cluster_changed(&shared) => peer_changed = true,
            _ = prune_every.tick() => {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    shared.prune_history().await;
                    // Reading the whole node index leaves freed pages behind.
                    release_memory();
                });
            }
            _ = sync_every.tick() => {
                let report = shared.power_sync().await;
                log_sweep(&report);
                if !report.entered_maintenance.is_empty() || !report.recovered.is_empty() {
                    dirty = true;
                }
            }
        }
    }
    // Wait for the passes in flight: their runners stop after their current operation.
    while running > 0 {
        match rx.recv().await {
            Some(Event::PassDone(..)) => running -= 1,
            None => running = 0,
            _ => {}
        }
    }
    shared.watcher_alive.store(false, Ordering::SeqCst);
    tracing::info!("stopped");
    Ok(())
}

/// Hand memory freed by a pass or a reload back to the system: glibc keeps
/// freed blocks in its arenas, which would pin the peak of the largest pass.
fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn log_sweep(report: &power_sync::SweepReport) {
    for node in &report.drifted {
        tracing::warn!(node = %node, "power drift found");
    }
    for node in &report.enforced {
        tracing::info!(node = %node, "power drift enforced");
    }
    for node in &report.entered_maintenance {
        tracing::error!(node = %node, fault = power_sync::POWER_FAILURE, "node entered maintenance");
    }
    for node in &report.recovered {
        tracing::info!(node = %node, "node left maintenance: its BMC answers again");
    }
    tracing::debug!(
        read = report.read,
        failed = report.failed.len(),
        "power sync sweep done"
    );
}

/// Plan and start a pass in the background when there is work; returns
/// the nodes it may touch when one started.
fn start_pass(
    shared: &Arc<Conductor>,
    previous: Option<Arc<Fleet>>,
    exclude: BTreeSet<String>,
    in_flight: &BTreeSet<String>,
    stop: Stop,
    tx: mpsc::UnboundedSender<Event>,
) -> Option<BTreeSet<String>> {
    let work = shared.plan_pass(previous, exclude, in_flight)?;
    let nodes = work.nodes.clone();
    let started = Instant::now();
    let mine = nodes.clone();
    tokio::spawn(async move {
        let result = work.run(stop).await;
        let _ = tx.send(Event::PassDone(mine, started.elapsed(), result));
    });
    Some(nodes)
}

/// Resolves when this daemon's cluster view changed (never without one).
async fn cluster_changed(shared: &Conductor) {
    match &shared.cluster {
        Some(cluster) => cluster.changed().notified().await,
        None => std::future::pending().await,
    }
}

type Watcher = notify_debouncer_full::Debouncer<
    notify_debouncer_full::notify::RecommendedWatcher,
    notify_debouncer_full::RecommendedCache,
>;

/// Watch the declaration files (not the state directory) with a ~100 ms
/// debounce. Only creations, writes, renames and removals count: reading a
/// file (as every reload does) is not a change.
fn watch(
    shared: &Arc<Conductor>,
    tx: mpsc::UnboundedSender<Event>,
) -> Result<Watcher, DaemonError> {
    use notify_debouncer_full::notify::{EventKind, RecursiveMode};
    let root = std::path::absolute(&shared.dir).unwrap_or_else(|_| shared.dir.clone());
    // A state file kept in the fleet directory itself leaves the whole
    // directory watched: only a state directory of its own is skipped.
    let state_dir = shared
        .fleet()
        .conductor
        .state
        .parent()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()))
        .filter(|dir| *dir != root);
    let mut debouncer = notify_debouncer_full::new_debouncer(
        Duration::from_millis(100),
        None,
        move |result: notify_debouncer_full::DebounceEventResult| {
            let Ok(events) = result else { return };
            let relevant = events.iter().any(|e| {
                matches!(
                    e.kind,
                    EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
                ) && e.paths.iter().any(|p| {
                    let in_state = state_dir.as_ref().is_some_and(|s| p.starts_with(s));
                    !in_state && p.extension().is_some_and(|x| x == "toml")
                })
            });
            if relevant {
                let _ = tx.send(Event::FilesChanged);
            }
        },
    )
    .map_err(|e| DaemonError::Watch {
        path: shared.dir.clone(),
        message: e.to_string(),
    })?;
    debouncer
        .watch(&root, RecursiveMode::Recursive)
        .map_err(|e| DaemonError::Watch {
            path: shared.dir.clone(),
            message: e.to_string(),
        })?;
    Ok(debouncer)
}

/// Resolve on SIGINT or SIGTERM.
pub async fn signals() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The API's state over the conductor.
pub fn api_state(shared: &Arc<Conductor>) -> Result<ApiState, DaemonError> {
    let options = ApiOptions::from_fleet(&shared.fleet()).map_err(DaemonError::Api)?;
    Ok(ApiState::new(Arc::clone(shared), options)?)
}

/// Bind the API's address (`--http`, else `[conductor] http`; port 0 picks
/// a free one) and serve it until `shutdown` is cancelled. The returned task
/// ends once requests and async passthru calls in flight have finished.
pub async fn start_api(
    shared: &Arc<Conductor>,
    http: Option<std::net::SocketAddr>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(tokio::task::JoinHandle<()>, std::net::SocketAddr), DaemonError> {
    let state = api_state(shared)?;
    let addr = http.unwrap_or(shared.fleet().conductor.http);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Listen { addr, source })?;
    let local = listener.local_addr()?;
    if !local.ip().is_loopback() && state.options.token.is_none() {
        tracing::warn!(addr = %local, "the HTTP API listens beyond this machine without a token: anyone who reaches it can call vendor passthru; set `[conductor] api_token_env`");
    }
    // `rivet status DIR` asks this address, not `[conductor] http`.
    if let Err(e) = shared.store.record_api_address(local) {
        tracing::warn!(error = %e, "cannot record the API's address beside the state file; `rivet status` needs --url");
    }
    if addr.port() == 0 {
        // The system chose the port: say which at the default level, or
        // nobody can reach the API.
        tracing::warn!(addr = %local, "HTTP API listening");
    } else {
        tracing::info!(addr = %local, "HTTP API listening");
    }
    let app = crate::api::router(state.clone());
    let folding = state.clone();
    let stop_folding = shutdown.clone();
    tokio::spawn(async move { folding.keep_index_current(stop_folding).await });
    let conductor = Arc::clone(shared);
    let task = tokio::spawn(async move {
        if let Err(e) = crate::api::serve(listener, app, shutdown.cancelled_owned()).await {
            tracing::error!(error = %e, "the HTTP API stopped");
        }
        conductor.wait_for_calls().await;
    });
    Ok((task, local))
}
