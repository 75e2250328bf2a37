//! `rivet daemon`: watch the declarations, converge what changed, keep power
//! in sync, and stop gracefully on SIGINT/SIGTERM.
//!
//! Loop invariants: one converge pass at a time (a change during a pass marks
//! the fleet dirty and stops only the runs of nodes whose declarations
//! changed); a reload that has problems keeps the last good declarations in
//! force (a syntax error is never a deletion); shutdown lets each running
//! operation finish and keeps its journal, so the next start resumes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::api::metrics::Metrics;
use crate::api::{ApiOptions, ApiState};
use crate::backoff::Backoff;
use crate::cli_converge::context_with_locks;
use crate::model::fleet::{Fleet, load};
use crate::plan::{self, Observed, declaration_digest};
use crate::reconcile::journal::Journal;
use crate::reconcile::locks::{LocalLocks, NodeLocks};
use crate::reconcile::pass::{Pass, PassOptions, has_work, run_pass};
use crate::reconcile::power_sync;
use crate::reconcile::{Ctx, Stop};
use crate::store::{Snapshot, Store};

/// What the daemon knows, shared with the HTTP API.
pub struct Shared {
    pub dir: PathBuf,
    pub store: Arc<Store>,
    pub journal: Journal,
    pub locks: Arc<dyn NodeLocks>,
    /// The declarations in force (the last good ones).
    pub fleet: RwLock<Arc<Fleet>>,
    /// Problems of the last reload that failed, until one succeeds.
    pub load_problems: RwLock<Vec<String>>,
    pub watcher_alive: AtomicBool,
    pub last_pass: Mutex<Option<(Instant, Pass)>>,
    pub started: Instant,
    /// What `GET /metrics` reports.
    pub metrics: Arc<Metrics>,
}

impl Shared {
    pub fn fleet(&self) -> Arc<Fleet> {
        Arc::clone(&self.fleet.read().expect("fleet lock"))
    }

    /// A converge context over the declarations in force.
    pub fn ctx(&self) -> Arc<Ctx> {
        // One lock table for passes, power sync and the API.
        context_with_locks(self.fleet(), self.journal.clone(), Arc::clone(&self.locks))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0} problem(s) in the declarations; fix them and start again")]
    Invalid(usize),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot watch {path}: {message}")]
    Watch { path: PathBuf, message: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Api(String),
    #[error("cannot serve the HTTP API on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Options from the command line.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub http: Option<std::net::SocketAddr>,
}

/// Open everything the daemon needs; refuses at once when another process
/// holds the state file.
pub fn open(dir: &Path) -> Result<Arc<Shared>, DaemonError> {
    let loaded = load(dir);
    if !loaded.is_valid() {
        crate::cli::print_problems(&loaded.problems);
        return Err(DaemonError::Invalid(loaded.problems.len()));
    }
    let fleet = loaded.fleet;
    let store = Arc::new(Store::open(&fleet.conductor.state)?);
    let journal = Journal::start(Arc::clone(&store));
    let metrics = Arc::new(Metrics::default());
    metrics.watch(&store);
    Ok(Arc::new(Shared {
        dir: dir.to_path_buf(),
        store,
        journal,
        locks: Arc::new(LocalLocks::default()),
        fleet: RwLock::new(Arc::new(fleet)),
        load_problems: RwLock::new(Vec::new()),
        watcher_alive: AtomicBool::new(false),
        last_pass: Mutex::new(None),
        started: Instant::now(),
        metrics,
    }))
}

enum Event {
    FilesChanged,
    PassDone(Result<Pass, String>),
    Retry,
}

/// Run until `shutdown` is cancelled.
pub async fn run(
    shared: Arc<Shared>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), DaemonError> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let _watcher = watch(&shared, tx.clone())?;
    shared.watcher_alive.store(true, Ordering::SeqCst);
    let backoff = Backoff {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(300),
    };
    let mut failures: BTreeMap<String, (u32, Instant)> = BTreeMap::new();
    let mut stop = Stop::new(shutdown.clone());
    let mut running = false;
    let mut dirty = true;
    let mut previous: Option<Arc<Fleet>> = None;
    let mut pass_started = Instant::now();
    let mut sync_every = tokio::time::interval(shared.fleet().conductor.power_sync_interval);
    sync_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    sync_every.tick().await;
    // The first tick is at once: a daemon restarted on a long history prunes it.
    let mut prune_every = tokio::time::interval(shared.fleet().conductor.history_cleanup_interval);
    prune_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(dir = %shared.dir.display(), nodes = shared.fleet().nodes.len(), "daemon ready");

