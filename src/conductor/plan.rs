//! Loading and planning a fleet: the declarations, the observed state (the
//! store, and the BMCs when asked to refresh), the plan, and saved plans.
//! Shared by `rivet reconcile` (dry run and converge) and the daemon's passes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::diag::Problem;
use crate::model::fleet::{Fleet, load};
use crate::plan::fingerprint::Fingerprint;
use crate::plan::{self, Observed, Plan};
use crate::store::{Snapshot, Store};

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The declarations (or the plan made of them) have problems; the caller
    /// shows them.
    #[error("{} problem(s) in the declarations", .0.len())]
    Invalid(Vec<Problem>),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    SavedPlan(String),
    /// A converge pass could not run (the store failed under it).
    #[error("{0}")]
    Pass(String),
}

/// A plan with what it was made from.
pub struct Planned {
    pub fleet: Fleet,
    pub snapshot: Snapshot,
    pub plan: Plan,
    /// The kept declarations, read only when a removed node is to be pruned.
    pub previous: Option<Fleet>,
}

/// The declarations in `dir`, or all their problems.
pub fn load_valid(dir: &Path) -> Result<Fleet, PlanError> {
    let loaded = load(dir);
    if !loaded.is_valid() {
        return Err(PlanError::Invalid(loaded.problems));
    }
    Ok(loaded.fleet)
}

/// Load, observe (and optionally refresh), and plan. With `store`, the
/// observed state comes from that open store; otherwise the state file is
/// read without being created or changed.
pub fn plan_fleet(dir: &Path, refresh: bool, store: Option<&Store>) -> Result<Planned, PlanError> {
    plan_loaded(load_valid(dir)?, refresh, store)
}

/// What the store says about each recorded node, as the planner reads it.
pub fn observed(snapshot: &Snapshot) -> BTreeMap<String, Observed> {
    snapshot
        .nodes
        .iter()
        .map(|(name, record)| (name.clone(), Observed::from_record(record)))
        .collect()
}

/// Observe (and optionally refresh) and plan declarations already loaded.
pub fn plan_loaded(
    fleet: Fleet,
    refresh: bool,
    store: Option<&Store>,
) -> Result<Planned, PlanError> {
    let snapshot = match store {
        Some(store) => Snapshot::of(store)?,
        None => Snapshot::read(&fleet.conductor.state)?,
    };
    let mut observed = observed(&snapshot);
    let mut warnings = Vec::new();
    if refresh {
        // Refreshing only reads: fake BMCs are not created by it.
        let registry = super::context::registry(&fleet, true);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| PlanError::SavedPlan(format!("cannot start the async runtime: {e}")))?;
        runtime.block_on(async {
            plan::refresh(&fleet, &registry, &mut observed, &mut warnings).await;
            // A Redfish login of the refresh is not left open on the BMC.
            registry.close().await;
        });
    }
    let mut plan = plan::build(&fleet, &observed, warnings).map_err(PlanError::Invalid)?;
    let previous = plan::previous_declarations(&fleet, &snapshot, || match store {
        Some(store) => store.declarations(),
        None => crate::store::read_declarations(&fleet.conductor.state),
    });
    plan.add_removed(&fleet, &snapshot, previous.as_ref());
    Ok(Planned {
        fleet,
        snapshot,
        plan,
        previous,
    })
}

/// Refuse a saved plan whose inputs changed, saying what changed.
pub fn check_saved(path: &Path, current: &Plan) -> Result<(), PlanError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        PlanError::SavedPlan(format!(
            "cannot read the saved plan {}: {e}",
            path.display()
        ))
    })?;
    let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        PlanError::SavedPlan(format!("{} is not a rivet plan: {e}", path.display()))
    })?;
    if doc["format_version"] != serde_json::json!(plan::FORMAT_VERSION) {
        return Err(PlanError::SavedPlan(format!(
            "{} has plan format {}, this rivet writes {}; make the plan again",
            path.display(),
            doc["format_version"],
            plan::FORMAT_VERSION
        )));
    }
    let saved: Fingerprint = serde_json::from_value(doc["fingerprint"].clone()).map_err(|e| {
        PlanError::SavedPlan(format!("{} has no valid fingerprint: {e}", path.display()))
    })?;
    let changes = saved.changes_since(&current.fingerprint);
    if saved.digest != current.fingerprint.digest {
        let mut message = format!(
            "the saved plan {} is stale: what it was made from has changed since",
            path.display()
        );
        for change in &changes {
            message.push_str(&format!("\n  - {change}"));
        }
        message.push_str("\nmake a new plan with `rivet reconcile --dry-run --out FILE`, review it, and apply that");
        return Err(PlanError::SavedPlan(message));
    }
    Ok(())
}

