//! The plan: for every node, the actions that take it from its observed
//! state to its declared state, its ordered deploy steps, and the waves in
//! which nodes converge. Building a plan reads; it never changes anything.

pub mod fingerprint;
pub mod graph;
pub mod provision;
pub mod render;
pub mod steps;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::diag::Problem;
use crate::driver::registry::Registry;
use crate::model::fleet::Fleet;
use crate::model::fleet::graph::Dependencies;
use crate::model::node::{Node, SecretSource};
use crate::store::Snapshot;
use crate::store::records::NodeRecord;
use crate::vocab::{BootDevice, BootMode, PowerState, ProvisionState};
use fingerprint::Fingerprint;
use provision::{Transition, Verb};
use steps::PlannedStep;

/// The version of the JSON plan format.
pub const FORMAT_VERSION: u32 = 1;

/// What rivet knows of a node before acting.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Observed {
    pub provision_state: ProvisionState,
    pub power_state: Option<PowerState>,
    pub boot_device: Option<BootDevice>,
    pub boot_mode: Option<BootMode>,
    pub maintenance: bool,
    /// Fingerprint of the deployed instance, when active.
    pub deployed_instance: Option<String>,
}

impl Observed {
    /// A node rivet has no record of.
    pub fn unknown() -> Self {
        Self {
            provision_state: ProvisionState::Enroll,
            power_state: None,
            boot_device: None,
            boot_mode: None,
            maintenance: false,
            deployed_instance: None,
        }
    }

    pub fn from_record(record: &NodeRecord) -> Self {
        Self {
            provision_state: record.provision_state,
            power_state: record.power_state,
            boot_device: record.boot_device,
            boot_mode: record.boot_mode,
            maintenance: record.maintenance,
            deployed_instance: record.deployed_instance.clone(),
        }
    }
}

/// One thing the converge will do to a node.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    Provision {
        verb: Verb,
        before: ProvisionState,
        after: ProvisionState,
        via: Vec<ProvisionState>,
        /// The node was left mid-way through this action: the converge
        /// resumes it at its recorded step.
        resumes: bool,
    },
    Power {
        before: Option<PowerState>,
        after: PowerState,
    },
    BootDevice {
        before: Option<BootDevice>,
        after: BootDevice,
    },
    BootMode {
        before: Option<BootMode>,
        after: BootMode,
    },
}

/// How a node changes, in terraform's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Nothing to do.
    None,
    /// `+`: deployed.
    Create,
    /// `~`: changed in place (manage, provide, power, boot).
    Update,
    /// `-/+`: rebuilt with a new instance.
    Replace,
    /// `-`: undeployed.
    Delete,
}

impl Change {
    pub fn symbol(self) -> &'static str {
        match self {
            Self::None => " ",
            Self::Create => "+",
            Self::Update => "~",
            Self::Replace => "-/+",
            Self::Delete => "-",
        }
    }
}

/// A node's BMC as a plan may show it: never a secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BmcView {
    pub address: String,
    pub username: Option<String>,
    /// `******` when a password is configured.
    pub password: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodePlan {
    pub name: String,
    pub uuid: String,
    pub driver: String,
    pub change: Change,
    pub rollout: Option<String>,
    /// 1-based wave, for nodes with changes.
    pub wave: Option<usize>,
    pub bmc: BmcView,
    pub observed: Observed,
    pub actions: Vec<Action>,
    /// The deploy steps, when an action deploys.
    pub steps: Vec<PlannedStep>,
}

impl NodePlan {
    pub fn transitions(&self) -> impl Iterator<Item = Transition> + '_ {
        self.actions.iter().filter_map(|a| match a {
            Action::Provision {
                verb,
                before,
                after,
                ..
            } => Some(Transition {
                verb: *verb,
                before: *before,
                after: *after,
            }),
            _ => None,
        })
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub deploy: usize,
    pub rebuild: usize,
    pub undeploy: usize,
    pub power_on: usize,
    pub power_off: usize,
    /// Nodes changed in place by more than power (manage, provide, boot).
    pub change: usize,
    pub unchanged: usize,
    /// Removed from the declarations: left as they are, no longer managed.
    #[serde(skip_serializing_if = "is_zero")]
    pub unmanage: usize,
    /// Removed from the declarations with `prune = true`: undeployed first.
    #[serde(skip_serializing_if = "is_zero")]
    pub prune: usize,
}

