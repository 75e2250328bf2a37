//! `rivet reconcile`: plan, show, save, check saved plans, converge.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use crate::cli::{Format, ReconcileArgs, print_problems};
use crate::driver::registry::Registry;
use crate::model::fleet::{Fleet, load};
use crate::plan::fingerprint::Fingerprint;
use crate::plan::{self, Observed, Plan, render};
use crate::store::Snapshot;

/// Why a reconcile stopped before doing anything.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{0} problem(s) in the declarations")]
    Invalid(usize),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    SavedPlan(String),
}

/// A plan with what it was made from.
pub struct Planned {
    pub fleet: Fleet,
    pub snapshot: Snapshot,
    pub plan: Plan,
    /// The kept declarations, read only when a removed node is to be pruned.
    pub previous: Option<Fleet>,
}

/// Load, observe (and optionally refresh), and plan. With `store`, the
/// observed state comes from that open store; otherwise the state file is
/// read without being created or changed.
pub fn plan_fleet(
    dir: &Path,
    refresh: bool,
    store: Option<&crate::store::Store>,
) -> Result<Planned, PlanError> {
    plan_loaded(load_valid(dir)?, refresh, store)
}

/// The declarations in `dir`, or their problems printed.
pub fn load_valid(dir: &Path) -> Result<Fleet, PlanError> {
    let loaded = load(dir);
    if !loaded.is_valid() {
        print_problems(&loaded.problems);
        return Err(PlanError::Invalid(loaded.problems.len()));
    }
    Ok(loaded.fleet)
}

/// Observe (and optionally refresh) and plan declarations already loaded.
pub fn plan_loaded(
    fleet: Fleet,
    refresh: bool,
    store: Option<&crate::store::Store>,
) -> Result<Planned, PlanError> {
    let snapshot = match store {
        Some(store) => Snapshot::of(store)?,
        None => Snapshot::read(&fleet.conductor.state)?,
    };
    let mut observed: BTreeMap<String, Observed> = snapshot
        .nodes
        .iter()
        .map(|(name, record)| (name.clone(), Observed::from_record(record)))
        .collect();
    let mut warnings = Vec::new();
    if refresh {
        let bmcs = Arc::new(crate::driver::fake::FakeBmcDir::beside(
            &fleet.conductor.state,
            true,
        ));
        let registry = Registry::new(fleet.root.clone(), bmcs)
            .with_ipmi_min_command_interval(fleet.conductor.ipmi_min_command_interval);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| PlanError::SavedPlan(format!("cannot start the async runtime: {e}")))?;
        runtime.block_on(plan::refresh(
            &fleet,
            &registry,
            &mut observed,
            &mut warnings,
        ));
    }
    match plan::build(&fleet, &observed, warnings) {
        Ok(mut plan) => {
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
        Err(problems) => {
            print_problems(&problems);
            Err(PlanError::Invalid(problems.len()))
        }
    }
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

pub fn reconcile(args: &ReconcileArgs) -> std::io::Result<ExitCode> {
    let fleet = match load_valid(&args.dir) {
        Ok(fleet) => fleet,
        Err(e) => return Ok(fail(&e)),
    };
    // Converging needs the state file for itself; a dry run only reads it.
    let store = if args.dry_run {
        None
    } else {
        match crate::store::Store::open(&fleet.conductor.state) {
            Ok(store) => Some(Arc::new(store)),
            Err(e) => return Ok(fail(&PlanError::Store(e))),
        }
    };
    let planned = match plan_loaded(fleet, args.refresh, store.as_deref()) {
        Ok(p) => p,
        Err(e) => return Ok(fail(&e)),
    };
    let plan = &planned.plan;
    if let Some(saved) = &args.plan
        && let Err(e) = check_saved(saved, plan)
    {
        return Ok(fail(&e));
    }
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    match args.format {
        Format::Json => print!("{}", render::json(plan)),
        Format::Human => print!("{}", render::human(plan, color)),
    }
    if let Some(out) = &args.out {
        std::fs::write(out, render::json(plan))?;
        eprintln!(
            "Saved the plan to {} ({}).",
            out.display(),
            plan.fingerprint.digest
        );
    }
    match store {
        Some(store) => crate::cli_converge::converge(&args.dir, planned, store),
        None => {
            let code = if args.detailed_exitcode && plan.summary.has_changes() {
                2
            } else {
                0
            };
            Ok(ExitCode::from(code))
        }
    }
}

fn fail(err: &PlanError) -> ExitCode {
    match err {
        PlanError::Invalid(n) => eprintln!(
            "error: {n} {}; no plan was made and nothing was changed.",
            if *n == 1 { "problem" } else { "problems" }
        ),
        other => eprintln!("error: {other}"),
    }
    ExitCode::from(1)
}