/// Whether a daemon pass has anything to do: planned changes on nodes not
/// backing off, interrupted runs to resume, or removed nodes still managed.
pub fn daemon_has_work(
    fleet: &Fleet,
    plan: &Plan,
    snapshot: &Snapshot,
    backing_off: &std::collections::BTreeSet<String>,
) -> bool {
    crate::reconcile::pass::has_work(plan, snapshot)
        && (plan
            .nodes
            .iter()
            .any(|n| n.change != plan::Change::None && !backing_off.contains(&n.name))
            || !snapshot.journals.is_empty()
            || snapshot
                .nodes
                .iter()
                .any(|(n, record)| fleet.node(n).is_none() && !record.unmanaged))
}

/// In a cluster, narrow a daemon pass to this daemon's share: the nodes it
/// owns that no other pass of it runs (`in_flight`), leaving out (in
/// `exclude`) every other node and every node waiting for a node outside
/// the share that has not converged (a peer's, or one another pass runs):
/// the scheduler waits only for dependencies within its pass. The snapshot
/// keeps only the share, so a pass never touches a journal or record of a
/// node it does not own.
pub fn cluster_share(
    fleet: &Fleet,
    plan: &crate::plan::Plan,
    snapshot: &mut Snapshot,
    owned: &std::collections::BTreeSet<String>,
    in_flight: &std::collections::BTreeSet<String>,
    exclude: &mut std::collections::BTreeSet<String>,
) {
    let converged = |name: &str| {
        plan.nodes
            .binary_search_by(|n| n.name.as_str().cmp(name))
            .is_ok_and(|i| plan.nodes[i].change == plan::Change::None)
            && snapshot
                .nodes
                .get(name)
                .is_some_and(|r| r.target_provision_state.is_none())
    };
    let mut share: std::collections::BTreeSet<&str> = fleet
        .nodes
        .iter()
        .map(|n| n.name.as_str())
        .filter(|n| owned.contains(*n) && !in_flight.contains(*n) && !exclude.contains(*n))
        .collect();
    // Until nothing more leaves: a node left out holds back its dependents.
    loop {
        let waiting: Vec<&str> = share
            .iter()
            .copied()
            .filter(|name| {
                fleet.node(name).is_some_and(|node| {
                    node.depends_on
                        .iter()
                        .any(|d| !share.contains(d.value.as_str()) && !converged(&d.value))
                })
            })
            .collect();
        if waiting.is_empty() {
            break;
        }
        for name in waiting {
            share.remove(name);
        }
    }
    for node in &fleet.nodes {
        if !share.contains(node.name.as_str()) {
            exclude.insert(node.name.clone());
        }
    }
    // Removed nodes this daemon still owns stay, for their prune or mark.
    let keep = |name: &String| {
        share.contains(name.as_str())
            || (fleet.node(name).is_none() && owned.contains(name) && !in_flight.contains(name))
    };
    snapshot.nodes.retain(|name, _| keep(name));
    snapshot.journals.retain(|name, _| keep(name));
}

/// The shared declarations of a pass, kept as `Arc`s by the daemon.
pub fn previous_or_kept(
    fleet: &Fleet,
    snapshot: &Snapshot,
    store: &Store,
    previous: Option<Arc<Fleet>>,
) -> Option<Arc<Fleet>> {
    // Without the declarations before an edit (just started), a prune takes
    // the removed node's BMC from the kept declarations.
    previous.or_else(|| {
        plan::previous_declarations(fleet, snapshot, || store.declarations()).map(Arc::new)
    })
}