impl Summary {
    pub fn has_changes(&self) -> bool {
        self.deploy
            + self.rebuild
            + self.undeploy
            + self.power_on
            + self.power_off
            + self.change
            + self.unmanage
            + self.prune
            > 0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EdgeView {
    pub from: String,
    pub to: String,
    pub kind: &'static str,
    pub file: String,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloutView {
    pub name: String,
    pub max_parallel: Option<u32>,
    pub max_failures: u32,
    pub nodes: usize,
}

/// What happens to a node the store knows but the declarations no longer have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Removal {
    /// Left as it is and no longer converged.
    Unmanage,
    /// `prune = true`: powered off and returned to `available` (when
    /// deployed), then no longer converged.
    Prune,
}

/// A node removed from the declarations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RemovedNode {
    pub name: String,
    pub provision_state: ProvisionState,
    pub power_state: Option<PowerState>,
    pub removal: Removal,
    /// Why an asked-for prune is not done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A whole plan; its JSON form is the saved-plan file format.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub format_version: u32,
    pub fingerprint: Fingerprint,
    pub summary: Summary,
    pub nodes: Vec<NodePlan>,
    /// Node names per wave, in order.
    pub waves: Vec<Vec<String>>,
    pub edges: Vec<EdgeView>,
    pub rollouts: Vec<RolloutView>,
    /// Things the plan could not check (e.g. a BMC that could not be read).
    pub warnings: Vec<String>,
    /// Recorded nodes no longer declared, by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<RemovedNode>,
}

impl Plan {
    /// Add what happens to the recorded nodes `fleet` no longer declares.
    /// `previous` holds the declarations a prune needs (a node's BMC).
    pub fn add_removed(&mut self, fleet: &Fleet, snapshot: &Snapshot, previous: Option<&Fleet>) {
        for (name, record) in &snapshot.nodes {
            if fleet.node(name).is_some() || record.unmanaged {
                continue;
            }
            let known = previous.is_some_and(|p| p.node(name).is_some());
            let (removal, note) = match (fleet.conductor.prune, known) {
                (false, _) => (Removal::Unmanage, None),
                (true, true) => (Removal::Prune, None),
                (true, false) => (
                    Removal::Unmanage,
                    Some("prune = true, but its declaration is not kept, or no longer valid (it was removed before rivet converged it, or what it used is gone): left as it is".to_string()),
                ),
            };
            match removal {
                Removal::Unmanage => self.summary.unmanage += 1,
                Removal::Prune => self.summary.prune += 1,
            }
            self.removed.push(RemovedNode {
                name: name.clone(),
                provision_state: record.provision_state,
                power_state: record.power_state,
                removal,
                note,
            });
        }
    }
}

/// The declarations kept by the last converge that left no prune undone,
/// when a prune may need them: `prune = true` and some recorded node is no
/// longer declared. Their nodes that no longer validate are
/// left out, like any invalid node.
pub fn previous_declarations(
    fleet: &Fleet,
    snapshot: &Snapshot,
    kept: impl FnOnce() -> Result<BTreeMap<String, String>, crate::store::StoreError>,
) -> Option<Fleet> {
    let removed = snapshot
        .nodes
        .iter()
        .any(|(name, record)| fleet.node(name).is_none() && !record.unmanaged);
    if !fleet.conductor.prune || !removed {
        return None;
    }
    match kept() {
        Ok(files) if !files.is_empty() => {
            Some(crate::model::fleet::load_stored(&fleet.root, &files).fleet)
        }
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the kept declarations; removed nodes are left as they are");
            None
        }
    }
}

/// Fingerprint of a declared instance, compared with the deployed one.
/// The instance's UUID only associates the node with it: a node given one
/// is not rebuilt for it.
pub fn instance_fingerprint(node: &Node) -> String {
    let instance = node
        .instance
        .as_ref()
        .map(|i| crate::model::node::Instance {
            uuid: None,
            ..i.clone()
        });
    let text = serde_json::to_string(&instance).expect("instances serialize");
    fingerprint::digest(text.as_bytes())
}

