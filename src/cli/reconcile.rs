//! `rivet reconcile`: the plan (shown, saved, checked against a saved one)
//! and, without `--dry-run`, the converge.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use super::{Format, ReconcileArgs, print_problems};
use crate::conductor::plan::{PlanError, check_saved, load_valid, plan_loaded};
use crate::model::fleet::Fleet;
use crate::plan::render;

pub fn reconcile(args: &ReconcileArgs) -> std::io::Result<ExitCode> {
    let fleet = match load_valid(&args.dir) {
        Ok(fleet) => fleet,
        Err(e) => return Ok(fail(&e)),
    };
    if !args.dry_run && fleet.cluster.is_some() {
        return Ok(refuse_clustered(&fleet));
    }
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
        Format::Human => {
            if planned.fleet.cluster.is_some() {
                println!("{}", clustered_header(&planned.fleet));
            }
            print!("{}", render::human(plan, color));
        }
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
        Some(store) => super::converge::converge(&args.dir, planned, store),
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

/// The first line of a clustered fleet's plan: what it was planned from.
fn clustered_header(fleet: &Fleet) -> String {
    format!(
        "Planned from the state file of this host, {} ({}): nodes the cluster's other daemons converge may be further along.",
        fleet.conductor.host,
        fleet.conductor.state.display()
    )
}

/// Refuse to converge a fleet its daemons converge; exit 2, nothing
/// opened or changed.
fn refuse_clustered(fleet: &Fleet) -> ExitCode {
    let watch = fleet
        .cluster
        .as_ref()
        .and_then(|c| c.advertise_url.as_deref())
        .unwrap_or("http://HOST:6385");
    eprintln!(
        "error: this fleet is converged by its daemons ([cluster] in rivet.toml): a one-shot converge beside them would drive the same BMCs. Nothing was changed.\n  \
         help: watch them converge it with `rivet status --url {watch}`, or plan with `rivet reconcile --dry-run`; to converge by hand, stop the fleet's daemons, remove [cluster] from rivet.toml and run `rivet reconcile` again"
    );
    ExitCode::from(2)
}

/// Say why nothing was planned or changed; exit 1.
pub fn fail(err: &PlanError) -> ExitCode {
    match err {
        PlanError::Invalid(problems) => {
            print_problems(problems);
            let n = problems.len();
            eprintln!(
                "error: {n} {}; no plan was made and nothing was changed.",
                if n == 1 { "problem" } else { "problems" }
            );
        }
        other => eprintln!("error: {other}"),
    }
    ExitCode::from(1)
}
