//! The ordered deploy steps of one node. Validation merges them with the
//! same function (`model::fleet::steps`), so a node of a loaded fleet always
//! has its steps.

use crate::diag::Problem;
use crate::model::fleet::Fleet;
pub use crate::model::fleet::steps::PlannedStep;
use crate::model::node::Node;

/// The steps a deploy of `node` runs, in order.
pub fn deploy_steps(fleet: &Fleet, node: &Node) -> Result<Vec<PlannedStep>, Vec<Problem>> {
    crate::model::fleet::steps::deploy_steps(&fleet.catalog, &fleet.templates, node)
}