    loop {
        if dirty && !running && !shutdown.is_cancelled() {
            dirty = false;
            let now = Instant::now();
            let exclude: BTreeSet<String> = failures
                .iter()
                .filter(|(_, (_, at))| *at > now)
                .map(|(n, _)| n.clone())
                .collect();
            // Fresh per-node re-plan signals for each pass.
            stop = Stop::new(shutdown.clone());
            pass_started = Instant::now();
            running = start_pass(&shared, previous.take(), exclude, stop.clone(), tx.clone());
            if !running {
                release_memory();
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => {
                tracing::info!("shutting down: letting operations in flight finish");
                break;
            }
            event = rx.recv() => match event {
                Some(Event::FilesChanged) => {
                    if let Some(old) = reload(&shared, running.then_some(&stop)) {
                        previous = Some(old);
                        dirty = true;
                    }
                    release_memory();
                }
                Some(Event::PassDone(result)) => {
                    running = false;
                    // Its per-node replan tokens are of no more use.
                    stop = Stop::new(shutdown.clone());
                    shared.metrics.pass_finished(pass_started.elapsed());
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
                            *shared.last_pass.lock().expect("last pass") = Some((now, pass));
                            release_memory();
                        }
                        Err(e) => tracing::error!(error = %e, "converge pass could not run"),
                    }
                }
                Some(Event::Retry) => dirty = true,
                None => break,
            },
            _ = prune_every.tick() => {
                tokio::spawn(prune_history(Arc::clone(&shared)));
            }
            _ = sync_every.tick() => {
                let report = power_sync::sweep(shared.ctx(), shared.fleet(), shared.fleet().conductor.power_sync_workers as usize).await;
                log_sweep(&report);
                if !report.entered_maintenance.is_empty() || !report.recovered.is_empty() {
                    dirty = true;
                }
            }
        }
    }
    // Wait for the pass in flight: its runners stop after their current operation.
    while running {
        match rx.recv().await {
            Some(Event::PassDone(_)) | None => running = false,
            _ => {}
        }
    }
    shared.watcher_alive.store(false, Ordering::SeqCst);
    tracing::info!("stopped");
    Ok(())
}

/// Remove every node's history beyond `history_max_entries`.
async fn prune_history(shared: Arc<Shared>) {
    let Some(keep) = shared.fleet().conductor.history_max_entries else {
        return;
    };
    let store = Arc::clone(&shared.store);
    match tokio::task::spawn_blocking(move || store.prune_history(keep, None)).await {
        Ok(Ok(0)) => {}
        Ok(Ok(removed)) => tracing::info!(removed, keep, "history pruned"),
        Ok(Err(e)) => tracing::warn!(error = %e, "could not prune history"),
        Err(e) => tracing::warn!(error = %e, "history pruning stopped"),
    }
    // Reading the whole node index leaves freed pages behind.
    release_memory();
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
        tracing::warn!(node = %node, fault = power_sync::POWER_FAILURE, "node entered maintenance");
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
/// whether one started.
fn start_pass(
    shared: &Arc<Shared>,
    previous: Option<Arc<Fleet>>,
    exclude: BTreeSet<String>,
    stop: Stop,
    tx: mpsc::UnboundedSender<Event>,
) -> bool {
    let fleet = shared.fleet();
    let snapshot = match Snapshot::of(&shared.store) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the state file");
            return false;
        }
    };
    let observed: BTreeMap<String, Observed> = snapshot
        .nodes
        .iter()
        .map(|(n, r)| (n.clone(), Observed::from_record(r)))
        .collect();
    let plan = match plan::build(&fleet, &observed, Vec::new()) {
        Ok(plan) => plan,
        Err(problems) => {
            for p in &problems {
                tracing::error!(code = p.code, "{}", p.message);
            }
            return false;
        }
    };
    let work_left = has_work(&plan, &snapshot)
        && (plan
            .nodes
            .iter()
            .any(|n| n.change != plan::Change::None && !exclude.contains(&n.name))
            || !snapshot.journals.is_empty()
            || snapshot
                .nodes
                .keys()
                .any(|n| fleet.node(n).is_none() && !snapshot.nodes[n].unmanaged));
    if !work_left {
        return false;
    }
    tracing::info!(
        deploy = plan.summary.deploy,
        undeploy = plan.summary.undeploy,
        power_on = plan.summary.power_on,
        power_off = plan.summary.power_off,
        change = plan.summary.change,
        "planned changes; converging"
    );
    let ctx = shared.ctx();
    let workers = fleet.conductor.workers as usize;
    // Without the declarations before an edit (just started), a prune takes
    // the removed node's BMC from the kept declarations.
    let previous = previous.or_else(|| {
        plan::previous_declarations(&fleet, &snapshot, || shared.store.declarations()).map(Arc::new)
    });
    tokio::spawn(async move {
        let options = PassOptions {
            previous: previous.as_deref(),
            exclude,
            workers,
        };
        let result = run_pass(ctx, &plan, &snapshot, options, stop, None)
            .await
            .map_err(|e| e.to_string());
        let _ = tx.send(Event::PassDone(result));
    });
    true
}

