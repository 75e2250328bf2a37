//! The ordered deploy steps of one node: the composed interfaces' own steps,
//! then deploy templates matched by the node's traits, then the node's
//! steps; later sources override earlier ones by (interface, step), and
//! priority 0 removes a step.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use serde::Serialize;

use crate::diag::{Loc, Problem, list};
use crate::model::fleet::Fleet;
use crate::model::node::{Node, StepSource};
use crate::vocab::InterfaceType;

/// A deploy step as it will run.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedStep {
    pub interface: InterfaceType,
    pub step: String,
    pub priority: u32,
    pub args: BTreeMap<String, serde_json::Value>,
    /// `driver`, `template` or `node`.
    #[serde(serialize_with = "source_kind")]
    pub source: StepSource,
    /// The deploy template, when `source` is `template`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    pub abortable: bool,
    #[serde(skip)]
    pub at: Option<Loc>,
}

fn source_kind<S: serde::Serializer>(source: &StepSource, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match source {
        StepSource::Driver => "driver",
        StepSource::Template(_) => "template",
        StepSource::Node => "node",
    })
}

impl PlannedStep {
    /// `interface.step`, as Ironic names steps.
    pub fn id(&self) -> String {
        format!("{}.{}", self.interface, self.step)
    }
}

/// Ironic's order: priority descending, then interface rank (vendor 7 …
/// raid 1), then interface name and step name for a total order.
pub fn sort(steps: &mut [PlannedStep]) {
    steps.sort_by(|a, b| {
        (
            Reverse(a.priority),
            Reverse(a.interface.step_rank()),
            a.interface.as_str(),
            &a.step,
        )
            .cmp(&(
                Reverse(b.priority),
                Reverse(b.interface.step_rank()),
                b.interface.as_str(),
                &b.step,
            ))
    });
}

/// The steps a deploy of `node` runs, in order.
pub fn deploy_steps(fleet: &Fleet, node: &Node) -> Result<Vec<PlannedStep>, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut chosen: BTreeMap<(InterfaceType, String), PlannedStep> = BTreeMap::new();

    for kind in InterfaceType::ALL {
        let Some(imp) = fleet.interface_of(node, kind) else {
            continue;
        };
        for def in imp.steps.iter().filter(|s| s.priority > 0) {
            let missing: Vec<&String> = def
                .argsinfo
                .iter()
                .filter(|(_, info)| info.required)
                .map(|(name, _)| name)
                .collect();
            if !missing.is_empty() {
                let mut problem = Problem::new(
                    "rivet::step::missing_argument",
                    format!(
                        "node `{}`: step `{kind}.{}` of {kind} interface `{}` runs by default (priority {}) but needs {}",
                        node.name,
                        def.step,
                        imp.name,
                        def.priority,
                        list(&missing)
                    ),
                )
                .help(format!(
                    "give the arguments in a [[node.deploy_steps]] for `{kind}.{}`, or set its priority to 0 there to skip it",
                    def.step
                ));
                problem = match &imp.declared_at {
                    Some(at) => problem
                        .at(at, "declared here")
                        .also(&node.at, "for this node"),
                    None => problem.at(&node.at, "this node"),
                };
                problems.push(problem);
                continue;
            }
            chosen.insert(
                (kind, def.step.clone()),
                PlannedStep {
                    interface: kind,
                    step: def.step.clone(),
                    priority: def.priority,
                    args: BTreeMap::new(),
                    source: StepSource::Driver,
                    template: None,
                    abortable: def.abortable,
                    at: imp.declared_at.clone(),
                },
            );
        }
    }

    let mut from_template: BTreeMap<(InterfaceType, String), (&str, &Loc)> = BTreeMap::new();
    for template in fleet
        .templates
        .iter()
        .filter(|t| node.traits.contains(&t.name))
    {
        for req in &template.steps {
            let key = (req.interface, req.step.clone());
            if let Some((other, other_at)) = from_template.get(&key) {
                problems.push(
                    Problem::new(
                        "rivet::step::template_conflict",
                        format!(
                            "node `{}`: deploy templates `{other}` and `{}` both set step `{}.{}`",
                            node.name, template.name, req.interface, req.step
                        ),
                    )
                    .at(&req.at, format!("set by {}", template.name))
                    .also(other_at, format!("also set by {other}"))
                    .also(&node.at, "the node carrying both traits")
                    .help("keep the step in one template, or set it on the node with [[node.deploy_steps]] to decide"),
                );
                continue;
            }
            from_template.insert(key.clone(), (&template.name, &req.at));
            chosen.insert(key, planned(fleet, node, req));
        }
    }
    for req in &node.deploy_steps {
        chosen.insert((req.interface, req.step.clone()), planned(fleet, node, req));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut steps: Vec<PlannedStep> = chosen.into_values().filter(|s| s.priority > 0).collect();
    sort(&mut steps);
    Ok(steps)
}

fn planned(fleet: &Fleet, node: &Node, req: &crate::model::node::StepRequest) -> PlannedStep {
    let abortable = fleet
        .interface_of(node, req.interface)
        .and_then(|imp| imp.step(&req.step))
        .is_some_and(|def| def.abortable);
    PlannedStep {
        interface: req.interface,
        step: req.step.clone(),
        priority: req.priority,
        args: req.args.clone(),
        source: req.source.clone(),
        template: match &req.source {
            StepSource::Template(name) => Some(name.clone()),
            _ => None,
        },
        abortable,
        at: Some(req.at.clone()),
    }
}