/// Digest of everything declared about a node that a converge acts on; two
/// loads with equal digests need no re-plan of that node.
pub fn declaration_digest(node: &Node) -> String {
    let doc = serde_json::json!({
        "driver": node.driver,
        "interfaces": node.interfaces.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
        "bmc": node.bmc.address.to_string(),
        "username": node.bmc.username,
        "provision": node.desired.provision,
        "power": node.desired.power,
        "boot_device": node.desired.boot_device,
        "boot_mode": node.desired.boot_mode,
        "instance": node.instance,
        "deploy_ramdisk": node.deploy_ramdisk,
        "traits": node.traits,
        "rollout": node.rollout,
        "depends_on": node.depends_on.iter().map(|d| d.value.clone()).collect::<Vec<_>>(),
        "steps": node.deploy_steps.iter().map(|s| (s.interface, s.step.clone(), s.priority, s.args.clone())).collect::<Vec<_>>(),
    });
    fingerprint::digest(doc.to_string().as_bytes())
}

/// Read live power and boot state through the drivers' read-only calls;
/// what cannot be read stays as stored, with a warning.
pub async fn refresh(
    fleet: &Fleet,
    registry: &Registry,
    observed: &mut BTreeMap<String, Observed>,
    warnings: &mut Vec<String>,
) {
    for node in &fleet.nodes {
        let entry = observed
            .entry(node.name.clone())
            .or_insert_with(Observed::unknown);
        match registry.power(node) {
            Ok(power) => match power.get_power_state(node).await {
                Ok(state) => entry.power_state = Some(state),
                Err(e) => warnings.push(format!("{}: cannot read power state: {e}", node.name)),
            },
            Err(e) => warnings.push(format!("{}: not refreshed: {e}", node.name)),
        }
        if let Ok(management) = registry.management(node) {
            match management.get_boot_device(node).await {
                Ok(device) => entry.boot_device = device,
                Err(e) => warnings.push(format!("{}: cannot read boot device: {e}", node.name)),
            }
            match management.get_boot_mode(node).await {
                Ok(mode) => entry.boot_mode = mode,
                Err(e) => warnings.push(format!("{}: cannot read boot mode: {e}", node.name)),
            }
        }
    }
}

/// Plan the whole fleet against what was observed. Problems (cycles,
/// conflicting templates, steps missing arguments) mean no plan.
pub fn build(
    fleet: &Fleet,
    observed: &BTreeMap<String, Observed>,
    warnings: Vec<String>,
) -> Result<Plan, Vec<Problem>> {
    // Validation leaves the nodes of a cycle out of a loaded fleet; checking
    // again keeps the waves safe for any `Fleet`.
    let deps = Dependencies::new(&fleet.nodes);
    let mut problems: Vec<Problem> = deps.cycles().into_iter().map(|c| c.problem).collect();

    let mut nodes = Vec::with_capacity(fleet.nodes.len());
    for node in &fleet.nodes {
        let seen = observed
            .get(&node.name)
            .cloned()
            .unwrap_or_else(Observed::unknown);
        match plan_node(fleet, node, seen) {
            Ok(plan) => nodes.push(plan),
            Err(mut p) => problems.append(&mut p),
        }
    }
    if !problems.is_empty() {
        crate::diag::sort(&mut problems);
        return Err(problems);
    }

    let changed: Vec<bool> = nodes.iter().map(|n| n.change != Change::None).collect();
    let waves_of = graph::waves(&deps, fleet, &changed);
    let wave_count = waves_of.iter().flatten().map(|w| w + 1).max().unwrap_or(0);
    let mut waves = vec![Vec::new(); wave_count];
    for (plan, wave) in nodes.iter_mut().zip(&waves_of) {
        if let Some(w) = wave {
            plan.wave = Some(w + 1);
            waves[*w].push(plan.name.clone());
        }
    }

    let summary = summarize(&nodes);
    let edges = deps
        .edges()
        .into_iter()
        .map(|e| EdgeView {
            from: e.from,
            to: e.to,
            kind: "depends_on",
            file: e.at.file.name.clone(),
            line: e.at.file.line_col(e.at.span.start).0,
        })
        .collect();
    let rollouts = fleet
        .rollouts
        .iter()
        .map(|r| RolloutView {
            name: r.name.clone(),
            max_parallel: r.max_parallel,
            max_failures: r.max_failures,
            nodes: fleet
                .nodes
                .iter()
                .filter(|n| n.rollout.as_ref() == Some(&r.name))
                .count(),
        })
        .collect();
    Ok(Plan {
        format_version: FORMAT_VERSION,
        fingerprint: Fingerprint::of(fleet, observed),
        summary,
        nodes,
        waves,
        edges,
        rollouts,
        warnings,
        removed: Vec::new(),
    })
}

