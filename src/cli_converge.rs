//! `rivet reconcile` without `--dry-run`: converge once.

use std::process::ExitCode;

use crate::model::fleet::Fleet;
use crate::plan::Plan;

pub fn converge(_fleet: &Fleet, plan: &Plan) -> std::io::Result<ExitCode> {
    if !plan.summary.has_changes() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "error: converging is not available in this build yet; use --dry-run to see the plan"
    );
    Ok(ExitCode::from(1))
}