/// Load the declarations again. On problems keep the last good ones; on
/// success install the new ones, stop runs of nodes whose declarations
/// changed, and return the previous declarations.
fn reload(shared: &Arc<Shared>, running: Option<&Stop>) -> Option<Arc<Fleet>> {
    let loaded = load(&shared.dir);
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
        *shared.load_problems.write().expect("problems lock") = messages;
        return None;
    }
    shared.load_problems.write().expect("problems lock").clear();
    let old = shared.fleet();
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
    *shared.fleet.write().expect("fleet lock") = new;
    Some(old)
}

type Watcher = notify_debouncer_full::Debouncer<
    notify_debouncer_full::notify::RecommendedWatcher,
    notify_debouncer_full::RecommendedCache,
>;

/// Watch the declaration files (not the state directory) with a ~100 ms
/// debounce. Only creations, writes, renames and removals count: reading a
/// file (as every reload does) is not a change.
fn watch(shared: &Arc<Shared>, tx: mpsc::UnboundedSender<Event>) -> Result<Watcher, DaemonError> {
    use notify_debouncer_full::notify::{EventKind, RecursiveMode};
    let state_dir = shared
        .fleet()
        .conductor
        .state
        .parent()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
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
    let root = std::path::absolute(&shared.dir).unwrap_or_else(|_| shared.dir.clone());
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

// The HTTP API's view of the daemon, and serving it.

impl crate::api::Conductor for Shared {
    fn fleet(&self) -> Arc<Fleet> {
        Shared::fleet(self)
    }

    fn registry(&self) -> Arc<crate::driver::registry::Registry> {
        Arc::clone(&self.ctx().registry)
    }

    fn watcher_alive(&self) -> bool {
        self.watcher_alive.load(Ordering::SeqCst)
    }

    fn last_pass(&self) -> Option<Instant> {
        self.last_pass
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(at, _)| *at)
    }

    fn declaration_problems(&self) -> usize {
        self.load_problems
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

/// The API's state over the daemon's store, journal, locks and declarations.
pub fn api_state(shared: &Arc<Shared>) -> Result<ApiState, DaemonError> {
    let options = ApiOptions::from_fleet(&shared.fleet()).map_err(DaemonError::Api)?;
    Ok(ApiState::new(
        Arc::clone(shared) as Arc<dyn crate::api::Conductor>,
        Arc::clone(&shared.store),
        shared.journal.clone(),
        Arc::clone(&shared.locks),
        Arc::clone(&shared.metrics),
        options,
    )?)
}

/// Bind the API's address (`--http`, else `[conductor] http`; port 0 picks
/// a free one) and serve it until `shutdown` is cancelled. The returned task
/// ends once requests and async passthru calls in flight have finished.
pub async fn start_api(
    shared: &Arc<Shared>,
    http: Option<std::net::SocketAddr>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, DaemonError> {
    let state = api_state(shared)?;
    let addr = http.unwrap_or(shared.fleet().conductor.http);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Listen { addr, source })?;
    let local = listener.local_addr()?;
    if !local.ip().is_loopback() && state.options.token.is_none() {
        tracing::warn!(addr = %local, "the HTTP API listens beyond this machine without a token: anyone who reaches it can call vendor passthru; set `[conductor] api_token_env`");
    }
    tracing::info!(addr = %local, "HTTP API listening");
    let app = crate::api::router(state.clone());
    let folding = state.clone();
    let stop_folding = shutdown.clone();
    tokio::spawn(async move { folding.keep_index_current(stop_folding).await });
    Ok(tokio::spawn(async move {
        if let Err(e) = crate::api::serve(listener, app, shutdown.cancelled_owned()).await {
            tracing::error!(error = %e, "the HTTP API stopped");
        }
        state.wait_for_calls().await;
    }))
}