fn plan_node(fleet: &Fleet, node: &Node, observed: Observed) -> Result<NodePlan, Vec<Problem>> {
    let declared_instance = instance_fingerprint(node);
    let rebuild = observed.provision_state == ProvisionState::Active
        && observed
            .deployed_instance
            .as_ref()
            .is_some_and(|deployed| deployed != &declared_instance);
    let transitions = provision::path(observed.provision_state, node.desired.provision, rebuild);

    let mut actions = Vec::new();
    let mut power = observed.power_state;
    let mut steps = Vec::new();
    let interrupted = !observed.provision_state.is_stable();
    for (i, t) in transitions.iter().enumerate() {
        actions.push(Action::Provision {
            verb: t.verb,
            before: t.before,
            after: t.after,
            via: t.verb.via().to_vec(),
            resumes: interrupted && i == 0,
        });
        // What Ironic leaves the power in after each verb.
        match t.verb {
            Verb::Deploy | Verb::Rebuild => power = Some(PowerState::On),
            Verb::Provide | Verb::Undeploy => power = Some(PowerState::Off),
            Verb::Manage => {}
        }
        if t.verb.deploys() {
            steps = steps::deploy_steps(fleet, node)?;
        }
    }
    if let Some(target) = node.desired.power.map(PowerState::from)
        && power != Some(target)
    {
        actions.push(Action::Power {
            before: power,
            after: target,
        });
    }
    if let Some(device) = node.desired.boot_device
        && observed.boot_device != Some(device)
    {
        actions.push(Action::BootDevice {
            before: observed.boot_device,
            after: device,
        });
    }
    if let Some(mode) = node.desired.boot_mode
        && observed.boot_mode != Some(mode)
    {
        actions.push(Action::BootMode {
            before: observed.boot_mode,
            after: mode,
        });
    }
    let change = if transitions.iter().any(|t| t.verb == Verb::Rebuild) {
        Change::Replace
    } else if transitions.iter().any(|t| t.verb == Verb::Undeploy) {
        Change::Delete
    } else if transitions.iter().any(|t| t.verb == Verb::Deploy) {
        Change::Create
    } else if actions.is_empty() {
        Change::None
    } else {
        Change::Update
    };
    Ok(NodePlan {
        name: node.name.clone(),
        uuid: node.uuid.to_string(),
        driver: node.driver.to_string(),
        change,
        rollout: node.rollout.clone(),
        wave: None,
        bmc: BmcView {
            address: node.bmc.address.to_string(),
            username: node.bmc.username.clone(),
            password: node.bmc.password.as_ref().map(|p| match p {
                SecretSource::Env(_) | SecretSource::File(_) => "******",
            }),
        },
        observed,
        actions,
        steps,
    })
}

fn summarize(nodes: &[NodePlan]) -> Summary {
    let mut s = Summary::default();
    for node in nodes {
        if node.change == Change::None {
            s.unchanged += 1;
        }
        let mut other_change = false;
        for action in &node.actions {
            match action {
                Action::Provision { verb, .. } => match verb {
                    Verb::Deploy => s.deploy += 1,
                    Verb::Rebuild => s.rebuild += 1,
                    Verb::Undeploy => s.undeploy += 1,
                    Verb::Manage | Verb::Provide => other_change = true,
                },
                Action::Power { after, .. } => match after {
                    PowerState::Off => s.power_off += 1,
                    _ => s.power_on += 1,
                },
                Action::BootDevice { .. } | Action::BootMode { .. } => other_change = true,
            }
        }
        if other_change && node.change == Change::Update {
            s.change += 1;
        }
    }
    s
}
