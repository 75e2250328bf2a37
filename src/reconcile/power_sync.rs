//! Periodic power sync: read every managed node's power state with bounded
//! concurrency; enforce or report drift from the declared power; three
//! consecutive failed reads put a node in maintenance with fault
//! `power failure`, and the first good read takes it out again.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::{Ctx, now};
use crate::config::raw::DriftPolicy;
use crate::model::fleet::Fleet;
use crate::store::Write;
use crate::store::records::{Event, NodeRecord, Outcome};
use crate::vocab::PowerState;

/// Failed reads in a row that put a node into maintenance.
pub const FAILURES_FOR_MAINTENANCE: u32 = 3;
pub const POWER_FAILURE: &str = "power failure";

/// What one sweep found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SweepReport {
    pub read: usize,
    pub drifted: Vec<String>,
    pub enforced: Vec<String>,
    pub failed: Vec<String>,
    pub entered_maintenance: Vec<String>,
    pub recovered: Vec<String>,
}

fn note(node: &str, action: &str, outcome: Outcome, detail: String) -> Event {
    Event::note(node, action, outcome, detail, now())
}

enum Found {
    Read(PowerState),
    Failed(String),
    Busy,
}

/// One sweep over every managed node that is not busy.
pub async fn sweep(ctx: Arc<Ctx>, fleet: Arc<Fleet>, concurrency: usize) -> SweepReport {
    let store = Arc::clone(ctx.journal.store());
    let records = store.nodes().unwrap_or_default();
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for node in fleet
        .nodes
        .iter()
        .filter(|n| records.get(&n.name).is_some_and(|r| !r.unmanaged))
    {
        let ctx = Arc::clone(&ctx);
        let limit = Arc::clone(&limit);
        let node = node.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("semaphore open");
            // A node being converged is read by its runner; skip it.
            let Ok(_guard) = ctx.locks.try_lock(&node.name, "power sync") else {
                return (node, Found::Busy);
            };
            let found = match ctx.registry.power(&node) {
                Ok(power) => match power.get_power_state(&node).await {
                    Ok(state) => Found::Read(state),
                    Err(e) => Found::Failed(e.message),
                },
                Err(e) => Found::Failed(e.message),
            };
            (node, found)
        });
    }
    let mut report = SweepReport::default();
    let mut writes = Vec::new();
    let mut enforce = Vec::new();
    while let Some(Ok((node, found))) = tasks.join_next().await {
        let Some(mut record) = records.get(&node.name).cloned() else {
            continue;
        };
        let before = record.clone();
        match found {
            Found::Busy => continue,
            Found::Read(state) => {
                report.read += 1;
                record.power_failures = 0;
                if record.maintenance && record.fault.as_deref() == Some(POWER_FAILURE) {
                    record.maintenance = false;
                    record.fault = None;
                    report.recovered.push(node.name.clone());
                    writes.push(Write::Event(note(
                        &node.name,
                        "maintenance",
                        Outcome::Noted,
                        "the BMC answers again: left maintenance".into(),
                    )));
                }
                record.power_state = Some(state);
                if let Some(want) = node.desired.power.map(PowerState::from)
                    && want != state
                    && !record.maintenance
                {
                    report.drifted.push(node.name.clone());
                    let detail = format!(
                        "power is {} but {} is declared",
                        state.short(),
                        want.short()
                    );
                    match fleet.conductor.drift {
                        DriftPolicy::Report => {
                            record.last_error = Some(format!("drift: {detail}"));
                            writes.push(Write::Event(note(
                                &node.name,
                                "power drift",
                                Outcome::Noted,
                                detail,
                            )));
                        }
                        DriftPolicy::Enforce => {
                            writes.push(Write::Event(note(
                                &node.name,
                                "power drift",
                                Outcome::Noted,
                                format!("{detail}: enforcing"),
                            )));
                            enforce.push((node.clone(), want));
                        }
                    }
                }
            }
            Found::Failed(error) => {
                report.failed.push(node.name.clone());
                record.power_failures += 1;
                if record.power_failures >= FAILURES_FOR_MAINTENANCE && !record.maintenance {
                    record.maintenance = true;
                    record.fault = Some(POWER_FAILURE.to_string());
                    record.last_error = Some(error.clone());
                    report.entered_maintenance.push(node.name.clone());
                    writes.push(Write::Event(note(
                        &node.name,
                        "maintenance",
                        Outcome::Noted,
                        format!(
                            "{} failed power reads in a row ({error}): entered maintenance",
                            record.power_failures
                        ),
                    )));
                }
            }
        }
        if record != before {
            record.updated_at = Some(now());
            writes.push(Write::Node(node.name.clone(), record));
        }
    }
    if !writes.is_empty()
        && let Err(e) = ctx.journal.commit(writes).await
    {
        tracing::error!(error = %e, "power sync could not record what it found");
    }
    // Enforce concurrently, under the same limit as the reads.
    let mut fixes = tokio::task::JoinSet::new();
    for (node, want) in enforce {
        let ctx = Arc::clone(&ctx);
        let limit = Arc::clone(&limit);
        fixes.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("semaphore open");
            let Ok(_guard) = ctx.locks.try_lock(&node.name, "power sync") else {
                return None;
            };
            let result = match ctx.registry.power(&node) {
                Ok(p) => p.set_power_state(&node, want, ctx.power_timeout).await,
                Err(e) => Err(e),
            };
            Some((node, want, result))
        });
    }
    let mut writes = Vec::new();
    while let Some(Ok(fixed)) = fixes.join_next().await {
        let Some((node, want, result)) = fixed else {
            continue;
        };
        let mut record =
            store.node(&node.name).ok().flatten().unwrap_or_else(|| {
                NodeRecord::first_seen(node.uuid.to_string(), &node.driver, now())
            });
        let event = match result {
            Ok(()) => {
                record.power_state = Some(want);
                record.last_error = None;
                report.enforced.push(node.name.clone());
                note(
                    &node.name,
                    &format!("power {}", want.short()),
                    Outcome::Succeeded,
                    "drift enforced".into(),
                )
            }
            Err(e) => {
                record.last_error = Some(format!("enforcing power {}: {e}", want.short()));
                note(
                    &node.name,
                    &format!("power {}", want.short()),
                    Outcome::Failed,
                    e.message,
                )
            }
        };
        record.updated_at = Some(now());
        writes.push(Write::Node(node.name.clone(), record));
        writes.push(Write::Event(event));
    }
    if !writes.is_empty()
        && let Err(e) = ctx.journal.commit(writes).await
    {
        tracing::error!(error = %e, "power sync could not record enforced drift");
    }
    report
}
